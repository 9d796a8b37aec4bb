"""Sweeps through submitit's local executor: completion, idempotency, requeue after a kill, failure rows."""

import json
import os
import signal
import time

import pandas as pd
import pytest

from benchmark import io, sweep
from benchmark.cli import main
from benchmark.errors import BenchmarkError

TINY_CF = ["cellflow.width=8", "cellflow.mults=1,2", "cellflow.attention=false", "cellflow.batch_size=4",
           "cellflow.nfe=2"]


def test_plan_is_pure_data_with_resources_and_stable_hashes():
    a = sweep.plan(["cellflow", "identity"], ["synthetic"], [0, 1], ablations=True,
                   resources=["cellflow.partition=gpu", "cellflow.time_min=90"])
    b = sweep.plan(["cellflow", "identity"], ["synthetic"], [0, 1], ablations=True,
                   resources=["cellflow.partition=gpu", "cellflow.time_min=90"])
    assert [s.spec_hash for s in a] == [s.spec_hash for s in b] and len({s.spec_hash for s in a}) == len(a)
    table = sweep.plan_table(a)
    assert len(table) == 2 * 5 + 2  # cellflow: default + 4 ablations; identity: default
    cf = table[table["method"] == "cellflow"]
    assert set(cf["variant"]) == {"default", "no-condition", "no-cfg", "no-noise", "source-noise"}
    assert set(cf["partition"]) == {"gpu"} and set(cf["time_min"]) == {90} and set(cf["gpus"]) == {1}
    with pytest.raises(BenchmarkError, match="option 'nonsense' is unknown"):
        sweep.plan(["cellflow"], ["synthetic"], [0], sets=["cellflow.nonsense=1"])
    with pytest.raises(BenchmarkError, match="unknown task"):
        sweep.plan(["identity"], ["no-such-task"], [0])


def test_dry_run_prints_the_plan_and_submits_nothing(tmp_path, capsys):
    assert main(["sweep", "--methods", "identity,oracle", "--tasks", "synthetic-tiny", "--seeds", "0,1", "--dry-run",
                 "--sweeps", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "4 jobs planned" in out and not list(tmp_path.iterdir())


def _sweep(tmp_path, data_dir, *extra):
    return main(["sweep", "--methods", "identity,oracle", "--tasks", "synthetic-tiny,synthetic-tiny-batchswap",
                 "--seeds", "0", "--launcher", "local", "--features", "morphology", "--name", "grid",
                 "--sweeps", str(tmp_path / "sweeps"), "--out", str(tmp_path / "runs"), "--data-dir", str(data_dir),
                 *extra])


def test_local_sweep_completes_resumes_to_nothing_and_reports_all(tmp_path, data_dir, tiny_data, capsys):
    assert _sweep(tmp_path, data_dir) == 0
    table = sweep.status(tmp_path / "sweeps" / "grid")
    assert list(table["status"]) == ["done"] * 4
    assert "4 submitted, 0 already done" in capsys.readouterr().out
    assert _sweep(tmp_path, data_dir) == 0  # the same plan again: every result exists
    assert "0 submitted, 4 already done" in capsys.readouterr().out
    assert sweep.finished_runs(tmp_path / "runs", io.code_version(io.git_sha()), {}) == {}  # other data: not done
    assert main(["report", "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results")]) == 0
    board = pd.concat(pd.read_csv(p) for p in (tmp_path / "results").rglob("leaderboard*.csv"))
    shown = set(zip(board["method"], board["task"]))
    assert {(m, t) for m in ("identity", "oracle") for t in ("synthetic-tiny", "synthetic-tiny-batchswap")} <= shown
    assert main(["status", str(tmp_path / "sweeps" / "grid")]) == 0
    assert "done: 4" in capsys.readouterr().out


def test_a_failing_job_is_a_failure_row_and_the_others_finish(tmp_path, data_dir, tiny_data):
    # bbbc021 is not prepared in data_dir: that job fails inside its process
    code = main(["sweep", "--methods", "identity", "--tasks", "synthetic-tiny,bbbc021", "--launcher", "local",
                 "--features", "morphology", "--name", "mixed", "--sweeps", str(tmp_path / "sweeps"),
                 "--out", str(tmp_path / "runs"), "--data-dir", str(data_dir)])
    assert code == 0
    table = sweep.status(tmp_path / "sweeps" / "mixed").set_index("task")
    assert table.loc["synthetic-tiny", "status"] == "done"
    failed = table.loc["bbbc021"]
    assert failed["status"] == "failed" and "no prepared data" in failed["error"]
    assert failed["log"].endswith(".err") and "no prepared data" in open(failed["log"]).read()


def test_a_job_killed_mid_training_is_requeued_and_resumes_from_its_checkpoint(tmp_path, data_dir, tiny_data):
    specs = sweep.plan(["cellflow"], ["synthetic-tiny"], [0], features=("morphology",),
                       sets=[*TINY_CF, "cellflow.steps=600", "cellflow.checkpoint_every=20"])
    sub = sweep.submit(specs, launcher="local", sweeps=tmp_path / "sweeps", runs=tmp_path / "runs",
                       data_dir=data_dir, name="kill", timeout_min=30, signal_delay_s=5)
    ((spec, job),) = sub.jobs
    ckpt = sub.sweep_dir / "work" / spec.spec_hash / "checkpoint.pt"
    deadline = time.time() + 300
    while not ckpt.is_file() and time.time() < deadline:
        time.sleep(0.5)
    assert ckpt.is_file()
    # what a time limit does: submitit's controller (as SLURM does) sends USR2 to the task before killing it;
    # sent here at a known point, after the first checkpoint, so the test does not race the machine's speed
    controller = job._process.pid
    (task,) = [int(p) for p in open(f"/proc/{controller}/task/{controller}/children").read().split()]
    os.kill(task, signal.SIGUSR2)
    sweep.wait(sub)
    state = json.loads((sub.sweep_dir / "jobs" / f"{spec.spec_hash}.json").read_text())
    assert state["status"] == "done"
    fit = json.loads((sub.sweep_dir.parent.parent / "runs" / state["run_dir"].split("/")[-1] / "manifest.json").read_text())["fit"]
    assert fit["steps"] == 600 and 0 < fit["resumed_from"] < 600


def test_a_job_of_two_tasks_trains_in_one_process_group(tmp_path, data_dir, tiny_data):
    """`--resources cellflow.tasks=2,...`: submitit starts two tasks; each joins one process group as a rank."""
    code = main(["sweep", "--methods", "cellflow", "--tasks", "synthetic-tiny", "--launcher", "local",
                 "--features", "morphology", "--name", "dp", "--sweeps", str(tmp_path / "sweeps"),
                 "--out", str(tmp_path / "runs"), "--data-dir", str(data_dir),
                 "--resources", "cellflow.tasks=2,gpus=0,cpus=1", *[a for kv in TINY_CF for a in ("--set", kv)],
                 "--set", "cellflow.steps=2"])
    assert code == 0
    (run,) = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]  # recorded once, by rank 0
    fit = json.loads((run / "manifest.json").read_text())["fit"]
    assert fit["processes"] == 2 and fit["batch"] == {"devices": 2, "per_device": 2, "accumulation": 1, "effective": 4}
    assert sweep.plan(["cellflow"], ["synthetic"], [0], resources=["cellflow.gpus=4,nodes=2"])[0].resources == {
        **sweep.METHODS.get("cellflow").resources, "gpus": 4, "nodes": 2}


def test_a_result_of_other_code_or_data_is_run_again_and_rerun_forces_all(tmp_path, data_dir, tiny_data, capsys,
                                                                         monkeypatch):
    """"Done" means the same spec, code version and data: a fix makes a sweep run its jobs again."""
    assert _sweep(tmp_path, data_dir) == 0
    capsys.readouterr()
    real = io.git_sha()
    monkeypatch.setattr(io, "git_sha", lambda cwd=None: {**real, "git_sha": "0" * 40, "git_dirty": False})
    one = ["--methods", "identity", "--tasks", "synthetic-tiny", "--launcher", "debug"]  # in this process: patched
    assert _sweep(tmp_path, data_dir, *one) == 0
    assert "1 submitted, 0 already done" in capsys.readouterr().out
    assert _sweep(tmp_path, data_dir, *one) == 0
    assert "0 submitted, 1 already done" in capsys.readouterr().out  # the run just made under that code
    assert _sweep(tmp_path, data_dir, *one, "--rerun") == 0
    assert "1 submitted, 0 already done" in capsys.readouterr().out
