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


class Denoiser(nn.Module):
    """v(x_t, t, condition) with the published block layout: Down..., AttnDown / AttnUp, Up..."""

    def __init__(self, channels: int, cond_in: int, widths: tuple[int, ...], layers_per_block: int,
                 attention_head_dim: int, norm_num_groups: int, image_size: int, zero_null: bool = False) -> None:
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
        self.classes = ClassEncoder(cond_in, 4 * widths[0], zero_null)
        self.factor = 2 ** (n - 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, kind: torch.Tensor) -> torch.Tensor:
        h0, w0 = x.shape[-2:]
        x = pad_to_multiple(x, self.factor)
        out = self.unet(x, t, class_labels=self.classes(emb, kind)).sample
        return out[..., :h0, :w0]
