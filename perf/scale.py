"""Wall time and peak memory of `prepare` and of runs at the published datasets' sizes (a benchmark; prints figures).

    python perf/scale.py [--sizes 10000,100000,435000] [--layout bbbc021] [--work DIR] [--steps 100]
                         [--processes 2] [--keep]

For each size N it writes a dataset of N crops in IMPA's published layout (DMSO and 26 compounds on 10 plates
for bbbc021, 20% of each group in the test split; 5 channels and 120 compounds for cpg0000, JUMP's layout; pixels drawn from a few templates so that
writing hundreds of thousands of files takes minutes), then measures, each in a fresh process:

- `python -m benchmark prepare` (the checks and the packed store);
- `run --method identity --features morphology` (data, the identity floor, the whole evaluation);
- the same run with `--processes P` (P data-parallel processes; peak RSS per process);
- CellFlow's training loop alone (`fit` with the quick profile, `--steps` steps), which reads the training split.

Peak RSS counts the store's pages a process touched (shared, through the page cache, by every process that maps
the store); a size the disk cannot hold is skipped with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAYOUT_TASK = {"bbbc021": "bbbc021", "cpg0000": "jump"}
PLATES = 10
TEST_FRACTION = 0.2  # of every plate x perturbation group: BBBC021's test split is of this order


def measured(argv: list[str], env: dict | None = None) -> tuple[float, float, int]:
    """(seconds, peak RSS in GB of the largest process, exit code) of a command run in a fresh child: this
    script's children are measured one at a time, so RUSAGE_CHILDREN holds this command's processes only."""
    probe = ("import resource, subprocess, sys, time; t = time.time(); rc = subprocess.run(sys.argv[1:]).returncode; "
             "print('SCALE', time.time() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)")
    out = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, env=env)
    line = next(x for x in out.stdout.splitlines() if x.startswith("SCALE"))
    _, secs, kb, rc = line.split()
    if int(rc):
        sys.stderr.write(out.stderr[-3000:])
    return float(secs), int(kb) / 1e6, int(rc)


def bytes_needed(layout: str, n: int) -> int:
    from tasks.layouts import LAYOUTS

    lay = LAYOUTS.get(layout)
    crop = lay.image_size ** 2 * len(lay.channels) + 128  # one .npy file, then its copy in the store
    return 2 * n * crop


def write(layout: str, n: int, root: Path) -> float:
    from tasks.fixtures import write_fixture

    perts = [f"compound{i:03d}" for i in range(26 if layout == "bbbc021" else 120)]
    per_group = max(2, n // (PLATES * (len(perts) + 1)))
    t = time.time()
    write_fixture(root, layout, plates=PLATES, per_group=per_group, perturbations=perts, templates=16,
                  test_fraction=TEST_FRACTION)
    return time.time() - t


def train_only(task: str, data_dir: str, steps: int) -> None:
    """CellFlow's training loop on the task's training split (quick profile), nothing scored."""
    from benchmark.method import config_from_overrides
    from benchmark.registry import METHODS, TASKS

    data = TASKS.get(task).load(data_dir)
    cls = METHODS.get("cellflow")
    config = config_from_overrides(cls.Config, cls.profiles["quick"], [f"steps={steps}", "curve_points=0"])
    with tempfile.TemporaryDirectory() as work:
        cls(config).fit(data.train_data(), seed=0, workdir=Path(work))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="10000,100000,435000")
    p.add_argument("--layout", default="bbbc021", choices=sorted(LAYOUT_TASK))
    p.add_argument("--work", type=Path, default=None, help="where the datasets go (default: a temporary folder)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--keep", action="store_true", help="keep the datasets")
    p.add_argument("--train-only", nargs=3, metavar=("TASK", "DATA_DIR", "STEPS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.train_only:
        train_only(args.train_only[0], args.train_only[1], int(args.train_only[2]))
        return
    import platform

    import torch

    task = LAYOUT_TASK[args.layout]
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print(f"layout={args.layout} task={task} cpu={cpu} cores={os.cpu_count()} torch={torch.__version__} "
          f"threads={torch.get_num_threads()}")
    base = Path(args.work or tempfile.mkdtemp(prefix="scale-"))
    base.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    for n in [int(x) for x in args.sizes.split(",")]:
        here = base / f"n{n}"
        free = shutil.disk_usage(base).free
        if bytes_needed(args.layout, n) > 0.9 * free:
            print(f"N={n}: skipped: needs about {bytes_needed(args.layout, n) / 1e9:.1f} GB, {free / 1e9:.1f} GB free")
            continue
        shutil.rmtree(here, ignore_errors=True)
        t_write = write(args.layout, n, here / "src")
        data, runs = here / "data", here / "runs"
        row = {"N": n, "write_s": round(t_write, 1)}
        secs, rss, rc = measured([py, "-m", "benchmark", "prepare", task, "--source", str(here / "src"),
                                  "--data-dir", str(data)])
        row.update(prepare_s=round(secs, 1), prepare_rss_gb=round(rss, 2), prepare_rc=rc)
        store = sum(f.stat().st_size for f in (data / args.layout).rglob("*") if f.is_file())
        row["store_gb"] = round(store / 1e9, 2)
        shutil.rmtree(here / "src")  # the store is what runs read
        identity = [py, "-m", "benchmark", "run", "--method", "identity", "--task", task, "--features", "morphology",
                    "--data-dir", str(data), "--out", str(runs)]
        secs, rss, rc = measured(identity)
        row.update(identity_s=round(secs, 1), identity_rss_gb=round(rss, 2), identity_rc=rc)
        secs, rss, rc = measured([*identity, "--processes", str(args.processes)])
        row.update(**{f"identity_x{args.processes}_s": round(secs, 1),
                      f"identity_x{args.processes}_rss_gb_per_process": round(rss, 2),
                      f"identity_x{args.processes}_rc": rc})
        secs, rss, rc = measured([py, __file__, "--train-only", task, str(data), str(args.steps)])
        row.update(**{f"cellflow_{args.steps}_steps_s": round(secs, 1), "cellflow_rss_gb": round(rss, 2),
                      "cellflow_rc": rc})
        print(json.dumps(row), flush=True)
        if not args.keep:
            shutil.rmtree(here)


if __name__ == "__main__":
    main()
