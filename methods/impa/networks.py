"""IMPA's four networks (Palma et al., 2025), sized by image size and channel count.

Generator: an encoder of InstanceNorm residual blocks and a decoder of AdaIN
residual blocks, with no skip connections, so the style (the perturbation) has
to carry the change. Style encoder and discriminator share one downsampling
trunk design; their last convolution covers whatever map the trunk leaves, so
they end at 1x1 at every image size (the published code is only right at
96 px, where that map is 3x3).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from methods.training import pad_to_multiple


def _n_down(size: int, offset: int) -> int:
    return max(1, math.ceil(math.log2(size)) - offset)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, normalize: bool = False, downsample: bool = False) -> None:
        super().__init__()
        self.downsample = downsample
        self.conv1 = nn.Conv2d(cin, cin, 3, padding=1)
        self.conv2 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm1 = nn.InstanceNorm2d(cin, affine=True) if normalize else nn.Identity()
        self.norm2 = nn.InstanceNorm2d(cin, affine=True) if normalize else nn.Identity()
        self.skip = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.skip(x)
        if self.downsample:
            s = F.avg_pool2d(s, 2)
        h = self.conv1(F.leaky_relu(self.norm1(x), 0.2))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        h = self.conv2(F.leaky_relu(self.norm2(h), 0.2))
        return (s + h) / math.sqrt(2)


class AdaIN(nn.Module):
    """(1 + gamma(s)) * IN(x) + beta(s)."""

    def __init__(self, style_dim: int, ch: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(ch, affine=False)
        self.fc = nn.Linear(style_dim, 2 * ch)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.fc(s)[:, :, None, None].chunk(2, dim=1)
        return (1 + gamma) * self.norm(x) + beta


class AdainResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, style_dim: int, upsample: bool = False) -> None:
        super().__init__()
        self.upsample = upsample
        self.norm1 = AdaIN(style_dim, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = AdaIN(style_dim, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        up = (lambda t: F.interpolate(t, scale_factor=2, mode="nearest")) if self.upsample else (lambda t: t)
        sk = self.skip(up(x))
        h = self.conv1(up(F.leaky_relu(self.norm1(x, s), 0.2)))
        h = self.conv2(F.leaky_relu(self.norm2(h, s), 0.2))
        return (sk + h) / math.sqrt(2)


def _widths(dim_in: int, max_dim: int, n: int) -> list[int]:
    return [min(dim_in * 2 ** (i + 1), max_dim) for i in range(n)]


class Generator(nn.Module):
    def __init__(self, channels: int, size: int, dim_in: int = 64, max_dim: int = 512, style_dim: int = 64) -> None:
        super().__init__()
        n = _n_down(size, 4)
        widths = _widths(dim_in, max_dim, n)
        self.stem = nn.Conv2d(channels, dim_in, 3, padding=1)
        self.encode = nn.ModuleList()
        self.decode = nn.ModuleList()
        cin = dim_in
        for w in widths:
            self.encode.append(ResBlock(cin, w, normalize=True, downsample=True))
            self.decode.insert(0, AdainResBlock(w, cin, style_dim, upsample=True))
            cin = w
        for _ in range(2):  # bottleneck
            self.encode.append(ResBlock(cin, cin, normalize=True))
            self.decode.insert(0, AdainResBlock(cin, cin, style_dim))
        self.out = nn.Sequential(nn.InstanceNorm2d(dim_in, affine=True), nn.LeakyReLU(0.2), nn.Conv2d(dim_in, channels, 1))
        self.factor = 2 ** n

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        h0, w0 = x.shape[-2:]
        x = pad_to_multiple(x, self.factor)
        h = self.stem(x)
        for block in self.encode:
            h = block(h)
        for block in self.decode:
            h = block(h, s)
        return self.out(h)[..., :h0, :w0]  # no tanh, as published


class _Trunk(nn.Module):
    """conv3x3, then downsampling residual blocks, then a conv over the remaining map -> (B, out_dim)."""

    def __init__(self, channels: int, size: int, dim_in: int, max_dim: int, out_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, dim_in, 3, padding=1)]
        cin = dim_in
        for w in _widths(dim_in, max_dim, _n_down(size, 2)):
            layers.append(ResBlock(cin, w, downsample=True))
            cin = w
        self.body = nn.Sequential(*layers, nn.LeakyReLU(0.2))
        with torch.no_grad():
            k = self.body(torch.zeros(1, channels, size, size)).shape[-1]
        self.head = nn.Sequential(nn.Conv2d(cin, cin, k), nn.LeakyReLU(0.2), nn.Conv2d(cin, out_dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.body(x))
        assert out.shape[-2:] == (1, 1), f"trunk ended at {tuple(out.shape[-2:])}, expected 1x1"
        return out.flatten(1)


class StyleEncoder(nn.Module):
    def __init__(self, channels: int, size: int, dim_in: int = 64, max_dim: int = 512, style_dim: int = 64) -> None:
        super().__init__()
        self.trunk = _Trunk(channels, size, dim_in, max_dim, style_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)


class Discriminator(nn.Module):
    """One real/fake logit per perturbation; `forward` picks each image's own perturbation."""

    def __init__(self, channels: int, size: int, n_outputs: int, dim_in: int = 64, max_dim: int = 512) -> None:
        super().__init__()
        self.trunk = _Trunk(channels, size, dim_in, max_dim, n_outputs)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)  # (B, n_outputs)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.logits(x).gather(1, y[:, None]).squeeze(1)


class MappingNetwork(nn.Module):
    """style = Linear([frozen perturbation embedding ; z])."""

    def __init__(self, emb_dim: int, z_dim: int, style_dim: int = 64) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.fc = nn.Linear(emb_dim + z_dim, style_dim)

    def forward(self, emb: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([emb.float(), z], dim=1))


def kaiming_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
