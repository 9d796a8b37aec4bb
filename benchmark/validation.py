"""Learning curves and model selection, on the validation split only.

Official codes pick checkpoints on the test set (CellFlux selects on its test
loader, IMPA monitors test FID); here `fit` asks a `ValidationMonitor` for
cheap scores of the model in training at a few steps (`curve_steps`), and a
run with `select=best` keeps the weights of the best validation score. The
monitor is built from the task's validation plan: it never holds a test image.

Metrics (lower is better), on a fixed, seeded subset of the validation plan:
- `val_fd_morph_o`: Fréchet distance of all generated vs all validation targets, in the morphology space z-scored
  by the validation targets;
- `val_fd_morph_c`: the same per perturbation, averaged;
- `val_paired_rmse`: pixel RMSE against each control's true counterfactual (simulated screens only).
The selection metric is `val_fd_morph_o`, a distance between distributions, never the paired error: a pixel
error is smallest for the conditional mean, a blurred image, so it prefers undertrained models (the measurement is
in docs/reference-profiles.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from benchmark.errors import BenchmarkError
from benchmark.generation import translate
from benchmark.method import Method
from benchmark.metrics.distances import fid
from benchmark.metrics.evaluate import ReferenceScale, pixel_rmse
from benchmark.metrics.features import Morphology

CURVE_BATCH = 64  # requests generated at once


class ValidationMonitor:
    """Scores a model in training on at most `per_perturbation` validation targets of each training perturbation,
    generated from validation controls (seeded plan, seeded generation, torch's global RNG left as it was, so a run
    trains the same with and without its curve). Every process of a group computes the same scores."""

    def __init__(self, data, per_perturbation: int = 8, seed: int = 0) -> None:
        if per_perturbation < 2:
            raise BenchmarkError(f"curve: {per_perturbation} validation images per perturbation; expected at least 2")
        self.data, self.per_perturbation, self.seed = data, per_perturbation, seed
        self.plan = data.eval_plan(seed, split="val", per_perturbation=per_perturbation)
        if len(self.plan.requests) == 0:
            raise BenchmarkError(f"{data.source}: no validation images of a training perturbation for the curve")
        req, ref = self.plan.requests, self.plan.reference
        self.perts_gen, self.perts_real = req["CPD_NAME"].to_numpy(), ref["CPD_NAME"].to_numpy()
        self.morph = Morphology(data.task.channels)
        real = self.morph(data.images[ref["row"].to_numpy()], what="validation targets")
        self.scale = ReferenceScale(real)
        self.real = self.scale(real)
        truth = data.counterfactual(req["control_key"].tolist(), self.perts_gen.tolist())
        self.truth = None if truth is None else np.asarray(truth)
        self.metric = "val_fd_morph_o"

    @property
    def n(self) -> int:
        return len(self.plan.requests)

    @property
    def sample_keys(self) -> set[str]:
        """Every image the monitor reads: its targets and the controls it translates."""
        return set(self.plan.reference["SAMPLE_KEY"]) | set(self.plan.requests["control_key"])

    def describe(self) -> dict[str, Any]:
        return {"split": "val", "n": self.n, "per_perturbation": self.per_perturbation, "seed": self.seed,
                "perturbations": int(len(set(self.perts_gen))), "selection_metric": self.metric,
                "feature_space": "morphology", "extractor_sha256": self.morph.weights_sha256,
                "plan_sha256": self.plan.digest()}

    def __call__(self, method: Method) -> dict[str, float]:
        req = self.plan.requests
        with torch.random.fork_rng(devices=[]):
            images = np.concatenate([translate(method, self.data, req.iloc[s : s + CURVE_BATCH], self.seed, s)
                                     for s in range(0, len(req), CURVE_BATCH)])
        return self.score(images)

    def score(self, images: np.ndarray) -> dict[str, float]:
        """The curve's metrics of uint8 images (N, H, W, C) that answer the plan's requests, in their order."""
        gen = self.scale(self.morph(images, what="validation images"))
        per = [fid(gen[self.perts_gen == p], self.real[self.perts_real == p]) for p in sorted(set(self.perts_gen))
               if min((self.perts_gen == p).sum(), (self.perts_real == p).sum()) >= 2]
        out = {"val_fd_morph_o": fid(gen, self.real), "val_fd_morph_c": float(np.mean(per)) if per else float("nan")}
        if self.truth is not None:
            out["val_paired_rmse"] = float(pixel_rmse(images, self.truth).mean())
        return out
