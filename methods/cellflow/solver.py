"""Integrating the learned velocity field with torchdiffeq, with classifier-free guidance."""

from __future__ import annotations

import torch
from torch import nn
from torchdiffeq import odeint

# evaluations of the field per step of each fixed-grid method; edm_heun: heun2 on the EDM grid (official sampler)
EVALS_PER_STEP = {"euler": 1, "midpoint": 2, "heun2": 2, "heun3": 3, "rk4": 4, "edm_heun": 2}
TORCHDIFFEQ_METHOD = {"edm_heun": "heun2"}


def edm_grid(steps: int, rho: float = 7.0, sigma_min: float = 0.002, sigma_max: float = 80.0) -> torch.Tensor:
    """The noise levels of Karras et al. (2022) as flow times t = 1 - sigma / (1 + sigma): `steps` + 1 points from
    1 - 80/81 (about 0.0123) to 1, dense near t = 1; the grid the official CellFlux sampler steps on."""
    if steps < 2:
        raise ValueError("the EDM grid needs at least 2 steps (nfe >= 4 with edm_heun)")
    i = torch.arange(steps, dtype=torch.float64)
    sigma = (sigma_max ** (1 / rho) + i / (steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    sigma = torch.cat([sigma, sigma.new_zeros(1)])
    return (1 - sigma / (1 + sigma)).float()


class GuidedField(nn.Module):
    """v = alpha v(x, t, c) + (1 - alpha) v(x, t, null); alpha = 1 is plain conditional."""

    def __init__(self, model: nn.Module, emb: torch.Tensor, alpha: float, conditional: bool = True) -> None:
        super().__init__()
        self.model, self.emb, self.alpha, self.conditional = model, emb, alpha, conditional
        self.nfe = 0

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        tt = t.expand(x.shape[0]).to(x)
        n = x.shape[0]
        # outputs back in the state's dtype: under bf16 autocast the guidance mix and the ODE state stay float32
        if not self.conditional:
            return self.model(x, tt, self.emb, torch.ones(n, dtype=torch.bool, device=x.device)).to(x.dtype)
        if self.alpha == 1.0:
            return self.model(x, tt, self.emb, torch.zeros(n, dtype=torch.bool, device=x.device)).to(x.dtype)
        # conditional and null passes in one batch
        drop = torch.cat([torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)]).to(x.device)
        v = self.model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([self.emb, self.emb]), drop).to(x.dtype)
        vc, vu = v[:n], v[n:]
        return self.alpha * vc + (1 - self.alpha) * vu


def time_grid(nfe: int, method: str, reverse: bool = False, frames: tuple[float, ...] = ()) -> torch.Tensor:
    if method == "edm_heun":
        grid = edm_grid(max(2, nfe // 2))
    elif method in EVALS_PER_STEP:
        steps = max(1, nfe // EVALS_PER_STEP[method])
        grid = torch.linspace(0.0, 1.0, steps + 1)
    else:  # adaptive solvers: only the output times matter
        grid = torch.tensor([0.0, 1.0])
    if frames:
        grid = torch.unique(torch.cat([grid, torch.tensor(frames, dtype=grid.dtype)]))
    return grid.flip(0) if reverse else grid


@torch.no_grad()
def integrate(field: GuidedField, x: torch.Tensor, method: str = "euler", nfe: int = 20, reverse: bool = False,
              frames: tuple[float, ...] = (), rtol: float = 1e-5, atol: float = 1e-5) -> tuple[torch.Tensor, dict[float, torch.Tensor]]:
    """Solve from t=0 to 1 (or 1 to 0 when `reverse`); also return the states at `frames`."""
    grid = time_grid(nfe, method, reverse, frames).to(x.device)
    kwargs = {} if method in EVALS_PER_STEP else {"rtol": rtol, "atol": atol}
    states = odeint(field, x, grid, method=TORCHDIFFEQ_METHOD.get(method, method), **kwargs)
    at = {round(float(t), 6): states[i] for i, t in enumerate(grid)}
    return states[-1], {f: at[round(float(f), 6)] for f in frames}
