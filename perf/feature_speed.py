"""Crops per second of each feature space on a task's images, on this machine.

    python perf/feature_speed.py [--task synthetic] [--n 256] [--spaces morphology,cellprofiler,inception]

The first call of each space is excluded (weights loading, numba compilation); the rate is over `--n` crops.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="synthetic")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--spaces", default="morphology,cellprofiler,inception")
    p.add_argument("--data-dir", default=os.environ.get("BENCHMARK_DATA", "data"))
    args = p.parse_args()

    from benchmark.metrics.features import ExtractorContext
    from benchmark.registry import CHANNEL_RULES, FEATURES, TASKS

    data = TASKS.get(args.task).load(Path(args.data_dir))
    images = data.images[: args.n]
    ctx = ExtractorContext(cache_dir=Path(args.data_dir) / ".cache", channels=data.task.channels)
    print(f"{args.task}: {len(images)} crops of {images.shape[1:]}; {torch.get_num_threads()} threads; "
          f"{os.cpu_count()} cores")
    for name in args.spaces.split(","):
        ext = FEATURES.get(name)(ctx)
        views = CHANNEL_RULES.get(data.task.channel_rule).views(images) if ext.rgb else [("all", images)]
        ext(views[0][1][:8])  # warm-up
        t = time.time()
        feats = [ext(v) for _, v in views]
        dt = time.time() - t
        print(f"  {name:13s} {len(images) / dt:8.1f} crops/s  ({sum(f.shape[1] for f in feats)} features)")


if __name__ == "__main__":
    main()
