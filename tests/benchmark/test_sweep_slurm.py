"""The sweep test against a real SLURM cluster (`.ci/slurm.sh start`); skipped, with the reason, where none runs."""

import json
import os
import shutil
import subprocess

import pandas as pd
import pytest

from benchmark import io, sweep
from benchmark.cli import main
from benchmark.errors import BenchmarkError


def _cluster_down_reason() -> str | None:
    if shutil.which("sbatch") is None:
        return "no SLURM client on this machine (.ci/run installs slurm-wlm where it can)"
    if not os.environ.get("SLURM_CONF"):
        return "SLURM_CONF is not set: no cluster was started (.ci/slurm.sh start)"
    try:
        ok = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        return f"scontrol ping failed: {e}"
    if "UP" not in ok.stdout:
        return f"slurmctld is not up: {ok.stdout.strip() or ok.stderr.strip()}"
    return None


REASON = _cluster_down_reason()
if REASON:
    print(f"\nSLURM tests skipped: {REASON}")


def test_slurm_refuses_a_dirty_tree(monkeypatch, tmp_path):
    monkeypatch.setattr(io, "git_sha", lambda: {"git_sha": "abc", "git_dirty": True})
    specs = sweep.plan(["identity"], ["synthetic-tiny"], [0])
    with pytest.raises(BenchmarkError, match="uncommitted changes"):
        sweep.submit(specs, launcher="slurm", sweeps=tmp_path, runs=tmp_path / "runs", data_dir=tmp_path)


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
def test_sweep_on_a_real_slurm_cluster(tmp_path, data_dir, tiny_data, capsys):
    args = ["sweep", "--methods", "identity,oracle", "--tasks", "synthetic-tiny,synthetic-tiny-batchswap",
            "--seeds", "0", "--launcher", "slurm", "--features", "morphology", "--name", "grid", "--allow-dirty",
            "--resources", "identity.cpus=1", "--resources", "oracle.cpus=1", "--resources", "identity.mem_gb=2",
            "--resources", "oracle.mem_gb=2", "--sweeps", str(tmp_path / "sweeps"), "--out", str(tmp_path / "runs"),
            "--data-dir", str(data_dir)]
    assert main(args) == 0
    table = sweep.status(tmp_path / "sweeps" / "grid")
    assert list(table["status"]) == ["done"] * 4, table.to_string()
    assert all(j.isdigit() or "_" in j for j in table["job_id"])  # SLURM job ids (array tasks)
    assert "4 submitted, 0 already done" in capsys.readouterr().out
    assert main(args) == 0
    assert "0 submitted, 4 already done" in capsys.readouterr().out
    assert main(["report", "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results")]) == 0
    board = pd.concat(pd.read_csv(p) for p in (tmp_path / "results").rglob("leaderboard*.csv"))
    assert len(set(zip(board["method"], board["task"]))) >= 4


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
def test_a_slurm_job_of_two_tasks_trains_cellflow_in_one_process_group(tmp_path, data_dir, tiny_data):
    tiny = ["cellflow.width=8", "cellflow.mults=1,2", "cellflow.attention=false", "cellflow.batch_size=4",
            "cellflow.nfe=2", "cellflow.steps=2"]
    assert main(["sweep", "--methods", "cellflow", "--tasks", "synthetic-tiny", "--launcher", "slurm",
                 "--features", "morphology", "--name", "dp", "--allow-dirty", "--sweeps", str(tmp_path / "sweeps"),
                 "--out", str(tmp_path / "runs"), "--data-dir", str(data_dir),
                 "--resources", "cellflow.tasks=2,gpus=0,cpus=1,mem_gb=4", *[a for kv in tiny for a in ("--set", kv)]]) == 0
    table = sweep.status(tmp_path / "sweeps" / "dp")
    assert list(table["status"]) == ["done"], table.to_string()
    (run,) = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    fit = json.loads((run / "manifest.json").read_text())["fit"]
    assert fit["processes"] == 2
