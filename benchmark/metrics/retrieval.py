"""Mean average precision over single-cell profiles, with copairs (the JUMP consortium's method).

- Phenotypic activity: are a perturbation's profiles retrievable against control profiles? For each profile of
  perturbation P, the average precision of ranking P's other profiles above the controls (cosine similarity); the
  mean over P's profiles is P's mAP, and copairs' permutation null (seeded) gives its p-value, FDR-corrected over
  the perturbations. Scored for the generated cells and, as the yardstick, for the real cells of the same
  perturbations against the same controls.
- Retrieval: is a generated cell closest to real cells of its own perturbation? For each generated profile, the
  average precision of ranking real cells of its perturbation above real cells of the others.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ACTIVE_Q = 0.05  # FDR level at which a perturbation counts as phenotypically active
NULL_SIZE = 1000  # permutations behind each mAP p-value
# profiles a side (spread evenly over the perturbations) and controls behind mAP: its pairs grow with the square of
# the set (BBBC021's 20,000 test cells would make 4e8 retrieval pairs, about 60 bytes each in copairs); a larger set
# is a seeded subsample, and the rows give their n. The simulated screen's plans (648 a side) are below the caps.
MAP_MAX_PROFILES = 2000
MAP_MAX_CONTROLS = 2000


def capped(perts: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Row indices keeping at most `cap` rows of each perturbation (a seeded choice), in their original order."""
    keep = [np.array([], dtype=int)]
    for p in sorted(set(perts)):
        rows = np.flatnonzero(perts == p)
        keep.append(rows if len(rows) <= cap else rng.choice(rows, cap, replace=False))
    return np.sort(np.concatenate(keep))


def _activity_ap(feats: np.ndarray, perts: np.ndarray, controls: np.ndarray) -> pd.DataFrame:
    """Each profile's average precision of ranking its perturbation's other profiles above the controls."""
    from copairs.map import average_precision

    meta = pd.DataFrame({"pert": [*map(str, perts), *["__control__"] * len(controls)]})
    # controls are only ever negatives: each its own reference group, so no two of them form a positive pair
    meta["ref"] = np.where(meta["pert"] == "__control__", np.arange(len(meta)), -1)
    ap = average_precision(meta, np.concatenate([feats, controls]), pos_sameby=["pert", "ref"], pos_diffby=[],
                           neg_sameby=[], neg_diffby=["pert", "ref"], progress_bar=False)
    return ap[ap["pert"] != "__control__"]


def _activity(feats: np.ndarray, perts: np.ndarray, controls: np.ndarray, seed: int) -> pd.DataFrame:
    """Per perturbation: mAP against the controls, its p-value and FDR-corrected p-value."""
    from copairs.map import mean_average_precision

    ap = _activity_ap(feats, perts, controls)
    out = mean_average_precision(ap, sameby=["pert"], null_size=NULL_SIZE, threshold=ACTIVE_Q, seed=seed,
                                 progress_bar=False)
    return out.set_index("pert")


def _retrieval(gen: np.ndarray, perts_gen: np.ndarray, real: np.ndarray, perts_real: np.ndarray) -> pd.Series:
    """Per perturbation: mean AP of its generated profiles, real cells of the same perturbation being the hits."""
    from copairs.map import average_precision

    meta = pd.DataFrame({"pert": [*map(str, perts_gen), *map(str, perts_real)],
                         "source": ["generated"] * len(gen) + ["real"] * len(real)})
    # a pair is always one generated and one real profile
    ap = average_precision(meta, np.concatenate([gen, real]), pos_sameby=["pert"], pos_diffby=["source"],
                           neg_sameby=[], neg_diffby=["pert", "source"], progress_bar=False)
    return ap[ap["source"] == "generated"].groupby("pert")["average_precision"].mean()


def activity_map(feats: np.ndarray, perts: np.ndarray, controls: np.ndarray) -> float:
    """`map_activity` of the overall row (the mean over perturbations of their mAP) without the permutation null
    behind the p-values: what the calibration recomputes on every rung."""
    return float(_activity_ap(feats, perts, controls).groupby("pert")["average_precision"].mean().mean())


def retrieval_map(gen: np.ndarray, perts_gen: np.ndarray, real: np.ndarray, perts_real: np.ndarray) -> float:
    """`map_retrieval` of the overall row."""
    return float(_retrieval(gen, perts_gen, real, perts_real).mean())


def map_rows(gen: np.ndarray, perts_gen: np.ndarray, real: np.ndarray, perts_real: np.ndarray,
             controls: np.ndarray, space: str, rule: str, sha: str, seed: int) -> list[dict]:
    """Metric rows: per perturbation and overall (mean over perturbations; share active at FDR ACTIVE_Q)."""
    common = dict(feature_space=space, channel_rule=rule, extractor_sha256=sha, metric_seed=seed, std=np.nan,
                  ci_low=np.nan, ci_high=np.nan)
    rng = np.random.default_rng(seed)
    cap = max(2, MAP_MAX_PROFILES // max(1, len(set(perts_gen))))
    g, r = capped(perts_gen, cap, rng), capped(perts_real, cap, rng)
    gen, perts_gen, real, perts_real = gen[g], perts_gen[g], real[r], perts_real[r]
    if len(controls) > MAP_MAX_CONTROLS:
        controls = controls[np.sort(rng.choice(len(controls), MAP_MAX_CONTROLS, replace=False))]
    act_gen = _activity(gen, perts_gen, controls, seed)
    act_real = _activity(real, perts_real, controls, seed)
    retrieval = _retrieval(gen, perts_gen, real, perts_real)
    n_gen = pd.Series(perts_gen).value_counts()
    n_real = pd.Series(perts_real).value_counts()
    rows = []
    for p in sorted(act_gen.index):
        ng, nr = int(n_gen[p]), int(n_real.get(p, 0))
        for metric, value in (("map_activity", act_gen.loc[p, "mean_average_precision"]),
                              ("map_activity_q", act_gen.loc[p, "corrected_p_value"]),
                              ("map_activity_real", act_real.loc[p, "mean_average_precision"]
                               if p in act_real.index else np.nan),
                              ("map_retrieval", retrieval.get(p, np.nan))):
            rows.append(dict(metric=metric, perturbation=p, value=float(value), n_gen=ng, n_real=nr, **common))
    for metric, value in (("map_activity", act_gen["mean_average_precision"].mean()),
                          ("map_active_frac", float((act_gen["corrected_p_value"] < ACTIVE_Q).mean())),
                          ("map_activity_real", act_real["mean_average_precision"].mean()),
                          ("map_active_frac_real", float((act_real["corrected_p_value"] < ACTIVE_Q).mean())),
                          ("map_retrieval", retrieval.mean())):
        rows.append(dict(metric=metric, perturbation="", value=float(value), n_gen=len(gen), n_real=len(real),
                         **common))
    return rows
