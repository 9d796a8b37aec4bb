"""The `cellprofiler` feature space (cp-measure) on crops whose answer is known."""

import numpy as np
import pytest

from benchmark.metrics.cellprofiler import CellProfiler


def disc_crop(radius: int, cell_radius: int = 16, size: int = 48) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    r2 = (yy - size // 2) ** 2 + (xx - size // 2) ** 2
    crop = np.zeros((size, size, 3), np.uint8)
    crop[..., 2] = np.where(r2 <= radius ** 2, 200, 10)  # DNA: the nucleus, a disc
    crop[..., 0] = np.where(r2 <= cell_radius ** 2, 120, 5)  # actin fills the cell
    crop[..., 1] = np.where(r2 <= cell_radius ** 2, 80, 5)
    return crop


def test_a_disc_nucleus_measures_as_the_disc():
    cp = CellProfiler(("actin", "tubulin", "DNA"))
    feats = cp(np.stack([disc_crop(8), disc_crop(12)]))
    names = cp.feature_names
    area, ecc = names.index("nucleus:Area"), names.index("nucleus:Eccentricity")
    # a digital disc of radius r covers pi r^2 pixels to within the boundary's pixels (2 pi r)
    for row, r in ((0, 8), (1, 12)):
        assert feats[row, area] == pytest.approx(np.pi * r * r, abs=2 * np.pi * r * 0.5)
        assert feats[row, ecc] < 0.15  # a circle: 0
    assert feats[1, names.index("cell:Area")] == pytest.approx(np.pi * 16 ** 2, rel=0.05)
    assert feats.shape == (2, len(names)) and len(names) > 100


def test_a_blank_crop_is_nan_and_others_are_unaffected():
    cp = CellProfiler(("actin", "tubulin", "DNA"))
    feats = cp(np.stack([disc_crop(8), np.zeros((48, 48, 3), np.uint8)]))
    assert np.isnan(feats[1]).all() and not np.isnan(feats[0, cp.feature_names.index("nucleus:Area")])


def test_a_run_scores_the_cellprofiler_space_like_any_other(tmp_path, data_dir, tiny_data):
    """The true counterfactuals (oracle) are closer to the real cells than the controls (identity) in this space
    too: features that are constant or undefined on the reference set must not swamp the distance."""
    import json

    import pandas as pd

    from benchmark.cli import main

    fid = {}
    for method in ("identity", "oracle"):
        out = tmp_path / method
        assert main(["run", "--method", method, "--task", "synthetic-tiny", "--out", str(out), "--data-dir",
                     str(data_dir), "--features", "cellprofiler"]) == 0
        (run,) = [p for p in out.iterdir() if not p.name.startswith(".")]
        m = pd.read_csv(run / "metrics.csv")
        cp = m[m["feature_space"] == "cellprofiler"]
        assert {"fid_o", "fid_c", "kid_o", "precision", "map_activity", "shift_corr"} <= set(cp["metric"])
        fid[method] = float(cp[cp["metric"] == "fid_o"]["value"].iloc[0])
        provenance = json.loads((run / "manifest.json").read_text())["features"]["cellprofiler"]
        assert set(provenance["crops_with_nan"]) == {"reference", "generated", "controls"}
        used, total = map(int, provenance["features_used"]["all"].split(" of "))
        assert 100 < used < total  # some measurements are undefined or constant on the tiny screen
    assert np.isfinite(fid["oracle"]) and fid["oracle"] < fid["identity"]
