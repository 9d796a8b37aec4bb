"""Shared tiny fixtures: a tiny simulated screen and a tiny registered feature extractor."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import register_feature_extractor

from benchmark.metrics.features import FidelityExtractor
from benchmark.registry import FEATURES, TASKS

# Two float32 computations of the same sums in different orders agree to about sqrt(n) * eps relative to the sum of
# the magnitudes (n terms, eps = 2**-23); half the float32 digits, sqrt(eps) = 3.5e-4, bounds that with room for
# cancellation and depth. Measured norm-wise on a 2-core AMD EPYC (AVX2): 2e-7 to 1.5e-6 with 1 or 2 threads and
# oneDNN on or off, where the elementwise rtol of 1e-4 failed.
FLOAT32_AGREEMENT = float(torch.finfo(torch.float32).eps) ** 0.5
DATA = Path(__file__).parent / "data"


class TinyFeatures(FeatureExtractorBase):
    """A fixed random conv net (seeded): fast stand-in for Inception in tests."""

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)
        g = torch.Generator().manual_seed(1234)
        self.conv1 = torch.nn.Conv2d(3, 8, 3, stride=2)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, stride=2)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        self.eval().requires_grad_(False)

    @staticmethod
    def get_provided_features_list():
        return ("16",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "16"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return None

    def forward(self, x):
        x = x.float() / 255.0
        x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        x = torch.tanh(self.conv2(torch.tanh(self.conv1(x))))
        return (x.mean(dim=(2, 3)).double(),)


try:
    register_feature_extractor("tiny-test", TinyFeatures)
except Exception:  # already registered in this interpreter
    pass
FEATURES.register("tiny", lambda ctx: FidelityExtractor("tiny", TinyFeatures("tiny-test", ["16"]), "16", "tiny-test-weights"))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def tiny_data(data_dir):
    return TASKS.get("synthetic-tiny").load(data_dir)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# CellFlow's `official` (ADM) field at the tiny screen's size: the checkpoint importer maps shapes, not widths
TINY_ADM = ["width=32", "mults=1,2", "blocks=1", "attention_levels=1"]


def write_cellflux_checkpoint(path, train_data, ema: bool = True):
    """CellFlux's save_model layout (training/load_and_save.py:22-35) with its EMA wrapper (models/ema.py:18-30):
    tensors renamed (the official names are not ours), in the official registration order, which is ours."""
    from benchmark.method import config_from_overrides
    from methods.cellflow import CellFlow, CellFlowConfig

    m = CellFlow(config_from_overrides(CellFlowConfig, CellFlow.profiles["official"], TINY_ADM))
    m.networks(3, train_data.images.shape[1], train_data.embeddings.shape[1], len(train_data.perturbations))
    g = torch.Generator().manual_seed(0)
    raw = {f"official_{i}": torch.randn(v.shape, generator=g) * 0.05 for i, v in enumerate(m.model.state_dict().values())}
    params = {k for k, _ in m.model.named_parameters()}
    trainable = [f"official_{i}" for i, k in enumerate(m.model.state_dict()) if k in params]
    shadow = {f"shadow_params.{i}": raw[k] + 0.01 for i, k in enumerate(trainable)}  # the average lags the raw weights
    model = {"num_updates": torch.tensor(5), **{f"model.{k}": v for k, v in raw.items()}, **shadow} if ema else raw
    torch.save({"model": model, "optimizer": {}, "lr_schedule": {}, "epoch": 3, "scaler": {},
                "args": types.SimpleNamespace(lr=1e-4, epochs=200, output_dir="/x")}, path)
    return raw, shadow
