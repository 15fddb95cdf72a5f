"""ARPACK (scipy ``eigsh``) for the smallest eigenpairs, two ways.

- ``arpack_flipped``: Lanczos on the flipped operator M = c I - L with
  c >= lambda_max(L) (Gershgorin), ``which="LA"``. The smallest eigenvalues
  of L are the largest of M, so implicitly restarted Lanczos converges to them
  from matrix-vector products alone, no factorization. On the
  high-dimensional kNN graphs of model parameters this is the fastest CPU
  option by far (see ``docs/spectral.md`` for the measured table).
- ``arpack_shift_invert``: ``eigsh(L, sigma, which="LM")`` with a small
  negative shift (L is singular, sigma = 0 would fail). Each iteration solves
  with the sparse LU of L - sigma I: fast on mesh-like graphs whose LU stays
  sparse, slow when it fills in (about 200x on high-dimensional kNN graphs).

ARPACK's reverse-communication loop makes many small level-2 BLAS calls;
a multithreaded BLAS spends more time waking and spinning its threads than
computing (measured 10-20x slower on a shared 2-core machine), so both run
with ``blas_threads=1`` by default (``threadpoolctl``; ``None`` leaves the
BLAS thread pool as it is).

Both start from a deterministic vector (seeded Gaussian; never the constant
vector, which is an eigenvector of every combinatorial Laplacian).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from threadpoolctl import threadpool_limits

from graphopt.solvers.eigen._common import (
    EigenResult,
    Problem,
    finish,
    prepare,
    residual_target,
    start_vectors,
)
from graphopt.solvers.eigen.components import BlockSolution, solve_by_components

MIN_SIZE = 64
"""Components smaller than this are solved by dense ``eigh`` instead of ARPACK."""


def arpack_flipped(
    L: Any,
    k: int,
    *,
    tol: float | None = None,
    ncv: int | None = None,
    max_iter: int | None = None,
    seed: int = 0,
    residual_tol: float | None = None,
    blas_threads: int | None = 1,
) -> EigenResult:
    """k smallest eigenpairs of ``L`` by ARPACK on c I - L (``which="LA"``).

    ``tol`` is ARPACK's relative Ritz tolerance (default: residual_tol / 10,
    i.e. 1e-7); ``ncv`` the Lanczos basis size (ARPACK's default
    max(2k + 1, 20)); ``max_iter`` the restarts (ARPACK's default n * 10).
    Connected components are solved separately (``components``).
    """
    problem = prepare(L, k)
    ritz_tol = tol or residual_target(problem.dtype, residual_tol) / 10

    def solve(part: Problem) -> BlockSolution:
        matrix = part.to_scipy()
        shift = max(part.gershgorin_bound(), np.finfo(np.float64).tiny)
        operator = LinearOperator(
            matrix.shape,
            matvec=lambda x: shift * x - matrix @ x,
            matmat=lambda x: shift * x - matrix @ x,
            dtype=np.float64,
        )
        v0 = start_vectors(part.n, 1, seed).numpy()[:, 0]
        try:
            flipped, vectors = eigsh(
                operator, part.k, which="LA", v0=v0, ncv=ncv, maxiter=max_iter, tol=ritz_tol
            )
        except ArpackNoConvergence as err:
            return shift - err.eigenvalues, err.eigenvectors, False, {"shift": shift}
        return shift - flipped, vectors, True, {"shift": shift}

    return _solve_with_arpack(problem, solve, "arpack_flipped", blas_threads, residual_tol)


def arpack_shift_invert(
    L: Any,
    k: int,
    *,
    sigma: float = -1e-3,
    tol: float | None = None,
    max_iter: int | None = None,
    seed: int = 0,
    residual_tol: float | None = None,
    blas_threads: int | None = 1,
) -> EigenResult:
    """k eigenpairs of ``L`` nearest ``sigma`` (< 0: the smallest) by shift-invert ARPACK.

    Connected components are solved separately (``components``).
    """
    if not sigma < 0:
        raise ValueError(f"sigma must be negative (L is singular); got {sigma!r}")
    problem = prepare(L, k)
    ritz_tol = tol or residual_target(problem.dtype, residual_tol) / 10

    def solve(part: Problem) -> BlockSolution:
        v0 = start_vectors(part.n, 1, seed).numpy()[:, 0]
        matrix = part.to_scipy().tocsc()
        try:
            values, vectors = eigsh(
                matrix, part.k, sigma=sigma, which="LM", v0=v0, maxiter=max_iter, tol=ritz_tol
            )
        except ArpackNoConvergence as err:
            return err.eigenvalues, err.eigenvectors, False, {}
        return values, vectors, True, {}

    return _solve_with_arpack(
        problem, solve, "arpack_shift_invert", blas_threads, residual_tol, {"sigma": sigma}
    )


def _solve_with_arpack(
    problem: Problem,
    solve: Callable[[Problem], BlockSolution],
    method: str,
    blas_threads: int | None,
    residual_tol: float | None,
    info: dict[str, Any] | None = None,
) -> EigenResult:
    """Run ``solve`` on each connected component (BLAS limited to ``blas_threads``:
    ARPACK's small dense steps only lose to thread start-up) and check the pairs."""
    with threadpool_limits(blas_threads, user_api="blas"):
        values, vectors, solver_ok, extra = solve_by_components(problem, solve, min_size=MIN_SIZE)
    return finish(
        problem,
        values,
        vectors,
        method,
        solver_ok=solver_ok,
        residual_tol=residual_tol,
        info={**(info or {}), **extra},
    )
