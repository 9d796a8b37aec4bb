"""A calibration from request to folder: score every rung of every ladder once (`RungScorer`), bootstrap every
metric at every n (`bootstrap.bootstrap_ladders`), and write what each metric resolves with its provenance."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.calibration.bootstrap import bootstrap_ladders, draws, subsample
from benchmark.calibration.features import ImageFeatures
from benchmark.calibration.ladders import LADDERS, Ladder, LadderInputs
from benchmark.calibration.metrics import BOOT_MAX_IMAGES, MapProfiles, Metric, Scored, metrics_for
from benchmark.errors import BenchmarkError


class RungScorer:
    """What every rung's images are scored against, extracted once: the reference set in each space (z-scored where
    the space is hand-made), the morphology of the references and of the true counterfactuals, and the rows each
    space reads (a `max_n` cap extracts a learned space's features for the first that many images per perturbation
    only; a key that is not a space caps the metrics whose name starts with it)."""

    def __init__(self, data, inputs: LadderInputs, ref: pd.DataFrame, spaces: list[str], ctx, cache, top: int,
                 max_n: dict[str, int], metrics: list[Metric], moa=None) -> None:
        from benchmark.metrics.evaluate import ReferenceScale
        from benchmark.metrics.features import Morphology
        from benchmark.registry import FEATURES

        seed = inputs.seed
        self.inputs, self.spaces, self.moa, self.seed = inputs, spaces, moa, seed
        self.extractors = {s: FEATURES.get(s)(ctx) for s in spaces}
        self.extractors["paired morphology"] = self.extractors.get("morphology") or Morphology(data.task.channels)
        base = {"calibration": data.task.name, "plan": data.eval_plan().digest(), "seed": seed, "top": top}
        self.features = ImageFeatures(self.extractors, data.task.channel_rule, cache, base)
        reference = data.images[ref["row"].to_numpy()]
        self.perts, self.perts_real = inputs.perturbations, ref["CPD_NAME"].to_numpy()
        self.caps = {s: min(top, max_n.pop(s, top)) for s in spaces}
        self.name_caps = max_n  # what is left caps metrics by name: scored up to that n, features extracted as usual
        for prefix in self.name_caps:
            if not any(m.name.startswith(prefix) for m in metrics):
                raise BenchmarkError(f"calibration: --max-n {prefix}={max_n[prefix]}: neither a feature space scored "
                                     f"({', '.join(spaces) or 'none'}) nor the start of a metric's name (e.g. map_)")
        for s, cap in self.caps.items():
            if cap < top and not self.extractors[s].rgb:
                raise BenchmarkError(f"calibration: --max-n {s}={cap}: only learned (image) spaces can be capped; "
                                     f"{s} is z-scored by the whole reference set")
        self.rows_gen = {s: subsample(self.perts, self.caps[s], seed) for s in spaces}
        self.rows_real = {s: subsample(self.perts_real, self.caps[s], seed + 1) for s in spaces}
        real = {s: self._capped(s, reference, self.rows_real[s], "real reference images", dict(set="reference"))
                for s in spaces}
        self.scales = {s: ReferenceScale(f) for s, f in real.items() if not self.extractors[s].rgb}
        self.real = {s: self._scaled(s, f) for s, f in real.items()}
        self.morph_ref = self.features("paired morphology", reference, "real reference images", dict(set="reference"))
        self.morph_truth = self.features("paired morphology", inputs.truth, "true counterfactuals", dict(set="truth"))
        self.labels = data.annotations()
        self.controls: dict[str, np.ndarray] = {}  # filled by `add_controls`, read by the mAP of every rung
        self.real_kernels: dict[tuple, np.ndarray] = {}

    def _capped(self, s: str, images: np.ndarray, rows: np.ndarray, what: str, key: dict) -> np.ndarray:
        """Features of `rows` of `images` in space `s`, the other rows NaN (no capped metric reads them)."""
        f = self.features(s, images[rows], what, key)
        out = np.full((len(images), f.shape[1]), np.nan)
        out[rows] = f
        return out

    def _scaled(self, s: str, f: np.ndarray) -> np.ndarray:
        return self.scales[s](f) if s in self.scales else f

    def score(self, ladder: Ladder, k: int, value: float) -> Scored:
        """Rung k of a ladder: its images built and extracted, its per-image errors against the counterfactuals."""
        from benchmark.metrics.evaluate import distance_space, morphology_distance, pixel_rmse

        images = ladder.build(self.inputs, value)
        key = dict(ladder="truth" if k == 0 else ladder.name, rung=0 if k == 0 else k)
        what = f"{ladder.name} rung {k}"
        gen = {s: self._scaled(s, self._capped(s, images, self.rows_gen[s], what, key)) for s in self.spaces}
        profiles = MapProfiles(gen, self.real, self.controls, np.asarray(self.inputs.keys))
        real_d, gen = dict(self.real), dict(gen)
        for s in self.scales:  # hand-made spaces: where the runs take their distances
            real_d[s], gen[s] = distance_space(self.real[s], gen[s])
        m = self.features("paired morphology", images, what, key)
        per_image = {"paired_rmse": pixel_rmse(images, self.inputs.truth),
                     "paired_morph": morphology_distance(m, self.morph_truth, self.morph_ref)}
        if self.moa is not None:
            per_image["moa_accuracy"] = (self.moa.predict(images) == self.labels[self.perts].to_numpy()).astype(float)
        return Scored(gen, real_d, per_image, self.perts, self.perts_real, kid_seed=self.seed,
                      real_kernels=self.real_kernels, profiles=profiles)

    def add_controls(self) -> None:
        """Each request's control cell in every space, for mAP: after the ladders, whose mixing and strength rungs
        already extracted them."""
        for s in self.spaces:
            f = self._capped(s, self.inputs.controls, self.rows_gen[s], "control images", dict(set="controls"))
            self.controls[s] = self._scaled(s, f)

    def scored_at(self, metric: Metric, n: int) -> bool:
        return (metric.space is None or n <= self.caps[metric.space]) and all(
            n <= cap for prefix, cap in self.name_caps.items() if metric.name.startswith(prefix))


def calibrate(data, ns: list[int], spaces: list[str], ctx, cache, seed: int = 0, n_boot: int = 50,
              moa=None, ladders: list[str] | None = None, boot_max_images: int = BOOT_MAX_IMAGES,
              max_n: dict[str, int] | None = None, no_bootstrap: tuple[str, ...] = (),
              zoom: float = 1.0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Every ladder scored by every metric at every n: (values per rung with bootstrap intervals, a summary per
    ladder x metric x n, the rungs' ground-truth paired errors). Only the requests and reference images of the
    largest n are read (the subsamples are nested). `max_n` caps the n of a costly learned space (Inception:
    about 1 s of CPU per 16 images) or of the metrics whose name starts with a key (`map_`: copairs takes about
    25 s per value at 648 Inception profiles a side on 2 cores). Metrics named with a prefix in `no_bootstrap` get
    their values, rank agreement and floor but no bootstrap (prdc: about a second per value at 648 images a side on
    2 cores). `zoom` divides every ladder's steps (see `Ladder.zoomed`)."""
    from tqdm.auto import tqdm

    plan = data.eval_plan()
    top = max(ns)
    req = plan.requests.iloc[subsample(plan.requests["CPD_NAME"].to_numpy(), top, seed)]
    ref = plan.reference.iloc[subsample(plan.reference["CPD_NAME"].to_numpy(), top, seed + 1)]
    keys, perts = req["control_key"].tolist(), req["CPD_NAME"].to_numpy()
    truth = data.counterfactual(keys, list(perts))
    if truth is None:
        raise BenchmarkError(f"task {data.task.name}: calibration needs true counterfactuals (a simulated screen)")
    inputs = LadderInputs(Path(data.source), keys, perts, data.images[req["control_row"].to_numpy()],
                          np.asarray(truth), seed)
    chosen = [LADDERS[name].zoomed(zoom) for name in (ladders or LADDERS)]
    metrics = metrics_for(spaces, ["paired_rmse", "paired_morph"] + (["moa_accuracy"] if moa is not None else []))
    scorer = RungScorer(data, inputs, ref, spaces, ctx, cache, top, dict(max_n or {}), metrics, moa)
    scored, rung_rows = {}, []
    for ladder in tqdm(chosen, desc="calibration ladders", unit="ladder"):
        for k, value in enumerate(ladder.values):
            scored[ladder.name, k] = s = scorer.score(ladder, k, value)
            rung_rows.append({"ladder": ladder.name, "parameter": ladder.parameter, "rung": k, "value": value,
                              "paired_error": float(s.per_image["paired_rmse"].mean())})
    scorer.add_controls()
    values, summary = bootstrap_ladders(chosen, metrics, scored, draws(ns, perts, scorer.perts_real, seed, n_boot),
                                        scorer.scored_at, no_bootstrap, boot_max_images, seed)
    order = {name: i for i, name in enumerate(ladders or LADDERS)}
    summary = summary.sort_values(["n", "ladder"], key=lambda c: c.map(order) if c.name == "ladder" else c,
                                  kind="stable")
    return values, summary.reset_index(drop=True), pd.DataFrame(rung_rows)


@dataclass(frozen=True)
class Request:
    """A calibration as the user asks for it (`python -m benchmark calibrate`); every field is in its provenance."""

    task: str
    data_dir: Path
    out: Path
    ns: list[int]
    features: tuple[str, ...]
    seed: int = 0
    n_boot: int = 50
    ladders: list[str] | None = None
    max_n: dict[str, int] = field(default_factory=dict)
    no_bootstrap: tuple[str, ...] = ()
    zoom: float = 1.0
    merge: bool = False
    inception_weights: Path | None = None
    dinov2_weights: Path | None = None


def run(request: Request) -> tuple[Path, str]:
    """Calibrate, then write the folder (or merge the metrics just computed into the one there): the path of its
    `summary.md` and a line saying what was calibrated."""
    from benchmark.calibration.summaries import merged, provenance, write
    from benchmark.metrics.evaluate import FeatureCache
    from benchmark.metrics.features import ExtractorContext
    from benchmark.registry import FEATURES, TASKS, check_features

    check_features(request.features)
    ladders = request.ladders or list(LADDERS)
    unknown = [x for x in ladders if x not in LADDERS]
    if unknown:
        raise BenchmarkError(f"--ladders: unknown ladder {unknown[0]!r}; expected some of {', '.join(LADDERS)}")
    task = TASKS.get(request.task)
    data = task.load(request.data_dir)
    split_hash = data.write_split_manifest(Path(request.data_dir) / "splits" / f"{task.name}-v{task.version}.csv")
    cache_dir = Path(request.data_dir) / ".cache"
    ctx = ExtractorContext(cache_dir=cache_dir, channels=task.channels, inception_weights=request.inception_weights,
                           dinov2_weights=request.dinov2_weights)
    moa = None
    if "moa" in request.features and task.moa:
        from benchmark.metrics.moa import classifier_for

        moa = classifier_for(data, cache_dir, split_hash)
    spaces = [f for f in request.features if f in FEATURES.names()]
    t0 = time.time()
    values, summary, rungs = calibrate(data, request.ns, spaces, ctx, FeatureCache(cache_dir / "calibration"),
                                       seed=request.seed, n_boot=request.n_boot, moa=moa, ladders=ladders,
                                       max_n=request.max_n, no_bootstrap=request.no_bootstrap, zoom=request.zoom)
    prov = provenance(request, task, data, split_hash, {s: FEATURES.get(s)(ctx).weights_sha256 for s in spaces},
                      moa, time.time() - t0)
    out = Path(request.out)
    if request.merge:
        values, summary, rungs, prov = merged(out, values, summary, rungs, prov)
    write(out, values, summary, rungs, prov, list(dict.fromkeys(values["ladder"])))
    return out / "summary.md", (f"calibration of {len(spaces) + 2 + (moa is not None)} metric families on "
                                f"{len(ladders)} ladders at n = {', '.join(map(str, request.ns))}")
