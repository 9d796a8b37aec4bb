"""Print CellFlow training and sampling throughput on this machine (a benchmark, not a test).

    python perf/cellflow_speed.py [--profiles quick,paper] [--size 48] [--channels 3]

Training: images/s over a few Adam steps at the profile's batch size (capped
for the paper profile on CPU). Sampling: images/s per solver and NFE, with CFG.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmark.method import config_from_overrides
from methods.cellflow import CellFlow, CellFlowConfig
from methods.cellflow.solver import integrate
from methods.training import Shape, resolve_precision


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--profiles", default="quick,paper")
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--cond-dim", type=int, default=1024)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--max-batch", type=int, default=32 if not torch.cuda.is_available() else 1024)
    args = p.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device={dev} threads={torch.get_num_threads()} size={args.size} channels={args.channels} torch={torch.__version__}")
    for profile in args.profiles.split(","):
        cfg = config_from_overrides(CellFlowConfig, CellFlow.profiles[profile], [])
        m = CellFlow(cfg)
        m.build(Shape(args.channels, args.size, args.cond_dim, 1))
        m.model.to(dev)
        m.ema.to(dev)
        params = sum(p.numel() for p in m.model.parameters())
        bs = min(cfg.batch_size, args.max_batch)
        x0 = torch.randn(bs, args.channels, args.size, args.size)
        x1 = torch.randn_like(x0)
        emb = torch.rand(bs, args.cond_dim)
        opt = torch.optim.Adam(m.model.parameters(), lr=cfg.lr)
        g = torch.Generator().manual_seed(0)
        for i in range(args.steps + 1):
            if i == 1:
                if dev == "cuda":
                    torch.cuda.synchronize()
                t0 = time.time()
            loss = m.loss(x0, x1, emb, g)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if dev == "cuda":
            torch.cuda.synchronize()
        train = args.steps * bs / (time.time() - t0)
        precision = resolve_precision(cfg.mixed_precision, torch.device(dev))
        print(f"[{profile}] params={params / 1e6:.2f}M batch={bs} precision={precision} train {train:.2f} img/s")
        n = min(bs, 16)
        for solver, nfe in (("euler", 10), ("midpoint", 10), ("euler", 20), ("midpoint", 20), ("rk4", 40), ("euler", 50)):
            if profile == "paper" and dev == "cpu" and nfe > 10:
                continue  # minutes per point on 2 CPU cores
            field = m.field(emb[:n].to(dev))
            t0 = time.time()
            with m._autocast():
                integrate(field, x0[:n].to(dev), solver, nfe)
            if dev == "cuda":
                torch.cuda.synchronize()
            print(f"[{profile}] sample {solver:8s} nfe={nfe:3d} (x2 with CFG): {n / (time.time() - t0):.2f} img/s")


if __name__ == "__main__":
    main()
