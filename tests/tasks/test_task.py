import pytest

from benchmark.registry import TASKS


def test_eval_plan_pairs_same_batch_and_is_seeded(tiny_data):
    plan = tiny_data.eval_plan()
    req = plan.requests
    assert len(req) == len(plan.reference)
    assert (req["BATCH"].to_numpy() == plan.reference["BATCH"].to_numpy()).all()
    assert (req["CPD_NAME"].to_numpy() == plan.reference["CPD_NAME"].to_numpy()).all()
    assert set(tiny_data.obs.loc[req["control_row"], "STATE"]) == {"control"}
    assert set(tiny_data.obs.loc[req["control_row"], "SPLIT"]) == {"test"}
    again = tiny_data.eval_plan()
    assert plan.digest() == again.digest()
    assert tiny_data.eval_plan(seed=1).digest() != plan.digest()


def test_batchswap_pairs_other_plates(data_dir):
    data = TASKS.get("synthetic-tiny-batchswap").load(data_dir)
    plan = data.eval_plan()
    assert (plan.requests["BATCH"].to_numpy() != plan.reference["BATCH"].to_numpy()).all()


def test_ood_removes_heldout_compounds_from_training(data_dir):
    data = TASKS.get("synthetic-tiny-ood").load(data_dir)
    held = set(data.task.heldout)
    assert held == {"docetaxel", "simvastatin"}
    assert held.isdisjoint(data.obs["CPD_NAME"].iloc[data.train_rows()])
    assert set(data.eval_perturbations()) == held
    assert {"taxol", "mevinolin/lovastatin"} <= set(data.train_perturbations())  # same-MoA siblings stay


def test_split_manifest_hash_is_stable(tiny_data, tmp_path):
    h1 = tiny_data.write_split_manifest(tmp_path / "m.csv")
    h2 = tiny_data.write_split_manifest(tmp_path / "m2.csv")
    assert h1 == h2 and len(h1) == 64
    text = (tmp_path / "m.csv").read_text().splitlines()
    assert text[0] == "SAMPLE_KEY,SPLIT,ROLE,CPD_NAME,SHA256"
    assert len(text) == len(tiny_data.obs) + 1


def test_wrong_channel_count_is_named(tiny_data):
    import dataclasses

    from benchmark.errors import BenchmarkError

    task = dataclasses.replace(tiny_data.task, channels=("a", "b", "c", "d", "e"))
    bad = dataclasses.replace(tiny_data, task=task)
    with pytest.raises(BenchmarkError, match="crops have 3 channels; task synthetic-tiny expects 5"):
        bad.validate()
