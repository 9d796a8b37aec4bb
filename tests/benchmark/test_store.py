"""The run store: staged runs of dead processes are found and moved to `.failed/` with the reason."""

import json
import os
import socket
import subprocess
import sys

import pytest

from benchmark.cli import main
from benchmark.errors import BenchmarkError
from benchmark.store import OWNER_FILE, RunStore


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_staging_is_moved_to_failed_on_the_next_run(tmp_path, data_dir, tiny_data, capsys):
    runs = tmp_path / "runs"
    store = RunStore(runs)
    dead = store.staging("20260101T000000Z-identity-synthetic-tiny-s0-dead00")
    (dead / OWNER_FILE).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "started": "then"}))
    live = store.staging("20260101T000000Z-identity-synthetic-tiny-s0-live00")  # this process: alive
    elsewhere = store.staging("20260101T000000Z-identity-synthetic-tiny-s0-other0")
    (elsewhere / OWNER_FILE).write_text(json.dumps({"pid": 1, "host": "another-node", "started": "then"}))
    legacy = runs / ".staging" / "20260101T000000Z-identity-synthetic-tiny-s0-old000.failed"  # earlier versions
    legacy.mkdir()

    assert main(["run", "--method", "identity", "--task", "synthetic-tiny", "--out", str(runs), "--data-dir",
                 str(data_dir), "--features", "tiny"]) == 0
    assert "moved a stale staged run" in capsys.readouterr().err
    assert sorted(p.name for p in (runs / ".staging").iterdir()) == [live.name, elsewhere.name]
    failed = {u.run_id: u for u in store.unfinished() if u.state == "failed"}
    assert set(failed) == {dead.name, legacy.name.removesuffix(".failed")}
    assert "is gone" in failed[dead.name].detail["reason"] and failed[dead.name].detail["owner"]["started"] == "then"
    assert len(store.runs()) == 1  # the new run was recorded beside them

    main(["list-runs", "--out", str(runs)])
    out = capsys.readouterr().out
    states = [line.split()[0] for line in out.splitlines()]
    assert sorted(states) == ["done", "failed", "failed", "staging", "staging"]
    assert f"pid {os.getpid()}" in out and "is gone" in out
    main(["status", "--out", str(runs)])
    assert sorted(line.split()[0] for line in capsys.readouterr().out.splitlines()) == ["failed", "failed", "staging", "staging"]


def test_a_failing_run_is_moved_to_failed_with_its_error(tmp_path, data_dir, tiny_data, capsys, monkeypatch):
    from methods.reference import Identity

    def broken(self, request, *, seed):
        raise RuntimeError("out of memory in generate")

    monkeypatch.setattr(Identity, "generate", broken)
    runs = tmp_path / "runs"
    try:
        main(["run", "--method", "identity", "--task", "synthetic-tiny", "--out", str(runs), "--data-dir", str(data_dir),
              "--features", "tiny"])
    except RuntimeError:
        pass
    else:
        raise AssertionError("the error was swallowed")
    assert list((runs / ".staging").iterdir()) == [] and RunStore(runs).runs() == []
    (run,) = RunStore(runs).unfinished()
    assert run.state == "failed" and run.detail["reason"] == "RuntimeError: out of memory in generate"
    assert not (run.path / OWNER_FILE).exists() or run.detail["owner"]["pid"] == os.getpid()


def test_the_run_format_is_named_only_in_the_store():
    """Only benchmark/store.py names the record files: every other module reads and writes runs through it."""
    import ast
    from pathlib import Path

    root = Path(__file__).parents[2]
    offenders = []
    for path in sorted(p for d in ("benchmark", "methods", "tasks", "perf") for p in (root / d).rglob("*.py")):
        if path == root / "benchmark" / "store.py":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef)) and ast.get_docstring(n) is not None}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                    and ("manifest.json" in node.value or "metrics.csv" in node.value):
                offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []


def test_older_manifests_are_brought_to_todays_form_on_read(tmp_path):
    """Runs recorded before methods declared their table order and tasks their base task still report alike."""
    from benchmark.store import MANIFEST, read_manifest

    for method, task, order, base in (("cellflow", "synthetic-batchswap", 3, "synthetic"),
                                      ("oracle", "bbbc021-ood", 9, "bbbc021"), ("mine", "synthetic", 5, "")):
        run = tmp_path / f"{method}-{task}"
        run.mkdir()
        (run / MANIFEST).write_text(json.dumps({"run_id": "r", "seed": 0, "method": method, "task": {"name": task},
                                                "overrides": None}))
        m = read_manifest(run)
        assert m.display_order == order and m.task["variant_of"] == base and m.overrides == []
    (run / MANIFEST).write_text(json.dumps({"run_id": "r", "seed": 0, "method": "mine", "display_order": 4,
                                            "task": {"name": "x-ood", "variant_of": ""}, "added_later": 1}))
    m = read_manifest(run)
    assert m.display_order == 4 and m.task["variant_of"] == "" and m.to_json()["added_later"] == 1
    (run / MANIFEST).write_text(json.dumps({"method": "mine", "task": {"name": "x"}}))
    with pytest.raises(BenchmarkError, match="manifest.json: no 'run_id'; expected a run's record"):
        read_manifest(run)
