"""CellFlow (Algorithm 1 of the paper): conditional flow matching from control to perturbed cells.

Training pairs each treated image x1 with a control x0 from the *same batch*,
adds Gaussian noise to x0 with probability p_noise, drops the condition with
probability p_drop, and regresses v(x_t, t, c) on x1 - x0. Sampling integrates
the classifier-free-guided field from the control image.

Where the paper and the official code differ (see shared/research/cellflux.md)
each difference is an option; the `paper` profile follows the paper's text:
batch 128, per-sample noise, no noise at inference, t ~ U[0, 1], Euler, random same-plate pairs.
The CPU `quick` profile re-pairs each batch by minibatch optimal transport within the plate and samples with the
midpoint rule at the same 10 evaluations (see PROFILES).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from diffusers.optimization import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup
from torch.nn import functional as F
from torchvision.transforms.functional import gaussian_blur
from tqdm.auto import tqdm

from benchmark import io
from benchmark.errors import BenchmarkError
from benchmark.method import Capabilities, GenerateRequest, Method, TrainData
from methods.training import (accumulate, as_float, autocast, batch_record, decide, epochs_to_steps, image_flips,
                              load_checkpoint, random_flips, resolve_device, resolve_precision, save_checkpoint)

from .adm import AdmUNet
from .path import interpolate, ot_pairing, sample_time, target_velocity
from .solver import GuidedField, integrate
from .unet import UNet


@dataclass
class CellFlowConfig:
    # velocity field
    arch: Literal["compact", "adm"] = "compact"  # adm: the official CellFlux U-Net (adm.py)
    width: int = 32
    mults: tuple[int, ...] = (1, 2, 2, 2)  # four resolution stages
    blocks: int = 1
    attention: bool = True  # compact: attention at the lowest resolution
    attention_levels: tuple[int, ...] = (1,)  # adm: levels with attention (0 = full resolution), and the middle
    heads: int = 1  # adm: attention heads
    dropout: float = 0.0
    time_scale: float = 1000.0  # the sinusoidal time features see time_scale * t (official code: 1)
    # training (Algorithm 1)
    steps: int = 1200
    epochs: float = 0.0  # > 0: passes over the treated training images (the official epoch), converted to steps;
    # `steps` is then ignored (set epochs=0 to give steps)
    batch_size: int = 32  # images per optimiser step
    grad_accum: int = 1  # the step's batch in this many chunks, gradients accumulated (memory of batch / grad_accum)
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-4
    betas: tuple[float, ...] = (0.9, 0.999)
    weight_decay: float = 0.0
    lr_schedule: Literal["constant", "cosine"] = "constant"  # cosine: warm-up, then decay to 0 at `steps`
    warmup_steps: int = 0
    coupling: Literal["random", "ot"] = "random"  # ot: minibatch OT within each plate (not in the paper)
    ot_pool: int = 1  # ot: pair within ot_pool x batch_size draws, then train on batch_size of the pairs
    p_noise: float = 0.5
    noise_std: float = 0.5
    noise_per: Literal["sample", "batch"] = "sample"  # paper: sample; official code: batch
    noise_blur: float = 0.0  # px; > 0: the augmentation noise is low-passed by a Gaussian of this sigma (not in the paper)
    p_drop: float = 0.2
    p_drop_per: Literal["sample", "batch"] = "sample"  # paper: sample; official code: batch
    batch_group: int = 0  # per-batch decisions are made per group of this many samples (official: 32, one per GPU)
    time_sampling: Literal["uniform", "logit_normal", "skewed"] = "uniform"  # skewed: the official code's
    ema_decay: float = 0.995
    flip_augment: bool = True
    flip_p: float = 0.5
    flip_per: Literal["batch", "image"] = "batch"  # image: each image flipped on its own (official: p 0.3)
    dequantize: bool = False  # uniform noise on the 8-bit pixels before scaling (official code)
    checkpoint_every: int = 250
    # sampling
    alpha: float = 1.2  # CFG strength; 1 = no guidance
    solver: str = "euler"
    nfe: int = 10
    inference_noise: bool = False  # official code: x0 = ctrl + noise at inference too
    use_ema: bool = True
    # ablations (Table 2c)
    condition: bool = True  # False: "w/o Condition"
    device: str = "auto"
    mixed_precision: Literal["no", "bf16", "fp16", "auto"] = "no"  # auto: bf16 where the device has it in hardware;
    # fp16 trains with a gradient scaler (the official code's)


QUICK: dict[str, Any] = {"lr": 1e-3, "coupling": "ot", "solver": "midpoint", "noise_blur": 2.0}
PROFILES: dict[str, dict[str, Any]] = {
    # CPU default: a small field and a short schedule, so the main job runs in minutes on 2 cores; why each setting
    # departs from the paper, with the measurements, is in docs/cellflow-quick-profile.md
    "quick": QUICK,
    # the paper's text (section 4.2, appendix C): hidden 128, four stages, batch 128, Adam 1e-4, 100 epochs (over the
    # treated training images, the official code's epoch), Euler; a GPU profile
    "paper": {"width": 128, "mults": (1, 2, 2, 2), "blocks": 2, "dropout": 0.1, "batch_size": 128, "epochs": 100,
              "noise_std": 1.0, "ema_decay": 0.9999, "checkpoint_every": 2000, "nfe": 50, "mixed_precision": "bf16"},
    # the official code (CellFlux 3256adc; shared/research/cellflux.md): the ADM U-Net of 56.2M parameters, AdamW 1e-4
    # betas (0.9, 0.95) wd 0.01 constant, fp16 with a gradient scaler, 32 per GPU x 4 GPUs (per-batch decisions per
    # group of 32, as each GPU makes its own), 200 epochs over the treated training images, skewed times, per-batch
    # noise (p 0.5, sigma 1) and condition drop (0.2), dequantisation, per-image flips p 0.3, EMA 0.999; sampling from
    # control + N(0, 1) by Heun on the 51-point EDM grid (100 evaluations), CFG 1.2. A GPU profile.
    "official": {"arch": "adm", "width": 128, "mults": (2, 2, 2), "blocks": 4, "attention_levels": (1,), "heads": 1,
                 "dropout": 0.3, "time_scale": 1.0, "optimizer": "adamw", "lr": 1e-4, "betas": (0.9, 0.95),
                 "weight_decay": 0.01, "mixed_precision": "fp16", "batch_size": 128, "grad_accum": 4, "batch_group": 32,
                 "epochs": 200,
                 "time_sampling": "skewed", "p_noise": 0.5, "noise_std": 1.0, "noise_per": "batch", "p_drop": 0.2,
                 "p_drop_per": "batch", "dequantize": True, "flip_p": 0.3, "flip_per": "image", "ema_decay": 0.999,
                 "inference_noise": True, "solver": "edm_heun", "nfe": 100, "alpha": 1.2, "checkpoint_every": 2000},
    # Table 2c ablations, on top of quick
    "no-condition": {**QUICK, "condition": False, "alpha": 1.0},
    "no-cfg": {**QUICK, "alpha": 1.0, "p_drop": 0.0},
    "no-noise": {**QUICK, "p_noise": 0.0},
}


def ema_decay(target: float, step: int) -> float:
    """EMA decay at `step`, warmed up as (1 + step) / (10 + step) (the schedule of diffusers' EMAModel): without
    the warm-up a short run's average keeps much of the random initial weights (docs/cellflow-quick-profile.md)."""
    return min(target, (1 + step) / (10 + step))


class CellFlow(Method):
    name = "cellflow"
    capabilities = Capabilities(needs_control=True, unseen_perturbations=True, trajectories=True)
    Config = CellFlowConfig
    profiles = PROFILES
    default_profile = "quick"
    display_order = 3
    ablations = ("no-condition", "no-cfg", "no-noise")
    resources = {"gpus": 1, "cpus": 8, "mem_gb": 64, "time_min": 24 * 60}

    def __init__(self, config: CellFlowConfig | None = None) -> None:
        super().__init__(config)
        self.model: UNet | AdmUNet | None = None
        self.ema: UNet | AdmUNet | None = None
        self.channels = 0
        self.cond_dim = 0

    # --- pieces ------------------------------------------------------------------
    def variant(self) -> str:
        c, names = self.config, []
        if not c.condition:
            names.append("w/o condition")
        elif c.alpha == 1.0:
            names.append("w/o CFG")
        if c.p_noise == 0.0:
            names.append("w/o noise")
        return ", ".join(names) or "default"

    def _device(self) -> torch.device:
        return resolve_device(self.config.device)

    def _bf16(self) -> bool:
        return resolve_precision(self.config.mixed_precision, self._device()) == "bf16"

    def _autocast(self) -> torch.autocast:
        return autocast(self.config.mixed_precision, self._device())

    def _build(self, channels: int, cond_dim: int) -> None:
        c = self.config
        self.channels, self.cond_dim = channels, cond_dim
        if c.arch == "adm":
            self.model = AdmUNet(channels, cond_dim, c.width, tuple(c.mults), c.blocks, tuple(c.attention_levels),
                                 c.heads, c.dropout, c.time_scale)
        else:
            self.model = UNet(channels, cond_dim, c.width, tuple(c.mults), c.blocks, c.attention, c.dropout,
                              c.time_scale)
        if self._bf16():  # oneDNN's and cuDNN's fast bf16 convolutions want NHWC (2 CPU cores, quick: 99 -> 114 img/s)
            self.model.to(memory_format=torch.channels_last)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)

    def networks(self, channels: int, image_size: int, embedding_dim: int, n_perturbations: int) -> dict:
        self._build(channels, embedding_dim)
        example = (torch.zeros(1, channels, image_size, image_size), torch.full((1,), 0.5),
                   torch.zeros(1, embedding_dim), torch.zeros(1, dtype=torch.bool))
        return {"field": (self.model, example)}

    def augment(self, x0: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Noise augmentation (section 3.4): x0 + noise_std * eps with probability p_noise.

        White eps teaches the field to erase white texture, and it cannot tell the augmentation's residual
        (1 - t) noise_std eps from the fine texture of real cells; `noise_blur` > 0 low-passes eps (renormalised to
        unit std per image) so that the two differ in scale (measurements: docs/cellflow-quick-profile.md).
        """
        c = self.config
        if c.p_noise <= 0:
            return x0
        n = x0.shape[0]
        use = decide(c.p_noise, c.noise_per, n, g, c.batch_group)
        eps = torch.randn(x0.shape, generator=g)
        if c.noise_blur > 0:
            eps = gaussian_blur(eps, 2 * math.ceil(3 * c.noise_blur) + 1, c.noise_blur)
            eps = eps / eps.std(dim=(1, 2, 3), keepdim=True)
        return x0 + c.noise_std * eps * use.view(-1, 1, 1, 1).to(x0)

    def loss_inputs(self, x0: torch.Tensor, x1: torch.Tensor, emb: torch.Tensor,
                    g: torch.Generator) -> tuple[torch.Tensor, ...]:
        """Every random draw of one Algorithm-1 loss on a batch (x0 controls, x1 targets, emb conditions): the
        field's inputs (x_t, t, emb, drop) and its target velocity. Drawn for the whole batch at once, so that a
        batch split into accumulation chunks sees exactly the draws of the unsplit batch."""
        c = self.config
        n = x0.shape[0]
        x0 = self.augment(x0, g)
        drop = decide(c.p_drop, c.p_drop_per, n, g, c.batch_group) if c.condition else torch.ones(n, dtype=torch.bool)
        t = sample_time(n, c.time_sampling, g)
        return interpolate(x0, x1, t), t, emb, drop, target_velocity(x0, x1)

    def field_loss(self, xt: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, drop: torch.Tensor,
                   target: torch.Tensor) -> torch.Tensor:
        dev = self._device()
        xt = xt.to(dev)
        if self._bf16():
            xt = xt.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            v = self.model(xt, t.to(dev), emb.to(dev), drop.to(dev))
        return F.mse_loss(v.float(), target.to(dev))

    def loss(self, x0: torch.Tensor, x1: torch.Tensor, emb: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """One Algorithm-1 loss on a batch (x0 controls, x1 targets, emb conditions)."""
        return self.field_loss(*self.loss_inputs(x0, x1, emb, g))

    def draw_pairs(self, data: TrainData, images: torch.Tensor, g: torch.Generator,
                   np_rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """A training batch: controls x0, targets x1, and each target's index into `data.treated_rows`.

        Each target is drawn uniformly and given a control from its own plate. With `coupling="ot"` the pairs are
        re-matched by minibatch OT over `ot_pool` batches' worth of draws and one batch of them is kept: the draws
        are i.i.d., so the kept pairs are a uniform sample of a coupling that had ot_pool times more candidates
        per plate (closer pairs), while x0 and x1 keep their marginals.
        """
        c, treated = self.config, data.treated_rows
        n = c.batch_size * (c.ot_pool if c.coupling == "ot" else 1)
        pos = torch.randint(len(treated), (n,), generator=g).numpy()
        pick = treated[pos]
        ctrl = data.paired_controls(pick, np_rng)
        x1, x0 = images[pick], images[ctrl]
        if c.dequantize:  # 8-bit value u -> u + U[0, 1), scaled as as_float scales u (the official code's)
            x1, x0 = [(x.float() + torch.rand(x.shape, generator=g)) / 127.5 - 1 for x in (x1, x0)]
        else:
            x1, x0 = as_float(x1), as_float(x0)
        if c.flip_augment and c.flip_per == "image":
            x0, x1 = image_flips(g, x0, c.flip_p), image_flips(g, x1, c.flip_p)
        elif c.flip_augment:
            x0, x1 = random_flips(g, x0, x1)
        if c.coupling == "ot":
            x0 = x0[ot_pairing(x0, x1, data.obs["BATCH"].to_numpy()[pick])]
        k = c.batch_size
        return x0[:k], x1[:k], pos[:k]

    # --- Method API ----------------------------------------------------------------
    def fit(self, data: TrainData, *, seed: int, workdir: Path) -> dict[str, Any]:
        c = self.config
        if len(data.perturbations) == 0:
            raise BenchmarkError("cellflow: the training split has no treated images")
        batch_record(c.batch_size, c.grad_accum)  # refuses a batch that does not split
        emb_table = torch.from_numpy(data.embedding_matrix(data.perturbations))
        pert_index = {p: i for i, p in enumerate(data.perturbations)}
        target_pert = np.array([pert_index[p] for p in data.obs["CPD_NAME"].to_numpy()[data.treated_rows]])
        images = torch.from_numpy(np.ascontiguousarray(data.images)).permute(0, 3, 1, 2)  # uint8, converted per batch
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the initial weights depend on the run seed only
            self._build(images.shape[1], emb_table.shape[1])
        dev = self._device()
        self.model.to(dev)
        self.ema.to(dev)
        steps = self.total_steps(len(data.treated_rows))
        if c.optimizer == "adamw":
            opt = torch.optim.AdamW(self.model.parameters(), lr=c.lr, betas=tuple(c.betas), weight_decay=c.weight_decay)
        else:
            opt = torch.optim.Adam(self.model.parameters(), lr=c.lr, betas=tuple(c.betas), weight_decay=c.weight_decay)
        precision = resolve_precision(c.mixed_precision, dev)
        scaler = torch.amp.GradScaler(dev.type, enabled=precision == "fp16")
        if c.lr_schedule == "cosine":
            lr_sched = get_cosine_schedule_with_warmup(opt, c.warmup_steps, steps)
        else:
            lr_sched = get_constant_schedule_with_warmup(opt, c.warmup_steps)
        g = torch.Generator().manual_seed(seed)
        np_rng = np.random.default_rng(seed)
        ckpt = Path(workdir) / "checkpoint.pt"
        parts = {"model": self.model, "ema": self.ema, "optimizer": opt, "lr_schedule": lr_sched}
        if scaler.is_enabled():
            parts["grad_scaler"] = scaler
        step, losses = load_checkpoint(ckpt, parts, "losses", g, np_rng, dev)
        t0, start = time.time(), step
        bar = tqdm(total=steps, initial=step, desc="cellflow training", unit="step")
        while step < steps:
            self.model.train()
            x0, x1, pos = self.draw_pairs(data, images, g, np_rng)
            emb = emb_table[torch.from_numpy(target_pert[pos])]
            inputs = self.loss_inputs(x0, x1, emb, g)
            opt.zero_grad(set_to_none=True)
            loss = accumulate(self.field_loss, inputs, c.grad_accum, scaler)
            scaler.step(opt)
            scaler.update()
            lr_sched.step()
            with torch.no_grad():
                decay = ema_decay(c.ema_decay, step)
                for pe, pm in zip(self.ema.parameters(), self.model.parameters()):
                    pe.lerp_(pm, 1 - decay)
            step += 1
            losses.append(loss.item())
            bar.update()
            if step % 25 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-25:]):.4f}")
            if step % c.checkpoint_every == 0 or step == steps:
                save_checkpoint(ckpt, parts, step, ("losses", losses), g, np_rng)
        bar.close()
        elapsed = time.time() - t0
        done = step - start
        return {"steps": step, "resumed_from": start, "loss_first_50": float(np.mean(losses[:50])), "loss_last_50": float(np.mean(losses[-50:])),
                "train_images_per_s": round(done * c.batch_size / elapsed, 2) if done else None,
                "parameters": sum(p.numel() for p in self.model.parameters()), "device": str(dev),
                "precision": precision, "epochs": round(steps * c.batch_size / len(data.treated_rows), 3),
                "batch": batch_record(c.batch_size, c.grad_accum),
                "treated_training_images": len(data.treated_rows)}

    def total_steps(self, n_treated: int) -> int:
        """`steps`, or `epochs` passes over the treated training images in full batches (the official loader
        iterates over treated images, with drop_last)."""
        c = self.config
        return epochs_to_steps(c.epochs, c.steps, n_treated, c.batch_size)

    def field(self, emb: torch.Tensor, alpha: float | None = None) -> GuidedField:
        net = self.ema if self.config.use_ema else self.model
        net.eval()
        alpha = self.config.alpha if alpha is None else alpha
        return GuidedField(net, emb.to(self._device()), alpha, conditional=self.config.condition)

    @torch.no_grad()
    def generate(self, request: GenerateRequest, *, seed: int) -> torch.Tensor:
        x0 = request.controls.to(self._device())
        if self.config.inference_noise:
            g = torch.Generator().manual_seed(seed)
            x0 = x0 + self.config.noise_std * torch.randn(x0.shape, generator=g).to(x0)
        with self._autocast():  # the field in bf16 where training used it; the ODE state stays float32
            x1, _ = integrate(self.field(request.embeddings), x0, self.config.solver, self.config.nfe)
        return x1.cpu()

    @torch.no_grad()
    def trajectory(self, controls: torch.Tensor, embeddings: torch.Tensor, frames: tuple[float, ...],
                   reverse: bool = False) -> dict[float, torch.Tensor]:
        """States at `frames` along the forward (control -> perturbed) or reverse path."""
        with self._autocast():
            _, states = integrate(self.field(embeddings), controls.to(self._device()), self.config.solver,
                                  self.config.nfe, reverse=reverse, frames=frames)
        return states

    def save(self, path: Path) -> None:
        io.write_torch(Path(path) / "cellflow.pt", {"model": self.model.state_dict(), "ema": self.ema.state_dict(),
                                                     "channels": self.channels, "cond_dim": self.cond_dim})
        io.write_json(Path(path) / "config.json", asdict(self.config))

    def load(self, path: Path) -> None:
        state = torch.load(Path(path) / "cellflow.pt", map_location="cpu", weights_only=True)
        self._build(int(state["channels"]), int(state["cond_dim"]))
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.model.to(self._device())
        self.ema.to(self._device())

