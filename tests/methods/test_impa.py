import numpy as np
import pytest
import torch

from benchmark.method import to_tensor
from methods.impa import IMPA, IMPAConfig
from methods.impa.networks import Discriminator, Generator, StyleEncoder

SMALL = dict(dim_in=8, max_conv_dim=32, style_dim=16, z_dim=4, batch_size=8, lr=1e-3, checkpoint_every=5, ds_iter=20)


@pytest.fixture(scope="module")
def fitted(train_data, tmp_path_factory):
    m = IMPA(IMPAConfig(steps=30, **SMALL))
    summary = m.fit(train_data, seed=0, workdir=tmp_path_factory.mktemp("impa"))
    return m, summary


@pytest.mark.parametrize("size", [64, 96, 128])
def test_discriminator_gives_one_unscrambled_logit_per_perturbation(size):
    torch.manual_seed(0)
    d = Discriminator(3, size, n_outputs=5, dim_in=4, max_dim=16).eval()
    x = torch.randn(3, 3, size, size)
    logits = d.logits(x)
    assert logits.shape == (3, 5)
    # each image's logits do not depend on the rest of the batch (the published 128 px head mixes them)
    alone = torch.cat([d.logits(x[i:i + 1]) for i in range(3)])
    assert torch.allclose(logits, alone, atol=1e-5)
    y = torch.tensor([4, 0, 2])
    assert torch.equal(d(x, y), logits[torch.arange(3), y])


@pytest.mark.parametrize("size", [32, 48, 96])
def test_generator_and_style_encoder_shapes(size):
    x = torch.randn(2, 5, size, size)
    assert Generator(5, size, 8, 32, 16)(x, torch.randn(2, 16)).shape == x.shape
    assert StyleEncoder(5, size, 8, 32, 16)(x).shape == (2, 16)


def fixed_batch(m, data):
    rng = np.random.default_rng(0)
    pick = data.treated_rows[:8]
    x_trt = to_tensor(data.images[pick])
    x_ctrl = to_tensor(data.images[data.paired_controls(pick, rng)])
    names = data.obs["CPD_NAME"].iloc[pick].tolist()
    y = torch.tensor([data.perturbations.index(p) for p in names])
    emb = torch.from_numpy(data.embeddings_of(names))
    z = torch.randn(3, 8, m.config.z_dim, generator=torch.Generator().manual_seed(1))
    return x_ctrl, x_trt, y, emb, z


def test_one_step_lowers_the_discriminator_and_generator_losses(train_data, tmp_path):
    m = IMPA(IMPAConfig(steps=1, **SMALL))
    m.fit(train_data, seed=0, workdir=tmp_path)
    x_ctrl, x_trt, y, emb, z = fixed_batch(m, train_data)
    d_params = m.nets["discriminator"].parameters()
    g_params = [p for k in ("generator", "style_encoder", "mapping") for p in m.nets[k].parameters()]
    for params, loss_fn in ((d_params, lambda: m.d_loss(x_ctrl, x_trt.clone(), y, emb, z[0])[0]),
                            (g_params, lambda: m.g_loss(x_ctrl, y, emb, z[1], z[2], 0.5)[0])):
        opt = torch.optim.Adam(params, lr=1e-4, betas=(0.0, 0.99))
        before = loss_fn()
        opt.zero_grad()
        before.backward()
        opt.step()
        assert loss_fn().item() < before.item()


def test_outputs_differ_between_perturbations(fitted, make_request):
    m, _ = fitted
    a = m.generate(make_request(["taxol"] * 3), seed=0)
    b = m.generate(make_request(["chlorambucil"] * 3), seed=0)
    assert a.shape == (3, 3, 32, 32)
    assert (a - b).abs().max() > 1e-3
    assert torch.equal(a, m.generate(make_request(["taxol"] * 3), seed=0))


def test_inference_z_is_the_mean_of_draws_or_their_quantile():
    m = IMPA(IMPAConfig(z_dim=16))
    z = m.inference_z(seed=0)
    draws = torch.randn(100, 16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(z, draws.mean(0)) and z.abs().max() < 0.5
    q = IMPA(IMPAConfig(z_dim=16, inference_z="quantile")).inference_z(seed=0)
    assert torch.allclose(q, draws.quantile(0.75, dim=0)) and (q > 0).all()


def test_resume_continues_the_diversity_schedule_and_weights(train_data, tmp_path, monkeypatch):
    from .conftest import killed_after_checkpoint

    full = IMPA(IMPAConfig(steps=10, **SMALL))
    s_full = full.fit(train_data, seed=3, workdir=tmp_path / "full")
    with killed_after_checkpoint(monkeypatch, 5):  # mid-run, right after its step-5 checkpoint
        IMPA(IMPAConfig(steps=10, **SMALL)).fit(train_data, seed=3, workdir=tmp_path / "cut")
    state = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 5 and state["history"][-1][3] == pytest.approx(1 - 4 / 20)  # the weight of step 4
    resumed = IMPA(IMPAConfig(steps=10, **SMALL))
    s_res = resumed.fit(train_data, seed=3, workdir=tmp_path / "cut")
    assert s_res["steps"] == 10 and s_res["resumed_from"] == 5 and s_res["lambda_ds_last_50"] == pytest.approx(np.mean([1 - i / 20 for i in range(10)]))
    assert s_res["d_loss_last_50"] == s_full["d_loss_last_50"]
    for a, b in zip(full.nets.state_dict().values(), resumed.nets.state_dict().values()):
        assert torch.equal(a, b)




def test_official_inference_z_is_drawn_per_image():
    z = IMPA(IMPAConfig(z_dim=16, inference_z_per="image")).inference_z(seed=0, n=3)
    draws = torch.randn(3, 100, 16, generator=torch.Generator().manual_seed(0))
    assert z.shape == (3, 16) and torch.allclose(z, draws.mean(1)) and not torch.allclose(z[0], z[1])
    shared = IMPA(IMPAConfig(z_dim=16)).inference_z(seed=0, n=3)
    assert torch.equal(shared[0], shared[2])


def test_official_epochs_count_passes_over_the_controls_and_any_batch_pairing_trains(train_data, tmp_path):
    m = IMPA(IMPAConfig(epochs=0.5, pairing="any-batch", inference_z_per="image", **SMALL))
    summary = m.fit(train_data, seed=0, workdir=tmp_path)
    n_ctrl = len(train_data.control_rows)
    assert summary["steps"] == round(0.5 * (n_ctrl // SMALL["batch_size"])) and summary["epoch_rows"] == n_ctrl
