"""IMPA (Palma, Theis, Lotfollahi; Nat. Commun. 2025): style transfer from control to perturbed cells.

The control image is the generator's input; the style is a linear map of the
perturbation's frozen embedding and a noise vector z, so an unseen compound
gets a style zero-shot. Losses and hyper-parameters as published
(shared/research/impa_phendiff.md): non-saturating GAN with R1, style
reconstruction, diversity (weight decayed linearly to 0), cycle consistency.
Each treated target is paired with a control from the same batch.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from benchmark import io
from benchmark.errors import BenchmarkError
from benchmark.method import Capabilities, GenerateRequest, Method, TrainData
from methods.training import as_float, epochs_to_steps, load_checkpoint, random_flips, resolve_device, save_checkpoint

from .networks import Discriminator, Generator, MappingNetwork, StyleEncoder, kaiming_init

NETS = ("generator", "style_encoder", "mapping", "discriminator")


@dataclass
class IMPAConfig:
    dim_in: int = 16  # published: 64
    max_conv_dim: int = 64  # published: 512
    style_dim: int = 64
    z_dim: int = 16  # BBBC021 at 96 px
    steps: int = 1500
    epochs: float = 0.0  # > 0: passes over the training controls (the official epoch), converted to steps; `steps`
    # is then ignored (set epochs=0 to give steps)
    batch_size: int = 16
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
    checkpoint_every: int = 250
    # inference: z = mean of n_z draws (the paper's protocol, ~0), or their `z_quantile` quantile
    inference_z: Literal["mean", "quantile"] = "mean"
    inference_z_per: Literal["call", "image"] = "call"  # image: its own n_z draws per image (official code)
    n_z: int = 100
    z_quantile: float = 0.75
    device: str = "auto"


PROFILES: dict[str, dict[str, Any]] = {
    # CPU: narrow networks (0.9M parameters in all at 48 px), batch 16, the diversity weight decayed within the run
    "quick": {"ds_iter": 1500},
    # as published for BBBC021 at 96 px (GPU)
    "paper": {"dim_in": 64, "max_conv_dim": 512, "batch_size": 32, "steps": 100_000, "ds_iter": 100_000,
              "checkpoint_every": 2000},
    # the official code (theislab/IMPA 13eb82f, config bbbc021_six; shared/research/impa_phendiff.md): the paper's
    # networks and optimiser, 200 epochs over the controls, each control with a treated image from any batch, and
    # inference z the mean of 100 draws per image
    "official": {"dim_in": 64, "max_conv_dim": 512, "batch_size": 32, "epochs": 200, "ds_iter": 100_000,
                 "pairing": "any-batch", "inference_z_per": "image", "checkpoint_every": 2000},
}


class IMPA(Method):
    name = "impa"
    capabilities = Capabilities(needs_control=True, unseen_perturbations=True)
    Config = IMPAConfig
    profiles = PROFILES
    default_profile = "quick"
    display_order = 2
    resources = {"gpus": 1, "cpus": 8, "mem_gb": 64, "time_min": 24 * 60}

    def __init__(self, config: IMPAConfig | None = None) -> None:
        super().__init__(config)
        self.nets: nn.ModuleDict | None = None
        self.shape: tuple[int, int, int, int] = (0, 0, 0, 0)  # channels, size, embedding dim, perturbations

    def _device(self) -> torch.device:
        return resolve_device(self.config.device)

    def _build(self, channels: int, size: int, emb_dim: int, n_pert: int) -> None:
        c = self.config
        self.shape = (channels, size, emb_dim, n_pert)
        self.nets = nn.ModuleDict({
            "generator": Generator(channels, size, c.dim_in, c.max_conv_dim, c.style_dim),
            "style_encoder": StyleEncoder(channels, size, c.dim_in, c.max_conv_dim, c.style_dim),
            "mapping": MappingNetwork(emb_dim, c.z_dim, c.style_dim),
            "discriminator": Discriminator(channels, size, n_pert, c.dim_in, c.max_conv_dim),
        })
        kaiming_init(self.nets)

    def networks(self, channels: int, image_size: int, embedding_dim: int, n_perturbations: int) -> dict:
        c = self.config
        self._build(channels, image_size, embedding_dim, n_perturbations)
        x = torch.zeros(1, channels, image_size, image_size)
        return {"generator": (self.nets["generator"], (x, torch.zeros(1, c.style_dim))),
                "style_encoder": (self.nets["style_encoder"], (x,)),
                "mapping": (self.nets["mapping"], (torch.zeros(1, embedding_dim), torch.zeros(1, c.z_dim))),
                "discriminator": (self.nets["discriminator"], (x, torch.zeros(1, dtype=torch.long)))}

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

    # --- Method API ----------------------------------------------------------------------------
    def fit(self, data: TrainData, *, seed: int, workdir: Path) -> dict[str, Any]:
        c = self.config
        if len(data.perturbations) == 0:
            raise BenchmarkError("impa: the training split has no treated images")
        emb_table = torch.from_numpy(data.embedding_matrix(data.perturbations)).float()
        pert_index = {p: i for i, p in enumerate(data.perturbations)}
        treated = data.treated_rows
        labels = torch.from_numpy(np.array([pert_index[p] for p in data.obs["CPD_NAME"].to_numpy()[treated]]))
        images = torch.from_numpy(np.ascontiguousarray(data.images)).permute(0, 3, 1, 2)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self._build(images.shape[1], images.shape[-1], emb_table.shape[1], len(data.perturbations))
        dev = self._device()
        self.nets.to(dev)
        g_params = [p for k in ("generator", "style_encoder", "mapping") for p in self.nets[k].parameters()]
        opt_g = torch.optim.Adam(g_params, lr=c.lr, betas=tuple(c.betas), weight_decay=c.weight_decay)
        opt_d = torch.optim.Adam(self.nets["discriminator"].parameters(), lr=c.lr, betas=tuple(c.betas),
                                 weight_decay=c.weight_decay)
        g = torch.Generator().manual_seed(seed)
        np_rng = np.random.default_rng(seed)
        ckpt = Path(workdir) / "checkpoint.pt"
        parts = {"nets": self.nets, "opt_g": opt_g, "opt_d": opt_d}
        step, history = load_checkpoint(ckpt, parts, "history", g, np_rng, dev)
        t0, start = time.time(), step
        steps = self.total_steps(len(data.control_rows))
        bar = tqdm(total=steps, initial=step, desc="impa training", unit="step")
        while step < steps:
            self.nets.train()
            pos = torch.randint(len(treated), (c.batch_size,), generator=g)
            pick = treated[pos.numpy()]
            if c.pairing == "any-batch":
                ctrl = data.control_rows[torch.randint(len(data.control_rows), (c.batch_size,), generator=g).numpy()]
            else:
                ctrl = data.paired_controls(pick, np_rng)
            x_trt, x_ctrl = as_float(images[pick]), as_float(images[ctrl])
            if c.flip_augment:
                x_ctrl, x_trt = random_flips(g, x_ctrl, x_trt)
            y = labels[pos]
            z = torch.randn(3, c.batch_size, c.z_dim, generator=g)
            x_ctrl, x_trt, y, emb, z = x_ctrl.to(dev), x_trt.to(dev), y.to(dev), emb_table[y].to(dev), z.to(dev)
            d_loss, d_parts = self.d_loss(x_ctrl, x_trt, y, emb, z[0])
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            lam = self.lambda_ds(step)
            g_loss, g_parts = self.g_loss(x_ctrl, y, emb, z[1], z[2], lam)
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            step += 1
            history.append([d_loss.item(), g_loss.item(), g_parts["cyc"], lam])
            bar.update()
            if step % 25 == 0:
                h = np.mean(history[-25:], axis=0)
                bar.set_postfix(d=f"{h[0]:.3f}", g=f"{h[1]:.3f}", cyc=f"{h[2]:.3f}")
            if step % c.checkpoint_every == 0 or step == steps:
                save_checkpoint(ckpt, parts, step, ("history", history), g, np_rng, lambda_ds=self.lambda_ds(step))
        bar.close()
        elapsed, done = time.time() - t0, step - start
        h = np.asarray(history)
        return {"steps": step, "resumed_from": start, "d_loss_last_50": float(h[-50:, 0].mean()), "g_loss_last_50": float(h[-50:, 1].mean()),
                "cycle_first_50": float(h[:50, 2].mean()), "cycle_last_50": float(h[-50:, 2].mean()),
                "lambda_ds_final": self.lambda_ds(step),
                "train_images_per_s": round(done * c.batch_size / elapsed, 2) if done else None,
                "parameters": {k: sum(p.numel() for p in self.nets[k].parameters()) for k in NETS}, "device": str(dev),
                "epochs": round(step * c.batch_size / max(1, len(data.control_rows)), 3),
                "training_controls": len(data.control_rows)}

    def total_steps(self, n_controls: int) -> int:
        """`steps`, or `epochs` passes over the training controls in full batches (the official epoch)."""
        c = self.config
        return epochs_to_steps(c.epochs, c.steps, n_controls, c.batch_size)

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
        dev = self._device()
        n = len(request.perturbations)
        z = self.inference_z(seed, n).to(dev)
        s = self.nets["mapping"](request.embeddings.float().to(dev), z)
        return self.nets["generator"](request.controls.to(dev), s).cpu()

    def save(self, path: Path) -> None:
        io.write_torch(Path(path) / "impa.pt", {"nets": self.nets.state_dict(), "shape": list(self.shape)})
        io.write_json(Path(path) / "config.json", asdict(self.config))

    def load(self, path: Path) -> None:
        state = torch.load(Path(path) / "impa.pt", map_location="cpu", weights_only=True)
        self._build(*[int(v) for v in state["shape"]])
        self.nets.load_state_dict(state["nets"])
        self.nets.to(self._device())
