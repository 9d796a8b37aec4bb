"""Parity of our `official` networks with the official code, weights copied across (a check, not a test).

    python perf/parity.py --official /path/to/CellFlux [--method cellflow] [--size 96] [--batch 4]
    python perf/parity.py --official /path/to/IMPA --method impa
    python perf/parity.py --official /path/to/PhenDiff --method phendiff --size 128
    python perf/parity.py --official /path/to/microscopy-flow-matching --method mit
    python perf/parity.py --official /path/to/CellFlux --saved    # and with IMPA's, PhenDiff's: the importers

Needs a local checkout of the official repository and its own imports (IMPA's imports munch), fetched by the
user; nothing of it ships with the suite. It
builds the official network and ours at the same configuration, gives ours random weights (so zero-initialised
layers do not hide differences), copies them parameter by parameter into the official one (both register their
modules in the same order; every shape is checked), and prints the largest absolute difference of the outputs
(conditional and unconditional) and the flow-matching loss of one batch on both sides, in float32. With `--saved`
the official code's own save function writes a checkpoint of random weights, our importer (`run --checkpoint`) reads
it, and the outputs are compared the same way.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from benchmark.method import TrainData, config_from_overrides
from methods.cellflow import CellFlow, CellFlowConfig
from methods.published import pair_tensors
from methods.training import Shape
from methods.cellflow.path import interpolate, sample_time, target_velocity


def copy_weights(src: torch.nn.Module, dst: torch.nn.Module, aliases: tuple[tuple[str, str], ...] = (),
                 theirs_only: tuple[str, ...] = ()) -> int:
    """Copy `src`'s tensors (ours) into `dst` (the official network) by the importers' mapping (`pair_tensors`:
    names after the regex `aliases`, the rest in registration order, every shape checked); `theirs_only` names
    official tensors that ours has no counterpart of (the caller sets them). Returns how many tensors were copied."""
    mine, other = src.state_dict(), dst.state_dict()
    pairs = pair_tensors({k: tuple(v.shape) for k, v in mine.items()}, {k: tuple(v.shape) for k, v in other.items()},
                         aliases, theirs_only)
    dst.load_state_dict({**other, **{t: mine[k].reshape(other[t].shape) for k, t in pairs}})
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
    for name, (call_ours, call_theirs) in calls.items():
        mine, other = ours.nets[name].eval(), theirs[name].eval()
        with torch.no_grad():
            for p in mine.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        n = copy_weights(mine, other, ((r"\.skip\.", ".conv1x1."), (r"^trunk\.body\.", IMPA.TRUNK[name])))
        with torch.no_grad():
            a, b = call_ours(mine), call_theirs(other)
        print(f"[impa] {name:13s} parameters ours {sum(p.numel() for p in mine.parameters()):,}, official "
              f"{sum(p.numel() for p in other.parameters()):,} ({n} tensors); forward max |ours - official| = "
              f"{(a - b).abs().max().item():.3e} (max |out| {b.abs().max().item():.3f})")
    print(f"[impa] size {size}px, batch {batch}, seed {seed}, float32, {n_pert} perturbations")


def phendiff(official: Path, size: int, batch: int, seed: int) -> None:
    """PhenDiff's U-Net (models_configs/denoiser/small_denoiser_config.json, 2 classes) against ours, whose class
    embedding comes from outside: ours is given the official class table's row of each sample's class."""
    theirs = _official_phendiff_unet(official, 2)
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



def mit(official: Path, size: int, batch: int, seed: int, variant: str = "DiT-XL/2", labels=(128, 64, 1)) -> None:
    """MiT's `DiTWrapper` (valence-labs/microscopy-flow-matching d6c5177, `model.py:216-244`) at the official size
    (DiT-XL/2 and the label tables of `bbbc021.py:23-25`) against our `official` field with the one-hot table."""
    sys.path.insert(0, str(official))
    from model import get_model_cls  # the official module

    from methods.mit.method import PROFILES, MiTConfig
    from methods.mit.model import Condition, DiT, Field

    y_dim, e_dim, c_dim = labels
    theirs = get_model_cls(variant)(y_dim=y_dim, e_dim=e_dim, c_dim=c_dim, input_size=size, in_channels=3).eval()
    cfg = config_from_overrides(MiTConfig, PROFILES["official"], [])
    depth, width, patch = theirs.dit.blocks.__len__(), theirs.dit.hidden_size, theirs.dit.patch_size
    if (depth, width, patch) != (cfg.depth, cfg.width, cfg.patch):
        raise SystemExit(f"{variant}: depth {depth}, width {width}, patch {patch}; our official profile has "
                         f"{cfg.depth}, {cfg.width}, {cfg.patch}")
    ours = Field(DiT(3, size, cfg.patch, cfg.width, cfg.depth, cfg.heads, cfg.mlp_ratio, cfg.dropout),
                 Condition(cfg.width, y_dim, 1, e_dim, c_dim, "onehot")).eval()
    counts = [sum(p.numel() for p in m.parameters()) for m in (ours, theirs)]
    _randomised(ours, seed=seed)
    with torch.no_grad():  # the frozen positional table is part of the model, not random
        ours.dit.positions.copy_(theirs.dit.pos_embed)
    n = copy_weights(ours, theirs)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, 3, size, size, generator=g)
    t = torch.rand(batch, generator=g)
    y, e = torch.randint(y_dim, (batch,), generator=g), torch.randint(e_dim, (batch,), generator=g)
    c = torch.zeros(batch, dtype=torch.long)
    null = torch.zeros(batch, 3, dtype=torch.bool)
    null[:, 0] = True
    with torch.no_grad():
        for name, a, b in (("conditional", ours(x, t, y, e, c), theirs(x=x, t=t, y=y, e=e, c=c)),
                           ("null perturbation", ours(x, t, y, e, c, null), theirs(x=x, t=t, y=None, e=e, c=c))):
            _report(f"mit {variant}, {name}", a, b)
    print(f"[mit] parameters: ours {counts[0]:,}, official {counts[1]:,} ({n} tensors copied; the positional table "
          f"of {theirs.dit.pos_embed.numel():,} frozen on both sides); size {size}px, batch {batch}, float32")


def _official_module(official: Path, name: str, relative: str):
    """A module of the official PhenDiff checkout, written against diffusers 0.18 (whose U-Net modules have since
    moved: aliased here)."""
    import importlib
    import importlib.util

    for old, new in (("diffusers.models.unet_2d", "diffusers.models.unets.unet_2d"),
                     ("diffusers.models.unet_2d_blocks", "diffusers.models.unets.unet_2d_blocks")):
        try:
            importlib.import_module(old)
        except ImportError:
            sys.modules[old] = importlib.import_module(new)
    spec = importlib.util.spec_from_file_location(name, official / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _official_phendiff_unet(official: Path, classes: int):
    import json

    module = _official_module(official, "official_cond_unet_2d", "src/cond_unet_2d/cond_unet_2d.py")
    config = json.loads((official / "models_configs/denoiser/small_denoiser_config.json").read_text())
    config = {**{k: v for k, v in config.items() if not k.startswith("_")}, "num_class_embeds": classes}
    return module.CustomCondUNet2DModel(**config).eval()


# --- --saved: a checkpoint written by the official code's own save function, read by our importer ----------------

def _train_data(size: int, perturbations: list[str], embeddings: np.ndarray) -> TrainData:
    n = len(perturbations) + 1
    obs = pd.DataFrame({"CPD_NAME": ["DMSO", *perturbations], "BATCH": ["b"] * n, "PLATE": ["p"] * n,
                        "ANNOT": ["x"] * n, "STATE": [0] + [1] * (n - 1)})
    return TrainData(images=np.zeros((n, size, size, 3), np.uint8), obs=obs, control="DMSO",
                     perturbations=perturbations, embeddings=embeddings.astype(np.float32), channels=("a", "b", "c"))


def _randomised(*modules: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in modules:
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def _report(name: str, a: torch.Tensor, b: torch.Tensor) -> None:
    print(f"[{name}] max |ours - official| = {(a - b).abs().max().item():.3e} (max |out| {b.abs().max().item():.3f})")


def cellflow_saved(official: Path, size: int, batch: int, seed: int) -> None:
    """CellFlux's save_model (training/load_and_save.py) of its EMA-wrapped U-Net after three updates, read back by
    the official load_model and by our importer: the EMA and the raw weights give the official outputs."""
    import types

    sys.path.insert(0, str(official))
    from models.ema import EMA
    from models.model_configs import MODEL_CONFIGS
    from models.unet import UNetModel
    from training.load_and_save import load_model, save_model

    oc = MODEL_CONFIGS["bbbc021"]
    net = UNetModel(**oc)
    ema = EMA(net, decay=0.999)
    _randomised(net, seed=seed)
    with torch.no_grad():
        for _ in range(3):  # the average lags the raw weights
            for p in net.parameters():
                p.add_(torch.randn_like(p) * 0.02)
            ema.update_ema()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    out = Path(tempfile.mkdtemp())
    args = types.SimpleNamespace(output_dir=str(out), resume=str(out / "checkpoint.pth"), eval=True)

    class Scaler:  # the official NativeScalerWithGradNormCount saves a GradScaler's state
        def state_dict(self):
            return torch.amp.GradScaler("cpu").state_dict()

    save_model(args, 7, ema, ema, opt, torch.optim.lr_scheduler.ConstantLR(opt, 1.0), Scaler())
    back = EMA(UNetModel(**oc))
    with torch.serialization.safe_globals([types.SimpleNamespace]):  # its torch.load predates weights_only=True
        load_model(args, back, opt, None, torch.optim.lr_scheduler.ConstantLR(opt, 1.0))
    back.train(False)  # the official switch to evaluation copies the EMA weights into the U-Net
    g = torch.Generator().manual_seed(seed + 1)
    x, t = torch.randn(batch, 3, size, size, generator=g), torch.rand(batch, generator=g)
    emb = torch.randint(0, 2, (batch, oc["condition_dim"]), generator=g).float()
    data = _train_data(size, ["a"], np.zeros((1, oc["condition_dim"])))
    for weights, theirs in (("ema", back.model.eval()), ("raw", net.eval())):
        m = CellFlow(config_from_overrides(CellFlowConfig, CellFlow.profiles["official"], []))
        m.import_published(out / "checkpoint.pth", data, weights)
        with torch.no_grad():
            _report(f"cellflow saved, {weights}", m.model.eval()(x, t, emb, torch.zeros(batch, dtype=torch.bool)),
                    theirs(x, t, extra={"concat_conditioning": emb}))


def impa_saved(official: Path, size: int, batch: int, seed: int) -> None:
    """IMPA's CheckpointIO (IMPA/checkpoint.py) of DataParallel networks and the frozen table of IMPA's published
    BBBC021 fingerprints in the official loader's order, read by our importer for a task listing the compounds in
    another order."""
    sys.path[:0] = [str(official / "IMPA"), str(official)]
    from IMPA.checkpoint import CheckpointIO
    from IMPA.model import Discriminator, Generator, MappingNetwork, StyleEncoder
    from methods.impa import IMPA, IMPAConfig

    csv = pd.read_csv(official / "embeddings" / "csv" / "emb_fp.csv", index_col=0)  # IMPA's BBBC021 fingerprints
    names = list(csv.index[[5, 1, 9, 3]])  # the task's order
    official_order = sorted(names)  # the loader's: np.unique of the training compounds
    table = csv.loc[official_order].to_numpy()
    nets = {"generator": Generator(size, 64, in_channels=3, dim_in=64),
            "style_encoder": StyleEncoder(size, 64, in_channels=3, dim_in=64, single_style=True, num_domains=4),
            "discriminator": Discriminator(size, 4, in_channels=3, dim_in=64),
            "mapping_network": MappingNetwork(1024 + 16, 64, num_domains=4, num_layers=1, single_style=True)}
    _randomised(*nets.values(), seed=seed)
    out = Path(tempfile.mkdtemp())
    CheckpointIO(str(out / "{:06d}_nets.ckpt"), data_parallel=True,
                 **{k: torch.nn.DataParallel(v) for k, v in nets.items()}).save(50)
    emb = torch.nn.Embedding.from_pretrained(torch.tensor(table, dtype=torch.float32), freeze=True)
    CheckpointIO(str(out / "{:06d}_embeddings.ckpt"), embedding_matrix=emb).save(50)
    task_rows = np.stack([table[official_order.index(n)] for n in names])
    m = IMPA(config_from_overrides(IMPAConfig, IMPA.profiles["official"], []))
    m.import_published(out / "000050_nets.ckpt", _train_data(size, names, task_rows))
    g = torch.Generator().manual_seed(seed + 1)
    x, s, z = (torch.randn(batch, 3, size, size, generator=g), torch.randn(batch, 64, generator=g),
               torch.randn(batch, 16, generator=g))
    y = torch.arange(batch) % 4
    with torch.no_grad():
        m.nets.eval()
        for n in nets.values():
            n.eval()
        _report("impa saved, generator", m.nets["generator"](x, s), nets["generator"](x, s)[1])
        _report("impa saved, mapping", m.nets["mapping"](emb(y), z), nets["mapping_network"](torch.cat([emb(y), z], 1)))
        _report("impa saved, style encoder", m.nets["style_encoder"](x), nets["style_encoder"](x))
        _report("impa saved, discriminator", m.nets["discriminator"](x, y), nets["discriminator"](x, y, None))
    print(f"[impa saved] a table of {len(names)} of IMPA's BBBC021 fingerprints matched by name; size {size}px, "
          f"batch {batch}, seed {seed}")


def phendiff_saved(official: Path, size: int, batch: int, seed: int) -> None:
    """PhenDiff's ConditionalDDIMPipeline.save_pretrained of a 3-class U-Net, read by our importer; classes by name
    (the official index is the sorted class folders)."""
    from diffusers import DDIMScheduler
    from methods.phendiff import PhenDiff, PhenDiffConfig
    from methods.phendiff.model import CONTROL, PERTURBATION

    pipeline = _official_module(official, "official_pipeline",
                                "src/pipeline_conditional_ddim/pipeline_conditionial_ddim.py").ConditionalDDIMPipeline
    unet = _official_phendiff_unet(official, 3)
    _randomised(unet, seed=seed)
    method = PhenDiff(config_from_overrides(PhenDiffConfig, PhenDiff.profiles["official"], []))
    sched = DDIMScheduler.from_config(method.scheduler().config)
    out = Path(tempfile.mkdtemp())
    pipeline(unet=unet, scheduler=sched).save_pretrained(out)
    names = ["taxol", "AZ138"]  # classes AZ138, DMSO, taxol
    embeddings = np.random.default_rng(seed).integers(0, 2, (2, 1024))
    method.import_published(out, _train_data(size, names, embeddings))
    g = torch.Generator().manual_seed(seed + 1)
    x, t = torch.randn(3, 3, size, size, generator=g), torch.randint(0, 3000, (3,), generator=g)
    emb = torch.from_numpy(embeddings[[0, 1, 0]].astype(np.float32))
    kind = torch.tensor([PERTURBATION, PERTURBATION, CONTROL])
    with torch.no_grad():
        _report("phendiff saved", method._net()(x, t, emb, kind), unet(x, t, class_labels=torch.tensor([2, 0, 1])).sample)

def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--official", type=Path, required=True, help="a local checkout of the official repository")
    p.add_argument("--method", default="cellflow", choices=["cellflow", "impa", "phendiff", "mit"])
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--saved", action="store_true", help="instead: a checkpoint written by the official code's own "
                   "save function, read by our importer (`run --checkpoint`)")
    args = p.parse_args()
    marker = {"cellflow": "models", "impa": "IMPA", "phendiff": "src/cond_unet_2d", "mit": "adapters.py"}[args.method]
    if not (args.official / marker).exists():
        raise SystemExit(f"{args.official}: not a checkout of the official {args.method} repository (no {marker}/)")
    torch.manual_seed(args.seed)
    if args.saved and args.method == "mit":
        raise SystemExit("--saved: MiT has no importer of published checkpoints yet (none were published)")
    checks = ({"cellflow": cellflow_saved, "impa": impa_saved, "phendiff": phendiff_saved} if args.saved else
              {"cellflow": cellflow, "impa": impa, "phendiff": phendiff, "mit": mit})
    checks[args.method](args.official, args.size, args.batch, args.seed)


if __name__ == "__main__":
    main()
