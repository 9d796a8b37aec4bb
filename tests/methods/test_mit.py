import dataclasses

import numpy as np
import pytest
import torch

from benchmark.errors import BenchmarkError
from methods.mit import MiT, MiTConfig
from methods.mit.method import ema_beta, ema_exponent
from methods.mit.model import sincos_table
from methods.training import TrainingSet

from .conftest import descend

SMALL = dict(width=32, depth=2, heads=2, patch=8, batch_size=8, lr=1e-3, checkpoint_every=10, rtol=1e-3, atol=1e-3)


@pytest.fixture(scope="module")
def fitted(train_data, tmp_path_factory):
    m = MiT(MiTConfig(steps=60, **SMALL))
    summary = m.fit(train_data, seed=0, workdir=tmp_path_factory.mktemp("mit"))
    return m, summary


def test_the_ema_exponent_gives_the_requested_relative_std_and_starts_as_a_copy():
    """EDM2's relation std^2 = (g + 1) / ((g + 2)^2 (g + 3)), checked on the root found; the first update copies."""
    for std in (0.01, 0.05, 0.1):
        g = ema_exponent(std)
        assert np.sqrt((g + 1) / ((g + 2) ** 2 * (g + 3))) == pytest.approx(std, rel=1e-9)
    assert ema_beta(0.01, 1) == 0.0 and 0.99 < ema_beta(0.01, 10_000) < ema_beta(0.01, 100_000) < 1


def test_the_positional_table_encodes_column_then_row_at_geometric_frequencies():
    table = sincos_table(16, 3)  # 9 patches, 4 frequencies per axis
    freqs = 1.0 / 10000 ** (np.arange(4) / 4)
    for k in range(9):
        row, col = divmod(k, 3)
        want = np.concatenate([np.sin(col * freqs), np.cos(col * freqs), np.sin(row * freqs), np.cos(row * freqs)])
        np.testing.assert_allclose(table[k], want, rtol=0, atol=1e-6)


def test_training_lowers_the_loss_on_a_fixed_batch(train_data, tmp_path):
    m = MiT(MiTConfig(steps=1, **SMALL))
    m.fit(train_data, seed=0, workdir=tmp_path)
    train = TrainingSet(train_data)
    m.start_training(train, 1)
    inputs = m.loss_inputs(train, torch.Generator().manual_seed(1))
    before, after = descend(lambda: m.field_loss(*inputs), m.field.parameters())
    assert after < 0.7 * before


def test_fit_reports_a_falling_loss(fitted):
    _, summary = fitted
    assert summary["loss_last_50"] < summary["loss_first_50"]


def test_output_depends_on_perturbation_and_batch_but_never_on_the_control(fitted, make_request):
    m, _ = fitted
    batches = list(m.config.batches)
    req = dataclasses.replace(make_request(["taxol", "etoposide"]), target_batches=[batches[0]] * 2)
    out = m.generate(req, seed=5)
    assert torch.equal(out, m.generate(dataclasses.replace(req, controls=-req.controls), seed=5))
    other_batch = m.generate(dataclasses.replace(req, target_batches=[batches[1]] * 2), seed=5)
    swapped = dataclasses.replace(req, perturbations=req.perturbations[::-1], embeddings=req.embeddings.flip(0))
    assert (out - other_batch).abs().max() > 1e-4 and (out - m.generate(swapped, seed=5)).abs().max() > 1e-4
    unknown = m.generate(dataclasses.replace(req, target_batches=["elsewhere"] * 2), seed=5)  # the null batch row
    assert unknown.shape == out.shape and not torch.equal(unknown, out)
    record = m.sampling_record()  # dopri5 chose its steps: the evaluations of every call since the last record
    assert record["solver"] == "dopri5" and record["calls"] == 5 and record["nfe_min"] >= 6
    assert m.sampling_record() == {}


def test_guidance_one_is_the_conditional_field_and_other_weights_mix_it_with_the_null_one(fitted, make_request):
    m, _ = fitted
    req = make_request(["taxol"])
    plain = m.generate(req, seed=1)
    assert torch.equal(plain, m.generate(req, seed=1))  # seeded
    guided = MiT(dataclasses.replace(m.config, guidance=3.0))
    guided.field, guided.ema, guided.shape = m.field, m.ema, m.shape
    assert (guided.generate(req, seed=1) - plain).abs().max() > 1e-4


def test_a_one_hot_table_refuses_an_unseen_perturbation(train_data, make_request, tmp_path):
    m = MiT(MiTConfig(steps=2, encoding="onehot", **SMALL))
    m.fit(train_data, seed=0, workdir=tmp_path)
    assert m.config.perturbations == tuple(train_data.perturbations)
    assert m.generate(make_request(["taxol"]), seed=0).shape[0] == 1
    with pytest.raises(BenchmarkError, match="'nowhere' was not in training"):
        m._perturbation(["nowhere"], torch.zeros(1, 4))
