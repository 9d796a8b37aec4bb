"""Shared tiny fixtures: a tiny simulated screen and a tiny registered feature extractor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import register_feature_extractor

from benchmark.metrics.features import FidelityExtractor
from benchmark.registry import FEATURES, TASKS

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
