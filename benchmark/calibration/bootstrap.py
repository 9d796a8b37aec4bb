"""Draws and verdicts: nested subsamples per perturbation, resamples within perturbations, and what a bootstrap
resolves (the smallest rung told apart from rung 0) and how a metric ranks the rungs."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats

from benchmark.errors import BenchmarkError


def subsample(perturbations: np.ndarray, n: int, seed: int) -> np.ndarray:
    """`n` request indices per perturbation, drawn with `seed` (every perturbation must have n). Nested: the rows
    for n are the first n of one seeded permutation, so a smaller n is a subset of a larger one."""
    rng = np.random.default_rng(seed)
    out = []
    for pert in np.unique(perturbations):
        rows = np.flatnonzero(perturbations == pert)
        if len(rows) < n:
            raise BenchmarkError(f"calibration: {pert!r} has {len(rows)} test images, fewer than n = {n}; use a "
                                 "larger screen (task synthetic-calibration)")
        out.append(np.sort(rng.permutation(rows)[:n]))
    return np.concatenate(out)


def resample(groups: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Rows drawn with replacement within each perturbation's rows."""
    return np.concatenate([rng.choice(rows, len(rows)) for rows in groups])


def by_perturbation(rows: np.ndarray, perts: np.ndarray) -> list[np.ndarray]:
    return [rows[perts[rows] == p] for p in np.unique(perts[rows])]


def resolved_rung(replicates: np.ndarray, lower_is_better: bool, level: float = 0.95) -> int | None:
    """The smallest rung k >= 1 whose metric differs from rung 0's in the direction of worse quality in at least
    `level` of the bootstrap replicates (replicates: (B, rungs), the same resampled images at every rung); None
    when no rung is resolved."""
    diff = replicates[:, 1:] - replicates[:, :1]
    if not lower_is_better:
        diff = -diff
    share = (diff > 0).mean(axis=0)
    hits = np.flatnonzero(share >= level)
    return int(hits[0]) + 1 if len(hits) else None


def rank_agreement(values: np.ndarray, lower_is_better: bool) -> float:
    """Spearman correlation of a metric's values over the rungs with the rungs' true order (1: every rung ranked
    right)."""
    v = np.asarray(values, dtype=float)
    if not np.isfinite(v).all() or np.ptp(v) == 0:
        return float("nan")
    rho = stats.spearmanr(np.arange(len(v)), v).statistic
    return float(rho if lower_is_better else -rho)


def draws(ns: list[int], perts: np.ndarray, perts_real: np.ndarray, seed: int, n_boot: int) -> dict[int, tuple]:
    """Per n: the generated and reference rows scored, and `n_boot` resamples of both within perturbations, drawn
    once and shared by every ladder and metric (so that a difference between rungs is paired)."""
    out = {}
    for n in ns:
        g = subsample(perts, n, seed)
        r = subsample(perts_real, n, seed + 1)
        rng = np.random.default_rng([seed, n])
        g_groups, r_groups = by_perturbation(g, perts), by_perturbation(r, perts_real)
        out[n] = (g, r, [(resample(g_groups, rng), resample(r_groups, rng)) for _ in range(n_boot)])
    return out


def bootstrap_ladders(ladders: list, metrics: list, scored: dict, drawn: dict[int, tuple],
                      scored_at: Callable[[object, int], bool], no_bootstrap: tuple[str, ...], boot_max_images: int,
                      seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every metric on every rung at every n, with its bootstrap interval (values), and per ladder x metric x n the
    rank agreement, whether every rung is ranked right and the smallest rung resolved (summary). A ladder's kernels
    and prdc values are released once it is done."""
    from tqdm.auto import tqdm

    from benchmark.metrics.stats import normal_ci_from_bootstrap

    values, summary = [], []
    for ladder in tqdm(ladders, desc="calibration bootstrap", unit="ladder"):
        rungs = range(len(ladder.values))
        for n, (g, r, reps_rows) in drawn.items():
            for metric in [m for m in metrics if scored_at(m, n)]:
                point = np.array([metric.compute(scored[ladder.name, k], g, r) for k in rungs])
                skip = metric.name.startswith(tuple(no_bootstrap)) or (metric.whole_set and len(g) > boot_max_images)
                boot = [] if skip else reps_rows
                reps = np.array([[metric.compute(scored[ladder.name, k], gb, rb) for k in rungs] for gb, rb in boot])
                for k in rungs:  # value +- 1.96 sd of its replicates (resampling duplicates images, which
                    # biases a bootstrap FID upwards: a percentile interval could miss the value, see metrics/stats)
                    lo, hi = normal_ci_from_bootstrap(point[k], reps[:, k]) if len(boot) else (np.nan, np.nan)
                    values.append({"ladder": ladder.name, "metric": metric.name, "n": n, "rung": k,
                                   "value": point[k], "ci_low": lo, "ci_high": hi})
                hit = resolved_rung(reps, metric.lower_is_better) if len(boot) else None
                summary.append({"ladder": ladder.name, "metric": metric.name, "n": n,
                                "lower_is_better": metric.lower_is_better,
                                "spearman": rank_agreement(point, metric.lower_is_better),
                                "ranks_all_rungs": bool(np.all(np.diff(point if metric.lower_is_better else -point)
                                                               > 0)),
                                "resolved_rung": hit if hit is not None else np.nan,
                                "resolved_value": ladder.values[hit] if hit is not None else np.nan,
                                "floor": point[0], "n_boot": len(boot), "seed": seed})
        for k in rungs:
            scored[ladder.name, k].release()
    return pd.DataFrame(values), pd.DataFrame(summary)
