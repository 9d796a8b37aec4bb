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

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from scipy import ndimage, stats

from benchmark import io
from benchmark.errors import BenchmarkError
from benchmark.markdown import to_markdown
from benchmark.metrics.stats import normal_ci_from_bootstrap
from benchmark.plotting import pyplot, save_figure


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

    def zoomed(self, zoom: float) -> "Ladder":
        """The same ladder with every step `zoom` times smaller: where a metric's resolution limit lies when it
        resolves the first default step already. Blur has no finer steps to give: a Gaussian of 0.1-0.2 px changes
        no 8-bit pixel, so those rungs are the counterfactuals themselves."""
        return dataclasses.replace(self, values=tuple(v / zoom for v in self.values))


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


def rung_table(ladder: Ladder, inputs: LadderInputs) -> pd.DataFrame:
    """Each rung's parameter value and ground-truth paired error."""
    return pd.DataFrame([{"ladder": ladder.name, "rung": k, "value": v,
                          "paired_error": paired_error(ladder.build(inputs, v), inputs.truth)}
                         for k, v in enumerate(ladder.values)])


@dataclass(frozen=True)
class Metric:
    """One number the suite reports, computed on a subsample of generated and reference rows. `whole_set`: computed on
    all images at once (overall FD and KID, prdc, mAP), whose cost grows steeply with the set size; its bootstrap is
    skipped above `calibrate`'s `boot_max_images`."""

    name: str
    lower_is_better: bool
    compute: Callable[["Scored", np.ndarray, np.ndarray], float]
    whole_set: bool = False
    space: str | None = None  # the feature space it reads (None: per-image quantities)


class KernelKID:
    """KID of any rows of two feature sets from kernel matrices computed once, so that a bootstrap costs index
    lookups instead of a kernel per replicate: torch-fidelity's polynomial kernel and unbiased MMD on the very
    subsets `metrics.distances.kid` draws (equal to it on those rows, tested)."""

    def __init__(self, gen: np.ndarray, real: np.ndarray, k_real: np.ndarray | None = None) -> None:
        from torch_fidelity.metric_kid import kernel_poly

        # rows a capped space never extracted (`--max-n`) are NaN: the kernels cover the extracted rows only
        self.at_gen, self.at_real = _extracted(gen), _extracted(real)
        gen, real = gen[self.at_gen >= 0], real[self.at_real >= 0]
        self.k_gen = kernel_poly(gen, gen)
        self.k_cross = kernel_poly(gen, real)
        self.k_real = kernel_poly(real, real) if k_real is None else k_real

    def __call__(self, g: np.ndarray, r: np.ndarray, seed: int, subsets: int) -> float:
        from torch_fidelity.metric_kid import mmd2

        from benchmark.metrics.distances import KID_SUBSET_SIZE, check_sizes

        g, r = self.at_gen[g], self.at_real[r]
        if (g < 0).any() or (r < 0).any():
            raise BenchmarkError("KID: a subsample reads rows whose features were not extracted (NaN)")
        check_sizes(len(g), len(r), "KID")
        size = int(min(KID_SUBSET_SIZE, len(g), len(r)))
        rng = np.random.RandomState(seed)  # the draws of torch-fidelity's kid_features_to_metric
        out = []
        for _ in range(subsets):
            a = g[rng.choice(len(g), size, replace=False)]
            b = r[rng.choice(len(r), size, replace=False)]
            out.append(mmd2(self.k_gen[np.ix_(a, a)], self.k_cross[np.ix_(a, b)], self.k_real[np.ix_(b, b)]))
        return float(np.mean(out))


def _extracted(features: np.ndarray) -> np.ndarray:
    """Each row's position among the finite rows, -1 where it has a NaN."""
    ok = np.isfinite(features).all(1)
    at = np.full(len(features), -1)
    at[ok] = np.arange(int(ok.sum()))
    return at


@dataclass
class Profiles:
    """What mAP reads, as the runs give it to copairs: per space the z-scored features of one rung's images (not the
    principal components FD and KID use), the reference set's, and each request's control cell's (`controls`:
    shared by the rungs, filled once every ladder is built, when its images are already extracted)."""

    gen: dict[str, np.ndarray]
    real: dict[str, np.ndarray]
    controls: dict[str, np.ndarray]
    control_keys: np.ndarray  # each request's control SAMPLE_KEY: a control read once however often it is drawn


class Scored:
    """Per-image quantities of one rung: features per space, pixel and morphology paired errors, MoA correctness;
    and the reference set's features. A metric picks rows of both (a subsample, a bootstrap resample). Kernels and
    prdc values are kept until `release` (one ladder's worth at a time)."""

    def __init__(self, gen: dict[str, np.ndarray], real: dict[str, np.ndarray], per_image: dict[str, np.ndarray],
                 perts_gen: np.ndarray, perts_real: np.ndarray, kid_seed: int,
                 real_kernels: dict[tuple, np.ndarray], profiles: "Profiles | None" = None) -> None:
        self.gen, self.real, self.per_image = gen, real, per_image
        self.profiles = profiles
        self.perts_gen, self.perts_real, self.kid_seed = perts_gen, perts_real, kid_seed
        self.real_kernels = real_kernels  # the reference set's kernel, by space and content: shared by the rungs
        self._kid: dict[str, KernelKID] = {}
        self._prdc: dict[tuple, dict[str, float]] = {}

    def kid(self, space: str) -> KernelKID:
        if space not in self._kid:
            shared = (space, hashlib.sha1(np.ascontiguousarray(self.real[space]).tobytes()).digest())
            self._kid[space] = KernelKID(self.gen[space], self.real[space], self.real_kernels.get(shared))
            self.real_kernels[shared] = self._kid[space].k_real
        return self._kid[space]

    def prdc(self, space: str, g: np.ndarray, r: np.ndarray) -> dict[str, float]:
        """The four prdc values of these rows, computed once for the four metrics that read them."""
        import contextlib
        import io

        from prdc import compute_prdc

        from benchmark.metrics.evaluate import PRDC_K

        key = (space, hashlib.sha1(g.tobytes()).digest(), hashlib.sha1(r.tobytes()).digest())
        if key not in self._prdc:
            with contextlib.redirect_stdout(io.StringIO()):  # it prints the set sizes
                self._prdc[key] = {k: float(v) for k, v in
                                   compute_prdc(self.real[space][r], self.gen[space][g], nearest_k=PRDC_K).items()}
        return self._prdc[key]

    def release(self) -> None:
        self._kid.clear()
        self._prdc.clear()


def _distance(space: str, kind: str, conditional: bool) -> Callable[[Scored, np.ndarray, np.ndarray], float]:
    from benchmark.metrics.distances import fid

    def one(s: Scored, g: np.ndarray, r: np.ndarray) -> float:
        if kind == "fid":
            return fid(s.gen[space][g], s.real[space][r])
        return s.kid(space)(g, r, seed=s.kid_seed, subsets=CALIBRATION_KID_SUBSETS)

    def compute(s: Scored, g: np.ndarray, r: np.ndarray) -> float:
        if not conditional:
            return one(s, g, r)
        pg, pr = s.perts_gen[g], s.perts_real[r]
        return float(np.mean([one(s, g[pg == p], r[pr == p]) for p in np.unique(pg)]))

    return compute


def _map(space: str, kind: str) -> Callable[[Scored, np.ndarray, np.ndarray], float]:
    def compute(s: Scored, g: np.ndarray, r: np.ndarray) -> float:
        from benchmark.metrics.retrieval import activity_map, retrieval_map

        p = s.profiles
        if kind == "activity":  # against the distinct control cells of these requests, as the runs do
            _, first = np.unique(p.control_keys[g], return_index=True)
            return activity_map(p.gen[space][g], s.perts_gen[g], p.controls[space][g[first]])
        return retrieval_map(p.gen[space][g], s.perts_gen[g], p.real[space][r], s.perts_real[r])

    return compute


CALIBRATION_KID_SUBSETS = 20  # KID subsets per value (the runs use 100; the bootstrap repeats it many times)
BOOT_MAX_IMAGES = 700  # whole-set metrics are bootstrapped up to this many images a side (the tables' 648 = 36 x 18)


def metrics_for(spaces: list[str], per_image: list[str]) -> list[Metric]:
    out = []
    for space in spaces:
        out.append(Metric(f"fid_o [{space}]", True, _distance(space, "fid", False), whole_set=True, space=space))
        out.append(Metric(f"fid_c [{space}]", True, _distance(space, "fid", True), space=space))
        out.append(Metric(f"kid_o [{space}]", True, _distance(space, "kid", False), whole_set=True, space=space))
        out.append(Metric(f"kid_c [{space}]", True, _distance(space, "kid", True), space=space))
        for name in ("precision", "recall", "density", "coverage"):  # higher is better
            out.append(Metric(f"{name} [{space}]", False,
                              lambda s, g, r, space=space, name=name: s.prdc(space, g, r)[name], whole_set=True,
                              space=space))
        # higher is better; over every perturbation's cells at once, like the overall FD (a bootstrap resample
        # repeats cells, and a repeated cell is its own nearest positive: an upward bias, as FD's)
        for kind in ("activity", "retrieval"):
            out.append(Metric(f"map_{kind} [{space}]", False, _map(space, kind), whole_set=True, space=space))
    for name in per_image:  # means over images: paired errors (lower is better), MoA accuracy (higher)
        out.append(Metric(name, name != "moa_accuracy", lambda s, g, r, name=name: float(s.per_image[name][g].mean())))
    return out


def _resample(groups: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Rows drawn with replacement within each perturbation's rows."""
    return np.concatenate([rng.choice(rows, len(rows)) for rows in groups])


def _groups(rows: np.ndarray, perts: np.ndarray) -> list[np.ndarray]:
    return [rows[perts[rows] == p] for p in np.unique(perts[rows])]


class _Features:
    """Features of image sets through the on-disk cache, each distinct image extracted once: ladder rungs that
    reuse images (mixing, collapse, strength's last rung: the controls) cost nothing new. An image's features do not
    depend on the rest of its batch (extractors in eval mode)."""

    def __init__(self, extractors: dict, rule: str, cache, base: dict) -> None:
        self.extractors, self.rule, self.cache, self.base = extractors, rule, cache, base
        self.memo: dict[int, dict[bytes, np.ndarray]] = {}  # per extractor object (a space and the paired one share)

    def __call__(self, name: str, images: np.ndarray, what: str, key: dict) -> np.ndarray:
        from benchmark.metrics.evaluate import _views

        ext = self.extractors[name]
        memo = self.memo.setdefault(id(ext), {})
        digests = [hashlib.blake2b(im.tobytes(), digest_size=16).digest() for im in images]
        new = list({d: i for i, d in reversed(list(enumerate(digests))) if d not in memo}.values())
        if new:
            new.sort()
            rows = hashlib.sha256(b"".join(digests[i] for i in new)).hexdigest()[:16]
            views = _views(ext, self.rule, images[new])
            feats = np.concatenate([self.cache.get(dict(self.base, **key, space=name, sha=ext.weights_sha256,
                                                        view=v, rows=rows), lambda x=x: ext(x, what=what))
                                    for v, x in views], axis=1)
            memo.update(zip((digests[i] for i in new), feats))
        return np.stack([memo[d] for d in digests])


def calibrate(data, ns: list[int], spaces: list[str], ctx, cache, seed: int = 0, n_boot: int = 50,
              moa=None, ladders: list[str] | None = None, boot_max_images: int = BOOT_MAX_IMAGES,
              max_n: dict[str, int] | None = None, no_bootstrap: tuple[str, ...] = (),
              zoom: float = 1.0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Every ladder scored by every metric at every n: (values per rung with bootstrap intervals, a summary per
    ladder x metric x n, the rungs' ground-truth paired errors). Only the requests and reference images of the
    largest n are read (the subsamples are nested). `max_n` caps the n of a costly learned space (Inception:
    about 1 s of CPU per 16 images): its features are extracted for the first that many images per perturbation
    only, and its metrics scored up to that n; a key that is not a space caps the metrics whose name starts with it
    (`map_`: copairs takes about 25 s per value at 648 Inception profiles a side on 2 cores). Metrics named with a
    prefix in `no_bootstrap` get their values, rank agreement and floor but no bootstrap (prdc: about a second per
    value at 648 images a side on 2 cores). `zoom` divides every ladder's steps (see `Ladder.zoomed`)."""
    from tqdm.auto import tqdm

    from benchmark.metrics.evaluate import ReferenceScale, distance_space, morphology_distance, pixel_rmse
    from benchmark.metrics.features import Morphology
    from benchmark.registry import FEATURES

    plan = data.eval_plan()
    req, ref = plan.requests, plan.reference
    top = max(ns)
    req = req.iloc[subsample(req["CPD_NAME"].to_numpy(), top, seed)]
    ref = ref.iloc[subsample(ref["CPD_NAME"].to_numpy(), top, seed + 1)]
    keys, perts = req["control_key"].tolist(), req["CPD_NAME"].to_numpy()
    truth = data.counterfactual(keys, list(perts))
    if truth is None:
        raise BenchmarkError(f"task {data.task.name}: calibration needs true counterfactuals (a simulated screen)")
    inputs = LadderInputs(Path(data.source), keys, perts, data.images[req["control_row"].to_numpy()],
                          np.asarray(truth), seed)
    chosen = [LADDERS[name].zoomed(zoom) for name in (ladders or LADDERS)]
    extractors = {s: FEATURES.get(s)(ctx) for s in spaces}
    morph = extractors.get("morphology") or Morphology(data.task.channels)
    extractors["paired morphology"] = morph
    base = {"calibration": data.task.name, "plan": plan.digest(), "seed": seed, "top": top}
    features = _Features(extractors, data.task.channel_rule, cache, base)
    reference = data.images[ref["row"].to_numpy()]
    perts_real = ref["CPD_NAME"].to_numpy()

    max_n = dict(max_n or {})
    caps = {s: min(top, max_n.pop(s, top)) for s in spaces}
    per_image_names = ["paired_rmse", "paired_morph"] + (["moa_accuracy"] if moa is not None else [])
    metrics = metrics_for(spaces, per_image_names)
    for prefix in max_n:  # the rest cap metrics by name: scored up to that n, their features extracted as usual
        if not any(m.name.startswith(prefix) for m in metrics):
            raise BenchmarkError(f"calibration: --max-n {prefix}={max_n[prefix]}: neither a feature space scored "
                                 f"({', '.join(spaces) or 'none'}) nor the start of a metric's name (e.g. map_)")
    for s, cap in caps.items():
        if cap < top and not extractors[s].rgb:
            raise BenchmarkError(f"calibration: --max-n {s}={cap}: only learned (image) spaces can be capped; "
                                 f"{s} is z-scored by the whole reference set")
    rows_gen = {s: subsample(perts, caps[s], seed) for s in spaces}
    rows_real = {s: subsample(ref["CPD_NAME"].to_numpy(), caps[s], seed + 1) for s in spaces}

    def capped(s: str, images: np.ndarray, rows: np.ndarray, what: str, key: dict) -> np.ndarray:
        """Features of `rows` of `images` in space `s`, the other rows NaN (no capped metric reads them)."""
        f = features(s, images[rows], what, key)
        out = np.full((len(images), f.shape[1]), np.nan)
        out[rows] = f
        return out

    real = {s: capped(s, reference, rows_real[s], "real reference images", dict(set="reference")) for s in spaces}
    scales = {s: ReferenceScale(f) for s, f in real.items() if not extractors[s].rgb}
    real = {s: scales[s](f) if s in scales else f for s, f in real.items()}
    morph_ref = features("paired morphology", reference, "real reference images", dict(set="reference"))
    morph_truth = features("paired morphology", inputs.truth, "true counterfactuals", dict(set="truth"))
    labels = data.annotations()
    controls: dict[str, np.ndarray] = {}
    control_keys = np.asarray(keys)
    real_kernels: dict[tuple, np.ndarray] = {}

    scored: dict[tuple[str, int], Scored] = {}
    rung_rows = []
    for ladder in tqdm(chosen, desc="calibration ladders", unit="ladder"):
        for k, value in enumerate(ladder.values):
            images = ladder.build(inputs, value)
            key = dict(ladder="truth" if k == 0 else ladder.name, rung=0 if k == 0 else k)
            what = f"{ladder.name} rung {k}"
            gen = {s: capped(s, images, rows_gen[s], what, key) for s in spaces}
            gen = {s: scales[s](f) if s in scales else f for s, f in gen.items()}
            profiles = Profiles(gen, real, controls, control_keys)
            real_d, gen = dict(real), dict(gen)
            for s in scales:  # hand-made spaces: where the runs take their distances
                real_d[s], gen[s] = distance_space(real[s], gen[s])
            m = features("paired morphology", images, what, key)
            per_image = {"paired_rmse": pixel_rmse(images, inputs.truth),
                         "paired_morph": morphology_distance(m, morph_truth, morph_ref)}
            if moa is not None:
                per_image["moa_accuracy"] = (moa.predict(images) == labels[perts].to_numpy()).astype(float)
            scored[ladder.name, k] = Scored(gen, real_d, per_image, perts, perts_real, kid_seed=seed,
                                            real_kernels=real_kernels, profiles=profiles)
            rung_rows.append({"ladder": ladder.name, "parameter": ladder.parameter, "rung": k, "value": value,
                              "paired_error": float(per_image["paired_rmse"].mean())})

    for s in spaces:  # after the ladders: the mixing and strength ladders' last rungs already extracted them
        f = capped(s, inputs.controls, rows_gen[s], "control images", dict(set="controls"))
        controls[s] = scales[s](f) if s in scales else f

    def scored_at(metric: Metric, n: int) -> bool:
        return (metric.space is None or n <= caps[metric.space]) and all(
            n <= cap for prefix, cap in max_n.items() if metric.name.startswith(prefix))

    draws = {}
    for n in ns:
        g = subsample(perts, n, seed)
        r = subsample(perts_real, n, seed + 1)
        rng = np.random.default_rng([seed, n])
        g_groups, r_groups = _groups(g, perts), _groups(r, perts_real)
        draws[n] = (g, r, [(_resample(g_groups, rng), _resample(r_groups, rng)) for _ in range(n_boot)])
    values, summary = [], []
    for ladder in tqdm(chosen, desc="calibration bootstrap", unit="ladder"):
        rungs = range(len(ladder.values))
        for n in ns:
            g, r, reps_rows = draws[n]
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
    order = {name: i for i, name in enumerate(ladders or LADDERS)}
    summary = pd.DataFrame(summary).sort_values(["n", "ladder"], key=lambda c: c.map(order) if c.name == "ladder"
                                                else c, kind="stable")
    return pd.DataFrame(values), summary.reset_index(drop=True), pd.DataFrame(rung_rows)


def resolution(summary: pd.DataFrame, n: int, metrics: list[str]) -> pd.DataFrame:
    """What each metric tells apart at n images per perturbation: per ladder, the parameter value of the smallest
    rung resolved from the true counterfactuals (`-`: none; `nb`: not bootstrapped at this n), and on how many
    ladders the metric orders every rung right."""
    part = summary[(summary["n"] == n) & summary["metric"].isin(metrics)]
    rows = []
    for metric in [m for m in metrics if m in set(part["metric"])]:
        m = part[part["metric"] == metric]
        row = {"metric": metric}
        for r in m.itertuples():
            row[r.ladder] = "nb" if r.n_boot == 0 else "-" if pd.isna(r.resolved_value) else f"{r.resolved_value:g}"
        row["orders every rung"] = f"{int(m['ranks_all_rungs'].sum())} of {len(m)}"
        rows.append(row)
    return pd.DataFrame(rows)


def recommended_n(summary: pd.DataFrame, metric: str) -> tuple[int | None, str]:
    """The smallest calibrated n at which the metric resolves, on every ladder, as fine a rung as it does with the
    most images (more images no longer help); (None, why) when no n was bootstrapped."""
    m = summary[(summary["metric"] == metric) & (summary["n_boot"] > 0)]
    if m.empty:
        return None, "not bootstrapped at any n"
    rung = m.assign(r=m["resolved_rung"].fillna(np.inf)).pivot_table(index="n", columns="ladder", values="r")
    best = rung.loc[rung.index.max()]
    for n in sorted(rung.index):
        if (rung.loc[n] <= best).all():
            unresolved = [c for c in rung.columns if np.isinf(best[c])]
            why = (f"resolves the smallest step of every ladder from n = {n}; finer steps are not calibrated"
                   if (best == 1).all() else f"resolves at n = {n} what it resolves at n = {rung.index.max()}")
            why += f"; never resolves {', '.join(unresolved)}" if unresolved else ""
            if n == rung.index.max() and len(rung.index) > 1:
                why += "; still improving at the largest n calibrated"
            return int(n), why
    raise AssertionError("unreachable: the largest n always qualifies")


def summary_markdown(summary: pd.DataFrame, rungs: pd.DataFrame, provenance: dict) -> str:
    """Per n: for every metric and ladder, the rank agreement and the smallest resolved rung's parameter value."""
    lines = ["# Calibration of the metrics on the simulated screen\n\n",
             "Ladders of generators with a known order of quality, built from the screen's true counterfactuals "
             "(rung 0: the counterfactuals themselves, real cells disjoint from the reference set; quality falls with "
             "the rung). Each cell: Spearman correlation of the metric with the true order over the rungs (1: right, "
             "sign-corrected for higher-is-better metrics), then the parameter value of the smallest rung that a "
             "seeded bootstrap over images tells apart from rung 0 at 95% (`-`: none; `nb`: not bootstrapped, a "
             "whole-set metric above the bootstrap's size limit).\n\n",
             "".join(f"- {k}: {v}\n" for k, v in provenance.items()),
             "\n## The rungs and their true paired error (pixel RMSE against the counterfactuals)\n\n",
             to_markdown(rungs.pivot_table(index="rung", columns="ladder", values="paired_error").reset_index(),
                         ".4f"),
             "\nParameters: " + "; ".join(f"{r.ladder}: {r.parameter} {list(rungs[rungs['ladder'] == r.ladder]['value'])}"
                                          for r in rungs.drop_duplicates("ladder").itertuples()) + "\n"]
    for n, part in summary.groupby("n"):
        cell = part.assign(cell=[f"{s:.2f} / {'nb' if b == 0 else '-' if pd.isna(v) else f'{v:g}'}"
                                 for s, v, b in zip(part["spearman"], part["resolved_value"], part["n_boot"])])
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
    plt = pyplot()
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
    widest = max(range(len(metrics)), key=lambda i: part[part["metric"] == metrics[i]]["n"].nunique())
    axes.flat[widest].legend(fontsize=7)  # a panel with every n
    param = rungs.loc[rungs["ladder"] == ladder, "parameter"].iloc[0]
    fig.suptitle(f"ladder {ladder}: each metric against the {param} (rung 0: the true counterfactuals); band: 95% "
                 "bootstrap over images", fontsize=9)
    return save_figure(fig, path, dpi=110)


def merged(out: Path, values: pd.DataFrame, summary: pd.DataFrame, rungs: pd.DataFrame,
           provenance: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """A calibration already in `out` with the metrics just computed put in place of its rows of the same metrics,
    for adding or redoing some metrics (a feature space, a retrained classifier) without the hours the rest took.
    Only an output of the same task, seed, bootstrap and ladders can take them; the provenance says which rows came
    from which run."""
    old_prov = json.loads((out / "provenance.json").read_text()) if (out / "provenance.json").is_file() else None
    if old_prov is None or not (out / "values.csv").is_file() or not (out / "summary.csv").is_file():
        raise BenchmarkError(f"--merge: {out} holds no calibration (provenance.json, values.csv, summary.csv)")
    for key in ("calibration task", "seed", "bootstrap replicates", "ladder steps"):
        if old_prov.get(key) != provenance.get(key):
            raise BenchmarkError(f"--merge: {out}/provenance.json has {key} {old_prov.get(key)!r}, this calibration "
                                 f"{provenance.get(key)!r}; merge only calibrations of the same screen and draws")
    old_rungs = pd.read_csv(out / "rungs.csv")
    mine = old_rungs[old_rungs["ladder"].isin(set(rungs["ladder"]))].reset_index(drop=True)
    if not np.allclose(mine["value"], rungs["value"].to_numpy()) or len(mine) != len(rungs):
        raise BenchmarkError(f"--merge: {out}/rungs.csv has other rungs than this calibration's ladders")
    new = set(summary["metric"])
    tables = []
    for name, fresh in (("values.csv", values), ("summary.csv", summary)):
        # the new rows take the places of the rows they replace; rows the old output did not have go last
        old = pd.read_csv(out / name)
        keys = ["ladder", "metric", "n"] + (["rung"] if "rung" in old else [])
        place = {k: i for i, k in enumerate(map(tuple, old[keys].to_numpy().tolist()))}
        at = [place.get(k, len(old) + i) for i, k in enumerate(map(tuple, fresh[keys].to_numpy().tolist()))]
        both = pd.concat([old[~old["metric"].isin(new)].assign(_at=np.flatnonzero(~old["metric"].isin(new))),
                          fresh.assign(_at=at)], ignore_index=True)
        tables.append(both.sort_values("_at", kind="stable").drop(columns="_at").reset_index(drop=True))
    part = ", ".join(sorted(new))
    prov = {**old_prov, f"rows of {part}": f"recomputed by code {provenance['code']}, MoA classifier "
                                           f"{provenance['MoA classifier']}; {provenance['compute']}"}
    if "moa_accuracy" in new:
        prov["MoA classifier"] = provenance["MoA classifier"]
    return tables[0], tables[1], old_rungs, prov


def write(out: Path, values: pd.DataFrame, summary: pd.DataFrame, rungs: pd.DataFrame, provenance: dict,
          ladders: list[str]) -> None:
    """A calibration's files: the values, the summary per ladder and metric, the rungs, the provenance, the summary
    as Markdown and one figure per ladder."""
    io.write_csv(out / "values.csv", values)
    io.write_csv(out / "summary.csv", summary)
    io.write_csv(out / "rungs.csv", rungs)
    io.write_json(out / "provenance.json", provenance)
    shown = {k: v for k, v in provenance.items() if k not in ("calibration task", "n")}
    io.write_text(out / "summary.md", summary_markdown(summary, rungs, shown))
    for ladder in ladders:
        draw(values, rungs, ladder, out / f"{ladder}.png")
