"""Tiny datasets written in exactly the published layouts (random pixels, real structure).

The published data cannot be downloaded here, so the readers are tested on, and
the loader benchmark runs on, files laid out as IMPA publishes them: the same
directory rules, SAMPLE_KEY forms, metadata columns (with the stray `Unnamed`
index columns and both STATE conventions) and embedding CSVs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .layouts import LAYOUTS


PERTURBATIONS = {
    "bbbc021": ["taxol", "nocodazole", "AZ138"],
    "rxrx1": ["SMAD4", "TP53", "MTOR"],
    "cpg0000": ["BRD-K50720187-051-03-1", "BRDN0001479298", "ccsbBroad304_00805"],
}


def _key_and_batch(layout: str, plate: int, pert: int, i: int) -> tuple[str, str, str]:
    """(SAMPLE_KEY, BATCH, PLATE) of crop i of perturbation index `pert` on plate `plate`."""
    if layout == "bbbc021":
        week, barcode = f"Week{plate + 1}", str(22123 + plate)
        return f"{week}_{barcode}_{pert + 1}_{i + 1}_{i % 7 + 1}.0", f"{week}_{barcode}", barcode
    if layout == "rxrx1":
        exp = f"0{plate + 1}"
        return f"U2OS-{exp}_1_B{pert + 2:02d}_s{i % 2 + 1}_{i + 1}", f"U2OS-{exp}", f"{exp}_1"
    barcode = f"BR0011699{6 + plate}"
    return f"{barcode}_L{pert + 3:02d}_{i % 9 + 1}_{i + 1}", "", barcode


def write_fixture(root: Path, layout: str, *, plates: int = 2, per_group: int = 6, seed: int = 0,
                  emb_dim: int = 16, perturbations: list[str] | None = None, templates: int = 0,
                  test_fraction: float = 0.5) -> Path:
    """Write a `layout` dataset under `root` (an IMPA_sources-like directory) and return `root`: tiny by default;
    with `templates` > 0 every crop of a perturbation is one of that many pre-drawn crops, so that a dataset of the
    published size (hundreds of thousands of files) is written in minutes. The last `test_fraction` of each
    plate x perturbation group is the test split."""
    lay = LAYOUTS.get(layout)
    root = Path(root)
    rng = np.random.default_rng(seed)
    perts = perturbations or PERTURBATIONS[layout]
    size, channels = lay.image_size, len(lay.channels)
    pool = [[(rng.integers(0, 128, (size, size, channels)) + 40 * p % 128).astype(np.uint8) for _ in range(templates)]
            for p in range(len(perts) + 1)] if templates else None
    rows = []
    for plate in range(plates):
        for p, name in enumerate(["__control__", *perts]):
            for i in range(per_group):
                key, batch, barcode = _key_and_batch(layout, plate, p, i)
                # noise plus a brightness step per perturbation: controls and targets differ measurably
                crop = pool[p][(plate * per_group + i) % templates] if pool else \
                    (rng.integers(0, 128, (size, size, channels)) + 40 * p).astype(np.uint8)
                path = root / lay.images / lay.key_rule(key)
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, crop)
                control = name == "__control__"
                split = "train" if i < int(per_group * (1 - test_fraction)) else "test"
                if layout == "bbbc021":
                    rows.append({"SAMPLE_KEY": key, "BATCH": batch, "TABLE_NUMBER": p + 1, "IMAGE_NUMBER": i + 1,
                                 "OBJECT_NUMBER": float(i % 7 + 1), "CPD_NAME": "DMSO" if control else name,
                                 "SMILES": "CS(=O)C", "DOSE": 0.0 if control else 1.0,
                                 "ANNOT": "DMSO" if control else f"MoA{p}", "STATE": "control" if control else "trt",
                                 "PLATE": barcode, "SPLIT": split})
                elif layout == "rxrx1":
                    rows.append({"SAMPLE_KEY": key, "BATCH": batch, "CPD_NAME": "EMPTY" if control else name,
                                 "ANNOT": "negative_control" if control else "treated", "STATE": 0 if control else 1,
                                 "SPLIT": split})
                else:
                    rows.append({"SAMPLE_KEY": key, "PLATE": barcode, "WELL": key.split("_")[1],
                                 "PERT_TYPE": "Compound", "CPD_NAME": "none" if control else f"gene{p}",
                                 "STATE": 0 if control else 1, "ANNOT": "Compound", "GENE": f"gene{p}",
                                 "SEQUENCE": "CCO", "SPLIT": split, "BROAD_SAMPLE": "DMSO" if control else name})
    meta = pd.DataFrame(rows)
    meta.insert(0, "Unnamed: 0.1", np.arange(len(meta)))  # stray index columns, as in the published copies
    path = root / lay.metadata[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    meta.to_csv(path)  # written with its index: read back with index_col=0, as published
    names = {"bbbc021": ["DMSO", *perts], "rxrx1": perts, "cpg0000": perts}[layout]
    for j, rel in enumerate(lay.embeddings):
        dim = emb_dim + 4 * j  # cpg0000's three tables have different widths
        emb = pd.DataFrame(rng.normal(size=(len(names), dim)).astype(np.float32), index=names,
                           columns=[str(k) for k in range(dim)])
        if len(lay.embeddings) > 1:  # one modality per table
            emb = emb.iloc[j::len(lay.embeddings)]
        out = root / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        emb.to_csv(out)
    return root
