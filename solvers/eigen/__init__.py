"""Eigensolvers for the k smallest eigenpairs of a symmetric (Laplacian) matrix.

Every solver has the signature ``solver(L, k, **options) -> EigenResult`` and
the conventions of ``graphopt.solvers.eigen._common`` (ascending values,
deterministic signs, residuals ||L u - l u|| / ||L||, a converged flag that
warns when false). ``SOLVERS`` maps the registered names to them;
``smallest`` picks one with ``choose_method`` when no name is given.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from graphopt.solvers.eigen._common import ConvergenceWarning, EigenResult
from graphopt.solvers.eigen.arpack import arpack_flipped, arpack_shift_invert
from graphopt.solvers.eigen.dense import dense_eigh
from graphopt.solvers.eigen.lanczos import lanczos_torch
from graphopt.solvers.eigen.lobpcg import lobpcg, lobpcg_amg, torch_lobpcg
from graphopt.solvers.eigen.policy import choose_method
from graphopt.solvers.validation import as_numpy, check_int_in_range, working_dtype

SOLVERS = {
    "dense": dense_eigh,
    "arpack_flipped": arpack_flipped,
    "arpack_shift_invert": arpack_shift_invert,
    "lobpcg": lobpcg,
    "lobpcg_amg": lobpcg_amg,
    "torch_lobpcg": torch_lobpcg,
    "lanczos_torch": lanczos_torch,
}
"""Eigensolvers by their registered name."""


def problem_size(L: Any, k: int) -> tuple[int, int, int, str]:
    """(n, nnz, k, device) of ``L``, what ``choose_method`` takes.

    Checks only what the choice needs (L a square matrix of an accepted
    dtype, k an integer >= 1); the chosen solver validates the rest.
    """
    if isinstance(L, torch.Tensor) or sp.issparse(L):
        working_dtype(L.dtype, "L")
        shape = tuple(L.shape)
    else:
        shape = as_numpy(L, "L").shape
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] == 0:
        raise ValueError(f"L must be a non-empty square matrix; got shape {shape}")
    k = check_int_in_range(k, "k", 1)
    if isinstance(L, torch.Tensor):
        if L.layout == torch.strided:
            nnz = L.numel()
        else:
            nnz = L._nnz() if L.is_sparse else L.values().numel()
        return int(shape[0]), int(nnz), k, str(L.device)
    nnz = L.nnz if sp.issparse(L) else int(np.prod(shape))
    return int(shape[0]), int(nnz), k, "cpu"


def smallest(L: Any, k: int, method: str | None = None, **options: Any) -> EigenResult:
    """The k smallest eigenpairs of ``L`` by ``method`` (default: ``choose_method``).

    Standalone use without the plugin registry; ``graphopt.eigen.smallest_eigenpairs``
    is the same with plugin-chosen and plugin-provided solvers.
    """
    name = choose_method(*problem_size(L, k)) if method is None else method
    if not isinstance(name, str) or name not in SOLVERS:
        raise ValueError(f"unknown method {name!r}; choices: {', '.join(sorted(SOLVERS))}")
    return SOLVERS[name](L, k, **options)


__all__ = [
    "SOLVERS",
    "ConvergenceWarning",
    "EigenResult",
    "arpack_flipped",
    "arpack_shift_invert",
    "choose_method",
    "dense_eigh",
    "lanczos_torch",
    "lobpcg",
    "lobpcg_amg",
    "problem_size",
    "smallest",
    "torch_lobpcg",
]
