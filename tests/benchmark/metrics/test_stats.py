"""The suite's intervals, each checked against an independent computation."""

import numpy as np
import pandas as pd
import pytest

from benchmark.metrics.stats import bootstrap_ci, normal_ci_from_bootstrap, t_half_width


def test_bootstrap_interval_contains_the_estimate_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.random(50) < 0.7, rng.random(800) < 0.7
    for ok in (small, large):
        lo, hi = bootstrap_ci(ok, seed=0)
        assert lo <= ok.mean() <= hi
    w_small = np.subtract(*bootstrap_ci(small, 0)[::-1])
    w_large = np.subtract(*bootstrap_ci(large, 0)[::-1])
    assert w_large < w_small / 2.5  # ~ 1/sqrt(n): sqrt(800/50) = 4
    assert bootstrap_ci(small, 0) == bootstrap_ci(small, 0)  # seeded


def test_seed_interval_is_the_t_interval():
    v = pd.Series([1.0, 2.0, 3.0])
    assert t_half_width(v) == pytest.approx(4.302652729911275 * 1.0 / 3 ** 0.5)  # t(0.975, 2) * sd / sqrt(n)
    assert np.isnan(t_half_width(pd.Series([1.0])))


def test_the_fid_interval_is_the_estimate_plus_minus_196_bootstrap_sd():
    reps = np.array([10.0, 12.0, 14.0])  # sd (ddof 1) = 2
    assert normal_ci_from_bootstrap(11.0, reps) == pytest.approx((11.0 - 3.92, 11.0 + 3.92))
