"""Images/s of the packed store against per-file `np.load`, and the cost of `prepare`'s checks (a benchmark).

    python perf/loader_speed.py [--layout bbbc021] [--per-group 250] [--batch 64] [--batches 200]

Writes a fixture in the published layout under a temp dir, packs it with the
same code as `prepare`, then reads the same random batches both ways. Both
paths read from the page cache after the first pass, so the figure is the
per-crop overhead (open, header parse, small read) that packing removes. It
also times `prepare`'s first pass (every crop's `.npy` header and size, no
pixels read) on the same files, warm in the page cache: on network storage
expect the per-file open to dominate both passes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from tasks.fixtures import write_fixture
from tasks.impa_format import check_crop_header
from tasks.layouts import LAYOUTS
from tasks.packed import load_packed, pack


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--layout", default="bbbc021", choices=LAYOUTS.names())
    p.add_argument("--per-group", type=int, default=250)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    lay = LAYOUTS.get(args.layout)
    with tempfile.TemporaryDirectory() as tmp:
        src = write_fixture(Path(tmp) / "src", args.layout, per_group=args.per_group, seed=args.seed)
        t0 = time.perf_counter()
        store = load_packed(pack(lay, src, Path(tmp) / "packed"))
        t_pack = time.perf_counter() - t0
        n = len(store.obs)
        files = [src / lay.images / f for f in store.obs["FILE"]]
        shape = tuple(store.images.shape[1:])
        t0 = time.perf_counter()
        for f in files:
            check_crop_header(f, shape)
        t_check = time.perf_counter() - t0
        rng = np.random.default_rng(args.seed)
        batches = [np.sort(rng.choice(n, args.batch, replace=False)) for _ in range(args.batches)]
        for rows in batches[:5]:  # warm both paths alike
            store.images[rows]
            [np.load(files[i]) for i in rows]
        t0 = time.perf_counter()
        for rows in batches:
            a = np.asarray(store.images[rows])
        packed_rate = args.batches * args.batch / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for rows in batches:
            b = np.stack([np.load(files[i]) for i in rows])
        file_rate = args.batches * args.batch / (time.perf_counter() - t0)
        assert np.array_equal(a, b)
        print(f"layout={args.layout} crops={n} shape={tuple(store.images.shape[1:])} batch={args.batch} "
              f"batches={args.batches} seed={args.seed}")
        print(f"pack (checks + copy): {n / t_pack:.0f} crops/s ({t_pack:.1f} s)")
        print(f"checks alone (headers and sizes): {n / t_check:,.0f} crops/s ({t_check:.2f} s)")
        print(f"packed memmap: {packed_rate:,.0f} img/s")
        print(f"per-file np.load: {file_rate:,.0f} img/s")
        print(f"speed-up: {packed_rate / file_rate:.1f}x")


if __name__ == "__main__":
    main()
