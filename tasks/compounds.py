"""The BBBC021 compounds whose SMILES we ship, with their MoA (paper, Table 3).

Every SMILES here reproduces, bit for bit, the Morgan fingerprint IMPA
published for that compound (`tests/tasks/test_embeddings.py` checks it against
`emb_fp_all.csv`); compounds whose structure we could not confirm that way
(AZ-series, bryostatin, cisplatin, latrunculin B, cytochalasin B, proteasome
inhibitor I) are left out rather than guessed.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import pandas as pd

CONTROL = "DMSO"


@lru_cache(maxsize=1)
def bbbc021_compounds() -> pd.DataFrame:
    """Columns CPD_NAME, SMILES, ANNOT (MoA), indexed by CPD_NAME."""
    with resources.files("tasks.data").joinpath("bbbc021_compounds.csv").open("r") as f:
        df = pd.read_csv(f)
    return df.set_index("CPD_NAME", drop=False)
