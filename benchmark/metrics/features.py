"""Feature spaces the distances are computed in.

- `inception`: torch-fidelity's `inception-v3-compat` 2048-d pool features, with
  weights from a local file whose sha256 is recorded.
- `dinov2`: DINOv2 ViT-L/14's CLS token, as MiT evaluates (opt-in; weights from a local file).
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

from benchmark import io
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
    dinov2_weights: Path | None = None  # default: $BENCHMARK_DINOV2_WEIGHTS


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


DINOV2_WEIGHTS_ENV = "BENCHMARK_DINOV2_WEIGHTS"
DINOV2_FILE = ("dinov2_vitl14_pretrain.pth (facebookresearch/dinov2, "
               "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth)")
DINOV2_SIZE = 224  # MiT's evaluation resizes to 224 px (valence-labs/microscopy-flow-matching d6c5177, utils/evaluation.py:40-50)


def dinov2_weights(given: Path | None) -> Path:
    """The DINOv2 weights file: the one given, else $BENCHMARK_DINOV2_WEIGHTS; never downloaded."""
    import os

    path = given or os.environ.get(DINOV2_WEIGHTS_ENV)
    if not path or not Path(path).is_file():
        where = f" at {path}" if path else ""
        raise BenchmarkError(f"dinov2: no weights file{where}; download {DINOV2_FILE} and pass --dinov2-weights PATH "
                             f"or set {DINOV2_WEIGHTS_ENV} (nothing is downloaded here)")
    return Path(path)


def load_dinov2(path: Path) -> torch.nn.Module:
    """A DINOv2 ViT from its published state dict (facebookresearch/dinov2 b8931f7, `dinov2/hub/backbones.py:18-58`:
    LayerScale, no register tokens), as timm's VisionTransformer at 224 px. The architecture is read from the
    tensors (width, depth, patch, MLP ratio; 64 channels per head, as every DINOv2 size). The positions are resampled
    once to the 224 px grid exactly as the official model does per forward (`dinov2/models/vision_transformer.py:
    180-212`: bicubic, scale factor (grid + 0.1) / M, no antialiasing)."""
    from timm.models.vision_transformer import VisionTransformer
    from torch.nn import functional as F

    state = torch.load(path, map_location="cpu", weights_only=True)
    need = ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight", "blocks.0.ls1.gamma")
    if not isinstance(state, dict) or any(k not in state for k in need):
        raise BenchmarkError(f"{path}: not a DINOv2 ViT state dict (expected the facebookresearch/dinov2 layout: "
                             f"{', '.join(need)}, ...)")
    width, patch = state["cls_token"].shape[-1], state["patch_embed.proj.weight"].shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    ratio = state["blocks.0.mlp.fc1.weight"].shape[0] / width
    model = VisionTransformer(img_size=DINOV2_SIZE, patch_size=patch, embed_dim=width, depth=depth,
                              num_heads=width // 64, mlp_ratio=ratio, init_values=1.0, num_classes=0)
    grid, m = DINOV2_SIZE // patch, int(round((state["pos_embed"].shape[1] - 1) ** 0.5))
    pos = state["pos_embed"].float()
    cells = F.interpolate(pos[:, 1:].reshape(1, m, m, width).permute(0, 3, 1, 2), mode="bicubic", antialias=False,
                          scale_factor=((grid + 0.1) / m, (grid + 0.1) / m))
    state = {k: v for k, v in state.items() if k != "mask_token"}
    state["pos_embed"] = torch.cat([pos[:, :1], cells.permute(0, 2, 3, 1).reshape(1, grid * grid, width)], dim=1)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise BenchmarkError(f"{path}: not a DINOv2 ViT of the supported layout ({str(e).splitlines()[0]})") from None
    return model.eval()


class Dinov2:
    """DINOv2's CLS token after the final norm, as MiT evaluates: uint8 images resized to 224 px with torch-fidelity's
    TF1-style bilinear resize, ImageNet-normalised in [0, 255] (`utils/evaluation.py:40-50` there)."""

    name = "dinov2"
    rgb = True
    MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def __init__(self, module: torch.nn.Module, weights_sha256: str, batch_size: int = 32) -> None:
        self.module, self.weights_sha256, self.batch_size = module, weights_sha256, batch_size

    @torch.no_grad()
    def __call__(self, images: np.ndarray, what: str = "images") -> np.ndarray:
        from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
        from torchvision.transforms.functional import normalize

        out = []
        for i in tqdm(range(0, len(images), self.batch_size), desc=f"dinov2 features of {what}", unit="batch",
                      leave=False, disable=len(images) <= 4 * self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[i: i + self.batch_size])).permute(0, 3, 1, 2).float()
            x = interpolate_bilinear_2d_like_tensorflow1x(x, size=(DINOV2_SIZE, DINOV2_SIZE), align_corners=False)
            x = normalize(x, [255 * m for m in self.MEAN], [255 * s for s in self.STD])
            out.append(self.module.forward_features(x)[:, 0].double().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0))


def dinov2(ctx: ExtractorContext) -> Dinov2:
    path = dinov2_weights(ctx.dinov2_weights)
    return Dinov2(load_dinov2(path), io.sha256_file(path), ctx.batch_size)


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
