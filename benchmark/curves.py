"""Learning curves: where a run scores its model (`curve_steps`) and what a finished curve says
(`last_quarter_change`). Pure functions of numbers: the report reads curves through them without loading any
model or generation code; the scoring itself is `benchmark.validation.ValidationMonitor`.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def curve_steps(steps: int, points: int) -> list[int]:
    """Where a curve is measured: step 0, `points` log-spaced steps ending at `steps` (doubling from
    steps / 2^(points-1)), and 3/4 of `steps`, so the change over the last quarter of training is measured."""
    if points <= 0 or steps <= 0:
        return []
    logs = np.geomspace(max(1.0, steps / 2 ** (points - 1)), steps, points)
    return sorted({0, int(round(0.75 * steps)), *(int(round(x)) for x in logs)})


def last_quarter_change(curve: list[dict[str, Any]], metric: str) -> float:
    """Relative change of `metric` from 3/4 of training to its end: (end - at 3/4) / |at 3/4|; NaN without both."""
    if not curve:
        return float("nan")
    end = curve[-1]
    quarter = [r for r in curve if r["step"] <= 0.75 * end["step"] + 0.5]
    if not quarter or quarter[-1]["step"] == end["step"] or metric not in end:
        return float("nan")
    before = quarter[-1][metric]
    return float((end[metric] - before) / abs(before)) if before else float("nan")
