"""The penalized Gaussian negative log-likelihood and its stationarity (KKT) residual.

f(Omega) = -log det Omega + tr(S Omega) + P(Omega),
P(Omega) = 2 sum_g lam w_g phi(||Omega_g||_2)  (see ``groups``).
"""

from __future__ import annotations

import math

import torch

from graphopt.solvers.ggm.groups import GroupStructure, _device_indices, group_norms
from graphopt.solvers.ggm.penalties import L1Penalty, Penalty, penalty_value


def log_det(omega: torch.Tensor, factor: torch.Tensor | None = None) -> float:
    """log det Omega via Cholesky; -inf (never NaN) when Omega is not positive definite.

    ``factor``: Omega's Cholesky factor, when the caller already has it.
    """
    if factor is None:
        factor, info = torch.linalg.cholesky_ex(omega)
        if int(info) != 0:
            return -math.inf
    return float(2.0 * factor.diagonal().log().sum())


def objective(
    omega: torch.Tensor,
    s: torch.Tensor,
    structure: GroupStructure,
    penalty: Penalty,
    lam: float,
    factor: torch.Tensor | None = None,
) -> float:
    """f(Omega); +inf when Omega is not positive definite (``factor`` as in ``log_det``)."""
    logdet = log_det(omega, factor)
    if logdet == -math.inf:
        return math.inf
    return -logdet + float((s * omega).sum()) + float(penalty_value(omega, structure, penalty, lam))


def kkt_residual(
    omega: torch.Tensor,
    s: torch.Tensor,
    structure: GroupStructure,
    penalty: Penalty,
    lam: float,
    covariance: torch.Tensor | None = None,
) -> float:
    """||R||_F of the minimum-norm element R of the subdifferential of f at Omega.

    For a convex phi with derivative phi' and G = S - Omega^-1: R = G on the
    diagonal and on ungrouped entries; for a group with Omega_g != 0,
    R_g = G_g + lam w_g phi'(||Omega_g||) Omega_g / ||Omega_g||; for a zero group,
    ||R_g|| = max(||G_g|| - lam w_g phi'(0), 0). Counted over both triangles; zero
    exactly at the optimum of the convex problem.
    """
    if covariance is None:
        covariance = torch.cholesky_inverse(torch.linalg.cholesky(omega))
    g = s - covariance
    if structure.singleton and type(penalty) is L1Penalty:
        return float(l1_residual(omega, g, lam).norm())
    rows, cols, index = _device_indices(structure, omega.device)
    weights = lam * torch.as_tensor(structure.weights, dtype=omega.dtype, device=omega.device)
    norms = group_norms(omega, structure)
    slope = weights * penalty.derivative(norms)
    g_values = g[rows, cols]
    g_norms = torch.zeros_like(norms).index_add_(0, index, g_values.square()).sqrt()
    direction = omega[rows, cols] / norms.clamp_min(torch.finfo(omega.dtype).tiny)[index]
    active_values = g_values + slope[index] * direction
    active_sq = torch.zeros_like(norms).index_add_(0, index, active_values.square())
    group_sq = torch.where(norms > 0, active_sq, (g_norms - slope).clamp_min(0).square())
    free = g.square()
    free[rows, cols] = 0.0
    free[cols, rows] = 0.0
    return math.sqrt(float(free.sum()) + 2.0 * float(group_sq.sum()))


def l1_residual(omega: torch.Tensor, gradient: torch.Tensor, lam: float) -> torch.Tensor:
    """The minimum-norm subgradient R (p, p) of the l1 graphical lasso at Omega, given the
    smooth part's gradient S - Omega^-1: ``kkt_residual``'s R for singleton groups."""
    nonzero = omega != 0
    r = torch.where(
        nonzero,
        gradient + lam * omega.sign(),
        gradient.sign() * (gradient.abs() - lam).clamp_min(0),
    )
    return r.diagonal_scatter(gradient.diagonal())
