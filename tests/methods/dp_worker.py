"""Fit one method on the tiny screen in this process group and save its trained weights (rank 0): run by
`torchrun` from test_data_parallel.py, or directly for one process."""

import json
import sys
from pathlib import Path

import torch

from benchmark.method import config_from_overrides
from benchmark.registry import METHODS, TASKS


def main(method: str, data_dir: str, work: str, out: str, overrides: list[str]) -> None:
    cls = METHODS.get(method)
    config = config_from_overrides(cls.Config, cls.profiles[cls.default_profile], overrides)
    torch.manual_seed(0)
    m = cls(config)
    summary = m.fit(TASKS.get("synthetic-tiny").load(Path(data_dir)).train_data(), seed=0, workdir=Path(work))
    if m.rank == 0:
        grads = {f"{k}.{n}": p.grad for k, net in m.counted().items() for n, p in net.named_parameters()
                 if p.grad is not None}  # the last step's, after averaging over processes
        torch.save({"params": {k: v.state_dict() for k, v in m.modules().items()}, "grads": grads}, out)
        Path(out).with_suffix(".json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
