"""Figures: one backend (Agg: no display, the same pixels everywhere) and one way to save them.

A PNG is written to a temporary file and renamed, so a killed report or run never leaves half a figure, and
without matplotlib's version in its metadata, so the bytes do not change with a patch release.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, imported when a figure is drawn (it costs a second to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int, tight: bool = True, bbox_inches: str | None = None) -> Path:
    """Lay out (`tight`), write `path` atomically and close the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches=bbox_inches, metadata={"Software": None})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        pyplot().close(fig)
    return path
