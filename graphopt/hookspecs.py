"""The hooks a graphopt plugin may implement.

A plugin is a module (or object) with functions decorated by
``graphopt.hookimpl`` whose names match the specs below (a plugin that
implements no hook, or a hook not listed here, fails to load). Built-in solvers
and methods are plugins of exactly this kind; see ``graphopt.plugins`` for
worked examples and docs/plugins/ for a guide per kind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from graphopt._registry import Registrar

hookspec = pluggy.HookspecMarker("graphopt")
hookimpl = pluggy.HookimplMarker("graphopt")


@hookspec
def graphopt_register(registry: Registrar) -> None:
    """Register what the plugin provides.

    Called once per plugin, the first time the registry is used. For each
    method, graph construction, eigensolver, penalty, GGM solver, gradient
    transform or filter response the plugin offers, call
    ``registry.add_lazy(kind, name, "package.module:attribute")`` (the module
    is imported on the first lookup of the name: keep the plugin's own module
    light) or ``registry.add(kind, name, obj)`` (an object already imported).
    Return nothing. An exception here unregisters everything the plugin added.
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
