"""A tiny CellFlow run through the CLI, then its trajectory strips from the store."""

import json

import numpy as np
from PIL import Image

from benchmark.cli import main

def test_forward_and_reverse_strips(cellflow_run, data_dir, tmp_path, tiny_data):
    code = main(["trajectory", str(cellflow_run), "--perturbation", "taxol", "--frames", "0,0.5,1", "--n", "3",
                 "--data-dir", str(data_dir), "--out", str(tmp_path)])
    assert code == 0
    forward = np.load(next(tmp_path.glob("*-taxol-forward.npy")))
    reverse = np.load(next(tmp_path.glob("*-taxol-reverse.npy")))
    assert forward.shape == (3 * 32, 3 * 32, 3) and reverse.shape == forward.shape
    for kind in ("forward", "reverse"):  # the labelled figure beside the pixels: larger than the bare strip
        figure = np.asarray(Image.open(next(tmp_path.glob(f"*-taxol-{kind}.png"))))
        assert figure.shape[0] > forward.shape[0] and figure.shape[1] > forward.shape[1]
    meta = json.loads(next(tmp_path.glob("*-taxol.json")).read_text())
    rows = tiny_data.obs.reset_index().set_index("SAMPLE_KEY").loc[meta["control_keys"], "index"].to_numpy()
    assert np.array_equal(forward[:, :32], np.concatenate(list(tiny_data.images[rows]), axis=0))  # frame 0 = controls
    trt = tiny_data.obs.reset_index().set_index("SAMPLE_KEY").loc[meta["treated_keys"], "index"].to_numpy()
    assert np.array_equal(reverse[:, :32], np.concatenate(list(tiny_data.images[trt]), axis=0))  # reverse starts at t=1


def test_trajectory_of_a_method_without_flow_is_a_clear_error(tmp_path, data_dir, capsys):
    runs = tmp_path / "runs"
    assert main(["run", "--method", "identity", "--task", "synthetic-tiny", "--out", str(runs), "--data-dir",
                 str(data_dir), "--features", "tiny"]) == 0
    (run,) = [p for p in runs.iterdir() if not p.name.startswith(".")]
    assert main(["trajectory", str(run), "--perturbation", "taxol", "--data-dir", str(data_dir)]) == 2
    assert "has no trajectories" in capsys.readouterr().err
