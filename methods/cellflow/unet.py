"""The velocity field v(x_t, t, c): a pixel-space U-Net.

Time enters as Fourier features, the perturbation as a learned encoding of its
embedding (Morgan fingerprint, gene embedding); both are added into one
condition vector that modulates every residual block (scale and shift after
GroupNorm). A learned null vector stands in for "no condition" (CFG).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from methods.training import pad_to_multiple


class FourierTime(nn.Module):
    """Sinusoidal features of t in [0, 1] followed by an MLP."""

    def __init__(self, dim: int, scale: float = 1000.0) -> None:
        super().__init__()
        self.half, self.scale = dim // 2, scale
        self.mlp = nn.Sequential(nn.Linear(2 * self.half, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        freqs = torch.exp(-math.log(10_000.0) * torch.arange(self.half, device=t.device, dtype=torch.float32) / self.half)
        arg = self.scale * t.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([arg.sin(), arg.cos()], dim=1))


class ConditionEncoder(nn.Module):
    """Embedding -> condition vector, with a learned null condition for CFG."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.null = nn.Parameter(torch.zeros(dim))

    def forward(self, emb: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        c = self.mlp(emb.float())
        if drop is not None:
            c = torch.where(drop[:, None], self.null.expand_as(c), c)
        return c


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, cond_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(min(8, cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.film = nn.Linear(cond_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(min(8, cout), cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(F.silu(cond))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(min(8, ch), ch)
        self.attn = nn.MultiheadAttention(ch, num_heads=1, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x).flatten(2).transpose(1, 2)
        y, _ = self.attn(y, y, y, need_weights=False)
        return x + y.transpose(1, 2).reshape(b, c, h, w)


class UNet(nn.Module):
    """len(mults) resolution stages; each stage halves (down) / doubles (up) the resolution."""

    def __init__(self, channels: int, cond_in: int, width: int = 32, mults: tuple[int, ...] = (1, 2, 2, 2),
                 blocks: int = 1, attention_lowest: bool = True, dropout: float = 0.0, time_scale: float = 1000.0) -> None:
        super().__init__()
        cond_dim = 4 * width
        self.time = FourierTime(cond_dim, time_scale)
        self.cond = ConditionEncoder(cond_in, cond_dim)
        self.stem = nn.Conv2d(channels, width, 3, padding=1)
        chs = [width * m for m in mults]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips, cin = [], width
        for i, ch in enumerate(chs):
            stage = nn.ModuleList()
            for _ in range(blocks):
                stage.append(ResBlock(cin, ch, cond_dim, dropout))
                cin = ch
            self.down.append(stage)
            skips.append(ch)
            self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1) if i < len(chs) - 1 else nn.Identity())
        self.mid1 = ResBlock(cin, cin, cond_dim, dropout)
        self.mid_attn = SelfAttention(cin) if attention_lowest else nn.Identity()
        self.mid2 = ResBlock(cin, cin, cond_dim, dropout)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, ch in reversed(list(enumerate(chs))):
            stage = nn.ModuleList()
            for j in range(blocks):
                stage.append(ResBlock(cin + (skips[i] if j == 0 else 0), ch, cond_dim, dropout))
                cin = ch
            self.up.append(stage)
            self.upsample.append(nn.Upsample(scale_factor=2, mode="nearest") if i > 0 else nn.Identity())
        self.out = nn.Sequential(nn.GroupNorm(min(8, cin), cin), nn.SiLU(), nn.Conv2d(cin, channels, 3, padding=1))
        self.factor = 2 ** (len(chs) - 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        h0, w0 = x.shape[-2:]
        x = pad_to_multiple(x, self.factor)
        cond = self.time(t) + self.cond(emb, drop)
        h = self.stem(x)
        skips = []
        for stage, down in zip(self.down, self.downsample):
            for block in stage:
                h = block(h, cond)
            skips.append(h)
            h = down(h)
        h = self.mid2(self.mid_attn(self.mid1(h, cond)), cond)
        for stage, up in zip(self.up, self.upsample):
            for j, block in enumerate(stage):
                h = block(torch.cat([h, skips.pop()], 1) if j == 0 else h, cond)
            h = up(h)
        return self.out(h)[..., :h0, :w0]
