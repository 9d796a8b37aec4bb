"""End to end through the CLI entry point on the tiny simulated screen."""

import json

import numpy as np
import pandas as pd
import pytest

from benchmark.cli import main


def run_cli(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def store(tmp_path_factory, data_dir):
    runs = tmp_path_factory.mktemp("runs")
    for method in ("identity", "oracle"):
        assert main(["run", "--method", method, "--task", "synthetic-tiny", "--out", str(runs), "--data-dir", str(data_dir),
                     "--features", "tiny,morphology"]) == 0
    return runs


def test_runs_are_recorded_with_provenance(store):
    dirs = sorted(p for p in store.iterdir() if not p.name.startswith("."))
    assert len(dirs) == 2
    man = json.loads((dirs[0] / "manifest.json").read_text())
    for key in ("split_hash", "eval_plan_sha256", "git_sha", "versions", "features", "seed", "eval_seed", "config"):
        assert key in man
    assert man["features"]["morphology"]["weights_sha256"]
    m = pd.read_csv(dirs[0] / "metrics.csv")
    assert {"n_gen", "n_real", "channel_rule", "extractor_sha256", "metric_seed"} <= set(m.columns)
    assert (m["n_gen"] > 0).all() and (m["n_real"] > 0).all()


def test_report_has_both_rows_and_oracle_beats_identity(store, tmp_path, capsys):
    code, out, err = run_cli(capsys, "report", "--runs", str(store), "--results", str(tmp_path / "results"))
    assert code == 0, err
    lb = pd.read_csv(tmp_path / "results" / "leaderboard.csv", keep_default_na=False)
    overall = lb[lb["perturbation"] == ""]
    wide = overall.pivot_table(index=["metric", "feature_space"], columns="method", values="value")
    assert set(wide.columns) == {"identity", "oracle"}
    for metric in ("fid_o", "kid_o", "paired_rmse", "paired_morph"):
        rows = wide.loc[metric]
        assert (rows["oracle"] < rows["identity"]).all(), metric
    md = (tmp_path / "results" / "synthetic-tiny" / "tables.md").read_text()
    assert "| identity |" in md and "| oracle |" in md and "Provenance" in md
    # rerunning the report on the same runs is byte-identical
    first = {p: p.read_bytes() for p in (tmp_path / "results").rglob("*") if p.is_file()}
    assert main(["report", "--runs", str(store), "--results", str(tmp_path / "results")]) == 0
    assert first == {p: p.read_bytes() for p in (tmp_path / "results").rglob("*") if p.is_file()}


def test_a_trained_run_keeps_its_best_validation_checkpoint_and_the_report_draws_its_curve(store, tmp_path, data_dir,
                                                                                           capsys):
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(store, runs)
    assert main(["run", "--method", "cellflow", "--task", "synthetic-tiny", "--out", str(runs), "--data-dir",
                 str(data_dir), "--features", "morphology", "--set", "steps=8", "--set", "width=8", "--set", "mults=1,2",
                 "--set", "blocks=1", "--set", "attention=false", "--set", "nfe=2", "--set", "select=best"]) == 0
    run = next(p for p in runs.iterdir() if "cellflow" in p.name)
    fit = json.loads((run / "manifest.json").read_text())["fit"]
    assert len(fit["curve"]) >= 4 and fit["curve_monitor"]["split"] == "val"
    best = min(fit["curve"], key=lambda r: r["val_fd_morph_o"])
    assert fit["selected"]["rule"] == "best" and fit["selected"]["step"] == best["step"]
    for baseline in ("identity", "oracle"):  # untrained rows: one validation score each, the figure's lines
        b = next(p for p in runs.iterdir() if baseline in p.name)
        assert "validation" in json.loads((b / "manifest.json").read_text())["fit"]
    code, _, err = run_cli(capsys, "report", "--runs", str(runs), "--results", str(tmp_path / "results"))
    assert code == 0, err
    d = tmp_path / "results" / "synthetic-tiny"
    t1a = pd.read_csv(d / "table1a.csv")
    row = t1a[t1a["method"] == "cellflow"].iloc[0]
    # the images behind the kept weights, not the whole run's (8 steps of 32)
    assert row["images seen"] == best["images"] and row["converged"] in ("yes", "not converged")
    assert (d / "learning_curves.png").stat().st_size > 10_000
    curves = pd.read_csv(d / "learning_curves.csv")
    assert set(curves.loc[curves["step"].isna(), "label"]) == {"identity", "oracle"}


@pytest.mark.parametrize("args,needle", [
    (["run", "--method", "nope", "--task", "synthetic-tiny"], "unknown method 'nope'"),
    (["run", "--method", "identity", "--task", "nope"], "unknown task 'nope'"),
    (["run", "--method", "identity", "--task", "synthetic-tiny", "--features", "inception", "--inception-weights",
      "/no/such/weights.pth"], "/no/such/weights.pth: Inception weights file not found"),
    (["run", "--method", "identity", "--task", "synthetic-tiny", "--set", "x=1"], "takes no options"),
])
def test_bad_input_gives_one_line_error(args, needle, capsys, tmp_path, data_dir):
    code, out, err = run_cli(capsys, *args, "--out", str(tmp_path / "runs"), "--data-dir", str(data_dir))
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0]
    assert not (tmp_path / "runs").exists()  # refused before the store was touched


def test_report_without_runs_is_a_clear_error(capsys, tmp_path):
    code, out, err = run_cli(capsys, "report", "--runs", str(tmp_path / "empty"), "--results", str(tmp_path / "r"))
    assert code == 2 and "no completed runs found" in err


def test_a_stored_model_is_scored_again_without_training(cellflow_run, data_dir, tmp_path, capsys):
    """--from-run loads model/ and the stored config: same images as the original run, nothing trained."""
    out = tmp_path / "runs"
    assert main(["run", "--method", "cellflow", "--task", "synthetic-tiny", "--out", str(out), "--data-dir",
                 str(data_dir), "--features", "tiny", "--from-run", str(cellflow_run)]) == 0
    (again,) = [p for p in out.iterdir() if not p.name.startswith(".")]
    assert np.array_equal(np.load(again / "generated.npy"), np.load(cellflow_run / "generated.npy"))
    manifest = json.loads((again / "manifest.json").read_text())
    original = json.loads((cellflow_run / "manifest.json").read_text())
    assert manifest["fit"]["from_run"] == original["run_id"] and manifest["config"] == original["config"]
    assert set(manifest["fit"]["model_sha256"]) == {"cellflow.pt", "config.json"}
    # a sampling option may change; the method must match the stored run's
    assert main(["run", "--method", "cellflow", "--task", "synthetic-tiny", "--out", str(out), "--data-dir",
                 str(data_dir), "--features", "tiny", "--from-run", str(cellflow_run), "--set", "nfe=4"]) == 0
    assert main(["run", "--method", "identity", "--task", "synthetic-tiny", "--out", str(out), "--data-dir",
                 str(data_dir), "--features", "tiny", "--from-run", str(cellflow_run)]) == 2
    assert "is of method 'cellflow', not 'identity'" in capsys.readouterr().err


def test_stored_images_are_scored_again_without_the_model(cellflow_run, data_dir, tmp_path, capsys):
    """--reuse-generated: another feature space on the images a GPU run brought back, its model/ left behind."""
    import shutil

    src = tmp_path / "src" / cellflow_run.name
    shutil.copytree(cellflow_run, src, ignore=shutil.ignore_patterns("model"))
    out = tmp_path / "runs"
    assert main(["run", "--method", "cellflow", "--task", "synthetic-tiny", "--out", str(out), "--data-dir",
                 str(data_dir), "--features", "morphology", "--from-run", str(src), "--reuse-generated"]) == 0
    (again,) = [p for p in out.iterdir() if not p.name.startswith(".")]
    assert np.array_equal(np.load(again / "generated.npy"), np.load(cellflow_run / "generated.npy"))
    manifest = json.loads((again / "manifest.json").read_text())
    original = json.loads((cellflow_run / "manifest.json").read_text())
    assert manifest["fit"]["generated_by"] == original["run_id"] and manifest["config"] == original["config"]
    assert manifest["overrides"] == original["overrides"] and not (again / "model").exists()
    m = pd.read_csv(again / "metrics.csv")
    assert "morphology" in set(m["feature_space"]) and (m["value"].notna()).all()
    # images of another evaluation plan (here: another task) are refused, and --set cannot apply to stored images
    manifest_src = json.loads((src / "manifest.json").read_text())
    manifest_src["eval_plan_sha256"] = "0" * 16
    (src / "manifest.json").write_text(json.dumps(manifest_src))
    code, _, err = run_cli(capsys, "run", "--method", "cellflow", "--task", "synthetic-tiny", "--out", str(out),
                           "--data-dir", str(data_dir), "--features", "morphology", "--from-run", str(src), "--reuse-generated")
    assert code == 2 and "eval_plan_sha256 is '0000000000000000'" in err
    # images of the right plan but not of the task's image shape are refused too
    (src / "manifest.json").write_text(json.dumps(original))
    np.save(src / "generated.npy", np.load(cellflow_run / "generated.npy")[:, :-1])
    code, _, err = run_cli(capsys, "run", "--method", "cellflow", "--task", "synthetic-tiny", "--out", str(out),
                           "--data-dir", str(data_dir), "--features", "morphology", "--from-run", str(src), "--reuse-generated")
    assert code == 2 and "generated.npy: uint8 array of shape" in err and "expected uint8 of shape" in err
    code, _, err = run_cli(capsys, "run", "--method", "cellflow", "--task", "synthetic-tiny", "--out", str(out),
                           "--data-dir", str(data_dir), "--from-run", str(src), "--reuse-generated", "--set", "nfe=4")
    assert code == 2 and "takes no --set" in err
    assert len([p for p in out.iterdir() if not p.name.startswith(".")]) == 1


def test_runs_with_different_settings_are_separate_rows_not_seeds(cellflow_run, data_dir, tmp_path):
    import shutil

    store = tmp_path / "runs"
    shutil.copytree(cellflow_run, store / cellflow_run.name)
    assert main(["run", "--method", "cellflow", "--task", "synthetic-tiny", "--out", str(store), "--data-dir",
                 str(data_dir), "--features", "tiny", "--from-run", str(cellflow_run), "--set", "nfe=4"]) == 0
    assert main(["report", "--runs", str(store), "--results", str(tmp_path / "results")]) == 0
    t1a = pd.read_csv(tmp_path / "results" / "synthetic-tiny" / "table1a.csv")
    labels = [m for m in t1a["method"] if m.startswith("cellflow")]
    assert len(labels) == 2 and all("[" in m for m in labels) and set(t1a["n_seeds"]) == {1}


def test_a_negative_seed_is_refused_in_one_line(capsys):
    code, out, err = run_cli(capsys, "run", "--method", "identity", "--task", "synthetic-tiny", "--seed", "-1")
    assert code == 2 and err.count("\n") == 1 and "--seed: -1 is negative" in err
    code, out, err = run_cli(capsys, "sweep", "--methods", "identity", "--tasks", "synthetic-tiny", "--seeds", "0,-2",
                             "--dry-run")
    assert code == 2 and err.count("\n") == 1 and "-2 is negative" in err


def test_a_misspelt_name_is_refused_before_torch_is_imported():
    """What makes the error immediate: the method and task names are checked before any heavy import."""
    import subprocess
    import sys

    probe = ("import sys; from benchmark.cli import main; code = main(['run', '--method', 'cellfow', '--task', "
             "'synthetic']); print(code, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", "False"] and "unknown method 'cellfow'" in out.stderr


def test_every_stage_of_a_run_prints_its_header_and_the_profile_is_recorded(tmp_path, capsys):
    from .conftest import TINY_CELLFLOW

    # a data directory of its own: the screen is simulated and the MoA classifier trained here, with their bars
    assert main(["run", "--method", "cellflow", "--task", "synthetic-tiny", "--out", str(tmp_path / "runs"),
                 "--data-dir", str(tmp_path / "data"), "--features", "tiny,moa", *TINY_CELLFLOW]) == 0
    err = capsys.readouterr().err
    for stage in ("data", "train", "generate", "score"):
        assert f"== {stage}: " in err and f"   {stage} took " in err
    assert "== train: cellflow (profile quick)" in err and "MoA classifier (resnet18)" in err
    assert "simulating screen" in err
    (run,) = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    assert json.loads((run / "manifest.json").read_text())["profile"] == "quick"


def test_list_names_every_feature_space_and_the_default_profiles(capsys):
    code, out, err = run_cli(capsys, "list")
    assert code == 0
    spaces = next(line for line in out.splitlines() if line.startswith("feature spaces:"))
    assert all(name in spaces for name in ("inception", "morphology", "moa"))
    assert "quick (default)" in out and "default," not in out
