"""IMPA (Palma, Theis, Lotfollahi; Nat. Commun. 2025): style transfer from control to perturbed cells.

The control image is the generator's input; the style is a linear map of the
perturbation's frozen embedding and a noise vector z, so an unseen compound
gets a style zero-shot. Losses and hyper-parameters as published
(theislab/IMPA 13eb82f, `IMPA/solver.py`, `IMPA/model.py`): non-saturating GAN with R1, style
reconstruction, diversity (weight decayed linearly to 0), cycle consistency.
Each treated target is paired with a control from the same batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchmark.errors import BenchmarkError
from benchmark.method import Capabilities, GenerateRequest, TrainData, as_float
from methods.training import Shape, TorchMethod, TrainingConfig, TrainingSet, random_flips

from .networks import Discriminator, Generator, MappingNetwork, StyleEncoder, kaiming_init

NETS = ("generator", "style_encoder", "mapping", "discriminator")


@dataclass
class IMPAConfig(TrainingConfig):
    dim_in: int = 16  # published: 64
    max_conv_dim: int = 64  # published: 512
    style_dim: int = 64
    z_dim: int = 16  # BBBC021 at 96 px
    steps: int = 1500
    batch_size: int = 16  # (an epoch: a pass over the training controls, as the official loader iterates)
    pairing: Literal["same-batch", "any-batch"] = "same-batch"  # any-batch: a uniform control with a uniform
    # treated image from any batch (the official loader iterates over controls this way)
    lr: float = 1e-4
    betas: tuple[float, ...] = (0.0, 0.99)
    weight_decay: float = 1e-4
    lambda_r1: float = 1.0
    lambda_sty: float = 1.0
    lambda_cyc: float = 1.0
    lambda_ds: float = 1.0  # initial diversity weight, decayed linearly to 0 over ds_iter steps
    ds_iter: int = 100_000
    flip_augment: bool = True
    # inference: z = mean of n_z draws (the paper's protocol, ~0), or their `z_quantile` quantile
    inference_z: Literal["mean", "quantile"] = "mean"
    inference_z_per: Literal["call", "image"] = "call"  # image: its own n_z draws per image (official code)
    n_z: int = 100
    z_quantile: float = 0.75


PROFILES: dict[str, dict[str, Any]] = {
    # CPU: narrow networks (0.9M parameters in all at 48 px), batch 16, the diversity weight decayed within the run
    "quick": {"ds_iter": 1500},
    # equal compute on the simulated screen: the reference budget as a step count (docs/reference-profiles.md), the
    # diversity weight decayed within the run, the learning rate chosen on the validation split, the best validation
    # checkpoint
    "reference": {"steps": 860, "ds_iter": 860, "lr": 1e-3, "curve_points": 4, "select": "best"},
    # six times the reference budget, the diversity weight decayed over the whole run (docs/reference-profiles.md)
    "long": {"steps": 5160, "ds_iter": 5160, "lr": 1e-3, "curve_points": 7, "select": "best"},
    # as published for BBBC021 at 96 px (GPU)
    "paper": {"dim_in": 64, "max_conv_dim": 512, "batch_size": 32, "steps": 100_000, "ds_iter": 100_000,
              "checkpoint_every": 2000},
    # the official code (theislab/IMPA 13eb82f, `config_hydra/config/bbbc021_six.yaml`, `IMPA/solver.py`): the paper's
    # networks and optimiser, 200 epochs over the controls, each control with a treated image from any batch, and
    # inference z the mean of 100 draws per image
    "official": {"dim_in": 64, "max_conv_dim": 512, "batch_size": 32, "epochs": 200, "ds_iter": 100_000,
                 "pairing": "any-batch", "inference_z_per": "image", "checkpoint_every": 2000},
}


class IMPA(TorchMethod):
    name = "impa"
    capabilities = Capabilities(needs_control=True, unseen_perturbations=True)
    Config = IMPAConfig
    profiles = PROFILES
    default_profile = "quick"
    display_order = 2
    history_columns = ("d_loss", "g_loss", "cycle", "lambda_ds")
    published = ("IMPA {step:06d}_nets.ckpt with {step:06d}_embeddings.ckpt beside it (theislab/IMPA 13eb82f, "
                 "IMPA/solver.py:321-334, IMPA/checkpoint.py:31-50)")
    precisions = ("no",)  # float32, as published
    accumulates = False

    def __init__(self, config: IMPAConfig | None = None) -> None:
        super().__init__(config)
        self.nets: nn.ModuleDict | None = None

    def build(self, shape: Shape) -> None:
        c = self.config
        channels, size, emb_dim, n_pert = shape.channels, shape.image_size, shape.embedding_dim, shape.n_perturbations
        self.nets = nn.ModuleDict({
            "generator": Generator(channels, size, c.dim_in, c.max_conv_dim, c.style_dim),
            "style_encoder": StyleEncoder(channels, size, c.dim_in, c.max_conv_dim, c.style_dim),
            "mapping": MappingNetwork(emb_dim, c.z_dim, c.style_dim),
            "discriminator": Discriminator(channels, size, n_pert, c.dim_in, c.max_conv_dim),
        })
        kaiming_init(self.nets)

    def modules(self) -> dict[str, Any]:
        return {"nets": self.nets}

    def counted(self) -> dict[str, nn.Module]:
        return dict(self.nets.items())

    def epoch_rows(self, data: TrainData) -> int:
        return len(data.control_rows)

    def networks(self, channels: int, image_size: int, embedding_dim: int, n_perturbations: int) -> dict:
        c = self.config
        self.build(Shape(channels, image_size, embedding_dim, n_perturbations))
        x = torch.zeros(1, channels, image_size, image_size)
        return {"generator": (self.nets["generator"], (x, torch.zeros(1, c.style_dim))),
                "style_encoder": (self.nets["style_encoder"], (x,)),
                "mapping": (self.nets["mapping"], (torch.zeros(1, embedding_dim), torch.zeros(1, c.z_dim))),
                "discriminator": (self.nets["discriminator"], (x, torch.zeros(1, dtype=torch.long)))}

    # official name of each network in `{step}_nets.ckpt` (IMPA/model.py:663-666), and the renames of ours to theirs
    # that `perf/parity.py` proves (a shortcut is `conv1x1`; the encoders' trunks are `conv` and `conv_blocks`)
    OFFICIAL = {"generator": "generator", "style_encoder": "style_encoder", "mapping": "mapping_network",
                "discriminator": "discriminator"}
    TRUNK = {"style_encoder": "conv.", "discriminator": "conv_blocks.", "generator": "", "mapping": ""}

    def load_published(self, path: Path, data: TrainData, weights: str) -> dict[str, Any]:
        """Every network from `{step}_nets.ckpt`, and a check of the frozen embedding table of `{step}_embeddings.ckpt`
        against the task's: the official loader indexes it by the sorted names of the training perturbations
        (`np.unique`, IMPA/dataset/data_loader.py:143-154, 195-205; controls too with `add_controls`), and the
        mapping network was trained on those rows, so they must be the task's embeddings of the same names."""
        from methods.published import file_record, load_into, official_rows, read_checkpoint, require_keys

        if weights != "ema":  # IMPA keeps no average: its one set of weights is what either choice means
            raise BenchmarkError(f"{path}: IMPA checkpoints hold one set of weights (no EMA); drop --checkpoint-weights")
        if not path.name.endswith("_nets.ckpt"):
            raise BenchmarkError(f"{path}: expected IMPA's {{step:06d}}_nets.ckpt (with {{step:06d}}_embeddings.ckpt "
                                 "beside it)")
        what = "IMPA's networks (generator, style_encoder, discriminator, mapping_network)"
        nets = read_checkpoint(path, what)
        require_keys(nets, self.OFFICIAL.values(), path, what)
        for ours, theirs in self.OFFICIAL.items():
            state = nets[theirs]
            if state and all(k.startswith("module.") for k in state):  # saved from inside DataParallel
                state = {k[len("module."):]: v for k, v in state.items()}
            load_into(self.nets[ours], state, f"{path} ({theirs})",
                      aliases=((r"\.skip\.", ".conv1x1."), (r"^trunk\.body\.", self.TRUNK[ours])))
        emb_file = path.with_name(path.name[: -len("_nets.ckpt")] + "_embeddings.ckpt")
        what = "IMPA's embedding table ({'embedding_matrix': {'weight': n x dim}})"
        table = read_checkpoint(emb_file, what)
        require_keys(table, ["embedding_matrix"], emb_file, what)
        require_keys(table["embedding_matrix"], ["weight"], emb_file, what)
        weight = table["embedding_matrix"]["weight"].float().numpy()
        names = sorted(data.perturbations)
        if len(weight) == len(names) + 1:  # trained with add_controls: the control is one of the classes
            names = sorted([*names, data.control])
        rows = official_rows(weight, names, list(data.perturbations), str(emb_file))
        task = data.embeddings.astype(np.float32)
        if rows.shape != task.shape:
            raise BenchmarkError(f"{emb_file}: embeddings of width {rows.shape[1]}, the task's are {task.shape[1]}")
        # the same numbers read from the same CSV: equal up to float32 rounding of the file's values
        off = np.abs(rows - task).max(axis=1) > 1e-6 * np.maximum(1.0, np.abs(task).max(axis=1))
        if off.any():
            name = data.perturbations[int(np.flatnonzero(off)[0])]
            raise BenchmarkError(f"{emb_file}: the row of {name!r} (official order: sorted training perturbations) "
                                 "differs from the task's embedding of it; the checkpoint was trained with another "
                                 "embedding file or perturbation set (prepare the task with the embeddings it used)")
        return {"format": self.published, "files": file_record(path, emb_file), "weights": "the only set",
                "perturbations": len(names), "embedding_rows_checked": len(rows)}

    def lambda_ds(self, step: int) -> float:
        c = self.config
        return max(0.0, c.lambda_ds * (1 - step / c.ds_iter)) if c.ds_iter > 0 else 0.0

    # --- the two losses of one training step ---------------------------------------------------
    def d_loss(self, x_ctrl: torch.Tensor, x_trt: torch.Tensor, y: torch.Tensor, emb: torch.Tensor,
               z: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        G, Fm, D = self.nets["generator"], self.nets["mapping"], self.nets["discriminator"]
        x_trt = x_trt.requires_grad_()
        real = D(x_trt, y)
        loss_real = F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
        grad, = torch.autograd.grad(real.sum(), x_trt, create_graph=True)
        r1 = 0.5 * grad.pow(2).flatten(1).sum(1).mean()
        with torch.no_grad():
            fake_img = G(x_ctrl, Fm(emb, z))
        fake = D(fake_img, y)
        loss_fake = F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        loss = loss_real + loss_fake + self.config.lambda_r1 * r1
        return loss, {"d_real": loss_real.item(), "d_fake": loss_fake.item(), "r1": r1.item()}

    def g_loss(self, x_ctrl: torch.Tensor, y: torch.Tensor, emb: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor,
               lambda_ds: float) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        G, E, Fm, D = (self.nets[k] for k in NETS)
        s1, s2 = Fm(emb, z1), Fm(emb, z2)
        fake1 = G(x_ctrl, s1)
        out = D(fake1, y)
        adv = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
        sty = (E(fake1) - s1).abs().mean()
        ds = (fake1 - G(x_ctrl, s2).detach()).abs().mean()
        cyc = (G(fake1, E(x_ctrl)) - x_ctrl).abs().mean()
        loss = adv + c.lambda_sty * sty - lambda_ds * ds + c.lambda_cyc * cyc
        return loss, {"g_adv": adv.item(), "sty": sty.item(), "ds": ds.item(), "cyc": cyc.item()}

    # --- training (the loop is TorchMethod's) ---------------------------------------------------
    def start_training(self, train: TrainingSet, steps: int) -> dict[str, Any]:
        c = self.config
        g_params = [p for k in ("generator", "style_encoder", "mapping") for p in self.nets[k].parameters()]
        self.opt_g = torch.optim.Adam(g_params, lr=c.lr, betas=tuple(c.betas), weight_decay=c.weight_decay)
        self.opt_d = torch.optim.Adam(self.nets["discriminator"].parameters(), lr=c.lr, betas=tuple(c.betas),
                                      weight_decay=c.weight_decay)
        return {"opt_g": self.opt_g, "opt_d": self.opt_d}

    def train_step(self, train: TrainingSet, step: int, g: torch.Generator, np_rng: np.random.Generator) -> list[float]:
        c, data, dev = self.config, train.data, self.device
        self.nets.train()
        treated = data.treated_rows
        pos = torch.randint(len(treated), (c.batch_size,), generator=g)
        pick = treated[pos.numpy()]
        if c.pairing == "any-batch":
            ctrl = data.control_rows[torch.randint(len(data.control_rows), (c.batch_size,), generator=g).numpy()]
        else:
            ctrl = data.paired_controls(pick, np_rng)
        x_trt, x_ctrl = as_float(train.images[pick]), as_float(train.images[ctrl])
        if c.flip_augment:
            x_ctrl, x_trt = random_flips(g, x_ctrl, x_trt)
        y = torch.from_numpy(train.labels[pick])
        z = torch.randn(3, c.batch_size, c.z_dim, generator=g)
        mine = self.my_rows(c.batch_size)  # the whole batch was drawn; this process trains on its share
        x_ctrl, x_trt, y, emb, z = (x_ctrl[mine].to(dev), x_trt[mine].to(dev), y[mine].to(dev),
                                    train.embeddings[y[mine]].to(dev), z[:, mine].to(dev))
        d_loss, _ = self.d_loss(x_ctrl, x_trt, y, emb, z[0])
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.sync_gradients(self.nets["discriminator"].parameters())
        self.opt_d.step()
        lam = self.lambda_ds(step)
        self.nets["discriminator"].requires_grad_(False)  # the generator's step needs no discriminator gradient
        g_loss, g_parts = self.g_loss(x_ctrl, y, emb, z[1], z[2], lam)
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.nets["discriminator"].requires_grad_(True)
        self.sync_gradients(self.opt_g.param_groups[0]["params"])
        self.opt_g.step()
        losses = self.mean_over_processes(torch.tensor([d_loss.item(), g_loss.item(), g_parts["cyc"]],
                                                       dtype=torch.float64))
        return [*losses.tolist(), lam]

    def inference_z(self, seed: int, n: int = 1) -> torch.Tensor:
        """The paper's protocol: summarise n_z standard-normal draws (mean, or a quantile) into one z, shared by
        the `n` images of a call or drawn for each of them (`inference_z_per`); (n, z_dim)."""
        c = self.config
        per_image = c.inference_z_per == "image"
        draws = torch.randn(n if per_image else 1, c.n_z, c.z_dim, generator=torch.Generator().manual_seed(seed))
        z = draws.mean(1) if c.inference_z == "mean" else draws.quantile(c.z_quantile, dim=1)
        return z if per_image else z.expand(n, -1)

    @torch.no_grad()
    def generate(self, request: GenerateRequest, *, seed: int) -> torch.Tensor:
        self.nets.eval()
        dev = self.device
        n = len(request.perturbations)
        z = self.inference_z(seed, n).to(dev)
        s = self.nets["mapping"](request.embeddings.float().to(dev), z)
        return self.nets["generator"](request.controls.to(dev), s).cpu()
