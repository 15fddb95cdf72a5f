"""``graphopt.ggm.solve``: the GGM solver with penalties and solvers found by registered name.

``graphopt.solvers.ggm.solve`` knows graphopt's built-in names only (solvers
never import the core). This thin layer resolves any name in the plugin
registry -- a third party's ``penalty`` class or ``ggm_solver`` callable as
well as the built-ins -- and passes the objects down.
"""

from __future__ import annotations

from typing import Any

from graphopt._registry import registry


def solve(
    S: Any,
    penalty: Any = "l1",
    groups: Any = None,
    lam: float | None = None,
    solver: Any = "admm",
    *,
    p: float | None = None,
    **options: Any,
) -> Any:
    """``graphopt.solvers.ggm.solve`` with ``penalty``/``solver`` names looked up in the registry.

    A registered penalty is a ``Penalty`` subclass (or factory), instantiated
    with ``p=p`` when p is given; a registered solver is a callable with the
    signature of ``graphopt.solvers.ggm.admm``. Unknown names raise
    ``UnknownNameError`` (a ``ValueError``) listing the choices.
    """
    from graphopt.solvers.ggm import solve as solve_ggm

    if isinstance(penalty, str):
        factory = registry.get("penalty", penalty)
        penalty = factory() if p is None else factory(p=p)
    elif p is not None:
        raise ValueError("p is only used with a penalty given by name")
    if isinstance(solver, str):
        solver = registry.get("ggm_solver", solver)
    return solve_ggm(S, penalty=penalty, groups=groups, lam=lam, solver=solver, **options)
