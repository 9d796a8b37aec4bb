"""Where a learning curve is measured and what a finished one says."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.curves import curve_steps, last_quarter_change


@pytest.mark.parametrize("steps,points", [(4, 3), (6, 3), (875, 4), (1200, 8)])
def test_curve_steps_start_at_zero_end_at_the_last_step_and_measure_the_last_quarter(steps, points):
    s = curve_steps(steps, points)
    assert s[0] == 0 and s[-1] == steps and round(0.75 * steps) in s and len(s) >= 4
    assert s == sorted(set(s))
    doubling = [b / a for a, b in zip(s[1:], s[2:]) if b != round(0.75 * steps) and a != round(0.75 * steps)]
    assert all(1.4 <= r <= 2.6 for r in doubling)  # log-spaced (rounded)
    assert curve_steps(steps, 0) == []


def test_last_quarter_change_is_relative_to_the_value_at_three_quarters():
    curve = [{"step": 0, "m": 9.0}, {"step": 50, "m": 2.0}, {"step": 75, "m": 1.0}, {"step": 100, "m": 0.9}]
    assert last_quarter_change(curve, "m") == pytest.approx(-0.1)
    assert np.isnan(last_quarter_change(curve[:1], "m"))
