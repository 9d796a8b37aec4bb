"""`plan` and `score`: images made outside the suite are scored exactly as a run's own, and bad input records
nothing."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from benchmark.cli import main
from benchmark.external import CONTROLS, EMBEDDINGS, PLAN, README, REQUESTS
from benchmark.registry import TASKS
from benchmark.store import SCORE_COLUMNS, RunStore

FEATURES = ["--features", "tiny,morphology"]


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("plan") / "synthetic-tiny"
    assert main(["plan", "--task", "synthetic-tiny", "--out", str(out), "--data-dir", str(data_dir)]) == 0
    return out


@pytest.fixture(scope="module")
def identity_rows(tmp_path_factory, data_dir):
    runs = tmp_path_factory.mktemp("identity-runs")
    assert main(["run", "--method", "identity", "--task", "synthetic-tiny", "--out", str(runs), "--data-dir",
                 str(data_dir), *FEATURES]) == 0
    (run,) = RunStore(runs).runs()
    return run.metrics()[list(SCORE_COLUMNS)]


def scored(capsys, runs, data_dir, images, *extra):
    code, out, err = run_cli(capsys, "score", "--task", "synthetic-tiny", "--images", images, "--name", "copycat",
                             "--out", runs, "--data-dir", data_dir, *FEATURES, *extra)
    assert code == 0, err
    return RunStore(runs).runs()


def test_the_plan_holds_the_requests_and_their_controls_and_nothing_of_the_reference(plan_dir, tiny_data):
    assert sorted(p.name for p in plan_dir.iterdir()) == sorted([CONTROLS, EMBEDDINGS, PLAN, README, REQUESTS])
    plan = tiny_data.eval_plan()
    requests = pd.read_csv(plan_dir / REQUESTS)
    assert list(requests.columns) == ["index", "control_key", "perturbation", "batch", "target_batch"]
    assert requests["index"].tolist() == list(range(len(plan.requests)))
    assert requests["control_key"].tolist() == plan.requests["control_key"].tolist()
    assert requests["perturbation"].tolist() == plan.requests["CPD_NAME"].tolist()
    controls = np.load(plan_dir / CONTROLS)
    assert controls.dtype == np.uint8
    assert np.array_equal(controls, tiny_data.images[plan.requests["control_row"].to_numpy()])
    # read everything it wrote: no reference key in any text, no reference image among the arrays
    reference_keys = set(plan.reference["SAMPLE_KEY"])
    for path in plan_dir.iterdir():
        if path.suffix != ".npy":
            text = path.read_text()
            assert not [k for k in reference_keys if k in text], path.name
    reference = tiny_data.images[plan.reference["row"].to_numpy()].reshape(len(plan.reference), -1)
    flat = controls.reshape(len(controls), -1)
    assert not (flat[:, None, :] == reference[None, :, :]).all(-1).any()
    record = json.loads((plan_dir / PLAN).read_text())
    assert record["plan_sha256"] == plan.digest() and record["split"] == "test" and record["n"] == len(plan.requests)
    assert record["channels"] == list(TASKS.get("synthetic-tiny").channels)
    emb = pd.read_csv(plan_dir / EMBEDDINGS, index_col=0)
    assert set(requests["perturbation"]) <= set(emb.index)
    np.testing.assert_array_equal(emb.loc[["camptothecin"]].to_numpy(np.float32), tiny_data.embed(["camptothecin"]))


def test_scoring_the_plans_controls_reproduces_the_identity_run(plan_dir, identity_rows, data_dir, tmp_path, capsys):
    (run,) = scored(capsys, tmp_path / "runs", data_dir, plan_dir / CONTROLS, "--seed", 3, "--describe", "copies")
    pd.testing.assert_frame_equal(run.metrics()[list(SCORE_COLUMNS)], identity_rows)
    m = run.manifest
    assert (m.method, m.variant, m.seed, m.model_source, m.eval_split) == ("external", "copycat", 3,
                                                                         "scored from images", "test")
    assert m.fit["description"] == "copies" and m.fit["plan_file"] == str(plan_dir / PLAN)
    import hashlib
    assert m.fit["images_sha256"] == hashlib.sha256((plan_dir / CONTROLS).read_bytes()).hexdigest()


def test_images_not_made_from_the_controls_get_no_paired_errors(plan_dir, identity_rows, data_dir, tmp_path,
                                                                capsys):
    """`--not-from-controls` (images generated from noise): the same rows less the paired counterfactual errors,
    and the record says so for the report."""
    (run,) = scored(capsys, tmp_path / "runs", data_dir, plan_dir / CONTROLS, "--not-from-controls")
    rows = run.metrics()[list(SCORE_COLUMNS)]
    assert not run.manifest.conditioned_on_control and not rows["metric"].str.startswith("paired").any()
    unpaired = identity_rows[~identity_rows["metric"].str.startswith("paired")].reset_index(drop=True)
    assert identity_rows["metric"].str.startswith("paired").any()
    pd.testing.assert_frame_equal(rows.reset_index(drop=True), unpaired)


def test_a_png_folder_scores_as_the_array_does(plan_dir, identity_rows, data_dir, tmp_path, capsys):
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(np.load(plan_dir / CONTROLS)):
        Image.fromarray(image).save(folder / (f"{i:06d}.png" if i % 2 else f"{i}.png"))
    shutil.copy(plan_dir / PLAN, folder / PLAN)
    (run,) = scored(capsys, tmp_path / "runs", data_dir, folder)
    pd.testing.assert_frame_equal(run.metrics()[list(SCORE_COLUMNS)], identity_rows)
    assert run.manifest.fit["format"] == "folder of png files"


def test_a_channels_first_tiff_folder_is_read_channels_last(plan_dir, data_dir, tmp_path, capsys):
    folder = tmp_path / "tiffs"
    folder.mkdir()
    controls = np.load(plan_dir / CONTROLS)
    for i, image in enumerate(controls):
        tifffile.imwrite(folder / f"{i:04d}.tif", np.moveaxis(image, -1, 0), photometric="minisblack")
    (run,) = scored(capsys, tmp_path / "runs", data_dir, folder, "--plan", plan_dir / PLAN)
    assert np.array_equal(np.load(run.path / "generated.npy"), controls)


def test_the_report_shows_the_images_under_their_name(plan_dir, data_dir, tmp_path, capsys):
    runs = tmp_path / "runs"
    scored(capsys, runs, data_dir, plan_dir / CONTROLS)
    assert main(["run", "--method", "identity", "--task", "synthetic-tiny", "--out", str(runs), "--data-dir",
                 str(data_dir), *FEATURES]) == 0
    # images of the validation split choose settings: recorded, never on the leaderboard
    val = tmp_path / "val-plan"
    assert main(["plan", "--task", "synthetic-tiny", "--split", "val", "--out", str(val), "--data-dir",
                 str(data_dir)]) == 0
    assert json.loads((val / PLAN).read_text())["split"] == "val"
    code, out, err = run_cli(capsys, "score", "--task", "synthetic-tiny", "--images", val / CONTROLS, "--name",
                             "valcopy", "--out", runs, "--data-dir", data_dir, *FEATURES)
    assert code == 0 and "val split" in out, err
    assert "seed=0)" in out and "seed=0.0" not in out  # seeds print as the integers they are
    assert main(["report", "--runs", str(runs), "--results", str(tmp_path / "results")]) == 0
    t1a = pd.read_csv(tmp_path / "results" / "synthetic-tiny" / "table1a.csv")
    assert t1a["method"].tolist() == ["identity", "copycat (scored from images)"]
    row = t1a.set_index("method")
    assert row.loc["copycat (scored from images)", "FID_o [tiny]"] == row.loc["identity", "FID_o [tiny]"]
    md = (tmp_path / "results" / "synthetic-tiny" / "tables.md").read_text()
    assert "scored from images (npy, sha256" in md and "valcopy" not in md


def test_a_stored_external_run_is_scored_again_in_another_space(plan_dir, data_dir, tmp_path, capsys):
    (first,) = scored(capsys, tmp_path / "runs", data_dir, plan_dir / CONTROLS, "--seed", 2)
    out = tmp_path / "again"
    code, _, err = run_cli(capsys, "run", "--method", "external", "--task", "synthetic-tiny", "--from-run",
                           first.path, "--reuse-generated", "--out", out, "--data-dir", data_dir, "--features", "tiny")
    assert code == 0, err
    (again,) = RunStore(out).runs()
    assert (again.manifest.variant, again.manifest.seed) == ("copycat", 2)
    assert again.manifest.fit["generated_by"] == first.manifest.run_id
    assert set(again.metrics()["feature_space"]) == {"tiny", "pixels", "morphology"}  # the paired errors too


def _write_pngs(folder, images):
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:06d}.png")
    return folder


BAD = {
    "count": (lambda c, d: np.save(d / "x.npy", c[:-1]) or d / "x.npy", "63 images; the plan has 64 requests"),
    "size": (lambda c, d: np.save(d / "x.npy", c[:, :16]) or d / "x.npy", "images of 16 x 32 pixels"),
    "channels": (lambda c, d: np.save(d / "x.npy", c[..., :2]) or d / "x.npy", "2 channels"),
    "float": (lambda c, d: np.save(d / "x.npy", c.astype(np.float32)) or d / "x.npy", "float32 pixels"),
    "suffix": (lambda c, d: ((d / "x.pt").write_bytes(b"x"), d / "x.pt")[1], "expected .npy, .npz"),
    "missing index": (lambda c, d: (_write_pngs(d / "f", c) / "000007.png").unlink() or d / "f",
                      "no image for request 7"),
    "extra index": (lambda c, d: Image.fromarray(c[0]).save(_write_pngs(d / "f", c) / "64.png") or d / "f",
                    "index 64 is not a request"),
    "16-bit": (lambda c, d: Image.fromarray(np.full((32, 32), 7, np.uint16)).save(
        _write_pngs(d / "f", c) / "000003.png") or d / "f", "16-bit"),
    "png size": (lambda c, d: Image.fromarray(c[0, :20]).save(_write_pngs(d / "f", c) / "000005.png") or d / "f",
                 "20 x 32 pixels"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_images_fail_in_one_line_and_record_nothing(case, plan_dir, data_dir, tmp_path, capsys):
    make, needle = BAD[case]
    images = make(np.load(plan_dir / CONTROLS), tmp_path)
    code, _, err = run_cli(capsys, "score", "--task", "synthetic-tiny", "--images", images, "--name", "bad",
                           "--out", tmp_path / "runs", "--data-dir", data_dir, *FEATURES)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and needle in errors[0], err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("case,needle", [
    ("other task", "task is 'synthetic-tiny-ood'"),
    ("other split", "split is 'val'"),
    ("name is a method", "--name 'identity' is a registered method"),
    ("bad name", "--name 'a b'"),
])
def test_images_of_another_plan_or_under_a_method_name_are_refused(case, needle, plan_dir, data_dir, tmp_path,
                                                                   capsys):
    images, name, extra = tmp_path / CONTROLS, "mine", []
    shutil.copy(plan_dir / CONTROLS, images)
    if case == "other task":
        assert main(["plan", "--task", "synthetic-tiny-ood", "--out", str(tmp_path / "ood"), "--data-dir",
                     str(data_dir)]) == 0
        extra = ["--plan", tmp_path / "ood" / PLAN]
    elif case == "other split":
        record = json.loads((plan_dir / PLAN).read_text())
        (tmp_path / PLAN).write_text(json.dumps({**record, "split": "val"}))
        extra = ["--split", "test"]
    else:
        name = "identity" if case == "name is a method" else "a b"
    code, _, err = run_cli(capsys, "score", "--task", "synthetic-tiny", "--images", images, "--name", name,
                           "--out", tmp_path / "runs", "--data-dir", data_dir, *FEATURES, *extra)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and needle in errors[0], err
    assert not (tmp_path / "runs").exists()


def test_plan_refuses_a_folder_that_is_not_a_plan(data_dir, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, "plan", "--task", "synthetic-tiny", "--out", tmp_path, "--data-dir", data_dir)
    assert code == 2 and "is not a plan folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
