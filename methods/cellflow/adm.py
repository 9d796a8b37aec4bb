"""The velocity field of the official CellFlux code: an ADM (guided-diffusion) U-Net.

Written from the published architecture (Dhariwal & Nichol 2021, as configured by CellFlux's "bbbc021" model
config, yuhui-zh15/CellFlux 3256adc `models/model_configs.py`, `models/unet.py`): every level at `width * mult` channels, `blocks` residual blocks per
level on the way down and `blocks + 1` on the way up, each taking the skip of one encoder entry (the stem, every
residual block, every downsampling), average-pool downsampling and nearest upsampling without convolution,
GroupNorm(32) computed in float32, scale-shift conditioning, attention (one head) at the levels in
`attention_levels` and in the middle, zero-initialised last convolutions. Time enters as sinusoidal features of
`time_scale * t`; the perturbation embedding through one linear map added to the time embedding, and "no
condition" adds nothing (no learned null vector). Modules are registered in the official order, so a parity check
can copy weights across parameter by parameter (`perf/parity.py`).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from methods.training import pad_to_multiple


class GroupNorm32(nn.GroupNorm):
    """GroupNorm in float32 whatever the autocast dtype: statistics of half-precision activations drift."""

    def __init__(self, channels: int) -> None:
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


def zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def sinusoid(t: torch.Tensor, dim: int, scale: float) -> torch.Tensor:
    """cos and sin of `scale * t` at `dim // 2` geometric frequencies from 1 to 1/10000."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    arg = scale * t.float()[:, None] * freqs[None]
    return torch.cat([arg.cos(), arg.sin()], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = GroupNorm32(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = GroupNorm32(cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb)).to(h.dtype)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(self.drop(F.silu(h)))


class Attention(nn.Module):
    """Self-attention over positions with `heads` heads, qkv and output as 1x1 convolutions."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj = zero(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        flat = x.reshape(b, c, -1)
        q, k, v = self.qkv(self.norm(flat)).chunk(3, dim=1)
        heads = lambda z: z.reshape(b, self.heads, c // self.heads, -1).transpose(-1, -2)  # (b, heads, T, c/heads)
        a = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))
        a = a.transpose(-1, -2).reshape(b, c, -1)
        return (flat + self.proj(a)).reshape(b, c, *spatial)


class Entry(nn.Module):
    """One encoder or decoder entry: a residual block, then optionally attention, then optionally resampling."""

    def __init__(self, res: ResBlock | None = None, attn: Attention | None = None,
                 resample: nn.Module | None = None) -> None:
        super().__init__()
        self.res, self.attn, self.resample = res, attn, resample

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.res is not None:
            h = self.res(h, emb)
        if self.attn is not None:
            h = self.attn(h)
        return self.resample(h) if self.resample is not None else h


class AdmUNet(nn.Module):
    def __init__(self, channels: int, cond_in: int, width: int = 128, mults: tuple[int, ...] = (2, 2, 2),
                 blocks: int = 4, attention_levels: tuple[int, ...] = (1,), heads: int = 1, dropout: float = 0.3,
                 time_scale: float = 1.0) -> None:
        super().__init__()
        emb_dim = 4 * width
        self.width, self.time_scale = width, time_scale
        self.cond = nn.Linear(cond_in, emb_dim)
        self.time = nn.Sequential(nn.Linear(width, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        ch = width * mults[0]
        self.stem = nn.Conv2d(channels, ch, 3, padding=1)
        skips = [ch]
        self.encoder = nn.ModuleList()
        for level, mult in enumerate(mults):
            for _ in range(blocks):
                out = width * mult
                attn = Attention(out, heads) if level in attention_levels else None
                self.encoder.append(Entry(ResBlock(ch, out, emb_dim, dropout), attn))
                ch = out
                skips.append(ch)
            if level < len(mults) - 1:
                self.encoder.append(Entry(resample=nn.AvgPool2d(2)))
                skips.append(ch)
        self.middle = nn.ModuleList([Entry(ResBlock(ch, ch, emb_dim, dropout), Attention(ch, heads)),
                                     Entry(ResBlock(ch, ch, emb_dim, dropout))])
        self.decoder = nn.ModuleList()
        for level, mult in reversed(list(enumerate(mults))):
            for i in range(blocks + 1):
                out = width * mult
                attn = Attention(out, heads) if level in attention_levels else None
                up = nn.Upsample(scale_factor=2, mode="nearest") if level and i == blocks else None
                self.decoder.append(Entry(ResBlock(ch + skips.pop(), out, emb_dim, dropout), attn, up))
                ch = out
        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), zero(nn.Conv2d(ch, channels, 3, padding=1)))
        self.factor = 2 ** (len(mults) - 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        h0, w0 = x.shape[-2:]
        x = pad_to_multiple(x, self.factor)
        e = self.time(sinusoid(t, self.width, self.time_scale).to(x.dtype))
        c = self.cond(emb.to(e.dtype))
        if drop is not None:  # a dropped condition adds nothing
            c = c * (~drop)[:, None].to(c.dtype)
        e = e + c
        h = self.stem(x)
        hs = [h]
        for entry in self.encoder:
            h = entry(h, e)
            hs.append(h)
        for entry in self.middle:
            h = entry(h, e)
        for entry in self.decoder:
            h = entry(torch.cat([h, hs.pop()], dim=1), e)
        return self.out(h)[..., :h0, :w0]
