"""Published layouts: fixtures in the exact format, validated, packed, and run end to end."""

import shutil

import numpy as np
import pandas as pd
import pytest

from benchmark.cli import main
from benchmark.registry import TASKS
from tasks import packed
from tasks.fixtures import write_fixture
from tasks.layouts import LAYOUTS
from tasks.packed import choose_eval_perturbations, is_packed

CASES = [("bbbc021", "bbbc021"), ("rxrx1", "rxrx1"), ("cpg0000", "jump")]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    return {lay: write_fixture(root / lay, lay) for lay, _ in CASES}


@pytest.mark.parametrize("layout,task", CASES)
def test_fixture_layouts_run_end_to_end_with_identity_and_oracle(sources, layout, task, tmp_path):
    data_dir, runs = tmp_path / "data", tmp_path / "runs"
    assert main(["prepare", task, "--source", str(sources[layout]), "--data-dir", str(data_dir)]) == 0
    data = TASKS.get(task).load(data_dir)
    assert isinstance(data.images, np.memmap) and data.images.shape == (48, 96, 96, len(LAYOUTS.get(layout).channels))
    # pixels are the source crops, row for row
    first = data.obs.iloc[0]
    assert np.array_equal(data.images[0], np.load(sources[layout] / LAYOUTS.get(layout).images / first["FILE"]))
    assert set(data.obs["STATE"]) == {"control", "trt"} and data.control in set(data.obs["CPD_NAME"])
    for method in ("identity", "oracle"):
        assert main(["run", "--method", method, "--task", task, "--data-dir", str(data_dir), "--out", str(runs),
                     "--features", "tiny"]) == 0
    metrics = pd.concat(pd.read_csv(p / "metrics.csv") for p in runs.iterdir() if not p.name.startswith("."))
    overall = metrics[(metrics["metric"] == "fid_o")].set_index("method")["value"]
    assert overall["oracle"] < overall["identity"] / 10  # targets are brighter than controls in the fixture
    assert set(metrics["channel_rule"]) == {TASKS.get(task).channel_rule}


def test_every_channel_can_be_scored(sources, tmp_path):
    data_dir = tmp_path / "data"
    assert main(["prepare", "rxrx1", "--source", str(sources["rxrx1"]), "--data-dir", str(data_dir)]) == 0
    assert main(["run", "--method", "identity", "--task", "rxrx1", "--data-dir", str(data_dir), "--out",
                 str(tmp_path / "runs"), "--features", "tiny", "--channel-rule", "each"]) == 0
    (run,) = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    assert set(pd.read_csv(run / "metrics.csv").query("feature_space == 'tiny'")["channel_rule"]) == {"each"}


def _broken(sources, tmp_path, how):
    src = tmp_path / "src"
    shutil.copytree(sources["bbbc021"], src)
    lay = LAYOUTS.get("bbbc021")
    meta_path = src / lay.metadata[0]
    meta = pd.read_csv(meta_path, index_col=0)
    row = 5
    crop = src / lay.images / lay.key_rule(meta["SAMPLE_KEY"].iloc[row])
    if how == "truncated":
        crop.write_bytes(crop.read_bytes()[:200])
    elif how == "shape":
        np.save(crop, np.zeros((64, 64, 3), np.uint8))
    elif how == "dtype":
        np.save(crop, np.zeros((96, 96, 3), np.float32))
    elif how == "missing":
        crop.unlink()
    elif how == "embedding":
        meta.loc[meta.index[row], ["CPD_NAME", "STATE"]] = ["mystery compound", "trt"]
        meta.to_csv(meta_path)
    elif how == "split":
        meta.drop(columns="SPLIT").to_csv(meta_path)
    return src, crop, meta_path, row


@pytest.mark.parametrize("how,expect", [
    ("truncated", "truncated .npy"), ("shape", "shape (64, 64, 3); expected (96, 96, 3)"),
    ("dtype", "dtype float32; expected uint8"), ("missing", "not found"),
    ("embedding", "'mystery compound' has no embedding"), ("split", "missing column 'SPLIT'"),
])
def test_bad_input_is_one_clear_line_and_nothing_is_packed(sources, tmp_path, capsys, how, expect):
    src, crop, meta_path, row = _broken(sources, tmp_path, how)
    data_dir = tmp_path / "data"
    assert main(["prepare", "bbbc021", "--source", str(src), "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and expect in err
    if how in ("truncated", "shape", "dtype", "missing"):
        assert crop.name in err and f"row {row}" in err
    elif how == "embedding":
        assert meta_path.name in err and f"row {row}" in err
    else:
        assert meta_path.name in err
    assert not data_dir.exists()  # checked before anything is written: no store, no partial, no lock file


def test_a_truncated_last_crop_is_found_before_anything_is_written(sources, tmp_path, capsys, monkeypatch):
    """The crop checks are a first pass over every crop: the copy never starts on a dataset with a bad crop."""
    src = tmp_path / "src"
    shutil.copytree(sources["bbbc021"], src)
    lay = LAYOUTS.get("bbbc021")
    meta = pd.read_csv(src / lay.metadata[0], index_col=0)
    last = src / lay.images / lay.key_rule(meta["SAMPLE_KEY"].iloc[-1])
    last.write_bytes(last.read_bytes()[:-10])  # header intact, ten pixel bytes missing
    monkeypatch.setattr(packed, "_write_store", lambda *a, **k: pytest.fail("the copy started before the checks ended"))
    data_dir = tmp_path / "data"
    assert main(["prepare", "bbbc021", "--source", str(src), "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(last) in err and f"row {len(meta) - 1}" in err and "truncated .npy" in err
    assert not data_dir.exists()


def test_the_lock_file_is_removed_after_success_and_failure(sources, tmp_path, monkeypatch):
    data_dir = tmp_path / "data"

    def dying(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(packed, "load_crop", dying)  # a failure during the copy, after the checks passed
    with pytest.raises(OSError):
        packed.pack(LAYOUTS.get("bbbc021"), sources["bbbc021"], data_dir / "bbbc021")
    assert list(data_dir.iterdir()) == []
    monkeypatch.undo()
    packed.pack(LAYOUTS.get("bbbc021"), sources["bbbc021"], data_dir / "bbbc021")
    assert [p.name for p in data_dir.iterdir()] == ["bbbc021"]


def test_interrupted_preparation_leaves_no_store_and_a_rerun_starts_clean(sources, tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    real, calls = packed.load_crop, []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == 20:
            raise KeyboardInterrupt  # a kill half-way through the copy
        return real(*args, **kwargs)

    monkeypatch.setattr(packed, "load_crop", dying)
    with pytest.raises(KeyboardInterrupt):
        packed.pack(LAYOUTS.get("bbbc021"), sources["bbbc021"], data_dir / "bbbc021")
    assert not is_packed(data_dir / "bbbc021") and not (data_dir / "bbbc021").exists()
    monkeypatch.setattr(packed, "load_crop", real)
    (data_dir / ".bbbc021.partial-999").mkdir()  # what a SIGKILL would leave
    packed.pack(LAYOUTS.get("bbbc021"), sources["bbbc021"], data_dir / "bbbc021")
    assert is_packed(data_dir / "bbbc021") and not list(data_dir.glob(".*partial*"))


def test_seeded_evaluation_subset_and_a_user_index(sources, tmp_path):
    obs = pd.DataFrame({"CPD_NAME": [f"g{i}" for i in range(300)] * 2, "SPLIT": ["test"] * 300 + ["train"] * 300,
                        "STATE": "trt"})
    a, b = choose_eval_perturbations(obs, 100), choose_eval_perturbations(obs, 100)
    assert a == b and len(a) == 100 and set(a) <= set(obs["CPD_NAME"])
    assert choose_eval_perturbations(obs, 100, seed=1) != a
    index = tmp_path / "cellflux_index.csv"
    pd.DataFrame({"BROAD_SAMPLE": ["BRDN0001479298"]}).to_csv(index, index=False)
    data_dir = tmp_path / "data"
    assert main(["prepare", "jump", "--source", str(sources["cpg0000"]), "--data-dir", str(data_dir),
                 "--eval-index", str(index)]) == 0
    assert TASKS.get("jump").load(data_dir).eval_perturbations() == ["BRDN0001479298"]


def test_missing_data_says_what_to_download_and_the_command(tmp_path, capsys):
    assert main(["run", "--method", "identity", "--task", "bbbc021-ood", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Zenodo record 8307629" in err and "python -m benchmark prepare bbbc021-ood --source" in err


def _pack_bbbc021(source, dest):
    return str(packed.pack(LAYOUTS.get("bbbc021"), source, dest))


def test_concurrent_preparations_of_one_dataset_both_succeed(sources, tmp_path):
    """Jobs of a sweep start together and each loads (so prepares) the same data."""
    from concurrent.futures import ProcessPoolExecutor

    dest = tmp_path / "data" / "bbbc021"
    with ProcessPoolExecutor(4) as pool:
        results = list(pool.map(_pack_bbbc021, [sources["bbbc021"]] * 4, [dest] * 4))
    assert results == [str(dest)] * 4 and is_packed(dest)
    assert len(packed.load_packed(dest).obs) == 48 and not list(dest.parent.glob(".*partial*"))


def test_prepare_of_the_simulated_screen_takes_no_source_and_a_published_task_needs_one(data_dir, tiny_data, capsys):
    assert main(["prepare", "synthetic-tiny", "--data-dir", str(data_dir)]) == 0
    assert "synthetic-tiny: 242 crops packed in" in capsys.readouterr().out
    assert main(["prepare", "synthetic-tiny", "--data-dir", str(data_dir), "--source", str(data_dir)]) == 2
    assert "is simulated; it takes no --source" in capsys.readouterr().err
    assert main(["prepare", "bbbc021", "--data-dir", str(data_dir)]) == 2
    assert "--source DIR (the unzipped IMPA_sources directory) is required" in capsys.readouterr().err
