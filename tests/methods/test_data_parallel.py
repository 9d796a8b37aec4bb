"""Data-parallel training on CPU (gloo, two processes under torchrun): the same steps as one process.

Every process draws the whole batch from the run seed and trains on its half; the gradients are averaged. So
2 processes x B/2 train as 1 process x B, and as 1 process x B/2 x grad_accum=2, up to float summation order.
What is compared: the gradient of the last of 3 steps, all of the model's tensors as one vector, norm-wise to
FLOAT32_AGREEMENT (half the float32 digits, tests/conftest.py), and the loss history (relative 1e-4). Not
elementwise, and not per tensor: Adam's first steps move parameters with near-zero gradients by about lr whatever the
float noise in those gradients, so a tensor whose true gradient is about zero (a bias followed by a normalisation)
differs by 100% of itself between two correct runs, and an entry-wise bound depends on the CPU's kernels (1e-3 of a
tensor's largest entry failed on a 2-core AMD EPYC with AVX-512). Measured there norm-wise: 2.4e-6 (CellFlow),
1.5e-4 (IMPA), 1.5e-6 (PhenDiff); a missing or wrong average leaves the gradient of half the batch, off by 10-100%.
The gradient of step 3 is a function of every parameter the forward pass uses, so it checks the first two updates
too. Raw parameters are not compared, for the same reason as the near-zero gradients.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import FLOAT32_AGREEMENT

WORKER = Path(__file__).with_name("dp_worker.py")
ROOT = Path(__file__).parents[2]
TINY = {
    "cellflow": ["steps=3", "width=8", "mults=1,2", "blocks=1", "attention=false", "batch_size=8", "lr=1e-3",
                 "checkpoint_every=2"],
    "impa": ["steps=3", "dim_in=8", "max_conv_dim=32", "style_dim=16", "z_dim=4", "batch_size=8", "lr=1e-3",
             "checkpoint_every=2"],
    "phendiff": ["steps=3", "widths=16,32", "norm_num_groups=8", "batch_size=8", "lr=1e-3", "warmup_steps=1",
                 "checkpoint_every=2"],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fit(method: str, data_dir: Path, tmp: Path, name: str, processes: int, extra: list[str] = ()) -> tuple[dict, dict]:
    out, work = tmp / f"{name}.pt", tmp / f"work-{name}"
    args = [str(WORKER), method, str(data_dir), str(work), str(out), *TINY[method], *extra]
    launch = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port",
               str(_free_port())] if processes > 1 else [sys.executable])
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run([*launch, *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out, weights_only=True), json.loads(out.with_suffix(".json").read_text())


def assert_same(a: dict, b: dict) -> None:
    assert a["grads"].keys() == b["grads"].keys()
    assert a["grads"], "no gradients recorded"
    x = torch.cat([g.flatten() for g in a["grads"].values()])
    y = torch.cat([b["grads"][key].flatten() for key in a["grads"]])
    assert (x - y).norm() <= FLOAT32_AGREEMENT * x.norm(), ((x - y).norm() / x.norm()).item()


@pytest.mark.parametrize("method", sorted(TINY))
def test_two_processes_train_as_one_with_the_whole_batch(method, tiny_data, data_dir, tmp_path):
    one, s1 = fit(method, data_dir, tmp_path, "one", 1)
    two, s2 = fit(method, data_dir, tmp_path, "two", 2)
    assert s2["processes"] == 2 and s2["batch"] == {"devices": 2, "per_device": 4, "accumulation": 1, "effective": 8}
    assert_same(one, two)
    for key in (k for k in s1 if k.endswith("_last_50")):
        assert s1[key] == pytest.approx(s2[key], rel=1e-4), key
    if method != "impa":  # IMPA does not accumulate (its published batch fits one device)
        accumulated, s3 = fit(method, data_dir, tmp_path, "accum", 1, ["grad_accum=2"])
        assert s3["batch"] == {"devices": 1, "per_device": 4, "accumulation": 2, "effective": 8}
        assert_same(one, accumulated)


def test_a_two_process_run_resumes_from_its_checkpoint_to_the_same_weights(tiny_data, data_dir, tmp_path):
    """Stopped after the checkpoint of step 2 (written by rank 0), then run on to step 3 by both ranks: the weights
    of an uninterrupted 3-step run, bit for bit (the same ranks, the same order of sums)."""
    whole, _ = fit("cellflow", data_dir, tmp_path, "whole", 2)
    fit("cellflow", data_dir, tmp_path, "cut", 2, ["steps=2"])
    resumed, summary = fit("cellflow", data_dir, tmp_path, "cut", 2)
    assert summary["resumed_from"] == 2 and summary["steps"] == 3
    for part, state in whole["params"].items():
        for key, value in state.items():
            assert torch.equal(value, resumed["params"][part][key]), (part, key)
