import numpy as np
import pytest
import torch
from scipy import linalg
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric

from benchmark.errors import BenchmarkError
from benchmark.metrics.distances import fid, kid
from benchmark.metrics.evaluate import distribution_rows


def scipy_fid(a, b):
    """Independent textbook FID with scipy's matrix square root."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_of_a_set_with_itself_is_zero(rng):
    a = rng.normal(size=(200, 16))
    assert abs(fid(a, a)) < 1e-6
    small = rng.normal(size=(30, 64))  # the n < d path
    assert abs(fid(small, small)) < 1e-6


@pytest.mark.parametrize("n,d", [(300, 16), (40, 128), (25, 2048)])
def test_fid_equals_torch_fidelity_and_scipy(rng, n, d):
    a = rng.normal(size=(n, d))
    b = rng.normal(loc=0.3, scale=1.2, size=(n + 7, d))
    s1 = fid_features_to_statistics(torch.from_numpy(a))
    s2 = fid_features_to_statistics(torch.from_numpy(b))
    theirs = fid_statistics_to_metric(s1, s2, verbose=False)["frechet_inception_distance"]
    ours = fid(a, b)
    assert ours == pytest.approx(theirs, rel=1e-6, abs=1e-6)
    if d <= 128:
        assert ours == pytest.approx(scipy_fid(a, b), rel=1e-5)


def test_fid_detects_a_shift(rng):
    a = rng.normal(size=(300, 8))
    assert fid(a, a + 1.0) == pytest.approx(8.0, rel=0.01)


def test_kid_equals_torch_fidelity_and_hand_computation(rng):
    a, b = rng.normal(size=(50, 10)), rng.normal(loc=0.5, size=(60, 10))
    mean, std, size = kid(a, b, seed=3, subset_size=40)
    ref = kid_features_to_metric(torch.from_numpy(a), torch.from_numpy(b), kid_subsets=100, kid_subset_size=40,
                                 rng_seed=3, verbose=False)
    assert mean == pytest.approx(ref["kernel_inception_distance_mean"])
    assert std == pytest.approx(ref["kernel_inception_distance_std"])
    assert size == 40
    # with the subset = the whole (equal-size) sets, KID is the unbiased MMD^2 with k(x,y) = (x.y/d + 1)^3
    a2, b2 = a[:40], b[:40]
    m = 40
    k = lambda x, y: (x @ y.T / x.shape[1] + 1) ** 3
    kxx, kyy, kxy = k(a2, a2), k(b2, b2), k(a2, b2)
    mmd = (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
    assert kid(a2, b2, seed=0)[0] == pytest.approx(mmd, rel=1e-9)


def test_kid_of_whole_sets_has_no_spread_over_subsets(rng):
    """Subsets as large as both sets are the whole sets: one value, no std (it was 1e-16, posing as a spread);
    a larger set of one side still gives subsets that differ, and a spread."""
    a, b = rng.normal(size=(30, 5)), rng.normal(loc=0.3, size=(30, 5))
    assert np.isnan(kid(a, b, seed=0)[1])
    c = rng.normal(loc=0.3, size=(45, 5))
    mean, std, size = kid(a, c, seed=0)
    assert size == 30 and std > 1e-6 * abs(mean)


def test_kid_c_of_a_class_does_not_change_when_another_class_is_added(rng):
    feats_real = {"v": rng.normal(size=(90, 6))}
    feats_gen = {"v": rng.normal(loc=0.2, size=(90, 6))}
    labels = np.repeat(["A", "B", "C"], 30)
    two = np.flatnonzero(labels != "C")
    rows2 = distribution_rows({"v": feats_real["v"][two]}, {"v": feats_gen["v"][two]}, labels[two], labels[two], "x", "r", "h", 0)
    rows3 = distribution_rows(feats_real, feats_gen, labels, labels, "x", "r", "h", 0)
    get = lambda rows, m, p: next(r["value"] for r in rows if r["metric"] == m and r["perturbation"] == p)
    for p in ("A", "B"):
        assert get(rows2, "kid", p) == get(rows3, "kid", p)
        assert get(rows2, "fid", p) == get(rows3, "fid", p)
    # and KID of B on its own equals KID computed on B's features only
    b = labels == "B"
    assert get(rows3, "kid", "B") == kid(feats_gen["v"][b], feats_real["v"][b], seed=0)[0]


def test_bad_features_raise_one_line_errors(rng):
    with pytest.raises(BenchmarkError, match="NaN"):
        fid(np.full((5, 3), np.nan), rng.normal(size=(5, 3)))
    with pytest.raises(BenchmarkError, match="at least 2"):
        kid(rng.normal(size=(1, 3)), rng.normal(size=(5, 3)), seed=0)


def test_fid_intervals_contain_the_estimate_shrink_with_n_and_are_seeded():
    from benchmark.metrics.evaluate import distribution_rows

    def rows(n, seed=0):
        rng = np.random.default_rng(1)
        real = rng.normal(size=(2 * n, 8))
        gen = rng.normal(size=(2 * n, 8)) + 0.5
        perts = np.array(["a", "b"] * n)
        out = distribution_rows({"all": real}, {"all": gen}, perts, perts, "x", "all", "", seed)
        return {(r["metric"], r["perturbation"]): r for r in out}

    small, large = rows(40), rows(640)
    for table in (small, large):
        for key in (("fid_o", ""), ("fid_c", ""), ("fid", "a"), ("fid", "b")):
            r = table[key]
            assert r["ci_low"] < r["value"] < r["ci_high"]
    width = lambda r: r["ci_high"] - r["ci_low"]
    assert width(large[("fid_o", "")]) < width(small[("fid_o", "")]) / 2  # ~ 1/sqrt(n): sqrt(16) = 4
    assert rows(40)[("fid_o", "")]["ci_low"] == small[("fid_o", "")]["ci_low"]  # seeded
    assert rows(40, seed=1)[("fid_o", "")]["ci_low"] != small[("fid_o", "")]["ci_low"]


def test_prdc_is_one_on_identical_sets_and_drops_for_a_shifted_or_collapsed_one():
    from benchmark.metrics.evaluate import prdc_rows

    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, 8))

    def scores(gen):
        return {r["metric"]: r["value"] for r in prdc_rows({"all": real}, {"all": gen}, "x", "all", "sha")}

    same = scores(real.copy())
    assert same["precision"] == pytest.approx(1) and same["recall"] == pytest.approx(1)
    assert same["coverage"] == pytest.approx(1) and same["density"] == pytest.approx(1, abs=0.05)
    shifted = scores(real + 3.0)
    assert shifted["precision"] < 0.3 and shifted["recall"] < 0.3 and shifted["coverage"] < 0.3
    collapsed = scores(np.repeat(real[:5], 60, axis=0))  # five modes copied: faithful but not diverse
    assert collapsed["precision"] == pytest.approx(1) and collapsed["recall"] < 0.3 and collapsed["coverage"] < 0.2


def test_prdc_of_a_set_larger_than_its_cap_is_a_seeded_subsample_that_says_its_n(monkeypatch):
    """prdc's distance matrices grow with n^2: above PRDC_MAX a side is subsampled (seeded, recorded)."""
    from prdc import compute_prdc

    from benchmark.metrics import evaluate

    monkeypatch.setattr(evaluate, "PRDC_MAX", 50)
    rng = np.random.default_rng(0)
    real, gen = rng.normal(size=(120, 4)), rng.normal(0.5, 1, size=(40, 4))
    rows = {r["metric"]: r for r in evaluate.prdc_rows({"all": real}, {"all": gen}, "x", "all", "sha", seed=3)}
    assert rows["recall"]["n_real"] == 50 and rows["recall"]["n_gen"] == 40 and rows["recall"]["metric_seed"] == 3
    pick = np.sort(np.random.default_rng(3).choice(120, 50, replace=False))
    assert rows["recall"]["value"] == compute_prdc(real[pick], gen, nearest_k=evaluate.PRDC_K)["recall"]
    small = {r["metric"]: r for r in evaluate.prdc_rows({"all": real[:50]}, {"all": gen}, "x", "all", "sha")}
    assert np.isnan(small["recall"]["metric_seed"])  # nothing drawn
