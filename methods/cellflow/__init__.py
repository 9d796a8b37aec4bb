"""CellFlow: flow matching from control to perturbed cell images (path, solver, model kept apart)."""

from .method import CellFlow, CellFlowConfig

__all__ = ["CellFlow", "CellFlowConfig"]
