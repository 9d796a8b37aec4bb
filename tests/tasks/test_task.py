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


def test_the_screen_writes_a_validation_split_disjoint_from_train_and_test(tiny_data):
    obs = tiny_data.obs
    val = obs[obs["SPLIT"] == "val"]
    assert len(val) and set(val["STATE"]) == {"control", "trt"}
    assert set(val["SAMPLE_KEY"]).isdisjoint(obs.loc[obs["SPLIT"] != "val", "SAMPLE_KEY"])
    assert set(tiny_data.train_data().obs["SPLIT"]) == {"train"}
    # every validation control has its counterfactuals, so the paired error is known on validation
    plan = tiny_data.eval_plan(split="val", per_perturbation=2)
    truth = tiny_data.counterfactual(plan.requests["control_key"].tolist(), plan.requests["CPD_NAME"].tolist())
    assert truth is not None and len(truth) == len(plan.requests)
    assert set(obs.loc[plan.requests["control_row"], "SPLIT"]) == {"val"}
    assert set(plan.reference["SPLIT"]) == {"val"}
    assert plan.reference.groupby("CPD_NAME").size().max() <= 2


def test_a_validation_split_is_carved_from_train_by_a_seeded_stratified_rule(tiny_data):
    from tasks.task import TaskData

    keep = (tiny_data.obs["SPLIT"] != "val").to_numpy()  # data without a validation split, as IMPA's

    def carved(seed: int) -> TaskData:
        d = TaskData(images=tiny_data.images[keep], obs=tiny_data.obs[keep].reset_index(drop=True),
                     embeddings=tiny_data.embeddings, source="test", task=tiny_data.task)
        d.carve_validation(0.25, seed)
        return d

    a, b, c = carved(0), carved(0), carved(1)
    val = a.obs[a.obs["SPLIT"] == "val"]
    train = tiny_data.obs[keep & (tiny_data.obs["SPLIT"] == "train").to_numpy()]
    groups = train.groupby(["CPD_NAME", "BATCH"]).size()
    picked = val.groupby(["CPD_NAME", "BATCH"]).size().reindex(groups.index, fill_value=0)
    assert (picked == (0.25 * groups + 0.5).astype(int).clip(upper=groups - 1)).all()  # every group, its share
    test_keys = set(tiny_data.obs.loc[tiny_data.obs["SPLIT"] == "test", "SAMPLE_KEY"])
    assert set(a.obs.loc[a.obs["SPLIT"] == "test", "SAMPLE_KEY"]) == test_keys  # the test split is untouched
    assert test_keys.isdisjoint(val["SAMPLE_KEY"])
    assert a.obs["SPLIT"].equals(b.obs["SPLIT"]) and not a.obs["SPLIT"].equals(c.obs["SPLIT"])
    assert "val" in set(a.split_manifest()["ROLE"])
    assert set(a.train_data().obs["SAMPLE_KEY"]).isdisjoint(val["SAMPLE_KEY"])
