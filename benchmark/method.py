"""The Method interface every model implements: fit, generate, save, load.

Images cross this boundary as float32 tensors (N, C, H, W) in [-1, 1]; the
suite converts to and from the uint8 crops on disk. Perturbations arrive as
names *and* embedding vectors, so a method that conditions on embeddings can
translate to perturbations it never saw.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from benchmark import io
from benchmark.errors import BenchmarkError
from benchmark.rows import RowView

CONFIG_FILE = "config.json"  # in a saved model folder: the resolved config


@dataclass(frozen=True)
class Capabilities:
    """What a method needs and can do; the runner checks these against the task."""

    needs_control: bool = True  # generation starts from a control image
    unseen_perturbations: bool = False  # can translate to perturbations absent from training
    channels: tuple[int, ...] | None = None  # supported channel counts; None = any
    reads_heldout: bool = False  # sees real held-out images (the oracle only)
    trajectories: bool = False  # has `trajectory(controls, embeddings, frames, reverse)`: a run draws its strips


def as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [-1, 1]: the one map from pixels to what methods see."""
    return images.float() / 127.5 - 1


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) in [-1, 1]; a read-only array (a memory map) is copied first, as
    torch wants writable memory."""
    images = np.ascontiguousarray(images)
    if not images.flags.writeable:
        images = images.copy()
    return as_float(torch.from_numpy(images).permute(0, 3, 1, 2))


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (N, C, H, W) in [-1, 1] -> uint8 (N, H, W, C); refuses NaN."""
    x = images.detach().float().cpu()
    if not torch.isfinite(x).all():
        raise BenchmarkError("generated images contain NaN/inf; the method diverged")
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


@dataclass
class TrainData:
    """Training images of a task plus what a method needs to pair and condition them."""

    images: np.ndarray | RowView  # (N, H, W, C) uint8, controls and treated: a view of the store, read per batch
    obs: pd.DataFrame  # aligned metadata (BATCH, PLATE, CPD_NAME, ANNOT, STATE)
    control: str
    perturbations: list[str]  # treated perturbations present in training
    embeddings: np.ndarray  # (len(perturbations), D) float32: row i conditions perturbations[i]
    channels: tuple[str, ...]
    pairing: str = "same-batch"

    def __post_init__(self) -> None:
        self.obs = self.obs.reset_index(drop=True)
        if len(self.embeddings) != len(self.perturbations):
            raise BenchmarkError(f"training data: {len(self.embeddings)} embedding rows for {len(self.perturbations)} "
                                 "perturbations; expected one row each")
        ctrl = (self.obs["CPD_NAME"] == self.control).to_numpy()
        self.control_rows = np.flatnonzero(ctrl)
        self.treated_rows = np.flatnonzero(~ctrl)
        batches = self.obs["BATCH"].to_numpy()
        self._controls_by_batch = {b: self.control_rows[batches[self.control_rows] == b] for b in np.unique(batches[self.control_rows])}

    def embeddings_of(self, names: list[str]) -> np.ndarray:
        """The embedding rows of training perturbations `names`."""
        index = {p: i for i, p in enumerate(self.perturbations)}
        missing = [n for n in names if n not in index]
        if missing:
            raise BenchmarkError(f"perturbation {missing[0]!r} is not a training perturbation")
        return self.embeddings[[index[n] for n in names]]

    def paired_controls(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """For each treated row, a random control row from the same batch (any batch if none)."""
        batches = self.obs["BATCH"].to_numpy()[rows]
        out = np.empty(len(rows), dtype=np.int64)
        for i, b in enumerate(batches):
            pool = self._controls_by_batch.get(b)
            if pool is None or len(pool) == 0:
                pool = self.control_rows
            out[i] = pool[rng.integers(len(pool))]
        return out


@dataclass
class GenerateRequest:
    """One batch of translations to perform."""

    controls: torch.Tensor  # (N, C, H, W) in [-1, 1]
    control_keys: list[str]
    batches: list[str]  # batch of each control image
    target_batches: list[str]
    perturbations: list[str]
    embeddings: torch.Tensor  # (N, D)


class Method(ABC):
    """Base class. Subclasses set `name`, `capabilities`, `Config` (a dataclass)."""

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities] = Capabilities()
    Config: ClassVar[type] = None  # a dataclass type; None = no options
    profiles: ClassVar[dict[str, dict[str, Any]]] = {}
    default_profile: ClassVar[str | None] = None  # the profile a run without --profile uses (recorded by name)
    display_order: ClassVar[int] = 5  # row order in tables, as the paper: floor 0, baselines, ours, ceiling 9
    ablations: ClassVar[tuple[str, ...]] = ()  # profiles that a sweep with --ablations adds (Table 2c)
    # the published checkpoint format `import_published` reads (shown by `list`); None: no importer
    published: ClassVar[str | None] = None
    # what one run needs on a cluster; a sweep's --resources overrides per method
    resources: ClassVar[dict[str, Any]] = {"gpus": 0, "cpus": 2, "mem_gb": 8, "time_min": 60}

    def __init__(self, config: Any = None) -> None:
        if self.Config is not None and config is None:
            config = self.Config()
        self.config = config

    @abstractmethod
    def fit(self, data: TrainData, *, seed: int, workdir: Path) -> dict[str, Any]:
        """Train; return a summary (e.g. final loss, steps) recorded in the manifest."""

    @abstractmethod
    def generate(self, request: GenerateRequest, *, seed: int) -> torch.Tensor:
        """Translate `request.controls` to `request.perturbations`; (N, C, H, W) in [-1, 1]."""

    def save(self, path: Path) -> None:
        """Write a folder that describes itself: `config.json` (the resolved config) and the fitted state."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        io.write_json(path / CONFIG_FILE, dataclasses.asdict(self.config) if self.config is not None else {})
        self.save_state(path)

    def load(self, path: Path) -> None:
        """Restore the state `save` wrote (the config is the caller's: see `from_dir`)."""
        self.load_state(Path(path))

    @classmethod
    def from_dir(cls, path: Path) -> "Method":
        """The method a `save` wrote, config and state: `from_dir(p).generate(...)` gives what the saved one gave."""
        file = Path(path) / CONFIG_FILE
        if not file.is_file():
            raise BenchmarkError(f"{path}: not a saved {cls.name} model (no {CONFIG_FILE})")
        method = cls(config_from_dict(cls.Config, json.loads(file.read_text()), str(file)))
        method.load(path)
        return method

    def save_state(self, path: Path) -> None:
        """Persist the fitted state into the folder `path`; methods with no state need not override."""

    def load_state(self, path: Path) -> None:
        """Restore what `save_state` wrote (use torch.load(weights_only=True))."""

    def import_published(self, path: Path, data: TrainData, weights: str = "ema") -> dict[str, Any]:
        """Take the weights the official code published for this method instead of training (`run --checkpoint`);
        returns what the run records of them. `weights`: "ema" (the averaged weights) or "raw"."""
        raise BenchmarkError(f"method {self.name} has no importer of published checkpoints")

    @property
    def conditioned_on_control(self) -> bool:
        """Whether each generated image answers its request's control cell (starts from it, or is its counterfactual,
        as the oracle's). Where not (a generator from noise), a paired counterfactual error would score an unrelated
        cell against a counterfactual: such runs record no paired rows and the report says n/a."""
        return True

    def sampling_record(self) -> dict[str, Any]:
        """What the sampler did since the last call (e.g. the field evaluations an adaptive solver chose), for the
        run's record; the runner drains it before generating the plan and records what the plan's generation
        left. Methods with a fixed sampler have nothing to add."""
        return {}

    def variant(self) -> str:
        """A label for the leaderboard when the config is an ablation (e.g. "w/o CFG")."""
        return "default"

    def networks(self, channels: int, image_size: int, embedding_dim: int,
                 n_perturbations: int) -> dict[str, tuple["torch.nn.Module", tuple]]:
        """The method's networks built (untrained) for a task of this shape, each with an example input of batch 1,
        so that `describe` can count parameters and FLOPs before any data or GPU time; none by default."""
        return {}

    def attach_heldout(self, pool: "Any") -> None:
        """Oracle-only hook: receives the held-out image pool (see Capabilities.reads_heldout)."""
        raise BenchmarkError(f"method {self.name} does not read held-out images")


def set_by_fit() -> Any:
    """A config field that `fit` fills from the training data (e.g. the batch vocabulary) and saves with the model:
    empty in a profile, so a run's recorded config differs from its profile there and only there."""
    return dataclasses.field(default=(), metadata={"set_by_fit": True})


def config_from_overrides(cls: type, base: dict[str, Any] | None, overrides: list[str]) -> Any:
    """Build a config dataclass from a profile and `key=value` strings, typed by the fields."""
    if cls is None:
        if overrides:
            raise BenchmarkError(f"this method takes no options, got {overrides[0]!r}")
        return None
    values = dict(base or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for item in overrides:
        if "=" not in item:
            raise BenchmarkError(f"option {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        if key not in fields:
            raise BenchmarkError(f"option {key!r} is unknown; expected one of {', '.join(sorted(fields))}")
        values[key] = _parse(raw, hints[key], key)
    unknown = set(values) - set(fields)
    if unknown:
        raise BenchmarkError(f"profile sets unknown option {sorted(unknown)[0]!r}")
    return cls(**values)


def config_from_dict(cls: type | None, values: dict[str, Any], source: str) -> Any:
    """A config dataclass from a saved JSON dict (lists back to tuples); unknown keys are refused."""
    if cls is None:
        return None
    hints = typing.get_type_hints(cls)
    unknown = set(values) - set(hints)
    if unknown:
        raise BenchmarkError(f"{source}: unknown option {sorted(unknown)[0]!r} for {cls.__name__}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _parse(raw: str, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or (origin is not None and type(None) in args):
        if raw.lower() in ("none", "null"):
            return None
        hint = next(a for a in args if a is not type(None))
        origin = typing.get_origin(hint)
    try:
        if hint is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if hint in (int, float, str):
            return hint(raw)
        if origin is tuple:
            inner = typing.get_args(hint)[0]
            return tuple(inner(v) for v in raw.split(",") if v)
        if origin is typing.Literal:
            if raw not in typing.get_args(hint):
                raise ValueError(raw)
            return raw
    except ValueError:
        raise BenchmarkError(f"option {key}={raw!r}: expected {getattr(hint, '__name__', hint)}") from None
    return raw
