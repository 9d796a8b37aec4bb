"""Trajectory strips from a stored run: the states a flow passes through.

Forward: test controls integrated towards a perturbation, one column per frame
time. Reverse: real treated test cells integrated back towards the control
state. The model comes from the run's `model/` directory and the config from
its manifest, so a strip is reproducible from the store alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmark import io
from benchmark.errors import BenchmarkError
from benchmark.method import to_tensor, to_uint8
from benchmark.registry import METHODS, TASKS
from benchmark.runner import stored_run


def display(images: np.ndarray) -> np.ndarray:
    """(N, H, W, C) uint8 -> RGB: 3 channels as stored, 1-2 as grey, more than 3 as the first three."""
    if images.shape[-1] >= 3:
        return images[..., :3]
    return np.repeat(images[..., :1], 3, axis=-1)


def strip(states: dict[float, torch.Tensor]) -> np.ndarray:
    """Rows = cells, columns = frames (in time order for forward, as given for reverse)."""
    cols = [display(to_uint8(states[t])) for t in states]
    return np.concatenate([np.concatenate(list(c), axis=0) for c in cols], axis=1)


def trajectories(run_dir: Path, perturbation: str, frames: tuple[float, ...], n: int, data_dir: Path,
                 out: Path, seed: int = 0) -> list[Path]:
    manifest = stored_run(run_dir, need_model=False)
    cls = METHODS.get(manifest["method"])
    if not callable(getattr(cls, "trajectory", None)):
        raise BenchmarkError(f"method {cls.name} has no trajectories (only flow methods such as cellflow do)")
    stored_run(run_dir)
    method = cls(cls.Config(**manifest["config"]))
    method.load(Path(run_dir) / "model")
    data = TASKS.get(manifest["task"]["name"]).load(data_dir)
    if perturbation not in data.eval_perturbations():
        raise BenchmarkError(f"perturbation {perturbation!r} is not evaluated in task {data.task.name}; "
                             f"expected one of {', '.join(data.eval_perturbations())}")
    rng = np.random.default_rng(seed)
    ctrl = rng.choice(data.rows("test", "control"), size=n, replace=False)
    trt_pool = data.rows("test", "trt", [perturbation])
    trt = rng.choice(trt_pool, size=min(n, len(trt_pool)), replace=False)
    emb = torch.from_numpy(data.embed([perturbation] * n))
    fwd = method.trajectory(to_tensor(data.images[ctrl]), emb, frames)
    rev = method.trajectory(to_tensor(data.images[trt]), emb[: len(trt)], frames, reverse=True)
    from PIL import Image

    written = []
    for kind, states in (("forward", fwd), ("reverse", rev)):
        if kind == "reverse":
            states = {t: states[t] for t in sorted(states, reverse=True)}
        path = Path(out) / f"{manifest['run_id']}-{perturbation.replace('/', '_')}-{kind}.png"
        tmp = path.with_suffix(".tmp.png")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(strip(states)).save(tmp)
        tmp.replace(path)
        written.append(path)
    io.write_json(Path(out) / f"{manifest['run_id']}-{perturbation.replace('/', '_')}.json",
                  {"run_id": manifest["run_id"], "perturbation": perturbation, "frames": list(frames), "seed": seed,
                   "control_keys": data.obs["SAMPLE_KEY"].iloc[ctrl].tolist(),
                   "treated_keys": data.obs["SAMPLE_KEY"].iloc[trt].tolist(),
                   "solver": getattr(method.config, "solver", None), "nfe": getattr(method.config, "nfe", None)})
    return written
