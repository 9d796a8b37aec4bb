"""The Method contract, checked on every registered method and on a plugin built on the training base.

Each method is fitted on the tiny screen without one compound, then must: return a JSON-able summary, generate
images of the control's shape deterministically for a seed, translate to the compound it never saw where it says
it can, come back from its saved folder (`Method.from_dir`) giving the same images, and honour what its
`Capabilities` declare.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.validation import ValidationMonitor
from benchmark.errors import BenchmarkError
from benchmark.method import (Capabilities, GenerateRequest, Method, TrainData, as_float, config_from_overrides,
                              to_tensor)
from benchmark.registry import METHODS
from benchmark.runner import draws_curve
from methods.training import Shape, TorchMethod, TrainingConfig, TrainingSet

UNSEEN = "taxol"


@dataclass
class ShiftConfig(TrainingConfig):
    steps: int = 20
    batch_size: int = 8
    lr: float = 1e-2


class Shift(TorchMethod):
    """A third party's method: only its network, loss and sampling; the training base does the rest."""

    name = "contract-shift"
    capabilities = Capabilities(unseen_perturbations=True)
    Config = ShiftConfig

    def build(self, shape: Shape) -> None:
        self.net = nn.Linear(shape.embedding_dim, shape.channels)

    def modules(self) -> dict[str, Any]:
        return {"net": self.net}

    def start_training(self, train: TrainingSet, steps: int) -> dict[str, Any]:
        self.opt = torch.optim.Adam(self.net.parameters(), lr=self.config.lr)
        return {"optimizer": self.opt}

    def train_step(self, train: TrainingSet, step: int, g: torch.Generator, np_rng: np.random.Generator) -> list[float]:
        data = train.data
        pick = data.treated_rows[torch.randint(len(data.treated_rows), (self.config.batch_size,), generator=g).numpy()]
        ctrl = data.paired_controls(pick, np_rng)
        x1, x0 = as_float(train.images[pick]), as_float(train.images[ctrl])
        emb = train.embeddings[torch.from_numpy(train.labels[pick])]
        loss = ((x0 + self.net(emb)[:, :, None, None] - x1) ** 2).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return [loss.item()]

    @torch.no_grad()
    def generate(self, request: GenerateRequest, *, seed: int) -> torch.Tensor:
        return (request.controls + self.net(request.embeddings)[:, :, None, None]).clamp(-1, 1)


# tiny settings per built-in method (steps, widths); a method not listed here runs its default profile
TINY = {
    "cellflow": ["steps=6", "width=8", "mults=1,2", "blocks=1", "attention=false", "batch_size=8", "nfe=4"],
    "impa": ["steps=4", "dim_in=8", "max_conv_dim=32", "style_dim=16", "z_dim=4", "batch_size=8", "n_z=10"],
    "phendiff": ["steps=4", "widths=16,32", "norm_num_groups=8", "batch_size=8", "inversion_steps=3",
                 "generation_steps=3"],
    "mit": ["steps=4", "width=32", "depth=2", "heads=2", "patch=8", "batch_size=8", "rtol=1e-3", "atol=1e-3"],
}


@pytest.fixture(scope="module")
def registered():
    if "contract-shift" not in METHODS.names():
        METHODS.register("contract-shift", Shift)
    return METHODS


@pytest.fixture(scope="module")
def without_unseen(tiny_data) -> TrainData:
    full = tiny_data.train_data()
    keep = (full.obs["CPD_NAME"] != UNSEEN).to_numpy()
    perts = [p for p in full.perturbations if p != UNSEEN]
    return TrainData(images=full.images[keep], obs=full.obs[keep], control=full.control, perturbations=perts,
                     embeddings=full.embeddings_of(perts), channels=full.channels, pairing=full.pairing)


@pytest.fixture(scope="module")
def requests(tiny_data):
    """Two plan requests for each of three compounds, the unseen one included, in one GenerateRequest."""
    plan = tiny_data.eval_plan()
    req = plan.requests
    perts = [UNSEEN, *[p for p in req["CPD_NAME"].unique() if p != UNSEEN][:2]]
    part = req[req["CPD_NAME"].isin(perts)].groupby("CPD_NAME").head(2)
    rows = part["control_row"].to_numpy()
    names = part["CPD_NAME"].tolist()
    request = GenerateRequest(controls=to_tensor(tiny_data.images[rows]), control_keys=part["control_key"].tolist(),
                              batches=part["BATCH"].tolist(), target_batches=part["target_batch"].tolist(),
                              perturbations=names, embeddings=torch.from_numpy(tiny_data.embed(names)))
    return plan, request


def contract_methods() -> list[str]:
    return [*METHODS.names(), "contract-shift"]


@pytest.fixture(scope="module", params=contract_methods())
def fitted(request, registered, without_unseen, tiny_data, requests, tmp_path_factory):
    cls = registered.get(request.param)
    config = config_from_overrides(cls.Config, cls.profiles.get(cls.default_profile), TINY.get(cls.name, []))
    method = cls(config)
    kwargs = {}
    if draws_curve(method):  # what the runner hands a method that draws a learning curve
        kwargs["monitor"] = ValidationMonitor(tiny_data, per_perturbation=2)
    summary = method.fit(without_unseen, seed=0, workdir=tmp_path_factory.mktemp(f"work-{cls.name}"), **kwargs)
    if cls.capabilities.reads_heldout:
        method.attach_heldout(tiny_data.heldout_pool(requests[0]))
    return method, summary


def test_fit_returns_a_summary_a_manifest_can_hold(fitted):
    """The summary goes into the run's manifest as it is: plain JSON (the manifest writer would turn a numpy
    scalar or an array into a string), so it reads back equal."""
    from benchmark.store import Manifest

    method, summary = fitted
    assert isinstance(summary, dict)
    plain = json.loads(json.dumps(summary))  # raises on a value JSON cannot hold
    written = json.dumps(Manifest(run_id="r", method=method.name, task={}, seed=0, fit=summary).to_json(), default=str)
    assert json.loads(written)["fit"] == plain
    if isinstance(method, TorchMethod):
        assert summary["steps"] > 0 and summary["batch"]["effective"] == method.config.batch_size
        assert all(np.isfinite(summary[f"{c}_last_50"]) for c in method.history_columns)


def test_a_trained_method_records_a_learning_curve_and_the_checkpoint_it_kept(fitted):
    method, summary = fitted
    if not isinstance(method, TorchMethod):
        assert draws_curve(method) is False
        return
    curve = summary["curve"]
    assert len(curve) >= 4 and curve[0]["step"] == 0 and curve[-1]["step"] == summary["steps"]
    assert all(np.isfinite(r["val_paired_rmse"]) and np.isfinite(r["val_fd_morph_o"]) for r in curve)
    assert [r["images"] for r in curve] == [r["step"] * method.config.batch_size for r in curve]
    assert summary["selected"]["rule"] == "last" and summary["selected"]["step"] == summary["steps"]


def test_generation_has_the_controls_shape_and_is_deterministic_for_a_seed(fitted, requests):
    method, _ = fitted
    _, request = requests
    a, b = method.generate(request, seed=5), method.generate(request, seed=5)
    assert tuple(a.shape) == tuple(request.controls.shape) and torch.isfinite(a).all()
    assert torch.equal(a, b)


def test_unseen_perturbations_are_translated_where_declared(fitted, requests):
    method, _ = fitted
    _, request = requests
    if not method.capabilities.unseen_perturbations:
        pytest.skip(f"{method.name} does not declare unseen perturbations")
    out = method.generate(request, seed=0)
    unseen = [i for i, p in enumerate(request.perturbations) if p == UNSEEN]
    assert unseen and torch.isfinite(out[unseen]).all()


def test_a_saved_folder_describes_itself(fitted, requests, tmp_path, tiny_data):
    method, _ = fitted
    plan, request = requests
    method.save(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text()) == (
        json.loads(json.dumps(method.config.__dict__)) if method.config is not None else {})
    again = type(method).from_dir(tmp_path)
    assert again.config == method.config
    if method.capabilities.reads_heldout:
        again.attach_heldout(tiny_data.heldout_pool(plan))
    assert torch.equal(method.generate(request, seed=3), again.generate(request, seed=3))


def test_declared_capabilities_are_honoured(fitted, requests, tiny_data):
    method, _ = fitted
    plan, request = requests
    cap = method.capabilities
    if not cap.reads_heldout:
        with pytest.raises(BenchmarkError, match="does not read held-out images"):
            method.attach_heldout(tiny_data.heldout_pool(plan))
    if cap.trajectories:
        frames = (0.0, 0.5, 1.0)
        states = method.trajectory(request.controls[:2], request.embeddings[:2], frames)
        assert sorted(states) == list(frames) and all(s.shape == request.controls[:2].shape for s in states.values())
        assert torch.allclose(states[0.0].float(), request.controls[:2], atol=1e-5)
    if cap.needs_control:  # the output follows the control it starts from
        swapped = GenerateRequest(controls=request.controls.flip(0), control_keys=request.control_keys[::-1],
                                  batches=request.batches[::-1], target_batches=request.target_batches,
                                  perturbations=request.perturbations, embeddings=request.embeddings)
        assert not torch.equal(method.generate(request, seed=0), method.generate(swapped, seed=0))
    if not method.conditioned_on_control:  # only the controls' shape is read: the same images for other pixels
        scrambled = GenerateRequest(controls=request.controls.flip(0), control_keys=request.control_keys,
                                    batches=request.batches, target_batches=request.target_batches,
                                    perturbations=request.perturbations, embeddings=request.embeddings)
        assert torch.equal(method.generate(request, seed=0), method.generate(scrambled, seed=0))
    shape = (len(tiny_data.task.channels), tiny_data.task.image_size, tiny_data.embeddings.shape[1], 7)
    for net, example in type(method)(method.config).networks(*shape).values():  # a fresh instance: builds anew
        net(*example)


def test_every_trainable_method_is_built_on_the_training_base(registered):
    for name in registered.names():
        cls = registered.get(name)
        if cls.Config is not None and hasattr(cls.Config, "steps"):
            assert issubclass(cls, TorchMethod), name
        assert issubclass(cls, Method), name
