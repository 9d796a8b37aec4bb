import pytest
import torch

from benchmark.method import to_tensor
from methods.phendiff import PhenDiff, PhenDiffConfig
from methods.phendiff.model import CONTROL, NULL, PERTURBATION

from .conftest import descend

SMALL = dict(widths=(16, 32), layers_per_block=1, norm_num_groups=8, batch_size=8, lr=1e-3, warmup_steps=5,
             checkpoint_every=5, inversion_steps=10, generation_steps=10)


@pytest.fixture(scope="module")
def fitted(train_data, tmp_path_factory):
    m = PhenDiff(PhenDiffConfig(steps=80, **SMALL))
    summary = m.fit(train_data, seed=0, workdir=tmp_path_factory.mktemp("pd"))
    return m, summary


def test_schedule_is_the_published_one():
    s = PhenDiff(PhenDiffConfig()).scheduler()
    assert s.config.num_train_timesteps == 3000 and s.config.prediction_type == "v_prediction"
    assert s.config.timestep_spacing == "trailing" and s.config.rescale_betas_zero_snr
    assert s.alphas_cumprod[-1] < 1e-6  # zero terminal SNR
    s.set_timesteps(100)
    assert int(s.timesteps[0]) == 2999


def test_training_lowers_the_loss_on_a_fixed_batch(train_data, tmp_path):
    m = PhenDiff(PhenDiffConfig(steps=1, **SMALL))
    m.fit(train_data, seed=0, workdir=tmp_path)
    x0 = to_tensor(train_data.images[:8])
    emb = torch.from_numpy(train_data.embeddings_of([train_data.perturbations[0]] * 8))
    kind = torch.full((8,), PERTURBATION)
    before, after = descend(lambda: m.loss(x0, emb, kind, torch.Generator().manual_seed(1)), m.model.parameters())
    assert after < 0.7 * before


def test_fit_reports_a_falling_loss(fitted):
    _, summary = fitted
    assert summary["steps"] == 80
    assert summary["loss_last_50"] < summary["loss_first_50"]


class GaussianDenoiser:
    """The exact v-prediction when every pixel is N(mu, s^2): E[x0 | x_t] is linear in x_t."""

    def __init__(self, scheduler, mu: float, s: float) -> None:
        self.a, self.mu, self.s2 = scheduler.alphas_cumprod, mu, s * s

    def __call__(self, x, t, emb, kind):
        a = self.a[t.long()].view(-1, 1, 1, 1).to(x)
        x0 = self.mu + a.sqrt() * self.s2 / (a * self.s2 + 1 - a) * (x - a.sqrt() * self.mu)
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        return a.sqrt() * eps - (1 - a).sqrt() * x0


def test_inversion_is_exact_in_the_limit_for_the_exact_denoiser():
    """Tests the plumbing (timestep pairing, the latent used as is) apart from any training error."""
    m = PhenDiff(PhenDiffConfig())
    m._net = lambda: GaussianDenoiser(m.scheduler(), mu=0.1, s=0.2)
    x = 0.1 + 0.2 * torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    emb, kind = torch.zeros(4, 2), torch.full((4,), CONTROL)
    errors = {}
    for steps in (10, 100, 1000):
        latent = m.invert(x, emb, kind, steps=steps)
        errors[steps] = (m.regenerate(latent, emb, kind, steps=steps, guidance=1.0) - x).abs().max().item()
    assert errors[1000] < 2e-2 and errors[1000] < errors[100] < errors[10]
    assert (latent - x).std() > 0.5  # it did go to noise


def test_trained_model_reconstructs_a_control_closer_than_any_other_cell(fitted, make_request):
    """Stated bound for a barely trained model (80 steps), 25 + 25 steps: RMSE below half the
    RMSE between two different control cells. A fully trained model does far better."""
    m, _ = fitted
    req = make_request(["taxol"] * 4)
    kind = torch.full((4,), CONTROL)
    back = m.regenerate(m.invert(req.controls, req.embeddings, kind, steps=25), req.embeddings, kind, steps=25)
    rmse = (back - req.controls).pow(2).mean().sqrt().item()
    spread = (req.controls - req.controls.roll(1, 0)).pow(2).mean().sqrt().item()
    assert rmse < 0.5 * spread


def test_outputs_differ_between_perturbations_and_are_deterministic(fitted, make_request):
    m, _ = fitted
    a = m.generate(make_request(["taxol"] * 3), seed=0)
    b = m.generate(make_request(["chlorambucil"] * 3), seed=0)
    assert a.shape == (3, 3, 32, 32) and a.abs().max() <= 1
    assert (a - b).abs().max() > 1e-3
    assert torch.equal(a, m.generate(make_request(["taxol"] * 3), seed=0))


def test_classes_control_and_null_are_distinct_conditions(fitted, make_request):
    m, _ = fitted
    req = make_request(["taxol"] * 2)
    net = m._net()
    t = torch.full((2,), 1500)
    with torch.no_grad():
        outs = [net(req.controls, t, req.embeddings, torch.full((2,), k)) for k in (PERTURBATION, CONTROL, NULL)]
    assert all((outs[i] - outs[j]).abs().max() > 1e-5 for i, j in ((0, 1), (0, 2), (1, 2)))


def test_killed_run_resumes_to_the_same_weights(train_data, tmp_path, monkeypatch):
    from .conftest import killed_after_checkpoint

    full = PhenDiff(PhenDiffConfig(steps=10, **SMALL))
    full.fit(train_data, seed=3, workdir=tmp_path / "full")
    with killed_after_checkpoint(monkeypatch, 5):  # mid-run, right after its step-5 checkpoint
        PhenDiff(PhenDiffConfig(steps=10, **SMALL)).fit(train_data, seed=3, workdir=tmp_path / "cut")
    resumed = PhenDiff(PhenDiffConfig(steps=10, **SMALL))
    summary = resumed.fit(train_data, seed=3, workdir=tmp_path / "cut")
    assert summary["steps"] == 10 and summary["resumed_from"] == 5
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(full.ema.shadow_params, resumed.ema.shadow_params):
        assert torch.equal(a, b)




def test_the_official_null_condition_is_a_zero_class_embedding():
    from methods.phendiff.model import ClassEncoder

    enc = ClassEncoder(4, 8, zero_null=True)
    with torch.no_grad():
        enc.null.fill_(1.0)  # ignored: the published null is no class embedding at all
    c = enc(torch.randn(3, 4), torch.tensor([PERTURBATION, CONTROL, NULL]))
    assert torch.equal(c[2], torch.zeros(8)) and c[0].abs().sum() > 0 and not enc.null.requires_grad
    assert ClassEncoder(4, 8)(torch.randn(1, 4), torch.tensor([NULL])).abs().sum() == 0  # learned, zero at init


def test_official_options_train_at_the_resized_size_and_translate_back(train_data, make_request, tmp_path, monkeypatch):
    seen, uncond = [], []
    m = PhenDiff(PhenDiffConfig(steps=3, resize=48, mixed_precision="fp16", p_uncond=0.5, p_uncond_per="batch",
                                null_condition="zero", **{**SMALL, "inversion_steps": 2, "generation_steps": 2}))
    real_inputs = m.loss_inputs

    def spy(x0, emb, kind, g):
        seen.append(tuple(x0.shape[-2:]))
        uncond.append(set((kind == NULL).tolist()))
        return real_inputs(x0, emb, kind, g)

    monkeypatch.setattr(m, "loss_inputs", spy)
    summary = m.fit(train_data, seed=0, workdir=tmp_path)
    assert seen == [(48, 48)] * 3 and summary["precision"] == "fp16"
    assert all(len(u) == 1 for u in uncond)  # the whole batch is unconditional, or none of it
    out = m.generate(make_request(["taxol"] * 2), seed=0)
    assert out.shape == (2, 3, 32, 32) and out.abs().max() <= 1
