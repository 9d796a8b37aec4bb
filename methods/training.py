"""Training plumbing shared by the built-in methods: devices, batches, and RNG state in checkpoints.

A checkpoint that resumes *exactly* must carry every generator a training loop
draws from (the loop's torch generator, torch's global generator for dropout,
the numpy generator that pairs controls). numpy's PCG64 state holds 128-bit
integers, which `torch.load(weights_only=True)` cannot read back, so they travel
as strings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from benchmark import io
from benchmark.errors import BenchmarkError


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


def as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [-1, 1]."""
    return images.float() / 127.5 - 1


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
                    np_rng: np.random.Generator, **extra: Any) -> None:
    """Every stateful part (models, EMA, optimisers, schedules), the step, the loss log and the RNGs, atomically."""
    key, values = log
    io.write_torch(path, {**{k: v.state_dict() for k, v in parts.items()}, "step": step, key: values, **extra,
                          **rng_state(g, np_rng)})


def load_checkpoint(path: Path, parts: dict[str, Any], log_key: str, g: torch.Generator, np_rng: np.random.Generator,
                    device: torch.device) -> tuple[int, list]:
    """Restore what `save_checkpoint` wrote, if it exists; returns (step, loss log), (0, []) for a fresh start."""
    if not Path(path).is_file():
        return 0, []
    state = torch.load(path, map_location=device, weights_only=True)
    for k, v in parts.items():
        v.load_state_dict(state[k])
    restore_rng(state, g, np_rng)
    return int(state["step"]), list(state[log_key])
