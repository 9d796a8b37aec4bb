"""Mean average precision through copairs: 1 for perfectly separated profiles, the null for exchangeable ones."""

import numpy as np
import pytest

from benchmark.metrics.retrieval import map_rows


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
