"""Block inverse iteration for the k smallest eigenpairs, a graphopt ``eigensolver`` plugin.

Subspace (block) inverse iteration with Rayleigh-Ritz (Saad, "Numerical Methods
for Large Eigenvalue Problems", 2nd ed., 2011, sections 5.1 and 4.3): with
A = L + sigma I (positive definite for a Laplacian, sigma > 0) factored once by
a sparse LU, repeat

    Y = A^-1 X,  X = orth(Y),  X^T L X = W T W^T,  X <- X W

until the k lowest Ritz pairs (t_i, x_i) have ||L x_i - t_i x_i|| / ||L||_inf <= tol.
A block of b = 2k + 2 columns converges at the rate (l_k + sigma) / (l_b + sigma)
per iteration, so the gap after the k-th eigenvalue is not needed.

The contract of an eigensolver (docs/plugins/eigensolver.md): L symmetric, as
a torch tensor (dense or sparse, any device), a scipy sparse matrix or a numpy
array; the answer in the caller's kind of array (torch on L's device and dtype,
else numpy float64); values ascending; unit vectors with their largest-magnitude
entry positive; ``converged`` only when every residual meets the tolerance, with
a ``ConvergenceWarning`` otherwise; bad input is a ``ValueError``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg
import torch

from graphopt.solvers.eigen import ConvergenceWarning, EigenResult


def inverse_subspace(
    L: Any,
    k: int,
    *,
    tol: float | None = None,
    max_iter: int = 300,
    shift: float = 1e-4,
    seed: int = 0,
) -> EigenResult:
    """The k smallest eigenpairs of symmetric L by block inverse iteration.

    Args:
        L: symmetric (n, n) matrix: torch (dense or sparse), scipy sparse or numpy.
        k: number of eigenpairs, 1 <= k < n.
        tol: residual tolerance; default 1e-6 (float64 input) or 1e-4 (float32).
        max_iter: iteration limit.
        shift: sigma as a fraction of ||L||_inf (A = L + sigma I must be invertible).
        seed: seed of the random start block.
    """
    matrix, output = _to_scipy(L)
    n = matrix.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < n:
        raise ValueError(f"k must be an integer in [1, {n - 1}] for a {n} x {n} matrix; got {k!r}")
    if tol is None:
        tol = 1e-4 if output is not None and output.dtype != torch.float64 else 1e-6
    norm = max(float(abs(matrix).sum(axis=1).max()), np.finfo(float).tiny)
    solve = scipy.sparse.linalg.splu(sp.csc_matrix(matrix + shift * norm * sp.eye(n))).solve
    block = min(n, 2 * k + 2)
    x = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, block)))[0]
    iterations = 0
    while True:
        iterations += 1
        x = np.linalg.qr(solve(x))[0]
        ritz_values, rotation = scipy.linalg.eigh(x.T @ (matrix @ x))
        x = x @ rotation
        values, vectors = ritz_values[:k], x[:, :k]
        residuals = np.linalg.norm(matrix @ vectors - vectors * values, axis=0) / norm
        if residuals.max() <= tol or iterations == max_iter:
            break
    converged = bool(residuals.max() <= tol)
    if not converged:
        warnings.warn(
            f"inverse_subspace did not converge in {max_iter} iterations: max residual "
            f"{residuals.max():.3g} > tol {tol:.1e}",
            ConvergenceWarning,
            stacklevel=2,
        )
    pivots = vectors[np.abs(vectors).argmax(axis=0), np.arange(k)]
    vectors = vectors * np.where(pivots < 0, -1.0, 1.0)
    info = {"iterations": iterations, "shift": shift * norm, "block": block}
    if output is None:
        return EigenResult(values, vectors, residuals, "inverse_subspace", converged, info)
    arrays = [
        torch.from_numpy(a).to(device=output.device, dtype=output.dtype)
        for a in (values, vectors, residuals)
    ]
    return EigenResult(*arrays, "inverse_subspace", converged, info)


def _to_scipy(L: Any) -> tuple[sp.csr_array, torch.Tensor | None]:
    """L as a float64 scipy CSR array (checked square, finite, symmetric) and, for torch
    input, L itself (whose device and dtype the answer takes)."""
    shape = tuple(getattr(L, "shape", np.shape(L)))
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] < 2:
        raise ValueError(f"L must be a square matrix of size >= 2; got shape {shape}")
    output = L if isinstance(L, torch.Tensor) else None
    if output is not None and L.layout == torch.strided:
        matrix = sp.csr_array(L.detach().to("cpu", torch.float64).numpy())
    elif output is not None:
        coo = L.detach().to_sparse_coo().coalesce().to("cpu", torch.float64)
        rows, cols = coo.indices().numpy()
        matrix = sp.csr_array((coo.values().numpy(), (rows, cols)), shape=tuple(coo.shape))
    elif sp.issparse(L):
        matrix = sp.csr_array(L, dtype=np.float64)
    else:
        matrix = sp.csr_array(np.asarray(L, dtype=np.float64))
    if not np.isfinite(matrix.data).all():
        raise ValueError("L contains NaN or infinite values")
    asymmetry = abs(matrix - matrix.T).max() if matrix.nnz else 0.0
    if asymmetry > 1e-8 * max(abs(matrix).max(), 1.0):
        raise ValueError(f"L must be symmetric; max |L - L^T| = {asymmetry:.3g}")
    return matrix, output
