"""The penalized Gaussian negative log-likelihood and its stationarity (KKT) residual.

f(Omega) = -log det Omega + tr(S Omega) + P(Omega),
P(Omega) = 2 sum_g lam w_g phi(||Omega_g||_2)  (see ``groups``).
"""

from __future__ import annotations

import math

import torch

from graphopt.solvers.ggm.groups import GroupStructure, _device_indices, group_norms, set_grouped
from graphopt.solvers.ggm.penalties import L1Penalty, Penalty, penalty_value


def symmetrized(a: torch.Tensor) -> torch.Tensor:
    """(A + A^T) / 2, symmetric to the last bit (floating-point addition commutes).

    Every iterate goes through it: a matrix symmetric only to rounding can be zero on one
    side of the diagonal and not the other, and a free set or a Cholesky factorization
    (which reads one triangle) built from it describes a different matrix than
    tr(S Omega) and P(Omega) do.
    """
    return 0.5 * (a + a.T)


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

    With phi' the penalty's ``derivative`` and G = S - Omega^-1: R = G on the
    diagonal and on ungrouped entries; for a group with Omega_g != 0,
    R_g = G_g + lam w_g phi'(||Omega_g||) Omega_g / ||Omega_g||; for a zero group,
    R_g = G_g max(1 - lam w_g phi'(0+) / ||G_g||, 0) (0 when phi'(0+) = inf, as for
    t^p, p < 1). Counted over both triangles. For convex phi it is zero exactly at
    the optimum; for non-convex phi, exactly at stationary points (the limiting
    subdifferential). In the units of S: ``stationarity`` gives the scale-free one.
    """
    if covariance is None:
        covariance = torch.cholesky_inverse(torch.linalg.cholesky(omega))
    return float(subgradient(omega, s - covariance, structure, penalty, lam).norm())


def subgradient(
    omega: torch.Tensor,
    gradient: torch.Tensor,
    structure: GroupStructure,
    penalty: Penalty,
    lam: float,
) -> torch.Tensor:
    """The minimum-norm subgradient R (p, p) of ``kkt_residual``, given the smooth
    part's gradient G = S - Omega^-1."""
    if structure.singleton and type(penalty) is L1Penalty:
        return l1_residual(omega, gradient, lam)
    rows, cols, index = _device_indices(structure, omega.device)
    weights = lam * torch.as_tensor(structure.weights, dtype=omega.dtype, device=omega.device)
    norms = group_norms(omega, structure)
    slope = weights * penalty.derivative(norms)
    tiny = torch.finfo(omega.dtype).tiny
    g_values = gradient[rows, cols]
    g_norms = group_norms(gradient, structure)
    active = norms[index] > 0
    direction = omega[rows, cols] / norms.clamp_min(tiny)[index]
    shrink = (1.0 - slope / g_norms.clamp_min(tiny)).clamp_min(0.0)
    values = torch.where(
        active,
        g_values + torch.where(active, slope[index], 0.0) * direction,
        g_values * torch.where(g_norms > 0, shrink, 0.0)[index],
    )
    return set_grouped(gradient.clone(), structure, values)


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


def stationarity(kkt: float, s: torch.Tensor) -> float:
    """The relative stationarity residual ||R||_F / ||S||_F (``kkt_residual``): scale-free,
    since R scales with S; 0 at a stationary point."""
    return kkt / max(float(s.norm()), torch.finfo(s.dtype).tiny)
