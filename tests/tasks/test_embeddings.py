from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.errors import BenchmarkError
from tasks.compounds import bbbc021_compounds
from tasks.embeddings import lookup, morgan_fingerprints, read_embedding_csv

DATA = Path(__file__).parents[1] / "data"


@pytest.mark.parametrize("fixture,counts", [("impa_emb_fp_all.csv", False), ("impa_emb_fp.csv", True)])
def test_our_rdkit_fingerprints_equal_the_published_impa_ones(fixture, counts):
    """Every SMILES we ship reproduces IMPA's published Morgan fingerprint (r=2, 1024) exactly."""
    published = read_embedding_csv(DATA / fixture)
    table = bbbc021_compounds()
    ours = morgan_fingerprints(dict(zip(table["CPD_NAME"], table["SMILES"])), counts=counts)
    assert set(published.index) == set(ours.index)
    diff = (ours.loc[published.index].to_numpy() != published.to_numpy()).sum(axis=1)
    assert diff.max() == 0, dict(zip(published.index, diff))


def test_unparseable_smiles_and_missing_embeddings_are_clear_errors(tmp_path):
    with pytest.raises(BenchmarkError, match="'weird': RDKit cannot parse SMILES 'C1CC'"):
        morgan_fingerprints({"weird": "C1CC"})
    with pytest.raises(BenchmarkError, match="'nameless': no SMILES"):
        morgan_fingerprints({"nameless": ""})
    table = pd.DataFrame(np.zeros((1, 3)), index=["a"])
    with pytest.raises(BenchmarkError, match="perturbation 'b' has no embedding"):
        lookup(table, ["a", "b"], "emb.csv")
    bad = tmp_path / "emb.csv"
    bad.write_text(",0,1\na,1,x\n")
    with pytest.raises(BenchmarkError, match="emb.csv: column '1' is not numeric"):
        read_embedding_csv(bad)
