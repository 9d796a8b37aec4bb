import pytest
import torch

from benchmark.errors import BenchmarkError
from methods.training import resolve_precision


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_the_cpu_has_it_in_hardware(monkeypatch, native):
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: native, raising=False)
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if native else "no")
    assert resolve_precision("no", cpu) == "no" and resolve_precision("bf16", cpu) == "bf16"


SMALL = {"cellflow": dict(width=8, mults=(1, 2), blocks=1, attention=False, batch_size=8, lr=1e-3, ema_decay=0.9),
         "phendiff": dict(widths=(16, 32), layers_per_block=1, norm_num_groups=8, batch_size=8, lr=1e-3,
                          warmup_steps=1)}


@pytest.mark.parametrize("method", ["cellflow", "phendiff"])
def test_gradient_accumulation_gives_the_gradient_of_the_unsplit_batch(method, train_data, tmp_path):
    """The same draws in 1 or 4 chunks give the same gradient up to float summation order (rtol 1e-4: Adam's
    steps would amplify those rounding differences wherever a gradient is near zero, so gradients are compared, not
    weights after steps)."""
    from benchmark.registry import METHODS
    from methods.training import accumulate

    cls = METHODS.get(method)
    m = cls(cls.Config(steps=1, grad_accum=2, **SMALL[method]))
    summary = m.fit(train_data, seed=0, workdir=tmp_path)
    assert summary["batch"] == {"devices": 1, "per_device": 4, "accumulation": 2, "effective": 8}
    x = torch.from_numpy(train_data.images[train_data.treated_rows[:8]]).permute(0, 3, 1, 2).float() / 127.5 - 1
    emb = torch.randn(8, train_data.embeddings.shape[1])
    g = torch.Generator().manual_seed(0)
    if method == "cellflow":
        inputs, loss_fn = m.loss_inputs(x.flip(0), x, emb, g), m.field_loss
    else:
        inputs, loss_fn = m.loss_inputs(x, emb, torch.zeros(8, dtype=torch.long), g), m.denoiser_loss
    grads = []
    for chunks in (1, 4):
        m.model.zero_grad()
        loss = accumulate(loss_fn, inputs, chunks, torch.amp.GradScaler("cpu", enabled=False))
        grads.append((loss, torch.cat([p.grad.flatten() for p in m.model.parameters() if p.grad is not None])))
    (l1, g1), (l4, g4) = grads
    assert torch.allclose(l1, l4, rtol=1e-5) and g1.abs().max() > 0
    assert torch.allclose(g1, g4, rtol=1e-4, atol=1e-7 * g1.abs().max().item())


def test_a_batch_that_does_not_split_is_refused():
    from methods.training import batch_record

    with pytest.raises(BenchmarkError, match="batch_size=10 does not split into 1 device"):
        batch_record(10, 4)
