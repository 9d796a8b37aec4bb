"""The packed store: every crop of a dataset in one memory-mapped array.

The published datasets are ~100k-400k small `.npy` files; opening one file per
crop makes training and evaluation wait on the filesystem. `pack()` validates a
source layout completely (metadata, embeddings, and every crop's `.npy` header
and size) before it writes anything, then copies all crops into `images.npy` (N, H, W, C)
uint8 next to `index.parquet` (the normalised metadata, one row per crop, with
each crop's file and sha256) and `embeddings.parquet`. Training and evaluation
then read one file through `np.load(mmap_mode="r")`.

Nothing partial is ever visible: the store is assembled in a hidden sibling
directory and renamed into place at the end; a stale half-built directory from
an interrupted run is removed when `pack()` starts again (it starts clean).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from benchmark import __version__, io
from benchmark.errors import BenchmarkError

from .embeddings import read_embedding_csv
from .impa_format import check_crop_header, load_crop, read_metadata
from .layouts import Layout

STORE_FILE = "store.json"
EVAL_FILE = "eval_perturbations.csv"
EVAL_SEED = 0


@dataclass
class Packed:
    images: np.ndarray  # memory-mapped (N, H, W, C) uint8
    obs: pd.DataFrame
    embeddings: pd.DataFrame
    eval_perturbations: list[str] | None
    info: dict


def is_packed(dest: Path) -> bool:
    return (Path(dest) / STORE_FILE).is_file()


def _first_existing(source: Path, candidates: tuple[str, ...], what: str) -> Path:
    for rel in candidates:
        if (source / rel).is_file():
            return source / rel
    raise BenchmarkError(f"{source}: no {what} found; expected {' or '.join(candidates)}")


def read_embeddings(paths: list[Path]) -> pd.DataFrame:
    """One table from one or more embedding CSVs; narrower tables are zero-padded to the widest."""
    tables = [read_embedding_csv(p) for p in paths]
    width = max(t.shape[1] for t in tables)
    padded = []
    for t in tables:
        values = np.zeros((len(t), width), dtype=np.float32)
        values[:, : t.shape[1]] = t.to_numpy(np.float32)
        padded.append(pd.DataFrame(values, index=t.index, columns=[str(i) for i in range(width)]))
    table = pd.concat(padded)
    if table.index.duplicated().any():
        raise BenchmarkError(f"{', '.join(map(str, paths))}: perturbation {table.index[table.index.duplicated()][0]!r} "
                             "has two embeddings")
    return table


def normalise(layout: Layout, meta: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The columns every task reads: CPD_NAME is the embedding key for treated rows, the control name otherwise."""
    obs = meta.copy()
    obs["NAME"] = obs["CPD_NAME"].astype(str)
    key = obs[layout.perturbation_key].astype(str)
    obs["CPD_NAME"] = np.where(obs["STATE"] == "control", layout.control, key)
    obs["BATCH"] = obs[layout.batch_column].astype(str)
    if "PLATE" not in obs.columns:
        obs["PLATE"] = obs["BATCH"]
    obs["PLATE"] = obs["PLATE"].astype(str)
    missing = (obs["STATE"] == "trt") & key.isin(["", "nan", "None"])
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise BenchmarkError(f"{path}: row {i} (SAMPLE_KEY {obs['SAMPLE_KEY'].iloc[i]!r}) has no {layout.perturbation_key}")
    return obs


def choose_eval_perturbations(obs: pd.DataFrame, n: int, seed: int = EVAL_SEED) -> list[str]:
    """A fixed, seeded sample of perturbations with test images (the RxRx1 / JUMP protocol)."""
    test = sorted(set(obs.loc[(obs["SPLIT"] == "test") & (obs["STATE"] == "trt"), "CPD_NAME"]))
    if len(test) <= n:
        return test
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(test, size=n, replace=False).tolist())


def read_eval_index(path: Path, known: set[str]) -> list[str]:
    """A user's list of perturbations to evaluate (e.g. CellFlux's index CSV)."""
    df = pd.read_csv(path)
    col = next((c for c in ("BROAD_SAMPLE", "CPD_NAME", "perturbation", "gene", "compound") if c in df.columns), None)
    if col is None:
        raise BenchmarkError(f"{path}: no perturbation column; expected one of BROAD_SAMPLE, CPD_NAME, perturbation")
    names = sorted(set(df[col].astype(str)))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BenchmarkError(f"{path}: perturbation {unknown[0]!r} (column {col}) has no test images in the dataset")
    return names


def pack(layout: Layout, source: Path, dest: Path, *, embeddings: Path | None = None,
         eval_index: Path | None = None, force: bool = False) -> Path:
    """Validate `source` (IMPA's layout for `layout`) and pack it into `dest`. Returns `dest`."""
    source, dest = Path(source), Path(dest)
    if is_packed(dest) and not force:
        return dest
    if not source.is_dir():
        raise BenchmarkError(f"{source}: source directory not found")
    meta_path = _first_existing(source, layout.metadata, "metadata CSV")
    meta = read_metadata(meta_path, layout.required)
    obs = normalise(layout, meta, meta_path)
    emb_paths = [embeddings] if embeddings else [source / p for p in layout.embeddings]
    table = read_embeddings(emb_paths)
    treated = obs["STATE"] == "trt"
    no_emb = treated & ~obs["CPD_NAME"].isin(table.index)
    if no_emb.any():
        i = int(np.flatnonzero(no_emb)[0])
        raise BenchmarkError(f"{meta_path}: row {i} (SAMPLE_KEY {obs['SAMPLE_KEY'].iloc[i]!r}): perturbation "
                             f"{obs['CPD_NAME'].iloc[i]!r} has no embedding in {', '.join(map(str, emb_paths))}")
    root = source / layout.images
    shape = (layout.image_size, layout.image_size, len(layout.channels))
    files = []
    for i, key in enumerate(tqdm(obs["SAMPLE_KEY"], desc=f"checking {layout.name} crops", unit="crop",
                                 disable=len(obs) < 2000)):
        try:
            rel = layout.key_rule(key)
        except ValueError as e:
            raise BenchmarkError(f"{meta_path}: row {i}: {e}") from None
        try:
            check_crop_header(root / rel, shape)
        except BenchmarkError as e:
            raise BenchmarkError(f"{e} (row {i}, SAMPLE_KEY {key!r}, of {meta_path})") from None
        files.append(rel)
    obs["FILE"] = files
    subset = None
    if eval_index is not None:
        subset = read_eval_index(eval_index, set(obs.loc[(obs["SPLIT"] == "test") & treated, "CPD_NAME"]))
    elif layout.eval_subset is not None:
        subset = choose_eval_perturbations(obs, layout.eval_subset)

    # everything is checked: only now is anything written
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(dest.parent / f".{dest.name}.lock"):  # jobs of a sweep may prepare the same data at once
        if is_packed(dest) and not force:
            return dest  # another process packed it while this one waited
        for stale in dest.parent.glob(f".{dest.name}.partial-*"):
            shutil.rmtree(stale)  # an interrupted earlier run (none can be live: we hold the lock): start clean
        _write_store(layout, source, dest, obs, table, files, root, meta_path, emb_paths, subset, eval_index, shape)
    return dest


@contextmanager
def _exclusive(lock: Path):
    """An exclusive lock on a file that is removed again when released.

    A process that waited on the file while its holder removed it holds a lock on an unlinked file, so
    after taking the lock it checks the file is still the one at `lock`, and tries again if not.
    """
    while True:
        f = open(lock, "a")
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            same = os.path.samestat(os.fstat(f.fileno()), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            break
        f.close()
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        f.close()


def _write_store(layout: Layout, source: Path, dest: Path, obs: pd.DataFrame, table: pd.DataFrame, files: list[str],
                 root: Path, meta_path: Path, emb_paths: list[Path], subset: list[str] | None,
                 eval_index: Path | None, shape: tuple[int, int, int]) -> None:
    tmp = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    tmp.mkdir()
    try:
        images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(len(obs), *shape))
        digests = []
        for i, rel in enumerate(tqdm(files, desc=f"packing {layout.name}", unit="crop", disable=len(files) < 2000)):
            try:  # checked already; loaded with the same checks in case a file changed since
                crop = load_crop(root / rel, shape)
            except BenchmarkError as e:
                raise BenchmarkError(f"{e} (row {i} of {meta_path})") from None
            images[i] = crop
            digests.append(hashlib.sha256(crop.tobytes()).hexdigest())
        images.flush()
        del images
        obs["SHA256"] = digests
        obs.to_parquet(tmp / "index.parquet", index=False)
        table.loc[sorted(set(table.index))].to_parquet(tmp / "embeddings.parquet")
        if subset is not None:
            io.write_csv(tmp / EVAL_FILE, pd.DataFrame({"CPD_NAME": subset}))
        info = {"layout": layout.name, "source": str(source.resolve()), "metadata": str(meta_path.relative_to(source)),
                "embeddings": [str(p) for p in emb_paths], "n_crops": len(obs), "shape": list(shape),
                "channels": list(layout.channels), "crops_sha256": io.sha256_bytes("\n".join(digests).encode()),
                "eval_perturbations": None if subset is None else {"n": len(subset), "seed": None if eval_index else EVAL_SEED,
                                                                    "from": str(eval_index) if eval_index else "seeded sample"},
                "code_version": __version__}
        io.write_json(tmp / STORE_FILE, info)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_packed(dest: Path) -> Packed:
    dest = Path(dest)
    info = json.loads((dest / STORE_FILE).read_text())
    images = np.load(dest / "images.npy", mmap_mode="r")
    if list(images.shape[1:]) != info["shape"] or len(images) != info["n_crops"]:
        raise BenchmarkError(f"{dest / 'images.npy'}: shape {images.shape} does not match {STORE_FILE} "
                             f"({info['n_crops']} x {info['shape']}); run prepare again")
    obs = pd.read_parquet(dest / "index.parquet")
    emb = pd.read_parquet(dest / "embeddings.parquet")
    emb.index = emb.index.astype(str)
    subset = pd.read_csv(dest / EVAL_FILE)["CPD_NAME"].astype(str).tolist() if (dest / EVAL_FILE).is_file() else None
    return Packed(images=images, obs=obs, embeddings=emb, eval_perturbations=subset, info=info)
