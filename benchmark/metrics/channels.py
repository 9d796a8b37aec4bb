"""Channel rules: how a C-channel crop becomes the 3-channel input of an RGB extractor.

The rule is recorded with every number. `each` scores every channel on its own
(grey replicated to RGB) and the metric is averaged over channels, so no stain
is ignored; the published JUMP evaluation kept channels 0-2 only (`first3`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from benchmark.errors import BenchmarkError


def _rgb(x: np.ndarray) -> list[tuple[str, np.ndarray]]:
    if x.shape[-1] != 3:
        raise BenchmarkError(f"channel rule 'rgb' needs 3 channels, images have {x.shape[-1]}; use 'each', 'first3' or 'rgbmix'")
    return [("rgb", x)]


def _first3(x: np.ndarray) -> list[tuple[str, np.ndarray]]:
    if x.shape[-1] < 3:
        raise BenchmarkError(f"channel rule 'first3' needs >= 3 channels, images have {x.shape[-1]}")
    return [("first3", x[..., :3])]


def _each(x: np.ndarray) -> list[tuple[str, np.ndarray]]:
    return [(f"ch{c}", np.repeat(x[..., c : c + 1], 3, axis=-1)) for c in range(x.shape[-1])]


# CellFlux's RxRx1 colour table (training/data_utils.py convert_6ch_to_3ch): stains 1-3 to B, G, R at weight 1,
# stains 4-6 to cyan, magenta, yellow at 0.5 per colour. It is applied to images in [-1, 1] and clamped there; every
# colour's weights sum to 2, so for u in [0, 1] the displayed colour is clamp(W^T u - 0.5, 0, 1).
_MIX6 = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]], dtype=np.float32)


def rxrx1_rgb(u: np.ndarray) -> np.ndarray:
    """(..., 6) stains in [0, 1] -> (..., 3) RGB in [0, 1], as CellFlux scores RxRx1."""
    return np.clip(u.astype(np.float32) @ _MIX6 - 0.5, 0.0, 1.0)


def _rgbmix(x: np.ndarray) -> list[tuple[str, np.ndarray]]:
    if x.shape[-1] != 6:
        raise BenchmarkError(f"channel rule 'rgbmix' is defined for 6 channels, images have {x.shape[-1]}")
    # the same map in grey levels, in float64 so that the half levels it produces round the same way everywhere
    mixed = np.clip(x.astype(np.float64) @ _MIX6.astype(np.float64) - 127.5, 0, 255)
    return [("rgbmix", mixed.round().astype(np.uint8))]


@dataclass(frozen=True)
class ChannelRule:
    name: str
    doc: str
    views: Callable[[np.ndarray], list[tuple[str, np.ndarray]]]


BUILTIN_RULES = (  # registered in benchmark.registry.CHANNEL_RULES
    ChannelRule("rgb", "3 channels used as R, G, B in stored order", _rgb),
    ChannelRule("first3", "channels 0-2 as R, G, B; further stains ignored (the published JUMP rule)", _first3),
    ChannelRule("each", "every channel scored alone as grey RGB; metric averaged over channels", _each),
    ChannelRule("rgbmix", "6 channels mixed to RGB as CellFlux scores RxRx1: clamp(W^T u - 0.5, 0, 1)", _rgbmix),
)
