"""What a configuration costs before it runs: the resolved config, each network's parameters and FLOPs.

A user about to spend GPU hours on a profile checks it here first: the networks are built for the task's declared
shape (channels, image size, embedding width, perturbation count; no data needed), counted, and run once on an
example of batch 1 under torch's FlopCounterMode.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmark.errors import BenchmarkError
from benchmark.registry import TASKS
from benchmark.runner import resolve_method


def describe(method: str, task: str, profile: str | None = None, overrides: list[str] | None = None,
             n_perturbations: int | None = None) -> dict[str, Any]:
    t = TASKS.get(task)
    cls, config = resolve_method(method, profile, overrides or [])
    n_pert = t.n_train_perturbations if n_perturbations is None else n_perturbations
    if cls.Config is not None and (t.embedding_dim <= 0 or n_pert <= 0):
        raise BenchmarkError(f"task {t.name} declares no embedding width or perturbation count; pass --perturbations "
                             "and use a task that declares its shape")
    nets = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        built = cls(config).networks(len(t.channels), t.image_size, t.embedding_dim, n_pert)
    for name, (module, example) in built.items():
        module.eval()
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            module(*example)
        nets[name] = {"parameters": sum(p.numel() for p in module.parameters()),
                      "gflop_per_forward": round(counter.get_total_flops() / 1e9, 3),
                      "input": [list(x.shape) for x in example]}
    return {"method": cls.name, "profile": profile or cls.default_profile,
            "task": {"name": t.name, "channels": list(t.channels), "image_size": t.image_size,
                     "embedding_dim": t.embedding_dim, "train_perturbations": n_pert},
            "config": dataclasses.asdict(config) if config is not None else {},
            "networks": nets,
            "note": "FLOPs of one forward pass of one image (batch 1), torch FlopCounterMode; a multiply-add is 2 FLOPs"}
