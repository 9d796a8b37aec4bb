"""Where each published dataset keeps its crops, metadata and embeddings.

These are the facts of the published data in one place (the paths of the official configs,
theislab/IMPA 13eb82f `config_hydra/config/*.yaml` and yuhui-zh15/CellFlux 3256adc `configs/*.yaml`): a
`Layout` says how to find a dataset inside the extracted IMPA archive
(`IMPA_sources/`, the `--source` of `prepare`), how a SAMPLE_KEY names its
crop file, which column keys the embedding table, and what the channels are.
Everything else (validation, packing) is generic over layouts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from benchmark.registry import Registry

from .impa_format import bbbc021_path, cpg0000_path, rxrx1_path

BBBC021_CHANNELS = ("actin", "tubulin", "DNA")
# order undocumented for cpg0000 and RxRx1 (inferred from the Cell Painting / RxRx1 stain lists)
CPG0000_CHANNELS = ("DNA", "ER", "RNA", "AGP", "Mito")
RXRX1_CHANNELS = ("Hoechst", "ConA", "Phalloidin", "SYTO14", "MitoTracker", "WGA")


@dataclass(frozen=True)
class Layout:
    name: str
    key_rule: Callable[[str], str]  # SAMPLE_KEY -> crop path relative to `images`
    images: str  # crop root, relative to the source directory
    metadata: tuple[str, ...]  # candidate metadata CSVs, first existing wins
    embeddings: tuple[str, ...]  # embedding CSVs, rows concatenated
    channels: tuple[str, ...]
    image_size: int = 96
    perturbation_key: str = "CPD_NAME"  # the column that names a row of the embedding table
    control: str = "DMSO"  # the name control rows get, whatever the source calls them
    batch_column: str = "BATCH"  # the technical batch controls are paired within
    eval_subset: int | None = None  # evaluate a fixed, seeded sample of this many perturbations

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(("SAMPLE_KEY", "CPD_NAME", "ANNOT", "STATE", "SPLIT", self.batch_column,
                                    self.perturbation_key)))


BUILTIN_LAYOUTS = (  # registered in LAYOUTS below
    Layout(
        name="bbbc021", key_rule=bbbc021_path, images="datasets/bbbc021_all",
        metadata=("datasets/bbbc021_all/metadata/bbbc021_df_all.csv",),
        embeddings=("embeddings/csv/emb_fp.csv",), channels=BBBC021_CHANNELS),
    Layout(
        name="rxrx1", key_rule=rxrx1_path, images="datasets/rxrx1",
        metadata=("datasets/rxrx1/metadata/rxrx1_df.csv",),
        embeddings=("embeddings/csv/rxrx1_gene2vec_embeddings.csv",), channels=RXRX1_CHANNELS,
        control="negative_control", eval_subset=100),
    Layout(
        name="cpg0000", key_rule=cpg0000_path,
        images="datasets/cpg0000/cpg0000_u2os_normalized_segmented_large",
        metadata=("datasets/cpg0000/metadata/metadata_large.csv", "datasets/cpg0000/metadata/metadata_large_gene2vec.csv"),
        embeddings=("embeddings/cpg0000/cpd_embeddings.csv", "embeddings/cpg0000/crispr_embeddings.csv",
                    "embeddings/cpg0000/orf_embeddings.csv"),
        channels=CPG0000_CHANNELS, perturbation_key="BROAD_SAMPLE", control="none", batch_column="PLATE",
        eval_subset=100),
)


LAYOUTS: Registry = Registry("dataset layout", lambda: {lay.name: (lambda lay=lay: lay) for lay in BUILTIN_LAYOUTS},
                             base=lambda: Layout)
