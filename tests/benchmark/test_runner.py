"""The runner under signals: SIGTERM (scancel, preemption) and SIGINT end a run cleanly."""

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from benchmark.cli import main
from benchmark.store import RunStore

# A method whose fit blocks, so the signal surely arrives mid-run; registered in the child process only.
CHILD = """
import sys, time
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
