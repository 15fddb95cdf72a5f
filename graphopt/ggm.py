"""``graphopt.ggm.solve``: the GGM solver with penalties and solvers found by registered name.

``graphopt.solvers.ggm.solve`` knows graphopt's built-in names only (solvers
never import the core). This thin layer resolves any name in the plugin
registry -- a third party's ``penalty`` class or ``ggm_solver`` callable as
well as the built-ins -- and passes the objects down.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graphopt._registry import registry


def solve(
    S: Any,
    penalty: Any = "l1",
    groups: Any = None,
    lam: float | None = None,
    solver: Any = "auto",
    *,
    p: float | None = None,
    penalty_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> Any:
    """``graphopt.solvers.ggm.solve`` with ``penalty``/``solver`` names looked up in the registry.

    A registered penalty is a ``Penalty`` subclass (or factory), built as
    ``factory(**penalty_options)`` (``p``, when given, is the option ``p``); an
    unknown option or a value it rejects raises ``ValueError`` naming the penalty
    and the option. A registered solver is a callable with the signature of
    ``graphopt.solvers.ggm.admm``; "auto" is the built-in choice. Unknown names
    raise ``UnknownNameError`` (a ``ValueError``) listing the choices.
    """
    from graphopt.solvers.ggm import make_penalty
    from graphopt.solvers.ggm import solve as solve_ggm

    if isinstance(penalty, str):
        factory = registry.get("penalty", penalty)
        penalty = make_penalty(penalty, p, penalty_options, factory=factory)
    else:
        penalty = make_penalty(penalty, p, penalty_options)
    if isinstance(solver, str) and solver != "auto":
        solver = registry.get("ggm_solver", solver)
    return solve_ggm(S, penalty=penalty, groups=groups, lam=lam, solver=solver, **options)
