"""MiT's velocity field: a pixel-space diffusion transformer (DiT, Peebles & Xie 2023) with the four changes MiT
makes (valence-labs/microscopy-flow-matching d6c5177, `model.py:1-9`): dropout 0.1 on the attention's output
projection, long skip connections from the first half of the blocks to the second (`model.py:199-211`, `SkipLayer`
at `model.py:68-77`), RMSNorm without learned weights (eps 1e-6) in place of LayerNorm, and the conditioning as one
vector from an adaptor (`adapters.py:68-108`): time, perturbation, batch and cell type embedded and summed.

The attention, MLP and patch embedding are timm's (as in the official code), the positional table and the time
features diffusers'; the rest is written here. Where we depart: the perturbation may enter through the task's
embedding by a learned linear map (`encoding="embedding"`), so that an unseen compound is translated zero-shot,
where the official code has a one-hot table only and a separate fingerprint fine-tune (`finetune.py`);
`encoding="onehot"` is the official table.
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import get_2d_sincos_pos_embed, get_timestep_embedding
from torch import nn


def sincos_table(dim: int, grid: int) -> torch.Tensor:
    """The fixed 2-D sine-cosine positions of a grid x grid patch layout, (grid * grid, dim), as MAE and DiT
    (`model.py:227-269`): diffusers' table with `base_size=grid`, so positions are whole patch indices (its default
    rescales them to a 16-patch grid). Column first, then row, as the official table's meshgrid(w, h)."""
    if dim % 4:
        raise ValueError(f"the positional table needs a width divisible by 4, got {dim}")
    return get_2d_sincos_pos_embed(dim, grid, base_size=grid, output_type="pt").float()


def frequency_features(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1] (GLIDE's timestep embedding: cos then sin, `adapters.py:17-31`)."""
    return get_timestep_embedding(t.float(), dim, flip_sin_to_cos=True, downscale_freq_shift=0,
                                  max_period=max_period)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class Block(nn.Module):
    """Self-attention and an MLP, each gated and modulated by the condition (adaLN-Zero: 6 x width per block)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        from timm.models.vision_transformer import Attention, Mlp

        self.norm1 = nn.RMSNorm(width, eps=1e-6, elementwise_affine=False)
        self.attn = Attention(width, num_heads=heads, qkv_bias=True, attn_drop=0.0, proj_drop=dropout)
        self.norm2 = nn.RMSNorm(width, eps=1e-6, elementwise_affine=False)
        self.mlp = Mlp(width, int(width * mlp_ratio), act_layer=lambda: nn.GELU(approximate="tanh"), drop=0.0)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c).chunk(6, dim=1)
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1))
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class LongSkip(nn.Module):
    """Where a block of the second half takes a first-half block's output: Linear(RMSNorm([x ; skip]))."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(2 * width, eps=1e-6, elementwise_affine=False)
        self.proj = nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(torch.cat([x, skip], dim=-1)))


class Condition(nn.Module):
    """One vector per image from time, perturbation, batch and cell type, summed (`adapters.py:104-108`). Each label
    has a null row (the last) for the unconditional field; in training each is replaced by it with probability
    p_drop, independently (`adapters.py:52-63`): the method draws which."""

    def __init__(self, width: int, n_perturbations: int, embedding_dim: int, n_batches: int, n_cell_types: int,
                 encoding: str, frequencies: int = 256) -> None:
        super().__init__()
        self.frequencies, self.encoding = frequencies, encoding
        self.time = nn.Sequential(nn.Linear(frequencies, width), nn.SiLU(), nn.Linear(width, width))
        if encoding == "onehot":
            self.perturbation = nn.Embedding(n_perturbations + 1, width)
        else:  # the task's embedding through a learned map; a learned null vector
            self.perturbation = nn.Linear(embedding_dim, width)
            self.null = nn.Parameter(torch.zeros(width))
        self.batch = nn.Embedding(n_batches + 1, width)
        self.cell_type = nn.Embedding(n_cell_types + 1, width)
        for w in (self.time[0].weight, self.time[2].weight, self.perturbation.weight, self.batch.weight,
                  self.cell_type.weight):
            nn.init.normal_(w, std=0.02)
        if encoding != "onehot":
            nn.init.zeros_(self.perturbation.bias)
            nn.init.normal_(self.null, std=0.02)

    def forward(self, t: torch.Tensor, perturbation: torch.Tensor, batch: torch.Tensor, cell_type: torch.Tensor,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        """`perturbation`: row indices (onehot; -1 = null) or embeddings (N, D); `batch`, `cell_type`: indices
        (-1 = null). `drop` (N, 3) bool: use the null row of perturbation, batch, cell type (training draws it with
        probability `p_drop` each; guidance sets the first column)."""
        n = t.shape[0]
        drop = torch.zeros(n, 3, dtype=torch.bool, device=t.device) if drop is None else drop.to(t.device)
        c = self.time(frequency_features(t, self.frequencies))
        if self.encoding == "onehot":
            null = self.perturbation.num_embeddings - 1
            c = c + self.perturbation(torch.where(drop[:, 0] | (perturbation < 0), null, perturbation))
        else:
            c = c + torch.where(drop[:, :1], self.null.expand(n, -1), self.perturbation(perturbation))
        for k, (table, labels) in enumerate(((self.batch, batch), (self.cell_type, cell_type)), start=1):
            null = table.num_embeddings - 1
            c = c + table(torch.where(drop[:, k] | (labels < 0), null, labels))
        return c


class DiT(nn.Module):
    """Patches in, a velocity out: patch embedding plus fixed positions, `depth` blocks with long skips from the
    first half to the second (the last first-half output to the first second-half block, `model.py:199-211`), a
    modulated linear head, and patches back to pixels."""

    def __init__(self, channels: int, image_size: int, patch: int, width: int, depth: int, heads: int,
                 mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        from timm.layers import PatchEmbed

        if image_size % patch:
            raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch}")
        self.channels, self.patch = channels, patch
        self.patches = PatchEmbed(image_size, patch, channels, width, bias=True)
        grid = image_size // patch
        self.positions = nn.Parameter(sincos_table(width, grid)[None], requires_grad=False)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, dropout) for _ in range(depth))
        # registered in the official order (head before the skips), so that tensors pair by position too
        self.head_norm = nn.RMSNorm(width, eps=1e-6, elementwise_affine=False)
        self.head = nn.Linear(width, patch * patch * channels)
        self.head_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.skips = nn.ModuleList(LongSkip(width) for _ in range(depth // 2))
        self._init()

    def _init(self) -> None:
        """Xavier-uniform linear layers (the patch embedding too, as a linear map) with zero biases, then the
        modulations and the head zeroed, so that every block starts as the identity and the field as zero
        (`model.py:139-172`). The condition keeps its own init."""
        for m in [*self.blocks.modules(), *self.skips.modules(), *self.head_modulation.modules(), self.head]:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patches.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patches.proj.bias)
        for block in self.blocks:
            nn.init.zeros_(block.modulation[-1].weight)
            nn.init.zeros_(block.modulation[-1].bias)
        for p in (self.head_modulation[-1].weight, self.head_modulation[-1].bias, self.head.weight, self.head.bias):
            nn.init.zeros_(p)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        n, tokens, _ = x.shape
        grid, p, c = int(round(tokens ** 0.5)), self.patch, self.channels
        return x.reshape(n, grid, grid, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(n, c, grid * p, grid * p)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x (N, C, H, W) and a condition vector per image (N, width) -> velocity (N, C, H, W)."""
        x = self.patches(x) + self.positions
        half, skips = len(self.blocks) // 2, []
        for i, block in enumerate(self.blocks):
            if i >= half and i - half < len(self.skips):
                x = self.skips[i - half](x, skips.pop())
            x = block(x, c)
            if i < half:
                skips.append(x)
        shift, scale = self.head_modulation(c).chunk(2, dim=1)
        return self.unpatchify(self.head(modulate(self.head_norm(x), shift, scale)))


class Field(nn.Module):
    """The velocity field v(x, t | perturbation, batch, cell type): the transformer and its condition."""

    def __init__(self, dit: DiT, condition: Condition) -> None:
        super().__init__()
        self.dit, self.condition = dit, condition

    def forward(self, x: torch.Tensor, t: torch.Tensor, perturbation: torch.Tensor, batch: torch.Tensor,
                cell_type: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        return self.dit(x, self.condition(t, perturbation, batch, cell_type, drop))
