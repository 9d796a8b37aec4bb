"""The metrics as the calibration scores them: each a function of a rung's `Scored` quantities and a subsample of
generated and reference rows, so that a bootstrap costs index lookups, not feature extraction."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from benchmark.errors import BenchmarkError


CALIBRATION_KID_SUBSETS = 20  # KID subsets per value (the runs use 100; the bootstrap repeats it many times)


BOOT_MAX_IMAGES = 700  # whole-set metrics are bootstrapped up to this many images a side (the tables' 648 = 36 x 18)


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
class MapProfiles:
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
                 real_kernels: dict[tuple, np.ndarray], profiles: "MapProfiles | None" = None) -> None:
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
