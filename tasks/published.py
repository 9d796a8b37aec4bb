"""Tasks on the published datasets: BBBC021, RxRx1 and JUMP (cpg0000).

Each reads the packed store `data/<layout>/` written by
`python -m benchmark prepare TASK --source DIR`; where it is missing, loading
says what to download and the exact command to run.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from benchmark.errors import BenchmarkError

from .layouts import LAYOUTS
from .packed import is_packed, load_packed, pack
from .task import Task, TaskData

# the BBBC021 compounds CellFlux holds out (Table 2b / 4)
BBBC021_OOD = ("docetaxel", "AZ841", "cytochalasin D", "simvastatin", "cyclohexamide", "latrunculin B",
               "epothilone B", "lactacystin")

DOWNLOAD = {
    "bbbc021": "IMPA_reproducibility.zip from Zenodo record 8307629 (~12.5 GB), unzipped",
    "rxrx1": "IMPA_reproducibility.zip from Zenodo record 8307629 (~12.5 GB), unzipped",
    "cpg0000": "IMPA_reproducibility.zip from Zenodo record 8307629 (~12.5 GB), unzipped "
               "(metadata_large_gene2vec.csv may be missing from it: IMPA issue #5, on figshare)",
}


# (embedding width, treated perturbations) of the published data (IMPA's embedding CSVs, theislab/IMPA 13eb82f
# `embeddings/`, and its metadata): BBBC021 26
# in-distribution + 8 OOD compounds, 1024 Morgan bits; RxRx1 1,042 genes, gene2vec 200; cpg0000 296 compounds +
# 296 sgRNAs + 155 ORFs, three tables zero-padded to the widest (1224)
PUBLISHED_SHAPE = {"bbbc021": (1024, 34), "rxrx1": (200, 1042), "cpg0000": (1224, 747)}


def store_dir(data_dir: Path, layout: str) -> Path:
    return Path(data_dir) / layout


def load_published(data_dir: Path, layout: str, task_name: str) -> TaskData:
    dest = store_dir(data_dir, layout)
    if not is_packed(dest):
        raise BenchmarkError(
            f"task {task_name}: no prepared data at {dest}. Download {DOWNLOAD[layout]}, then run: "
            f"python -m benchmark prepare {task_name} --source <unzipped>/IMPA_sources --data-dir {data_dir}")
    p = load_packed(dest)
    return TaskData(images=p.images, obs=p.obs, embeddings=p.embeddings, source=str(dest),
                    eval_subset=p.eval_perturbations, sha256=p.obs["SHA256"].tolist())


def prepare(task: Task, source: Path | None, data_dir: Path, *, embeddings: Path | None = None,
            eval_index: Path | None = None, force: bool = False) -> TaskData:
    """`python -m benchmark prepare`: check a published dataset and pack it (the simulated screen is simulated and
    packed by the same code, and takes no source); returns the task's data read back from the store."""
    if task.layout not in LAYOUTS.names():
        if source is not None:
            raise BenchmarkError(f"task {task.name} is simulated; it takes no --source")
        return task.load(data_dir)
    if source is None:
        raise BenchmarkError(f"task {task.name}: --source DIR (the unzipped IMPA_sources directory) is required")
    pack(LAYOUTS.get(task.layout), source, store_dir(data_dir, task.layout), embeddings=embeddings, eval_index=eval_index,
         force=force)
    return task.load(data_dir)


def published_tasks() -> list[Task]:
    def common(layout: str, name: str) -> dict:
        lay = LAYOUTS.get(layout)
        emb_dim, n_pert = PUBLISHED_SHAPE[layout]
        return dict(version="1", layout=layout, channels=lay.channels, image_size=lay.image_size, control=lay.control,
                    loader=partial(load_published, layout=layout, task_name=name), embedding_dim=emb_dim,
                    n_perturbations=n_pert)

    bbbc = "BBBC021 single-cell crops, 96 px (IMPA's preprocessing)"
    return [
        Task(name="bbbc021", dataset=bbbc, description="chemical perturbations, same-batch controls",
             moa=True, **common("bbbc021", "bbbc021")),
        Task(name="bbbc021-ood", dataset=bbbc, description="8 compounds removed from training, evaluated zero-shot",
             heldout=BBBC021_OOD, eval_only_heldout=True, moa=True, variant_of="bbbc021",
             **common("bbbc021", "bbbc021-ood")),
        Task(name="bbbc021-batchswap", dataset=bbbc, description="controls taken from another plate than the target",
             pairing="other-batch", moa=True, variant_of="bbbc021", **common("bbbc021", "bbbc021-batchswap")),
        Task(name="rxrx1", dataset="RxRx1 (U2OS siRNA), 96 px, 6 channels",
             description="genetic perturbations; a fixed seeded set of 100 evaluated", channel_rule="rgbmix",
             **common("rxrx1", "rxrx1")),
        Task(name="jump", dataset="JUMP cpg0000 pilot (U2OS; compound, CRISPR, ORF), 96 px, 5 channels",
             description="chemical and genetic perturbations; a fixed seeded set of 100 evaluated",
             channel_rule="first3", **common("cpg0000", "jump")),
    ]
