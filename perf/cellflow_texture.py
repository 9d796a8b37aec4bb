"""How a stored CellFlow run treats fine texture (a diagnostic, not a test).

    python perf/cellflow_texture.py RUN_DIR [--data-dir data] [--n 64] [--seed 0]

Inception FID punishes smooth images hard, so where a model loses FID to the
identity baseline it is worth knowing whether it blurs. Two figures:

1. The field's gain on texture: the guided field (as sampled: CFG, EMA) is
   probed at x_t = t x1 + (1 - t) x0 (evaluation pairs of the run) with a small
   white perturbation d; gain = <v(x_t + d) - v(x_t), d> / |d|^2. Texture of the
   target that is independent of the control has the exact gain
   (2t - 1) / (t^2 + (1 - t)^2) (from -1 at t=0 to +1 at t=1); 0 means texture
   is carried over from the control unchanged; a negative gain at late t means
   the field erases texture (denoises) on its way to the target.
2. High-pass energy, mean (x - G_1 * x)^2 in [-1, 1] units (G_1 a Gaussian of
   1 px), of the run's generated images, their real targets and their controls,
   per perturbation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.ndimage import gaussian_filter

from benchmark import io
from benchmark.method import to_tensor
from benchmark.registry import METHODS, TASKS
from benchmark.store import MANIFEST, read_manifest


def high_pass_energy(images: np.ndarray) -> float:
    x = np.asarray(images, dtype=np.float64) / 127.5 - 1.0
    return float(np.mean((x - gaussian_filter(x, (0, 1, 1, 0))) ** 2))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir", type=Path)
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--n", type=int, default=64, help="evaluation pairs probed for the gain")
    p.add_argument("--amplitude", type=float, default=0.03, help="std of the white probe, [-1, 1] units")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    manifest = read_manifest(args.run_dir, need_model=True)
    if manifest["method"] != "cellflow":
        raise SystemExit(f"{args.run_dir / MANIFEST}: method is {manifest['method']!r}, this diagnostic needs a cellflow run")
    cls = METHODS.get(manifest["method"])
    method = cls(cls.Config(**manifest["config"]))
    method.load(args.run_dir / "model")
    data = TASKS.get(manifest["task"]["name"]).load(args.data_dir)
    pairs = pd.read_csv(args.run_dir / "generated.csv")
    print(f"run={manifest['run_id']} model_sha256={io.sha256_file(args.run_dir / 'model' / 'cellflow.pt')[:16]} "
          f"seed={args.seed} n={args.n} amplitude={args.amplitude} alpha={method.config.alpha} ema={method.config.use_ema}")

    controls, targets = pairs.control_row.to_numpy(), pairs.ref_row.to_numpy()
    rng = np.random.default_rng(args.seed)
    pick = np.sort(rng.choice(len(pairs), size=min(args.n, len(pairs)), replace=False))
    x0 = to_tensor(data.images[controls[pick]])
    x1 = to_tensor(data.images[targets[pick]])
    field = method.field(torch.from_numpy(data.embed(pairs.CPD_NAME.to_numpy()[pick].tolist())))
    g = torch.Generator().manual_seed(args.seed)
    print("\n   t   exact gain (independent texture)   field gain")
    with torch.no_grad():
        for t in (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0):
            xt = t * x1 + (1 - t) * x0
            d = args.amplitude * torch.randn(xt.shape, generator=g)
            tt = torch.tensor(t)
            dv = field(tt, xt + d) - field(tt, xt)
            gain = float((dv * d).sum() / (d * d).sum())
            print(f"{t:4.1f}   {(2 * t - 1) / (t * t + (1 - t) ** 2):+.3f}{'':29}{gain:+.3f}")

    generated = np.load(args.run_dir / "generated.npy", mmap_mode="r")
    rows = []
    for pert, idx in pairs.groupby("CPD_NAME").indices.items():
        rows.append({"perturbation": pert, "n": len(idx), "generated": high_pass_energy(generated[idx]),
                     "real": high_pass_energy(data.images[targets[idx]]),
                     "control": high_pass_energy(data.images[controls[idx]])})
    table = pd.DataFrame(rows)
    table["generated/real"] = table.generated / table.real
    print("\nhigh-pass energy (x - G_1 * x)^2, [-1, 1] units")
    print(table.sort_values("generated/real").to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"\nall: generated/real {table.generated.sum() / table.real.sum():.3f}")


if __name__ == "__main__":
    main()
