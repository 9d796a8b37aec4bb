"""Every method's `official` profile runs end to end on the tiny screen (networks shrunk, a couple of steps)."""

import json

import pytest

from benchmark.cli import main

TINY = {
    "cellflow": ["epochs=0", "steps=2", "width=32", "mults=1,1", "blocks=1", "batch_size=4", "grad_accum=2",
                 "batch_group=2", "nfe=4"],
    "impa": ["epochs=0.25", "dim_in=8", "max_conv_dim=32", "style_dim=16", "z_dim=4", "batch_size=4", "n_z=10"],
    "phendiff": ["widths=32,32", "norm_num_groups=8", "steps=2", "batch_size=4", "grad_accum=2", "resize=48",
                 "inversion_steps=2", "generation_steps=2", "warmup_steps=1"],
}
ACCUMULATED = {"devices": 1, "per_device": 2, "accumulation": 2, "effective": 4}
EXPECT = {"cellflow": {"precision": "fp16", "steps": 2, "batch": ACCUMULATED},
          "impa": {"precision": "no", "batch": {"devices": 1, "per_device": 4, "accumulation": 1, "effective": 4}},
          "phendiff": {"precision": "fp16", "steps": 2, "batch": ACCUMULATED}}


@pytest.mark.parametrize("method", sorted(TINY))
def test_the_official_profile_runs_end_to_end_on_the_tiny_screen(method, tmp_path, data_dir, tiny_data):
    sets = [a for kv in TINY[method] for a in ("--set", kv)]
    assert main(["run", "--method", method, "--task", "synthetic-tiny", "--profile", "official", "--out", str(tmp_path),
                 "--data-dir", str(data_dir), "--features", "tiny", *sets]) == 0
    (run,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    man = json.loads((run / "manifest.json").read_text())
    assert man["profile"] == "official"
    for key, value in EXPECT[method].items():
        assert man["fit"][key] == value, key
    if method == "impa":  # a quarter of an epoch over the training controls, in full batches of 4
        assert man["fit"]["steps"] == round(0.25 * (man["fit"]["epoch_rows"] // 4))
