"""Feature space `cellprofiler`: CellProfiler's measurements of each crop, through cp-measure (no learned weights).

Each crop gets two objects: the nucleus (the DNA channel smoothed and Otsu-thresholded; the component under the
crop's centre, else the largest) and the cell (the other stains summed, smoothed and thresholded; the component
that holds the nucleus, else the nucleus itself). cp-measure then measures, per channel and object, intensity,
size and shape, Haralick texture and granularity, and the Pearson correlation of every pair of channels: a
profile of the same family as JUMP's CellProfiler features.

NaN policy: a crop without a nucleus (blank, or no DNA stain above background) gets NaN for every feature, and a
measurement that is undefined on an object (e.g. texture of a one-pixel object) is NaN; `evaluate` z-scores by the
reference set ignoring NaN and sets NaN to 0 (the reference mean), and records how many crops carried a NaN.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from importlib.metadata import version

import numpy as np
from tqdm.auto import tqdm

from .features import dna_channel

SEGMENTATION = {"nucleus_smoothing_px": 0.7, "cell_smoothing_px": 1.0, "threshold": "otsu"}
CHUNK = 64  # crops per cp-measure call


class CellProfiler:
    rgb = False
    name = "cellprofiler"

    def __init__(self, channels: tuple[str, ...]) -> None:
        from cp_measure.featurizer import make_featurizer_config

        self.channels = tuple(channels)
        self.dna = dna_channel(self.channels)
        self.config = make_featurizer_config(
            list(self.channels), objects=["nucleus", "cell"], intensity=True, sizeshape=True, texture=True,
            granularity=True, correlation_pearson=True, zernike=False, radial_zernikes=False,
            radial_distribution=False, feret=False, correlation_costes=False, correlation_rwc=False,
            correlation_manders_fold=False)
        spec = json.dumps({"cp_measure": version("cp-measure"), "config": self.config, "segmentation": SEGMENTATION,
                           "dna": self.dna}, sort_keys=True, default=str)
        self.weights_sha256 = hashlib.sha256(spec.encode()).hexdigest()
        self._names: list[str] | None = None

    @property
    def feature_names(self) -> list[str]:
        """The measurements' names, `object:feature`; known without data by measuring a probe crop (a disc)."""
        if self._names is None:
            yy, xx = np.mgrid[:32, :32]
            probe = np.where(((yy - 16) ** 2 + (xx - 16) ** 2 <= 64)[..., None], 200, 10).astype(np.uint8)
            self._chunk(np.repeat(probe, len(self.channels), axis=-1)[None])
        return self._names

    def masks(self, crop: np.ndarray) -> np.ndarray:
        """(2, H, W) integer labels: nucleus, cell (0 where absent)."""
        from scipy import ndimage
        from skimage.filters import threshold_otsu
        from skimage.measure import label

        h, w, c = crop.shape

        def central(region: np.ndarray, inside: np.ndarray | None = None) -> np.ndarray:
            lab = label(region)
            if lab.max() == 0:
                return np.zeros((h, w), np.int32)
            if inside is not None and inside.any():  # the component that holds most of `inside`
                pick = np.bincount(lab[inside], minlength=lab.max() + 1)[1:].argmax() + 1
            else:
                pick = lab[h // 2, w // 2] or np.bincount(lab.ravel())[1:].argmax() + 1
            return (lab == pick).astype(np.int32)

        dna = ndimage.gaussian_filter(crop[..., self.dna], SEGMENTATION["nucleus_smoothing_px"])
        nucleus = central(dna > threshold_otsu(dna)) if dna.max() > dna.min() else np.zeros((h, w), np.int32)
        others = [i for i in range(c) if i != self.dna] or [self.dna]
        body = ndimage.gaussian_filter(crop[..., others].sum(-1), SEGMENTATION["cell_smoothing_px"])
        cell = central(body > threshold_otsu(body), nucleus > 0) if body.max() > body.min() else nucleus.copy()
        cell = np.maximum(cell, nucleus)  # the cell contains its nucleus
        return np.stack([nucleus, cell])

    def _chunk(self, crops: np.ndarray) -> np.ndarray:
        from cp_measure.featurizer import featurize

        x = crops.astype(np.float32) / 255.0
        masks = np.stack([self.masks(c) for c in x])
        keep = masks[:, 0].reshape(len(x), -1).any(1)  # crops with a nucleus
        out = np.full((len(x), len(self._names or [])), np.nan)
        if keep.any():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # cp-measure warns on every undefined measurement
                data, cols, rows = featurize(x[keep].transpose(0, 3, 1, 2), masks[keep], self.config,
                                             image_ids=list(np.flatnonzero(keep)))
            names = [f"{obj}:{col}" for obj in ("nucleus", "cell") for col in cols]
            if self._names is None:
                self._names = names
                out = np.full((len(x), len(names)), np.nan)
            by = {(int(i), obj): r for r, (i, obj, _) in enumerate(rows)}
            for i in np.flatnonzero(keep):
                parts = [data[by[(int(i), obj)]] if (int(i), obj) in by else np.full(len(cols), np.nan)
                         for obj in ("nucleus", "cell")]
                out[i] = np.concatenate(parts)
        return out

    def __call__(self, images: np.ndarray, what: str = "images") -> np.ndarray:
        chunks = [self._chunk(images[i: i + CHUNK]) for i in tqdm(
            range(0, len(images), CHUNK), desc=f"cellprofiler features of {what}", unit="chunk", leave=False,
            disable=len(images) <= CHUNK)]
        width = len(self.feature_names)
        # a chunk measured before the feature names were known (all blank) is NaN of the final width
        return np.concatenate([c if c.shape[1] == width else np.full((len(c), width), np.nan) for c in chunks]) \
            if chunks else np.zeros((0, width))


def cellprofiler(ctx) -> CellProfiler:
    return CellProfiler(ctx.channels)
