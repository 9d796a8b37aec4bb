"""Parity of our `official` networks with the official code, weights copied across (a check, not a test).

    python benchmarks/parity.py --official /path/to/CellFlux [--method cellflow] [--size 96] [--batch 4]

Needs a local checkout of the official repository (fetched by the user; nothing of it ships with the suite). It
builds the official network and ours at the same configuration, gives ours random weights (so zero-initialised
layers do not hide differences), copies them parameter by parameter into the official one (both register their
modules in the same order; every shape is checked), and prints the largest absolute difference of the outputs
(conditional and unconditional) and the flow-matching loss of one batch on both sides, in float32.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.nn import functional as F

from benchmark.method import config_from_overrides
from methods.cellflow import CellFlow, CellFlowConfig
from methods.cellflow.path import interpolate, sample_time, target_velocity


def copy_weights(src: torch.nn.Module, dst: torch.nn.Module) -> int:
    """Copy `src`'s parameters into `dst` in registration order; returns how many were copied."""
    ours, theirs = list(src.parameters()), list(dst.parameters())
    if len(ours) != len(theirs):
        raise SystemExit(f"parameter lists differ in length: ours {len(ours)}, official {len(theirs)}")
    with torch.no_grad():
        for i, (a, b) in enumerate(zip(ours, theirs)):
            if a.shape != b.shape:
                raise SystemExit(f"parameter {i}: ours {tuple(a.shape)}, official {tuple(b.shape)}")
            b.copy_(a)
    return len(ours)


def cellflow(official: Path, size: int, batch: int, seed: int) -> None:
    sys.path.insert(0, str(official))
    from models.model_configs import MODEL_CONFIGS  # the official repository's modules
    from models.unet import UNetModel

    cfg = config_from_overrides(CellFlowConfig, CellFlow.profiles["official"], [])
    method = CellFlow(cfg)
    official_cfg = MODEL_CONFIGS["bbbc021"]
    method._build(official_cfg["in_channels"], official_cfg["condition_dim"])
    ours = method.model.eval()
    theirs = UNetModel(**official_cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ours.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    n = copy_weights(ours, theirs)
    x0 = torch.randn(batch, 3, size, size, generator=g)
    x1 = torch.randn(batch, 3, size, size, generator=g)
    emb = torch.randint(0, 2, (batch, official_cfg["condition_dim"]), generator=g).float()
    t = sample_time(batch, cfg.time_sampling, g)
    xt = interpolate(x0, x1, t)
    with torch.no_grad():
        for label, drop, extra in (("conditional", torch.zeros(batch, dtype=torch.bool), {"concat_conditioning": emb}),
                                   ("unconditional", torch.ones(batch, dtype=torch.bool), {})):
            a, b = ours(xt, t, emb, drop), theirs(xt, t, extra=dict(extra))
            print(f"[cellflow] {label:13s} forward: max |ours - official| = {(a - b).abs().max().item():.3e} "
                  f"(outputs' max |v| {b.abs().max().item():.3f})")
        target = target_velocity(x0, x1)
        la = F.mse_loss(ours(xt, t, emb, torch.zeros(batch, dtype=torch.bool)), target).item()
        lb = torch.pow(theirs(xt, t, extra={"concat_conditioning": emb}) - target, 2).mean().item()
    print(f"[cellflow] loss on one batch: ours {la:.6f}, official {lb:.6f}, |diff| {abs(la - lb):.3e}")
    print(f"[cellflow] parameters: ours {sum(p.numel() for p in ours.parameters()):,}, official "
          f"{sum(p.numel() for p in theirs.parameters()):,} ({n} tensors copied); size {size}px, batch {batch}, "
          f"seed {seed}, float32, dropout off (eval)")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--official", type=Path, required=True, help="a local checkout of the official repository")
    p.add_argument("--method", default="cellflow", choices=["cellflow"])
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if not (args.official / "models").is_dir():
        raise SystemExit(f"{args.official}: not a checkout of the official repository (no models/ directory)")
    torch.manual_seed(args.seed)
    {"cellflow": cellflow}[args.method](args.official, args.size, args.batch, args.seed)


if __name__ == "__main__":
    main()
