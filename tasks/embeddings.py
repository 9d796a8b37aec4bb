"""Perturbation embeddings: Morgan fingerprints from SMILES, or a published CSV.

An embedding table is a DataFrame indexed by perturbation name, one float
column per dimension, as IMPA publishes them (`emb_fp.csv`, gene2vec, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from benchmark.errors import BenchmarkError


def morgan_fingerprints(smiles: Mapping[str, str], radius: int = 2, n_bits: int = 1024, counts: bool = False) -> pd.DataFrame:
    """RDKit Morgan fingerprints; binary bits by default (IMPA's `emb_fp_all.csv`).

    `counts=True` gives count fingerprints (IMPA's `emb_fp.csv`).
    """
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdFingerprintGenerator

    RDLogger.DisableLog("rdApp.*")
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    rows = {}
    for name, smi in smiles.items():
        if not isinstance(smi, str) or not smi.strip():
            raise BenchmarkError(f"perturbation {name!r}: no SMILES given; expected a SMILES string to compute its Morgan fingerprint")
        mol = Chem.MolFromSmiles(smi)
        if mol is None:
            raise BenchmarkError(f"perturbation {name!r}: RDKit cannot parse SMILES {smi!r}")
        fp = gen.GetCountFingerprintAsNumPy(mol) if counts else gen.GetFingerprintAsNumPy(mol)
        rows[name] = fp.astype(np.float32)
    return pd.DataFrame.from_dict(rows, orient="index", columns=[str(i) for i in range(n_bits)])


def read_embedding_csv(path: Path) -> pd.DataFrame:
    """Read an IMPA/CellFlux embedding CSV (first column = perturbation name)."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"{path}: embedding file not found")
    df = pd.read_csv(path, index_col=0)
    df.index = df.index.astype(str)
    bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise BenchmarkError(f"{path}: column {bad[0]!r} is not numeric; expected one numeric column per embedding dimension")
    if df.isna().any().any():
        row = df.index[df.isna().any(axis=1)][0]
        raise BenchmarkError(f"{path}: row {row!r} has NaN values; expected finite embeddings")
    if df.index.duplicated().any():
        raise BenchmarkError(f"{path}: perturbation {df.index[df.index.duplicated()][0]!r} appears twice")
    return df.astype(np.float32)


def lookup(table: pd.DataFrame, names: list[str], source: str) -> np.ndarray:
    """Rows of `table` for `names`, failing on the first name without embedding."""
    missing = [n for n in dict.fromkeys(names) if n not in table.index]
    if missing:
        raise BenchmarkError(f"{source}: perturbation {missing[0]!r} has no embedding ({len(missing)} missing in all)")
    return table.loc[names].to_numpy(np.float32, copy=True)
