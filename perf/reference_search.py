"""The small search behind the `reference` profiles, on the validation split only.

Each candidate (a `--set` on top of a method's `reference` profile) is trained at a fraction of the profile's steps
(default 0.3) and scored by the learning-curve monitor on the validation plan; no test image is read (the
script never builds the test plan). Prints one row per candidate and writes them as CSV.

    OMP_NUM_THREADS=1 python perf/reference_search.py --methods cellflow,impa,phendiff --out results/reference/search.csv

Run two of these side by side (one method set each) on a 2-core machine, as the reference runs are.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from benchmark import io
from benchmark.validation import ValidationMonitor
from benchmark.registry import TASKS
from benchmark.runner import CURVE_PER_PERTURBATION, resolve_method

CANDIDATES = {
    "cellflow": (["lr=1e-3"], ["lr=2e-3"]),
    "impa": (["lr=1e-4"], ["lr=3e-4"], ["lr=1e-3"], ["lr=2e-3"], ["lr=4e-3"]),
    "phendiff": (["lr=1e-4"], ["lr=5e-4"], ["lr=1e-3"]),
    "mit": (["lr=1e-4"], ["lr=3e-4"], ["lr=1e-3"], ["lr=2e-3"], ["lr=4e-3"], ["lr=8e-3"], ["lr=1.6e-2"]),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(CANDIDATES))
    ap.add_argument("--task", default="synthetic")
    ap.add_argument("--fraction", type=float, default=0.3, help="of the reference profile's steps")
    ap.add_argument("--only", default=None, help="run only the candidate spelled so (e.g. 'lr=1e-3')")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", type=Path, default=Path("data"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/reference-search"))
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    task = TASKS.get(args.task)
    data = task.load(args.data_dir)
    monitor = ValidationMonitor(data, CURVE_PER_PERTURBATION, seed=task.val_seed)
    rows = []
    for name in args.methods.split(","):
        for sets in CANDIDATES[name]:
            if args.only is not None and " ".join(sets) != args.only:
                continue
            cls, base = resolve_method(name, "reference", [])
            steps = max(1, int(base.steps * args.fraction))
            cls, config = resolve_method(name, "reference", [*sets, f"steps={steps}", "select=last"])
            workdir = args.work / f"{name}-{'-'.join(sets)}-{time.time():.0f}"
            t = time.time()
            fit = cls(config).fit(data.train_data(), seed=args.seed, workdir=workdir, monitor=monitor)
            last = fit["curve"][-1]
            best = min(fit["curve"], key=lambda r: r[monitor.metric])
            rows.append({"method": name, "candidate": " ".join(sets), "steps": steps, "fraction": args.fraction,
                         "seed": args.seed, "selection_metric": monitor.metric, "final": last[monitor.metric],
                         "best": best[monitor.metric], "best_step": best["step"],
                         "final_fd_morph_o": last["val_fd_morph_o"], "final_fd_morph_c": last["val_fd_morph_c"],
                         "train_s": fit["train_s"], "wall_s": round(time.time() - t, 1),
                         "n_val": monitor.n, "threads": torch.get_num_threads()})
            print(rows[-1], flush=True)
    io.write_csv(args.out, pd.DataFrame(rows))


if __name__ == "__main__":
    main()
