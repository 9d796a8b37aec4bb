"""IMPA: a style-transfer GAN from control to perturbed cells, conditioned on frozen perturbation embeddings."""

from .method import IMPA, IMPAConfig

__all__ = ["IMPA", "IMPAConfig"]
