"""`describe`: the published configurations' networks, counted before any data or GPU time."""

import json

import pytest

from benchmark.cli import main
from benchmark.describe import describe


def test_the_official_cellflow_field_has_the_official_parameter_count_and_flops():
    d = describe("cellflow", "bbbc021", "official")
    field = d["networks"]["field"]
    assert field["parameters"] == 56_201_219  # CellFlux models/unet.py, config "bbbc021": 3 channels, condition 1024
    assert 400 < field["gflop_per_forward"] < 415  # about 407 GFLOP per image at 96 px
    assert d["profile"] == "official" and d["config"]["arch"] == "adm" and d["task"]["embedding_dim"] == 1024


def test_the_official_impa_networks_have_the_published_counts():
    d = describe("impa", "bbbc021-ood", "official")  # 34 compounds less the 8 held out: 26 discriminator heads
    nets = d["networks"]
    assert d["task"]["train_perturbations"] == 26
    assert {k: v["parameters"] for k, v in nets.items()} == {
        "generator": 24_318_595, "style_encoder": 14_329_472, "mapping": 66_624, "discriminator": 14_309_978}
    assert nets["discriminator"]["parameters"] - 26 * 513 == 14_296_640  # trunk + a 513-parameter head each
    with_34 = describe("impa", "bbbc021", "official")["networks"]["discriminator"]["parameters"]
    assert with_34 - nets["discriminator"]["parameters"] == 8 * 513


def test_the_official_phendiff_unet_is_the_published_one_less_its_class_table():
    d = describe("phendiff", "bbbc021", "official")
    assert d["networks"]["unet"]["parameters"] == 62_826_243 - 2 * 512
    assert d["networks"]["unet"]["input"][0] == [1, 3, 128, 128]  # trained and run at 128 px, as published


def test_describe_prints_json_and_refuses_bad_names_in_one_line(capsys):
    assert main(["describe", "--method", "identity", "--task", "synthetic"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["networks"] == {} and out["task"]["image_size"] == 48
    assert main(["describe", "--method", "cellflow", "--task", "nope"]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["cellflow", "impa", "phendiff"])
def test_every_trainable_method_describes_its_quick_profile_on_the_screen(method):
    nets = describe(method, "synthetic")["networks"]
    assert nets and all(v["parameters"] > 0 and v["gflop_per_forward"] >= 0 for v in nets.values())
