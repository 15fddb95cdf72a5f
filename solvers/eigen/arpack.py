"""ARPACK (scipy ``eigsh``) for the smallest eigenpairs, two ways.

- ``arpack_flipped``: Lanczos on the flipped operator M = c I - L with
  c >= lambda_max(L) (Gershgorin), ``which="LA"``. The smallest eigenvalues
  of L are the largest of M, so implicitly restarted Lanczos converges to them
  from matrix-vector products alone, no factorization. On the
  high-dimensional kNN graphs of model parameters this is the fastest CPU
  option by far (see ``docs/solvers/spectral.md`` for the measured table).
- ``arpack_shift_invert``: Lanczos on (L - sigma I)^-1 with sigma below the
  spectrum (L is singular, sigma = 0 would fail). Each iteration solves with
  the sparse LU of L - sigma I: fast on mesh-like graphs whose LU stays
  sparse, slow when it fills in (about 200x on high-dimensional kNN graphs).

ARPACK is a single-vector method: it sees one vector per eigenspace, so each
answer is checked for missed copies of repeated eigenvalues by runs on the
deflated operator (``multiplicity``): about one extra run for a graph
without exact symmetries.

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
import scipy.sparse as sp
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh, splu
from threadpoolctl import threadpool_limits

from graphopt.solvers.eigen._common import (
    EigenResult,
    Problem,
    check_common_options,
    finish,
    prepare,
    residual_target,
    start_vectors,
)
from graphopt.solvers.eigen.components import BlockSolution, solve_by_components
from graphopt.solvers.eigen.multiplicity import certify_multiplicity
from graphopt.solvers.validation import check_int_in_range, check_real

SHIFT_FRACTION = 1e-3
"""The default shift-invert sigma sits this fraction of ||L|| below the Gershgorin bound."""

Operator = Callable[[np.ndarray], np.ndarray]
"""x -> OP x, the operator whose largest eigenvalues ARPACK finds."""

ValueMap = Callable[[np.ndarray], np.ndarray]
"""Eigenvalues theta of OP -> the eigenvalues of L they stand for."""


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
    Connected components are solved separately (``components``) and repeated
    eigenvalues are certified by deflated runs (``multiplicity``).
    """
    problem = prepare(L, k)
    check_common_options(tol=tol, max_iter=max_iter, seed=seed, residual_tol=residual_tol)
    if ncv is not None:
        ncv = check_int_in_range(ncv, "ncv", problem.k + 1, problem.n + 1)

    def flipped(part: Problem) -> tuple[Operator, ValueMap, dict[str, Any]]:
        matrix = part.to_scipy()
        shift = max(part.gershgorin_bound(), np.finfo(np.float64).tiny)
        return (lambda x: shift * x - matrix @ x), (lambda theta: shift - theta), {"shift": shift}

    return _solve_with_arpack(
        problem, flipped, "arpack_flipped", tol, ncv, max_iter, seed, residual_tol, blas_threads
    )


def arpack_shift_invert(
    L: Any,
    k: int,
    *,
    sigma: float | None = None,
    tol: float | None = None,
    max_iter: int | None = None,
    seed: int = 0,
    residual_tol: float | None = None,
    blas_threads: int | None = 1,
) -> EigenResult:
    """k smallest eigenpairs of ``L`` by shift-invert ARPACK.

    Lanczos on (L - sigma I)^-1 (one sparse LU per component), whose largest
    eigenvalues theta give lambda = sigma + 1 / theta. ``sigma`` must lie below
    the spectrum, which the Gershgorin bound g = min_i (L_ii - sum_j |L_ij|)
    guarantees: the default is min(g, 0) - 1e-3 ||L|| (L is singular, so not
    0; scaled with L so the result does not depend on L's units); an explicit
    sigma above g is rejected. Connected components are solved separately
    (``components``) and repeated eigenvalues are certified by deflated runs
    (``multiplicity``).
    """
    problem = prepare(L, k)
    check_common_options(tol=tol, max_iter=max_iter, seed=seed, residual_tol=residual_tol)
    lower = problem.gershgorin_lower_bound()
    if sigma is None:
        shift = min(lower, 0.0) - SHIFT_FRACTION * problem.norm
    else:
        shift = check_real(sigma, "sigma") / problem.scale
        if not shift < lower:
            raise ValueError(
                f"sigma must lie below the spectrum of L, i.e. below its Gershgorin bound "
                f"min_i (L_ii - sum_j |L_ij|) = {lower * problem.scale:.6g}; got {sigma!r} "
                "(leave sigma unset for an automatic choice)"
            )

    def inverted(part: Problem) -> tuple[Operator, ValueMap, dict[str, Any]]:
        shifted = part.to_scipy() - shift * sp.eye_array(part.n, format="csr")
        lu = splu(sp.csc_matrix(shifted))
        return lu.solve, (lambda theta: shift + 1.0 / theta), {"sigma": shift * problem.scale}

    return _solve_with_arpack(
        problem,
        inverted,
        "arpack_shift_invert",
        tol,
        None,
        max_iter,
        seed,
        residual_tol,
        blas_threads,
    )


def _solve_with_arpack(
    problem: Problem,
    operator: Callable[[Problem], tuple[Operator, ValueMap, dict[str, Any]]],
    method: str,
    tol: float | None,
    ncv: int | None,
    max_iter: int | None,
    seed: int,
    residual_tol: float | None,
    blas_threads: int | None,
) -> EigenResult:
    """Solve each connected component by ARPACK on ``operator(component)``, certify its
    repeated eigenvalues by deflated runs, and check the pairs.

    BLAS is limited to ``blas_threads``: ARPACK's small dense steps only lose to
    thread start-up.
    """
    if blas_threads is not None:
        blas_threads = check_int_in_range(blas_threads, "blas_threads", 1)
    tolerance = residual_target(problem.dtype, residual_tol)
    ritz_tol = tol or tolerance / 10

    def solve(part: Problem) -> BlockSolution:
        apply, to_values, details = operator(part)  # built once, shared by every round

        def run(count: int, locked: np.ndarray | None, round_: int) -> BlockSolution:
            return _largest(
                apply,
                to_values,
                part.n,
                count,
                locked,
                seed + round_,
                ncv,
                max_iter,
                ritz_tol if round_ == 0 else tolerance,
            )

        values, vectors, ok, _ = run(part.k, None, 0)
        return certify_multiplicity(
            part,
            (values, vectors, ok, details),
            lambda _, locked, count, round_: run(count, locked.numpy(), round_),
            block_size=1,
            tolerance=tolerance,
        )

    with threadpool_limits(blas_threads, user_api="blas"):
        values, vectors, solver_ok, info = solve_by_components(problem, solve, min_size=1)
    return finish(
        problem, values, vectors, method, solver_ok=solver_ok, residual_tol=residual_tol, info=info
    )


def _largest(
    apply: Operator,
    to_values: ValueMap,
    n: int,
    count: int,
    locked: np.ndarray | None,
    seed: int,
    ncv: int | None,
    max_iter: int | None,
    ritz_tol: float,
) -> BlockSolution:
    """The ``count`` largest eigenpairs of OP (on the orthogonal complement of ``locked``
    when given), as eigenpairs of L (``to_values``), ascending."""
    start = start_vectors(n, 1, seed).numpy()[:, 0]
    if locked is None:
        operate = apply
    else:

        def project(x: np.ndarray) -> np.ndarray:
            return x - locked @ (locked.T @ x)

        def operate(x: np.ndarray) -> np.ndarray:
            return project(apply(project(x)))

        start = project(start)
    linear = LinearOperator((n, n), matvec=operate, matmat=operate, dtype=np.float64)
    try:
        theta, vectors = eigsh(
            linear, count, which="LA", v0=start, ncv=ncv, maxiter=max_iter, tol=ritz_tol
        )
        ok = True
    except ArpackNoConvergence as err:
        theta, vectors, ok = err.eigenvalues, err.eigenvectors, False
    values = to_values(theta)
    order = np.argsort(values, kind="stable")
    return values[order], vectors[:, order], ok, {}
