"""The run store: one directory per run, written once, never overwritten.

A run is assembled in `<root>/.staging/<run-id>/` and renamed into place only
when complete, so concurrent runs never clobber each other and a killed run
leaves no half-written result behind. Aggregation happens only in `report`.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from benchmark.errors import BenchmarkError


@dataclass(frozen=True)
class Run:
    path: Path
    manifest: dict
    metrics: pd.DataFrame


class RunStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @staticmethod
    def new_id(method: str, task: str, seed: int) -> str:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        safe = lambda s: "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in s)
        return f"{stamp}-{safe(method)}-{safe(task)}-s{seed}-{uuid.uuid4().hex[:6]}"

    def staging(self, run_id: str) -> Path:
        path = self.root / ".staging" / run_id
        path.mkdir(parents=True, exist_ok=False)
        return path

    def commit(self, run_id: str) -> Path:
        src, dst = self.root / ".staging" / run_id, self.root / run_id
        if dst.exists():
            raise BenchmarkError(f"{dst}: run directory exists; runs are never overwritten")
        os.rename(src, dst)
        return dst

    def runs(self) -> list[Run]:
        out = []
        if not self.root.is_dir():
            return out
        for path in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            man, met = path / "manifest.json", path / "metrics.csv"
            if not (man.is_file() and met.is_file()):
                continue
            metrics = pd.read_csv(met)
            metrics["perturbation"] = metrics["perturbation"].fillna("").astype(str)
            out.append(Run(path, json.loads(man.read_text()), metrics))
        return out
