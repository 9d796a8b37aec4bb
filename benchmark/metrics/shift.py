"""Feature shifts, the biologist's view: does a generator move the features that the perturbation moves, and the
right way?

For each perturbation, the standardised effect size (Cohen's d, pooled sd) of every named feature between its
real treated cells and the plan's real control cells picks the TOP features that move most; the same effect sizes
measured on the generated cells are then compared with them: the correlation across those features and the share
that move in the same direction. Rows `effect_real:<feature>` / `effect_gen:<feature>` keep the effect sizes
themselves for the report's table and heatmap.
"""

from __future__ import annotations

import warnings

import numpy as np

TOP = 10  # features per perturbation, by |effect size| between real treated and real control cells


def effect_size(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cohen's d of every column, a against b (pooled sd); NaN where a column has no spread."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        pooled = np.sqrt((np.nanvar(a, 0, ddof=1) + np.nanvar(b, 0, ddof=1)) / 2)
        d = (np.nanmean(a, 0) - np.nanmean(b, 0)) / pooled
    return np.where(pooled > 1e-9, d, np.nan)


def shift_rows(real: np.ndarray, perts_real: np.ndarray, gen: np.ndarray, perts_gen: np.ndarray,
               controls: np.ndarray, names: list[str], space: str, rule: str, sha: str) -> list[dict]:
    common = dict(feature_space=space, channel_rule=rule, extractor_sha256=sha, metric_seed=np.nan, std=np.nan,
                  ci_low=np.nan, ci_high=np.nan)
    rows, corrs, signs = [], [], []
    for p in sorted(set(perts_real) & set(perts_gen)):
        r, g = real[perts_real == p], gen[perts_gen == p]
        d_real, d_gen = effect_size(r, controls), effect_size(g, controls)
        ok = np.flatnonzero(np.isfinite(d_real) & np.isfinite(d_gen))
        top = ok[np.argsort(-np.abs(d_real[ok]), kind="stable")[:TOP]]
        n = dict(n_gen=len(g), n_real=len(r))
        corr = float(np.corrcoef(d_real[top], d_gen[top])[0, 1]) if len(top) > 2 else np.nan
        sign = float((np.sign(d_real[top]) == np.sign(d_gen[top])).mean()) if len(top) else np.nan
        corrs.append(corr)
        signs.append(sign)
        rows += [dict(metric="shift_corr", perturbation=p, value=corr, **n, **common),
                 dict(metric="shift_sign", perturbation=p, value=sign, **n, **common)]
        for i in top:
            rows += [dict(metric=f"effect_real:{names[i]}", perturbation=p, value=float(d_real[i]), **n, **common),
                     dict(metric=f"effect_gen:{names[i]}", perturbation=p, value=float(d_gen[i]), **n, **common)]
    total = dict(n_gen=len(gen), n_real=len(real))
    rows += [dict(metric="shift_corr", perturbation="", value=float(np.nanmean(corrs)) if corrs else np.nan,
                  **total, **common),
             dict(metric="shift_sign", perturbation="", value=float(np.nanmean(signs)) if signs else np.nan,
                  **total, **common)]
    return rows
