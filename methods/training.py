"""Training plumbing shared by the built-in methods: the `TorchMethod` base and its helpers.

`TorchMethod` owns what every gradient-trained method repeats: device and
precision, the seeded build, the resume/checkpoint/progress loop, the summary a
run records, save/load of weights and config, and data parallelism. A method
keeps only its networks, losses and sampling (`build`, `start_training`,
`train_step`, `generate`).

Data parallelism runs on accelerate's process state (`PartialState`: the
process group that `torchrun`, `accelerate launch` or a SLURM job sets up; one
process otherwise, the same code path). Every rank draws the *whole* batch of a
step from the run seed and computes the gradient of its share of the batch's
chunks (`backward`); `sync_gradients` averages them across ranks. The result is a
function of the effective batch and the seed, not of how many processes shared
the work (up to float summation order; dropout masks are drawn per rank).

A checkpoint that resumes *exactly* must carry every generator a training loop
draws from (the loop's torch generator, torch's global generator for dropout,
the numpy generator that pairs controls). numpy's PCG64 state holds 128-bit
integers, which `torch.load(weights_only=True)` cannot read back, so they travel
as strings.
"""

from __future__ import annotations

import copy
import time
from abc import abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from benchmark import io
from benchmark.curves import curve_steps
from benchmark.errors import BenchmarkError
from benchmark.method import Method, TrainData


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def bf16_native(device: torch.device) -> bool:
    """Whether `device` multiplies bf16 in hardware: a CUDA card that supports it, or a CPU with AMX or AVX512-BF16.

    Elsewhere bf16 autocast is emulated and slower than float32, so "auto" precision falls back to float32 there.
    (The CPU probes are private torch helpers; a torch without them counts as no native bf16.)
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
        return any(p is not None and p() for p in probes)
    return False


def resolve_precision(name: str, device: torch.device) -> str:
    """"no" | "bf16" | "fp16" | "auto" -> what runs on this device ("auto": bf16 where native, else "no"); the
    resolved value is what a run records."""
    if name == "auto":
        return "bf16" if bf16_native(device) else "no"
    return name


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """Autocast for a config's `mixed_precision` ("no" | "bf16" | "fp16" | "auto") on `device`."""
    resolved = resolve_precision(precision, device)
    dtype = torch.float16 if resolved == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, enabled=resolved in ("bf16", "fp16"))


def epochs_to_steps(epochs: float, steps: int, n_items: int, batch_size: int) -> int:
    """`steps`, or `epochs` passes over `n_items` in full batches (an official loader's epoch, with drop_last)."""
    return steps if epochs <= 0 else max(1, round(epochs * (n_items // batch_size)))


def decide(p: float, per: str, n: int, g: torch.Generator, group: int = 0) -> torch.Tensor:
    """n booleans, each True with probability p: drawn per sample, or once per batch (per group of `group`
    samples where set: the official CellFlux code decides once per GPU's batch of 32)."""
    if per == "sample":
        return torch.rand(n, generator=g) < p
    group = group or n
    return (torch.rand(-(-n // group), generator=g) < p).repeat_interleave(group)[:n]


def pad_to_multiple(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Reflect-pad height and width up to multiples of `factor`, for networks that halve the size len(levels)-1
    times; the caller crops its output back to the input's size."""
    ph, pw = (-x.shape[-2]) % factor, (-x.shape[-1]) % factor
    return F.pad(x, (0, pw, 0, ph), mode="reflect") if ph or pw else x


def random_flips(g: torch.Generator, *batches: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The same random horizontal/vertical flips for every tensor: cells have no orientation."""
    if torch.rand(1, generator=g) < 0.5:
        batches = tuple(b.flip(-1) for b in batches)
    if torch.rand(1, generator=g) < 0.5:
        batches = tuple(b.flip(-2) for b in batches)
    return batches


def image_flips(g: torch.Generator, batch: torch.Tensor, p: float) -> torch.Tensor:
    """Each image flipped horizontally and vertically on its own, each with probability p (torchvision's
    RandomHorizontalFlip / RandomVerticalFlip applied per image, as the official CellFlux loader does)."""
    n = batch.shape[0]
    h = (torch.rand(n, generator=g) < p).view(-1, *([1] * (batch.dim() - 1)))
    v = (torch.rand(n, generator=g) < p).view(-1, *([1] * (batch.dim() - 1)))
    batch = torch.where(h, batch.flip(-1), batch)
    return torch.where(v, batch.flip(-2), batch)


def batch_record(batch_size: int, grad_accum: int, devices: int = 1) -> dict[str, int]:
    """What a run records of its batch: devices x per-device batch x accumulation = the effective batch (the images
    one optimiser step sees, which the results depend on)."""
    if grad_accum < 1 or batch_size % (devices * grad_accum):
        raise BenchmarkError(f"batch_size={batch_size} does not split into {devices} device(s) x grad_accum={grad_accum}"
                             " equal parts")
    return {"devices": devices, "per_device": batch_size // (devices * grad_accum), "accumulation": grad_accum,
            "effective": batch_size}


def accumulate(loss_fn: Any, inputs: tuple[torch.Tensor, ...], chunks: int, scaler: torch.amp.GradScaler) -> torch.Tensor:
    """Backward of `loss_fn` over a batch in `chunks` equal parts (split along the first axis of every input),
    gradients summed: each part's mean loss is divided by `chunks`, so the gradient is that of the batch mean while
    only a part is in memory at once. Returns the batch's loss, detached."""
    total = torch.zeros(())
    for part in zip(*(x.chunk(chunks) for x in inputs)):
        loss = loss_fn(*part) / chunks
        scaler.scale(loss).backward()
        total = total + loss.detach().cpu()
    return total


def rng_state(g: torch.Generator, np_rng: np.random.Generator) -> dict[str, Any]:
    s = np_rng.bit_generator.state
    return {"torch_rng": g.get_state(), "global_torch_rng": torch.get_rng_state(),
            "numpy_rng": {"bit_generator": s["bit_generator"], "state": str(s["state"]["state"]),
                          "inc": str(s["state"]["inc"]), "has_uint32": int(s["has_uint32"]),
                          "uinteger": int(s["uinteger"])}}


def restore_rng(state: dict[str, Any], g: torch.Generator, np_rng: np.random.Generator) -> None:
    # a checkpoint loaded with map_location="cuda" brings the byte states along; generators want them on the CPU
    g.set_state(state["torch_rng"].cpu())
    torch.set_rng_state(state["global_torch_rng"].cpu())
    d = state["numpy_rng"]
    np_rng.bit_generator.state = {"bit_generator": d["bit_generator"],
                                  "state": {"state": int(d["state"]), "inc": int(d["inc"])},
                                  "has_uint32": d["has_uint32"], "uinteger": d["uinteger"]}


def save_checkpoint(path: Path, parts: dict[str, Any], step: int, log: tuple[str, list], g: torch.Generator,
                    np_rng: np.random.Generator, extra: dict[str, Any] | None = None) -> None:
    """Every stateful part (models, EMA, optimisers, schedules), the step, the loss log, the RNGs and `extra` (the
    curve and the best weights so far), atomically."""
    key, values = log
    io.write_torch(path, {**{k: v.state_dict() for k, v in parts.items()}, "step": step, key: values,
                          **rng_state(g, np_rng), "extra": extra or {}})


def load_checkpoint(path: Path, parts: dict[str, Any], log_key: str, g: torch.Generator, np_rng: np.random.Generator,
                    device: torch.device) -> tuple[int, list, dict[str, Any]]:
    """Restore what `save_checkpoint` wrote, if it exists; returns (step, loss log, extra), (0, [], {}) for a fresh
    start."""
    if not Path(path).is_file():
        return 0, [], {}
    state = torch.load(path, map_location=device, weights_only=True)
    for k, v in parts.items():
        v.load_state_dict(state[k])
    restore_rng(state, g, np_rng)
    return int(state["step"]), list(state[log_key]), dict(state.get("extra", {}))


@dataclass
class TrainingConfig:
    """The options of every `TorchMethod`; a method's `Config` subclasses this and may change the defaults."""

    steps: int = 1500
    epochs: float = 0.0  # > 0: passes over the method's epoch items (`epoch_rows`), converted to steps at fit time;
    # `steps` is then ignored
    batch_size: int = 32  # images per optimiser step
    grad_accum: int = 1  # the step's batch in this many chunks, gradients accumulated (memory of batch / grad_accum)
    checkpoint_every: int = 250
    device: str = "auto"
    mixed_precision: Literal["no", "bf16", "fp16", "auto"] = "no"  # auto: bf16 where the device has it in
    # hardware; fp16 trains with a gradient scaler
    curve_points: int = 3  # learning curve on the validation split at step 0, this many log-spaced steps and 3/4
    # (benchmark/curves.py); 0: none
    select: Literal["last", "best"] = "last"  # the weights a run keeps: the last step's, or those of the best
    # validation score on the curve (never the test split)


@dataclass(frozen=True)
class Shape:
    """What a method's networks are built for; saved with the weights, so a stored model rebuilds itself."""

    channels: int
    image_size: int
    embedding_dim: int
    n_perturbations: int


class BatchImages:
    """The training images as uint8 (N, C, H, W) tensors, gathered from the store per batch (`images[index]`, an
    index array or tensor): only a batch is ever in memory, whatever the size of the split."""

    def __init__(self, images: Any) -> None:
        self.source = images
        n, h, w, c = images.shape
        self.shape = (n, c, h, w)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> torch.Tensor:
        index = index.numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
        return torch.from_numpy(np.ascontiguousarray(self.source[index])).permute(0, 3, 1, 2)


class TrainingSet:
    """The training data as the networks see them: uint8 images (N, C, H, W) read per batch, the embedding table
    (P, D) and each row's perturbation index (-1 for controls)."""

    def __init__(self, data: TrainData) -> None:
        self.data = data
        self.images = BatchImages(data.images)
        self.embeddings = torch.from_numpy(np.ascontiguousarray(data.embeddings, dtype=np.float32))
        index = {p: i for i, p in enumerate(data.perturbations)}
        self.labels = np.array([index.get(p, -1) for p in data.obs["CPD_NAME"].to_numpy()], dtype=np.int64)
        self.shape = Shape(int(self.images.shape[1]), int(self.images.shape[-1]), int(self.embeddings.shape[1]),
                           len(data.perturbations))


class TorchMethod(Method):
    """A method trained by gradient steps on one device (see the module docstring for what it owns).

    Subclasses set `Config` (a `TrainingConfig`), implement `build` (networks for a `Shape`, into attributes),
    `modules` (what is saved, moved to the device and counted), `start_training` (optimisers and schedules, returned
    by name so that checkpoints carry them), `train_step` (one optimiser step, returning one value per
    `history_columns`) and `generate`.
    """

    resources = {"gpus": 1, "cpus": 8, "mem_gb": 64, "time_min": 24 * 60}  # a GPU job by default
    history_columns: ClassVar[tuple[str, ...]] = ("loss",)  # what `train_step` returns, in order
    precisions: ClassVar[tuple[str, ...]] = ("no", "bf16", "fp16", "auto")  # `mixed_precision` values it honours
    accumulates: ClassVar[bool] = True  # whether `train_step` honours `grad_accum`

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.shape: Shape | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self.world, self.rank = 1, 0  # set by `fit` from the process state
        self._process_device: torch.device | None = None

    # --- what a method provides ------------------------------------------------------------
    @abstractmethod
    def build(self, shape: Shape) -> None:
        """Construct the networks for `shape` (untrained); called under a seeded RNG by `fit` and by `load`."""

    @abstractmethod
    def modules(self) -> dict[str, Any]:
        """The stateful pieces that are saved and moved to the device (modules, EMA), by name."""

    @abstractmethod
    def start_training(self, train: TrainingSet, steps: int) -> dict[str, Any]:
        """Optimisers and schedules for a run of `steps`, by name (each with `state_dict`), kept as attributes."""

    @abstractmethod
    def train_step(self, train: TrainingSet, step: int, g: torch.Generator, np_rng: np.random.Generator) -> list[float]:
        """One optimiser step drawing only from `g`, `np_rng` and torch's global generator; its history values."""

    def epoch_rows(self, data: TrainData) -> int:
        """What one epoch passes over (`epochs` > 0): the treated training images by default."""
        return len(data.treated_rows)

    def counted(self) -> dict[str, torch.nn.Module]:
        """The networks whose parameters a run records (the EMA copies are not counted twice)."""
        return {k: v for k, v in self.modules().items() if isinstance(v, torch.nn.Module) and k != "ema"}

    # --- device and precision --------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """The configured device; under several processes with `auto`, this process's own (e.g. cuda:1)."""
        if self._process_device is not None and self.config.device == "auto":
            return self._process_device
        return resolve_device(self.config.device)

    @property
    def precision(self) -> str:
        """The resolved `mixed_precision` on this device ("no", "bf16" or "fp16")."""
        return resolve_precision(self.config.mixed_precision, self.device)

    def autocast(self) -> torch.autocast:
        return autocast(self.config.mixed_precision, self.device)

    # --- data parallelism ---------------------------------------------------------------------
    def my_rows(self, n: int) -> slice:
        """This process's contiguous share of a batch of `n` (n divisible by the number of processes)."""
        per = n // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    def backward(self, loss_fn: Any, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Backward of `loss_fn` over this process's `grad_accum` chunks of a whole batch's inputs (the batch is
        cut into processes x grad_accum equal chunks); each chunk's mean loss is divided by `grad_accum` and
        `sync_gradients` averages over processes, so the gradient is that of the batch mean. Returns the batch's
        mean loss (the same number on every process), detached."""
        chunks = self.config.grad_accum
        mine = tuple(x[self.my_rows(x.shape[0])] for x in inputs)
        local = accumulate(loss_fn, mine, chunks, self.scaler)
        return self.mean_over_processes(local)

    def mean_over_processes(self, value: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return value
        from accelerate.utils import reduce

        return reduce(value.to(self.device), reduction="mean").cpu()

    def sync_gradients(self, params: Any) -> None:
        """Average the gradients of `params` over processes (one all-reduce of a flat buffer). Done after backward
        rather than by DDP hooks: IMPA's R1 penalty differentiates through the discriminator twice, which DDP does
        not support, and one path for every method keeps them alike (as StyleGAN2-ADA does)."""
        if self.world == 1:
            return
        from accelerate.utils import reduce

        grads = [p.grad for p in params if p.grad is not None]
        flat = reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="mean")
        for g in grads:
            g.copy_(flat[: g.numel()].view_as(g))
            flat = flat[g.numel():]

    def total_steps(self, data: TrainData) -> int:
        c = self.config
        return epochs_to_steps(c.epochs, c.steps, self.epoch_rows(data), c.batch_size)

    # --- the loop --------------------------------------------------------------------------
    def fit(self, data: TrainData, *, seed: int, workdir: Path, monitor: Any = None) -> dict[str, Any]:
        """Train for the configured steps, resuming from `workdir`'s checkpoint; with a `monitor` (a
        `benchmark.validation.ValidationMonitor`), score the model at the curve's steps and keep the best weights when
        `select` is "best"."""
        c = self.config
        if c.select == "best" and (monitor is None or c.curve_points <= 0):
            raise BenchmarkError(f"{self.name}: select=best needs a validation curve (curve_points > 0 and a task "
                                 "with validation images)")
        if c.mixed_precision not in self.precisions:
            raise BenchmarkError(f"{self.name}: mixed_precision={c.mixed_precision!r} is not supported; expected one "
                                 f"of {', '.join(self.precisions)}")
        if c.grad_accum != 1 and not self.accumulates:
            raise BenchmarkError(f"{self.name}: grad_accum={c.grad_accum} is not supported; expected 1")
        if len(data.perturbations) == 0:
            raise BenchmarkError(f"{self.name}: the training split has no treated images")
        from accelerate import PartialState

        state = PartialState(cpu=resolve_device(c.device).type == "cpu")  # the process group, if launched as one
        self.world, self.rank = state.num_processes, state.process_index
        self._process_device = state.device if self.world > 1 and state.device.type == "cuda" else None
        batch = batch_record(c.batch_size, c.grad_accum, self.world)  # refuses a batch that does not split
        train = TrainingSet(data)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the initial weights depend on the run seed only
            self.build(train.shape)
        self.shape = train.shape
        for part in self.modules().values():
            part.to(self.device)
        steps = self.total_steps(data)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        parts = {**self.modules(), **self.start_training(train, steps)}
        if self.scaler.is_enabled():
            parts["grad_scaler"] = self.scaler
        g = torch.Generator().manual_seed(seed)
        np_rng = np.random.default_rng(seed)
        ckpt = Path(workdir) / "checkpoint.pt"
        step, history, extra = load_checkpoint(ckpt, parts, "history", g, np_rng, self.device)
        points = set(curve_steps(steps, c.curve_points)) if monitor is not None else set()
        curve: list[dict[str, Any]] = extra.get("curve", [])
        best = extra.get("best")  # {"step", "value", "state"}: the best validation score's weights so far
        trained_s = float(extra.get("trained_s", 0.0))  # training time, the curve's scoring left out
        monitor_s = 0.0

        def score() -> None:
            nonlocal best, monitor_s
            t = time.time()
            values = monitor(self)
            monitor_s += time.time() - t
            curve.append({"step": step, "images": step * c.batch_size, "train_s": round(trained_s, 2), **values})
            if c.select == "best" and (best is None or values[monitor.metric] < best["value"]):
                best = {"step": step, "value": values[monitor.metric],
                        "state": {k: copy.deepcopy(v.state_dict()) for k, v in self.modules().items()}}

        if step == 0 and 0 in points and not curve:
            score()
        start, trained_before = step, trained_s
        bar = tqdm(total=steps, initial=step, desc=f"{self.name} training", unit="step", disable=self.rank != 0)
        while step < steps:
            t_step = time.time()
            history.append([float(v) for v in self.train_step(train, step, g, np_rng)])
            step += 1
            trained_s += time.time() - t_step
            bar.update()
            if step % 25 == 0:
                recent = np.mean(history[-25:], axis=0)
                bar.set_postfix({k: f"{v:.4f}" for k, v in zip(self.history_columns, recent)})
            if step in points:
                score()
            if (step % c.checkpoint_every == 0 or step == steps or step in points) and self.rank == 0:
                save_checkpoint(ckpt, parts, step, ("history", history), g, np_rng,
                                {"curve": curve, "best": best, "trained_s": trained_s})
        bar.close()
        elapsed, done = trained_s - trained_before, step - start
        selected: dict[str, Any] = {"rule": c.select, "step": step}
        if curve:
            selected["metric"] = monitor.metric
            selected["value"] = next(r[monitor.metric] for r in curve if r["step"] == step) if step in points else None
        if c.select == "best":
            for k, part in self.modules().items():
                part.load_state_dict(best["state"][k])
            selected.update(step=best["step"], value=best["value"],
                            why=f"lowest {monitor.metric} of {len(curve)} validation points")
        h = np.asarray(history, dtype=np.float64).reshape(len(history), len(self.history_columns))
        summary: dict[str, Any] = {"steps": step, "resumed_from": start}
        for i, col in enumerate(self.history_columns):
            summary[f"{col}_first_50"] = float(h[:50, i].mean())
            summary[f"{col}_last_50"] = float(h[-50:, i].mean())
        if monitor is not None:
            summary.update(curve=curve, curve_monitor={**monitor.describe(), "seconds": round(monitor_s, 2)})
        summary.update(selected=selected, train_s=round(trained_s, 2))
        return {**summary, "train_images_per_s": round(done * c.batch_size / elapsed, 2) if done else None,
                "parameters": {k: sum(p.numel() for p in m.parameters()) for k, m in self.counted().items()},
                "device": str(self.device), "precision": self.precision, "batch": batch, "processes": self.world,
                "epochs": round(steps * c.batch_size / max(1, self.epoch_rows(data)), 3),
                "epoch_rows": self.epoch_rows(data)}

    # --- weights published by the official code ---------------------------------------------
    def import_published(self, path: Path, data: TrainData, weights: str = "ema") -> dict[str, Any]:
        """Build the networks for `data` and fill them from the official checkpoint (`load_published`)."""
        if self.published is None:
            return super().import_published(path, data, weights)
        self.shape = Shape(int(data.images.shape[3]), int(data.images.shape[1]), int(data.embeddings.shape[1]),
                           len(data.perturbations))
        self.build(self.shape)
        record = self.load_published(Path(path), data, weights)
        for part in self.modules().values():
            part.to(self.device)
        return {"imported": record, "device": str(self.device), "precision": self.precision,
                "parameters": {k: sum(p.numel() for p in m.parameters()) for k, m in self.counted().items()}}

    def load_published(self, path: Path, data: TrainData, weights: str) -> dict[str, Any]:
        """Fill the built networks from the official checkpoint at `path`; what was read, for the record."""
        raise NotImplementedError

    # --- a saved folder describes itself -----------------------------------------------------
    @property
    def weights_file(self) -> str:
        return f"{self.name}.pt"

    def save_state(self, path: Path) -> None:
        io.write_torch(Path(path) / self.weights_file,
                       {**{k: v.state_dict() for k, v in self.modules().items()}, "shape": asdict(self.shape)})

    def load_state(self, path: Path) -> None:
        file = Path(path) / self.weights_file
        state = torch.load(file, map_location="cpu", weights_only=True)
        if not isinstance(state.get("shape"), dict):
            raise BenchmarkError(f"{file}: written by an earlier version (no shape record); score it with that "
                                 "version or train again")
        self.shape = Shape(**{k: int(v) for k, v in state["shape"].items()})
        self.build(self.shape)
        for k, part in self.modules().items():
            part.load_state_dict(state[k])
            part.to(self.device)
