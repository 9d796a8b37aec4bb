"""Reference methods every honest benchmark needs: the floor and the ceiling.

`identity` returns the control image unchanged: a method that learns nothing
about the perturbation. `oracle` returns real images of the target perturbation
that the evaluation did not use as reference: the score real data would get
(Table 2a's "Groundtruth" row).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
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


class HeldoutPool:
    """Real held-out target images for the oracle.

    On a simulated screen it returns each control cell's true counterfactual
    (the same cell, perturbed): a disjoint real image of the same distribution.
    Elsewhere it draws, without replacement where possible, from held-out
    targets of the same perturbation and batch that are not in the reference.
    """

    def __init__(self, data: Any, pool_rows: np.ndarray, seed: int) -> None:
        self.data = data
        rng = np.random.default_rng(seed)
        obs = data.obs.iloc[pool_rows]
        self.rows = {key: rng.permutation(group.index) for key, group in obs.groupby(["CPD_NAME", "BATCH"])}
        self.by_pert = {key: rng.permutation(group.index) for key, group in obs.groupby("CPD_NAME")}
        self.cursor: dict[Any, int] = {}

    def _next(self, key: Any, pool: np.ndarray) -> int:
        """Cycle through a shuffled pool: no repeats until it is exhausted."""
        i = self.cursor.get(key, 0)
        self.cursor[key] = i + 1
        return int(pool[i % len(pool)])

    def draw(self, request: GenerateRequest, seed: int) -> torch.Tensor:
        cf = self.data.counterfactual(request.control_keys, request.perturbations)
        if cf is not None:
            return to_tensor(np.asarray(cf))
        picks = []
        for pert, batch in zip(request.perturbations, request.target_batches):
            key, pool = (pert, batch), self.rows.get((pert, batch))
            if pool is None or len(pool) == 0:
                key, pool = pert, self.by_pert.get(pert)
            if pool is None or len(pool) == 0:
                raise LookupError(f"no held-out image of {pert!r} for the oracle")
            picks.append(self._next(key, pool))
        return to_tensor(self.data.images[np.asarray(picks)])


class Oracle(Method):
    name = "oracle"
    display_order = 9
    capabilities = Capabilities(needs_control=False, unseen_perturbations=True, reads_heldout=True)

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.pool: HeldoutPool | None = None

    def fit(self, data: TrainData, *, seed: int, workdir: Path) -> dict[str, Any]:
        return {}

    def attach_heldout(self, pool: HeldoutPool) -> None:
        self.pool = pool

    def generate(self, request: GenerateRequest, *, seed: int) -> torch.Tensor:
        if self.pool is None:
            raise RuntimeError("oracle: attach_heldout() was not called")
        return self.pool.draw(request, seed)
