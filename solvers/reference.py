"""cvxpy reference formulations of the convex GGM problems, for checking solvers.

- ``graphical_lasso_reference``: -log det X + tr(S X) + lam sum_{i != j} |X_ij|.
- ``group_lasso_reference``: -log det X + tr(S X) + 2 sum_g lam w_g ||X_g||_2
  (groups as in ``graphopt.solvers.ggm.groups``; both triangles counted).
- ``omega_step_reference``: -log det X + tr(S X) + lambda0 ||X - D||_F^2.

Solved by Clarabel (interior point; default) or SCS at tight tolerance. Use
small problems (p <= ~30): the exponential-cone log det is expensive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cvxpy as cp
import numpy as np

from graphopt.solvers.ggm.groups import GroupStructure, make_groups
from graphopt.solvers.validation import as_tensor, check_positive, check_square_symmetric_finite

SOLVERS = ("CLARABEL", "SCS")
"""cvxpy solvers with tolerances set here (interior point, splitting conic)."""


@dataclass(frozen=True)
class ReferenceSolution:
    """The cvxpy optimum: ``precision``, ``objective`` (recomputed in numpy), solver ``status``."""

    precision: np.ndarray
    objective: float
    status: str


def graphical_lasso_reference(S: Any, lam: float, solver: str = "CLARABEL") -> ReferenceSolution:
    """The l1 graphical lasso with unpenalized diagonal, solved by cvxpy."""
    _check_solver(solver)
    s = _matrix(S)
    lam = check_positive(lam, "lam", allow_zero=True)
    x = cp.Variable(s.shape, symmetric=True)
    mask = 1.0 - np.eye(s.shape[0])
    penalty = lam * cp.sum(cp.abs(cp.multiply(mask, x)))
    return _solve(x, s, penalty, solver)


def group_lasso_reference(
    S: Any, lam: float, groups: Any, solver: str = "CLARABEL"
) -> ReferenceSolution:
    """The group lasso GGM (phi(t) = t), solved by cvxpy."""
    _check_solver(solver)
    s = _matrix(S)
    lam = check_positive(lam, "lam", allow_zero=True)
    structure: GroupStructure = make_groups(groups, s.shape[0])
    x = cp.Variable(s.shape, symmetric=True)
    terms = []
    for g in range(structure.n_groups):
        members = structure.group_index == g
        entries = cp.hstack(
            [x[i, j] for i, j in zip(structure.rows[members], structure.cols[members], strict=True)]
        )
        terms.append(structure.weights[g] * cp.norm(entries, 2))
    return _solve(x, s, 2.0 * lam * cp.sum(cp.hstack(terms)), solver)


def omega_step_reference(
    S: Any, D: Any, lambda0: float, solver: str = "CLARABEL"
) -> ReferenceSolution:
    """argmin_{X > 0} -log det X + tr(S X) + lambda0 ||X - D||_F^2, solved by cvxpy."""
    _check_solver(solver)
    s = _matrix(S)
    d = _matrix(D, "D")
    if d.shape != s.shape:
        raise ValueError(f"D must have the shape of S {s.shape}; got {d.shape}")
    lambda0 = check_positive(lambda0, "lambda0")
    x = cp.Variable(s.shape, symmetric=True)
    return _solve(x, s, lambda0 * cp.sum_squares(x - d), solver)


def _matrix(value: Any, name: str = "S") -> np.ndarray:
    tensor = as_tensor(value, name)[0]
    check_square_symmetric_finite(tensor, name)
    return tensor.detach().cpu().double().numpy()


def _check_solver(solver: Any) -> None:
    if solver not in SOLVERS or solver not in cp.installed_solvers():
        raise ValueError(f"solver must be one of {SOLVERS} (installed); got {solver!r}")


def _solve(x: cp.Variable, s: np.ndarray, penalty: cp.Expression, solver: str) -> ReferenceSolution:
    objective = -cp.log_det(x) + cp.trace(s @ x) + penalty
    problem = cp.Problem(cp.Minimize(objective))
    options: dict[str, Any] = (
        {"eps": 1e-10, "max_iters": 200_000}
        if solver == "SCS"
        else {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10}
    )
    problem.solve(solver=solver, **options)
    if x.value is None:
        raise RuntimeError(f"cvxpy ({solver}) failed: status {problem.status}")
    precision = 0.5 * (x.value + x.value.T)
    sign, logdet = np.linalg.slogdet(precision)
    value = (
        float(problem.value)
        if sign <= 0
        else float(-logdet + np.sum(s * precision) + penalty.value)
    )
    return ReferenceSolution(precision=precision, objective=value, status=str(problem.status))
