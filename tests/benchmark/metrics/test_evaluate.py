"""`evaluate`: what it extracts, and that a cached set holds the features of the images it stands for."""

import json

import numpy as np

from benchmark.metrics.evaluate import FeatureCache, channel_views, evaluate
from benchmark.metrics.features import ExtractorContext
from benchmark.registry import FEATURES


class Counting:
    """The tiny extractor, noting how many images each call was given."""

    def __init__(self, ext, calls: list) -> None:
        self.ext, self.calls = ext, calls

    def __getattr__(self, name):
        return getattr(self.ext, name)

    def __call__(self, images, what="images"):
        self.calls.append((what, len(images)))
        return self.ext(images, what=what)


def test_each_plan_control_is_extracted_once_and_every_request_keeps_its_controls_features(tiny_data, tmp_path,
                                                                                         monkeypatch):
    plan = tiny_data.eval_plan()
    control_rows = plan.requests["control_row"].to_numpy()
    assert len(np.unique(control_rows)) < len(control_rows)  # the case that matters: controls repeat in the plan
    make, get, calls = FEATURES.get("tiny"), FEATURES.get, []
    monkeypatch.setattr(FEATURES, "get", lambda name: (lambda ctx: Counting(make(ctx), calls)) if name == "tiny"
                        else get(name))
    ctx = ExtractorContext(cache_dir=tmp_path, channels=tiny_data.task.channels)
    generated = tiny_data.images[plan.reference["row"].to_numpy()[: len(plan.requests)]]
    evaluate(tiny_data, plan, generated, ["tiny"], ctx, FeatureCache(tmp_path / "features"), {"plan": plan.digest()})

    sizes = [n for what, n in calls if what == "the plan's control images"]
    assert sizes and set(sizes) == {len(np.unique(control_rows))}
    stored = [p for p in (tmp_path / "features").glob("*.json") if json.loads(p.read_text()).get("set") == "plan controls"]
    assert stored
    direct = make(ctx)
    views = dict(channel_views(direct, tiny_data.task.channel_rule, tiny_data.images[control_rows]))
    for p in stored:
        got = np.load(p.with_suffix(".npy"))
        np.testing.assert_allclose(got, direct(views[json.loads(p.read_text())["view"]]), rtol=1e-5, atol=1e-6)
