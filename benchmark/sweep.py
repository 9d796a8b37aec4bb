"""Sweeps: the benchmark grid as one plan, launched through submitit (SLURM, local or in-process).

A plan is pure data: one `JobSpec` per method x task x seed x variant, with the
resources the method declares (overridable per method). Each spec has a hash of
what determines its result; a job whose result is already in the run store for
that hash, the same code version and the same data is skipped (`--rerun`
submits it anyway), so re-running a sweep resumes it, a finished sweep submits
nothing, and a sweep after a fix runs again. Jobs are submitit `Checkpointable`s: on timeout or preemption
submitit requeues them and the method's fit resumes from its checkpoint in the
job's work directory. A job that fails writes a failure row (error and log
path) and never stops the others. Runs land in the run store exactly as a
`run` does (one directory per run, atomic); only `report` aggregates.

Layout of `sweeps/<name>/`: `plan.json` (the specs), `jobs/<hash>.json` (one
state file per job, written atomically by the launcher and the job),
`work/<hash>/` (training checkpoints), `logs/<job id>/` (submitit's files).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark import io
from benchmark.errors import BenchmarkError
from benchmark.registry import DEFAULT_FEATURES, METHODS, TASKS
from benchmark.store import RunStore

LAUNCHERS = ("slurm", "local", "debug")
# gpus: per node; tasks: processes per node, one process group across nodes (default: one per GPU, else 1);
# cpus: per task
RESOURCE_KEYS = ("partition", "gpus", "cpus", "mem_gb", "time_min", "nodes", "tasks")


@dataclass(frozen=True)
class JobSpec:
    method: str
    task: str
    seed: int
    profile: str | None = None  # None = the method's default; ablations are profiles
    overrides: tuple[str, ...] = ()
    features: tuple[str, ...] = DEFAULT_FEATURES
    resources: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def key(self) -> dict[str, Any]:
        """What determines the result (resources do not)."""
        return {"method": self.method, "task": self.task, "seed": self.seed, "profile": self.profile,
                "overrides": list(self.overrides), "features": list(self.features)}

    @property
    def spec_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.key(), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def variant(self) -> str:
        return self.profile or "default"

    def to_json(self) -> dict[str, Any]:
        return {**self.key(), "resources": self.resources, "spec_hash": self.spec_hash}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "JobSpec":
        return cls(method=d["method"], task=d["task"], seed=int(d["seed"]), profile=d["profile"],
                   overrides=tuple(d["overrides"]), features=tuple(d["features"]), resources=dict(d["resources"]))


def _per_method(items: list[str], what: str, commas: bool = False) -> dict[str, list[tuple[str, str]]]:
    """`method.key=value` strings -> {method: [(key, value)]}; with `commas`, `method.a=1,b=2` sets both."""
    out: dict[str, list[tuple[str, str]]] = {}
    for item in items:
        method = None
        for part in item.split(",") if commas else [item]:
            head, sep, value = part.partition("=")
            first, dot, key = head.partition(".")
            if dot:
                method = first
            elif method is not None:  # `b=2` after `method.a=1`
                key = first
            if not sep or method is None or not key:
                raise BenchmarkError(f"{what} {item!r}: expected METHOD.KEY=VALUE")
            out.setdefault(method, []).append((key, value))
    return out


def plan(methods: list[str], tasks: list[str], seeds: list[int], *, ablations: bool = False,
         sets: list[str] = (), resources: list[str] = (), features: tuple[str, ...] = DEFAULT_FEATURES,
         ) -> list[JobSpec]:
    """One spec per method x task x seed x variant; options and resources checked now, not in the jobs."""
    from benchmark.runner import resolve_method

    for t in tasks:
        TASKS.get(t)
    set_by = _per_method(list(sets), "--set")
    res_by = _per_method(list(resources), "--resources", commas=True)
    for m in {**set_by, **res_by}:
        if m not in methods:
            raise BenchmarkError(f"option for method {m!r}, which is not in --methods ({', '.join(methods)})")
    specs = []
    for m in methods:
        cls = METHODS.get(m)
        overrides = tuple(f"{k}={v}" for k, v in set_by.get(m, []))
        res = dict(cls.resources)
        for k, v in res_by.get(m, []):
            if k not in RESOURCE_KEYS:
                raise BenchmarkError(f"--resources {m}.{k}: unknown; expected one of {', '.join(RESOURCE_KEYS)}")
            res[k] = v if k == "partition" else int(v)
        for profile in [None, *(cls.ablations if ablations else ())]:
            resolve_method(m, profile, list(overrides))  # a bad option fails here, before anything is submitted
            for t in tasks:
                for s in seeds:
                    specs.append(JobSpec(m, t, s, profile, overrides, tuple(features), res))
    return specs


def plan_table(specs: list[JobSpec]) -> pd.DataFrame:
    return pd.DataFrame([{"method": s.method, "task": s.task, "seed": s.seed, "variant": s.variant,
                          "overrides": " ".join(s.overrides), **{k: s.resources.get(k, "") for k in RESOURCE_KEYS},
                          "spec_hash": s.spec_hash} for s in specs])


def sweep_name(specs: list[JobSpec]) -> str:
    return hashlib.sha256("\n".join(sorted(s.spec_hash for s in specs)).encode()).hexdigest()[:10]


def finished_runs(runs: Path, code: str, split_hashes: dict[str, str]) -> dict[str, Path]:
    """spec hash -> run directory, for every run in the store that a sweep launched and whose result would be the
    same today: the same code version (commit and uncommitted changes) and the same data (the task's split hash,
    which hashes every crop). The feature spaces' weights are a function of these: a sweep takes no weights file."""
    out = {}
    for path, manifest in RunStore(runs).manifests():
        sweep = manifest.sweep or {}
        if (sweep.get("spec_hash") and manifest.code_version == code
                and manifest.split_hash == split_hashes.get(manifest.task_name)):
            out[sweep["spec_hash"]] = path
    return out


def split_hashes(tasks: set[str], data_dir: Path) -> dict[str, str]:
    """Each task's split hash on the data as they are now (loading, or simulating, them once); a task whose data
    cannot be loaded has none, so its jobs are submitted and fail there with the reason."""
    out = {}
    for name in sorted(tasks):
        task = TASKS.get(name)
        try:
            data = task.load(data_dir)
        except BenchmarkError:
            continue
        out[name] = data.write_split_manifest(Path(data_dir) / "splits" / f"{name}-v{task.version}.csv")
    return out


def _write_state(sweep_dir: Path, spec_hash: str, **fields: Any) -> None:
    path = Path(sweep_dir) / "jobs" / f"{spec_hash}.json"
    state = json.loads(path.read_text()) if path.is_file() else {}
    state.update(fields)
    io.write_json(path, state)


class SweepJob:
    """One spec, run in a submitit job; checkpointable so a timeout or preemption requeues it."""

    def __init__(self, spec: JobSpec, sweep_dir: Path, runs: Path, data_dir: Path, sweep: str) -> None:
        self.spec, self.sweep_dir, self.runs, self.data_dir, self.sweep = spec, Path(sweep_dir), Path(runs), Path(data_dir), sweep

    def _log(self) -> str | None:
        try:
            import submitit

            return str(submitit.JobEnvironment().paths.stderr)
        except Exception:  # the in-process debug launcher has no job environment
            return None

    @staticmethod
    def _join_process_group() -> bool:
        """In a job of several tasks, give this task the environment of one rank of a process group (as torchrun
        would), from submitit's job environment; returns whether this is rank 0, the one that records."""
        try:
            import submitit

            env = submitit.JobEnvironment()
        except Exception:  # the in-process debug launcher has no job environment
            return True
        if env.num_tasks > 1:
            os.environ.update(RANK=str(env.global_rank), WORLD_SIZE=str(env.num_tasks),
                              LOCAL_RANK=str(env.local_rank), LOCAL_WORLD_SIZE=str(env.num_tasks // env.num_nodes),
                              MASTER_ADDR=env.hostnames[0],
                              MASTER_PORT=str(20000 + int("".join(c for c in env.job_id if c.isdigit()) or 0) % 20000))
        return env.global_rank == 0

    def __call__(self) -> str:
        from benchmark.runner import run

        s = self.spec
        if not self._join_process_group():  # a helper rank: trains and generates its share, records nothing
            run(self._config())
            return ""
        _write_state(self.sweep_dir, s.spec_hash, status="running", log=self._log())
        try:
            path = run(self._config())
        except Exception as e:
            _write_state(self.sweep_dir, s.spec_hash, status="failed", error=f"{type(e).__name__}: {e}",
                         traceback=traceback.format_exc(), log=self._log())
            raise
        _write_state(self.sweep_dir, s.spec_hash, status="done", run_dir=str(path))
        return str(path)

    def _config(self):
        from benchmark.runner import RunConfig

        s = self.spec
        return RunConfig(method=s.method, task=s.task, seed=s.seed, out=self.runs, data_dir=self.data_dir,
                         profile=s.profile, overrides=list(s.overrides), features=s.features,
                         workdir=self.sweep_dir / "work" / s.spec_hash,
                         sweep={"name": self.sweep, "spec_hash": s.spec_hash})

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Called by submitit on timeout/preemption: resubmit the same job; fit resumes from work/<hash>."""
        import submitit

        _write_state(self.sweep_dir, self.spec.spec_hash, status="requeued")
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def max_array_size(default: int = 1001) -> int:
    """The cluster's MaxArraySize (arrays longer than this are split)."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return default
    for line in out.splitlines():
        if line.strip().startswith("MaxArraySize"):
            return int(line.split("=")[1])
    return default


def _executor(launcher: str, folder: Path, res: dict[str, Any], max_parallel: int, timeout_min: float | None,
              signal_delay_s: int | None):
    import submitit

    logs = folder / "logs" / "%j"
    timeout = timeout_min if timeout_min is not None else res.get("time_min", 60)
    if launcher == "debug":  # in this process, one job after the other: for debugging a method
        return submitit.DebugExecutor(folder=logs)
    tasks = res.get("tasks") or res.get("gpus") or 1  # processes per node: one per GPU unless told
    if launcher == "local":  # subprocesses on this machine, with submitit's timeout and requeue
        ex = submitit.LocalExecutor(folder=logs)
        ex.update_parameters(timeout_min=timeout, tasks_per_node=tasks,
                             **({"signal_delay_s": signal_delay_s} if signal_delay_s else {}))
        return ex
    ex = submitit.AutoExecutor(folder=logs, cluster="slurm")
    params: dict[str, Any] = {"timeout_min": int(timeout), "cpus_per_task": res.get("cpus", 1),
                              "mem_gb": res.get("mem_gb", 4), "slurm_array_parallelism": max_parallel,
                              "nodes": res.get("nodes", 1), "tasks_per_node": tasks}
    if res.get("partition"):
        params["slurm_partition"] = res["partition"]
    if res.get("gpus"):
        params["gpus_per_node"] = res["gpus"]
    if signal_delay_s:
        params["slurm_signal_delay_s"] = signal_delay_s
    ex.update_parameters(**params)
    return ex


@dataclass
class Submitted:
    sweep_dir: Path
    skipped: list[JobSpec]
    jobs: list[tuple[JobSpec, Any]]  # (spec, submitit job)


def submit(specs: list[JobSpec], *, launcher: str, sweeps: Path, runs: Path, data_dir: Path, name: str | None = None,
           max_parallel: int = 8, allow_dirty: bool = False, timeout_min: float | None = None,
           signal_delay_s: int | None = None, rerun: bool = False) -> Submitted:
    """Submit every job of the plan whose result is not already in the store for today's code and data (all of
    them with `rerun`)."""
    if launcher not in LAUNCHERS:
        raise BenchmarkError(f"unknown launcher {launcher!r}; expected one of {', '.join(LAUNCHERS)}")
    code = io.git_sha()
    if launcher == "slurm" and code["git_dirty"] and not allow_dirty:
        raise BenchmarkError("the working tree has uncommitted changes: SLURM jobs would run code that no commit "
                             "records; commit first or pass --allow-dirty")
    name = name or sweep_name(specs)
    sweep_dir = Path(sweeps) / name
    io.write_json(sweep_dir / "plan.json", {"name": name, "launcher": launcher, "runs": str(runs),
                                            "data_dir": str(data_dir), **code,
                                            "jobs": [s.to_json() for s in specs]})
    done = {} if rerun else finished_runs(runs, io.code_version(code), split_hashes({s.task for s in specs}, data_dir))
    todo, skipped = [], []
    for s in specs:
        if s.spec_hash in done:
            _write_state(sweep_dir, s.spec_hash, status="done", run_dir=str(done[s.spec_hash]))
            skipped.append(s)
        else:
            todo.append(s)
    groups: dict[str, list[JobSpec]] = {}
    for s in todo:  # one array per distinct resource request
        groups.setdefault(json.dumps(s.resources, sort_keys=True), []).append(s)
    chunk = max_array_size() if launcher == "slurm" else max(1, len(todo))
    jobs: list[tuple[JobSpec, Any]] = []
    for group in groups.values():
        ex = _executor(launcher, sweep_dir, group[0].resources, max_parallel, timeout_min, signal_delay_s)
        for i in range(0, len(group), chunk):
            part = group[i: i + chunk]
            with ex.batch():
                submitted = [ex.submit(SweepJob(s, sweep_dir, runs, data_dir, name)) for s in part]
            for s, job in zip(part, submitted):
                _write_state(sweep_dir, s.spec_hash, status="submitted", job_id=str(job.job_id), launcher=launcher,
                             log=str(job.paths.stderr) if launcher != "debug" else None)
                jobs.append((s, job))
    return Submitted(sweep_dir, skipped, jobs)


def wait(sub: Submitted) -> None:
    """Wait for every job; a job that died without writing its state becomes a failure row."""
    for spec, job in sub.jobs:
        try:
            job.results()  # one result per task (a job of several tasks is one process group)
        except Exception as e:
            state = _read_state(sub.sweep_dir, spec.spec_hash)
            if state.get("status") not in ("failed", "done"):
                _write_state(sub.sweep_dir, spec.spec_hash, status="failed", error=f"{type(e).__name__}: {e}".strip()[:2000],
                             log=state.get("log"))


def _read_state(sweep_dir: Path, spec_hash: str) -> dict[str, Any]:
    path = Path(sweep_dir) / "jobs" / f"{spec_hash}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def status(sweep_dir: Path) -> pd.DataFrame:
    """One row per planned job: planned / submitted / running / requeued / done / failed, with run dir or error and log."""
    sweep_dir = Path(sweep_dir)
    plan_path = sweep_dir / "plan.json"
    if not plan_path.is_file():
        raise BenchmarkError(f"{sweep_dir}: not a sweep directory (no plan.json)")
    rows = []
    for d in json.loads(plan_path.read_text())["jobs"]:
        spec = JobSpec.from_json(d)
        st = _read_state(sweep_dir, spec.spec_hash)
        error = (st.get("error") or "").splitlines()
        rows.append({"method": spec.method, "task": spec.task, "seed": spec.seed, "variant": spec.variant,
                     "status": st.get("status", "planned"), "job_id": st.get("job_id", ""),
                     "run_dir": st.get("run_dir", ""), "error": error[0] if error else "", "log": st.get("log") or "",
                     "spec_hash": spec.spec_hash})
    return pd.DataFrame(rows)


def write_status(sweep_dir: Path) -> pd.DataFrame:
    table = status(sweep_dir)
    io.write_csv(Path(sweep_dir) / "status.csv", table)
    return table

