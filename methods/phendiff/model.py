"""PhenDiff's denoiser: a diffusers UNet2DModel whose class embedding is a learned
encoding of the perturbation embedding.

PhenDiff adds an `nn.Embedding(num_classes, 4 * width)` to the time embedding.
Replacing the lookup by an MLP over the perturbation's embedding (Morgan
fingerprint, gene vector), passed through diffusers' `class_embed_type="identity"`,
keeps that injection point and lets unseen compounds be translated zero-shot.
The control class (DMSO) and the unconditional class (for classifier-free
guidance) are learned vectors of their own.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmark.errors import BenchmarkError
from methods.training import pad_to_multiple

PERTURBATION, CONTROL, NULL = 0, 1, 2  # condition kinds


class ClassEncoder(nn.Module):
    """Perturbation embedding -> class embedding; the control a learned vector; the null condition a learned
    vector, or zero (`zero_null`, as the published code's unconditional passes have no class embedding)."""

    def __init__(self, in_dim: int, dim: int, zero_null: bool = False) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.control = nn.Parameter(torch.zeros(dim))
        self.null = nn.Parameter(torch.zeros(dim), requires_grad=not zero_null)
        self.zero_null = zero_null

    def forward(self, emb: torch.Tensor, kind: torch.Tensor) -> torch.Tensor:
        c = self.mlp(emb.float())
        c = torch.where((kind == CONTROL)[:, None], self.control.expand_as(c), c)
        null = torch.zeros_like(c) if self.zero_null else self.null.expand_as(c)
        return torch.where((kind == NULL)[:, None], null, c)


class ClassTable(nn.Module):
    """A published PhenDiff's class table (`nn.Embedding`, one row per class): each row is keyed by the task's
    embedding of that perturbation, so the denoiser's inputs stay those of the encoder it replaces; the control has
    its row, the null condition is zero (the published unconditional passes). It translates only the perturbations
    it has rows for."""

    def __init__(self, n: int, in_dim: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("keys", torch.zeros(n, in_dim))
        self.register_buffer("rows", torch.zeros(n, dim))
        self.register_buffer("control", torch.zeros(dim))

    def forward(self, emb: torch.Tensor, kind: torch.Tensor) -> torch.Tensor:
        same = (emb.float()[:, None, :] == self.keys[None]).all(-1)  # (batch, n): which row each sample is
        treated = kind == PERTURBATION
        if (treated & ~same.any(1)).any():
            raise BenchmarkError("the imported PhenDiff has no class for one of the requested perturbations (its "
                                 f"table has the {len(self.keys)} classes it was trained on)")
        c = self.rows[same.float().argmax(1)]
        c = torch.where((kind == CONTROL)[:, None], self.control.expand_as(c), c)
        return torch.where((kind == NULL)[:, None], torch.zeros_like(c), c)


class Denoiser(nn.Module):
    """v(x_t, t, condition) with the published block layout: Down..., AttnDown / AttnUp, Up..."""

    def __init__(self, channels: int, cond_in: int, widths: tuple[int, ...], layers_per_block: int,
                 attention_head_dim: int, norm_num_groups: int, image_size: int, zero_null: bool = False,
                 class_table: int = 0) -> None:
        from diffusers import UNet2DModel  # imported when built: see method.py

        super().__init__()
        n = len(widths)
        self.unet = UNet2DModel(
            sample_size=image_size, in_channels=channels, out_channels=channels,
            block_out_channels=tuple(widths), layers_per_block=layers_per_block,
            down_block_types=("DownBlock2D",) * (n - 1) + ("AttnDownBlock2D",),
            up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (n - 1),
            attention_head_dim=attention_head_dim, norm_num_groups=norm_num_groups,
            time_embedding_type="positional", flip_sin_to_cos=True, freq_shift=0,
            class_embed_type="identity",
        )
        self.classes = (ClassTable(class_table, cond_in, 4 * widths[0]) if class_table
                        else ClassEncoder(cond_in, 4 * widths[0], zero_null))
        self.factor = 2 ** (n - 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, kind: torch.Tensor) -> torch.Tensor:
        h0, w0 = x.shape[-2:]
        x = pad_to_multiple(x, self.factor)
        out = self.unet(x, t, class_labels=self.classes(emb, kind)).sample
        return out[..., :h0, :w0]
