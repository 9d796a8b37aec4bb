"""The suite's intervals, in one place: what each "±" and "[a, b]" in a table means.

- `bootstrap_ci`: percentile bootstrap of a mean over images (accuracy, paired errors), seeded.
- `normal_ci_from_bootstrap`: value ± 1.96 sd of bootstrap replicates, for FID: resampling duplicates images,
  which biases bootstrap FIDs upwards, so percentile intervals of FID can miss the estimate itself.
- `t_half_width`: half-width of the 95% t interval of a mean over seeds (tables across seeds).
- `paired_comparison`: which of two methods is better on a per-perturbation metric, by a Wilcoxon signed-rank test
  over the perturbations both were scored on, Holm-corrected over every comparison of a table (scipy,
  statsmodels); `friedman`: whether methods differ at all, over perturbations as blocks.
- `seed_test`: the same question over training runs: Welch's t-test of the two rows' per-seed means, Holm-corrected
  over the table. The Wilcoxon asks whether these two trained models differ; this asks whether training again
  would keep the order (a checkpoint or seed moves every perturbation together, which the Wilcoxon counts as
  evidence).
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
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


def paired_comparison(wide: dict[str, pd.DataFrame], alpha: float = 0.05) -> pd.DataFrame:
    """Every pair of methods on every metric, lower is better.

    `wide` maps a metric name to a table of perturbations (rows) x methods (columns). For each metric and pair
    (A, B) the perturbations scored for both are the pairs of a two-sided Wilcoxon signed-rank test (zero
    differences dropped, Pratt's rule for them would count them as ties); the p-values of the whole table are
    Holm-corrected together. `verdict` names the better method where the corrected p is below `alpha`, and says
    so where too few perturbations differ for any p to get there (the exact test's smallest two-sided p is 2 / 2^n:
    0.0625 at five), since "no difference shown" would then be true of any two methods.
    """
    from statsmodels.stats.multitest import multipletests

    rows = []
    for metric, table in wide.items():
        for a, b in itertools.combinations(table.columns, 2):
            both = table[[a, b]].dropna()
            d = (both[a] - both[b]).to_numpy(float)
            n = int(np.count_nonzero(d))
            p = float(stats.wilcoxon(d[d != 0]).pvalue) if n >= 2 else float("nan")
            rows.append({"metric": metric, "A": a, "B": b, "n perturbations": len(d),
                         "median A - B": float(np.median(d)) if len(d) else float("nan"),
                         "A lower": int((d < 0).sum()), "B lower": int((d > 0).sum()), "p": p})
    out = pd.DataFrame(rows, columns=["metric", "A", "B", "n perturbations", "median A - B", "A lower", "B lower",
                                      "p", "p (Holm)", "verdict"])
    tested = out["p"].notna()
    out.loc[tested, "p (Holm)"] = multipletests(out.loc[tested, "p"], method="holm")[1] if tested.any() else []
    out["verdict"] = [
        "untested (fewer than 2 differences)" if pd.isna(q) else
        (f"{a} better" if med < 0 else f"{b} better") if q < alpha else
        f"cannot be shown at n = {n} (smallest possible p {2 / 2 ** n:.3g})" if 2 / 2 ** n >= alpha else
        "no difference shown"
        for a, b, med, q, n in zip(out["A"], out["B"], out["median A - B"], out["p (Holm)"],
                                   out["A lower"] + out["B lower"])]
    return out


def _varies(v: np.ndarray) -> bool:
    """Do a row's seeds differ by more than float32 rounding? A rule with no randomness (identity, the oracle)
    scores the same on every seed up to the last bits of a sum, and a t-test on those bits finds any difference
    "significant"."""
    return bool(np.ptp(v) > 4 * np.finfo(np.float32).eps * np.max(np.abs(v)))


def seed_test(out: pd.DataFrame, seeds: dict[tuple[str, str], np.ndarray], alpha: float = 0.05) -> pd.DataFrame:
    """`out` (a `paired_comparison` table) with a test over seeds added to each row: `seeds` maps (metric, row
    label) to that row's per-seed values of the metric (each seed's mean over perturbations). Welch's two-sided
    t-test where both rows have two or more seeds and some spread (where one has none, its limit: the one-sample
    test of the other's seeds against that value), Holm over the table, a verdict at `alpha`."""
    from statsmodels.stats.multitest import multipletests

    out = out.copy()
    counts, ps = [], []
    for metric, a, b in zip(out["metric"], out["A"], out["B"]):
        x, y = (np.asarray(seeds.get((metric, k), []), dtype=float) for k in (a, b))
        counts.append(f"{len(x)} v {len(y)}")
        both = len(x) > 1 and len(y) > 1
        vx, vy = both and _varies(x), both and _varies(y)
        if not (vx or vy):
            ps.append(float("nan"))
        elif vx and vy:
            ps.append(float(stats.ttest_ind(x, y, equal_var=False).pvalue))
        else:  # Welch's test when one side has no spread: the other's seeds against its value
            fixed, spread = (x, y) if vy else (y, x)
            ps.append(float(stats.ttest_1samp(spread, float(np.mean(fixed))).pvalue))
    out["seeds"], out["p (seeds)"] = counts, ps
    tested = out["p (seeds)"].notna()
    out["p (seeds, Holm)"] = float("nan")
    if tested.any():
        out.loc[tested, "p (seeds, Holm)"] = multipletests(out.loc[tested, "p (seeds)"], method="holm")[1]
    out["verdict (seeds)"] = [
        "untested (fewer than 2 seeds each, or none differ)" if pd.isna(q) else
        (f"{a} better" if np.mean(seeds[(m, a)]) < np.mean(seeds[(m, b)]) else f"{b} better") if q < alpha
        else "no difference shown"
        for m, a, b, q in zip(out["metric"], out["A"], out["B"], out["p (seeds, Holm)"])]
    return out


def friedman(table: pd.DataFrame) -> tuple[float, int]:
    """Friedman test that the methods (columns) differ, perturbations (rows with every method) as blocks: (p, n
    blocks); NaN where fewer than 3 methods or 2 complete blocks."""
    complete = table.dropna()
    if complete.shape[1] < 3 or len(complete) < 2:
        return float("nan"), len(complete)
    return float(stats.friedmanchisquare(*[complete[c].to_numpy(float) for c in complete.columns]).pvalue), len(complete)
