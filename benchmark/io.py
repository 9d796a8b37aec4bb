"""Atomic writes and hashing: nothing partial is ever left behind."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _atomic(path: Path, data: bytes) -> Path:
    """Write to a temporary file beside `path`, then rename: a reader sees the old file or the whole new one.
    Returns the path written, so that callers can list what they wrote."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    return _atomic(path, data)


def write_text(path: Path, text: str) -> Path:
    return _atomic(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_csv(path: Path, df: pd.DataFrame, index: bool = False) -> Path:
    return write_text(path, df.to_csv(index=index, lineterminator="\n"))


def write_npy(path: Path, array: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return _atomic(path, buf.getvalue())


def write_torch(path: Path, obj: Any) -> Path:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return _atomic(path, buf.getvalue())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def git_sha(cwd: Path | None = None) -> dict[str, Any]:
    """The code version that produced a number: commit, whether the tree was dirty and, if it was, a hash of its
    uncommitted changes (`git diff HEAD` and the untracked files' names), so two dirty trees can be told apart."""
    cwd = Path(cwd or Path(__file__).resolve().parent.parent)
    git = lambda *a: subprocess.run(["git", *a], cwd=cwd, capture_output=True, check=True).stdout  # noqa: E731
    try:
        sha = git("rev-parse", "HEAD").decode().strip()
        status = git("status", "--porcelain")
        diff = git("diff", "HEAD", "--binary") + git("ls-files", "--others", "--exclude-standard") if status else b""
    except (OSError, subprocess.CalledProcessError):
        return {"git_sha": "unknown", "git_dirty": None, "git_diff_sha256": None}
    return {"git_sha": sha, "git_dirty": bool(status.strip()), "git_diff_sha256": sha256_bytes(diff) if diff else None}


def code_version(git: dict[str, Any]) -> str:
    """One string for a `git_sha()` record: the commit, and the hash of uncommitted changes where there were any."""
    if not git.get("git_dirty"):
        return str(git.get("git_sha"))
    return f"{git.get('git_sha')}+{(git.get('git_diff_sha256') or 'dirty')[:16]}"
