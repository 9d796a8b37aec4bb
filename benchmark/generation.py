"""Generation of a plan's images: one chunk of requests at a time, and all of them across a process group.

Used by the run (the test plan) and by the learning curves (a validation plan), so both translate alike.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from benchmark.errors import BenchmarkError
from benchmark.method import GenerateRequest, Method, to_tensor, to_uint8


def translate(method: Method, data, part: pd.DataFrame, seed: int, start: int) -> np.ndarray:
    """The images of the plan requests `part` (rows `start`...): uint8 (N, H, W, C). The chunk's seed depends on the
    run seed and its position only, so chunking does not change a chunk's draws elsewhere."""
    rows = part["control_row"].to_numpy()
    perts = part["CPD_NAME"].tolist()
    request = GenerateRequest(
        controls=to_tensor(data.images[rows]),
        control_keys=part["control_key"].tolist(),
        batches=part["BATCH"].tolist(),
        target_batches=part["target_batch"].tolist(),
        perturbations=perts,
        embeddings=torch.from_numpy(data.embed(perts)),
    )
    x = method.generate(request, seed=seed * 100_003 + start)
    if tuple(x.shape) != tuple(request.controls.shape):
        raise BenchmarkError(f"method {method.name} returned shape {tuple(x.shape)}, expected {tuple(request.controls.shape)}")
    return to_uint8(x)


def generate_all(method: Method, data, plan, seed: int, batch: int, to: Path | None = None) -> np.ndarray | None:
    """The plan's images, generated in chunks of `batch`. In a process group each process generates every
    world-th chunk; every chunk's seed depends on its position only, so the images do not depend on how many
    processes shared the work. With `to`, every process writes its chunks into that `.npy` file as they come (no
    process holds another's images, nor a plan of a large dataset whole) and the main one returns it memory-mapped;
    without, the main process gathers the chunks (the small validation plans of the learning curves). The helper
    processes of a group get None."""
    state = process_state()
    req = plan.requests
    starts = list(range(0, len(req), batch))
    if not starts:
        raise BenchmarkError("the evaluation plan has no requests")
    mine = starts[state.process_index:: state.num_processes]
    progress = dict(desc=f"generating ({method.name})", unit="batch", disable=not state.is_main_process)
    if to is not None:
        return _generate_to_file(method, data, req, seed, mine, batch, Path(to), state, progress)
    out = {start: translate(method, data, req.iloc[start : start + batch], seed, start)
           for start in tqdm(mine, **progress)}
    if state.num_processes > 1:
        from accelerate.utils import gather_object

        gathered = gather_object([out])
        if not state.is_main_process:
            return None
        out = {k: v for part in gathered for k, v in part.items()}
    if sorted(out) != starts or sum(len(v) for v in out.values()) != len(req):
        raise BenchmarkError(f"generation returned {sum(len(v) for v in out.values())} images in {len(out)} chunks; "
                             f"the plan has {len(req)} in {len(starts)}")
    return np.concatenate([out[k] for k in starts])


def _generate_to_file(method: Method, data, req: pd.DataFrame, seed: int, mine: list[int], batch: int, path: Path,
                      state, progress: dict) -> np.ndarray | None:
    """Each process writes its chunks at their rows of one file that the main process created (a process group
    shares the run folder: one machine, or the shared file system a run store needs across nodes); the main process
    renames it into place once all have written. `translate` checks each chunk's shape against its controls."""
    tmp = path.with_name(f".{path.name}.tmp")
    main = state.is_main_process
    try:
        if main:
            np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(req), *data.images.shape[1:]))
        state.wait_for_everyone()
        out = np.load(tmp, mmap_mode="r+")
        for start in tqdm(mine, **progress):
            out[start : start + batch] = translate(method, data, req.iloc[start : start + batch], seed, start)
        out.flush()
        del out
        state.wait_for_everyone()
        if main:
            tmp.replace(path)
    finally:
        if main:
            tmp.unlink(missing_ok=True)
    return np.load(path, mmap_mode="r") if main else None


def process_state():
    """accelerate's process state: one process, or the group that torchrun, `accelerate launch` or a SLURM job
    (submitit) set up from the environment."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())  # without a GPU, a group of CPU processes (gloo)


