"""Feature shifts: effect sizes of generated cells against those of real cells, on a planted shift."""

import numpy as np
import pytest

from benchmark.metrics.shift import effect_size, shift_rows


def test_effect_size_is_cohens_d():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1, 2, (400, 1)), rng.normal(0, 2, (400, 1))
    pooled = np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    assert effect_size(a, b)[0] == pytest.approx((a.mean() - b.mean()) / pooled)


def test_a_generator_that_moves_the_right_features_the_right_way_scores_one_and_a_reversed_one_minus_one():
    rng = np.random.default_rng(1)
    d, n = 20, 200
    shift = np.zeros(d)
    shift[:10] = [3, -2, 1.5, -1, 2.5, -3, 1.2, -1.8, 2, -1.4]  # what the perturbation does to ten features
    controls = rng.normal(size=(n, d))
    real = rng.normal(size=(n, d)) + shift
    right = rng.normal(size=(n, d)) + shift
    reversed_ = rng.normal(size=(n, d)) - shift
    names = [f"f{i}" for i in range(d)]
    perts = np.array(["P"] * n)

    def summary(gen):
        rows = shift_rows(real, perts, gen, perts, controls, names, "x", "all", "sha")
        return {r["metric"]: r["value"] for r in rows if r["perturbation"] == ""}, rows

    good, rows = summary(right)
    bad, _ = summary(reversed_)
    assert good["shift_corr"] > 0.9 and good["shift_sign"] == 1
    assert bad["shift_corr"] < -0.9 and bad["shift_sign"] == 0
    top = {r["metric"].split(":")[1] for r in rows if r["metric"].startswith("effect_real:")}
    assert top == {f"f{i}" for i in range(10)}  # the planted features are the top ten
