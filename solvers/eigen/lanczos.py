"""Thick-restart block Lanczos on the flipped operator, in torch (any device).

The GPU counterpart of ``arpack_flipped`` without CuPy: the k largest
eigenpairs of M = c I - L (c >= lambda_max by Gershgorin) are the k smallest
of L. The method is the symmetric block Krylov-Schur iteration (Stewart,
"A Krylov-Schur algorithm for large eigenproblems", SIAM J. Matrix Anal.
Appl. 23, 2001; for symmetric M it is thick-restart Lanczos, Wu & Simon,
SIAM J. Matrix Anal. Appl. 22, 2000):

1. expand an orthonormal basis V by blocks, V_{j+1} R_j = M V_j - V H_j,
   with full reorthogonalization (classical Gram-Schmidt, twice), until it
   holds ``basis_size`` vectors;
2. take Ritz pairs of the projected matrix H = V^T M V; pair i's residual is
   ||R_last S_i|| (no extra products with M);
3. stop when the k wanted residuals are <= tol * c; else keep the best
   ``k + (basis_size - k) // 2`` Ritz vectors plus the residual block
   (thick restart) and go to 1.

A block of b vectors finds eigenvalues of multiplicity up to b; an answer
holding b copies of a value is checked for more by deflated runs
(``multiplicity``). Matrix products are (n, b) blocks, which a GPU does at
nearly the cost of one vector. Full reorthogonalization costs O(n * basis_size) per vector, fine for
k <= 64.
"""

from __future__ import annotations

from typing import Any

import torch

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
from graphopt.solvers.eigen.multiplicity import certify_multiplicity
from graphopt.solvers.validation import check_int_in_range


def lanczos_torch(
    L: Any,
    k: int,
    *,
    block_size: int | None = None,
    basis_size: int | None = None,
    tol: float | None = None,
    max_restarts: int = 500,
    seed: int = 0,
    residual_tol: float | None = None,
) -> EigenResult:
    """k smallest eigenpairs of ``L`` by block Lanczos on c I - L, in L's dtype and device.

    ``block_size`` b defaults to min(k, 4); ``basis_size`` to
    max(3k, k + 48) (capped by n - 2b); ``tol`` (relative to c) defaults
    to residual_tol / 10. Connected components are solved separately
    (``components``) and repeated eigenvalues are certified by deflated runs
    (``multiplicity``); components of fewer than k + 3b nodes by dense ``eigh``.
    """
    problem = prepare(L, k)
    check_common_options(tol=tol, seed=seed, residual_tol=residual_tol)
    max_restarts = check_int_in_range(max_restarts, "max_restarts", 0)
    if block_size is not None:
        block_size = check_int_in_range(block_size, "block_size", 1, problem.k + 1)
    b = block_size or min(problem.k, 4)
    if basis_size is not None:
        basis_size = check_int_in_range(basis_size, "basis_size", problem.k + b)
    tolerance = residual_target(problem.dtype, residual_tol)
    relative_tol = tol or tolerance / 10

    def solve(part: Problem) -> BlockSolution:
        def run(count: int, locked: torch.Tensor | None, round_: int) -> BlockSolution:
            basis = basis_size or max(3 * count, count + 48)
            m = min(basis, part.n - 2 * b - (0 if locked is None else locked.shape[1]))
            return _krylov_schur(
                part, count, b, m, relative_tol, max_restarts, seed + round_, locked
            )

        return certify_multiplicity(
            part,
            run(part.k, None, 0),
            lambda _, locked, count, round_: run(count, locked, round_),
            block_size=b,
            tolerance=tolerance,
        )

    values, vectors, solver_ok, info = solve_by_components(
        problem, solve, min_size=problem.k + 3 * b
    )
    return finish(
        problem,
        values,
        vectors,
        "lanczos_torch",
        solver_ok=solver_ok,
        residual_tol=residual_tol,
        info=info,
    )


def _krylov_schur(
    problem: Problem,
    k: int,
    b: int,
    m: int,
    relative_tol: float,
    max_restarts: int,
    seed: int,
    locked: torch.Tensor | None = None,
) -> BlockSolution:
    """The k largest eigenpairs of c I - L by thick-restart block Lanczos (module doc),
    on the orthogonal complement of the columns of ``locked`` when given."""
    n, matrix = problem.n, problem.to_torch()
    dtype, device = problem.dtype, problem.device
    shift = max(problem.gershgorin_bound(), torch.finfo(dtype).tiny)
    target = relative_tol * shift
    generator = torch.Generator().manual_seed(seed)
    rows_locked = None if locked is None else locked.T.to(device, dtype)

    def flipped(rows: torch.Tensor) -> torch.Tensor:  # (c I - L) applied to each row
        product = shift * rows - matvec(matrix, rows.T).T
        return product if rows_locked is None else _deflate(product, rows_locked)

    # basis vectors are rows, so every slice below is contiguous
    basis = torch.zeros(m + 2 * b, n, dtype=dtype, device=device)
    projected = torch.zeros(m + 2 * b, m + b, dtype=dtype, device=device)
    start = start_vectors(n, b, seed, dtype).to(device).T
    if rows_locked is not None:
        start = _deflate(start, rows_locked)
    basis[:b] = _orthonormal_rows(start, basis[:0], generator, rows_locked)[0]
    kept, converged, restarts, products = 0, False, 0, 0
    while True:
        q = kept
        while q < m:  # expand: rows q..q+b-1 are the newest block
            block = flipped(basis[q : q + b])
            products += b
            coefficients = basis[: q + b] @ block.T
            block = block - coefficients.T @ basis[: q + b]
            again = basis[: q + b] @ block.T
            block = block - again.T @ basis[: q + b]
            projected[: q + b, q : q + b] = coefficients + again
            new, upper = _orthonormal_rows(block, basis[: q + b], generator, rows_locked)
            basis[q + b : q + 2 * b] = new
            projected[q + b : q + 2 * b, q : q + b] = upper
            q += b
        ritz_values, ritz_vectors = torch.linalg.eigh(_symmetric(projected[:q, :q]))
        ritz_values, ritz_vectors = ritz_values.flip(0), ritz_vectors.flip(1)  # largest first
        residuals = (projected[q : q + b, :q] @ ritz_vectors).norm(dim=0)
        converged = bool((residuals[:k] <= target).all())
        if converged or restarts >= max_restarts:
            break
        restarts += 1
        kept = k + (q - k) // 2
        tail = projected[q : q + b, :q] @ ritz_vectors[:, :kept]
        basis[:kept] = ritz_vectors[:, :kept].T @ basis[:q]
        basis[kept : kept + b] = basis[q : q + b].clone()
        projected.zero_()
        projected[:kept, :kept] = torch.diag(ritz_values[:kept])
        projected[kept : kept + b, :kept] = tail
        projected[:kept, kept : kept + b] = tail.T
    vectors = basis[:q].T @ ritz_vectors[:, :k]
    info = {"restarts": restarts, "matvecs": products, "shift": shift, "block_size": b}
    return shift - ritz_values[:k], vectors, converged, info


def _deflate(rows: torch.Tensor, locked: torch.Tensor) -> torch.Tensor:
    """The rows with their components along the (orthonormal) ``locked`` rows removed."""
    return rows - (rows @ locked.T) @ locked


def _symmetric(matrix: torch.Tensor) -> torch.Tensor:
    return 0.5 * (matrix + matrix.T)


def _orthonormal_rows(
    block: torch.Tensor,
    previous: torch.Tensor,
    generator: torch.Generator,
    locked: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Q, R with block = R^T Q for rows: Q orthonormal rows, orthogonal to ``previous``.

    Row-wise Gram-Schmidt (twice); a row that vanishes (the Krylov space
    became invariant) is replaced by a random vector orthogonal to everything
    so far, with a zero row in R, which keeps the decomposition exact.
    """
    width, n = block.shape
    q = torch.zeros_like(block)
    r = torch.zeros(width, width, dtype=block.dtype, device=block.device)
    scale = float(block.norm()) if block.numel() else 0.0
    for i in range(width):
        row = block[i]
        for _ in range(2):
            weights = q[:i] @ row
            r[:i, i] += weights
            row = row - weights @ q[:i] - (previous @ row) @ previous
        norm = float(row.norm())
        if norm <= 1e-10 * max(scale, 1e-300):  # invariant subspace: a fresh direction
            row = torch.randn(n, generator=generator, dtype=torch.float64).to(block)
            for _ in range(3):
                row = row - (q[:i] @ row) @ q[:i] - (previous @ row) @ previous
                row = row if locked is None else _deflate(row[None], locked)[0]
            norm = 0.0
        r[i, i] = norm
        q[i] = row / row.norm()
    return q, r
