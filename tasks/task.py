"""The Task: a versioned, declarative description of one benchmark problem.

A Task says which data, which channels, which split, which perturbations are
evaluated, how controls are paired with targets, and which embeddings condition
the methods. `Task.load()` turns it into `TaskData`; `TaskData.eval_plan()`
fixes, with a recorded seed, exactly which real images are the reference and
which control seeds each generated image.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal

import numpy as np
import pandas as pd

from benchmark import io
from benchmark.errors import BenchmarkError
from benchmark.rows import RowView

from .embeddings import lookup

if TYPE_CHECKING:
    from benchmark.method import TrainData

Pairing = Literal["same-batch", "other-batch"]


@dataclass(frozen=True)
class Task:
    """Declarative task spec. `source` builds the data on disk and returns a loader."""

    name: str
    version: str
    dataset: str
    channels: tuple[str, ...]
    image_size: int
    description: str
    loader: Callable[[Path], "TaskData"] = field(repr=False, compare=False)
    control: str = "DMSO"
    pairing: Pairing = "same-batch"
    heldout: tuple[str, ...] = ()  # removed from training, evaluated zero-shot
    eval_only_heldout: bool = False
    max_eval_per_perturbation: int | None = None
    channel_rule: str = "rgb"
    layout: str = ""  # the on-disk layout `prepare` packs for this task (tasks/layouts.py)
    moa: bool = False  # ANNOT holds mechanisms of action: MoA accuracy is scored (Table 2a)
    eval_seed: int = 0
    # validation split (model selection, learning curves; never the test split): where the data have none, this
    # fraction of every (perturbation, batch) group of the train split, drawn with val_seed
    val_fraction: float = 0.1
    val_seed: int = 0
    variant_of: str = ""  # the task this one varies (an -ood or -batchswap task's base), for tables across tasks
    # declared shape of the published data, so networks can be sized before the data are there (`describe`)
    embedding_dim: int = 0  # width of the perturbation embedding table
    n_perturbations: int = 0  # treated perturbations in the dataset, held-out ones included

    @property
    def n_train_perturbations(self) -> int:
        return self.n_perturbations - len(self.heldout)

    def spec(self) -> dict:
        d = asdict(self)
        d.pop("loader")
        return d

    def load(self, data_dir: Path) -> "TaskData":
        data = self.loader(Path(data_dir))
        data.task = self
        data.validate()
        if not (data.obs["SPLIT"] == "val").any():
            data.carve_validation(self.val_fraction, self.val_seed)
        return data


@dataclass
class EvalPlan:
    """Which reference images are scored against, and which control seeds each generated image.

    `reference` and `requests` are row-aligned per perturbation: request i is the
    control that seeds the generated counterpart of reference image i (same
    batch for same-batch pairing), so both sides have the same batch mix.
    """

    reference: pd.DataFrame  # rows of obs: the real targets
    requests: pd.DataFrame  # columns: control_row, control_key, BATCH, target_batch, CPD_NAME
    seed: int
    heldout_pool: np.ndarray  # obs rows of real test targets kept out of the reference (oracle's pool)

    def digest(self) -> str:
        blob = self.reference["SAMPLE_KEY"].str.cat(sep="\n") + "|" + self.requests["control_key"].str.cat(sep="\n")
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class TaskData:
    """A task's images and metadata in memory (or memory-mapped), plus embeddings."""

    images: np.ndarray  # (N, H, W, C) uint8
    obs: pd.DataFrame  # one row per image: SAMPLE_KEY, BATCH, PLATE, CPD_NAME, ANNOT, STATE, SPLIT
    embeddings: pd.DataFrame  # perturbation name -> embedding
    source: str  # where the data came from, for messages
    counterfactuals: np.ndarray | None = None  # (M, H, W, C) uint8, simulated screens only
    counterfactual_index: pd.DataFrame | None = None  # SAMPLE_KEY, CPD_NAME per row of counterfactuals
    eval_subset: list[str] | None = None  # evaluate only these (RxRx1 / JUMP: a fixed, seeded 100)
    sha256: list[str] | None = None  # per-crop pixel digests recorded when the store was packed
    task: Task | None = None

    def validate(self) -> None:
        t = self.task
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise BenchmarkError(f"{self.source}: images must be (N, H, W, C) uint8, got {self.images.shape} {self.images.dtype}")
        n, h, w, c = self.images.shape
        if c != len(t.channels):
            raise BenchmarkError(f"{self.source}: crops have {c} channels; task {t.name} expects {len(t.channels)} ({', '.join(t.channels)})")
        if (h, w) != (t.image_size, t.image_size):
            raise BenchmarkError(f"{self.source}: crops are {h}x{w}; task {t.name} expects {t.image_size}x{t.image_size}")
        if len(self.obs) != n:
            raise BenchmarkError(f"{self.source}: {len(self.obs)} metadata rows for {n} images")
        perts = sorted(set(self.obs["CPD_NAME"]) - {t.control})  # the control is a start, never a condition
        lookup(self.embeddings, perts, f"{self.source} embeddings")
        if t.control not in set(self.obs["CPD_NAME"]):
            raise BenchmarkError(f"{self.source}: no control images (CPD_NAME == {t.control!r})")

    # --- views -----------------------------------------------------------------
    @property
    def control(self) -> str:
        return self.task.control

    def rows(self, split: str, state: str | None = None, perts: list[str] | None = None) -> np.ndarray:
        m = self.obs["SPLIT"] == split
        if state is not None:
            m &= self.obs["STATE"] == state
        if perts is not None:
            m &= self.obs["CPD_NAME"].isin(perts)
        return np.flatnonzero(m.to_numpy())

    def train_rows(self) -> np.ndarray:
        """Training rows: every train image except those of held-out perturbations."""
        rows = self.rows("train")
        if self.task.heldout:
            rows = rows[~self.obs["CPD_NAME"].iloc[rows].isin(self.task.heldout).to_numpy()]
        return rows

    def carve_validation(self, fraction: float, seed: int) -> None:
        """Mark `fraction` of each (perturbation, batch) group of the train split as SPLIT "val" (at least one image
        stays in training): a seeded, stratified rule, so the split manifest and its hash record it."""
        if not 0 <= fraction < 1:
            raise BenchmarkError(f"task {self.task.name}: val_fraction={fraction}; expected 0 <= fraction < 1")
        rng = np.random.default_rng(seed)
        train = self.obs.iloc[self.rows("train")]
        picked = []
        for _, group in train.groupby(["CPD_NAME", "BATCH"], sort=True):
            k = min(int(np.floor(fraction * len(group) + 0.5)), len(group) - 1)
            picked.extend(rng.permutation(group.index.to_numpy())[:k])
        if picked:
            self.obs = self.obs.copy()
            self.obs.loc[np.sort(np.asarray(picked)), "SPLIT"] = "val"

    def train_perturbations(self) -> list[str]:
        names = self.obs["CPD_NAME"].iloc[self.train_rows()]
        return sorted(set(names) - {self.control})

    def train_data(self) -> "TrainData":
        """What a method's `fit` sees: the training rows, and one embedding row per training perturbation."""
        from benchmark.method import TrainData

        rows, perts = self.train_rows(), self.train_perturbations()
        # a view of the store, read per batch: a copy of the split would grow with the dataset (and per process)
        return TrainData(images=RowView(self.images, rows), obs=self.obs.iloc[rows], control=self.control, perturbations=perts,
                         embeddings=self.embed(perts), channels=self.task.channels, pairing=self.task.pairing)

    def eval_perturbations(self) -> list[str]:
        test = set(self.obs["CPD_NAME"].iloc[self.rows("test", "trt")])
        if self.task.eval_only_heldout:
            test &= set(self.task.heldout)
        if self.eval_subset is not None:
            test &= set(self.eval_subset)
        return sorted(test)

    def validation_perturbations(self) -> list[str]:
        """Training perturbations with validation images: held-out ones never steer model selection."""
        val = set(self.obs["CPD_NAME"].iloc[self.rows("val", "trt")])
        return sorted(val & set(self.train_perturbations()))

    def embed(self, names: list[str]) -> np.ndarray:
        return lookup(self.embeddings, names, f"{self.source} embeddings")

    def split_manifest(self) -> pd.DataFrame:
        """SAMPLE_KEY, SPLIT, role and pixel sha256 per image: the task's exact split."""
        role = np.where(self.obs["CPD_NAME"].isin(self.task.heldout), "heldout", self.obs["SPLIT"])
        digests = self.sha256 or [hashlib.sha256(self.images[i].tobytes()).hexdigest() for i in range(len(self.obs))]
        return pd.DataFrame({"SAMPLE_KEY": self.obs["SAMPLE_KEY"].to_numpy(), "SPLIT": self.obs["SPLIT"].to_numpy(),
                             "ROLE": role, "CPD_NAME": self.obs["CPD_NAME"].to_numpy(), "SHA256": digests})

    def write_split_manifest(self, path: Path) -> str:
        """Write the manifest CSV (if absent) and return its sha256: the split hash."""
        df = self.split_manifest()
        text = df.to_csv(index=False, lineterminator="\n")
        digest = io.sha256_bytes(text.encode())
        if not Path(path).is_file():
            io.write_text(path, text)
        return digest

    # --- evaluation ------------------------------------------------------------
    def eval_plan(self, seed: int | None = None, split: str = "test", per_perturbation: int | None = None) -> EvalPlan:
        """Reference images and control pairings, drawn with a recorded seed: of the test split (the evaluation), or
        of the validation split (learning curves and model selection, at most `per_perturbation` a perturbation)."""
        seed = self.task.eval_seed if seed is None else seed
        rng = np.random.default_rng(seed)
        obs = self.obs
        ctrl_rows = self.rows(split, "control")
        if len(ctrl_rows) == 0:
            raise BenchmarkError(f"{self.source}: no {split} control images to seed generation")
        ctrl_by_batch = {b: ctrl_rows[obs["BATCH"].iloc[ctrl_rows].to_numpy() == b] for b in sorted(set(obs["BATCH"].iloc[ctrl_rows]))}
        batches = sorted(ctrl_by_batch)
        ref_parts, req_parts, pool_parts = [], [], []
        perts = self.eval_perturbations() if split == "test" else self.validation_perturbations()
        for pert in perts:
            rows = rng.permutation(self.rows(split, "trt", [pert]))
            if self.counterfactuals is None and split == "test":
                # no counterfactuals: half the held-out targets are the oracle's, disjoint from the reference
                half = len(rows) // 2
                pool_parts.append(np.sort(rows[:half]))
                rows = rows[half:]
            cap = per_perturbation if split != "test" else self.task.max_eval_per_perturbation
            rows = np.sort(rows[:cap] if cap else rows)
            ref_parts.append(rows)
            for batch, group in pd.Series(rows).groupby(obs["BATCH"].iloc[rows].to_numpy()):
                if self.task.pairing == "same-batch" and batch in ctrl_by_batch:
                    source = batch
                else:
                    others = [b for b in batches if b != batch] or batches
                    source = others[int(rng.integers(len(others)))]
                pool = ctrl_by_batch[source]
                # without replacement while the pool lasts, so one control does not seed everything
                picks = rng.permutation(np.resize(rng.permutation(pool), len(group)))
                req_parts.append(pd.DataFrame({"control_row": picks, "target_batch": batch, "CPD_NAME": pert,
                                               "ref_row": group.to_numpy()}))
        ref = np.concatenate(ref_parts) if ref_parts else np.array([], dtype=int)
        req = pd.concat(req_parts, ignore_index=True) if req_parts else pd.DataFrame(columns=["control_row", "target_batch", "CPD_NAME", "ref_row"])
        # align requests to reference order
        order = pd.Series(np.arange(len(req)), index=req["ref_row"].to_numpy())
        req = req.iloc[order.loc[ref].to_numpy()].reset_index(drop=True)
        req["control_key"] = obs["SAMPLE_KEY"].iloc[req["control_row"]].to_numpy()
        req["BATCH"] = obs["BATCH"].iloc[req["control_row"]].to_numpy()
        pool = np.concatenate(pool_parts) if pool_parts else np.array([], dtype=int)
        return EvalPlan(reference=obs.iloc[ref].assign(row=ref).reset_index(drop=True), requests=req, seed=seed,
                        heldout_pool=pool)

    def annotations(self) -> pd.Series:
        """Each perturbation's ANNOT (its MoA where the task has MoAs), indexed by CPD_NAME."""
        return self.obs.drop_duplicates("CPD_NAME").set_index("CPD_NAME")["ANNOT"].astype(str)

    def heldout_pool(self, plan: EvalPlan) -> "HeldoutPool":
        """Real held-out images for the oracle: never the plan's reference images (seeded by the plan)."""
        return HeldoutPool(self, plan.heldout_pool, seed=plan.seed)

    def counterfactual(self, control_keys: list[str], perts: list[str]) -> np.ndarray | None:
        """The true perturbed version of each control cell, where the task knows it."""
        if self.counterfactuals is None:
            return None
        idx = pd.Series(np.arange(len(self.counterfactual_index)),
                        index=pd.MultiIndex.from_frame(self.counterfactual_index[["SAMPLE_KEY", "CPD_NAME"]]))
        try:
            rows = idx.loc[list(zip(control_keys, perts))].to_numpy()
        except KeyError:
            return None
        return self.counterfactuals[rows]


class HeldoutPool:
    """Real held-out target images for the oracle.

    On a simulated screen it returns each control cell's true counterfactual
    (the same cell, perturbed): a disjoint real image of the same distribution.
    Elsewhere it draws, without replacement where possible, from held-out
    targets of the same perturbation and batch that are not in the reference.
    """

    def __init__(self, data: "TaskData", pool_rows: np.ndarray, seed: int) -> None:
        self.data = data
        rng = np.random.default_rng(seed)
        obs = data.obs.iloc[pool_rows]
        self.rows = {key: rng.permutation(group.index) for key, group in obs.groupby(["CPD_NAME", "BATCH"])}
        self.by_pert = {key: rng.permutation(group.index) for key, group in obs.groupby("CPD_NAME")}
        self.cursor: dict[object, int] = {}

    def _next(self, key: object, pool: np.ndarray) -> int:
        """Cycle through a shuffled pool: no repeats until it is exhausted."""
        i = self.cursor.get(key, 0)
        self.cursor[key] = i + 1
        return int(pool[i % len(pool)])

    def draw(self, control_keys: list[str], perturbations: list[str], target_batches: list[str]) -> np.ndarray:
        """(N, H, W, C) uint8: one real held-out image per request."""
        cf = self.data.counterfactual(control_keys, perturbations)
        if cf is not None:
            return np.asarray(cf)
        picks = []
        for pert, batch in zip(perturbations, target_batches):
            key, pool = (pert, batch), self.rows.get((pert, batch))
            if pool is None or len(pool) == 0:
                key, pool = pert, self.by_pert.get(pert)
            if pool is None or len(pool) == 0:
                raise LookupError(f"no held-out image of {pert!r} for the oracle")
            picks.append(self._next(key, pool))
        return np.asarray(self.data.images[np.asarray(picks)])
