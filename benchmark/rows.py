"""Rows of a memory-mapped image store, read when asked for and never copied whole.

A split of a published dataset is most of the store (BBBC021: 2.7 GB, JUMP: about 20 GB); a fancy-index copy of it
per process is what made a run's memory grow with the dataset. `RowView` keeps the store's array and the row
index, and gathers only the rows a batch or a chunk asks for, in ascending order on disk. Processes that map the
same store share its pages through the page cache.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class RowView:
    """Read-only view `array[rows]` of an (N, ...) array that indexes like the copy it replaces: `view[i]`,
    `view[index_array]`, `view[a:b]`, `view[mask]`, `len(view)`, `.shape`, `.dtype`. `np.asarray(view)` still
    gathers every row: the explicit way to ask for a copy."""

    def __init__(self, array: np.ndarray | "RowView", rows: Any) -> None:
        if isinstance(array, RowView):  # a view of a view reads the store directly
            rows, array = array.rows[np.asarray(rows)], array.array
        self.array = array
        self.rows = np.asarray(rows, dtype=np.int64).reshape(-1)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.array.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    @property
    def ndim(self) -> int:
        return self.array.ndim

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: Any) -> np.ndarray:
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        if hasattr(first, "numpy"):  # a torch index tensor
            first = first.numpy()
        if isinstance(first, (int, np.integer)):
            return np.asarray(self.array[int(self.rows[first])])[rest]
        picked = self.rows[first]
        return gather(self.array, picked)[(slice(None), *rest)]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = gather(self.array, self.rows)
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"RowView({len(self.rows)} of {len(self.array)} rows, shape {self.shape}, {self.dtype})"


def gather(array: np.ndarray, rows: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """`array[rows]` as a new array, read in ascending row order (sequential on disk for a memory map) a chunk at a
    time, so that the pages of one chunk are what the read touches beyond the result."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows), *array.shape[1:]), dtype=array.dtype)
    order = np.argsort(rows, kind="stable")
    for start in range(0, len(rows), chunk):
        part = order[start:start + chunk]
        out[part] = array[rows[part]]
    return out
