"""The run store: one directory per run, written once, never overwritten.

A run is assembled in `<root>/.staging/<run-id>/` and renamed into place only
when complete, so concurrent runs never clobber each other and a killed run
leaves no half-written result behind. A run that fails, is interrupted, or
whose process died is moved to `<root>/.failed/<run-id>/` with the reason in
`failure.json`. Aggregation happens only in `report`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark import io
from benchmark.errors import BenchmarkError

MANIFEST = "manifest.json"  # the run's record: config, seeds, versions, hashes, timings (written last)
METRICS = "metrics.csv"  # one row per metric x feature space x perturbation
GENERATED = "generated.npy"  # the plan's images, N x H x W x C uint8, row i answers request i
REQUESTS = "generated.csv"  # the plan's requests those rows answer
MODEL = "model"  # the saved method (a folder that describes itself), where the run has one
TRAJECTORIES = "trajectories"  # flow methods' strips, drawn when the run was made
OWNER_FILE = ".owner.json"  # who is assembling a staged run: pid, host and the process's start time
FAILURE_FILE = "failure.json"


# The metric-row schema, declared once. A scorer produces SCORE_COLUMNS; the store prefixes the run's identity.
SCORE_COLUMNS = ("metric", "feature_space", "perturbation", "value", "std", "n_gen", "n_real", "channel_rule",
                 "extractor_sha256", "metric_seed", "ci_low", "ci_high")
RUN_COLUMNS = ("run_id", "task", "method", "variant", "seed")
METRIC_COLUMNS = RUN_COLUMNS + SCORE_COLUMNS


@dataclass(frozen=True)
class Manifest:
    """A run's record: what produced its numbers (config, seeds, data and plan hashes, extractor hashes, code
    version, compute). Files written by earlier versions are upgraded in `from_json`, and nowhere else."""

    run_id: str
    method: str
    task: dict[str, Any]  # the task's declaration (Task.spec())
    seed: int
    variant: str = "default"
    display_order: int = 5  # row order in tables (floor 0, baselines, ours, ceiling 9)
    method_origin: str = ""
    profile: str | None = None
    overrides: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    eval_seed: int = 0
    kid_seed: int = 0
    split_hash: str = ""
    eval_plan_sha256: str = ""
    n_reference: int = 0
    features: dict[str, Any] = field(default_factory=dict)  # feature space / scorer -> weights hash, channel rule
    fit: dict[str, Any] = field(default_factory=dict)  # the method's training summary
    timings_s: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    git_sha: str = "unknown"
    git_dirty: bool | None = None
    git_diff_sha256: str | None = None  # of the uncommitted changes, where the tree was dirty
    torch_threads: int | None = None
    sweep: dict[str, Any] | None = None
    # how the scored images came to be: "trained here" (by this suite, in this run or the one it loaded), "imported"
    # (weights the official code published, `run --checkpoint`), or "scored from images" (made elsewhere, `score`)
    model_source: str = "trained here"
    eval_split: str = "test"  # the plan scored: the test split (the leaderboard) or the validation split
    conditioned_on_control: bool = True  # False: images not made from their request's control (no paired errors)
    extra: dict[str, Any] = field(default_factory=dict)  # keys a newer writer added, kept as they are

    @property
    def task_name(self) -> str:
        return self.task.get("name", "")

    @property
    def code_version(self) -> str:
        """The commit, and the hash of uncommitted changes where there were any ("+dirty" where not recorded)."""
        return io.code_version({"git_sha": self.git_sha, "git_dirty": self.git_dirty,
                                "git_diff_sha256": self.git_diff_sha256})

    @property
    def config_hash(self) -> str:
        """Short hash of the resolved method config: what tells two settings of one method apart."""
        return io.sha256_bytes(json.dumps(self.config, sort_keys=True).encode())[:8]

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {**{k: v for k, v in d.items() if k != "extra"}, **self.extra}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Manifest":
        d = _upgraded(dict(d))
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        nullable = {"profile", "git_dirty", "git_diff_sha256", "torch_threads", "sweep"}
        # a null where a value is expected (e.g. "overrides": null in older files) takes the field's default
        known = {k: v for k, v in d.items() if k in fields and (v is not None or k in nullable)}
        missing = [k for k, f in fields.items() if k not in known and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise BenchmarkError(f"no {missing[0]!r}; expected a run's record")
        return cls(**known, extra={k: v for k, v in d.items() if k not in fields})


@dataclass(frozen=True)
class Run:
    """A recorded run: its folder and manifest; its metric rows are read when asked for."""

    path: Path
    manifest: Manifest

    def metrics(self) -> pd.DataFrame:
        return read_metrics(self.path)

    def summary(self) -> pd.DataFrame:
        """The overall rows (no perturbation), as `run` prints them."""
        m = self.metrics()
        return m[m["perturbation"] == ""].reset_index(drop=True)


@dataclass(frozen=True)
class Unfinished:
    """A run that is not in the store: still being assembled (`staging`) or ended without a result (`failed`)."""

    run_id: str
    state: str
    path: Path
    detail: dict


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), so a reused pid is not taken for the owner."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 of proc(5), counted after the command name


def _alive(owner: dict) -> bool:
    pid = int(owner["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    started = owner.get("proc_start")
    return started is None or _process_start(pid) in (None, started)


def read_manifest(run_dir: Path, need_model: bool = False) -> Manifest:
    """The manifest of a recorded run; with `need_model`, also check that its `model/` can be loaded again."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise BenchmarkError(f"{run_dir}: not a run directory (no {MANIFEST})")
    try:
        manifest = Manifest.from_json(json.loads(path.read_text()))
    except (BenchmarkError, ValueError) as e:
        raise BenchmarkError(f"{path}: {e}") from None
    if need_model and not (Path(run_dir) / MODEL).is_dir():
        raise BenchmarkError(f"{run_dir}: the run stored no model/ directory")
    return manifest


# what runs recorded before 2026-12-03 did not say of themselves; filled in on read, here only
_LEGACY_ORDER = {"identity": 0, "phendiff": 1, "impa": 2, "cellflow": 3, "oracle": 9}
_LEGACY_SUFFIXES = ("-ood", "-batchswap")


def _upgraded(manifest: dict) -> dict:
    """A manifest in today's form, whatever version wrote it."""
    manifest.setdefault("display_order", _LEGACY_ORDER.get(manifest.get("method"), 5))
    task = manifest.get("task", {})
    if "variant_of" not in task:
        name = task.get("name", "")
        task["variant_of"] = next((name[: -len(s)] for s in _LEGACY_SUFFIXES if name.endswith(s)), "")
    return manifest


def read_metrics(run_dir: Path) -> pd.DataFrame:
    """A run's metric rows, in today's form whatever version wrote them; overall rows have perturbation ""."""
    metrics = pd.read_csv(Path(run_dir) / METRICS)
    metrics["perturbation"] = metrics["perturbation"].fillna("").astype(str)
    for col in ("ci_low", "ci_high"):  # runs recorded before intervals existed
        if col not in metrics.columns:
            metrics[col] = float("nan")
    return metrics


def write_record(stage: Path, manifest: Manifest, scores: pd.DataFrame) -> None:
    """A staged run's record: its metric rows (the scorers' rows with the run's identity in front), then the
    manifest, whose presence marks a complete record."""
    if set(scores.columns) != set(SCORE_COLUMNS):
        extra, missing = set(scores.columns) - set(SCORE_COLUMNS), set(SCORE_COLUMNS) - set(scores.columns)
        raise BenchmarkError(f"metric rows of run {manifest.run_id}: columns {sorted(extra)} are not in the schema"
                             if extra else f"metric rows of run {manifest.run_id}: columns {sorted(missing)} missing")
    rows = scores[list(SCORE_COLUMNS)].copy()
    for i, (col, value) in enumerate(zip(RUN_COLUMNS, (manifest.run_id, manifest.task_name, manifest.method,
                                                       manifest.variant, manifest.seed))):
        rows.insert(i, col, value)
    io.write_csv(Path(stage) / METRICS, rows)
    io.write_json(Path(stage) / MANIFEST, manifest.to_json())


class RunStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @staticmethod
    def new_id(method: str, task: str, seed: int) -> str:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        safe = lambda s: "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in s)
        return f"{stamp}-{safe(method)}-{safe(task)}-s{seed}-{uuid.uuid4().hex[:6]}"

    def staging(self, run_id: str) -> Path:
        """A new staging directory owned by this process (its pid and host recorded for `reap_stale`)."""
        path = self.root / ".staging" / run_id
        path.mkdir(parents=True, exist_ok=False)
        pid = os.getpid()
        io.write_json(path / OWNER_FILE, {"pid": pid, "host": socket.gethostname(), "proc_start": _process_start(pid),
                                          "started": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        return path

    def commit(self, run_id: str) -> Path:
        src, dst = self.root / ".staging" / run_id, self.root / run_id
        if dst.exists():
            raise BenchmarkError(f"{dst}: run directory exists; runs are never overwritten")
        (src / OWNER_FILE).unlink(missing_ok=True)
        os.rename(src, dst)
        return dst

    def fail(self, run_id: str, reason: str) -> Path:
        """Move a staged run to `.failed/<run-id>/` with the reason; its files are kept for inspection."""
        src, dst = self.root / ".staging" / run_id, self.root / ".failed" / run_id
        owner = _read_json(src / OWNER_FILE)
        dst.parent.mkdir(parents=True, exist_ok=True)
        io.write_json(src / FAILURE_FILE, {"reason": reason, "owner": owner,
                                           "failed": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        os.rename(src, dst)
        return dst

    def reap_stale(self) -> list[Path]:
        """Move staged runs whose process is gone (on this host) to `.failed/`; returns their new paths.

        A run on another host sharing this store cannot be checked from here and is left alone. Staging
        directories of older versions (no owner file; `<id>.failed` for failures) are moved too.
        """
        staging = self.root / ".staging"
        moved = []
        if not staging.is_dir():
            return moved
        host = socket.gethostname()
        for path in sorted(p for p in staging.iterdir() if p.is_dir()):
            owner = _read_json(path / OWNER_FILE)
            if path.name.endswith(".failed"):  # written by earlier versions of the runner
                legacy = path.with_name(path.name[: -len(".failed")])
                os.rename(path, legacy)
                moved.append(self.fail(legacy.name, "failed (recorded by an earlier version, reason not kept)"))
            elif owner is None:
                if time.time() - path.stat().st_mtime > 24 * 3600:
                    moved.append(self.fail(path.name, "stale: staged by an earlier version, untouched for a day"))
            elif owner.get("host") == host and not _alive(owner):
                moved.append(self.fail(path.name, f"stale: its process {owner['pid']} on {host} is gone "
                                                  "(killed before it could record a reason, e.g. SIGKILL or OOM)"))
        return moved

    def unfinished(self) -> list[Unfinished]:
        """Runs being assembled and runs that ended without a result, oldest first."""
        out = []
        for state, sub, name in (("staging", ".staging", OWNER_FILE), ("failed", ".failed", FAILURE_FILE)):
            folder = self.root / sub
            if folder.is_dir():
                out += [Unfinished(p.name, state, p, _read_json(p / name) or {})
                        for p in sorted(folder.iterdir()) if p.is_dir()]
        return out

    def recorded(self) -> list[Path]:
        """The folders of complete runs (a manifest and metric rows), sorted by run id."""
        if not self.root.is_dir():
            return []
        return [p for p in sorted(self.root.iterdir()) if p.is_dir() and not p.name.startswith(".")
                and (p / MANIFEST).is_file() and (p / METRICS).is_file()]

    def manifests(self) -> list[tuple[Path, Manifest]]:
        """(folder, manifest) of every complete run; unreadable manifests are skipped (a store shared with a
        writer of another version must not stop a sweep from resuming)."""
        out = []
        for path in self.recorded():
            try:
                out.append((path, read_manifest(path)))
            except BenchmarkError:
                continue
        return out

    def export_records(self, dest: Path, run_ids: list[str] | None = None) -> list[Path]:
        """Copy the records (manifest and metric rows; no images, no weights) of recorded runs into another store
        at `dest`, e.g. the repository's `results/runs/`, from which `report` regenerates the reference tables.
        A record already there must be identical."""
        out = []
        for path in self.recorded():
            if run_ids is not None and path.name not in run_ids:
                continue
            target = Path(dest) / path.name
            for name in (METRICS, MANIFEST):  # the manifest last: its presence marks a complete record
                data = (path / name).read_bytes()
                if (target / name).is_file():
                    if (target / name).read_bytes() != data:
                        raise BenchmarkError(f"{target / name}: a different record of run {path.name} is there")
                    continue
                io.write_bytes(target / name, data)
            out.append(target)
        return out

    def runs(self) -> list[Run]:
        return [Run(path, read_manifest(path)) for path in self.recorded()]


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
