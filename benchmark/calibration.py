"""Known-answer calibration of the suite's metrics on the simulated screen.

The screen knows, for every test control cell, its true counterfactual under every compound. From those, ladders
of generators whose order of quality is known without any metric are built (no training):

- `mixing`: each image the true counterfactual with probability lambda, the control otherwise;
- `strength`: the same cells re-rendered with every compound's effect at a fraction of its strength;
- `blur`, `texture` (high frequencies attenuated), `intensity` (a per-channel shift, like a batch effect) and
  `collapse` (a share of each compound's images replaced by one image of it), applied to the counterfactuals.

Rung 0 of every ladder is the true counterfactuals (real cells, disjoint from the reference set: the real-vs-real
floor), and quality falls with the rung. For every metric and every n per perturbation this module measures the
Spearman correlation of the metric with the rung, and the smallest rung whose difference from rung 0 a seeded
bootstrap over images resolves at 95%: the same resampled images at every rung, so the difference is paired.
`python -m benchmark calibrate` writes the tables and figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from scipy import ndimage, stats

from benchmark.errors import BenchmarkError
from benchmark.metrics.stats import normal_ci_from_bootstrap


@dataclass(frozen=True)
class LadderInputs:
    """What the ladders are built from: the plan's requests, their controls and their true counterfactuals."""

    root: Path  # the screen's directory (its screen.json renders the strength ladder)
    keys: list[str]  # control SAMPLE_KEY of each request
    perturbations: np.ndarray  # compound of each request
    controls: np.ndarray  # (N, H, W, C) uint8
    truth: np.ndarray  # (N, H, W, C) uint8: each control cell under its compound
    seed: int


def _coin(inputs: LadderInputs, salt: int) -> np.ndarray:
    """One uniform draw per request, the same at every rung: the rungs are nested (a replaced image stays
    replaced further down)."""
    return np.random.default_rng([inputs.seed, salt]).uniform(size=len(inputs.keys))


def _uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def mixing(inputs: LadderInputs, p_control: float) -> np.ndarray:
    return np.where((_coin(inputs, 1) < p_control)[:, None, None, None], inputs.controls, inputs.truth)


def strength(inputs: LadderInputs, lost: float) -> np.ndarray:
    from tasks.screen import render_scaled

    if lost == 0:
        return inputs.truth
    return render_scaled(inputs.root, inputs.keys, list(inputs.perturbations), 1.0 - lost)


def blur(inputs: LadderInputs, sigma: float) -> np.ndarray:
    if sigma == 0:
        return inputs.truth
    return _uint8(ndimage.gaussian_filter(inputs.truth.astype(np.float64), sigma=(0, sigma, sigma, 0)))


TEXTURE_SIGMA = 1.5  # px: what counts as texture (detail finer than this)


def texture(inputs: LadderInputs, lost: float) -> np.ndarray:
    x = inputs.truth.astype(np.float64)
    low = ndimage.gaussian_filter(x, sigma=(0, TEXTURE_SIGMA, TEXTURE_SIGMA, 0))
    return _uint8(low + (1.0 - lost) * (x - low))


INTENSITY_SIGNS = (1.0, -1.0, 1.0)  # per channel: a batch effect brightens some stains and dims others


def intensity(inputs: LadderInputs, shift: float) -> np.ndarray:
    signs = np.resize(np.asarray(INTENSITY_SIGNS), inputs.truth.shape[-1])
    return _uint8(inputs.truth.astype(np.float64) + 255.0 * shift * signs)


def collapse(inputs: LadderInputs, share: float) -> np.ndarray:
    out = inputs.truth.copy()
    replaced = _coin(inputs, 2) < share
    for pert in np.unique(inputs.perturbations):
        rows = np.flatnonzero(inputs.perturbations == pert)
        out[rows[replaced[rows]]] = inputs.truth[rows[0]]
    return out


@dataclass(frozen=True)
class Ladder:
    name: str
    parameter: str
    values: tuple[float, ...]  # one per rung; rung 0 is the true counterfactuals
    build: Callable[[LadderInputs, float], np.ndarray]


LADDERS = {ladder.name: ladder for ladder in (
    Ladder("mixing", "share of controls (1 - lambda)", (0.0, 0.25, 0.5, 0.75, 1.0), mixing),
    Ladder("strength", "share of the effect lost (1 - s)", (0.0, 0.25, 0.5, 0.75, 1.0), strength),
    Ladder("blur", "Gaussian sigma (px)", (0.0, 0.5, 1.0, 1.5, 2.0), blur),
    Ladder("texture", f"share of detail finer than {TEXTURE_SIGMA} px lost", (0.0, 0.25, 0.5, 0.75, 1.0), texture),
    Ladder("intensity", "per-channel shift (share of full scale)", (0.0, 0.025, 0.05, 0.075, 0.1), intensity),
    Ladder("collapse", "share of images replaced by one per compound", (0.0, 0.25, 0.5, 0.75, 1.0), collapse),
)}


def paired_error(images: np.ndarray, truth: np.ndarray) -> float:
    """Mean per-image pixel RMSE (in [0, 1] units) against the true counterfactuals: the ground truth of quality."""
    from benchmark.metrics.evaluate import pixel_rmse

    return float(pixel_rmse(images, truth).mean())


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


def subsample(perturbations: np.ndarray, n: int, seed: int) -> np.ndarray:
    """`n` request indices per perturbation, drawn with `seed` (every perturbation must have n)."""
    rng = np.random.default_rng(seed)
    out = []
    for pert in np.unique(perturbations):
        rows = np.flatnonzero(perturbations == pert)
        if len(rows) < n:
            raise BenchmarkError(f"calibration: {pert!r} has {len(rows)} test images, fewer than n = {n}; use a "
                                 "larger screen (task synthetic-calibration)")
        out.append(np.sort(rng.choice(rows, n, replace=False)))
    return np.concatenate(out)


def rung_table(ladder: Ladder, inputs: LadderInputs) -> pd.DataFrame:
    """Each rung's parameter value and ground-truth paired error."""
    return pd.DataFrame([{"ladder": ladder.name, "rung": k, "value": v,
                          "paired_error": paired_error(ladder.build(inputs, v), inputs.truth)}
                         for k, v in enumerate(ladder.values)])


@dataclass(frozen=True)
class Metric:
    """One number the suite reports, computed on a subsample of generated and reference rows."""

    name: str
    lower_is_better: bool
    compute: Callable[["Scored", np.ndarray, np.ndarray], float]


class Scored:
    """Per-image quantities of one rung: features per space, pixel and morphology paired errors, MoA correctness;
    and the reference set's features. A metric picks rows of both (a subsample, a bootstrap resample)."""

    def __init__(self, gen: dict[str, np.ndarray], real: dict[str, np.ndarray], per_image: dict[str, np.ndarray],
                 perts_gen: np.ndarray, perts_real: np.ndarray, kid_seed: int) -> None:
        self.gen, self.real, self.per_image = gen, real, per_image
        self.perts_gen, self.perts_real, self.kid_seed = perts_gen, perts_real, kid_seed


def _distance(space: str, kind: str, conditional: bool) -> Callable[[Scored, np.ndarray, np.ndarray], float]:
    from benchmark.metrics.distances import fid, kid

    def one(a: np.ndarray, b: np.ndarray, seed: int) -> float:
        return fid(a, b) if kind == "fid" else kid(a, b, seed=seed, subsets=CALIBRATION_KID_SUBSETS)[0]

    def compute(s: Scored, g: np.ndarray, r: np.ndarray) -> float:
        G, R = s.gen[space][g], s.real[space][r]
        if not conditional:
            return one(G, R, s.kid_seed)
        pg, pr = s.perts_gen[g], s.perts_real[r]
        return float(np.mean([one(G[pg == p], R[pr == p], s.kid_seed) for p in np.unique(pg)]))

    return compute


CALIBRATION_KID_SUBSETS = 20  # KID subsets per value (the runs use 100; the bootstrap repeats it many times)


def _prdc(space: str, name: str) -> Callable[["Scored", np.ndarray, np.ndarray], float]:
    import contextlib
    import io

    from prdc import compute_prdc

    from benchmark.metrics.evaluate import PRDC_K

    def compute(s: Scored, g: np.ndarray, r: np.ndarray) -> float:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints the set sizes
            return float(compute_prdc(s.real[space][r], s.gen[space][g], nearest_k=PRDC_K)[name])

    return compute


def metrics_for(spaces: list[str], per_image: list[str]) -> list[Metric]:
    out = []
    for space in spaces:
        for kind in ("fid", "kid"):
            out.append(Metric(f"{kind}_o [{space}]", True, _distance(space, kind, False)))
            out.append(Metric(f"{kind}_c [{space}]", True, _distance(space, kind, True)))
        for name in ("precision", "recall", "density", "coverage"):  # higher is better
            out.append(Metric(f"{name} [{space}]", False, _prdc(space, name)))
    for name in per_image:  # means over images: paired errors (lower is better), MoA accuracy (higher)
        out.append(Metric(name, name != "moa_accuracy", lambda s, g, r, name=name: float(s.per_image[name][g].mean())))
    return out


def _resample(groups: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Rows drawn with replacement within each perturbation's rows."""
    return np.concatenate([rng.choice(rows, len(rows)) for rows in groups])


def _groups(rows: np.ndarray, perts: np.ndarray) -> list[np.ndarray]:
    return [rows[perts[rows] == p] for p in np.unique(perts[rows])]


def calibrate(data, ns: list[int], spaces: list[str], ctx, cache, seed: int = 0, n_boot: int = 50,
              moa=None, ladders: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Every ladder scored by every metric at every n: (values per rung with bootstrap intervals, a summary per
    ladder x metric x n, the rungs' ground-truth paired errors)."""
    from tqdm.auto import tqdm

    from benchmark.metrics.evaluate import ReferenceScale, _views, distance_space, morphology_distance, pixel_rmse
    from benchmark.metrics.features import Morphology
    from benchmark.registry import FEATURES

    plan = data.eval_plan()
    req, ref = plan.requests, plan.reference
    keys, perts = req["control_key"].tolist(), req["CPD_NAME"].to_numpy()
    truth = data.counterfactual(keys, list(perts))
    if truth is None:
        raise BenchmarkError(f"task {data.task.name}: calibration needs true counterfactuals (a simulated screen)")
    inputs = LadderInputs(Path(data.source), keys, perts, data.images[req["control_row"].to_numpy()],
                          np.asarray(truth), seed)
    chosen = [LADDERS[name] for name in (ladders or LADDERS)]
    rule = data.task.channel_rule
    extractors = {s: FEATURES.get(s)(ctx) for s in spaces}
    reference = data.images[ref["row"].to_numpy()]
    perts_real = ref["CPD_NAME"].to_numpy()

    def features(space: str, images: np.ndarray, what: str, key: dict) -> np.ndarray:
        ext = extractors[space]
        views = _views(ext, rule, images)
        return np.concatenate([cache.get(dict(key, space=space, sha=ext.weights_sha256, view=v),
                                         lambda x=x: ext(x, what=what)) for v, x in views], axis=1)

    base = {"calibration": data.task.name, "plan": plan.digest(), "seed": seed}
    real = {s: features(s, reference, "real reference images", dict(base, set="reference")) for s in spaces}
    scales = {s: ReferenceScale(f) for s, f in real.items() if not extractors[s].rgb}
    real = {s: scales[s](f) if s in scales else f for s, f in real.items()}
    morph = Morphology(data.task.channels)
    morph_ref = morph(reference, what="real reference images")
    morph_truth = morph(inputs.truth, what="true counterfactuals")
    labels = data.annotations()
    per_image_names = ["paired_rmse", "paired_morph"] + (["moa_accuracy"] if moa is not None else [])
    metrics = metrics_for(spaces, per_image_names)

    scored: dict[tuple[str, int], Scored] = {}
    rung_rows = []
    for ladder in tqdm(chosen, desc="calibration ladders", unit="ladder"):
        for k, value in enumerate(ladder.values):
            images = ladder.build(inputs, value)
            key = dict(base, ladder="truth" if k == 0 else ladder.name, rung=0 if k == 0 else k)
            gen = {s: features(s, images, f"{ladder.name} rung {k}", key) for s in spaces}
            gen = {s: scales[s](f) if s in scales else f for s, f in gen.items()}
            real_d, gen = dict(real), dict(gen)
            for s in scales:  # hand-made spaces: where the runs take their distances
                real_d[s], gen[s] = distance_space(real[s], gen[s])
            m = morph_truth if k == 0 else morph(images, what=f"{ladder.name} rung {k}")
            per_image = {"paired_rmse": pixel_rmse(images, inputs.truth),
                         "paired_morph": morphology_distance(m, morph_truth, morph_ref)}
            if moa is not None:
                per_image["moa_accuracy"] = (moa.predict(images) == labels[perts].to_numpy()).astype(float)
            scored[ladder.name, k] = Scored(gen, real_d, per_image, perts, perts_real, kid_seed=seed)
            rung_rows.append({"ladder": ladder.name, "parameter": ladder.parameter, "rung": k, "value": value,
                              "paired_error": float(per_image["paired_rmse"].mean())})

    values, summary = [], []
    for n in ns:
        g = subsample(perts, n, seed)
        r = subsample(perts_real, n, seed + 1)
        rng = np.random.default_rng([seed, n])
        g_groups, r_groups = _groups(g, perts), _groups(r, perts_real)
        draws = [(_resample(g_groups, rng), _resample(r_groups, rng)) for _ in range(n_boot)]
        for ladder in chosen:
            rungs = range(len(ladder.values))
            for metric in metrics:
                point = np.array([metric.compute(scored[ladder.name, k], g, r) for k in rungs])
                reps = np.array([[metric.compute(scored[ladder.name, k], gb, rb) for k in rungs] for gb, rb in draws])
                for k in rungs:  # value +- 1.96 sd of its replicates (resampling duplicates images, which
                    # biases a bootstrap FID upwards: a percentile interval could miss the value, see metrics/stats)
                    lo, hi = normal_ci_from_bootstrap(point[k], reps[:, k])
                    values.append({"ladder": ladder.name, "metric": metric.name, "n": n, "rung": k,
                                   "value": point[k], "ci_low": lo, "ci_high": hi})
                hit = resolved_rung(reps, metric.lower_is_better)
                summary.append({"ladder": ladder.name, "metric": metric.name, "n": n,
                                "lower_is_better": metric.lower_is_better,
                                "spearman": rank_agreement(point, metric.lower_is_better),
                                "ranks_all_rungs": bool(np.all(np.diff(point if metric.lower_is_better else -point)
                                                               > 0)),
                                "resolved_rung": hit if hit is not None else np.nan,
                                "resolved_value": ladder.values[hit] if hit is not None else np.nan,
                                "floor": point[0], "n_boot": n_boot, "seed": seed})
    return pd.DataFrame(values), pd.DataFrame(summary), pd.DataFrame(rung_rows)


def summary_markdown(summary: pd.DataFrame, rungs: pd.DataFrame, provenance: dict) -> str:
    """Per n: for every metric and ladder, the rank agreement and the smallest resolved rung's parameter value."""
    from benchmark.report import to_markdown

    lines = ["# Calibration of the metrics on the simulated screen\n\n",
             "Ladders of generators with a known order of quality, built from the screen's true counterfactuals "
             "(rung 0: the counterfactuals themselves, real cells disjoint from the reference set; quality falls with "
             "the rung). Each cell: Spearman correlation of the metric with the true order over the rungs (1: right, "
             "sign-corrected for higher-is-better metrics), then the parameter value of the smallest rung that a "
             "seeded bootstrap over images tells apart from rung 0 at 95% (`-`: none).\n\n",
             "".join(f"- {k}: {v}\n" for k, v in provenance.items()),
             "\n## The rungs and their true paired error (pixel RMSE against the counterfactuals)\n\n",
             to_markdown(rungs.pivot_table(index="rung", columns="ladder", values="paired_error").reset_index(),
                         ".4f"),
             "\nParameters: " + "; ".join(f"{r.ladder}: {r.parameter} {list(rungs[rungs['ladder'] == r.ladder]['value'])}"
                                          for r in rungs.drop_duplicates("ladder").itertuples()) + "\n"]
    for n, part in summary.groupby("n"):
        cell = part.assign(cell=[f"{s:.2f} / {'-' if pd.isna(v) else f'{v:g}'}"
                                 for s, v in zip(part["spearman"], part["resolved_value"])])
        wide = cell.pivot_table(index="metric", columns="ladder", values="cell", aggfunc="first")
        wide = wide.reindex(list(dict.fromkeys(part["metric"])))[list(dict.fromkeys(part["ladder"]))]
        ranked = part.groupby("metric", sort=False)["ranks_all_rungs"].sum().astype(int)
        wide["ladders ranked right"] = ranked.reindex(wide.index).astype(str) + f" of {part['ladder'].nunique()}"
        floor = part.groupby("metric", sort=False)["floor"].first()
        wide["real-vs-real floor"] = floor.reindex(wide.index).map("{:.4g}".format)
        lines += [f"\n## n = {n} per perturbation\n\n", to_markdown(wide.reset_index())]
    return "".join(lines)


def draw(values: pd.DataFrame, rungs: pd.DataFrame, ladder: str, path: Path) -> Path:
    """One ladder: every metric against the rung's parameter, one panel per metric, one line per n, bootstrap
    bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    part = values[values["ladder"] == ladder].merge(rungs[rungs["ladder"] == ladder][["rung", "value"]],
                                                    on="rung", suffixes=("", "_param"))
    metrics = list(dict.fromkeys(part["metric"]))
    cols = 4
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    palette = dict(zip(sorted(part["n"].unique()), sns.color_palette("viridis", part["n"].nunique())))
    for ax, metric in zip(axes.flat, metrics):
        m = part[part["metric"] == metric]
        for n, g in m.groupby("n"):
            ax.plot(g["value_param"], g["value"], marker="o", ms=3, color=palette[n], label=f"n = {n}")
            ax.fill_between(g["value_param"], g["ci_low"], g["ci_high"], color=palette[n], alpha=0.2, lw=0)
        ax.set_title(metric, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    param = rungs.loc[rungs["ladder"] == ladder, "parameter"].iloc[0]
    fig.suptitle(f"ladder {ladder}: each metric against the {param} (rung 0: the true counterfactuals); band: 95% "
                 "bootstrap over images", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path
