"""Known-answer ladders: monotone in the true paired error by construction, and a resolvability rule that finds a
planted difference and no null one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.calibration import LADDERS, KernelKID, LadderInputs, recommended_n, resolution, rung_table
from benchmark.calibration.bootstrap import rank_agreement, resolved_rung, subsample
from benchmark.calibration.features import ImageFeatures


def calibrate_tiny(data_dir, out, *args: str) -> int:
    """`calibrate` on the tiny screen in the tiny feature space, prdc without a bootstrap (the CLI's exit code)."""
    from benchmark.cli import main

    return main(["calibrate", "--task", "synthetic-tiny", "--features", "tiny", "--no-bootstrap",
                 "precision,recall,density,coverage", "--data-dir", str(data_dir), "--out", str(out), *args])


@pytest.fixture(scope="module")
def inputs(tiny_data) -> LadderInputs:
    req = tiny_data.eval_plan().requests
    keys, perts = req["control_key"].tolist(), req["CPD_NAME"].to_numpy()
    return LadderInputs(Path(tiny_data.source), keys, perts, tiny_data.images[req["control_row"].to_numpy()],
                        np.asarray(tiny_data.counterfactual(keys, list(perts))), seed=0)


@pytest.mark.parametrize("zoom", [1, 5])
@pytest.mark.parametrize("name", list(LADDERS))
def test_every_ladder_is_monotone_in_the_true_paired_error(inputs, name, zoom):
    rungs = rung_table(LADDERS[name].zoomed(zoom), inputs)
    errors = rungs["paired_error"].to_numpy()
    assert errors[0] == 0  # rung 0: the true counterfactuals
    if name == "blur" and zoom > 1:  # a Gaussian of 0.1-0.2 px changes no 8-bit pixel: those rungs are rung 0
        assert errors[1] == 0 and (np.diff(errors) >= 0).all() and errors[-1] > 0
        return
    assert (np.diff(errors) > 0).all(), dict(zip(rungs["value"], errors))


def test_the_strength_ladder_ends_at_the_untreated_cells(inputs):
    ladder = LADDERS["strength"]
    assert np.array_equal(ladder.build(inputs, 1.0), inputs.controls)  # no effect left: the control cell itself
    assert np.array_equal(ladder.build(inputs, 0.0), inputs.truth)


def test_the_resolvable_rung_flags_a_planted_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    null = rng.normal(10.0, 1.0, size=(200, 5))  # five rungs of one quality: noise only
    assert resolved_rung(null, lower_is_better=True) is None
    planted = null.copy()
    planted[:, 3:] += 8.0  # rungs 3 and 4 worse by 8 sd
    assert resolved_rung(planted, lower_is_better=True) == 3
    assert resolved_rung(-planted, lower_is_better=False) == 3  # a higher-is-better metric that falls
    assert resolved_rung(-planted, lower_is_better=True) is None  # a metric moving the wrong way resolves nothing


def test_kid_from_kernels_equals_the_suites_kid_on_resampled_rows():
    from benchmark.metrics.distances import kid

    rng = np.random.default_rng(1)
    gen, real = rng.normal(size=(60, 16)), rng.normal(0.3, 1.0, size=(50, 16))
    g, r = rng.choice(60, 40), rng.choice(50, 45)  # with duplicates, as a bootstrap draws them
    expected = kid(gen[g], real[r], seed=7, subsets=5)[0]
    assert KernelKID(gen, real)(g, r, seed=7, subsets=5) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_kid_kernels_skip_unextracted_rows_and_refuse_to_read_them():
    from benchmark.errors import BenchmarkError
    from benchmark.metrics.distances import kid

    rng = np.random.default_rng(2)
    gen, real = rng.normal(size=(30, 8)), rng.normal(size=(40, 8))
    gen[10:], real[::2] = np.nan, np.nan  # a capped space: only some rows were extracted
    kernels = KernelKID(gen, real)
    assert kernels.k_gen.shape == (10, 10) and kernels.k_real.shape == (20, 20)
    g, r = np.arange(10), np.arange(1, 40, 2)
    assert kernels(g, r, seed=3, subsets=4) == pytest.approx(kid(gen[g], real[r], seed=3, subsets=4)[0], rel=1e-9)
    with pytest.raises(BenchmarkError, match="not extracted"):
        kernels(np.arange(12), r, seed=3, subsets=4)
    with pytest.raises(BenchmarkError, match="at least 2"):
        kernels(g[:1], r, seed=3, subsets=4)


def test_subsamples_are_nested_and_each_distinct_image_is_extracted_once(tmp_path):
    from benchmark.metrics.evaluate import FeatureCache

    perts = np.repeat(np.array(["a", "b", "c"]), 10)
    small, large = subsample(perts, 3, seed=4), subsample(perts, 7, seed=4)
    assert set(small) <= set(large) and len(large) == 21

    class Counting:
        rgb, weights_sha256, seen = False, "x", 0

        def __call__(self, images, what=""):
            Counting.seen += len(images)
            return images.reshape(len(images), -1)[:, :4].astype(float)

    features = ImageFeatures({"toy": Counting()}, "rgb", FeatureCache(tmp_path), {})
    images = np.random.default_rng(0).integers(0, 255, (6, 2, 2, 1), dtype=np.uint8)
    first = features("toy", images, "a set", {"set": 1})
    mixed = features("toy", np.concatenate([images[[5, 0, 0]], images[:1] // 2]), "another", {"set": 2})
    assert Counting.seen == 7  # six images, then one new one; a repeat within a set is extracted once
    assert np.array_equal(mixed[:3], first[[5, 0, 0]]) and np.array_equal(mixed[3], (images[0] // 2).ravel()[:4])


def test_rank_agreement_is_signed_by_the_metric_direction():
    assert rank_agreement(np.array([1.0, 2, 3, 4]), lower_is_better=True) == pytest.approx(1.0)
    assert rank_agreement(np.array([1.0, 2, 3, 4]), lower_is_better=False) == pytest.approx(-1.0)
    assert np.isnan(rank_agreement(np.array([2.0, 2, 2]), lower_is_better=True))


def test_calibrate_writes_tables_and_figures_and_paired_error_ranks_every_ladder(data_dir, tiny_data, tmp_path):
    from benchmark.cli import main

    out = tmp_path / "cal"
    assert main(["calibrate", "--task", "synthetic-tiny", "--n", "4", "--features", "morphology", "--boot", "20",
                 "--ladders", "mixing,intensity", "--data-dir", str(data_dir), "--out", str(out)]) == 0
    summary = pd.read_csv(out / "summary.csv")
    paired = summary[summary["metric"] == "paired_rmse"]
    assert set(paired["ladder"]) == {"mixing", "intensity"} and np.allclose(paired["spearman"], 1)
    assert paired["ranks_all_rungs"].all() and (paired["floor"] == 0).all()
    assert {"fid_o [morphology]", "kid_c [morphology]", "paired_morph"} <= set(summary["metric"])
    values = pd.read_csv(out / "values.csv")
    assert (values["ci_low"] <= values["value"] + 1e-12).all() and (values["value"] <= values["ci_high"] + 1e-12).all()
    assert "## n = 4 per perturbation" in (out / "summary.md").read_text()
    assert (out / "mixing.png").stat().st_size > 10_000


def test_a_size_the_screen_does_not_have_is_refused_in_one_line(data_dir, tmp_path, capsys):
    from benchmark.cli import main

    assert main(["calibrate", "--task", "synthetic-tiny", "--n", "500", "--features", "morphology", "--boot", "2",
                 "--ladders", "mixing", "--data-dir", str(data_dir), "--out", str(tmp_path)]) == 2
    assert "fewer than n = 500" in capsys.readouterr().err


def _summary(rows):
    return pd.DataFrame([{"ladder": lad, "metric": "fid_c [x]", "n": n, "resolved_rung": r, "n_boot": b,
                          "resolved_value": np.nan if pd.isna(r) else r / 4, "ranks_all_rungs": r == 1}
                         for lad, n, r, b in rows])


def test_the_recommended_n_is_where_more_images_stop_resolving_finer_steps():
    rows = [("blur", 36, 3, 20), ("blur", 72, 2, 20), ("blur", 144, 2, 20),
            ("mixing", 36, np.nan, 20), ("mixing", 72, 1, 20), ("mixing", 144, 1, 20),
            ("intensity", 36, np.nan, 20), ("intensity", 72, np.nan, 20), ("intensity", 144, np.nan, 20)]
    n, why = recommended_n(_summary(rows), "fid_c [x]")
    assert n == 72 and "never resolves intensity" in why
    still = _summary([("blur", 36, 3, 20), ("blur", 72, 2, 20), ("blur", 144, 1, 20)])
    assert recommended_n(still, "fid_c [x]") == (144, "resolves the smallest step of every ladder from n = 144; finer "
                                                        "steps are not calibrated; still improving at the largest n "
                                                        "calibrated")
    assert recommended_n(_summary([("blur", 36, np.nan, 0)]), "fid_c [x]")[0] is None
    table = resolution(_summary(rows), 72, ["fid_c [x]", "absent"])
    assert table.to_dict("records") == [{"metric": "fid_c [x]", "blur": "0.5", "mixing": "0.25", "intensity": "-",
                                         "orders every rung": "1 of 3"}]


def test_a_capped_space_is_scored_up_to_its_n_only(data_dir, tmp_path):
    from benchmark.cli import main

    out = tmp_path / "cal"  # the last --no-bootstrap wins: density and coverage bootstrapped
    assert calibrate_tiny(data_dir, out, "--n", "2,4", "--max-n", "tiny=2", "--boot", "5", "--ladders", "blur",
                          "--no-bootstrap", "precision,recall") == 0
    summary = pd.read_csv(out / "summary.csv")
    assert (summary[summary["metric"] == "recall [tiny]"]["n_boot"] == 0).all()
    assert (summary[summary["metric"] == "fid_c [tiny]"]["n_boot"] == 5).all()
    assert set(summary[summary["metric"] == "fid_c [tiny]"]["n"]) == {2}
    assert set(summary[summary["metric"] == "paired_rmse"]["n"]) == {2, 4}
    assert np.isfinite(summary[summary["metric"] == "fid_o [tiny]"]["floor"]).all()
    assert main(["calibrate", "--task", "synthetic-tiny", "--n", "4", "--features", "morphology", "--max-n",
                 "morphology=2", "--data-dir", str(data_dir), "--out", str(out)]) == 2


def test_zoom_divides_every_step_and_is_recorded(data_dir, tmp_path, capsys):
    import json

    from benchmark.cli import main

    out = tmp_path / "fine"
    assert calibrate_tiny(data_dir, out, "--n", "2", "--boot", "2", "--ladders", "blur", "--zoom", "4") == 0
    rungs = pd.read_csv(out / "rungs.csv")
    assert np.allclose(rungs["value"], np.array(LADDERS["blur"].values) / 4)
    assert json.loads((out / "provenance.json").read_text())["ladder steps"] == "the defaults divided by 4"
    assert main(["calibrate", "--task", "synthetic-tiny", "--zoom", "0.5", "--out", str(out)]) == 2
    assert "expected a finite number >= 1" in capsys.readouterr().err


def test_map_is_calibrated_in_each_space_and_capped_by_its_name(data_dir, tmp_path, capsys):
    out = tmp_path / "cal"
    assert calibrate_tiny(data_dir, out, "--n", "2,4", "--boot", "3", "--ladders", "mixing", "--max-n", "map_=2") == 0
    summary = pd.read_csv(out / "summary.csv")
    for name in ("map_activity [tiny]", "map_retrieval [tiny]"):
        rows = summary[summary["metric"] == name]
        assert set(rows["n"]) == {2} and (rows["n_boot"] == 3).all() and not rows["lower_is_better"].any()
        assert np.isfinite(rows["floor"]).all() and 0 < rows["floor"].iloc[0] <= 1
    assert set(summary[summary["metric"] == "fid_c [tiny]"]["n"]) == {2, 4}
    assert calibrate_tiny(data_dir, out, "--n", "2", "--max-n", "mAP=2") == 2
    assert "--max-n mAP=2: neither a feature space scored (tiny) nor the start of a metric" in capsys.readouterr().err


def test_merge_replaces_the_recomputed_metrics_rows_and_keeps_the_rest(data_dir, tmp_path, capsys):
    """A calibration redone for some metrics (here: another feature space added, the paired errors recomputed)
    keeps every other row as it was and says which rows came from which run; another seed cannot be merged."""
    import json

    out = tmp_path / "cal"
    args = ["--n", "2,4", "--boot", "4", "--ladders", "mixing,blur"]
    assert calibrate_tiny(data_dir, out, *args) == 0
    before = pd.read_csv(out / "values.csv")
    assert not before["metric"].str.contains("morphology").any()
    files = {name: (out / name).read_bytes() for name in ("values.csv", "summary.csv")}
    assert calibrate_tiny(data_dir, out, *args, "--merge") == 0  # the same metrics again: the same files
    assert all((out / name).read_bytes() == files[name] for name in files)
    from benchmark.cli import main

    common = ["calibrate", "--task", "synthetic-tiny", "--data-dir", str(data_dir), "--out", str(out), *args]
    assert main([*common, "--features", "morphology", "--merge"]) == 0
    after = pd.read_csv(out / "values.csv")
    tiny = before[before["metric"].str.contains(r"\[tiny\]")]
    pd.testing.assert_frame_equal(after[after["metric"].str.contains(r"\[tiny\]")].reset_index(drop=True),
                                  tiny.reset_index(drop=True))
    assert after["metric"].str.contains(r"\[morphology\]").any() and len(after) > len(before)
    assert after.groupby(["ladder", "metric", "n", "rung"]).size().max() == 1  # no metric twice
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["metric"]) == set(after["metric"])
    prov = json.loads((out / "provenance.json").read_text())
    assert any(k.startswith("rows of ") and "fid_o [morphology]" in k for k in prov)
    assert "fid_o [morphology]" in (out / "summary.md").read_text()
    capsys.readouterr()
    assert main([*common, "--features", "morphology", "--merge", "--seed", "1"]) != 0
    assert "provenance.json has seed 0, this calibration 1" in capsys.readouterr().err
