"""The probability path: straight lines from a control image x0 to a target x1."""

from __future__ import annotations

import torch


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = t x1 + (1 - t) x0."""
    t = t.view(-1, *([1] * (x0.dim() - 1)))
    return t * x1 + (1 - t) * x0


def target_velocity(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """d x_t / dt along the straight path: x1 - x0."""
    return x1 - x0


def sample_time(n: int, how: str, generator: torch.Generator) -> torch.Tensor:
    """t ~ U[0, 1] (the paper), or logit-normal, which favours mid-path times."""
    if how == "uniform":
        return torch.rand(n, generator=generator)
    if how == "logit_normal":
        return torch.sigmoid(torch.randn(n, generator=generator))
    raise ValueError(f"unknown time sampling {how!r}")
