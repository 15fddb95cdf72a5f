"""graphopt's eigensolvers and its default choice among them, as a plugin.

The solvers are registered by reference (``graphopt.solvers.eigen`` imports
torch and scipy on the first lookup); the names are those of
``graphopt.solvers.eigen.SOLVERS`` (a test keeps the two in step).
"""

from __future__ import annotations

import graphopt
from graphopt._registry import Registrar

EIGEN = "graphopt.solvers.eigen"

SOLVERS: dict[str, str] = {
    "dense": f"{EIGEN}:dense_eigh",
    "arpack_flipped": f"{EIGEN}:arpack_flipped",
    "arpack_shift_invert": f"{EIGEN}:arpack_shift_invert",
    "lobpcg": f"{EIGEN}:lobpcg",
    "lobpcg_amg": f"{EIGEN}:lobpcg_amg",
    "torch_lobpcg": f"{EIGEN}:torch_lobpcg",
    "lanczos_torch": f"{EIGEN}:lanczos_torch",
}
"""The registered eigensolvers by name, as references."""


@graphopt.hookimpl
def graphopt_register(registry: Registrar) -> None:
    for name, reference in SOLVERS.items():
        registry.add_lazy("eigensolver", name, reference)


@graphopt.hookimpl(trylast=True)
def graphopt_choose_eigensolver(n: int, nnz: int, k: int, device: str) -> str:
    """The measured default policy (``graphopt.solvers.eigen.policy``)."""
    from graphopt.solvers.eigen.policy import choose_method

    return choose_method(n, nnz, k, device)
