"""Proximal gradient descent (G-ISTA) for the penalized GGM, a graphopt ``ggm_solver`` plugin.

Guillot, Rajaratnam, Rolfs, Maleki & Wong, "Iterative thresholding algorithm
for sparse inverse covariance estimation", NeurIPS 2012: with the smooth part
g(Omega) = -log det Omega + tr(S Omega), gradient S - Omega^-1, one step is

    Omega+ = prox_{t P}(Omega - t (S - Omega^-1))       (``group_prox``, weight t lam)

with a Barzilai-Borwein first guess of the step t, halved until Omega+ is
positive definite (a Cholesky) and g decreases at least as its quadratic
model promises (Beck & Teboulle, SIAM J. Imaging Sci. 2(1), 2009, backtracking).
The prox keeps exact zeros and works for any penalty with a ``prox``.

Stopping is a certificate, not a counter: the gradient mapping
G_t = (Omega - Omega+) / t is zero exactly at a stationary point, and the solve
stops when ||G_t||_F <= tol max(1, ||S||_F). A solve that reaches ``max_iter``
says ``converged=False`` and warns (unless ``warn=False``, which
``graphopt.ggm.solve`` passes when it solves screened blocks one by one).

The contract of a ggm_solver (docs/plugins/ggm_solver.md): called as
``solver(S, structure, penalty, lam, *, omega0, progress, warn, **options)`` on a
float64 torch S (on the device the solve runs on), it returns a ``GGMResult``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch

from graphopt.solvers.ggm import GGMConvergenceWarning, GGMResult, GroupStructure
from graphopt.solvers.ggm.objective import kkt_residual, objective
from graphopt.solvers.ggm.penalties import Penalty, group_prox


def proximal_gradient(
    s: torch.Tensor,
    structure: GroupStructure,
    penalty: Penalty,
    lam: float,
    *,
    omega0: torch.Tensor | None = None,
    tol: float = 1e-7,
    max_iter: int = 5000,
    progress: Callable[[int, dict[str, float]], None] | None = None,
    warn: bool = True,
) -> GGMResult:
    """Minimize -log det Omega + tr(S Omega) + P(Omega) by G-ISTA (module docstring)."""
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer; got {max_iter!r}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0; got {tol!r}")
    omega = torch.diag(1.0 / s.diagonal()) if omega0 is None else omega0.clone()
    covariance = torch.cholesky_inverse(torch.linalg.cholesky(omega))
    smooth = _smooth(omega, s)
    target = tol * max(1.0, float(s.norm()))
    step, mapping = 1.0, math.inf
    history: dict[str, list[float]] = {"objective": [], "gradient_mapping": []}
    previous: tuple[torch.Tensor, torch.Tensor] | None = None
    iteration = 0
    while iteration < max_iter and mapping > target:
        iteration += 1
        gradient = s - covariance
        if previous is not None:  # Barzilai-Borwein: t = <dOmega, dOmega> / <dOmega, dGrad>
            d_omega, d_grad = omega - previous[0], gradient - previous[1]
            curvature = float((d_omega * d_grad).sum())
            if curvature > 0:
                step = float((d_omega * d_omega).sum()) / curvature
        while True:
            candidate = group_prox(omega - step * gradient, structure, penalty, step * lam)
            factor, info = torch.linalg.cholesky_ex(candidate)
            if int(info) == 0:
                new_smooth = _smooth(candidate, s, factor)
                change = candidate - omega
                model = (
                    smooth
                    + float((gradient * change).sum())
                    + float(change.square().sum()) / (2 * step)
                )
                if new_smooth <= model + 1e-12 * max(1.0, abs(model)):
                    break
            step /= 2
            if step < 1e-20:
                raise RuntimeError(
                    "proximal_gradient: the step vanished (S is not positive semidefinite?)"
                )
        previous = (omega, gradient)
        mapping = float(change.norm()) / step
        omega, smooth = candidate, new_smooth
        covariance = torch.cholesky_inverse(factor)
        value = objective(omega, s, structure, penalty, lam, factor)
        history["objective"].append(value)
        history["gradient_mapping"].append(mapping)
        if progress is not None:
            progress(iteration, {"objective": value, "gradient_mapping": mapping})
    converged = mapping <= target
    if not converged and warn:
        warnings.warn(
            f"GGM solver 'proximal_gradient' did not converge in max_iter={max_iter} iterations "
            f"(gradient mapping {mapping:.3g} > {target:.3g}); result.converged is False",
            GGMConvergenceWarning,
            stacklevel=2,
        )
    kkt = kkt_residual(omega, s, structure, penalty, lam, covariance) if penalty.convex else None
    info: dict[str, Any] = {"gradient_mapping": mapping, "step": step}
    return GGMResult(
        precision=omega,
        covariance=covariance,
        objective=objective(omega, s, structure, penalty, lam),
        n_iter=iteration,
        converged=converged,
        history=history,
        kkt_residual=kkt,
        sparse_precision=omega,
        info=info,
    )


def _smooth(omega: torch.Tensor, s: torch.Tensor, factor: torch.Tensor | None = None) -> float:
    """g(Omega) = -log det Omega + tr(S Omega), from Omega's Cholesky factor."""
    if factor is None:
        factor = torch.linalg.cholesky(omega)
    return -2.0 * float(factor.diagonal().log().sum()) + float((s * omega).sum())
