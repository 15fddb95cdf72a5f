"""Dense symmetric eigendecomposition (``torch.linalg.eigh``), on any device.

O(n^3) time and O(n^2) memory, but no iteration and exact to rounding: the
right choice for small n, and for moderate n on a GPU.
"""

from __future__ import annotations

from typing import Any

import torch

from graphopt.solvers.eigen._common import EigenResult, check_common_options, finish, prepare


def dense_eigh(L: Any, k: int, *, residual_tol: float | None = None) -> EigenResult:
    """The k smallest eigenpairs of symmetric ``L`` from a full ``eigh``."""
    problem = prepare(L, k)
    check_common_options(residual_tol=residual_tol)
    matrix = problem.to_torch()
    matrix = matrix.to_dense() if matrix.is_sparse else matrix
    values, vectors = torch.linalg.eigh(matrix)
    return finish(
        problem, values[: problem.k], vectors[:, : problem.k], "dense", residual_tol=residual_tol
    )
