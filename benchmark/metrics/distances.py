"""FID and KID between two feature sets, through torch-fidelity's own functions.

Each call sees only the two feature sets it is given: the conditional scores
compute every perturbation on its own features (unlike the CellFlux evaluation,
whose per-class KID kept accumulating over classes).
"""

from __future__ import annotations

import numpy as np
import torch
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

from benchmark.errors import BenchmarkError

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


def check_sizes(n_a: int, n_b: int, what: str) -> None:
    """Both sides of a distance need two samples (also for callers that hold row indices, not features)."""
    if min(n_a, n_b) < 2:
        raise BenchmarkError(f"{what}: needs at least 2 samples per side, got {n_a} and {n_b}")


def _check(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise BenchmarkError(f"{what}: feature sets must be (n, d) with equal d, got {a.shape} and {b.shape}")
    check_sizes(len(a), len(b), what)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise BenchmarkError(f"{what}: features contain NaN/inf")


def fid(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to `a` and `b`.

    When both sets are smaller than the feature dimension, tr sqrt(S_a S_b) is
    computed exactly from the singular values of A B^T (S_a = A^T A, S_b = B^T B),
    an n x n problem instead of torch-fidelity's d x d eigendecomposition; both
    paths give the same number (tested), the small one in milliseconds.
    """
    _check(a, b, "FID")
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    d = a.shape[1]
    if max(len(a), len(b)) >= d:
        s1 = fid_features_to_statistics(torch.from_numpy(a))
        s2 = fid_features_to_statistics(torch.from_numpy(b))
        return float(fid_statistics_to_metric(s1, s2, verbose=False)[KEY_METRIC_FID])
    mu_a, mu_b = a.mean(0), b.mean(0)
    A = (a - mu_a) / np.sqrt(len(a) - 1)
    B = (b - mu_b) / np.sqrt(len(b) - 1)
    tr_covmean = np.linalg.svd(A @ B.T, compute_uv=False).sum()
    diff = mu_a - mu_b
    return float(diff @ diff + (A * A).sum() + (B * B).sum() - 2 * tr_covmean)


def kid(a: np.ndarray, b: np.ndarray, seed: int, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE) -> tuple[float, float, int]:
    """Unbiased polynomial-kernel MMD^2 (KID): mean, std over subsets, and the subset size used.

    Where both sets are no larger than the subset size, every subset is the whole of both sets (torch-fidelity
    draws without replacement, and the estimate does not depend on order): the value is that of the whole sets and
    there is no spread over subsets to report, so the std is NaN rather than a rounding error posing as one."""
    _check(a, b, "KID")
    size = int(min(subset_size, len(a), len(b)))
    out = kid_features_to_metric(torch.from_numpy(np.asarray(a, dtype=np.float64)), torch.from_numpy(np.asarray(b, dtype=np.float64)),
                                 kid_subsets=subsets, kid_subset_size=size, rng_seed=seed, verbose=False)
    whole = size == len(a) == len(b)
    return float(out[KEY_METRIC_KID_MEAN]), float("nan") if whole else float(out[KEY_METRIC_KID_STD]), size
