"""A tiny CellFlow run through the CLI, shared by the tests that read stored runs back."""

import pytest

from benchmark.cli import main

TINY_CELLFLOW = ["--set", "steps=4", "--set", "width=8", "--set", "mults=1,2", "--set", "attention=false",
                 "--set", "batch_size=4", "--set", "nfe=2"]


@pytest.fixture(scope="session")
def cellflow_run(tmp_path_factory, data_dir):
    runs = tmp_path_factory.mktemp("runs")
    assert main(["run", "--method", "cellflow", "--task", "synthetic-tiny", "--out", str(runs), "--data-dir",
                 str(data_dir), "--features", "tiny", *TINY_CELLFLOW]) == 0
    (run,) = [p for p in runs.iterdir() if not p.name.startswith(".")]
    return run
