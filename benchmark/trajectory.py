"""Trajectory strips: the states a flow passes through.

Forward: test controls integrated towards a perturbation, one column per frame time. Reverse: real treated test
cells integrated back towards the control state. Each strip is a labelled PNG (method, task, perturbation,
direction, the t of each column, which stain is which colour) and its pixels as `.npy`. A run of a method whose
capabilities include trajectories draws them into its own folder (`trajectories/`), so the report only collects
files; `python -m benchmark trajectory RUN_DIR` draws more from a stored run's model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmark import io
from benchmark.errors import BenchmarkError
from benchmark.display import display, display_key
from benchmark.method import to_tensor, to_uint8
from benchmark.plotting import pyplot, save_figure
from benchmark.registry import METHODS, TASKS
from benchmark.store import MODEL, read_manifest


def strip(states: dict[float, torch.Tensor]) -> np.ndarray:
    """Rows = cells, columns = frames (in the order given): the figure's pixels, exactly."""
    cols = [display(to_uint8(states[t])) for t in states]
    return np.concatenate([np.concatenate(list(c), axis=0) for c in cols], axis=1)


def strip_figure(states: dict[float, torch.Tensor], title: str, key: str, path: Path) -> Path:
    """Rows = cells, columns = frames (in the order given), each column titled with its t; written atomically."""
    plt = pyplot()

    times = list(states)
    n = len(states[times[0]])
    fig, axes = plt.subplots(n, len(times), figsize=(1.1 * len(times), 1.1 * n + 0.7), squeeze=False)
    for j, t in enumerate(times):
        tiles = display(to_uint8(states[t]))
        for i in range(n):
            ax = axes[i, j]
            ax.imshow(tiles[i], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"t = {t:.2f}", fontsize=7)
            if j == 0:
                ax.set_ylabel(f"cell {i + 1}", fontsize=7)
    fig.suptitle(f"{title}\n{key}", fontsize=7)
    return save_figure(fig, path, dpi=100)


DEFAULT_FRAMES = (0.0, 0.25, 0.5, 0.75, 1.0)


def from_stored_run(run_dir: Path, perturbation: str, frames: tuple[float, ...], n: int, data_dir: Path,
                    out: Path, seed: int = 0) -> list[Path]:
    """Strips drawn by the model a run stored (its config from the manifest)."""
    manifest = read_manifest(run_dir)
    cls = METHODS.get(manifest.method)
    if not cls.capabilities.trajectories:
        raise BenchmarkError(f"method {cls.name} has no trajectories (only flow methods such as cellflow do)")
    read_manifest(run_dir, need_model=True)
    method = cls.from_dir(Path(run_dir) / MODEL)  # the saved folder holds its config
    data = TASKS.get(manifest.task_name).load(data_dir)
    label = f"{manifest.method} on {data.task.name} (seed {manifest.seed})"
    return draw(method, data, perturbation, frames, n, out, seed, manifest.run_id, label)


def draw(method, data, perturbation: str, frames: tuple[float, ...], n: int, out: Path, seed: int, run_id: str,
         label: str) -> list[Path]:
    """Forward and reverse strips of `n` seeded test cells for one perturbation, with a record of the choice."""
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
    written = []
    what = {"forward": f"forward: test controls -> {perturbation}",
            "reverse": f"reverse: real {perturbation} cells -> control"}
    for kind, states in (("forward", fwd), ("reverse", rev)):
        if kind == "reverse":
            states = {t: states[t] for t in sorted(states, reverse=True)}
        path = Path(out) / f"{run_id}-{perturbation.replace('/', '_')}-{kind}.png"
        title = f"{label}, {what[kind]}"
        written.append(strip_figure(states, title, display_key(data.task.channels), path))
        io.write_npy(path.with_suffix(".npy"), strip(states))  # the frames as pixels, for analysis
        written.append(path.with_suffix(".npy"))
    record = Path(out) / f"{run_id}-{perturbation.replace('/', '_')}.json"
    written.append(record)
    io.write_json(record,
                  {"run_id": run_id, "perturbation": perturbation, "frames": list(frames), "seed": seed,
                   "control_keys": data.obs["SAMPLE_KEY"].iloc[ctrl].tolist(),
                   "treated_keys": data.obs["SAMPLE_KEY"].iloc[trt].tolist(),
                   "solver": getattr(method.config, "solver", None), "nfe": getattr(method.config, "nfe", None)})
    return written
