"""The minimax concave penalty (MCP), a graphopt ``penalty`` plugin.

Zhang, "Nearly unbiased variable selection under minimax concave penalty",
Annals of Statistics 38(2), 2010, eq. (2.1), with the weight lam outside:

    phi(t) = t - t^2 / (2 gamma)   for 0 <= t <= gamma,     gamma / 2   beyond,

so lam phi(t) is Zhang's rho(t; lam, gamma / lam), saturating at t = gamma
whatever lam. The slope at 0 is 1 (lasso-like shrinkage of small groups), it
falls linearly to 0 at t = gamma, and groups larger than gamma are not shrunk
at all (nearly unbiased). Non-convex (``convex = False``): graphopt then skips
block-diagonal screening and acceleration, and certifies a solve by its
stationarity residual, which uses ``derivative``.

Its prox (argmin_{x >= 0} 0.5 (x - t)^2 + w phi(x)) is firm thresholding for
w < gamma (Gao & Bruce, Statistica Sinica 7, 1997) and hard thresholding at
sqrt(w gamma) for w >= gamma. The hyperparameter comes from ``penalty_options``:
``graphopt.ggm.solve(S, penalty="mcp", penalty_options={"gamma": 3.0}, lam=...)``
builds ``MCPPenalty(gamma=3.0)``.
"""

from __future__ import annotations

import torch

from graphopt.solvers.ggm.penalties import Penalty


class MCPPenalty(Penalty):
    """phi(t) = t - t^2 / (2 gamma) on [0, gamma], gamma / 2 beyond; gamma > 0."""

    name = "mcp"
    convex = False

    def __init__(self, gamma: float = 3.0) -> None:
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)):
            raise ValueError(f"penalty 'mcp': gamma must be a number; got {gamma!r}")
        if not 0 < gamma < float("inf"):
            raise ValueError(f"penalty 'mcp': gamma must be positive and finite; got {gamma!r}")
        self.gamma = float(gamma)

    def phi(self, t: torch.Tensor) -> torch.Tensor:
        return torch.where(t <= self.gamma, t - t * t / (2 * self.gamma), self.gamma / 2)

    def derivative(self, t: torch.Tensor) -> torch.Tensor:
        return (1 - t / self.gamma).clamp_min(0)

    def prox(self, t: torch.Tensor, weight: torch.Tensor | float) -> torch.Tensor:
        w = torch.as_tensor(weight, dtype=t.dtype, device=t.device)
        gamma = self.gamma
        shrink = (1 - w / gamma).clamp_min(torch.finfo(t.dtype).tiny)  # used only where w < gamma
        firm = torch.where(t >= gamma, t, (t - w).clamp_min(0) / shrink)
        hard = torch.where(t > torch.sqrt(w * gamma), t, torch.zeros_like(t))
        return torch.where(w < gamma, firm, hard)

    def __repr__(self) -> str:
        return f"MCPPenalty(gamma={self.gamma})"
