"""The result of a GGM solve and the warning a non-converged solve raises."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any


class GGMConvergenceWarning(UserWarning):
    """A GGM solver stopped at max_iter before its stopping criterion held."""


@dataclass
class GGMResult:
    """What every GGM solver returns (numpy arrays for numpy callers, tensors otherwise).

    Attributes:
        precision: the estimate of Omega (p, p); for BCD the smooth iterate Omega; for
            ADMM the sparse iterate Z (or its Newton polish) at convergence, and when
            stopped early the positive definite iterate (Z, Omega, or the last Newton
            polish's) with the lowest objective.
        covariance: precision^-1.
        objective: f(precision) = -log det + tr(S .) + P(.); for BCD the coupled
            objective F(Omega, Delta) it minimizes.
        n_iter: iterations run (the largest over screened blocks); for ADMM on the l1
            problem these include the Newton steps of its polish.
        converged: whether the stopping criterion held.
        history: per-iteration lists "objective", "primal_residual", "dual_residual"
            (and "rho" for ADMM) of the largest block; a Newton step of ADMM's l1 polish
            has primal residual 0 (its iterate is its own Z).
        kkt_residual: ||minimum-norm subgradient||_F at precision for convex
            penalties (0 at the optimum); None for non-convex ones.
        sparse_precision: the exactly sparse iterate (ADMM's Z, BCD's Delta).
        info: solver, penalty, lam, screening blocks, timings, and the solver's counters
            (e.g. ``newton_steps``, ``float32_steps``; summed over screened bins).
        duality_gap: f(precision) - D(U) for a dual feasible U (``duality``): an upper
            bound on f(precision) - f*, for convex penalties with a conjugate (else None).
            Scale-free; converged means it is <= tol max(1, |f~|), f~ the objective on
            the unit-mean-variance scale the solvers see (each screened block on its own).
        stationarity: the relative stationarity residual kkt_residual / ||S||_F
            (scale-free); for non-convex penalties the certificate of a solve.
    """

    precision: Any
    covariance: Any
    objective: float
    n_iter: int
    converged: bool
    history: dict[str, list[float]] = field(default_factory=dict)
    kkt_residual: float | None = None
    sparse_precision: Any = None
    info: dict[str, Any] = field(default_factory=dict)
    duality_gap: float | None = None
    stationarity: float | None = None


def warn_not_converged(solver: str, max_iter: int, detail: str) -> None:
    """Warn that ``solver`` hit ``max_iter`` (the result says converged=False)."""
    warnings.warn(
        f"GGM solver {solver!r} did not converge in max_iter={max_iter} iterations ({detail}); "
        "result.converged is False: raise max_iter or loosen tol",
        GGMConvergenceWarning,
        stacklevel=3,
    )
