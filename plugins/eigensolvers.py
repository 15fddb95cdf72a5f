"""graphopt's eigensolvers and its default choice among them, as a plugin."""

from __future__ import annotations

import graphopt
from graphopt._registry import Registrar
from graphopt.solvers.eigen import SOLVERS, choose_method


@graphopt.hookimpl
def graphopt_register(registry: Registrar) -> None:
    for name, solver in SOLVERS.items():
        registry.add("eigensolver", name, solver)


@graphopt.hookimpl(trylast=True)
def graphopt_choose_eigensolver(n: int, nnz: int, k: int, device: str) -> str:
    """The measured default policy (``graphopt.solvers.eigen.policy``)."""
    return choose_method(n, nnz, k, device)
