"""PhenDiff (Bourou et al., MICCAI 2024): translation by DDIM inversion and regeneration.

A conditional pixel-space diffusion model is trained on controls and treated
cells alike. To translate, the control image is DDIM-inverted to noise under the
control condition and regenerated from exactly that latent under the target
condition ("DDIB"). diffusers provides the U-Net, both schedulers, the EMA and
the learning-rate schedule; this module wires them as published
(thethomasboyer/PhenDiff b060a15, `train.py`, `src/utils_training.py`,
`src/utils_Img2Img.py`) and lifts the published code's limits: any
number of perturbations, embedding conditioning for unseen compounds, any
channel count.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch.nn import functional as F

from benchmark.errors import BenchmarkError
from benchmark.method import Capabilities, GenerateRequest, TrainData, as_float
from methods.training import (Shape, TorchMethod, TrainingConfig, TrainingSet, decide,
                              random_flips)

from .model import CONTROL, NULL, PERTURBATION, Denoiser

if TYPE_CHECKING:
    from diffusers import DDIMScheduler
    from diffusers.training_utils import EMAModel

# diffusers is imported where it is used: importing it costs over a second that `list` and name checks need not pay


@dataclass
class PhenDiffConfig(TrainingConfig):
    # denoiser (published: widths 128, 256, 512; 2 layers per block; 32 groups)
    widths: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    attention_head_dim: int = 8
    norm_num_groups: int = 16
    # schedule as published
    train_timesteps: int = 3000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    # training
    lr: float = 1e-4
    warmup_steps: int = 500
    adam_betas: tuple[float, ...] = (0.95, 0.999)
    weight_decay: float = 1e-6
    grad_clip: float = 1.0
    ema_max_decay: float = 0.9999
    ema_inv_gamma: float = 1.0
    ema_power: float = 0.75
    p_uncond: float = 0.1
    p_uncond_per: Literal["sample", "batch"] = "sample"  # the published code decides per batch
    null_condition: Literal["learned", "zero"] = "learned"  # published: zero class embedding
    resize: int = 0  # > 0: train and translate at this size (bilinear), outputs resized back (published: 128)
    flip_augment: bool = True
    # translation
    inversion_steps: int = 100
    generation_steps: int = 100
    guidance: float = 1.0  # 1 = no classifier-free guidance, as published
    use_ema: bool = True
    class_table: int = 0  # > 0: a published class table of this many rows replaces the embedding encoder (import)


# equal compute on the simulated screen: the reference budget as a step count (docs/reference-profiles.md), warm-up 10%
# of the steps, the learning rate and the DDIM steps chosen on the validation split (20 + 20 inverted too coarsely:
# docs/phendiff-diagnosis.md), the best validation checkpoint
REFERENCE: dict[str, Any] = {"steps": 490, "lr": 5e-4, "warmup_steps": 50, "inversion_steps": 50,
                             "generation_steps": 50, "curve_points": 4, "select": "best"}
PROFILES: dict[str, dict[str, Any]] = {
    # CPU: a small denoiser, a short schedule and 20 + 20 DDIM steps
    "quick": {"steps": 1500, "lr": 5e-4, "warmup_steps": 100, "inversion_steps": 20, "generation_steps": 20},
    "reference": REFERENCE,
    # six times the reference budget and warm-up, the curve three points longer (docs/reference-profiles.md)
    "long": {**REFERENCE, "steps": 6 * REFERENCE["steps"], "warmup_steps": 6 * REFERENCE["warmup_steps"],
             "curve_points": 7},
    # as published (GPU): 30k steps, 100 + 100 steps; bf16 where the published code used fp16
    "paper": {"widths": (128, 256, 512), "layers_per_block": 2, "norm_num_groups": 32, "steps": 30_000,
              "checkpoint_every": 2000, "mixed_precision": "bf16"},
    # the official code (thethomasboyer/PhenDiff b060a15, `examples/examples_training_scripts/`, `train.py`): the
    # paper's U-Net, 96 per GPU x 8 GPUs = 768 a step at lr 1e-4 x sqrt(8), fp16, images resized to 128 px,
    # unconditional passes decided per batch with a zero class embedding
    "official": {"widths": (128, 256, 512), "layers_per_block": 2, "norm_num_groups": 32, "steps": 30_000,
                 "batch_size": 768, "grad_accum": 8, "lr": 1e-4 * 8 ** 0.5, "mixed_precision": "fp16", "resize": 128,
                 "p_uncond_per": "batch", "null_condition": "zero", "checkpoint_every": 2000},
}


class PhenDiff(TorchMethod):
    name = "phendiff"
    capabilities = Capabilities(needs_control=True, unseen_perturbations=True)
    Config = PhenDiffConfig
    profiles = PROFILES
    default_profile = "quick"
    display_order = 1
    published = ("PhenDiff's saved DDIM pipeline folder: model_index.json, scheduler/, unet/ (config.json and "
                 "diffusion_pytorch_model.safetensors or .bin) (thethomasboyer/PhenDiff b060a15, "
                 "src/utils_training.py:1004-1058)")

    def __init__(self, config: PhenDiffConfig | None = None) -> None:
        super().__init__(config)
        self.model: Denoiser | None = None
        self.ema: EMAModel | None = None

    # --- pieces ------------------------------------------------------------------------
    def scheduler(self) -> DDIMScheduler:
        from diffusers import DDIMScheduler

        c = self.config
        return DDIMScheduler(num_train_timesteps=c.train_timesteps, beta_schedule="scaled_linear",
                             beta_start=c.beta_start, beta_end=c.beta_end, prediction_type="v_prediction",
                             rescale_betas_zero_snr=True, timestep_spacing="trailing", clip_sample=True,
                             clip_sample_range=1.0)

    def _resized(self, x: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """x at the working size (`resize`), or back at `size`; bilinear, antialiased when shrinking."""
        size = size or self.config.resize
        if not size or x.shape[-1] == size:
            return x
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)

    def _denoiser(self) -> Denoiser:
        c, shape = self.config, self.shape
        return Denoiser(shape.channels, shape.embedding_dim, tuple(c.widths), c.layers_per_block, c.attention_head_dim,
                        c.norm_num_groups, c.resize or shape.image_size, c.null_condition == "zero", c.class_table)

    def build(self, shape: Shape) -> None:
        """The denoiser at the size it trains and translates at (`resize`, else the task's)."""
        self.shape = shape
        self.model = self._denoiser()
        self.build_ema()

    def build_ema(self) -> None:
        """The average of the weights, starting from the model's current ones."""
        from diffusers.training_utils import EMAModel

        c = self.config
        self.ema = EMAModel(self.model.parameters(), decay=c.ema_max_decay, use_ema_warmup=True,
                            inv_gamma=c.ema_inv_gamma, power=c.ema_power)

    def modules(self) -> dict[str, Any]:
        return {"model": self.model, "ema": self.ema}

    def epoch_rows(self, data: TrainData) -> int:
        return len(data.images)  # it learns controls and treated cells alike

    def networks(self, channels: int, image_size: int, embedding_dim: int, n_perturbations: int) -> dict:
        size = self.config.resize or image_size  # the size it trains and translates at
        self.build(Shape(channels, image_size, embedding_dim, n_perturbations))
        example = (torch.zeros(1, channels, size, size), torch.zeros(1, dtype=torch.long),
                   torch.zeros(1, embedding_dim), torch.zeros(1, dtype=torch.long))
        # the U-Net alone as well: the published one differs from ours only in its class table
        return {"denoiser": (self.model, example),
                "unet": (self.model.unet, (example[0], example[1], self.model.classes(example[2], example[3])))}

    def loss_inputs(self, x0: torch.Tensor, emb: torch.Tensor, kind: torch.Tensor,
                    g: torch.Generator) -> tuple[torch.Tensor, ...]:
        """The draws of one loss on a batch (noise, timesteps): the denoiser's inputs and its v target, for the
        whole batch at once, so accumulation chunks see exactly the draws of the unsplit batch."""
        sched = self.scheduler()
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(self.config.train_timesteps, (x0.shape[0],), generator=g)
        return sched.add_noise(x0, noise, t), t, emb, kind, sched.get_velocity(x0, noise, t)

    def denoiser_loss(self, xt: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, kind: torch.Tensor,
                      target: torch.Tensor) -> torch.Tensor:
        dev = self.device
        with self.autocast():
            v = self.model(xt.to(dev), t.to(dev), emb.to(dev), kind.to(dev))
        return F.mse_loss(v.float(), target.to(dev))

    def loss(self, x0: torch.Tensor, emb: torch.Tensor, kind: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """v-prediction MSE at uniformly drawn training timesteps."""
        return self.denoiser_loss(*self.loss_inputs(x0, emb, kind, g))

    # --- training (the loop is TorchMethod's) ---------------------------------------------
    def start_training(self, train: TrainingSet, steps: int) -> dict[str, Any]:
        c = self.config
        self.row_kind = torch.from_numpy(np.where(train.labels >= 0, PERTURBATION, CONTROL))
        self.row_pert = torch.from_numpy(np.maximum(train.labels, 0))  # controls: any row, their kind says control
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=c.lr, betas=tuple(c.adam_betas),
                                     weight_decay=c.weight_decay, eps=1e-8)
        from diffusers.optimization import get_cosine_schedule_with_warmup

        self.lr_sched = get_cosine_schedule_with_warmup(self.opt, c.warmup_steps, steps)
        return {"optimizer": self.opt, "lr_schedule": self.lr_sched}

    def train_step(self, train: TrainingSet, step: int, g: torch.Generator, np_rng: np.random.Generator) -> list[float]:
        c = self.config
        self.model.train()
        pick = torch.randint(len(train.images), (c.batch_size,), generator=g)
        x0 = self._resized(as_float(train.images[pick]))
        if c.flip_augment:
            (x0,) = random_flips(g, x0)
        kind = self.row_kind[pick].clone()
        kind[decide(c.p_uncond, c.p_uncond_per, len(pick), g)] = NULL
        inputs = self.loss_inputs(x0, train.embeddings[self.row_pert[pick]], kind, g)
        self.opt.zero_grad(set_to_none=True)
        loss = self.backward(self.denoiser_loss, inputs)
        self.sync_gradients(self.model.parameters())
        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.lr_sched.step()
        self.ema.step(self.model.parameters())
        return [loss.item()]

    # --- published weights ---------------------------------------------------------------
    SCHEDULER_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type",
                      "rescale_betas_zero_snr", "timestep_spacing", "clip_sample")

    def import_published(self, path: Path, data: TrainData, weights: str = "ema") -> dict[str, Any]:
        """Built from the start with the published class table in place of the embedding encoder, and the
        published null condition (zero)."""
        import dataclasses

        self.config = dataclasses.replace(self.config, class_table=len(data.perturbations), null_condition="zero")
        return super().import_published(path, data, weights)

    def load_published(self, path: Path, data: TrainData, weights: str) -> dict[str, Any]:
        """The folder `save_pretrained` wrote (its U-Net holds the EMA weights: they are copied in before saving).
        The class table (`class_embedding.weight`) is indexed as torchvision's ImageFolder indexes class folders:
        sorted names (src/utils_dataset.py:67, 138), the control among them, since translation starts from it."""
        import json

        from methods.published import file_record, load_into, official_rows

        if weights != "ema":
            raise BenchmarkError(f"{path}: a saved PhenDiff pipeline holds only its EMA weights; drop "
                                 "--checkpoint-weights")
        unet_dir, files = path / "unet", []
        for name in ("model_index.json", "scheduler/scheduler_config.json", "unet/config.json"):
            if not (path / name).is_file():
                raise BenchmarkError(f"{path}: no {name}; expected a PhenDiff pipeline folder ({self.published})")
            files.append(path / name)
        theirs = json.loads((path / "scheduler/scheduler_config.json").read_text())
        ours = self.scheduler().config
        for key in self.SCHEDULER_KEYS:
            if key in theirs and theirs[key] != ours[key]:
                raise BenchmarkError(f"{path / 'scheduler/scheduler_config.json'}: {key} is {theirs[key]!r}, our "
                                     f"sampler uses {ours[key]!r}; set it to match (--set) or use another checkpoint")
        state = _read_unet(unet_dir)
        files.append(state.pop("__file__"))
        if "class_embedding.weight" not in state:
            raise BenchmarkError(f"{unet_dir}: no class_embedding.weight; expected a class-conditional PhenDiff U-Net")
        table = state.pop("class_embedding.weight").float()
        names = sorted([*data.perturbations, data.control])
        rows = official_rows(table.numpy(), names, [*data.perturbations, data.control], str(unet_dir))
        n = load_into(self.model.unet, state, f"{unet_dir} (U-Net)")
        classes = self.model.classes
        classes.keys.copy_(torch.from_numpy(np.asarray(data.embeddings, np.float32)))
        if len(torch.unique(classes.keys, dim=0)) < len(classes.keys):
            raise BenchmarkError("task: two perturbations share an embedding; their published classes cannot be told "
                                 "apart")
        classes.rows.copy_(torch.from_numpy(rows[:-1]))
        classes.control.copy_(torch.from_numpy(rows[-1]))
        self.build_ema()
        return {"format": self.published, "files": file_record(*files), "weights": "ema (as saved)",
                "tensors": n + 1, "classes": names}

    def _net(self) -> Denoiser:
        """The EMA weights (or the raw ones) in a copy, leaving the training state alone."""
        net = self._denoiser()
        net.load_state_dict(self.model.state_dict())
        if self.config.use_ema:
            self.ema.copy_to(net.parameters())
        return net.to(self.device).eval()

    def _prediction(self, net: Denoiser, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor,
                    kind: torch.Tensor, guidance: float) -> torch.Tensor:
        tt = t.expand(x.shape[0]).to(x.device)
        v = net(x, tt, emb, kind)
        if guidance != 1.0:
            vu = net(x, tt, emb, torch.full_like(kind, NULL))
            v = vu + guidance * (v - vu)
        return v

    @torch.no_grad()
    def invert(self, x: torch.Tensor, emb: torch.Tensor, kind: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Deterministic DDIM inversion image -> latent under the given condition, without guidance."""
        from diffusers import DDIMInverseScheduler

        net, inv = self._net(), DDIMInverseScheduler.from_config(self.scheduler().config)
        inv.set_timesteps(steps or self.config.inversion_steps)
        x = x.to(self.device)
        for t in inv.timesteps:
            x = inv.step(self._prediction(net, x, t, emb.to(x.device), kind.to(x.device), 1.0), t, x).prev_sample
        return x

    @torch.no_grad()
    def regenerate(self, latent: torch.Tensor, emb: torch.Tensor, kind: torch.Tensor, steps: int | None = None,
                   guidance: float | None = None) -> torch.Tensor:
        """DDIM (eta = 0) from the latent exactly as given: re-noising it would discard the inversion."""
        net, sched = self._net(), self.scheduler()
        sched.set_timesteps(steps or self.config.generation_steps)
        guidance = self.config.guidance if guidance is None else guidance
        x = latent.to(self.device)
        for t in sched.timesteps:
            v = self._prediction(net, x, t, emb.to(x.device), kind.to(x.device), guidance)
            x = sched.step(v, t, x, eta=0.0).prev_sample
        return x.clamp(-1, 1)

    @torch.no_grad()
    def generate(self, request: GenerateRequest, *, seed: int) -> torch.Tensor:
        n = len(request.perturbations)
        emb = request.embeddings.float()
        size = request.controls.shape[-1]
        latent = self.invert(self._resized(request.controls), emb, torch.full((n,), CONTROL))
        out = self.regenerate(latent, emb, torch.full((n,), PERTURBATION))
        return self._resized(out, size).clamp(-1, 1).cpu()


def _read_unet(folder: Path) -> dict[str, Any]:
    """The U-Net's tensors from a diffusers folder, safetensors first (no code runs either way); the file read is
    returned under `__file__`."""
    from methods.published import read_checkpoint

    safe, bin_ = folder / "diffusion_pytorch_model.safetensors", folder / "diffusion_pytorch_model.bin"
    if safe.is_file():
        from safetensors.torch import load_file

        try:
            return {**load_file(str(safe)), "__file__": safe}
        except Exception as e:  # noqa: BLE001 - a damaged file, said in one line
            raise BenchmarkError(f"{safe}: not a readable safetensors file ({str(e).splitlines()[0]})") from None
    if bin_.is_file():
        return {**read_checkpoint(bin_, "a diffusers U-Net state dict"), "__file__": bin_}
    raise BenchmarkError(f"{folder}: no diffusion_pytorch_model.safetensors or .bin")
