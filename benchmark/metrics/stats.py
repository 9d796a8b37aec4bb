"""The suite's intervals, in one place: what each "±" and "[a, b]" in a table means.

- `bootstrap_ci`: percentile bootstrap of a mean over images (accuracy, paired errors), seeded.
- `normal_ci_from_bootstrap`: value ± 1.96 sd of bootstrap replicates, for FID: resampling duplicates images,
  which biases bootstrap FIDs upwards, so percentile intervals of FID can miss the estimate itself.
- `t_half_width`: half-width of the 95% t interval of a mean over seeds (tables across seeds).
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def bootstrap_ci(values: np.ndarray, seed: int, n_boot: int = 1000, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of a mean (resampling with replacement, seeded)."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def normal_ci_from_bootstrap(value: float, replicates: np.ndarray) -> tuple[float, float]:
    """value ± 1.96 x the standard deviation of its bootstrap replicates."""
    half = 1.96 * float(np.std(replicates, ddof=1))
    return value - half, value + half


def t_half_width(values: np.ndarray, level: float = 0.95) -> float:
    """Half-width of the t interval of the mean of `values` (NaN for fewer than two)."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    return float(stats.t.ppf(1 - (1 - level) / 2, n - 1) * np.std(v, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
