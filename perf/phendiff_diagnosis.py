"""Why PhenDiff's validation distance rises during its reference runs: each part of the translation scored apart, on
the validation split only (issue 36; the findings are in docs/phendiff-diagnosis.md).

Reads the work directory of a `reference` run (its `checkpoint.pt` holds the last step's weights and those of the
best validation point) and, for each of the two, scores on the learning curve's validation plan:

- `translate`: translation (EMA weights, DDIM inversion and regeneration) at the run's steps each way and at each
  `--ddim-steps` (published: 100 + 100);
- `raw`: the same with the trained weights instead of their EMA, at the profile's steps;
- `sample`: regeneration from fresh Gaussian noise under the target condition, no inversion (does the model make
  cells of the right kind, whatever the control?), at each step count;
- `reconstruct`: inversion and regeneration both under the control's condition, pixel RMSE to the control (the
  inversion's own error; 0 for exact numerics), at each step count;
- `loss_val`, `loss_train`: the v-prediction loss of the EMA weights on the validation targets and on as many treated
  training images of the same perturbations, at the same seeded noise and timesteps (over-fitting shows as a gap).

    OMP_NUM_THREADS=1 python perf/phendiff_diagnosis.py --workdir W --data-dir D --out phendiff-diagnosis.csv

The runs are resolved from the `reference` profile and `--set`: runs of the 20 + 20 step profile (before 6ab6422)
need `--set inversion_steps=20 --set generation_steps=20`.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from benchmark import io
from benchmark.method import as_float, to_tensor, to_uint8
from benchmark.metrics.evaluate import pixel_rmse
from benchmark.registry import TASKS
from benchmark.runner import CURVE_PER_PERTURBATION, resolve_method
from benchmark.validation import ValidationMonitor
from methods.phendiff.model import CONTROL, PERTURBATION
from methods.training import TrainingSet

LOSS_REPEATS = 4  # noise draws per image for the losses


def denoising_loss(method, images: np.ndarray, emb: torch.Tensor, seed: int) -> float:
    """Mean v-prediction MSE of the weights translation uses, over LOSS_REPEATS seeded draws of noise and timestep."""
    net, g = method._net(), torch.Generator().manual_seed(seed)
    x0 = method._resized(as_float(torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)))
    kind = torch.full((len(x0),), PERTURBATION)
    losses = []
    with torch.no_grad():
        for _ in range(LOSS_REPEATS):
            xt, t, emb_, kind_, target = method.loss_inputs(x0, emb, kind, g)
            losses.append(F.mse_loss(net(xt, t, emb_, kind_), target).item())
    return float(np.mean(losses))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, required=True, help="a PhenDiff reference run's work directory")
    ap.add_argument("--task", default="synthetic")
    ap.add_argument("--data-dir", type=Path, default=Path("data"))
    ap.add_argument("--set", action="append", default=[], help="overrides the run was trained with")
    ap.add_argument("--ddim-steps", default="100", help="comma-separated step counts besides the profile's")
    ap.add_argument("--only", default=None, help="comma-separated parts to score (default: all)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    task = TASKS.get(args.task)
    data = task.load(args.data_dir)
    monitor = ValidationMonitor(data, CURVE_PER_PERTURBATION, seed=task.val_seed)
    cls, config = resolve_method("phendiff", "reference", args.set)
    state = torch.load(args.workdir / "checkpoint.pt", map_location="cpu", weights_only=True)
    weights = {f"step {state['step']} (last)": {k: state[k] for k in ("model", "ema")}}
    best = state["extra"].get("best")
    if best is not None:
        weights[f"step {best['step']} (best)"] = best["state"]
    train_data = data.train_data()
    train = TrainingSet(train_data)
    req, ref = monitor.plan.requests, monitor.plan.reference
    controls = to_tensor(data.images[req["control_row"].to_numpy()])
    emb_req = torch.from_numpy(data.embed(req["CPD_NAME"].tolist()))
    # as many treated training images as validation targets, of the same perturbations, seeded
    rng = np.random.default_rng(0)
    train_obs = train_data.obs
    train_rows = np.concatenate([rng.choice(np.flatnonzero(train_obs["CPD_NAME"].to_numpy() == p), n, replace=False)
                                 for p, n in ref["CPD_NAME"].value_counts().sort_index().items()])
    parts = set(args.only.split(",")) if args.only else None

    def wanted(part: str) -> bool:
        return parts is None or part in parts

    n, step_counts = len(req), dict.fromkeys([config.inversion_steps, *(int(k) for k in args.ddim_steps.split(","))])
    rows = []
    for label, weights_state in weights.items():
        method = cls(config)
        method.build(train.shape)
        for k, part in method.modules().items():
            part.load_state_dict(weights_state[k])

        for steps in step_counts:
            variants = [("translate", {}), ("raw", {"use_ema": False})] if steps == config.inversion_steps \
                else [("translate", {})]
            for part, changes in variants:
                if wanted(part):
                    method.config = dataclasses.replace(config, inversion_steps=steps, generation_steps=steps,
                                                        **changes)
                    rows.append({"weights": label, "part": part, "ddim_steps": steps, **monitor(method)})
                    print(rows[-1], flush=True)
            method.config = config
            if wanted("sample"):
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(monitor.seed)
                    latent = torch.randn(controls.shape)
                images = to_uint8(method.regenerate(latent, emb_req, torch.full((n,), PERTURBATION), steps))
                rows.append({"weights": label, "part": "sample", "ddim_steps": steps, **monitor.score(images)})
                print(rows[-1], flush=True)
            if wanted("reconstruct"):
                kind = torch.full((n,), CONTROL)
                back = to_uint8(method.regenerate(method.invert(controls, emb_req, kind, steps), emb_req, kind, steps))
                rmse = pixel_rmse(back, data.images[req["control_row"].to_numpy()]).mean()
                rows.append({"weights": label, "part": "reconstruct", "ddim_steps": steps,
                             "reconstruct_rmse": float(rmse)})
                print(rows[-1], flush=True)
        if wanted("loss"):
            emb_ref = torch.from_numpy(data.embed(ref["CPD_NAME"].tolist()))
            emb_train = torch.from_numpy(data.embed(train_obs["CPD_NAME"].to_numpy()[train_rows].tolist()))
            rows.append({"weights": label, "part": "loss", "ddim_steps": None,
                         "loss_val": denoising_loss(method, data.images[ref["row"].to_numpy()], emb_ref, 0),
                         "loss_train": denoising_loss(method, train_data.images[train_rows], emb_train, 0)})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    table.insert(0, "workdir", str(args.workdir))
    io.write_csv(args.out, table)


if __name__ == "__main__":
    main()
