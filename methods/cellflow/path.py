"""The probability path: straight lines from a control image x0 to a target x1."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = t x1 + (1 - t) x0."""
    t = t.view(-1, *([1] * (x0.dim() - 1)))
    return t * x1 + (1 - t) * x0


def target_velocity(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """d x_t / dt along the straight path: x1 - x0."""
    return x1 - x0


SKEWED_LOC, SKEWED_SCALE = 1.2, 1.2  # the official code's "skewed" times: sigmoid(N(1.2, 1.2^2)), mean 0.719


def sample_time(n: int, how: str, generator: torch.Generator) -> torch.Tensor:
    """t ~ U[0, 1] (the paper); logit-normal, which favours mid-path times; or the official code's "skewed"
    sigmoid(N(1.2, 1.44)), which favours late times (clipped below at 1e-4 as there)."""
    if how == "uniform":
        return torch.rand(n, generator=generator)
    if how == "logit_normal":
        return torch.sigmoid(torch.randn(n, generator=generator))
    if how == "skewed":
        return torch.sigmoid(SKEWED_LOC + SKEWED_SCALE * torch.randn(n, generator=generator)).clamp(min=1e-4)
    raise ValueError(f"unknown time sampling {how!r}")


def ot_pairing(x0: torch.Tensor, x1: torch.Tensor, groups: np.ndarray) -> np.ndarray:
    """Minibatch optimal-transport coupling (Tong et al. 2023, OT-CFM), not in the CellFlow paper.

    Returns a permutation `perm` of the batch such that x0[perm] pairs each target with a control at the least
    total squared pixel distance; controls move only within their group (the plate), so every pair stays a
    same-batch pair as Algorithm 1 requires. Straighter, non-crossing paths are easier to learn in few steps.
    """
    perm = np.arange(len(x1))
    a, b = x0.flatten(1), x1.flatten(1)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        cost = torch.cdist(b[idx], a[idx]).pow(2).numpy()
        rows, cols = linear_sum_assignment(cost)
        perm[idx[rows]] = idx[cols]
    return perm
