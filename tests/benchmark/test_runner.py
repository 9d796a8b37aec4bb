"""The runner: SIGTERM (scancel, preemption) and SIGINT end a run cleanly; a process group generates the plan;
no test image is read before the final evaluation."""

import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from benchmark import io
from benchmark.cli import main
from benchmark.store import RunStore

# A method whose fit blocks, so the signal surely arrives mid-run; registered in the child process only. SIGINT
# gets Python's default handler as in a terminal: a shell without job control (CI scripts, `cmd &`) starts its
# children with SIGINT ignored, which the runner rightly leaves alone.
CHILD = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from pathlib import Path
from benchmark.registry import METHODS
from methods.reference import Identity

class Sleepy(Identity):
    name = "sleepy"

    def fit(self, data, *, seed, workdir):
        Path(sys.argv[1]).write_text("fitting")
        time.sleep(300)
        return {}

METHODS.register("sleepy", Sleepy)
from benchmark.cli import main
sys.exit(main(["run", "--method", "sleepy", "--task", "synthetic-tiny", "--out", sys.argv[2], "--data-dir", sys.argv[3],
               "--features", "morphology"]))
"""


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_run_leaves_no_staging_and_a_failed_run_with_the_reason(sig, code, tmp_path, data_dir, tiny_data):
    marker, runs = tmp_path / "fitting", tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(marker), str(runs), str(data_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() < deadline, "the child never started fitting"
        time.sleep(0.2)
    (staged,) = (runs / ".staging").iterdir()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert list((runs / ".staging").iterdir()) == [] and RunStore(runs).runs() == []
    (failed,) = RunStore(runs).unfinished()
    assert failed.run_id == staged.name and failed.state == "failed"
    assert failed.detail["reason"] == f"interrupted by {sig.name}"
    assert f"error: run interrupted by {sig.name}" in err


def test_two_processes_generate_exactly_the_plan_in_order(tmp_path, data_dir, tiny_data):
    """`run --processes 2`: each process generates every other chunk; the main one gathers and records once."""
    assert main(["run", "--method", "identity", "--task", "synthetic-tiny", "--processes", "2", "--out",
                 str(tmp_path), "--data-dir", str(data_dir), "--features", "morphology"]) == 0
    (run,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    plan = tiny_data.eval_plan()
    generated = np.load(run / "generated.npy")
    assert np.array_equal(generated, tiny_data.images[plan.requests["control_row"].to_numpy()])


def test_training_and_its_curve_never_read_a_test_image(tiny_data, tmp_path):
    """Every test-split pixel (and every counterfactual of a test control) inverted: what the runner hands to `fit`
    and to the curve scorer is unchanged, and so are the curve, the checkpoint kept and its weights."""
    import copy

    import torch

    from benchmark.runner import validation_monitor
    from methods.cellflow import CellFlow, CellFlowConfig

    plan = tiny_data.eval_plan()
    test_keys = set(plan.reference["SAMPLE_KEY"]) | set(plan.requests["control_key"])
    corrupted = copy.copy(tiny_data)
    test = tiny_data.rows("test")
    corrupted.images = np.array(tiny_data.images)
    corrupted.images[test] = 255 - corrupted.images[test]
    cf_test = tiny_data.counterfactual_index["SAMPLE_KEY"].isin(tiny_data.obs["SAMPLE_KEY"].iloc[test]).to_numpy()
    corrupted.counterfactuals = np.array(tiny_data.counterfactuals)
    corrupted.counterfactuals[cf_test] = 255 - corrupted.counterfactuals[cf_test]
    outcomes = []
    for i, data in enumerate((tiny_data, corrupted)):
        train, monitor = data.train_data(), validation_monitor(data, data.task)
        assert test_keys.isdisjoint(train.obs["SAMPLE_KEY"]) and test_keys.isdisjoint(monitor.sample_keys)
        method = CellFlow(CellFlowConfig(steps=8, width=8, mults=(1, 2), blocks=1, attention=False, batch_size=8,
                                         nfe=2, curve_points=3, select="best"))
        summary = method.fit(train, seed=0, workdir=tmp_path / str(i), monitor=monitor)
        curve = [{k: v for k, v in row.items() if k != "train_s"} for row in summary["curve"]]  # timings differ
        outcomes.append((curve, summary["selected"], list(method.ema.state_dict().values())))
    (curve_a, kept_a, w_a), (curve_b, kept_b, w_b) = outcomes
    assert curve_a == curve_b and kept_a == kept_b and len(curve_a) >= 4
    assert all(torch.equal(a, b) for a, b in zip(w_a, w_b))
    assert not np.array_equal(corrupted.images[test], tiny_data.images[test])  # the corruption took


def test_every_pinned_package_is_recorded_in_each_manifest():
    """What is pinned exactly decides numbers or runs, so every run's manifest says which version ran."""
    import re
    import tomllib
    from pathlib import Path

    from benchmark.runner import versions

    deps = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = [re.split(r"[=<>!~ ]", d)[0].lower() for d in deps if "==" in d]
    recorded = versions()
    assert len(pinned) >= 10
    for name in pinned:
        assert recorded.get(name, "not installed") != "not installed", name


def test_a_published_checkpoint_is_imported_scored_and_labelled_as_such(tmp_path, data_dir, tiny_data, capsys):
    """`run --checkpoint`: no training; the record says the weights were imported (files and hashes), and the
    report keeps the row apart from trained ones."""
    import json

    from ..conftest import TINY_ADM, write_cellflux_checkpoint

    ckpt = tmp_path / "checkpoint.pth"
    write_cellflux_checkpoint(ckpt, tiny_data.train_data())
    runs = tmp_path / "runs"
    common = ["--task", "synthetic-tiny", "--out", str(runs), "--data-dir", str(data_dir), "--features", "tiny"]
    tiny = [a for s in TINY_ADM + ["nfe=2", "solver=euler"] for a in ("--set", s)]
    assert main(["run", "--method", "cellflow", *common, "--checkpoint", str(ckpt), *tiny]) == 0
    assert main(["run", "--method", "identity", *common]) == 0
    run = next(p for p in runs.iterdir() if "-cellflow-" in p.name)
    m = json.loads((run / "manifest.json").read_text())
    assert (m["model_source"], m["variant"], m["profile"]) == ("imported", "imported", "official")
    assert m["fit"]["imported"]["weights"] == "ema" and m["fit"]["imported"]["epoch"] == 3
    assert "steps" not in m["fit"] and list(m["fit"]["imported"]["files"].values())[0] == io.sha256_file(ckpt)
    assert main(["report", "--runs", str(runs), "--results", str(tmp_path / "report")]) == 0
    tables = (tmp_path / "report" / "synthetic-tiny" / "tables.md").read_text()
    assert "| cellflow (imported) |" in tables and "published checkpoint imported (ema weights; checkpoint.pth" in tables
    capsys.readouterr()
    assert main(["run", "--method", "identity", *common, "--checkpoint", str(ckpt)]) != 0
    assert "method identity has no importer of published checkpoints (methods with one: cellflow, impa, phendiff)" in \
        capsys.readouterr().err
    assert main(["run", "--method", "cellflow", *common, "--checkpoint", str(ckpt), "--from-run", str(run)]) != 0
    assert "two sources of a model" in capsys.readouterr().err


def test_a_run_of_a_method_that_ignores_the_control_records_no_paired_errors_and_its_sampler(tmp_path, data_dir):
    """MiT generates from noise: its record says it is not conditioned on the control, holds no paired
    counterfactual error, and keeps the evaluations its adaptive solver took for the plan."""
    import json

    runs = tmp_path / "runs"
    tiny = ["steps=3", "width=32", "depth=2", "heads=2", "patch=8", "batch_size=4", "rtol=1e-2", "atol=1e-2",
            "curve_points=0"]
    assert main(["run", "--method", "mit", "--task", "synthetic-tiny", "--out", str(runs), "--data-dir",
                 str(data_dir), "--features", "tiny", *[a for s in tiny for a in ("--set", s)]]) == 0
    (run,) = [p for p in runs.iterdir() if not p.name.startswith(".")]
    m = json.loads((run / "manifest.json").read_text())
    assert m["conditioned_on_control"] is False and m["fit"]["sampling"]["solver"] == "dopri5"
    assert m["fit"]["sampling"]["calls"] >= 1 and m["fit"]["sampling"]["nfe_mean"] >= 6
    metrics = pd.read_csv(run / "metrics.csv")
    assert not metrics["metric"].str.startswith("paired").any() and (metrics["metric"] == "fid_o").any()
