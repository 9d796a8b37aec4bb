"""Fixtures shared by the method tests: the tiny screen as TrainData and translation requests."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch

from benchmark.method import GenerateRequest, TrainData, to_tensor


@pytest.fixture(scope="session")
def train_data(tiny_data) -> TrainData:
    return tiny_data.train_data()


@pytest.fixture(scope="session")
def make_request(tiny_data):
    """make_request(["taxol", ...]): the first control images translated to these perturbations."""

    def make(perts: list[str]) -> GenerateRequest:
        rows = np.flatnonzero((tiny_data.obs["STATE"] == "control").to_numpy())[: len(perts)]
        return GenerateRequest(controls=to_tensor(tiny_data.images[rows]),
                               control_keys=tiny_data.obs["SAMPLE_KEY"].iloc[rows].tolist(),
                               batches=["b"] * len(perts), target_batches=["b"] * len(perts), perturbations=perts,
                               embeddings=torch.from_numpy(tiny_data.embed(perts)))

    return make


@contextmanager
def killed_after_checkpoint(monkeypatch, at_step: int):
    """Inside: the training loop dies (KeyboardInterrupt) right after writing its checkpoint of `at_step`, as a run
    killed there would; the checkpoint writer is restored on leaving."""
    import methods.training as module

    real = module.save_checkpoint

    def save_then_die(path, parts, step, *args):
        real(path, parts, step, *args)
        if step == at_step:
            raise KeyboardInterrupt

    monkeypatch.setattr(module, "save_checkpoint", save_then_die)
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        monkeypatch.setattr(module, "save_checkpoint", real)


def descend(loss_fn, params, steps: int = 30, lr: float = 1e-3) -> tuple[float, float]:
    """Adam on one fixed batch: the loss (before, after) `steps` updates of `params`."""
    opt = torch.optim.Adam(params, lr=lr)
    before = loss_fn().item()
    for _ in range(steps):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return before, loss_fn().item()
