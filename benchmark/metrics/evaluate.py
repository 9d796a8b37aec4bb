"""Score generated images against the reference set of an EvalPlan.

Produces long-format rows: one per (metric, feature space, perturbation), each
carrying n per side, the feature space's weights hash, the channel rule and the
seed of any random choice. Real-image features are cached per (task, split,
plan, extractor, weights, channel rule) so they are computed once.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark import io
from benchmark.registry import CHANNEL_RULES, FEATURES
from benchmark.rows import RowView
from benchmark.store import SCORE_COLUMNS

from .distances import fid, kid
from .features import ExtractorContext, Morphology
from .retrieval import map_rows
from .shift import shift_rows
from .stats import bootstrap_ci, normal_ci_from_bootstrap



@dataclass
class FeatureCache:
    root: Path

    def get(self, key: dict, compute) -> np.ndarray:
        digest = hashlib.sha256(repr(sorted(key.items())).encode()).hexdigest()[:24]
        path = self.root / f"{digest}.npy"
        if path.is_file():
            return np.load(path)
        feats = compute()
        io.write_npy(path, feats)
        io.write_json(path.with_suffix(".json"), key)
        return feats


class ReferenceScale:
    """Hand-made features live on different scales: z-scored by the reference set so each counts alike. A feature
    undefined or constant on the reference set carries no information and would blow up under z-scoring: it is left
    out (`keep`); an undefined measurement (NaN) becomes the reference mean (0)."""

    def __init__(self, real: np.ndarray) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            self.mu, self.sd = np.nanmean(real, 0), np.nanstd(real, 0)
        self.keep = np.isfinite(self.sd) & (self.sd > 1e-6 * np.maximum(1, np.abs(self.mu)))

    def __call__(self, features: np.ndarray) -> np.ndarray:
        k = self.keep
        return np.nan_to_num((features[:, k] - self.mu[k]) / self.sd[k])


def distance_space(real: np.ndarray, gen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where FID, KID and prdc of a hand-made space are taken, both sets already z-scored by the reference: as they
    are, or for a space wider than PCA_COMPONENTS the reference's principal components of the z-scores winsorised
    at WINSOR (what `evaluate` does per channel view)."""
    if real.shape[1] <= PCA_COMPONENTS:
        return real, gen
    r, g, _ = principal({"all": np.clip(real, -WINSOR, WINSOR)}, {"all": np.clip(gen, -WINSOR, WINSOR)})
    return r["all"], g["all"]


PCA_COMPONENTS = 50  # distances of hand-made spaces wider than this are taken in the reference's principal components
WINSOR = 10.0  # and their z-scores clipped at this many reference sd first


def principal(real: dict[str, np.ndarray], gen: dict[str, np.ndarray]) -> tuple[dict, dict, float]:
    """Both sets projected on the reference set's first PCA_COMPONENTS principal axes (SVD, deterministic). With
    hundreds of features and a few hundred cells, FID's covariances are rank-deficient and their estimation noise
    swamps any difference; the leading components keep what varies between cells."""
    out_r, out_g, explained = {}, {}, []
    for v, f in real.items():
        centre = f.mean(0)
        _, sing, vt = np.linalg.svd(f - centre, full_matrices=False)
        axes = vt[:PCA_COMPONENTS].T
        out_r[v], out_g[v] = (f - centre) @ axes, (gen[v] - centre) @ axes
        explained.append(float((sing[:PCA_COMPONENTS] ** 2).sum() / (sing ** 2).sum()))
    return out_r, out_g, float(np.mean(explained))


def _profile(views: dict[str, np.ndarray]) -> np.ndarray:
    """One profile per cell: the features of its channel views side by side."""
    return np.concatenate([views[v] for v in sorted(views)], axis=1)


def channel_views(extractor, rule_name: str, images: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """What an extractor is shown: a network made for RGB the channel rule's three-channel views, a hand-made
    feature space every channel at once (view "all")."""
    if not extractor.rgb:
        return [("all", images)]
    return CHANNEL_RULES.get(rule_name).views(images)


CHUNK = 2048  # images read and turned into channel views at a time (a multiple of the extractors' batch of 32)


def view_features(extractor, rule_name: str, images, what: str, cache: FeatureCache | None = None,
                  key: dict | None = None) -> dict[str, np.ndarray]:
    """Features of every channel view of `images` (an array or a lazy `RowView` of the store), read a chunk at a
    time so that only features accumulate, each view cached under `key` where given. Chunks split the extractor's
    batches exactly where one pass would, so the features are those of a single pass."""
    names = view_names(extractor, rule_name, images)
    done: dict[str, np.ndarray] = {}

    def compute(view: str) -> np.ndarray:
        if not done:
            parts: dict[str, list[np.ndarray]] = {v: [] for v in names}
            for start in range(0, len(images), CHUNK):
                chunk = np.array(images[start:start + CHUNK])  # writable: torch warns on read-only memory
                for v, imgs in channel_views(extractor, rule_name, chunk):
                    parts[v].append(extractor(imgs, what=what))
            done.update({v: np.concatenate(f) for v, f in parts.items()})
        return done[view]

    if cache is None:
        return {v: compute(v) for v in names}
    return {v: cache.get(dict(key, view=v), lambda v=v: compute(v)) for v in names}


def view_names(extractor, rule_name: str, images) -> list[str]:
    return [v for v, _ in channel_views(extractor, rule_name, np.asarray(images[:1]))]


def same_images(a, b) -> bool:
    """Whether two image sets (arrays or lazy views) are equal, compared a chunk at a time."""
    return len(a) == len(b) and all(np.array_equal(np.asarray(a[i:i + CHUNK]), np.asarray(b[i:i + CHUNK]))
                                    for i in range(0, len(a), CHUNK))


BOOTSTRAP = 100  # resamples behind each FID interval


PRDC_K = 5  # nearest neighbours behind precision, recall, density and coverage (Naeem et al. 2020's default)


PRDC_MAX = 5000  # images a side behind prdc: its pairwise distances grow with the square of the set


def prdc_rows(real: dict[str, np.ndarray], gen: dict[str, np.ndarray], space: str, rule: str,
              sha: str, seed: int = 0) -> list[dict]:
    """Precision, recall, density and coverage (PyPI `prdc`, k = PRDC_K) of the generated against the reference
    features, averaged over channel views: fidelity and diversity apart, where FID mixes them (a mode-collapsed
    generator keeps precision and loses recall and coverage). A side larger than PRDC_MAX is a seeded subsample
    of that size (Naeem et al. 2020 used 10,000; the three n x n distance matrices of 46,000 cells would take
    25 GB): the rows give the n used, and the seed where one was drawn."""
    import contextlib
    import io as _io

    from prdc import compute_prdc

    rng = np.random.default_rng(seed)
    n_real, n_gen = len(next(iter(real.values()))), len(next(iter(gen.values())))
    pick_r = np.sort(rng.choice(n_real, PRDC_MAX, replace=False)) if n_real > PRDC_MAX else slice(None)
    pick_g = np.sort(rng.choice(n_gen, PRDC_MAX, replace=False)) if n_gen > PRDC_MAX else slice(None)
    with contextlib.redirect_stdout(_io.StringIO()):  # it prints the set sizes
        per_view = [compute_prdc(real[v][pick_r], gen[v][pick_g], nearest_k=PRDC_K) for v in real]
    drawn = seed if max(n_real, n_gen) > PRDC_MAX else np.nan
    return [dict(metric=name, feature_space=space, perturbation="", value=float(np.mean([d[name] for d in per_view])),
                 std=np.nan, n_gen=min(n_gen, PRDC_MAX), n_real=min(n_real, PRDC_MAX), channel_rule=rule,
                 extractor_sha256=sha, metric_seed=drawn, ci_low=np.nan, ci_high=np.nan)
            for name in ("precision", "recall", "density", "coverage")]


def distribution_rows(real: dict[str, np.ndarray], gen: dict[str, np.ndarray], perts_real: np.ndarray,
                      perts_gen: np.ndarray, space: str, rule: str, sha: str, seed: int) -> list[dict]:
    """FID/KID overall and per perturbation, each averaged over channel views."""
    rows = []
    views = list(real)
    names = sorted(set(perts_real))

    def both(a_rows, b_rows):
        f = np.mean([fid(gen[v][b_rows], real[v][a_rows]) for v in views])
        ks = [kid(gen[v][b_rows], real[v][a_rows], seed=seed) for v in views]
        return f, float(np.mean([k[0] for k in ks])), float(np.mean([k[1] for k in ks])), ks[0][2]

    rng = np.random.default_rng(seed)

    def boot(a_rows, b_rows) -> np.ndarray:
        """FID of BOOTSTRAP resamples (images of each side drawn with replacement), averaged over views."""
        reps = [(rng.choice(a_rows, len(a_rows)), rng.choice(b_rows, len(b_rows))) for _ in range(BOOTSTRAP)]
        return np.array([np.mean([fid(gen[v][gb], real[v][ra]) for v in views]) for ra, gb in reps])

    def ci(value: float, reps: np.ndarray) -> dict:
        lo, hi = normal_ci_from_bootstrap(value, reps)
        return dict(ci_low=lo, ci_high=hi)

    all_r, all_g = np.arange(len(perts_real)), np.arange(len(perts_gen))
    f, k, ks, size = both(all_r, all_g)
    common = dict(feature_space=space, channel_rule=rule, extractor_sha256=sha, metric_seed=seed)
    rows.append(dict(metric="fid_o", perturbation="", value=f, std=np.nan, n_gen=len(all_g), n_real=len(all_r),
                     **ci(f, boot(all_r, all_g)), **common))
    rows.append(dict(metric="kid_o", perturbation="", value=k, std=ks, n_gen=len(all_g), n_real=len(all_r), **common))
    per, per_boot = [], []
    for p in names:
        r = np.flatnonzero(perts_real == p)
        g = np.flatnonzero(perts_gen == p)
        f, k, ks, size = both(r, g)
        per.append((f, k))
        per_boot.append(boot(r, g))
        rows.append(dict(metric="fid", perturbation=p, value=f, std=np.nan, n_gen=len(g), n_real=len(r),
                         **ci(f, per_boot[-1]), **common))
        rows.append(dict(metric="kid", perturbation=p, value=k, std=ks, n_gen=len(g), n_real=len(r), **common))
    fs, kids = np.array([p[0] for p in per]), np.array([p[1] for p in per])
    n_min_g = min(int((perts_gen == p).sum()) for p in names)
    n_min_r = min(int((perts_real == p).sum()) for p in names)
    # std of the conditional scores: spread over perturbations; n: the smallest per-perturbation set
    rows.append(dict(metric="fid_c", perturbation="", value=float(fs.mean()), std=float(fs.std()), n_gen=n_min_g, n_real=n_min_r,
                     **ci(float(fs.mean()), np.mean(per_boot, axis=0)), **common))
    rows.append(dict(metric="kid_c", perturbation="", value=float(kids.mean()), std=float(kids.std()), n_gen=n_min_g, n_real=n_min_r, **common))
    return rows


def pixel_rmse(generated: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per image, the RMSE between uint8 crops scaled to [0, 1]."""
    g = generated.astype(np.float64) / 255.0
    t = truth.astype(np.float64) / 255.0
    return np.sqrt(((g - t) ** 2).reshape(len(g), -1).mean(1))


def morphology_distance(generated: np.ndarray, truth: np.ndarray, ref_morph: np.ndarray) -> np.ndarray:
    """Per image, the RMS of morphology-feature differences in units of the reference set's spread."""
    return np.sqrt((((generated - truth) / (ref_morph.std(0) + 1e-6)) ** 2).mean(1))


def paired_rows(generated: np.ndarray, truth: np.ndarray, morph: Morphology, ref_morph: np.ndarray, seed: int) -> list[dict]:
    """Generated vs the true counterfactual of the same cell: pixel RMSE and morphology distance."""
    per_img = pixel_rmse(generated, truth)
    per_morph = morphology_distance(morph(generated), morph(truth), ref_morph)
    n = len(per_img)
    common = dict(perturbation="", n_gen=n, n_real=n, channel_rule="all", metric_seed=seed)
    ci_img, ci_morph = bootstrap_ci(per_img, seed), bootstrap_ci(per_morph, seed)
    return [
        dict(metric="paired_rmse", feature_space="pixels", value=float(per_img.mean()), std=float(per_img.std(ddof=1) / np.sqrt(n)),
             extractor_sha256="", ci_low=ci_img[0], ci_high=ci_img[1], **common),
        dict(metric="paired_morph", feature_space="morphology", value=float(per_morph.mean()),
             std=float(per_morph.std(ddof=1) / np.sqrt(n)), extractor_sha256=morph.weights_sha256,
             ci_low=ci_morph[0], ci_high=ci_morph[1], **common),
    ]


def evaluate(data, plan, generated: np.ndarray, spaces: list[str], ctx: ExtractorContext, cache: FeatureCache,
             cache_key: dict, kid_seed: int = 0, paired: bool = True) -> tuple[pd.DataFrame, dict]:
    """All metric rows for one run, and a dict of feature-space provenance for the manifest; the paired
    counterfactual errors only where the images answer their requests' controls (`paired`) and the task knows the
    counterfactuals."""
    # the store's images are read a chunk at a time: views, not copies (they may be most of a large dataset)
    reference = RowView(data.images, plan.reference["row"].to_numpy())
    perts_real = plan.reference["CPD_NAME"].to_numpy()
    perts_gen = plan.requests["CPD_NAME"].to_numpy()
    rule = data.task.channel_rule
    rows, provenance = [], {}
    morph = None
    # images that are the plan's own controls (the identity floor) get their features cached like the real sets'
    control_rows = plan.requests["control_row"].to_numpy()
    are_controls = same_images(generated, RowView(data.images, control_rows))
    # a plan pairs few controls with many perturbations (48 for 648 requests on the screen): each is extracted once
    rows_once, unique_controls, expand = np.unique(control_rows, return_index=True, return_inverse=True)
    for space in spaces:
        ext = FEATURES.get(space)(ctx)
        rule_used = rule if ext.rgb else "all"
        provenance[space] = {"weights_sha256": ext.weights_sha256, "channel_rule": rule_used,
                             "channel_rule_doc": CHANNEL_RULES.get(rule).doc if ext.rgb else "all channels read natively"}
        key = dict(cache_key, space=space, sha=ext.weights_sha256, rule=rule_used)
        real_views = view_features(ext, rule, reference, "real reference images", cache, key)
        # the plan's controls: the identity floor's images, and the negatives of phenotypic activity (the cache
        # holds them expanded to the plan's requests, as it always has)
        once, unique = RowView(data.images, rows_once), {}

        def expanded(view: str) -> np.ndarray:  # the distinct controls extracted once, on a cache miss only
            if not unique:
                unique.update(view_features(ext, rule, once, "the plan's control images"))
            return unique[view][expand]

        ctrl_views = {v: cache.get(dict(key, view=v, set="plan controls"), lambda v=v: expanded(v))
                      for v in view_names(ext, rule, once)}
        gen_views = ctrl_views if are_controls else view_features(ext, rule, generated, "generated images")
        if not ext.rgb:
            # z-scored by the reference set (see ReferenceScale); what was left out and what was undefined is counted
            scalers = {v: ReferenceScale(f) for v, f in real_views.items()}
            keep = {v: z.keep for v, z in scalers.items()}
            raw_real = real_views
            provenance[space]["features_used"] = {v: f"{int(k.sum())} of {len(k)}" for v, k in keep.items()}
            provenance[space]["crops_with_nan"] = {
                what: int(sum(np.isnan(f[:, keep[v]]).any(1).sum() for v, f in views.items()))
                for what, views in (("reference", real_views), ("generated", gen_views), ("controls", ctrl_views))}
            real_views, gen_views, ctrl_views = ({v: scalers[v](f) for v, f in views.items()}
                                                 for views in (real_views, gen_views, ctrl_views))
            provenance[space]["standardised"] = ("z-scored by the reference set's mean and std, features undefined or "
                                                 "constant on it left out; NaN (an undefined measurement) set to 0, "
                                                 "the reference mean")
        dist_real, dist_gen = real_views, gen_views
        if not ext.rgb and any(f.shape[1] > PCA_COMPONENTS for f in real_views.values()):
            # a few segmentation failures give measurements hundreds of sd out, and they alone would decide FID and
            # KID: winsorised at WINSOR reference sd before the principal components
            clip = lambda views: {v: np.clip(f, -WINSOR, WINSOR) for v, f in views.items()}  # noqa: E731
            dist_real, dist_gen, explained = principal(clip(real_views), clip(gen_views))
            provenance[space]["distances_in"] = (f"the reference set's first {PCA_COMPONENTS} principal components "
                                                 f"({explained:.0%} of its variance) of z-scores winsorised at "
                                                 f"{WINSOR}")
        rows += distribution_rows(dist_real, dist_gen, perts_real, perts_gen, space, rule_used, ext.weights_sha256,
                                  kid_seed)
        rows += prdc_rows(dist_real, dist_gen, space, rule_used, ext.weights_sha256, kid_seed)
        rows += map_rows(_profile(gen_views), perts_gen, _profile(real_views), perts_real,
                         _profile(ctrl_views)[unique_controls], space, rule_used, ext.weights_sha256, kid_seed)
        provenance[space]["prdc_k"] = PRDC_K
        if not ext.rgb and getattr(ext, "feature_names", None):  # named features: the biologist's view
            rows += shift_rows(real_views["all"], perts_real, gen_views["all"], perts_gen,
                               ctrl_views["all"][unique_controls],
                               [n for n, k in zip(ext.feature_names, keep["all"]) if k], space, rule_used,
                               ext.weights_sha256)
        if isinstance(ext, Morphology):
            morph = (ext, raw_real["all"])
    truth = data.counterfactual(plan.requests["control_key"].tolist(), perts_gen.tolist()) if paired else None
    if truth is not None:
        if morph is None:
            m = Morphology(data.task.channels)
            key = dict(cache_key, space="morphology", sha=m.weights_sha256, rule="all")
            morph = (m, view_features(m, "all", reference, "real reference images", cache, key)["all"])
        rows += paired_rows(np.asarray(generated), np.asarray(truth), morph[0], morph[1], kid_seed)
    return pd.DataFrame(rows, columns=list(SCORE_COLUMNS)), provenance
