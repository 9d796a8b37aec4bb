"""CellFlow's `official` profile: the official CellFlux field, training options and sampler, checked by numbers."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import integrate as quad
from scipy.special import expit
from scipy.stats import norm

from methods.cellflow import CellFlow, CellFlowConfig
from methods.cellflow.method import PROFILES
from methods.cellflow.path import sample_time
from methods.cellflow.solver import GuidedField, edm_grid, integrate
from methods.training import decide


def test_skewed_times_have_the_official_mean():
    """E[sigmoid(N(1.2, 1.2^2))] by quadrature, against 200k draws of the sampler."""
    expected, _ = quad.quad(lambda z: expit(1.2 + 1.2 * z) * norm.pdf(z), -12, 12)
    t = sample_time(200_000, "skewed", torch.Generator().manual_seed(0))
    assert abs(t.mean().item() - expected) < 0.01 and 0.715 < expected < 0.725  # 0.719 (the audit said ~0.73)
    assert t.min().item() >= 1e-4 and t.max().item() <= 1.0


def test_the_edm_heun_sampler_makes_100_field_evaluations_on_the_51_point_grid():
    grid = edm_grid(50)
    assert len(grid) == 51 and abs(grid[0].item() - (1 - 80 / 81)) < 1e-6 and grid[-1].item() == 1.0
    assert torch.all(grid[1:] > grid[:-1])
    field = GuidedField(lambda x, t, e, drop: -x, torch.zeros(2, 4), alpha=1.0)
    x1, _ = integrate(field, torch.ones(2, 3), "edm_heun", nfe=100)
    assert field.nfe == 100
    # dx/dt = -x from t0 = 1 - 80/81 to 1: Heun on this grid is accurate to 1e-4
    assert torch.allclose(x1, torch.full((2, 3), float(np.exp(-(1 - grid[0].item())))), atol=1e-4)


def test_epochs_convert_to_steps_as_the_official_loader_counts_them():
    data = SimpleNamespace(treated_rows=range(1000))
    m = CellFlow(CellFlowConfig(epochs=200, batch_size=128))
    assert m.total_steps(data) == 200 * (1000 // 128)  # full batches of treated images (drop_last)
    assert CellFlow(CellFlowConfig(steps=7)).total_steps(data) == 7


def test_per_batch_decisions_are_made_per_group_of_the_official_per_gpu_batch():
    for seed in range(5):
        use = decide(0.5, "batch", 128, torch.Generator().manual_seed(seed), group=32).view(4, 32)
        assert (use == use[:, :1]).all()  # one decision per group of 32
    groups = torch.stack([decide(0.5, "batch", 128, torch.Generator().manual_seed(s), group=32).view(4, 32)[:, 0]
                          for s in range(200)]).float()
    assert 0.4 < groups.mean() < 0.6 and (groups.std(0) > 0).all()  # groups vary independently of each other


@pytest.mark.parametrize("profile,field", [("quick", "UNet"), ("paper", "UNet"), ("official", "AdmUNet")])
def test_the_other_profiles_keep_the_compact_field(profile, field):
    """The network each profile builds, not what its dict says: only `official` builds the ADM field."""
    from benchmark.method import config_from_overrides

    method = CellFlow(config_from_overrides(CellFlowConfig, PROFILES[profile], []))
    net, _ = method.networks(3, 16, 8, 2)["field"]
    assert type(net).__name__ == field
