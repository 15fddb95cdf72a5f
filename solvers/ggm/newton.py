"""Orthant Newton-CG for the l1 graphical lasso: the end game after ADMM.

Near the optimum the sign pattern of Omega is settled and the problem is smooth
on it: minimize f(Omega) = -log det Omega + tr(S Omega) + lam <Z, Omega> over the
free set F (the support, the diagonal, and the zeros whose gradient violates
|G_ij| <= lam when those violations dominate), with Z the fixed signs. Each step
solves the Newton system

    P_F(W D W) = -R_F,      W = Omega^-1,  R = minimum-norm subgradient,

by conjugate gradients, preconditioned with D -> P_F(Omega D Omega): the exact
inverse of the Hessian W (x) W on the full space, so CG needs a few to a few
dozen products where a diagonal preconditioner needs hundreds. Both products
cost O(|F| p) (a sparse-dense product and one sampled at F). A backtracking
line search on f projects each trial point onto the orthant of Z (entries that
cross zero become zero) and keeps Omega positive definite (Cholesky). This is
the orthant-based Newton of Oztoprak, Nocedal, Rennie & Olsen (2012) with the
preconditioner as our design choice; ADMM identifies the orthant, Newton
converges quadratically on it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from graphopt.solvers.ggm.objective import l1_residual, log_det
from graphopt.solvers.ggm.penalties import l1_penalty
from graphopt.solvers.validation import check_int_in_range, check_positive, check_square

PROGRESS_WINDOW = 5
"""A polish is abandoned when a window of this many steps does not cut the KKT residual 10x."""

OVERSHOOT = 0.01
"""Polish aims at OVERSHOOT * kkt_tol, for at most OVERSHOOT_STEPS steps past kkt_tol:
quadratic convergence makes that about one more step, and the objective error
(~ KKT^2) drops by orders of magnitude for it."""

OVERSHOOT_STEPS = 2

GROWTH = 0.1
"""At most this fraction of the support joins the free set in one step (see ``_orthant``)."""

DENSE_FILL = 0.08
"""Above this fraction of nonzeros in F, Hessian products use dense matrix products
(measured: at p = 1000 and 2000 the sparse products cost as much at 5-10% fill)."""


@dataclass
class Polish:
    """The outcome of ``l1_newton``: its answer (the last iterate within kkt_tol, else the
    last iterate) and the record of every step."""

    omega: torch.Tensor
    factor: torch.Tensor
    covariance: torch.Tensor
    kkt: float
    converged: bool
    objectives: list[float] = field(default_factory=list)
    step_norms: list[float] = field(default_factory=list)
    cg_steps: int = 0


def l1_newton(
    s: torch.Tensor,
    omega: torch.Tensor,
    lam: float,
    kkt_tol: float,
    *,
    max_start_kkt: float = math.inf,
    max_steps: int = 50,
    max_cg: int = 100,
    on_step: Callable[[float, float], None] | None = None,
) -> Polish | None:
    """Polish a sparse positive definite ``omega`` towards KKT residual ``OVERSHOOT * kkt_tol``.

    Stops early when a line search fails (rounding, near the optimum) or a window
    of ``PROGRESS_WINDOW`` steps does not cut the best KKT residual 10x;
    ``converged`` says whether the residual reached ``kkt_tol``, else the caller
    goes on with its own iteration. None (no step taken) when ``omega`` is not
    positive definite or its KKT residual exceeds ``max_start_kkt`` (too far for
    Newton: the steps would cross zero everywhere). ``on_step(objective,
    step_norm)`` is called after every step. ``s`` and ``omega``: symmetric (p, p),
    same dtype and device.
    """
    check_square(s, "s")
    if omega.shape != s.shape:
        raise ValueError(
            f"omega must have the shape of s {tuple(s.shape)}; got {tuple(omega.shape)}"
        )
    lam = check_positive(lam, "lam", allow_zero=True)
    kkt_tol = check_positive(kkt_tol, "kkt_tol")
    max_steps = check_int_in_range(max_steps, "max_steps", 0)
    max_cg = check_int_in_range(max_cg, "max_cg", 1)
    factor, info = torch.linalg.cholesky_ex(omega)
    if int(info) != 0:
        return None
    value = _objective(omega, s, lam, factor)
    best_before_window = math.inf
    best = math.inf
    past_tol = 0
    polish: Polish | None = None
    step = 0
    while True:
        covariance = torch.cholesky_inverse(factor)
        covariance = 0.5 * (covariance + covariance.T)
        residual = l1_residual(omega, s - covariance, lam)
        kkt = float(residual.norm())
        if polish is None and kkt > max_start_kkt:
            return None
        if polish is None:
            polish = Polish(omega, factor, covariance, kkt, kkt <= kkt_tol)
        elif kkt <= kkt_tol or not polish.converged:
            polish.omega, polish.factor, polish.covariance = omega, factor, covariance
            polish.kkt, polish.converged = kkt, kkt <= kkt_tol
        past_tol += polish.converged
        if kkt <= OVERSHOOT * kkt_tol or past_tol > OVERSHOOT_STEPS or step == max_steps:
            return polish
        best = min(best, kkt)
        if step % PROGRESS_WINDOW == 0:
            if best > 0.1 * best_before_window:
                return polish
            best_before_window = best
        free, signs, residual = _orthant(omega, residual)
        forcing = min(0.5, math.sqrt(kkt)) * kkt
        direction, cg = _newton_direction(free, residual, covariance, omega, forcing, max_cg)
        polish.cg_steps += cg
        slope = float((residual * direction).sum())
        trial = _line_search(s, omega, lam, value, direction, signs, slope)
        if trial is None:
            return polish
        new_omega, factor, new_value = trial
        step_norm = float((new_omega - omega).norm())
        omega, value = new_omega, new_value
        polish.objectives.append(value)
        polish.step_norms.append(step_norm)
        if on_step is not None:
            on_step(value, step_norm)
        step += 1


def _objective(omega: torch.Tensor, s: torch.Tensor, lam: float, factor: torch.Tensor) -> float:
    """f(Omega) for the l1 penalty, given Omega's Cholesky factor."""
    return -log_det(omega, factor) + float((s * omega).sum()) + float(l1_penalty(omega, lam))


def _orthant(
    omega: torch.Tensor, residual: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The free set, the orthant's signs and the residual restricted to the free set.

    Zeros that violate the optimality condition join the free set (with the sign
    that decreases f) only when their violation outweighs the residual on the
    support, and then only the largest ``GROWTH`` x |support| of them: adding
    them every step, or all of a far start's, makes most steps cross zero and
    stall while the products grow with |F|.
    """
    support = omega != 0
    support.diagonal().fill_(True)
    on_support = torch.where(support, residual, 0.0)
    violation = torch.where(support, 0.0, residual)
    if float(violation.square().sum()) <= float(on_support.square().sum()):
        return support, omega.sign(), on_support
    violating = int((violation != 0).sum())
    most = max(2, int(GROWTH * int(support.sum())))
    if violating > most:  # keep the largest (ties may add a few more; pairs stay together)
        threshold = violation.abs().flatten().kthvalue(violation.numel() - most + 1).values
        violation = torch.where(violation.abs() >= threshold, violation, 0.0)
    free = support | (violation != 0)
    signs = torch.where(support, omega.sign(), -violation.sign())
    return free, signs, on_support + violation


def _newton_direction(
    free: torch.Tensor,
    residual: torch.Tensor,
    covariance: torch.Tensor,
    omega: torch.Tensor,
    tol: float,
    max_cg: int,
) -> tuple[torch.Tensor, int]:
    """Preconditioned CG on P_F(W D W) = -R_F until ||residual|| <= ``tol`` (the caller's
    forcing term) or ``max_cg`` steps; D as a (p, p) matrix and the steps taken."""
    sandwich = _sandwich(free)
    rows, cols = free.nonzero(as_tuple=True)
    remainder = -residual[rows, cols]
    solution = torch.zeros_like(remainder)
    preconditioned = sandwich(remainder, omega)
    search = preconditioned.clone()
    product = float(remainder @ preconditioned)
    steps = 0
    while steps < max_cg:
        steps += 1
        curvature = sandwich(search, covariance)
        length = product / float(search @ curvature)
        solution += length * search
        remainder -= length * curvature
        if float(remainder.norm()) <= tol:
            break
        preconditioned = sandwich(remainder, omega)
        product, previous = float(remainder @ preconditioned), product
        search = preconditioned + (product / previous) * search
    direction = torch.zeros_like(omega)
    direction[rows, cols] = solution
    return direction, steps


def _sandwich(free: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """values on F -> P_F(A D A) for D with those values on F (row-major order).

    Sparse (O(|F| p): a CSR-dense product, then one sampled at F) below
    ``DENSE_FILL`` of the entries, two dense matrix products above, where BLAS wins.
    """
    if int(free.sum()) > DENSE_FILL * free.numel():

        def dense(values: torch.Tensor, outer: torch.Tensor) -> torch.Tensor:
            inner = torch.zeros_like(outer)
            inner[free] = values
            return (outer @ inner @ outer)[free]

        return dense
    with warnings.catch_warnings():  # torch: "Sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        pattern = free.to(torch.float64).to_sparse_csr()
    crow, col = pattern.crow_indices(), pattern.col_indices()

    def sparse(values: torch.Tensor, outer: torch.Tensor) -> torch.Tensor:
        matrix = torch.sparse_csr_tensor(crow, col, values, pattern.shape, check_invariants=False)
        return torch.sparse.sampled_addmm(pattern, outer, matrix @ outer, beta=0.0).values()

    return sparse


def _line_search(
    s: torch.Tensor,
    omega: torch.Tensor,
    lam: float,
    value: float,
    direction: torch.Tensor,
    signs: torch.Tensor,
    slope: float,
    halvings: int = 10,
) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    """Armijo backtracking on f along the orthant projection of Omega + t D."""
    step = 1.0
    for _ in range(halvings):
        moved = omega + step * direction
        trial = torch.where(moved.sign() == signs, moved, 0.0).diagonal_scatter(moved.diagonal())
        factor, info = torch.linalg.cholesky_ex(trial)
        if int(info) == 0:
            trial_value = _objective(trial, s, lam, factor)
            if trial_value <= value + 1e-4 * step * slope:
                return trial, factor, trial_value
        step *= 0.5
    return None
