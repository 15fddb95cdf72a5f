"""Type-II Anderson acceleration of a fixed-point iteration x <- T(x).

Walker & Ni (2011): with residuals g = T(x) - x and the last m differences
dX, dG of iterates and residuals, the next iterate is

    x+ = T(x) - (dX + dG) gamma,   gamma = argmin ||g - dG gamma||_2,

solved through the m x m normal equations (Tikhonov-regularized, m is small).
Safeguarding is the caller's job (Zhang, O'Donoghue & Boyd 2020): it compares
the residual at an accelerated point with the one it extrapolated from and calls
``reset`` after a rejection or whenever the map T changes. A singular normal
system (no unique gamma) gives the plain step T(x), resets the history and counts
in ``failures``: it never raises.
"""

from __future__ import annotations

import torch


class AndersonAccelerator:
    """Extrapolates a fixed-point iteration from its last ``memory`` steps.

    The differences live in two preallocated ring buffers of ``memory`` rows and
    the Gram matrix of dG is updated one row per step: O(m n) work a step, not O(m^2 n).
    """

    def __init__(self, memory: int, regularization: float = 1e-10) -> None:
        self.memory = memory
        self.regularization = regularization
        self.failures = 0
        self.reset()

    def reset(self) -> None:
        """Forget the history (after a rejected step, or when T changes)."""
        self._x: torch.Tensor | None = None
        self._g: torch.Tensor | None = None
        self._dx: torch.Tensor | None = None  # (memory, n) ring buffers, allocated on first use
        self._dg: torch.Tensor | None = None
        self._gram: torch.Tensor | None = None
        self._count = 0
        self._slot = 0

    def step(self, x: torch.Tensor, tx: torch.Tensor) -> torch.Tensor:
        """The next iterate after evaluating ``tx = T(x)``: extrapolated once history exists."""
        flat_x = x.reshape(-1)
        g = tx.reshape(-1) - flat_x
        if self._x is not None:
            dx, dg, gram = self._buffers(flat_x)
            slot = self._slot
            torch.sub(flat_x, self._x, out=dx[slot])
            torch.sub(g, self._g, out=dg[slot])
            self._count = min(self._count + 1, self.memory)
            self._slot = (slot + 1) % self.memory
            row = dg[: self._count] @ dg[slot]
            gram[slot, : self._count] = row
            gram[: self._count, slot] = row
        self._x, self._g = flat_x, g
        if self._count == 0:
            return tx
        dx, dg, gram = self._buffers(flat_x)
        k = self._count
        normal = gram[:k, :k]
        ridge = self.regularization * normal.diagonal().sum()
        normal = normal + ridge * torch.eye(k, dtype=normal.dtype, device=normal.device)
        gamma, info = torch.linalg.solve_ex(normal, dg[:k] @ g)
        if int(info) != 0 or not bool(torch.isfinite(gamma).all()):
            # singular differences (e.g. a converged or degenerate map): the plain step
            self.failures += 1
            self.reset()
            return tx
        correction = dx[:k].T @ gamma + dg[:k].T @ gamma
        return tx - correction.reshape(tx.shape)

    def _buffers(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._dx is None or self._dg is None or self._gram is None:
            self._dx = like.new_empty((self.memory, like.numel()))
            self._dg = torch.empty_like(self._dx)
            self._gram = like.new_zeros((self.memory, self.memory))
        return self._dx, self._dg, self._gram
