"""MiT (valence-labs/microscopy-flow-matching d6c5177; arXiv 2603.26790): flow matching from Gaussian noise to cell
images with a pixel-space diffusion transformer, conditioned on the perturbation, the batch (experiment) and the cell
type. It never reads the control image: an image answers its request's perturbation and target batch only.

Training as `trainer.py` and `main.py` there: x0 ~ N(0, I), x1 a training image, the linear path
x_t = t x1 + (1 - t) x0 with t ~ U[0, 1) and target x1 - x0, mean squared error (`trainer.py:146-172`); Adam 1e-4,
betas (0.9, 0.999), no weight decay (`main.py:79-85`); gradients clipped to norm 0.5 (`trainer.py:363`); the
power-function EMA of EDM2 with std 0.01 (`utils/ema.py:58-110`); random horizontal and vertical flips and uniform
dequantisation by 1/128 after scaling to [-1, 1] (`bbbc021.py:28-52`). Sampling integrates the field from N(0, I)
with torchdiffeq's dopri5 at rtol = atol = 1e-5 (`trainer.py:108-127`) and records the evaluations it took;
classifier-free guidance on the perturbation is an option (`guidance`, off by default as there, `trainer.py:86-97`).

Departures, each an option where it matters: the official code trains on every image with the control as one of its
classes; here on the treated images, as the other methods (the control is no target). The perturbation enters
through the task's embedding by default (`encoding=embedding`, so that `-ood` tasks translate zero-shot);
`encoding=onehot` is the official table, for seen perturbations only.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.nn import functional as F

from benchmark.errors import BenchmarkError
from benchmark.method import Capabilities, GenerateRequest, TrainData, as_float, set_by_fit
from methods.training import Shape, TorchMethod, TrainingConfig, TrainingSet, image_flips

from .model import Condition, DiT, Field


@dataclass
class MiTConfig(TrainingConfig):
    # the transformer (official: DiT-XL/2, `model.py:293-345`)
    patch: int = 4
    width: int = 128
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.1  # on the attention's output projection
    encoding: Literal["embedding", "onehot"] = "embedding"
    p_drop: float = 0.15  # each label (perturbation, batch, cell type) replaced by its null row, independently
    # training
    steps: int = 500
    batch_size: int = 32
    lr: float = 1e-4
    grad_clip: float = 0.5
    ema_std: float = 0.01
    flips: bool = True
    dequantize: bool = True
    # sampling
    rtol: float = 1e-5
    atol: float = 1e-5
    guidance: float = 1.0  # 1: the conditional field (official default); w: null + w (cond - null)
    use_ema: bool = True
    # filled by `fit` and saved with the model, so that a stored model rebuilds its tables
    batches: tuple[str, ...] = set_by_fit()
    perturbations: tuple[str, ...] = set_by_fit()  # onehot: the table's rows


# CPU: a small transformer (about 2M parameters at 48 px), patches of 4
QUICK: dict[str, Any] = {"patch": 4, "width": 128, "depth": 6, "heads": 4, "steps": 500, "lr": 3e-4}
REFERENCE: dict[str, Any] = {**QUICK, "steps": 915, "lr": 4e-3, "curve_points": 4, "select": "best"}
PROFILES: dict[str, dict[str, Any]] = {
    "quick": QUICK,
    # equal compute on the simulated screen: quick's transformer, the reference budget as a step count
    # (docs/reference-profiles.md), the learning rate chosen on the validation split, the best validation checkpoint
    "reference": REFERENCE,
    # six times the reference budget (docs/reference-profiles.md)
    "long": {**REFERENCE, "steps": 6 * REFERENCE["steps"], "curve_points": 7},
    # the official code: DiT-XL/2 (depth 28, width 1152, 16 heads, patches of 2), Adam 1e-4, batch 16 per GPU
    # (`bbbc021.py:100-105`; the GPU count is not in the code), the one-hot table; a GPU profile
    "official": {"patch": 2, "width": 1152, "depth": 28, "heads": 16, "encoding": "onehot", "lr": 1e-4,
                 "batch_size": 16, "steps": 100_000, "checkpoint_every": 5000, "mixed_precision": "bf16"},
}


def ema_exponent(std: float) -> float:
    """The power-function EMA's exponent gamma for a relative standard deviation `std` (EDM2, Karras et al. 2024,
    eq. 3: std^2 = (gamma + 1) / ((gamma + 2)^2 (gamma + 3))), i.e. the largest real root of
    gamma^3 + 7 gamma^2 + (16 - std^-2) gamma + (12 - std^-2)."""
    s = std ** -2
    roots = np.roots([1.0, 7.0, 16.0 - s, 12.0 - s])
    return float(roots[np.abs(roots.imag) < 1e-9].real.max())


def ema_beta(std: float, step: int) -> float:
    """The decay at optimiser step `step` (from 1): (1 - 1/step)^(gamma + 1); 0 at the first step (a copy)."""
    return (1.0 - 1.0 / step) ** (ema_exponent(std) + 1.0)


class MiT(TorchMethod):
    name = "mit"
    capabilities = Capabilities(needs_control=False, unseen_perturbations=True)
    Config = MiTConfig
    profiles = PROFILES
    default_profile = "quick"
    display_order = 2  # a baseline: after PhenDiff and beside IMPA, before CellFlow

    def __init__(self, config: MiTConfig | None = None) -> None:
        super().__init__(config)
        self.field: Field | None = None
        self.ema: Field | None = None
        self.nfe_per_call: list[int] = []  # field evaluations dopri5 chose, per `generate` call

    def sampling_record(self) -> dict[str, Any]:
        calls, self.nfe_per_call = self.nfe_per_call, []
        if not calls:
            return {}
        c = self.config
        return {"solver": "dopri5", "rtol": c.rtol, "atol": c.atol, "guidance": c.guidance, "calls": len(calls),
                "nfe_mean": round(float(np.mean(calls)), 2), "nfe_min": min(calls), "nfe_max": max(calls),
                "passes_per_evaluation": 1 if c.guidance == 1.0 else 2}

    @property
    def conditioned_on_control(self) -> bool:
        return False

    def fit(self, data: TrainData, *, seed: int, workdir: Path, monitor: Any = None) -> dict[str, Any]:
        c = self.config
        self.config = dataclasses.replace(
            c, batches=tuple(sorted(set(data.obs["BATCH"].astype(str)))),
            perturbations=tuple(data.perturbations) if c.encoding == "onehot" else ())
        return super().fit(data, seed=seed, workdir=workdir, monitor=monitor)

    def build(self, shape: Shape) -> None:
        c = self.config
        condition = Condition(c.width, len(c.perturbations) or shape.n_perturbations, shape.embedding_dim,
                              len(c.batches), 1, c.encoding)
        dit = DiT(shape.channels, shape.image_size, c.patch, c.width, c.depth, c.heads, c.mlp_ratio, c.dropout)
        self.field = Field(dit, condition)
        self.ema = copy.deepcopy(self.field).requires_grad_(False)

    def modules(self) -> dict[str, Any]:
        return {"field": self.field, "ema": self.ema}

    def networks(self, channels: int, image_size: int, embedding_dim: int, n_perturbations: int) -> dict:
        self.build(Shape(channels, image_size, embedding_dim, n_perturbations))
        c = self.config
        label = torch.zeros(1, dtype=torch.long) if c.encoding == "onehot" else torch.zeros(1, embedding_dim)
        example = (torch.zeros(1, channels, image_size, image_size), torch.full((1,), 0.5), label,
                   torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))
        return {"field": (self.field, example)}

    # --- the condition's inputs ----------------------------------------------------------------
    def _perturbation(self, names: list[str], embeddings: torch.Tensor) -> torch.Tensor:
        if self.config.encoding != "onehot":
            return embeddings.float()
        index = {p: i for i, p in enumerate(self.config.perturbations)}
        unknown = [p for p in names if p not in index]
        if unknown:
            raise BenchmarkError(f"mit (encoding onehot): perturbation {unknown[0]!r} was not in training; a "
                                 "one-hot table cannot translate it (encoding=embedding can)")
        return torch.tensor([index[p] for p in names])

    def _batch(self, names: list[str] | np.ndarray) -> torch.Tensor:
        """Batch rows; a batch not seen in training takes the null row (trained by the label dropout)."""
        index = {b: i for i, b in enumerate(self.config.batches)}
        return torch.tensor([index.get(str(b), -1) for b in names])

    # --- training --------------------------------------------------------------------------------
    def start_training(self, train: TrainingSet, steps: int) -> dict[str, Any]:
        c = self.config
        self.opt = torch.optim.Adam(self.field.parameters(), lr=c.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
        batches = train.data.obs["BATCH"].to_numpy()
        self.batch_rows = self._batch(batches)
        return {"optimizer": self.opt}

    def loss_inputs(self, train: TrainingSet, g: torch.Generator) -> tuple[torch.Tensor, ...]:
        """Every random draw of one step's loss for the whole batch at once (targets, flips, dequantisation, noise,
        times, label drops), so that accumulation chunks see the draws of the unsplit batch."""
        c, data = self.config, train.data
        pick = data.treated_rows[torch.randint(len(data.treated_rows), (c.batch_size,), generator=g).numpy()]
        x1 = as_float(train.images[pick])
        if c.flips:
            x1 = image_flips(g, x1, 0.5)
        if c.dequantize:
            x1 = x1 + torch.rand(x1.shape, generator=g) / 128.0
        x0 = torch.randn(x1.shape, generator=g)
        t = torch.rand(c.batch_size, generator=g)
        labels = torch.from_numpy(train.labels[pick])
        pert = labels if c.encoding == "onehot" else train.embeddings[labels]
        drop = torch.rand(c.batch_size, 3, generator=g) < c.p_drop
        batch = self.batch_rows[torch.from_numpy(pick)]
        return x0, x1, t, pert, batch, drop

    def field_loss(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, pert: torch.Tensor,
                   batch: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        dev = self.device
        x0, x1, t = x0.to(dev), x1.to(dev), t.to(dev)
        tt = t.view(-1, 1, 1, 1)
        with self.autocast():
            v = self.field(tt * x1 + (1 - tt) * x0, t, pert.to(dev), batch.to(dev),
                           torch.zeros_like(batch).to(dev), drop.to(dev))
        return F.mse_loss(v.float(), x1 - x0)

    def train_step(self, train: TrainingSet, step: int, g: torch.Generator, np_rng: np.random.Generator) -> list[float]:
        self.field.train()
        inputs = self.loss_inputs(train, g)
        self.opt.zero_grad(set_to_none=True)
        loss = self.backward(self.field_loss, inputs)
        self.sync_gradients(self.field.parameters())
        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.field.parameters(), self.config.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        with torch.no_grad():
            beta = ema_beta(self.config.ema_std, step + 1)
            for pe, pm in zip(self.ema.parameters(), self.field.parameters()):
                pe.lerp_(pm, 1 - beta)
        return [loss.item()]

    # --- sampling ------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, request: GenerateRequest, *, seed: int) -> torch.Tensor:
        """From N(0, I) (the controls' shape only) to the requested perturbation in the target batch."""
        from torchdiffeq import odeint

        c, dev = self.config, self.device
        net = self.ema if c.use_ema else self.field
        net.eval()
        n = request.controls.shape[0]
        x0 = torch.randn(request.controls.shape, generator=torch.Generator().manual_seed(seed)).to(dev)
        pert = self._perturbation(request.perturbations, request.embeddings).to(dev)
        batch = self._batch(request.target_batches).to(dev)
        cell = torch.zeros(n, dtype=torch.long, device=dev)
        null = torch.zeros(n, 3, dtype=torch.bool, device=dev)
        null[:, 0] = True
        self.nfe = 0

        def velocity(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            self.nfe += 1
            tt = t.expand(n).to(x)
            with self.autocast():
                v = net(x, tt, pert, batch, cell).float()
                if c.guidance != 1.0:
                    u = net(x, tt, pert, batch, cell, null).float()
                    v = u + c.guidance * (v - u)
            return v

        out = odeint(velocity, x0, torch.tensor([0.0, 1.0], device=dev), method="dopri5", rtol=c.rtol, atol=c.atol)
        self.nfe_per_call.append(self.nfe)
        return out[-1].clamp(-1, 1).cpu()
