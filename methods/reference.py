"""Reference methods every honest benchmark needs: the floor and the ceiling.

`identity` returns the control image unchanged: a method that learns nothing
about the perturbation. `oracle` returns real images of the target perturbation
that the evaluation did not use as reference: the score real data would get
(Table 2a's "Groundtruth" row).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmark.method import Capabilities, GenerateRequest, Method, TrainData, to_tensor


class Identity(Method):
    name = "identity"
    display_order = 0
    capabilities = Capabilities(needs_control=True, unseen_perturbations=True)

    def fit(self, data: TrainData, *, seed: int, workdir: Path) -> dict[str, Any]:
        return {}

    def generate(self, request: GenerateRequest, *, seed: int) -> torch.Tensor:
        return request.controls.clone()


class Oracle(Method):
    name = "oracle"
    display_order = 9
    capabilities = Capabilities(needs_control=False, unseen_perturbations=True, reads_heldout=True)

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.pool: Any = None  # TaskData.heldout_pool(): real held-out images, attached by the runner

    def fit(self, data: TrainData, *, seed: int, workdir: Path) -> dict[str, Any]:
        return {}

    def attach_heldout(self, pool: Any) -> None:
        self.pool = pool

    def generate(self, request: GenerateRequest, *, seed: int) -> torch.Tensor:
        if self.pool is None:
            raise RuntimeError("oracle: attach_heldout() was not called")
        return to_tensor(self.pool.draw(request.control_keys, request.perturbations, request.target_batches))
