"""The closed-form Omega-step shared by BCD and ADMM.

argmin_{X > 0} -log det X + tr(S X) + (rho / 2) ||X - D||_F^2 is the X with
rho X - X^-1 = C, C = rho D - S. With C = Q diag(c) Q^T,

    X = Q diag((c_i + sqrt(c_i^2 + 4 rho)) / (2 rho)) Q^T,

always positive definite (Boyd et al. 2011, sec. 6.5; with rho = 2 lambda0 this
is the [GGM] step that the reference code approximates by gradient ascent).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from graphopt.solvers.ggm.objective import symmetrized


class OmegaStep(NamedTuple):
    """X and its eigendecomposition X = Q diag(eigenvalues) Q^T."""

    omega: torch.Tensor
    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor


def omega_step(c: torch.Tensor, rho: float, working: torch.dtype | None = None) -> OmegaStep:
    """Solve rho X - X^-1 = C for symmetric C (one symmetric eigendecomposition).

    ``working``: the dtype to compute in (default C's), e.g. float32 for a step
    about twice as fast and accurate to ~1e-7 relative; the results have C's dtype.
    """
    values, vectors = torch.linalg.eigh(c if working is None else c.to(working))
    # (c + sqrt(c^2 + 4 rho)) / (2 rho), written to avoid cancellation for c << 0
    root = torch.sqrt(values.square() + 4.0 * rho)
    eigenvalues = torch.where(values >= 0, (values + root) / (2.0 * rho), 2.0 / (root - values))
    omega = (vectors * eigenvalues) @ vectors.T
    omega = symmetrized(omega)
    return OmegaStep(omega.to(c.dtype), eigenvalues.to(c.dtype), vectors.to(c.dtype))


def solve_omega_subproblem(s: torch.Tensor, d: torch.Tensor, lambda0: float) -> torch.Tensor:
    """argmin_{X > 0} -log det X + tr(S X) + lambda0 ||X - D||_F^2 (the [GGM] Omega-step)."""
    return omega_step(2.0 * lambda0 * d - s, 2.0 * lambda0).omega
