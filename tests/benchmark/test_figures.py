"""The report's figures choose their rows deterministically and say what they show."""

import pytest

from benchmark.errors import BenchmarkError
from benchmark.figures import sample_perturbations
from benchmark.display import display_key


def test_the_sample_grid_shows_one_compound_per_moa_unless_named(tiny_data):
    rows = sample_perturbations(tiny_data)
    annot = tiny_data.obs.drop_duplicates("CPD_NAME").set_index("CPD_NAME")["ANNOT"]
    evaluated_moas = set(annot[tiny_data.eval_perturbations()])
    assert len(rows) == len(evaluated_moas) and {annot[p] for p in rows} == evaluated_moas
    assert sample_perturbations(tiny_data, ["taxol"]) == ["taxol"]
    with pytest.raises(BenchmarkError, match="'aspirin' is not evaluated in task synthetic-tiny"):
        sample_perturbations(tiny_data, ["aspirin"])


def test_the_stain_key_names_every_colour_and_what_is_not_shown():
    assert display_key(("actin", "tubulin", "DNA")) == "R = actin, G = tubulin, B = DNA"
    assert display_key(("DNA", "ER", "RNA", "AGP", "Mito")) == "R = DNA, G = ER, B = RNA (AGP, Mito not shown)"
    assert display_key(("DNA",)) == "grey = DNA" and display_key(("DNA", "ER")) == "grey = DNA (ER not shown)"
