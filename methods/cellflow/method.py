"""CellFlow (Algorithm 1 of the paper): conditional flow matching from control to perturbed cells.

Training pairs each treated image x1 with a control x0 from the *same batch*,
adds Gaussian noise to x0 with probability p_noise, drops the condition with
probability p_drop, and regresses v(x_t, t, c) on x1 - x0. Sampling integrates
the classifier-free-guided field from the control image.

Where the paper and the official code differ (yuhui-zh15/CellFlux 3256adc: `training/train_loop.py`,
`train.py`, `submitit_train.py`, `models/`)
each difference is an option; the `paper` profile follows the paper's text:
batch 128, per-sample noise, no noise at inference, t ~ U[0, 1], Euler, random same-plate pairs.
The CPU `quick` profile re-pairs each batch by minibatch optimal transport within the plate and samples with the
midpoint rule at the same 10 evaluations (see PROFILES).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.nn import functional as F

from benchmark.errors import BenchmarkError
from benchmark.method import Capabilities, GenerateRequest, TrainData, as_float, set_by_fit
from methods.training import (Shape, TorchMethod, TrainingConfig, TrainingSet, decide,
                              image_flips, random_flips)

from .adm import AdmUNet
from .path import interpolate, ot_pairing, sample_time, target_velocity
from .solver import GuidedField, integrate
from .unet import UNet


@dataclass
class CellFlowConfig(TrainingConfig):
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
    batch_size: int = 32  # images per optimiser step (an epoch: a pass over the treated training images)
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
    # sampling
    alpha: float = 1.2  # CFG strength; 1 = no guidance
    solver: str = "euler"
    nfe: int = 10
    inference_noise: bool = False  # official code: x0 = ctrl + noise at inference too
    use_ema: bool = True
    # ablations (Table 2c)
    condition: bool = True  # False: "w/o Condition"
    # where the flow starts: the control image (the paper's premise) or N(0, I), conditioned then on the target batch
    # as well (MiT's design; the same field, conditioning and training otherwise)
    source: Literal["control", "noise"] = "control"
    batches: tuple[str, ...] = set_by_fit()  # source noise: the training batches, in order


# the CPU settings that depart from the paper, shared by the quick, reference and ablation profiles
CPU: dict[str, Any] = {"lr": 1e-3, "coupling": "ot", "solver": "midpoint", "noise_blur": 2.0}
# CPU default: a small field and a short cosine schedule, so the main job runs in minutes on 2 cores; why each setting
# departs from the paper, with the measurements, is in docs/cellflow-quick-profile.md
QUICK: dict[str, Any] = {**CPU, "steps": 500, "lr_schedule": "cosine", "warmup_steps": 25}
PROFILES: dict[str, dict[str, Any]] = {
    "quick": QUICK,
    # the paper's text (section 4.2, appendix C): hidden 128, four stages, batch 128, Adam 1e-4, 100 epochs (over the
    # treated training images, the official code's epoch), Euler; a GPU profile
    "paper": {"width": 128, "mults": (1, 2, 2, 2), "blocks": 2, "dropout": 0.1, "batch_size": 128, "epochs": 100,
              "noise_std": 1.0, "ema_decay": 0.9999, "checkpoint_every": 2000, "nfe": 50, "mixed_precision": "bf16"},
    # the official code (yuhui-zh15/CellFlux 3256adc, `models/model_configs.py`, `train.py`, `training/train_loop.py`,
    # `submitit_train.py`): the ADM U-Net of 56.2M parameters, AdamW 1e-4 betas (0.9, 0.95) wd 0.01 constant, fp16
    # with a gradient scaler, 32 per GPU x 4 GPUs (per-batch decisions per group of 32, as each GPU makes its own), 200 epochs over the treated training images, skewed times, per-batch
    # noise (p 0.5, sigma 1) and condition drop (0.2), dequantisation, per-image flips p 0.3, EMA 0.999; sampling from
    # control + N(0, 1) by Heun on the 51-point EDM grid (100 evaluations), CFG 1.2. A GPU profile.
    "official": {"arch": "adm", "width": 128, "mults": (2, 2, 2), "blocks": 4, "attention_levels": (1,), "heads": 1,
                 "dropout": 0.3, "time_scale": 1.0, "optimizer": "adamw", "lr": 1e-4, "betas": (0.9, 0.95),
                 "weight_decay": 0.01, "mixed_precision": "fp16", "batch_size": 128, "grad_accum": 4, "batch_group": 32,
                 "epochs": 200,
                 "time_sampling": "skewed", "p_noise": 0.5, "noise_std": 1.0, "noise_per": "batch", "p_drop": 0.2,
                 "p_drop_per": "batch", "dequantize": True, "flip_p": 0.3, "flip_per": "image", "ema_decay": 0.999,
                 "inference_noise": True, "solver": "edm_heun", "nfe": 100, "alpha": 1.2, "checkpoint_every": 2000},
    # equal compute on the simulated screen: the reference budget as a step count (docs/reference-profiles.md), the
    # learning rate chosen on the validation split, the best validation checkpoint
    "reference": {**CPU, "steps": 875, "curve_points": 4, "select": "best"},
    # six times the reference budget (docs/reference-profiles.md)
    "long": {**CPU, "steps": 5250, "curve_points": 7, "select": "best"},
    # Table 2c ablations, on top of quick
    "no-condition": {**QUICK, "condition": False, "alpha": 1.0},
    "no-cfg": {**QUICK, "alpha": 1.0, "p_drop": 0.0},
    "no-noise": {**QUICK, "p_noise": 0.0},
    "source-noise": {**QUICK, "source": "noise"},
}


def ema_decay(target: float, step: int) -> float:
    """EMA decay at `step`, warmed up as (1 + step) / (10 + step) (the schedule of diffusers' EMAModel): without
    the warm-up a short run's average keeps much of the random initial weights (docs/cellflow-quick-profile.md)."""
    return min(target, (1 + step) / (10 + step))


class CellFlow(TorchMethod):
    name = "cellflow"
    capabilities = Capabilities(needs_control=True, unseen_perturbations=True, trajectories=True)
    Config = CellFlowConfig
    profiles = PROFILES
    default_profile = "quick"
    display_order = 3
    ablations = ("no-condition", "no-cfg", "no-noise", "source-noise")
    published = "CellFlux checkpoint.pth (yuhui-zh15/CellFlux 3256adc, training/load_and_save.py:22-35)"

    def __init__(self, config: CellFlowConfig | None = None) -> None:
        super().__init__(config)
        self.model: UNet | AdmUNet | None = None
        self.ema: UNet | AdmUNet | None = None

    # --- pieces ------------------------------------------------------------------
    def variant(self) -> str:
        c, names = self.config, []
        if not c.condition:
            names.append("w/o condition")
        elif c.alpha == 1.0:
            names.append("w/o CFG")
        if c.p_noise == 0.0:
            names.append("w/o noise")
        if c.source == "noise":
            names.append("from noise")
        return ", ".join(names) or "default"

    @property
    def conditioned_on_control(self) -> bool:
        return self.config.source == "control"

    def fit(self, data: TrainData, *, seed: int, workdir: Path, monitor: Any = None) -> dict[str, Any]:
        if self.config.source == "noise":  # the batch vocabulary the condition's one-hot part is built for
            self.config = dataclasses.replace(self.config, batches=tuple(sorted(set(data.obs["BATCH"].astype(str)))))
        return super().fit(data, seed=seed, workdir=workdir, monitor=monitor)

    def condition(self, emb: torch.Tensor, batches: list[str] | np.ndarray) -> torch.Tensor:
        """The field's condition: the perturbation embedding, and with source noise a one-hot of the target batch
        appended (from noise, nothing else tells the field which plate to draw)."""
        if self.config.source != "noise":
            return emb
        index = {b: i for i, b in enumerate(self.config.batches)}
        unknown = [b for b in map(str, batches) if b not in index]
        if unknown:
            raise BenchmarkError(f"cellflow (source noise): target batch {unknown[0]!r} was not in training; the "
                                 f"field knows {', '.join(self.config.batches)}")
        onehot = F.one_hot(torch.tensor([index[str(b)] for b in batches]), len(index)).to(emb)
        return torch.cat([emb, onehot], dim=1)

    def build(self, shape: Shape) -> None:
        c = self.config
        channels, cond_dim = shape.channels, shape.embedding_dim + (len(c.batches) if c.source == "noise" else 0)
        if c.arch == "adm":
            self.model = AdmUNet(channels, cond_dim, c.width, tuple(c.mults), c.blocks, tuple(c.attention_levels),
                                 c.heads, c.dropout, c.time_scale)
        else:
            self.model = UNet(channels, cond_dim, c.width, tuple(c.mults), c.blocks, c.attention, c.dropout,
                              c.time_scale)
        if self.precision == "bf16":  # oneDNN's and cuDNN's fast bf16 convolutions want NHWC (docs/cellflow-quick-profile.md)
            self.model.to(memory_format=torch.channels_last)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)

    def modules(self) -> dict[str, Any]:
        return {"model": self.model, "ema": self.ema}

    def networks(self, channels: int, image_size: int, embedding_dim: int, n_perturbations: int) -> dict:
        self.build(Shape(channels, image_size, embedding_dim, n_perturbations))
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
            from torchvision.transforms.functional import gaussian_blur  # imported when used: it loads torch._dynamo

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
        dev = self.device
        xt = xt.to(dev)
        if self.precision == "bf16":
            xt = xt.contiguous(memory_format=torch.channels_last)
        with self.autocast():
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
        if c.source == "noise":  # the same draws as from the control, then the control replaced by noise
            x0 = torch.randn(x0.shape, generator=g)
        if c.flip_augment and c.flip_per == "image":
            x0, x1 = image_flips(g, x0, c.flip_p), image_flips(g, x1, c.flip_p)
        elif c.flip_augment:
            x0, x1 = random_flips(g, x0, x1)
        if c.coupling == "ot":
            x0 = x0[ot_pairing(x0, x1, data.obs["BATCH"].to_numpy()[pick])]
        k = c.batch_size
        return x0[:k], x1[:k], pos[:k]

    # --- training (the loop is TorchMethod's) --------------------------------------------
    def start_training(self, train: TrainingSet, steps: int) -> dict[str, Any]:
        from diffusers.optimization import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

        c = self.config
        self.target_pert = train.labels[train.data.treated_rows]
        adam = torch.optim.AdamW if c.optimizer == "adamw" else torch.optim.Adam
        self.opt = adam(self.model.parameters(), lr=c.lr, betas=tuple(c.betas), weight_decay=c.weight_decay)
        if c.lr_schedule == "cosine":
            self.lr_sched = get_cosine_schedule_with_warmup(self.opt, c.warmup_steps, steps)
        else:
            self.lr_sched = get_constant_schedule_with_warmup(self.opt, c.warmup_steps)
        return {"optimizer": self.opt, "lr_schedule": self.lr_sched}

    def train_step(self, train: TrainingSet, step: int, g: torch.Generator, np_rng: np.random.Generator) -> list[float]:
        self.model.train()
        x0, x1, pos = self.draw_pairs(train.data, train.images, g, np_rng)
        emb = self.condition(train.embeddings[torch.from_numpy(self.target_pert[pos])],
                             train.data.obs["BATCH"].to_numpy()[train.data.treated_rows[pos]])
        inputs = self.loss_inputs(x0, x1, emb, g)
        self.opt.zero_grad(set_to_none=True)
        loss = self.backward(self.field_loss, inputs)
        self.sync_gradients(self.model.parameters())
        self.scaler.step(self.opt)
        self.scaler.update()
        self.lr_sched.step()
        with torch.no_grad():
            decay = ema_decay(self.config.ema_decay, step)
            for pe, pm in zip(self.ema.parameters(), self.model.parameters()):
                pe.lerp_(pm, 1 - decay)
        return [loss.item()]

    # --- published weights ---------------------------------------------------------------
    def load_published(self, path: Path, data: TrainData, weights: str) -> dict[str, Any]:
        """CellFlux's `checkpoint.pth`: a dict whose `model` is the state of its EMA wrapper (models/ema.py:18-30):
        `num_updates`, `model.<U-Net tensor>` (the raw weights) and `shadow_params.<i>` (the averaged ones, in the
        order of the U-Net's trainable parameters); a run without EMA saves the U-Net's own state there."""
        from methods.published import file_record, load_into, read_checkpoint, require_keys

        what = "a CellFlux checkpoint.pth (a dict with model, optimizer, lr_schedule, epoch, scaler, args)"
        if self.config.arch != "adm":
            raise BenchmarkError(f"{path}: CellFlux's networks are the `official` profile's (arch adm), not arch "
                                 f"{self.config.arch!r}; run with --profile official")
        ckpt = read_checkpoint(path, what)
        require_keys(ckpt, ["model"], path, what)
        state = ckpt["model"]
        wrapped = any(k.startswith("model.") for k in state)
        raw = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")} if wrapped else dict(state)
        if weights not in ("ema", "raw"):
            raise BenchmarkError(f"--checkpoint-weights {weights!r}: expected ema or raw")
        if weights == "ema":
            if not wrapped:
                raise BenchmarkError(f"{path}: saved without EMA (no model.* and shadow_params.* entries); import "
                                     "its raw weights with --checkpoint-weights raw")
            shadow = sorted((k for k in state if k.startswith("shadow_params.")), key=lambda k: int(k.split(".")[1]))
            params = self._official_parameter_names(raw, f"{path} (model)")  # every name and shape checked here
            if len(shadow) != len(params):
                raise BenchmarkError(f"{path}: {len(shadow)} EMA tensors (shadow_params.*) for {len(params)} "
                                     "trainable U-Net tensors; expected one each")
            raw = {**raw, **{name: state[k] for name, k in zip(params, shadow)}}
        load_into(self.model, raw, f"{path} (model)")
        self.ema.load_state_dict(self.model.state_dict())  # generation reads the chosen weights whatever use_ema says
        args = ckpt.get("args")
        return {"format": self.published, "files": file_record(path), "weights": weights, "epoch": ckpt.get("epoch"),
                "ema_updates": int(state["num_updates"]) if "num_updates" in state else None,
                "args": {k: v for k, v in sorted(vars(args).items()) if isinstance(v, (bool, int, float, str))}
                if args is not None and hasattr(args, "__dict__") else None}

    def _official_parameter_names(self, theirs: dict[str, torch.Tensor], source: str) -> list[str]:
        """The official U-Net's trainable tensors in its registration order: those paired with our parameters."""
        from methods.published import pair_tensors

        ours = self.model.state_dict()
        pairs = dict(pair_tensors({k: tuple(v.shape) for k, v in ours.items()},
                                  {k: tuple(v.shape) for k, v in theirs.items()}, source=source))
        trainable = {pairs[k] for k, _ in self.model.named_parameters()}
        return [k for k in theirs if k in trainable]

    # --- sampling ------------------------------------------------------------------------
    def field(self, emb: torch.Tensor, alpha: float | None = None) -> GuidedField:
        net = self.ema if self.config.use_ema else self.model
        net.eval()
        alpha = self.config.alpha if alpha is None else alpha
        return GuidedField(net, emb.to(self.device), alpha, conditional=self.config.condition)

    @torch.no_grad()
    def generate(self, request: GenerateRequest, *, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        if self.config.source == "noise":  # the control's pixels are never read, only its shape
            x0 = torch.randn(request.controls.shape, generator=g).to(self.device)
        else:
            x0 = request.controls.to(self.device)
            if self.config.inference_noise:
                x0 = x0 + self.config.noise_std * torch.randn(x0.shape, generator=g).to(x0)
        emb = self.condition(request.embeddings, request.target_batches)
        with self.autocast():  # the field in bf16 where training used it; the ODE state stays float32
            x1, _ = integrate(self.field(emb), x0, self.config.solver, self.config.nfe)
        return x1.cpu()

    @torch.no_grad()
    def trajectory(self, controls: torch.Tensor, embeddings: torch.Tensor, frames: tuple[float, ...],
                   reverse: bool = False) -> dict[float, torch.Tensor]:
        """States at `frames` along the forward (control -> perturbed) or reverse path."""
        if self.config.source == "noise":
            raise BenchmarkError("cellflow (source noise): its flow starts from noise, not from a control; there is no "
                                 "control-to-perturbed trajectory to draw")
        with self.autocast():
            _, states = integrate(self.field(embeddings), controls.to(self.device), self.config.solver,
                                  self.config.nfe, reverse=reverse, frames=frames)
        return states
