"""The door for models trained elsewhere: `plan` exports what to generate, `score` reads the images back.

A plan folder holds only the generation side of a task's evaluation plan (the requests, their control images,
the perturbation embeddings) and the plan's digest, never a reference image or key: the outside code cannot fit
to the cells it will be scored against. Images come back as an array or a folder of files named by request
index, in the forms CellFlux's and MorphoDiff's sampling scripts write; they are checked completely before
anything is scored or recorded.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark import io
from benchmark.errors import BenchmarkError

EXTERNAL = "external"  # the method name of runs scored from images; their row label is the name they were given
REQUESTS, CONTROLS, EMBEDDINGS, PLAN, README = "requests.csv", "controls.npy", "embeddings.csv", "plan.json", "README.md"
REQUEST_COLUMNS = ("index", "control_key", "perturbation", "batch", "target_batch")
SPLITS = ("test", "val")
PIXELS = ("uint8 in [0, 255], one (H, W, C) array per request with the channels in the order of `channels`; the "
          "suite's own methods see x / 127.5 - 1 in [-1, 1]")
IMAGE_SUFFIXES = (".png", ".tif", ".tiff")


def eval_plan(data, split: str):
    """The plan a split is scored on: the test plan of every run, or the whole validation split (the split outside
    code may select checkpoints and settings on, as the suite's own methods do)."""
    if split not in SPLITS:
        raise BenchmarkError(f"--split {split!r}: expected one of {', '.join(SPLITS)}")
    if split == "test":
        return data.eval_plan()
    return data.eval_plan(seed=data.task.val_seed, split="val")


def plan_record(task, split: str, plan) -> dict[str, Any]:
    """What `plan.json` says, and what `score` checks images against."""
    return {"task": task.name, "task_version": task.version, "split": split, "plan_sha256": plan.digest(),
            "seed": plan.seed, "n": len(plan.requests), "image_size": task.image_size,
            "channels": list(task.channels), "pixels": PIXELS}


def requests_table(plan) -> pd.DataFrame:
    r = plan.requests
    return pd.DataFrame({"index": np.arange(len(r)), "control_key": r["control_key"].to_numpy(),
                         "perturbation": r["CPD_NAME"].to_numpy(), "batch": r["BATCH"].to_numpy(),
                         "target_batch": r["target_batch"].to_numpy()})


def write_plan(data, split: str, out: Path) -> dict[str, Any]:
    """Write a plan folder; `plan.json`, written last, marks it complete. Only a folder that is empty or holds an
    earlier plan is written into."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / PLAN).is_file())):
        raise BenchmarkError(f"{out}: exists and is not a plan folder; expected a new or empty folder, or an "
                             f"earlier plan (with {PLAN})")
    task = data.task
    plan = eval_plan(data, split)
    record = plan_record(task, split, plan)
    (out / PLAN).unlink(missing_ok=True)  # the folder is incomplete until the new plan.json is in
    io.write_csv(out / REQUESTS, requests_table(plan))
    write_rows(out / CONTROLS, data.images, plan.requests["control_row"].to_numpy())
    perts = sorted(set(data.obs["CPD_NAME"]) - {task.control})  # held-out ones too: zero-shot needs them
    emb = pd.DataFrame(data.embed(perts), index=pd.Index(perts, name="perturbation"),
                       columns=data.embeddings.columns)
    io.write_csv(out / EMBEDDINGS, emb, index=True)
    io.write_text(out / README, readme(record))
    io.write_json(out / PLAN, record)
    return record


def write_rows(path: Path, images: np.ndarray, rows: np.ndarray, chunk: int = 1024) -> None:
    """`images[rows]` as a .npy file, written in chunks into a temporary file that is renamed into place: the
    array is never whole in memory, and no half-written file is left."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(rows), *images.shape[1:]))
        for start in range(0, len(rows), chunk):
            out[start:start + chunk] = images[rows[start:start + chunk]]
        out.flush()
        del out
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def readme(record: dict[str, Any]) -> str:
    h = w = record["image_size"]
    c = len(record["channels"])
    return f"""# Evaluation plan: {record['task']} (v{record['task_version']}), {record['split']} split

Generate one image per row of `{REQUESTS}`, in its order: translate the control image `{CONTROLS}[index]`
(cell `control_key`, from batch `batch`) to perturbation `perturbation` as it would look in batch
`target_batch`. The perturbations' embeddings are in `{EMBEDDINGS}` (a method that reads no control image may
ignore `{CONTROLS}`).

Write back {record['n']} images of {h} x {w} pixels, {c} channels in this order: {', '.join(record['channels'])};
uint8 in [0, 255], as `{CONTROLS}` holds them. Either one `.npy` array of shape ({record['n']}, {h}, {w}, {c}), or
a folder of PNG or TIFF files named by `index` (`000123.png` or `123.png`). Leave `{PLAN}` beside the array or in
the folder (or pass `--plan`), then:

    python -m benchmark score --task {record['task']} --images IMAGES --name YOUR_MODEL --seed S \\
        --describe "what made these images"
    python -m benchmark report

Plan digest: {record['plan_sha256']}
"""


# --- reading images back -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Images:
    """Images read back from outside code, with what identifies them."""

    array: np.ndarray  # (N, H, W, C) uint8
    sha256: str  # of the file, or of the folder's files (name and bytes, in index order)
    form: str  # npy, npz or a folder of png/tiff files
    plan_file: Path | None  # the plan.json checked against the task's plan, if one was found


def _index_of(path: Path) -> int | None:
    m = re.fullmatch(r"0*(\d+)", path.stem)
    return int(m.group(1)) if m else None


def _read_file(path: Path) -> np.ndarray:
    """One image file as (H, W, C), in the dtype it was written."""
    if path.suffix.lower() == ".png":
        from PIL import Image

        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                return np.asarray(im).astype(np.uint16)[..., None]
            if im.mode == "P":
                raise BenchmarkError(f"{path}: a palette PNG; expected grey, RGB or multi-channel pixels")
            arr = np.asarray(im)
    else:
        import tifffile

        arr = tifffile.imread(path)
    return arr[..., None] if arr.ndim == 2 else arr


def _channels_last(arr: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """A TIFF written channels-first (C, H, W), as a CHW tensor saves, turned channels-last."""
    h, w, c = shape
    if arr.ndim == 3 and arr.shape == (c, h, w) and arr.shape != (h, w, c):
        return np.moveaxis(arr, 0, -1)
    return arr


def _check_dtype(arr: np.ndarray, where: str) -> None:
    if arr.dtype == np.uint8:
        return
    if arr.dtype in (np.uint16, np.int32, np.int64) or arr.dtype.itemsize == 2:
        raise BenchmarkError(f"{where}: {arr.dtype} pixels (16-bit or wider); the tasks' crops are 8-bit, so the "
                             "suite scores uint8 images only: rescale to uint8 with your own rule and say which in "
                             "--describe")
    raise BenchmarkError(f"{where}: {arr.dtype} pixels; expected uint8 in [0, 255]")


def _check_shape(arr: np.ndarray, n: int, shape: tuple[int, int, int], where: str) -> None:
    h, w, c = shape
    if arr.ndim != 4:
        raise BenchmarkError(f"{where}: an array of shape {arr.shape}; expected (N, H, W, C) = ({n}, {h}, {w}, {c})")
    if len(arr) != n:
        raise BenchmarkError(f"{where}: {len(arr)} images; the plan has {n} requests")
    if arr.shape[1:3] != (h, w):
        raise BenchmarkError(f"{where}: images of {arr.shape[1]} x {arr.shape[2]} pixels; the task's are {h} x {w}")
    if arr.shape[3] != c:
        raise BenchmarkError(f"{where}: {arr.shape[3]} channels (shape {arr.shape}); the task has {c}, channels last")


def read_array(path: Path, n: int, shape: tuple[int, int, int]) -> tuple[np.ndarray, str]:
    if path.suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as e:
            raise BenchmarkError(f"{path}: not a plain .npy array ({e})") from None
        form = "npy"
    else:
        try:
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                key = "images" if "images" in keys else keys[0] if len(keys) == 1 else None
                if key is None:
                    raise BenchmarkError(f"{path}: arrays {keys}; expected one array, or one named 'images'")
                arr = z[key]
        except (ValueError, OSError) as e:
            raise BenchmarkError(f"{path}: not a readable .npz archive ({e})") from None
        form = f"npz ({key})"
    _check_dtype(arr, str(path))
    _check_shape(arr, n, shape, str(path))
    return np.array(arr), form


def read_folder(path: Path, n: int, shape: tuple[int, int, int]) -> tuple[np.ndarray, str, list[Path]]:
    files = [p for p in sorted(path.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise BenchmarkError(f"{path}: no PNG or TIFF files; expected one per request, named by its index "
                             f"(000123.png or 123.png)")
    by_index: dict[int, Path] = {}
    for f in files:
        i = _index_of(f)
        if i is None:
            raise BenchmarkError(f"{f}: the name is not a request index; expected e.g. 000123.png or 123.png")
        if i in by_index:
            raise BenchmarkError(f"{f}: request {i} also has {by_index[i].name}; expected one file per request")
        by_index[i] = f
    extra = sorted(set(by_index) - set(range(n)))
    if extra:
        raise BenchmarkError(f"{by_index[extra[0]]}: index {extra[0]} is not a request (the plan has indices 0 to "
                             f"{n - 1}); {len(extra)} extra file(s)")
    missing = sorted(set(range(n)) - set(by_index))
    if missing:
        raise BenchmarkError(f"{path}: no image for request {missing[0]} ({len(missing)} of {n} missing)")
    ordered = [by_index[i] for i in range(n)]
    out = np.empty((n, *shape), dtype=np.uint8)
    for i, f in enumerate(ordered):
        arr = _channels_last(_read_file(f), shape)
        _check_dtype(arr, str(f))
        if arr.shape[:2] != shape[:2]:
            raise BenchmarkError(f"{f}: {arr.shape[0]} x {arr.shape[1]} pixels; the task's images are "
                                 f"{shape[0]} x {shape[1]}")
        if arr.ndim != 3 or arr.shape[2] != shape[2]:
            raise BenchmarkError(f"{f}: {arr.shape[2] if arr.ndim == 3 else '?'} channels; the task has {shape[2]}"
                                 " (a grey, RGB or multi-channel file, channels last)")
        out[i] = arr
    kinds = sorted({f.suffix.lower().lstrip(".").replace("tiff", "tif") for f in ordered})
    return out, f"folder of {'/'.join(kinds)} files", ordered


def folder_sha256(files: list[Path]) -> str:
    """One digest of a folder of images: each file's name and bytes, in request order."""
    import hashlib

    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + io.sha256_file(f).encode() + b"\n")
    return h.hexdigest()


def read_images(path: Path, n: int, shape: tuple[int, int, int]) -> Images:
    """The images at `path`, checked against the plan's count and the task's shape; nothing else is touched."""
    path = Path(path)
    if path.is_dir():
        array, form, files = read_folder(path, n, shape)
        return Images(array, folder_sha256(files), form, None)
    if not path.is_file():
        raise BenchmarkError(f"{path}: not found; expected an .npy or .npz array or a folder of PNG/TIFF images")
    if path.suffix not in (".npy", ".npz"):
        raise BenchmarkError(f"{path}: a {path.suffix or 'suffix-less'} file; expected .npy, .npz or a folder of "
                             "PNG/TIFF images")
    array, form = read_array(path, n, shape)
    return Images(array, io.sha256_file(path), form, None)


def find_plan_file(images: Path, given: Path | None) -> Path | None:
    """`--plan`, else a plan.json in the image folder or beside the image file."""
    if given is not None:
        if not Path(given).is_file():
            raise BenchmarkError(f"{given}: plan file not found")
        return Path(given)
    images = Path(images)
    here = images / PLAN if images.is_dir() else images.parent / PLAN
    return here if here.is_file() else None


def check_plan_file(path: Path, want: dict[str, Any]) -> None:
    """The plan the images were made for must be the one they are scored on: same task, version, split, digest."""
    try:
        have = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise BenchmarkError(f"{path}: not a readable plan.json ({e})") from None
    if not isinstance(have, dict):
        raise BenchmarkError(f"{path}: expected a JSON object written by `plan`")
    for key in ("task", "task_version", "split", "plan_sha256"):
        if have.get(key) != want[key]:
            raise BenchmarkError(f"{path}: {key} is {have.get(key)!r}, but task {want['task']}'s {want['split']} "
                                 f"plan has {want[key]!r}; these images answer another plan (run `plan` again)")


def check_name(name: str, method_names: list[str]) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}", name or ""):
        raise BenchmarkError(f"--name {name!r}: expected 1-64 letters, digits, '.', '_', '+' or '-', starting with "
                             "a letter or digit")
    if name in method_names or name == EXTERNAL:
        raise BenchmarkError(f"--name {name!r} is a registered method; images scored from outside need a name of "
                             "their own")
