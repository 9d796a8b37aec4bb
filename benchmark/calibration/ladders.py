"""The ladders: generators of known order of quality, built from a simulated screen's true counterfactuals with no
training. Rung 0 of every ladder is the counterfactuals themselves; quality falls with the rung."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from scipy import ndimage


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


def rung_table(ladder: Ladder, inputs: LadderInputs) -> pd.DataFrame:
    """Each rung's parameter value and ground-truth paired error."""
    return pd.DataFrame([{"ladder": ladder.name, "rung": k, "value": v,
                          "paired_error": paired_error(ladder.build(inputs, v), inputs.truth)}
                         for k, v in enumerate(ladder.values)])
