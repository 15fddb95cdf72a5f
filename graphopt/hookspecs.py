"""The hooks a graphopt plugin may implement.

A plugin is a module (or object) with functions decorated by
``graphopt.hookimpl`` whose names match the specs below. Built-in solvers and
methods are plugins of exactly this kind; see ``graphopt.plugins`` and
``graphopt.solvers`` for worked examples.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from graphopt.registry import Registrar

hookspec = pluggy.HookspecMarker("graphopt")
hookimpl = pluggy.HookimplMarker("graphopt")


@hookspec
def graphopt_register(registry: Registrar) -> None:
    """Register what the plugin provides.

    Called once per plugin, the first time the registry is used. Call
    ``registry.add(kind, name, obj)`` for each method, graph construction,
    eigensolver, penalty, GGM solver, gradient transform or filter response
    the plugin offers. Return nothing.
    """


@hookspec(firstresult=True)
def graphopt_choose_eigensolver(n: int, nnz: int, k: int, device: str) -> str | None:
    """Name the eigensolver for the k smallest eigenpairs of an n x n matrix.

    Called by ``graphopt.eigen.smallest_eigenpairs`` when no ``method`` is
    given, with the matrix size ``n``, its stored entries ``nnz`` (n * n when
    dense), the number of pairs ``k`` and the matrix's torch device string
    (``"cpu"``, ``"cuda:0"``, ...). Return a registered ``eigensolver`` name to
    decide, or ``None`` to leave the choice to the next implementation; the
    first non-None answer wins. graphopt's measured default policy is a
    ``trylast`` implementation, so any plugin's answer comes first.
    """
