"""Training rate of each method's `reference` profile on this machine, and the steps a budget buys.

The `reference` profiles fix a step count per method so that every method gets the same minutes of training on the
machine they were sized on (docs/reference-profiles.md); on another machine this prints what the same budget buys
there. Trains `--steps` steps of each (no curve), on the simulated screen, with the threads it is given.

    OMP_NUM_THREADS=1 python perf/reference_budget.py --minutes 10
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from benchmark.registry import TASKS
from benchmark.runner import resolve_method


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="cellflow,impa,phendiff,mit")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--steps", type=int, default=40, help="steps timed per method")
    ap.add_argument("--data-dir", type=Path, default=Path("data"))
    args = ap.parse_args()
    data = TASKS.get("synthetic").load(args.data_dir)
    print(f"torch threads: {torch.get_num_threads()}; budget {args.minutes} min")
    for name in args.methods.split(","):
        cls, config = resolve_method(name, "reference", [f"steps={args.steps}", "curve_points=0", "select=last"])
        with tempfile.TemporaryDirectory() as work:
            fit = cls(config).fit(data.train_data(), seed=0, workdir=Path(work))
        rate = fit["train_images_per_s"]
        _, ref = resolve_method(name, "reference", [])
        buys = int(rate * args.minutes * 60 / ref.batch_size)
        print(f"{name:9s} {rate:7.1f} img/s  batch {ref.batch_size:3d}  {args.minutes:g} min = {buys} steps "
              f"(profile: {ref.steps})", flush=True)


if __name__ == "__main__":
    main()
