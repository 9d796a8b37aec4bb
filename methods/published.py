"""Reading the weights the official code of a method published into our `official` networks.

The official networks register their modules in the same order as ours (`perf/parity.py` proves it, outputs equal
with weights copied across), but name them differently. `pair_tensors` matches two state dicts by name where the
names agree (after regex aliases) and the rest in registration order, checking every shape: the one mapping that
parity and the importers share. A checkpoint is read with `weights_only=True`; the only class allowed besides tensors
is the `types.SimpleNamespace` that CellFlux pickles its arguments in.
"""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from benchmark import io
from benchmark.errors import BenchmarkError


def read_checkpoint(path: Path, what: str) -> dict[str, Any]:
    """A `torch.save`d dict, loaded without running code from it."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"{path}: no such file; expected {what} (nothing is downloaded: pass a local file)")
    try:
        with torch.serialization.safe_globals([types.SimpleNamespace]):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file, said in one line
        raise BenchmarkError(f"{path}: not a readable {what} ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(state, dict):
        raise BenchmarkError(f"{path}: holds a {type(state).__name__}; expected {what} (a dict)")
    return state


def require_keys(state: dict[str, Any], keys: Iterable[str], path: Path, what: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise BenchmarkError(f"{path}: no {missing[0]!r} entry (has {', '.join(map(str, state)) or 'nothing'}); "
                             f"expected {what}")


def pair_tensors(ours: dict[str, tuple[int, ...]], theirs: dict[str, tuple[int, ...]],
                 aliases: tuple[tuple[str, str], ...] = (), theirs_only: tuple[str, ...] = (),
                 source: str = "official") -> list[tuple[str, str]]:
    """(our name, their name) for every tensor: equal names after the regex `aliases` rename ours, the rest
    pairwise in registration order; `theirs_only` are their tensors with no counterpart. Shapes must agree (a 1x1
    convolution and a linear layer of the same weights count as equal)."""
    renamed = {}
    for k in ours:
        new = k
        for pattern, repl in aliases:
            new = re.sub(pattern, repl, new)
        renamed[k] = new
    pairs = [(k, renamed[k]) for k in ours if renamed[k] in theirs]
    taken = {t for _, t in pairs}
    left_ours = [k for k in ours if renamed[k] not in theirs]
    left_theirs = [k for k in theirs if k not in taken and k not in theirs_only]
    if len(left_ours) != len(left_theirs):
        raise BenchmarkError(f"{source}: {len(theirs) - len(theirs_only)} tensors against our network's {len(ours)} "
                             f"(unmatched: ours {left_ours[:3]}, theirs {left_theirs[:3]}); it is not of this "
                             "configuration")
    pairs += list(zip(left_ours, left_theirs))
    for k, t in pairs:
        a, b = tuple(ours[k]), tuple(theirs[t])
        linear_as_conv = len(a) == 4 and a[2:] == (1, 1) and len(b) == 2 and a[:2] == b
        if a != b and not linear_as_conv:
            raise BenchmarkError(f"{source}: tensor {t} has shape {b}, our {k} has {a}; the checkpoint is not of "
                                 "this network (check --set against the configuration it was trained with)")
    return pairs


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str,
              aliases: tuple[tuple[str, str], ...] = (), theirs_only: tuple[str, ...] = ()) -> int:
    """Fill `module` from a state dict of the official network; returns the number of tensors loaded."""
    mine = module.state_dict()
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise BenchmarkError(f"{source}: entry {bad[0]!r} is a {type(state[bad[0]]).__name__}, expected a tensor")
    pairs = pair_tensors({k: tuple(v.shape) for k, v in mine.items()}, {k: tuple(v.shape) for k, v in state.items()},
                         aliases, theirs_only, source)
    module.load_state_dict({k: state[t].reshape(mine[k].shape).to(mine[k].dtype) for k, t in pairs})
    return len(pairs)


def file_record(*paths: Path) -> dict[str, str]:
    """What a run records of the files it imported: name -> sha256."""
    return {str(Path(p)): io.sha256_file(Path(p)) for p in paths}


def official_rows(table: np.ndarray, official_names: list[str], wanted: list[str], source: str) -> np.ndarray:
    """The rows of a published per-perturbation table, indexed in the official loader's order `official_names`, for
    the perturbations `wanted` (by name), failing in one line if one is missing."""
    if len(official_names) != len(set(official_names)):
        raise BenchmarkError(f"{source}: the official order names a perturbation twice; cannot map rows by name")
    if len(table) != len(official_names):
        raise BenchmarkError(f"{source}: {len(table)} rows, but the official order has {len(official_names)} "
                             "perturbations")
    index = {n: i for i, n in enumerate(official_names)}
    missing = [n for n in wanted if n not in index]
    if missing:
        raise BenchmarkError(f"{source}: perturbation {missing[0]!r} of the task has no row (the checkpoint knows "
                             f"{', '.join(official_names[:5])}{', ...' if len(official_names) > 5 else ''})")
    return table[[index[n] for n in wanted]]
