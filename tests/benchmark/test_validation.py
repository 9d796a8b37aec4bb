"""The validation monitor: scores of a model in training from validation images only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.errors import BenchmarkError
from benchmark.metrics.evaluate import pixel_rmse
from benchmark.validation import ValidationMonitor
from methods.reference import Identity


@pytest.fixture(scope="module")
def monitor(tiny_data):
    return ValidationMonitor(tiny_data, per_perturbation=2, seed=0)


def test_the_monitor_reads_only_validation_images_of_training_perturbations(tiny_data, monitor):
    obs = tiny_data.obs.set_index("SAMPLE_KEY")
    assert set(obs.loc[list(monitor.sample_keys), "SPLIT"]) == {"val"}
    assert set(monitor.perts_gen) == set(tiny_data.train_perturbations())
    assert monitor.metric == "val_fd_morph_o"  # a distance between distributions, never the paired error


def test_identity_scores_its_paired_error_as_computed_directly(tiny_data, monitor):
    req = monitor.plan.requests
    controls = tiny_data.images[req["control_row"].to_numpy()]
    truth = np.asarray(tiny_data.counterfactual(req["control_key"].tolist(), req["CPD_NAME"].tolist()))
    direct = np.mean([np.sqrt(np.mean((c / 255.0 - t / 255.0) ** 2)) for c, t in zip(controls.astype(float), truth)])
    before = torch.get_rng_state()
    scores = monitor(Identity())
    assert scores["val_paired_rmse"] == pytest.approx(direct, rel=1e-9)
    assert scores["val_paired_rmse"] == pytest.approx(float(pixel_rmse(controls, truth).mean()))
    assert scores["val_fd_morph_o"] > 0 and np.isfinite(scores["val_fd_morph_c"])
    assert torch.equal(before, torch.get_rng_state())  # scoring leaves training's random stream alone


def test_a_monitor_needs_at_least_two_images_a_perturbation(tiny_data):
    with pytest.raises(BenchmarkError, match="at least 2"):
        ValidationMonitor(tiny_data, per_perturbation=1)
