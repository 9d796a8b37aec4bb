"""The suite's intervals, each checked against an independent computation."""

import numpy as np
import pandas as pd
import pytest

from scipy import stats

from benchmark.metrics.stats import (bootstrap_ci, friedman, normal_ci_from_bootstrap, paired_comparison, seed_test,
                                     t_half_width)


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


def test_paired_comparison_flags_a_planted_difference_and_not_a_null_one():
    """Three methods over 20 perturbations: B is A shifted down by a clear margin; C is A plus noise of mean 0."""
    rng = np.random.default_rng(0)
    base = rng.normal(50, 10, 20)
    table = pd.DataFrame({"A": base, "B": base - 5 + rng.normal(0, 1, 20), "C": base + rng.normal(0, 1, 20)},
                         index=[f"p{i}" for i in range(20)])
    out = paired_comparison({"FID": table}).set_index(["A", "B"])
    assert out.loc[("A", "B"), "verdict"] == "B better" and out.loc[("A", "B"), "p (Holm)"] < 1e-3
    assert out.loc[("A", "C"), "verdict"] == "no difference shown"
    # Holm over the three rows: the smallest p is multiplied by 3 (here the two planted ones tie for smallest)
    raw = stats.wilcoxon(table["A"] - table["B"]).pvalue
    assert out.loc[("A", "B"), "p"] == pytest.approx(raw)
    assert out.loc[("A", "B"), "p (Holm)"] == pytest.approx(min(1.0, raw * 3))
    p, n = friedman(table)
    assert p < 1e-3 and n == 20
    assert np.isnan(friedman(table[["A", "C"]])[0])  # fewer than three methods: no test


def test_seed_test_is_welchs_t_over_seed_values_and_skips_rows_without_spread():
    """A wins on every perturbation (the Wilcoxon's evidence) but its seeds overlap B's; C is a rule with no
    randomness, equal on every seed up to float rounding."""
    rng = np.random.default_rng(1)
    table = pd.DataFrame({"A": np.arange(10.0), "B": np.arange(10.0) + 1, "C": np.arange(10.0) + 2})
    seeds = {("FID", "A"): np.array([4.0, 6.5, 5.2]), ("FID", "B"): np.array([5.5, 6.9, 6.0]),
             ("FID", "C"): 6.5 + rng.normal(0, 1e-12, 3)}
    out = seed_test(paired_comparison({"FID": table}), seeds).set_index(["A", "B"])
    ab = out.loc[("A", "B")]
    assert ab["verdict"] == "A better"  # all ten perturbations
    assert ab["seeds"] == "3 v 3"
    assert ab["p (seeds)"] == pytest.approx(stats.ttest_ind(seeds[("FID", "A")], seeds[("FID", "B")],
                                                            equal_var=False).pvalue)
    assert ab["verdict (seeds)"] == "no difference shown" and ab["p (seeds, Holm)"] >= ab["p (seeds)"]
    # against a rule: one group without spread, the other's spread carries the test
    assert out.loc[("A", "C"), "p (seeds)"] == pytest.approx(
        stats.ttest_1samp(seeds[("FID", "A")], 6.5).pvalue, rel=1e-6)
    # C's rounding noise alone is not a difference a test can read
    only_c = seed_test(paired_comparison({"FID": table[["C"]].assign(E=table["C"] + 1)}),
                       {("FID", "C"): seeds[("FID", "C")], ("FID", "E"): seeds[("FID", "C")] + 1})
    assert only_c["p (seeds)"].isna().all() and only_c["verdict (seeds)"].str.startswith("untested").all()


def test_a_verdict_says_when_too_few_perturbations_differ_for_any_p_to_reach_the_level():
    """Five perturbations, B lower on every one: the exact test's p is 2 / 2^5 = 0.0625 whatever the sizes."""
    table = pd.DataFrame({"A": [10.0, 20, 30, 40, 50], "B": [1.0, 2, 3, 4, 5]})
    row = paired_comparison({"FID": table}).iloc[0]
    assert row["p"] == pytest.approx(stats.wilcoxon(table["A"] - table["B"]).pvalue) == pytest.approx(0.0625)
    assert row["verdict"] == "cannot be shown at n = 5 (smallest possible p 0.0625)"
    six = pd.DataFrame({"A": [10.0, 20, 30, 40, 50, 60], "B": [1.0, 2, 3, 4, 5, 6]})
    assert paired_comparison({"FID": six}).iloc[0]["verdict"] == "B better"  # p = 2 / 64
