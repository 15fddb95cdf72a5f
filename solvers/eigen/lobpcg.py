"""LOBPCG (Knyazev 2001) for the smallest eigenpairs: scipy's, with optional
AMG preconditioning (pyamg), and torch's.

The start block is deterministic (seeded Gaussian) and connected components
are solved separately (``components``). When the constant vector
is in L's null space (every combinatorial Laplacian), it is seeded as the
first start column, so the known pair is found at once instead of being
approximated from random data. The block holds k vectors, so every copy of a
repeated eigenvalue among the k smallest is found (no deflated check needed).
Components smaller than 5k (scipy's) or 3k (torch's) nodes, or than
``components.DENSE_BELOW``, are solved by dense ``eigh``: scipy's LOBPCG
switches to it itself below 5k, with a different return signature.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import lobpcg as scipy_lobpcg

from graphopt.solvers.eigen._common import (
    EigenResult,
    Problem,
    check_common_options,
    finish,
    matvec,
    prepare,
    residual_target,
    start_vectors,
)
from graphopt.solvers.eigen.components import BlockSolution, solve_by_components

AMG_SHIFT = 1e-6
"""The AMG hierarchy is built for L + (AMG_SHIFT ||L||_inf - min(g, 0)) I, g the Gershgorin
lower bound: positive definite for any symmetric L (see ``lobpcg``)."""


def lobpcg(
    L: Any,
    k: int,
    *,
    preconditioner: str | None = None,
    tol: float | None = None,
    max_iter: int = 1000,
    seed: int = 0,
    residual_tol: float | None = None,
) -> EigenResult:
    """k smallest eigenpairs of ``L`` by scipy's LOBPCG.

    ``preconditioner="amg"`` applies one V-cycle of a pyamg smoothed
    aggregation hierarchy per iteration (pays off on mesh-like graphs, not on
    high-dimensional kNN graphs). The hierarchy is built for L + 1e-6 ||L|| I
    (shifted further by the Gershgorin bound when L may be indefinite): on the
    singular L itself smoothed aggregation breaks LOBPCG down (it stopped
    after 7 iterations at residual 7e-2 on a 2,000-node kNN graph), and on an
    indefinite one it ran its 1,000 iterations without converging.
    ``tol`` is LOBPCG's absolute residual tolerance (default: residual_tol *
    ||L|| / 10). Connected components are solved separately (``components``).
    """
    if preconditioner not in (None, "amg"):
        raise ValueError(f"preconditioner must be None or 'amg'; got {preconditioner!r}")
    problem = prepare(L, k)
    check_common_options(tol=tol, max_iter=max_iter, seed=seed, residual_tol=residual_tol)
    absolute_tol = tol or residual_target(problem.dtype, residual_tol) * problem.norm / 10

    def solve(part: Problem) -> BlockSolution:
        matrix = part.to_scipy()
        condition = None
        if preconditioner == "amg":
            import pyamg

            shift = AMG_SHIFT * problem.norm - min(part.gershgorin_lower_bound(), 0.0)
            shifted = sp.csr_matrix(matrix + shift * sp.eye_array(part.n))
            condition = _seeded(seed, pyamg.smoothed_aggregation_solver, shifted).aspreconditioner()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            values, vectors, history = scipy_lobpcg(
                matrix,
                _start_block(part, seed).numpy(),
                M=condition,
                tol=absolute_tol,
                maxiter=max_iter,
                largest=False,
                retResidualNormsHistory=True,
            )
        info = {"iterations": len(history), "warnings": [str(w.message) for w in caught]}
        return values, vectors, True, info

    values, vectors, _, info = solve_by_components(problem, solve, min_size=5 * problem.k)
    name = "lobpcg_amg" if preconditioner == "amg" else "lobpcg"
    return finish(problem, values, vectors, name, residual_tol=residual_tol, info=info)


def lobpcg_amg(L: Any, k: int, **options: Any) -> EigenResult:
    """``lobpcg`` with the pyamg smoothed-aggregation preconditioner."""
    return lobpcg(L, k, preconditioner="amg", **options)


def torch_lobpcg(
    L: Any,
    k: int,
    *,
    tol: float | None = None,
    max_iter: int = 1000,
    seed: int = 0,
    residual_tol: float | None = None,
) -> EigenResult:
    """k smallest eigenpairs of ``L`` by ``torch.lobpcg`` (dense or sparse L, any device).

    torch's LOBPCG needs n >= 3k: smaller components are solved by dense
    ``eigh``. ``tol`` is its relative residual tolerance (default residual_tol
    / 10). Connected components are solved separately.
    """
    problem = prepare(L, k)
    check_common_options(tol=tol, max_iter=max_iter, seed=seed, residual_tol=residual_tol)
    relative_tol = tol or residual_target(problem.dtype, residual_tol) / 10

    def solve(part: Problem) -> BlockSolution:
        try:
            values, vectors = torch.lobpcg(
                part.to_torch(),
                k=part.k,
                X=_start_block(part, seed).to(part.device, part.dtype),
                largest=False,
                tol=relative_tol,
                niter=max_iter,
                method="ortho",
            )
        except (RuntimeError, torch.linalg.LinAlgError) as err:
            raise RuntimeError(f"torch_lobpcg failed: {err}") from err
        return values, vectors, True, {}

    values, vectors, _, info = solve_by_components(problem, solve, min_size=3 * problem.k)
    return finish(problem, values, vectors, "torch_lobpcg", residual_tol=residual_tol, info=info)


def _seeded(seed: int, build: Any, *args: Any) -> Any:
    """``build(*args)`` with numpy's global generator seeded, then restored: pyamg draws
    random vectors from it (spectral radius estimates), which would make results vary."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        return build(*args)
    finally:
        np.random.set_state(state)


def _start_block(problem: Problem, seed: int) -> torch.Tensor:
    """Seeded Gaussian (n, k); first column the constant vector when L 1 = 0."""
    block = start_vectors(problem.n, problem.k, seed)
    if problem.is_torch:
        ones = torch.ones(problem.n, 1, dtype=problem.dtype, device=problem.device)
        null_residual = float(matvec(problem.matrix, ones).abs().max())
    else:
        null_residual = float(np.abs(problem.matrix @ np.ones(problem.n)).max())
    if null_residual <= 1e-12 * max(problem.norm, np.finfo(np.float64).tiny):
        block[:, 0] = 1.0 / np.sqrt(problem.n)
    return block
