import dataclasses

import numpy as np
import pytest
import torch

from benchmark.errors import BenchmarkError
from benchmark.method import to_tensor
from methods.cellflow import CellFlow, CellFlowConfig
from methods.cellflow.method import ema_decay
from methods.cellflow.solver import integrate
from methods.training import Shape

from .conftest import descend, killed_after_checkpoint

SMALL = dict(width=8, mults=(1, 2), blocks=1, attention=False, batch_size=8, lr=1e-3, checkpoint_every=5, ema_decay=0.9)


@pytest.fixture(scope="module")
def fitted(train_data, tmp_path_factory):
    m = CellFlow(CellFlowConfig(steps=60, **SMALL))
    summary = m.fit(train_data, seed=0, workdir=tmp_path_factory.mktemp("cf"))
    return m, summary


def test_training_lowers_the_loss_on_a_fixed_batch(train_data, tmp_path):
    data = train_data
    m = CellFlow(CellFlowConfig(steps=1, **SMALL))
    m.fit(data, seed=0, workdir=tmp_path)
    rng = np.random.default_rng(0)
    pick = data.treated_rows[:8]
    x1 = to_tensor(data.images[pick])
    x0 = to_tensor(data.images[data.paired_controls(pick, rng)])
    emb = torch.from_numpy(data.embeddings_of(data.obs["CPD_NAME"].iloc[pick].tolist()))
    before, after = descend(lambda: m.loss(x0, x1, emb, torch.Generator().manual_seed(1)), m.model.parameters())
    assert after < 0.7 * before


def test_fit_reports_a_falling_loss(fitted):
    _, summary = fitted
    assert summary["steps"] == 60
    assert summary["loss_last_50"] < summary["loss_first_50"]


def test_ema_is_warmed_up_and_forgets_the_initial_weights(train_data, tmp_path):
    # a plain 0.999 EMA after 20 steps would still be 98% the random initial weights
    assert ema_decay(0.999, 0) == pytest.approx(0.1) and ema_decay(0.999, 10**6) == 0.999
    m = CellFlow(CellFlowConfig(steps=20, **{**SMALL, "ema_decay": 0.999}))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m.build(Shape(train_data.images.shape[-1], train_data.images.shape[1], train_data.embeddings.shape[1],
                      len(train_data.perturbations)))
    init = torch.cat([p.flatten() for p in m.model.parameters()]).clone()
    m.fit(train_data, seed=0, workdir=tmp_path)
    ema, raw = (torch.cat([p.flatten() for p in net.parameters()]) for net in (m.ema, m.model))
    assert (ema - raw).norm() < 0.5 * (ema - init).norm()


def test_output_depends_on_the_condition(fitted, make_request):
    m, _ = fitted
    a = m.generate(make_request(["taxol"] * 4), seed=0)
    b = m.generate(make_request(["chlorambucil"] * 4), seed=0)
    assert (a - b).abs().max() > 1e-3
    again = m.generate(make_request(["taxol"] * 4), seed=0)
    assert torch.equal(a, again)


def test_cfg_alpha_one_is_the_conditional_prediction_and_alpha_mixes(fitted, make_request):
    m, _ = fitted
    req = make_request(["taxol", "camptothecin"])
    x, t = req.controls, torch.tensor(0.3)
    net = m.ema.eval()
    with torch.no_grad():
        vc = net(x, t.expand(2), req.embeddings, torch.zeros(2, dtype=torch.bool))
        vu = net(x, t.expand(2), req.embeddings, torch.ones(2, dtype=torch.bool))
        assert torch.allclose(m.field(req.embeddings, alpha=1.0)(t, x), vc, atol=1e-6)
        assert torch.allclose(m.field(req.embeddings, alpha=1.2)(t, x), 1.2 * vc - 0.2 * vu, atol=1e-5)
        assert not torch.allclose(vc, vu, atol=1e-4)


def test_reverse_of_forward_returns_the_input_at_high_nfe(fitted, make_request):
    m, _ = fitted
    req = make_request(["taxol", "etoposide"])
    field = m.field(req.embeddings)
    x1, _ = integrate(field, req.controls, "rk4", nfe=200)
    back, _ = integrate(field, x1, "rk4", nfe=200, reverse=True)
    assert (x1 - req.controls).abs().max() > 1e-2  # it moved
    assert (back - req.controls).abs().max() < 1e-3
    _, frames = integrate(field, req.controls, "euler", nfe=10, frames=(0.0, 0.5, 1.0))
    assert torch.equal(frames[0.0], req.controls)


def test_killed_run_resumes_to_the_same_step_and_weights(train_data, tmp_path, monkeypatch):
    data = train_data
    full = CellFlow(CellFlowConfig(steps=20, **SMALL))
    full.fit(data, seed=3, workdir=tmp_path / "full")
    # killed mid-run, right after its step-10 checkpoint, then started again in the same workdir
    with killed_after_checkpoint(monkeypatch, 10):
        CellFlow(CellFlowConfig(steps=20, **SMALL)).fit(data, seed=3, workdir=tmp_path / "cut")
    assert (tmp_path / "cut" / "checkpoint.pt").is_file()
    resumed = CellFlow(CellFlowConfig(steps=20, **SMALL))
    summary = resumed.fit(data, seed=3, workdir=tmp_path / "cut")
    assert summary["steps"] == 20 and summary["resumed_from"] == 10
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    assert not list((tmp_path / "cut").glob("*.tmp"))




def test_compound_without_embedding_is_a_clear_error(tiny_data):
    data = dataclasses.replace(tiny_data, embeddings=tiny_data.embeddings.drop(index="taxol"))
    with pytest.raises(BenchmarkError, match="perturbation 'taxol' has no embedding"):
        data.train_data()


def test_ablation_variants_are_named():
    assert CellFlow(CellFlowConfig()).variant() == "default"
    assert CellFlow(CellFlowConfig(alpha=1.0)).variant() == "w/o CFG"
    assert CellFlow(CellFlowConfig(condition=False, alpha=1.0)).variant() == "w/o condition"
    assert CellFlow(CellFlowConfig(p_noise=0.0)).variant() == "w/o noise"
    assert CellFlow(CellFlowConfig(source="noise")).variant() == "from noise"


def test_killed_cosine_run_resumes_on_its_schedule(train_data, tmp_path, monkeypatch):
    """A real kill mid-run: the learning-rate schedule is restored with the weights, not restarted."""
    cfg = dict(SMALL, lr_schedule="cosine", warmup_steps=3)
    full = CellFlow(CellFlowConfig(steps=20, **cfg))
    full.fit(train_data, seed=3, workdir=tmp_path / "full")
    with killed_after_checkpoint(monkeypatch, 10):
        CellFlow(CellFlowConfig(steps=20, **cfg)).fit(train_data, seed=3, workdir=tmp_path / "cut")
    resumed = CellFlow(CellFlowConfig(steps=20, **cfg))
    assert resumed.fit(train_data, seed=3, workdir=tmp_path / "cut")["resumed_from"] == 10
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


def test_ot_coupling_lowers_the_pair_cost_and_keeps_pairs_within_a_plate():
    from methods.cellflow.path import ot_pairing

    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(24, 3, 8, 8, generator=g), torch.randn(24, 3, 8, 8, generator=g)
    plates = np.repeat(np.array(["P1", "P2", "P3"]), 8)
    perm = ot_pairing(x0, x1, plates)
    assert sorted(perm) == list(range(24)) and (plates[perm] == plates).all()
    cost = lambda p: (x1 - x0[p]).pow(2).sum().item()  # noqa: E731
    assert cost(perm) < cost(np.arange(24))
    # brute force on one plate of 5: nothing beats the assignment
    import itertools

    small = ot_pairing(x0[:5], x1[:5], np.zeros(5))
    best = min(itertools.permutations(range(5)), key=lambda p: (x1[:5] - x0[list(p)]).pow(2).sum().item())
    assert list(small) == list(best)


def test_bf16_sampling_keeps_a_float32_state_close_to_float32_sampling(fitted, make_request):
    m, _ = fitted
    half = CellFlow(dataclasses.replace(m.config, mixed_precision="bf16"))
    half.model, half.ema = m.model, m.ema
    req = make_request(["taxol", "etoposide"])
    full, low = m.generate(req, seed=0), half.generate(req, seed=0)
    assert low.dtype == torch.float32
    assert not torch.equal(low, full)  # autocast was on
    assert (low - full).abs().max() < 0.05


def test_pooled_ot_keeps_a_batch_of_closer_same_plate_pairs(train_data):
    from benchmark.method import as_float

    images = torch.from_numpy(np.ascontiguousarray(train_data.images)).permute(0, 3, 1, 2)
    every = as_float(images).flatten(1)
    plates = train_data.obs["BATCH"].to_numpy()

    def mean_cost(pool: int) -> float:
        m = CellFlow(CellFlowConfig(coupling="ot", ot_pool=pool, batch_size=8, flip_augment=False))
        g, rng, costs = torch.Generator().manual_seed(0), np.random.default_rng(0), []
        for _ in range(10):
            x0, x1, pos = m.draw_pairs(train_data, images, g, rng)
            assert x0.shape[0] == x1.shape[0] == len(pos) == 8
            target_rows = train_data.treated_rows[pos]
            assert torch.equal(x1.flatten(1), every[target_rows])
            control_rows = [int(torch.nonzero((every == x).all(1))[0]) for x in x0.flatten(1)]
            assert (plates[control_rows] == plates[target_rows]).all()
            costs.append((x1 - x0).pow(2).sum((1, 2, 3)).mean().item())
        return float(np.mean(costs))

    assert mean_cost(4) < 0.9 * mean_cost(1)


def test_the_quick_solver_keeps_independent_texture_that_euler_damps_at_the_same_nfe():
    """The exact field for texture independent between x0 and x1 scales it by (2t-1)/(t^2+(1-t)^2): its amplitude
    returns to 1 at t=1. With 10 field evaluations Euler ends at 0.879 of it (a blur), the midpoint rule at 0.999."""
    from methods.cellflow.method import PROFILES
    from methods.cellflow.solver import GuidedField

    class Exact(torch.nn.Module):
        def forward(self, x, t, emb, drop):
            k = (2 * t - 1) / (t**2 + (1 - t) ** 2)
            return k.view(-1, 1, 1, 1) * x

    x0 = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    gain = {}
    for solver in ("euler", PROFILES["quick"]["solver"]):
        field = GuidedField(Exact(), torch.zeros(2, 1), alpha=1.0)
        x1, _ = integrate(field, x0, solver, nfe=10)
        assert field.nfe == 10
        gain[solver] = (x1.norm() / x0.norm()).item()
    assert gain["euler"] == pytest.approx(0.879, abs=1e-3)
    assert gain["midpoint"] == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("blur", [0.0, 2.0])
def test_noise_augmentation_keeps_its_scale_and_noise_blur_makes_it_smooth(blur):
    m = CellFlow(CellFlowConfig(p_noise=0.5, noise_std=0.5, noise_blur=blur))
    x0 = torch.rand(64, 3, 32, 32)
    noise = m.augment(x0, torch.Generator().manual_seed(0)) - x0
    noised = noise.flatten(1).abs().amax(1) > 0
    assert 16 < noised.sum() < 48  # about half the images, each whole or not at all
    noise = noise[noised]
    assert noise.std(dim=(1, 2, 3)).mean().item() == pytest.approx(0.5, rel=0.02)
    # neighbouring pixels: independent for white noise; exp(-1 / (4 sigma^2)) = 0.94 after a Gaussian of sigma 2 px
    lag1 = torch.corrcoef(torch.stack([noise[..., :-1].flatten(), noise[..., 1:].flatten()]))[0, 1].item()
    assert lag1 == pytest.approx(0.0 if blur == 0 else 0.94, abs=0.05)


def test_a_flow_from_noise_never_reads_the_control_and_answers_its_batch_and_perturbation(train_data, make_request,
                                                                                         tmp_path):
    """`source=noise`: the same images whatever the control pixels (its shape only), different ones for another
    target batch or perturbation; the batch vocabulary is learnt at fit and saved with the model."""
    m = CellFlow(CellFlowConfig(steps=60, source="noise", **SMALL))
    summary = m.fit(train_data, seed=0, workdir=tmp_path / "work")
    assert summary["loss_last_50"] < summary["loss_first_50"]
    batches = list(m.config.batches)
    assert not m.conditioned_on_control and batches == sorted(set(train_data.obs["BATCH"].astype(str)))
    req = dataclasses.replace(make_request(["taxol", "etoposide", "taxol"]), target_batches=[batches[0]] * 3)
    out = m.generate(req, seed=3)
    scrambled = dataclasses.replace(req, controls=torch.rand(req.controls.shape) * 2 - 1)
    assert torch.equal(out, m.generate(scrambled, seed=3))
    other_batch = m.generate(dataclasses.replace(req, target_batches=[batches[1]] * 3), seed=3)
    other_pert = m.generate(dataclasses.replace(req, perturbations=["etoposide"] * 3,
                                                embeddings=make_request(["etoposide"] * 3).embeddings), seed=3)
    assert (out - other_batch).abs().max() > 1e-4 and (out[0] - other_pert[0]).abs().max() > 1e-4
    with pytest.raises(BenchmarkError, match="target batch 'elsewhere' was not in training"):
        m.generate(dataclasses.replace(req, target_batches=["elsewhere"] * 3), seed=3)
    with pytest.raises(BenchmarkError, match="starts from noise"):
        m.trajectory(req.controls, req.embeddings, (0.0, 1.0))
    m.save(tmp_path / "saved")
    assert torch.equal(CellFlow.from_dir(tmp_path / "saved").generate(req, seed=3), out)
