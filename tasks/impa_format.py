"""Reader for the on-disk layout IMPA published (and our simulated screen writes).

One `H x W x C` uint8 `.npy` per crop, named from its SAMPLE_KEY by a
per-dataset rule, plus a metadata CSV (read with `index_col=0`), as the official loader reads
them (theislab/IMPA 13eb82f, `IMPA/dataset/data_loader.py` and `data_utils.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from benchmark.errors import BenchmarkError, plain

SPLITS = ("train", "test", "val")
REQUIRED_COLUMNS = ("SAMPLE_KEY", "BATCH", "PLATE", "CPD_NAME", "ANNOT", "STATE", "SPLIT")


def bbbc021_path(key: str) -> str:
    """`Week1_22123_1_11_3.0` -> `Week1/22123/1_11_3.0.npy`."""
    parts = key.split("_")
    if len(parts) < 3:
        raise ValueError(f"expected WEEK_PLATE_TABLE_IMAGE_OBJECT, got {key!r}")
    return f"{parts[0]}/{parts[1]}/{'_'.join(parts[2:])}.npy"


def cpg0000_path(key: str) -> str:
    """`BR00116999_L03_6_93` -> `BR00116999/L03_6/L03_6_93.npy`."""
    parts = key.split("_")
    if len(parts) != 4:
        raise ValueError(f"expected PLATE_WELL_SITE_CELL, got {key!r}")
    return f"{parts[0]}/{parts[1]}_{parts[2]}/{parts[1]}_{parts[2]}_{parts[3]}.npy"


def rxrx1_path(key: str) -> str:
    """`U2OS-01_1_B02_s1_17` -> `01_1/B02/s1_17.npy` (cell-type prefix dropped)."""
    parts = key.split("_")
    if len(parts) != 5 or "-" not in parts[0]:
        raise ValueError(f"expected CELLTYPE-EXP_PLATE_WELL_SITE_CELL, got {key!r}")
    exp = parts[0].split("-", 1)[1]
    return f"{exp}_{parts[1]}/{parts[2]}/{parts[3]}_{parts[4]}.npy"


def normalise_state(values: pd.Series, source: str) -> pd.Series:
    """`STATE` is `control`/`trt` in IMPA's copy and 0/1 in CellFlux's: accept both."""
    mapping = {"control": "control", "ctrl": "control", "0": "control", "trt": "trt", "treated": "trt", "1": "trt"}
    as_text = values.astype(str).str.strip().str.lower().str.replace(r"\.0$", "", regex=True)
    out = as_text.map(mapping)
    if out.isna().any():
        bad = plain(values[out.isna()].iloc[0])
        raise BenchmarkError(f"{source}: column STATE has value {bad!r}; expected control/trt or 0/1")
    return out


def read_metadata(path: Path, required: Sequence[str] = REQUIRED_COLUMNS) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"{path}: metadata CSV not found")
    df = pd.read_csv(path, index_col=0, low_memory=False)
    df = df.loc[:, [c for c in df.columns if not str(c).startswith("Unnamed")]]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise BenchmarkError(f"{path}: missing column {missing[0]!r}; expected columns {', '.join(required)}")
    df = df.reset_index(drop=True)
    df["SAMPLE_KEY"] = df["SAMPLE_KEY"].astype(str)
    dup = df["SAMPLE_KEY"].duplicated()
    if dup.any():
        raise BenchmarkError(f"{path}: SAMPLE_KEY {df['SAMPLE_KEY'][dup].iloc[0]!r} appears twice")
    df["STATE"] = normalise_state(df["STATE"], str(path))
    for col in ("BATCH", "PLATE", "CPD_NAME", "ANNOT", "SPLIT"):
        if col in df.columns:
            df[col] = df[col].astype(str)
    # IMPA's data have train and test; "val" is a validation split written by the suite's own screen (elsewhere
    # one is carved from train when the task is loaded, see TaskData.carve_validation)
    bad_split = ~df["SPLIT"].isin(SPLITS)
    if bad_split.any():
        raise BenchmarkError(f"{path}: row {int(np.flatnonzero(bad_split)[0])} has SPLIT {df['SPLIT'][bad_split].iloc[0]!r}; "
                             f"expected {', '.join(SPLITS)}")
    return df


def check_crop_header(path: Path, shape: tuple[int, int, int]) -> None:
    """Check a crop from its `.npy` header and size alone: shape, dtype, and that no byte is missing.

    This is the first pass of `prepare`: it reads a few hundred bytes per crop, so a bad crop anywhere in a
    dataset is reported before anything is written.
    """
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            have_shape, _, dtype = read_header(f)
            offset = f.tell()
    except FileNotFoundError:
        raise BenchmarkError(f"{path}: crop file not found") from None
    except (ValueError, OSError, EOFError) as e:
        raise BenchmarkError(f"{path}: unreadable .npy ({e})") from None
    if have_shape != tuple(shape):
        raise BenchmarkError(f"{path}: crop has shape {have_shape}; expected {tuple(shape)} (H x W x C)")
    if dtype != np.uint8:
        raise BenchmarkError(f"{path}: crop has dtype {dtype}; expected uint8")
    size, want = Path(path).stat().st_size, offset + int(np.prod(shape))
    if size < want:
        raise BenchmarkError(f"{path}: truncated .npy: {size} bytes, its header promises {want}")


def load_crop(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """Load one crop, checking it is a finite `H x W x C` uint8 array."""
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise BenchmarkError(f"{path}: crop file not found") from None
    except (ValueError, OSError, EOFError) as e:
        raise BenchmarkError(f"{path}: unreadable .npy ({e})") from None
    if arr.shape != tuple(shape):
        raise BenchmarkError(f"{path}: crop has shape {arr.shape}; expected {tuple(shape)} (H x W x C)")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise BenchmarkError(f"{path}: crop contains NaN/inf; expected uint8 0-255")
        raise BenchmarkError(f"{path}: crop has dtype {arr.dtype}; expected uint8")
    return arr
