"""Learnability, a contract over every trainable method: on a known-answer task a correct implementation must beat
copying the control by a stated margin within a small budget, and the same check must fail for a model that ignores
the condition or whose output is detached from its training. A method that does not learn within the budget yet is
skipped with what was measured (docs/learnability.md), so the gap stays in view.

The task (`synthetic-learn`) has two compounds with strong, opposite effects (taxol: brighter, bundled tubulin and
larger cells; emetine: dimmer stains, smaller cells), so a model blind to the condition can at best learn their
average, about no change. The scores are the suite's own (`evaluate` in the morphology space): the paired pixel
error and morphology distance to the true counterfactuals (for methods conditioned on the control), and the
per-perturbation Fréchet distance in morphology space (for every method).
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from benchmark.generation import generate_all
from benchmark.method import GenerateRequest, Method, config_from_overrides
from benchmark.metrics.evaluate import FeatureCache, evaluate
from benchmark.metrics.features import ExtractorContext
from benchmark.registry import METHODS, TASKS
from methods.training import TorchMethod

TASK = "synthetic-learn"
MARGIN = 0.85  # a method's error at most this share of copying the control's
# small budgets that a correct implementation clears on 2 CPU cores in about a minute; a method that does not yet is
# skipped with what was measured (docs/learnability.md), so that the gap stays in view
BUDGET = {"cellflow": ["steps=150", "width=16"]}
NOT_YET = {
    "impa": "200 steps (2.3 min beside other jobs): washed-out images, FID_c [morphology] 390 against identity's 20 "
            "(114 at lr 1e-3)",
    "mit": "300 steps (2.5 min beside other jobs): FID_c [morphology] 102 against identity's 20 (72 at lr 4e-3); a "
           "flow from noise needs far more steps than one from the control",
    "phendiff": "200 steps take 5 minutes on 2 cores (beside other jobs), beyond this check's budget, and leave the "
                "paired morphology distance 11% below identity's, short of the margin",
}


@pytest.fixture(scope="module")
def learn(data_dir, tmp_path_factory):
    """The task, its test plan, a scorer (the suite's metric rows of a set of generated images), and identity's
    scores (the controls copied)."""
    data = TASKS.get(TASK).load(data_dir)
    plan = data.eval_plan()
    cache_dir = tmp_path_factory.mktemp("learn-cache")
    ctx = ExtractorContext(cache_dir=cache_dir, channels=data.task.channels)

    def score(images: np.ndarray, conditioned: bool = True) -> dict[str, float]:
        rows, _ = evaluate(data, plan, images, ["morphology"], ctx, FeatureCache(cache_dir),
                           {"task": TASK, "plan": plan.digest()}, paired=conditioned)
        overall = rows[rows["perturbation"].isna() | (rows["perturbation"] == "")]
        return {f"{m} [{s}]": v for m, s, v in zip(overall["metric"], overall["feature_space"], overall["value"])}

    controls = data.images[plan.requests["control_row"].to_numpy()]
    return data, plan, score, score(np.asarray(controls))


def build(name: str) -> Method:
    cls = METHODS.get(name)
    base = cls.profiles.get(cls.default_profile)
    return cls(config_from_overrides(cls.Config, base, ["curve_points=0", *BUDGET.get(name, [])]))


def misses(method: Method, images: np.ndarray, learn) -> list[str]:
    """What the images fail to beat identity on by the margin (empty: the method learnt the known answer)."""
    score, identity = learn[2], learn[3]
    scores = score(images, method.conditioned_on_control)
    keys = ["fid_c [morphology]"] + (["paired_rmse [pixels]", "paired_morph [morphology]"]
                                     if method.conditioned_on_control else [])
    return [f"{k}: {scores[k]:.4g} against identity's {identity[k]:.4g}" for k in keys
            if not scores[k] <= MARGIN * identity[k]]


def generated(method: Method, learn) -> np.ndarray:
    data, plan = learn[0], learn[1]
    return generate_all(method, data, plan, seed=0, batch=64)


@pytest.fixture(scope="module")
def cellflow(learn, tmp_path_factory):
    method = build("cellflow")
    method.fit(learn[0].train_data(), seed=0, workdir=tmp_path_factory.mktemp("learn-cellflow"))
    return method


def trainable() -> list:
    names = [n for n in METHODS.names() if issubclass(METHODS.get(n), TorchMethod)]
    return [pytest.param(n, marks=pytest.mark.skip(reason=f"{n} does not learn the known answer in a CI budget "
                                                          f"yet: {NOT_YET[n]} (issue 36)")) if n in NOT_YET else n
            for n in names]


@pytest.mark.parametrize("name", trainable())
def test_every_trainable_method_learns_the_known_answer_within_a_small_budget(name, learn, cellflow, tmp_path):
    method = cellflow if name == "cellflow" else build(name)
    if method is not cellflow:
        method.fit(learn[0].train_data(), seed=0, workdir=tmp_path)
    failed = misses(method, generated(method, learn), learn)
    assert failed == [], f"{name} did not beat copying the control by {1 - MARGIN:.0%}: " + "; ".join(failed)


class BlindAtGeneration(Method):
    """A fitted method asked for every perturbation with the same (zero) embedding."""

    name = "blind"

    def __init__(self, inner: Method) -> None:
        super().__init__(None)
        self.inner = inner

    @property
    def conditioned_on_control(self) -> bool:
        return self.inner.conditioned_on_control

    def fit(self, *a, **k):  # pragma: no cover - fitted already
        raise AssertionError("fitted already")

    def generate(self, request: GenerateRequest, *, seed: int):
        return self.inner.generate(dataclasses.replace(request, embeddings=request.embeddings * 0), seed=seed)


def test_the_check_fails_for_a_model_blind_to_the_condition_and_for_one_detached_from_training(learn, cellflow,
                                                                                              tmp_path):
    """CellFlow trained and asked with the condition erased (one embedding for every compound), or its trained
    weights replaced by freshly built ones, does not pass the check the trained model passes."""
    train = learn[0].train_data()
    blind = build("cellflow")
    blind.fit(dataclasses.replace(train, embeddings=np.zeros_like(train.embeddings)), seed=0, workdir=tmp_path)
    assert misses(blind, generated(BlindAtGeneration(blind), learn), learn) != []
    detached = copy.deepcopy(cellflow)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        detached.build(detached.shape)  # what training produced is thrown away
    assert misses(detached, generated(detached, learn), learn) != []
