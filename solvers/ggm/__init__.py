"""Sparse precision matrices: the l2,g-regularized Gaussian graphical model.

    minimize  -log det Omega + tr(S Omega) + sum_g lam_g phi(||Omega_g||_2),  Omega > 0

with the diagonal unpenalized, groups symmetric, phi(t) = t (graphical / group
lasso) or t^p (the [GGM] l2,p penalty). Solvers: ``newton`` (second order,
for phi(t) = t), ``admm`` (any penalty, with a Newton end game for phi(t) = t)
and ``bcd`` (the paper's coupled block coordinate descent), all behind
block-diagonal screening and on S scaled to unit mean variance; convex solves
are certified by a duality gap. See ``docs/solvers/ggm.md``.
The scikit-learn estimators live in ``graphopt.solvers.ggm.estimators``.
"""

from graphopt.solvers.ggm.active_set import ActiveSet, build_active_set
from graphopt.solvers.ggm.admm import admm
from graphopt.solvers.ggm.anderson import AndersonAccelerator
from graphopt.solvers.ggm.api import (
    PENALTIES,
    SOLVERS,
    choose_solver,
    make_penalty,
    regularization_path,
    solve,
)
from graphopt.solvers.ggm.bcd import bcd, coupled_objective
from graphopt.solvers.ggm.duality import dual_point, duality_gap, relative_gap
from graphopt.solvers.ggm.groups import (
    GroupStructure,
    groups_from_pairs,
    important_set_groups,
    make_groups,
    node_groups,
    singleton_groups,
)
from graphopt.solvers.ggm.newton import Polish, lam_max, newton, proximal_newton
from graphopt.solvers.ggm.objective import kkt_residual, objective, stationarity, subgradient
from graphopt.solvers.ggm.omega_step import omega_step, solve_omega_subproblem
from graphopt.solvers.ggm.penalties import (
    L1Penalty,
    L2pPenalty,
    Penalty,
    RescaledPenalty,
    build_penalty,
    generalized_soft_threshold,
    group_prox,
    lasso_slope,
    penalty_value,
    rescale_penalty,
)
from graphopt.solvers.ggm.result import GGMConvergenceWarning, GGMResult
from graphopt.solvers.ggm.screening import screen_blocks

__all__ = [
    "PENALTIES",
    "SOLVERS",
    "ActiveSet",
    "AndersonAccelerator",
    "GGMConvergenceWarning",
    "GGMResult",
    "GroupStructure",
    "L1Penalty",
    "L2pPenalty",
    "Penalty",
    "Polish",
    "RescaledPenalty",
    "admm",
    "bcd",
    "build_active_set",
    "build_penalty",
    "choose_solver",
    "coupled_objective",
    "dual_point",
    "duality_gap",
    "generalized_soft_threshold",
    "group_prox",
    "groups_from_pairs",
    "important_set_groups",
    "kkt_residual",
    "lam_max",
    "lasso_slope",
    "make_groups",
    "make_penalty",
    "newton",
    "node_groups",
    "objective",
    "omega_step",
    "penalty_value",
    "proximal_newton",
    "regularization_path",
    "relative_gap",
    "rescale_penalty",
    "screen_blocks",
    "singleton_groups",
    "solve",
    "solve_omega_subproblem",
    "stationarity",
    "subgradient",
]
