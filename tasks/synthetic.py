"""Tasks on the simulated screen: `synthetic`, `synthetic-ood`, `synthetic-batchswap`.

The screen is simulated on first use into the data directory and then read
back through the same IMPA-format reader as real BBBC021 data.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from .impa_format import bbbc021_path
from .layouts import Layout
from .packed import load_packed, pack
from .screen import (CHANNELS, COUNTERFACTUAL_INDEX, COUNTERFACTUALS, EMBEDDINGS, METADATA, OOD_COMPOUNDS,
                     ScreenConfig, screen_dir, simulate)
from .task import Task, TaskData


def screen_layout(config: ScreenConfig) -> Layout:
    """The simulated screen is written in BBBC021's layout, at the screen directory's root."""
    return Layout(name="synthetic", key_rule=bbbc021_path, images=".", metadata=(METADATA,), embeddings=(EMBEDDINGS,),
                  channels=CHANNELS, image_size=config.image_size)


def load_screen(data_dir: Path, config: ScreenConfig) -> TaskData:
    """Simulate (once), pack (once) through the same path as real data, then read the packed store."""
    root = simulate(screen_dir(data_dir, config), config)
    p = load_packed(pack(screen_layout(config), root, root / "packed"))
    return TaskData(
        images=p.images,
        obs=p.obs,
        embeddings=p.embeddings,
        source=str(root),
        counterfactuals=np.load(root / COUNTERFACTUALS, mmap_mode="r"),
        counterfactual_index=pd.read_csv(root / COUNTERFACTUAL_INDEX),
        sha256=p.obs["SHA256"].tolist(),
    )


def synthetic_task(variant: str = "", size: str = "default", seed: int = 0) -> Task:
    config = ScreenConfig.preset(size, seed=seed)
    suffix = f"-{variant}" if variant else ""
    sized = "" if size == "default" else f"-{size}"
    common = dict(version="1", dataset=f"simulated screen ({size}, seed {seed})", channels=CHANNELS,
                  image_size=config.image_size, layout="synthetic", moa=True, loader=partial(load_screen, config=config),
                  embedding_dim=1024, n_perturbations=len(config.compounds))  # Morgan bits (RDKit, r=2)
    if variant == "":
        what = ("two compounds of strong, opposite effects: the learnability check's known answer" if size == "learn"
                else "simulated chemical screen, same-batch controls")
        return Task(name=f"synthetic{sized}", description=what, **common)
    if variant == "ood":
        held = tuple(c for c in OOD_COMPOUNDS if c in config.compounds)
        return Task(name=f"synthetic{sized}{suffix}", description="compounds never seen in training, conditioned by fingerprint",
                    heldout=held, eval_only_heldout=True, variant_of=f"synthetic{sized}", **common)
    if variant == "batchswap":
        return Task(name=f"synthetic{sized}{suffix}", description="controls taken from another plate than the target",
                    pairing="other-batch", variant_of=f"synthetic{sized}", **common)
    raise ValueError(variant)


def builtin_tasks() -> list[Task]:
    return [*(synthetic_task(v, size) for size in ("default", "tiny") for v in ("", "ood", "batchswap")),
            synthetic_task("", "calibration"), synthetic_task("", "learn")]
