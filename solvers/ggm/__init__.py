"""Sparse precision matrices: the l2,g-regularized Gaussian graphical model.

    minimize  -log det Omega + tr(S Omega) + sum_g lam_g phi(||Omega_g||_2),  Omega > 0

with the diagonal unpenalized, groups symmetric, phi(t) = t (graphical / group
lasso) or t^p (the [GGM] l2,p penalty). Solvers: ``admm`` (exact problem,
adaptive rho, KKT-checked, with a Newton end game for l1) and ``bcd`` (the
paper's coupled block coordinate descent), both behind block-diagonal
screening; see ``docs/solvers/ggm.md``.
The scikit-learn estimators live in ``graphopt.solvers.ggm.estimators``.
"""

from graphopt.solvers.ggm.admm import admm
from graphopt.solvers.ggm.anderson import AndersonAccelerator
from graphopt.solvers.ggm.api import PENALTIES, SOLVERS, make_penalty, regularization_path, solve
from graphopt.solvers.ggm.bcd import bcd, coupled_objective
from graphopt.solvers.ggm.groups import (
    GroupStructure,
    groups_from_pairs,
    important_set_groups,
    make_groups,
    node_groups,
    singleton_groups,
)
from graphopt.solvers.ggm.newton import Polish, l1_newton
from graphopt.solvers.ggm.objective import kkt_residual, objective
from graphopt.solvers.ggm.omega_step import omega_step, solve_omega_subproblem
from graphopt.solvers.ggm.penalties import (
    L1Penalty,
    L2pPenalty,
    Penalty,
    generalized_soft_threshold,
    group_prox,
    penalty_value,
)
from graphopt.solvers.ggm.result import GGMConvergenceWarning, GGMResult
from graphopt.solvers.ggm.screening import screen_blocks

__all__ = [
    "PENALTIES",
    "SOLVERS",
    "AndersonAccelerator",
    "GGMConvergenceWarning",
    "GGMResult",
    "GroupStructure",
    "L1Penalty",
    "L2pPenalty",
    "Penalty",
    "Polish",
    "admm",
    "bcd",
    "coupled_objective",
    "generalized_soft_threshold",
    "group_prox",
    "groups_from_pairs",
    "important_set_groups",
    "kkt_residual",
    "l1_newton",
    "make_groups",
    "make_penalty",
    "node_groups",
    "objective",
    "omega_step",
    "penalty_value",
    "regularization_path",
    "screen_blocks",
    "singleton_groups",
    "solve",
    "solve_omega_subproblem",
]
