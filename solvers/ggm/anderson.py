"""Type-II Anderson acceleration of a fixed-point iteration x <- T(x).

Walker & Ni (2011): with residuals g = T(x) - x and the last m differences
dX, dG of iterates and residuals, the next iterate is

    x+ = T(x) - (dX + dG) gamma,   gamma = argmin ||g - dG gamma||_2,

solved through the m x m normal equations (Tikhonov-regularized, m is small).
Safeguarding is the caller's job (Zhang, O'Donoghue & Boyd 2020): it compares
the residual at an accelerated point with the one it extrapolated from and calls
``reset`` after a rejection or whenever the map T changes.
"""

from __future__ import annotations

import torch


class AndersonAccelerator:
    """Extrapolates a fixed-point iteration from its last ``memory`` steps."""

    def __init__(self, memory: int, regularization: float = 1e-10) -> None:
        self.memory = memory
        self.regularization = regularization
        self.reset()

    def reset(self) -> None:
        """Forget the history (after a rejected step, or when T changes)."""
        self._x: torch.Tensor | None = None
        self._g: torch.Tensor | None = None
        self._dx: list[torch.Tensor] = []
        self._dg: list[torch.Tensor] = []

    def step(self, x: torch.Tensor, tx: torch.Tensor) -> torch.Tensor:
        """The next iterate after evaluating ``tx = T(x)``: extrapolated once history exists."""
        g = tx - x
        if self._x is not None:
            self._dx.append(x - self._x)
            self._dg.append(g - self._g)
            if len(self._dx) > self.memory:
                self._dx.pop(0)
                self._dg.pop(0)
        self._x, self._g = x, g
        if not self._dg:
            return tx
        dg = torch.stack([d.reshape(-1) for d in self._dg], dim=1)
        gram = dg.T @ dg
        eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        gram = gram + self.regularization * gram.diagonal().sum() * eye
        gamma = torch.linalg.solve(gram, dg.T @ g.reshape(-1))
        extrapolated = tx.clone()
        for c, dx, dg_i in zip(gamma, self._dx, self._dg, strict=True):
            extrapolated -= c * (dx + dg_i)
        return extrapolated
