"""Tasks on the simulated screen: `synthetic`, `synthetic-ood`, `synthetic-batchswap`.

The screen is simulated on first use into the data directory and then read
back through the same IMPA-format reader as real BBBC021 data.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from .embeddings import read_embedding_csv
from .impa_format import bbbc021_path, load_crops, read_metadata
from .screen import (CHANNELS, COUNTERFACTUAL_INDEX, COUNTERFACTUALS, EMBEDDINGS, METADATA, OOD_COMPOUNDS,
                     ScreenConfig, screen_dir, simulate)
from .task import Task, TaskData


def load_screen(data_dir: Path, config: ScreenConfig) -> TaskData:
    root = simulate(screen_dir(data_dir, config), config)
    obs = read_metadata(root / METADATA)
    size = config.image_size
    images = load_crops(root, obs["SAMPLE_KEY"].tolist(), bbbc021_path, (size, size, len(CHANNELS)))
    return TaskData(
        images=images,
        obs=obs,
        embeddings=read_embedding_csv(root / EMBEDDINGS),
        source=str(root),
        counterfactuals=np.load(root / COUNTERFACTUALS, mmap_mode="r"),
        counterfactual_index=pd.read_csv(root / COUNTERFACTUAL_INDEX),
    )


def synthetic_task(variant: str = "", size: str = "default", seed: int = 0) -> Task:
    config = ScreenConfig.preset(size, seed=seed)
    suffix = f"-{variant}" if variant else ""
    sized = "" if size == "default" else f"-{size}"
    common = dict(version="1", dataset=f"simulated screen ({size}, seed {seed})", channels=CHANNELS,
                  image_size=config.image_size, loader=partial(load_screen, config=config))
    if variant == "":
        return Task(name=f"synthetic{sized}", description="simulated chemical screen, same-batch controls", **common)
    if variant == "ood":
        held = tuple(c for c in OOD_COMPOUNDS if c in config.compounds)
        return Task(name=f"synthetic{sized}{suffix}", description="compounds never seen in training, conditioned by fingerprint",
                    heldout=held, eval_only_heldout=True, **common)
    if variant == "batchswap":
        return Task(name=f"synthetic{sized}{suffix}", description="controls taken from another plate than the target",
                    pairing="other-batch", **common)
    raise ValueError(variant)


def builtin_tasks() -> list[Task]:
    return [synthetic_task(v, size) for size in ("default", "tiny") for v in ("", "ood", "batchswap")]
