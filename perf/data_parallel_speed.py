"""Training images/s of a method for 1 and N data-parallel processes on this machine (scaling efficiency).

    python perf/data_parallel_speed.py [--method cellflow] [--processes 1,2] [--steps 40] [--task synthetic]

Each count is one `torchrun` group fitting the method's default profile for `--steps` steps with the same effective
batch; the rate is the one the run records (images of the effective batch per second, after the first step).
On CPU each process gets `cores / processes` threads, so 2 processes on 2 cores compare like with like.
With GPUs, pass `--device cuda` and `--set mixed_precision=bf16` (or fp16) to measure those.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path


def worker(args: argparse.Namespace) -> None:
    import torch

    from benchmark.method import config_from_overrides
    from benchmark.registry import METHODS, TASKS

    cls = METHODS.get(args.method)
    config = config_from_overrides(cls.Config, cls.profiles[cls.default_profile],
                                   [f"steps={args.steps}", f"device={args.device}", "checkpoint_every=1000000",
                                    *args.set])
    torch.manual_seed(0)
    method = cls(config)
    with tempfile.TemporaryDirectory() as work:
        summary = method.fit(TASKS.get(args.task).load(Path(args.data_dir)).train_data(), seed=0, workdir=Path(work))
    if method.rank == 0:
        print("RESULT " + json.dumps({k: summary[k] for k in ("processes", "batch", "train_images_per_s", "device")}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--method", default="cellflow")
    p.add_argument("--task", default="synthetic")
    p.add_argument("--processes", default="1,2")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=os.environ.get("BENCHMARK_DATA", "data"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    cores = os.cpu_count() or 1
    rows = []
    for n in (int(x) for x in args.processes.split(",")):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port", str(port),
               __file__, "--worker", *sys.argv[1:]]
        env = dict(os.environ, OMP_NUM_THREADS=str(max(1, cores // n)),
                   PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{n} process(es) failed:\n{out.stderr[-2000:]}")
        rows.append(json.loads(line[len("RESULT "):]))
    base = rows[0]["train_images_per_s"]
    print(f"{args.method} on {args.task}, {args.steps} steps, {cores} cores, effective batch "
          f"{rows[0]['batch']['effective']}")
    for r in rows:
        n, rate = r["processes"], r["train_images_per_s"]
        speedup = rate / base
        print(f"  {n} process(es) x {r['batch']['per_device']} images, {r['device']}: {rate:.1f} images/s, "
              f"speed-up {speedup:.2f} (efficiency {speedup * rows[0]['processes'] / n:.0%})")


if __name__ == "__main__":
    main()
