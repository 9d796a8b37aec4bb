"""Mean average precision through copairs: 1 for perfectly separated profiles, the null for exchangeable ones."""

import numpy as np
import pytest

from benchmark.metrics.retrieval import activity_map, map_rows, retrieval_map


def rows_by(rows):
    return {(r["metric"], r["perturbation"]): r["value"] for r in rows}


def test_separated_profiles_have_map_one_and_exchangeable_ones_sit_at_the_null():
    rng = np.random.default_rng(0)
    n, d = 20, 16
    controls = rng.normal(0, 1, (200, d))
    # "far": every cell of it points one way, far from the controls; "same": drawn like the controls
    far = rng.normal(0, 0.1, (n, d)) + 5 * np.eye(d)[0]
    same = rng.normal(0, 1, (n, d))
    gen = np.concatenate([far, same])
    perts = np.array(["far"] * n + ["same"] * n)
    out = rows_by(map_rows(gen, perts, gen.copy(), perts.copy(), controls, "x", "all", "sha", seed=0))
    assert out[("map_activity", "far")] == pytest.approx(1.0)
    assert out[("map_activity_q", "far")] < 0.05
    # exchangeable with the controls: AP is about the share of positives among the ranked, (n-1)/(n-1+200)
    assert out[("map_activity", "same")] == pytest.approx((n - 1) / (n - 1 + 200), abs=0.05)
    assert out[("map_activity_q", "same")] > 0.05
    assert out[("map_active_frac", "")] == 0.5
    # retrieval against the real cells: "far" cells find their own perfectly; "same" cells rank "far" reals last
    assert out[("map_retrieval", "far")] == pytest.approx(1.0)
    assert out[("map_activity_real", "far")] == pytest.approx(out[("map_activity", "far")])


def test_the_calibrations_map_without_a_null_equals_the_overall_rows():
    rng = np.random.default_rng(1)
    perts = np.repeat(np.array(["a", "b", "c"]), 6)
    gen = rng.normal(0, 1, (18, 8)) + 2 * np.eye(8)[np.repeat([0, 1, 2], 6)]
    real = rng.normal(0, 1, (18, 8)) + 2 * np.eye(8)[np.repeat([0, 1, 2], 6)]
    controls = rng.normal(0, 1, (30, 8))
    out = rows_by(map_rows(gen, perts, real, perts, controls, "x", "all", "sha", seed=0))
    assert activity_map(gen, perts, controls) == pytest.approx(out[("map_activity", "")])
    assert retrieval_map(gen, perts, real, perts) == pytest.approx(out[("map_retrieval", "")])
    mixed = gen[np.random.default_rng(2).permutation(18)]  # the perturbations' profiles shuffled across them
    assert activity_map(mixed, perts, controls) < activity_map(gen, perts, controls) - 0.1


def test_map_scores_at_most_its_cap_of_profiles_a_perturbation(monkeypatch):
    """The pairs grow with the square of the set: above the cap (shared evenly by the perturbations) a
    perturbation's profiles are a seeded subsample, and the rows say how many were scored."""
    from benchmark.metrics import retrieval

    rng = np.random.default_rng(3)
    perts = np.repeat(np.array(["a", "b"]), [30, 8])
    gen = rng.normal(0, 1, (38, 6)) + 2 * np.eye(6)[(perts == "b").astype(int)]
    controls = rng.normal(0, 1, (25, 6))
    full = rows_by(map_rows(gen, perts, gen.copy(), perts.copy(), controls, "x", "all", "sha", seed=0))
    monkeypatch.setattr(retrieval, "MAP_MAX_PROFILES", 20)  # 10 a perturbation
    monkeypatch.setattr(retrieval, "MAP_MAX_CONTROLS", 20)
    rows = map_rows(gen, perts, gen.copy(), perts.copy(), controls, "x", "all", "sha", seed=0)
    n = {(r["metric"], r["perturbation"]): r["n_gen"] for r in rows}
    assert n[("map_activity", "a")] == 10 and n[("map_activity", "b")] == 8 and n[("map_activity", "")] == 18
    assert rows_by(rows) == rows_by(map_rows(gen, perts, gen.copy(), perts.copy(), controls, "x", "all", "sha",
                                             seed=0))  # seeded
    assert rows_by(rows)[("map_activity", "b")] != full[("map_activity", "b")]  # fewer controls: another value
    kept = retrieval.capped(perts, 10, np.random.default_rng(0))
    assert len(kept) == 18 and (np.diff(kept) > 0).all() and set(range(30, 38)) <= set(kept)
