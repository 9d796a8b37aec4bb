"""How images are shown in figures: which stains become which colour, and a caption that says so."""

from __future__ import annotations

import numpy as np


def display(images: np.ndarray) -> np.ndarray:
    """(N, H, W, C) uint8 -> RGB: 3 channels as stored, 1-2 as grey, more than 3 as the first three."""
    if images.shape[-1] >= 3:
        return images[..., :3]
    return np.repeat(images[..., :1], 3, axis=-1)


def display_key(channels: tuple[str, ...]) -> str:
    """Which stain `display` shows in which colour, for a figure's caption."""
    if len(channels) >= 3:
        key = f"R = {channels[0]}, G = {channels[1]}, B = {channels[2]}"
        return key + (f" ({', '.join(channels[3:])} not shown)" if len(channels) > 3 else "")
    return f"grey = {channels[0]}" + (f" ({', '.join(channels[1:])} not shown)" if len(channels) > 1 else "")
