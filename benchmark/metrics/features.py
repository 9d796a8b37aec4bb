"""Feature spaces the distances are computed in.

- `inception`: torch-fidelity's `inception-v3-compat` 2048-d pool features, with
  weights from a local file whose sha256 is recorded.
- `morphology`: a deterministic, interpretable space with no learned weights
  (per-channel intensity and texture statistics, nucleus size/shape/count from a
  thresholded DNA channel, cell coverage). Low-dimensional, so per-perturbation
  FID/KID are sane at the small n of per-perturbation sets.

An extractor maps uint8 (N, H, W, C) crops to float64 (N, D) features. RGB
extractors go through a channel rule; the morphology space reads all channels.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from benchmark.errors import BenchmarkError


class Extractor(Protocol):
    name: str
    weights_sha256: str
    rgb: bool  # True: takes 3-channel views through a channel rule

    def __call__(self, images: np.ndarray) -> np.ndarray: ...


@dataclass
class ExtractorContext:
    """What a factory may need: where weights live, the task's channel names."""

    cache_dir: Path
    channels: tuple[str, ...]
    inception_weights: Path | None = None
    batch_size: int = 32


class FidelityExtractor:
    """Wraps any torch-fidelity FeatureExtractorBase (uint8 Bx3xHxW in)."""

    rgb = True

    def __init__(self, name: str, module: torch.nn.Module, feature: str, weights_sha256: str, batch_size: int = 32) -> None:
        self.name = name
        self.module = module.eval()
        self.feature = feature
        self.weights_sha256 = weights_sha256
        self.batch_size = batch_size
        self.index = list(module.features_list).index(feature)

    @torch.no_grad()
    def __call__(self, images: np.ndarray, what: str = "images") -> np.ndarray:
        out = []
        for i in tqdm(range(0, len(images), self.batch_size), desc=f"{self.name} features of {what}", unit="batch",
                      leave=False, disable=len(images) <= 4 * self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[i : i + self.batch_size])).permute(0, 3, 1, 2)
            x = x.contiguous(memory_format=torch.channels_last)
            feats = self.module(x)
            out.append(feats[self.index].double().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0))


def inception(ctx: ExtractorContext) -> FidelityExtractor:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from .inception_weights import resolve

    path, digest = resolve(ctx.inception_weights, ctx.cache_dir / "weights")
    module = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    module = module.to(memory_format=torch.channels_last)
    return FidelityExtractor("inception", module, "2048", digest, ctx.batch_size)


MORPHOLOGY_VERSION = "1"


def dna_channel(channels: tuple[str, ...]) -> int:
    """The index of the nuclear stain (DNA, Hoechst), by name; the first channel where none is named so."""
    named = [i for i, c in enumerate(channels) if any(k in c.lower() for k in ("dna", "hoechst", "nuc"))]
    return named[0] if named else 0


class Morphology:
    """Hand-defined cell-morphology features (scikit-image), identical on every machine."""

    rgb = False
    name = "morphology"

    def __init__(self, channels: tuple[str, ...]) -> None:
        self.channels = tuple(channels)
        self.dna = dna_channel(self.channels)
        self.feature_names = self._names()
        spec = f"morphology-v{MORPHOLOGY_VERSION}|zscore-by-reference|dna={self.dna}|" + ",".join(self.feature_names)
        self.weights_sha256 = hashlib.sha256(spec.encode()).hexdigest()

    def _names(self) -> list[str]:
        per = ["mean", "std", "q10", "q50", "q90", "grad", "fg_frac"]
        names = [f"{c}:{s}" for c in self.channels for s in per]
        names += ["nuc:count", "nuc:area", "nuc:eccentricity", "nuc:solidity", "nuc:intensity", "nuc:area_frac",
                  "cell:area_frac", "cell:area", "cell:eccentricity"]
        return names

    def _one(self, img: np.ndarray) -> np.ndarray:
        from scipy import ndimage
        from skimage.filters import sobel, threshold_otsu
        from skimage.measure import label, regionprops

        x = img.astype(np.float64) / 255.0
        h, w, c = x.shape
        feats = []
        for ch in range(c):
            v = x[..., ch]
            t = threshold_otsu(v) if v.max() > v.min() else v.max()
            q = np.quantile(v, [0.1, 0.5, 0.9])
            feats += [v.mean(), v.std(), *q, sobel(v).mean(), float((v > t).mean())]
        centre = (h // 2, w // 2)

        def central_object(mask: np.ndarray) -> tuple[int, float, float, float, float]:
            lab = label(mask)
            n = int(lab.max())
            if n == 0:
                return 0, 0.0, 0.0, 0.0, 0.0
            props = regionprops(lab)
            # the object under the centre, else the nearest one
            hit = lab[centre]
            if hit:
                p = props[hit - 1]
            else:
                p = min(props, key=lambda r: (r.centroid[0] - centre[0]) ** 2 + (r.centroid[1] - centre[1]) ** 2)
            return n, float(p.area) / (h * w), float(p.eccentricity), float(p.solidity), float(p.label)

        dna = ndimage.gaussian_filter(x[..., self.dna], 0.7)
        t = threshold_otsu(dna) if dna.max() > dna.min() else dna.max()
        nuc_mask = dna > t
        n, area, ecc, sol, lab_id = central_object(nuc_mask)
        nuc_int = float(x[..., self.dna][nuc_mask].mean()) if nuc_mask.any() else 0.0
        feats += [n, area, ecc, sol, nuc_int, float(nuc_mask.mean())]
        body = ndimage.gaussian_filter(x.sum(-1), 1.0)
        tb = threshold_otsu(body) if body.max() > body.min() else body.max()
        cell_mask = body > tb
        _, carea, cecc, _, _ = central_object(cell_mask)
        feats += [float(cell_mask.mean()), carea, cecc]
        return np.asarray(feats, dtype=np.float64)

    def __call__(self, images: np.ndarray, what: str = "images") -> np.ndarray:
        if images.shape[-1] != len(self.channels):
            raise BenchmarkError(f"morphology features: images have {images.shape[-1]} channels, task has {len(self.channels)}")
        rows = [self._one(im) for im in tqdm(images, desc=f"morphology features of {what}", unit="img", leave=False,
                                             disable=len(images) < 500)]
        return np.stack(rows) if rows else np.zeros((0, len(self.feature_names)))


def morphology(ctx: ExtractorContext) -> Morphology:
    return Morphology(ctx.channels)
