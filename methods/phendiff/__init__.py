"""PhenDiff: conditional DDIM on diffusers; translation by inversion under the control and regeneration."""

from .method import PhenDiff, PhenDiffConfig

__all__ = ["PhenDiff", "PhenDiffConfig"]
