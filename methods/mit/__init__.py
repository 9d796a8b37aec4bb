"""MiT: flow matching from noise with a pixel-space diffusion transformer."""

from .method import MiT, MiTConfig

__all__ = ["MiT", "MiTConfig"]
