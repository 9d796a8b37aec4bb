import pytest
import torch

from benchmark.errors import BenchmarkError
from methods.training import resolve_precision
from tests.conftest import FLOAT32_AGREEMENT


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
    """The same draws in 1 or 4 chunks give the same gradient up to float summation order. Gradients are compared,
    not weights after steps (Adam would amplify rounding wherever a gradient is near zero), and norm-wise: an entry
    near zero is a sum of cancelling terms whose reordering error is unbounded relative to the entry itself, so an
    elementwise rtol depends on the CPU's kernels (it failed on AVX2, where entries differed by up to 20x their
    size). The bound is FLOAT32_AGREEMENT, half the float32 digits; a chunk scaled wrongly or dropped is off by
    25% or more."""
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
    assert g1.abs().max() > 0
    assert abs(l1 - l4) <= FLOAT32_AGREEMENT * abs(l1)
    assert (g1 - g4).norm() <= FLOAT32_AGREEMENT * g1.norm()




def test_a_batch_that_does_not_split_is_refused():
    from methods.training import batch_record

    with pytest.raises(BenchmarkError, match="batch_size=10 does not split into 1 device"):
        batch_record(10, 4)


class Scripted:
    """A validation monitor whose scores are given in advance, one per call: where the best one is, is known."""

    metric = "val_m"
    n = 1

    def __init__(self, values: list[float]) -> None:
        self.values, self.calls = list(values), 0

    def describe(self) -> dict:
        return {"selection_metric": self.metric, "n": self.n}

    def __call__(self, method) -> dict:
        self.calls += 1
        return {self.metric: self.values[self.calls - 1]}


def _cellflow(steps: int, **kw):
    from methods.cellflow import CellFlow, CellFlowConfig

    return CellFlow(CellFlowConfig(steps=steps, checkpoint_every=100, **SMALL["cellflow"], **kw))


def _weights(m) -> list[torch.Tensor]:
    return [t.clone() for t in m.ema.state_dict().values()]


def test_select_best_keeps_the_weights_of_the_best_validation_score(train_data, tmp_path):
    """Curve at steps 0, 2, 3, 4, 6 (curve_points 3 of 6 steps); the scripted best is at step 3, so the kept weights
    are those of a run stopped at step 3 (constant learning rate: the first three steps are the same steps)."""
    monitor = Scripted([9.0, 5.0, 1.0, 4.0, 2.0])
    best = _cellflow(6, curve_points=3, select="best")
    summary = best.fit(train_data, seed=0, workdir=tmp_path / "best", monitor=monitor)
    assert [r["step"] for r in summary["curve"]] == [0, 2, 3, 4, 6]
    assert summary["selected"] == {"rule": "best", "step": 3, "metric": "val_m", "value": 1.0,
                                   "why": "lowest val_m of 5 validation points"}
    short = _cellflow(3, curve_points=0)
    short.fit(train_data, seed=0, workdir=tmp_path / "short")
    last = _cellflow(6, curve_points=0)
    last.fit(train_data, seed=0, workdir=tmp_path / "last")
    assert all(torch.equal(a, b) for a, b in zip(_weights(best), _weights(short)))
    assert not all(torch.equal(a, b) for a, b in zip(_weights(best), _weights(last)))


def test_a_curve_does_not_change_what_is_trained(train_data, tiny_data, tmp_path):
    from benchmark.validation import ValidationMonitor

    with_curve = _cellflow(6, curve_points=3)
    summary = with_curve.fit(train_data, seed=0, workdir=tmp_path / "a",
                             monitor=ValidationMonitor(tiny_data, per_perturbation=2))
    without = _cellflow(6, curve_points=3)
    without.fit(train_data, seed=0, workdir=tmp_path / "b")
    assert len(summary["curve"]) == 5 and summary["selected"]["rule"] == "last"
    assert all(torch.equal(a, b) for a, b in zip(_weights(with_curve), _weights(without)))


def test_select_best_without_a_curve_is_refused(train_data, tmp_path):
    with pytest.raises(BenchmarkError, match="select=best needs a validation curve"):
        _cellflow(2, select="best").fit(train_data, seed=0, workdir=tmp_path)


def test_a_killed_run_resumes_with_its_curve_and_best_weights(train_data, tmp_path, monkeypatch):
    from .conftest import killed_after_checkpoint

    full = _cellflow(6, curve_points=3, select="best")
    expected = full.fit(train_data, seed=0, workdir=tmp_path / "full", monitor=Scripted([9, 1, 5, 4, 3]))
    with killed_after_checkpoint(monkeypatch, 4):
        _cellflow(6, curve_points=3, select="best").fit(train_data, seed=0, workdir=tmp_path / "cut",
                                                        monitor=Scripted([9, 1, 5, 4, 3]))
    resumed = _cellflow(6, curve_points=3, select="best")
    summary = resumed.fit(train_data, seed=0, workdir=tmp_path / "cut", monitor=Scripted([3]))  # only step 6 left
    assert summary["resumed_from"] == 4 and summary["selected"]["step"] == 2
    assert [r["val_m"] for r in summary["curve"]] == [r["val_m"] for r in expected["curve"]]
    assert all(torch.equal(a, b) for a, b in zip(_weights(full), _weights(resumed)))
