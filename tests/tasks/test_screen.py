import hashlib

import numpy as np

from benchmark.metrics.features import Morphology
from tasks.compounds import bbbc021_compounds
from tasks.screen import (CHANNELS, NEUTRAL, Cell, Plate, ScreenConfig, _cell_rng, compound_effect, render,
                          simulate)


def tree_digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_screen_is_deterministic_from_its_seed(tmp_path):
    cfg = ScreenConfig.preset("tiny", seed=3)
    a = simulate(tmp_path / "a", cfg)
    b = simulate(tmp_path / "b", cfg)
    assert tree_digest(a) == tree_digest(b)
    c = simulate(tmp_path / "c", ScreenConfig.preset("tiny", seed=4))
    assert tree_digest(a) != tree_digest(c)
    assert not list(tmp_path.glob("*.tmp-*"))  # nothing partial left behind


def test_written_layout_is_impa_bbbc021(tiny_data):
    obs = tiny_data.obs
    assert set(obs["STATE"]) == {"control", "trt"}
    assert set(obs.loc[obs["STATE"] == "control", "ANNOT"]) == {"DMSO"}
    assert obs["SAMPLE_KEY"].str.match(r"^Week\d+_SIM\d+_\d+_\d+_\d+\.0$").all()
    assert (obs["BATCH"] == obs["SAMPLE_KEY"].str.split("_").str[:2].str.join("_")).all()
    assert tiny_data.images.shape[1:] == (32, 32, 3)


def test_counterfactual_is_the_same_cell(tiny_data):
    """Rendering a stored control's latent state with no effect reproduces its crop; the stored
    counterfactual is that cell under the compound."""
    cfg = ScreenConfig.preset("tiny")
    obs = tiny_data.obs
    row = obs.index[(obs["STATE"] == "control") & (obs["SPLIT"] == "test")][0]
    key = obs.loc[row, "SAMPLE_KEY"]
    plate_idx = int(obs.loc[row, "PLATE"][3:]) - 1
    plate = Plate.sample(plate_idx, cfg.seed)
    i = cfg.train_controls + (obs[(obs["PLATE"] == obs.loc[row, "PLATE"]) & (obs["CPD_NAME"] == "DMSO") & (obs["SPLIT"] == "test")].index.get_loc(row))
    cell = Cell.sample(_cell_rng(cfg.seed, plate_idx, 0, i), plate)
    assert np.array_equal(render(cell, NEUTRAL, 0.0, plate, cfg.image_size), tiny_data.images[row])
    eff, st = compound_effect("taxol", "Microtubule stabilizers", cfg.seed)
    cf = tiny_data.counterfactual([key], ["taxol"])[0]
    assert np.array_equal(render(cell, eff, st, plate, cfg.image_size), cf)
    assert not np.array_equal(cf, tiny_data.images[row])


def test_moa_effects_move_morphology_in_the_described_direction():
    plate = Plate.sample(0, 0)
    morph = Morphology(CHANNELS)
    area = morph.feature_names.index("nuc:area")
    cells = [Cell.sample(_cell_rng(0, 0, 0, i), plate) for i in range(40)]
    table = bbbc021_compounds()

    def mean_area(name):
        eff, st = compound_effect(name, table.loc[name, "ANNOT"], 0) if name != "DMSO" else (NEUTRAL, 0.0)
        return morph(np.stack([render(c, eff, st, plate, 48) for c in cells]))[:, area].mean()

    ctrl = mean_area("DMSO")
    assert mean_area("demecolcine") < 0.85 * ctrl  # microtubule destabiliser: smaller nuclei
    assert mean_area("chlorambucil") > 1.15 * ctrl  # DNA damage: enlarged nuclei


def test_plates_differ_technically():
    a, b = Plate.sample(0, 0), Plate.sample(1, 0)
    assert a.gain != b.gain and a.batch != b.batch
