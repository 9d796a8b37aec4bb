"""Parity of our `official` networks with the official code, weights copied across (a check, not a test).

    python perf/parity.py --official /path/to/CellFlux [--method cellflow] [--size 96] [--batch 4]
    python perf/parity.py --official /path/to/IMPA --method impa
    python perf/parity.py --official /path/to/PhenDiff --method phendiff --size 128

Needs a local checkout of the official repository and its own imports (IMPA's imports munch), fetched by the
user; nothing of it ships with the suite. It
builds the official network and ours at the same configuration, gives ours random weights (so zero-initialised
layers do not hide differences), copies them parameter by parameter into the official one (both register their
modules in the same order; every shape is checked), and prints the largest absolute difference of the outputs
(conditional and unconditional) and the flow-matching loss of one batch on both sides, in float32.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch
from torch.nn import functional as F

from benchmark.method import config_from_overrides
from methods.cellflow import CellFlow, CellFlowConfig
from methods.training import Shape
from methods.cellflow.path import interpolate, sample_time, target_velocity


def copy_weights(src: torch.nn.Module, dst: torch.nn.Module, aliases: tuple[tuple[str, str], ...] = (),
                 theirs_only: tuple[str, ...] = ()) -> int:
    """Copy `src`'s tensors into `dst`: by name (after the regex `aliases` rename ours to theirs), and those left
    unmatched pairwise in registration order; every shape is checked; `theirs_only` names official tensors that ours
    has no counterpart of (the caller sets them). Returns how many tensors were copied."""
    mine, other = src.state_dict(), dst.state_dict()
    renamed = {}
    for k in mine:
        new = k
        for pattern, repl in aliases:
            new = re.sub(pattern, repl, new)
        renamed[k] = new
    pairs = [(k, renamed[k]) for k in mine if renamed[k] in other]
    left_mine = [k for k in mine if renamed[k] not in other]
    taken = {t for _, t in pairs}
    left_other = [k for k in other if k not in taken and k not in theirs_only]
    if len(left_mine) != len(left_other):
        raise SystemExit(f"unmatched tensors: ours {left_mine}, official {left_other}")
    pairs += list(zip(left_mine, left_other))
    state = dict(other)
    for k, t in pairs:
        # a 1x1 convolution on a 1x1 map is a linear layer: same weights, another shape
        same = mine[k].shape == other[t].shape or (mine[k].numel() == other[t].numel() and mine[k].dim() == 4
                                                   and mine[k].shape[2:] == (1, 1) and other[t].dim() == 2)
        if not same:
            raise SystemExit(f"ours {k} {tuple(mine[k].shape)} against official {t} {tuple(other[t].shape)}")
        state[t] = mine[k].reshape(other[t].shape)
    dst.load_state_dict(state)
    return len(pairs)


def cellflow(official: Path, size: int, batch: int, seed: int) -> None:
    sys.path.insert(0, str(official))
    from models.model_configs import MODEL_CONFIGS  # the official repository's modules
    from models.unet import UNetModel

    cfg = config_from_overrides(CellFlowConfig, CellFlow.profiles["official"], [])
    method = CellFlow(cfg)
    official_cfg = MODEL_CONFIGS["bbbc021"]
    method.build(Shape(official_cfg["in_channels"], size, official_cfg["condition_dim"], 1))
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


def impa(official: Path, size: int, batch: int, seed: int) -> None:
    """IMPA's four networks (config bbbc021_six: 96 px, dim_in 64, style 64, z 16, 26 perturbations)."""
    sys.path.insert(0, str(official / "IMPA"))
    sys.path.insert(0, str(official))
    from IMPA.model import Discriminator as ODiscriminator  # the official repository's modules (needs munch)
    from IMPA.model import Generator as OGenerator
    from IMPA.model import MappingNetwork as OMapping
    from IMPA.model import StyleEncoder as OStyleEncoder
    from methods.impa import IMPA, IMPAConfig

    n_pert, emb_dim = 26, 1024
    cfg = config_from_overrides(IMPAConfig, IMPA.profiles["official"], [])
    ours = IMPA(cfg)
    ours.build(Shape(3, size, emb_dim, n_pert))
    theirs = {"generator": OGenerator(size, cfg.style_dim, in_channels=3, dim_in=cfg.dim_in),
              "style_encoder": OStyleEncoder(size, cfg.style_dim, in_channels=3, dim_in=cfg.dim_in, single_style=True,
                                             num_domains=n_pert),
              "mapping": OMapping(emb_dim + cfg.z_dim, cfg.style_dim, num_domains=n_pert, num_layers=1, single_style=True),
              "discriminator": ODiscriminator(size, n_pert, in_channels=3, dim_in=cfg.dim_in)}
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, size, size, generator=g)
    s = torch.randn(batch, cfg.style_dim, generator=g)
    emb, z = torch.randint(0, 4, (batch, emb_dim), generator=g).float(), torch.randn(batch, cfg.z_dim, generator=g)
    y = torch.randint(0, n_pert, (batch,), generator=g)
    calls = {"generator": (lambda m: m(x, s), lambda m: m(x, s)[1]),
             "style_encoder": (lambda m: m(x), lambda m: m(x)),
             "mapping": (lambda m: m(emb, z), lambda m: m(torch.cat([emb, z], dim=1))),
             "discriminator": (lambda m: m(x, y), lambda m: m(x, y, None))}
    TRUNK = {"style_encoder": "conv.", "discriminator": "conv_blocks.", "generator": "", "mapping": ""}
    for name, (call_ours, call_theirs) in calls.items():
        mine, other = ours.nets[name].eval(), theirs[name].eval()
        with torch.no_grad():
            for p in mine.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        n = copy_weights(mine, other, ((r"\.skip\.", ".conv1x1."), (r"^trunk\.body\.", TRUNK[name])))
        with torch.no_grad():
            a, b = call_ours(mine), call_theirs(other)
        print(f"[impa] {name:13s} parameters ours {sum(p.numel() for p in mine.parameters()):,}, official "
              f"{sum(p.numel() for p in other.parameters()):,} ({n} tensors); forward max |ours - official| = "
              f"{(a - b).abs().max().item():.3e} (max |out| {b.abs().max().item():.3f})")
    print(f"[impa] size {size}px, batch {batch}, seed {seed}, float32, {n_pert} perturbations")


def phendiff(official: Path, size: int, batch: int, seed: int) -> None:
    """PhenDiff's U-Net (models_configs/denoiser/small_denoiser_config.json, 2 classes) against ours, whose class
    embedding comes from outside: ours is given the official class table's row of each sample's class."""
    import importlib
    import importlib.util
    import json

    # the official module was written against diffusers 0.18, whose U-Net modules have since moved
    for old, new in (("diffusers.models.unet_2d", "diffusers.models.unets.unet_2d"),
                     ("diffusers.models.unet_2d_blocks", "diffusers.models.unets.unet_2d_blocks")):
        try:
            importlib.import_module(old)
        except ImportError:
            sys.modules[old] = importlib.import_module(new)
    spec = importlib.util.spec_from_file_location("official_cond_unet_2d", official / "src/cond_unet_2d/cond_unet_2d.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = json.loads((official / "models_configs/denoiser/small_denoiser_config.json").read_text())
    theirs = module.CustomCondUNet2DModel(**{k: v for k, v in config.items() if not k.startswith("_")}).eval()
    from methods.phendiff import PhenDiff, PhenDiffConfig

    method = PhenDiff(config_from_overrides(PhenDiffConfig, PhenDiff.profiles["official"], []))
    method.build(Shape(3, size, 1024, 1))
    ours = method.model.unet.eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ours.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        table = torch.randn(2, theirs.class_embedding.weight.shape[1], generator=g) * 0.05
        n = copy_weights(ours, theirs, theirs_only=("class_embedding.weight",))
        theirs.class_embedding.weight.copy_(table)
        x = torch.randn(batch, 3, size, size, generator=g)
        t = torch.randint(0, 3000, (batch,), generator=g)
        y = torch.randint(0, 2, (batch,), generator=g)
        a = ours(x, t, class_labels=table[y]).sample
        b = theirs(x, t, class_labels=y).sample
    print(f"[phendiff] U-Net parameters ours {sum(p.numel() for p in ours.parameters()):,} + official class table "
          f"{table.numel():,} = {sum(p.numel() for p in ours.parameters()) + table.numel():,}; official "
          f"{sum(p.numel() for p in theirs.parameters()):,} ({n} tensors copied)")
    print(f"[phendiff] forward: max |ours - official| = {(a - b).abs().max().item():.3e} (max |out| "
          f"{b.abs().max().item():.3f}); size {size}px, batch {batch}, seed {seed}, float32")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--official", type=Path, required=True, help="a local checkout of the official repository")
    p.add_argument("--method", default="cellflow", choices=["cellflow", "impa", "phendiff"])
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    marker = {"cellflow": "models", "impa": "IMPA", "phendiff": "src/cond_unet_2d"}[args.method]
    if not (args.official / marker).is_dir():
        raise SystemExit(f"{args.official}: not a checkout of the official {args.method} repository (no {marker}/)")
    torch.manual_seed(args.seed)
    {"cellflow": cellflow, "impa": impa, "phendiff": phendiff}[args.method](args.official, args.size, args.batch, args.seed)


if __name__ == "__main__":
    main()
