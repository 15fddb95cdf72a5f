"""ADMM for the exact penalized problem (Boyd et al. 2011, sec. 6.5), accelerated.

    minimize -log det Omega + tr(S Omega) + P(Z)  subject to  Omega = Z

run as the fixed-point iteration v <- T(v) on v = Z + U (ADMM is Douglas-Rachford
splitting; Z and U are read off v):

    Z     <- group_prox(v, lam / rho)                (exact zeros),  U = v - Z
    Omega <- omega_step(rho (Z - U) - S, rho)        (closed form, one eigh)
    v     <- v + alpha (Omega - Z)                   (over-relaxation alpha, Boyd sec. 3.4.3)

For convex penalties the iteration is Anderson-accelerated (``anderson``) with
a safeguard: an extrapolated point whose fixed-point residual exceeds the one
it came from is dropped for the plain step and the history reset (Zhang,
O'Donoghue & Boyd 2020). rho is balanced against the residuals (Boyd sec.
3.4.1: x2 when ||r|| > 10 ||s||, /2 when ||s|| > 10 ||r||, U rescaled), at most
every ``rho_every`` iterations since each change resets the acceleration.
Stopping: the primal/dual residuals below tol (absolute x p plus relative;
sqrt(tol) for convex penalties) AND, for convex penalties, the relative duality
gap at Z (``duality``) below tol -- the residual test alone stops early at points
whose objective is off in the 6th digit -- and its relative stationarity residual
below ``kkt_tol``: the gap bounds f, not Omega (a gap of 1e-8 |f| can leave Omega
1e-4 off, measured), and ADMM has no Newton step past the certificate to fix that.
(A convex penalty without a conjugate is certified by the stationarity alone.) The
certificate (two Cholesky factorizations and an inverse) is checked when the
residual test first passes and then after as many iterations as the residuals'
linear rate predicts it needs (1 to ``kkt_every``). For p < 1 ADMM is a
well-behaved heuristic: check its objective and stationarity.

Far from the optimum the Omega-step runs in float32 (``mixed_precision``; on
float64 input): its eigendecomposition is about twice as fast, and its error,
~1e-7 relative, is noise far below the residuals there (inexact ADMM converges
when the step errors are small against the residuals: Eckstein & Bertsekas
1992). Once the primal residual falls below ``FLOAT32_MARGIN`` times float32's
rounding error at the problem's scale, every step is float64.

For the l1 and group lasso (phi(t) = t), once the sign pattern of Z has settled
(at most ``newton_switch`` of its nonzeros change sign in an iteration) and Z is
positive definite with relative stationarity <= 0.1, ADMM hands Z to the
orthant Newton-CG polish (``newton``), which converges quadratically where ADMM
converges linearly, slowly on ill-conditioned problems. A polish that stalls is
dropped and ADMM goes on from its own state, trying again after a quarter as
many iterations as it has run (at least 10), twice that after a second
failure, and so on.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from graphopt.solvers.ggm.anderson import AndersonAccelerator
from graphopt.solvers.ggm.duality import duality_gap, relative_gap
from graphopt.solvers.ggm.groups import GroupStructure
from graphopt.solvers.ggm.newton import Polish, proximal_newton
from graphopt.solvers.ggm.objective import kkt_residual, objective, stationarity, symmetrized
from graphopt.solvers.ggm.omega_step import omega_step
from graphopt.solvers.ggm.penalties import (
    Penalty,
    group_prox,
    has_conjugate,
    has_derivative,
    lasso_slope,
    penalty_value,
)
from graphopt.solvers.ggm.result import GGMResult, warn_not_converged
from graphopt.solvers.validation import check_int_in_range

Progress = Callable[[int, dict[str, float]], None]

Certificate = tuple[torch.Tensor, torch.Tensor, float, float, float | None]
"""Z's Cholesky factor, Z^-1, f(Z), the duality gap (nan without a conjugate) and the
KKT residual (None for a penalty without a derivative)."""

FLOAT32_MARGIN = 100.0
"""float32 Omega-steps run while the primal residual exceeds FLOAT32_MARGIN * eps32 *
(p + ||Omega||_F). Measured on the benchmark anchor at p = 1000, ADMM on float32 steps
alone stalls near 2.4 eps32 (p + ||Omega||_F) (primal residual 3e-4), so at the switch
their error is ~40x below the residual."""


def admm(
    s: torch.Tensor,
    structure: GroupStructure,
    penalty: Penalty,
    lam: float,
    *,
    omega0: torch.Tensor | None = None,
    tol: float = 1e-8,
    max_iter: int = 2000,
    rho: float = 1.0,
    adaptive_rho: bool = True,
    rho_every: int = 20,
    relaxation: float | None = None,
    anderson: int | None = None,
    kkt_tol: float | None = None,
    kkt_every: int = 5,
    newton_switch: float = 0.005,
    mixed_precision: bool = True,
    progress: Progress | None = None,
    warn: bool = True,
) -> GGMResult:
    """Solve the penalized problem on tensors (float64, any device); see module doc.

    The defaults assume S on unit scale (``solve`` passes S with unit mean variance).
    ``omega0`` warm-starts Z = omega0 with the dual U = (omega0^-1 - S) / rho that
    makes omega0 a fixed point of the Omega-step. ``relaxation`` in [1, 2)
    defaults to 1.8 (the top of Boyd's range 1.5-1.8; fewest iterations on the
    benchmark) for convex penalties, 1 otherwise. ``anderson`` is the
    acceleration memory (0 turns it off); default 5 for convex penalties, 0
    otherwise. ``kkt_tol``: the relative stationarity target of convex penalties
    (default ``0.1 sqrt(tol)``; with a conjugate, the duality gap must hold too).
    ``newton_switch``: the fraction of sign changes below which the Newton polish is
    tried (0 turns it off). ``mixed_precision``: float32 Omega-steps far from the
    optimum (float64 input only; see module doc).
    """
    p = s.shape[0]
    if omega0 is None:
        z = torch.diag(1.0 / s.diagonal())
        covariance0 = torch.diag(s.diagonal())
    else:
        z = symmetrized(omega0)
        covariance0 = symmetrized(torch.cholesky_inverse(torch.linalg.cholesky(z)))
    v = z + (covariance0 - s) / rho
    convex = penalty.convex
    if relaxation is None:
        relaxation = 1.8 if convex else 1.0
    if anderson is None:
        anderson = 5 if convex else 0
    anderson = check_int_in_range(anderson, "anderson", 0)
    if not 0.0 <= newton_switch <= 1.0:
        raise ValueError(f"newton_switch must be a fraction in [0, 1]; got {newton_switch!r}")
    if not isinstance(mixed_precision, bool):
        raise ValueError(f"mixed_precision must be True or False; got {mixed_precision!r}")
    low_precision = mixed_precision and s.dtype == torch.float64
    float32_floor = FLOAT32_MARGIN * torch.finfo(torch.float32).eps
    float32_steps = 0
    accelerator = AndersonAccelerator(anderson) if anderson > 0 else None
    certify = has_conjugate(penalty)
    # convex: the residual test only gates the certificate, which decides
    residual_tol = math.sqrt(tol) if convex else tol
    kkt_target = 0.1 * math.sqrt(tol) if kkt_tol is None else kkt_tol
    target = tol if certify else kkt_target
    history: dict[str, list[float]] = {
        "objective": [],
        "primal_residual": [],
        "dual_residual": [],
        "rho": [],
    }
    converged = False
    accuracy = math.inf  # relative gap (or stationarity) at the last check
    checked: Certificate | None = None  # at the stop: Z's factor, Z^-1, f, gap, KKT
    primal = dual = math.inf
    next_check = 0
    last_rho_change = 0
    fallback: torch.Tensor | None = None  # T(v) of the point an extrapolation came from
    reference = math.inf  # its fixed-point residual
    rejected = 0
    slope = lasso_slope(penalty)
    use_newton = newton_switch > 0 and slope is not None and certify
    polish: Polish | None = None
    polish_steps = 0
    next_polish = 0
    failed_polishes = 0

    def record(value: float, primal: float, dual: float) -> None:
        history["objective"].append(value)
        history["primal_residual"].append(primal)
        history["dual_residual"].append(dual)
        history["rho"].append(rho)
        if progress is not None:
            progress(
                len(history["objective"]), {"objective": value, "primal": primal, "dual": dual}
            )

    def record_newton(value: float, step_norm: float, _omega: torch.Tensor) -> None:
        # a Newton iterate is its own Z: primal residual 0, dual as ADMM's rho ||Z - Z_old||
        record(value, 0.0, rho * step_norm)

    iteration = 0
    for iteration in range(1, max_iter + 1):
        z_old = z
        z = group_prox(v, structure, penalty, lam / rho)
        if use_newton and iteration >= next_polish:
            changes = int((z.sign() != z_old.sign()).sum())
            if changes <= newton_switch * int((z != 0).sum()):
                polish = proximal_newton(
                    s,
                    z,
                    structure,
                    lam * slope,
                    tol,
                    max_start_stationarity=0.1,
                    on_step=record_newton,
                )
                if polish is not None:  # None: Z not definite or too far, try again next time
                    polish_steps += len(polish.objectives)
                    if polish.converged:
                        converged = True
                        break
                    failed_polishes += 1
                    next_polish = iteration + max(10, iteration // 4) * 2 ** (failed_polishes - 1)
        u = v - z
        step = omega_step(rho * (z - u) - s, rho, torch.float32 if low_precision else None)
        omega = step.omega
        target_v = v + relaxation * (omega - z)
        primal = float((omega - z).norm())
        residual_scale = p + max(float(omega.norm()), float(z.norm()))
        float32_steps += low_precision
        low_precision = low_precision and primal > float32_floor * residual_scale
        dual = rho * float((z - z_old).norm())
        value = (
            -float(step.eigenvalues.log().sum())
            + float((s * omega).sum())
            + float(penalty_value(omega, structure, penalty, lam))
        )
        record(value, primal, dual)
        if fallback is not None and relaxation * primal > reference:
            # safeguard: the extrapolated point is worse than the one it came from
            v, fallback, reference = fallback, None, math.inf
            accelerator.reset()
            rejected += 1
            continue
        eps_primal = residual_tol * residual_scale
        eps_dual = residual_tol * (p + rho * float(u.norm()))
        if primal <= eps_primal and dual <= eps_dual:
            if not convex:
                converged = True
                break
            if iteration >= next_check:
                accuracy, found = _certificate(
                    z, s, structure, penalty, lam, certify, tol / kkt_target
                )
                if accuracy <= target:
                    converged, checked = True, found
                    break
                next_check = iteration + _iterations_until(
                    math.sqrt(accuracy), math.sqrt(target), history["primal_residual"], kkt_every
                )
        if adaptive_rho and iteration - last_rho_change >= rho_every:
            scale = 2.0 if primal > 10.0 * dual else 0.5 if dual > 10.0 * primal else 1.0
            if scale != 1.0:
                # the same ADMM state (Z, U) with U rescaled by rho_old / rho_new
                z_next = group_prox(target_v, structure, penalty, lam / rho)
                rho, last_rho_change = rho * scale, iteration
                v = z_next + (target_v - z_next) / scale
                fallback = None
                if accelerator is not None:
                    accelerator.reset()
                continue
        if accelerator is None:
            v = target_v
        else:
            fallback, reference = target_v, relaxation * primal
            v = symmetrized(accelerator.step(v, target_v))  # its products round per entry
    gap: float | None = None
    if polish is not None and polish.converged:
        precision, factor, covariance = polish.omega, polish.factor, polish.covariance
        value, result_kkt, gap = polish.objective, polish.kkt, polish.gap
    elif checked is not None:  # stopped on the certificate at Z: its factorization is at hand
        precision, (factor, covariance, value, found_gap, result_kkt) = z, checked
        gap = found_gap if certify else None
    else:
        # converged: Z; stopped early: the positive definite iterate with the lowest objective
        candidates = [z] if converged else [z, omega]
        if not converged and polish is not None:
            candidates.append(polish.omega)
        scored = []
        for candidate in candidates:
            factor, info = torch.linalg.cholesky_ex(candidate)
            if int(info) == 0:
                value = objective(candidate, s, structure, penalty, lam, factor)
                scored.append((value, candidate, factor))
        if not scored:  # Z not definite at a non-convex stop: answer with the Omega iterate
            factor = torch.linalg.cholesky(omega)
            scored.append((objective(omega, s, structure, penalty, lam, factor), omega, factor))
        value, precision, factor = min(scored, key=lambda scored_iterate: scored_iterate[0])
        covariance = torch.cholesky_inverse(factor)
        covariance = symmetrized(covariance)
        result_kkt = (
            kkt_residual(precision, s, structure, penalty, lam, covariance)
            if has_derivative(penalty)
            else None
        )
        if certify:
            gap = duality_gap(
                precision, s, structure, penalty, lam, covariance=covariance, factor=factor
            )
    if not converged and warn:
        warn_not_converged(
            "admm", max_iter, f"primal {primal:.2e}, dual {dual:.2e}, accuracy {accuracy:.2e}"
        )
    return GGMResult(
        precision=precision,
        covariance=covariance,
        objective=value,
        n_iter=len(history["objective"]),
        converged=converged,
        history=history,
        kkt_residual=result_kkt,
        sparse_precision=precision if polish is not None and polish.converged else z,
        info={
            "rho": rho,
            "rejected_accelerations": rejected,
            "failed_accelerations": accelerator.failures if accelerator is not None else 0,
            "newton_steps": polish_steps,
            "failed_polishes": failed_polishes,
            "float32_steps": float32_steps,
        },
        duality_gap=gap,
        stationarity=None if result_kkt is None else stationarity(result_kkt, s),
    )


def _iterations_until(value: float, target: float, residuals: list[float], most: int) -> int:
    """Iterations until ``value`` reaches ``target`` at the linear rate of the last (up to 5)
    residuals (ADMM's residuals and KKT residual shrink at one rate): 1 to ``most``."""
    window = min(5, len(residuals) - 1)
    if window < 1 or math.isinf(value) or not 0 < residuals[-1] < residuals[-1 - window]:
        return most
    log_rate = math.log(residuals[-1] / residuals[-1 - window]) / window
    return min(most, max(1, math.ceil(math.log(target / value) / log_rate)))


def _certificate(
    z: torch.Tensor,
    s: torch.Tensor,
    structure: GroupStructure,
    penalty: Penalty,
    lam: float,
    certify: bool,
    kkt_weight: float,
) -> tuple[float, Certificate | None]:
    """The accuracy at Z and its ``Certificate`` (the stop reuses it): ``certify``: the
    larger of the relative duality gap and ``kkt_weight`` x the relative stationarity
    (both must hold: module doc; the gap alone for a penalty without a derivative);
    else the relative stationarity. inf (and no certificate) when Z is not positive
    definite."""
    factor, info = torch.linalg.cholesky_ex(z)
    if int(info) != 0:
        return math.inf, None
    covariance = torch.cholesky_inverse(factor)
    covariance = symmetrized(covariance)
    value = objective(z, s, structure, penalty, lam, factor)
    kkt = (
        kkt_residual(z, s, structure, penalty, lam, covariance)
        if has_derivative(penalty) or not certify
        else None
    )
    relative_kkt = 0.0 if kkt is None else stationarity(kkt, s)
    if not certify:
        return relative_kkt, (factor, covariance, value, math.nan, kkt)
    gap = duality_gap(z, s, structure, penalty, lam, covariance=covariance, factor=factor)
    accuracy = max(relative_gap(gap, value), kkt_weight * relative_kkt)
    return accuracy, (factor, covariance, value, gap, kkt)
