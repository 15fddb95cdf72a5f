"""What every eigensolver shares: the result, input checks, conversions, finishing.

Each solver takes a symmetric matrix ``L`` (torch dense/COO/CSR, scipy sparse
or numpy) and ``k`` and returns an ``EigenResult`` in the caller's kind of
array: torch tensors on L's device and in its dtype for torch input, numpy
float64 otherwise.

Conventions, the same for every solver:

- values ascending; each eigenvector has unit norm and its largest-magnitude
  entry positive (the first such entry on ties), so results are reproducible;
- ``residuals[i] = ||L u_i - l_i u_i|| / ||L||`` with ||L|| taken as the
  infinity norm max_i sum_j |L_ij| (one pass over the nonzeros; for a symmetric
  matrix an upper bound on the spectral norm, within a factor 2 of it for a
  Laplacian, whose largest eigenvalue is at least the largest degree);
- ``converged`` is the solver's own success and every residual <=
  ``residual_tol``; when not, a ``ConvergenceWarning`` is issued.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from graphopt.solvers.validation import (
    as_numpy,
    check_int_in_range,
    check_positive,
    check_symmetric_matrix,
    working_dtype,
)

NORM_RANGE = (2.0**-16, 2.0**16)
"""L is rescaled (by a power of two, exactly) when ||L|| is outside this range: ARPACK's
thresholds are absolute and it failed on a kNN Laplacian times 1e-20 (and shift-invert
at 1e-10), and far outside it solver steps overflow or underflow."""


class ConvergenceWarning(UserWarning):
    """An eigensolver stopped before its residuals reached the tolerance."""


@dataclass
class EigenResult:
    """The k smallest eigenpairs of a symmetric matrix, and how well they were found.

    ``values`` ascending (k,); ``vectors`` (n, k) orthonormal columns;
    ``residuals`` (k,) = ||L u - l u|| / ||L||; ``method`` the solver's
    registered name; ``converged`` whether every pair met the tolerance;
    ``info`` solver details (iterations, matrix-vector products, shift).
    """

    values: Any
    vectors: Any
    residuals: Any
    method: str
    converged: bool
    info: dict[str, Any] = field(default_factory=dict)


def default_residual_tol(dtype: torch.dtype) -> float:
    """1e-6 relative residual in float64 (the project's target), 1e-4 in lower precision."""
    return 1e-6 if dtype == torch.float64 else 1e-4


def residual_target(dtype: torch.dtype, residual_tol: float | None) -> float:
    """``residual_tol`` if given, else the default for ``dtype``."""
    return default_residual_tol(dtype) if residual_tol is None else residual_tol


def check_common_options(
    *,
    tol: float | None = None,
    max_iter: int | None = None,
    seed: int = 0,
    residual_tol: float | None = None,
) -> None:
    """Validate the options most solvers share: positive tolerances, max_iter >= 1
    (None: the solver's default), an integer seed >= 0."""
    for name, value in (("tol", tol), ("residual_tol", residual_tol)):
        if value is not None:
            check_positive(value, name)
    if max_iter is not None:
        check_int_in_range(max_iter, "max_iter", 1)
    check_int_in_range(seed, "seed", 0)


@dataclass
class Problem:
    """A validated eigenproblem: L (kept in scipy form for scipy/numpy-sparse input,
    so CPU solvers never convert it) plus where the answer must go."""

    matrix: torch.Tensor | sp.csr_array  # torch dense / coalesced COO, or float64 CSR
    k: int
    torch_output: bool
    norm: float  # infinity norm of ``matrix``, the residual scale
    scale: float = 1.0  # L = scale * matrix (a power of two; see ``prepare``)

    @property
    def n(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def device(self) -> torch.device:
        return self.matrix.device if self.is_torch else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return self.matrix.dtype if self.is_torch else torch.float64

    @property
    def is_torch(self) -> bool:
        return isinstance(self.matrix, torch.Tensor)

    @property
    def nnz(self) -> int:
        if not self.is_torch:
            return int(self.matrix.nnz)
        return int(self.matrix._nnz()) if self.matrix.is_sparse else self.n * self.n

    def to_scipy(self) -> sp.csr_array:
        """L as a float64 scipy CSR array on the CPU (for ARPACK and scipy LOBPCG)."""
        if not self.is_torch:
            return self.matrix
        matrix = self.matrix.detach().to("cpu", torch.float64)
        if matrix.layout == torch.strided:
            return sp.csr_array(matrix.numpy())
        rows, cols = matrix.indices().numpy()
        return sp.csr_array((matrix.values().numpy(), (rows, cols)), shape=(self.n, self.n))

    def to_torch(self) -> torch.Tensor:
        """L as a torch tensor (dense, or sparse COO) on its device."""
        if self.is_torch:
            return self.matrix
        coo = self.matrix.tocoo()
        indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
        values = torch.from_numpy(np.asarray(coo.data, dtype=np.float64))
        return torch.sparse_coo_tensor(indices, values, coo.shape, check_invariants=False)

    def gershgorin_bound(self) -> float:
        """max_i (L_ii + sum_{j != i} |L_ij|) >= lambda_max (2 d_max for L = D - W)."""
        if not self.is_torch:
            diagonal = self.matrix.diagonal()
            absolute = np.asarray(abs(self.matrix).sum(axis=1)).ravel()
            return float((absolute - np.abs(diagonal) + diagonal).max())
        return _row_sums(self.matrix, signed_diagonal=True)

    def gershgorin_lower_bound(self) -> float:
        """min_i (L_ii - sum_{j != i} |L_ij|) <= lambda_min (0 for L = D - W): the
        Gershgorin bound of -L, negated."""
        negated = Problem(-self.matrix, self.k, self.torch_output, self.norm)
        return -negated.gershgorin_bound()


def prepare(L: Any, k: int) -> Problem:
    """Validate ``L`` (square, finite, symmetric, an accepted dtype) and ``k`` (1 <= k < n).

    Half-precision tensors are solved in float32, integer ones in float64. An
    L whose norm is outside ``NORM_RANGE`` is divided by a power of two
    (exact), so results do not depend on L's units; ``finish`` scales the
    eigenvalues back.
    """
    n = check_symmetric_matrix(L, "L", hint=RANDOM_WALK_HINT)
    k = check_int_in_range(k, "k", 1, n)
    if sp.issparse(L):
        matrix: torch.Tensor | sp.csr_array = sp.csr_array(L, dtype=np.float64)
        norm = float(np.asarray(abs(matrix).sum(axis=1)).max())
        torch_output = False
    else:
        if isinstance(L, torch.Tensor):
            matrix = L.detach().to(working_dtype(L.dtype, "L"))
            matrix = matrix.to_sparse_coo().coalesce() if matrix.layout != torch.strided else matrix
        else:
            matrix = torch.from_numpy(as_numpy(L, "L").astype(np.float64))
        norm = _row_sums(matrix, signed_diagonal=False)
        torch_output = isinstance(L, torch.Tensor)
    if norm == 0 or NORM_RANGE[0] <= norm <= NORM_RANGE[1]:
        return Problem(matrix, k, torch_output, norm)
    # the largest entry is finite even when a row sum overflows: scale by it first
    size = norm if math.isfinite(norm) else _largest_entry(matrix)
    scale = math.ldexp(1.0, math.frexp(size)[1] - 1)  # the power of two <= size
    matrix = matrix / scale
    norm = (
        float(np.asarray(abs(matrix).sum(axis=1)).max())
        if sp.issparse(matrix)
        else (_row_sums(matrix, signed_diagonal=False))
    )
    return Problem(matrix, k, torch_output, norm, scale)


def _largest_entry(matrix: torch.Tensor | sp.csr_array) -> float:
    if sp.issparse(matrix):
        return float(np.abs(matrix.data).max())
    values = matrix.values() if matrix.is_sparse else matrix
    return float(values.abs().max())


RANDOM_WALK_HINT = (
    " (a random-walk Laplacian is not: use the symmetric normalized one, whose "
    "eigenvectors u give D^-1/2 u)"
)


def start_vectors(
    n: int, columns: int, seed: int, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Deterministic Gaussian start block (n, columns), identical on every device."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, columns, generator=generator, dtype=torch.float64).to(dtype)


def matvec(matrix: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
    """L @ block for a dense or sparse torch L."""
    return torch.sparse.mm(matrix, block) if matrix.is_sparse else matrix @ block


def finish(
    problem: Problem,
    values: Any,
    vectors: Any,
    method: str,
    *,
    solver_ok: bool = True,
    residual_tol: float | None = None,
    info: dict[str, Any] | None = None,
) -> EigenResult:
    """Sort, normalize signs, compute residuals, set ``converged`` (warn if not).

    ``values``/``vectors`` may be numpy or torch; they are returned on L's
    device and dtype (torch input) or as numpy float64.
    """
    device = problem.device if problem.torch_output else torch.device("cpu")
    dtype = problem.dtype if problem.torch_output else torch.float64
    lam = torch.as_tensor(np.asarray(values) if not isinstance(values, torch.Tensor) else values)
    vec = torch.as_tensor(np.asarray(vectors) if not isinstance(vectors, torch.Tensor) else vectors)
    lam, vec = lam.to(device, dtype), vec.to(device, dtype)
    order = torch.argsort(lam)[: problem.k]
    lam, vec = lam[order], vec[:, order]
    vec = vec / vec.norm(dim=0, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
    pivot = vec.abs().argmax(dim=0)
    signs = torch.sign(vec[pivot, torch.arange(vec.shape[1], device=device)])
    vec = vec * torch.where(signs == 0, 1.0, signs).to(dtype)
    if problem.is_torch:
        applied = matvec(problem.matrix.to(device, dtype), vec)
    else:
        applied = torch.from_numpy(problem.matrix @ vec.numpy())
    residual = applied - vec * lam[None, :]
    residuals = residual.norm(dim=0) / max(problem.norm, torch.finfo(dtype).tiny)
    tol = residual_target(dtype, residual_tol)
    finite = bool(torch.isfinite(lam).all()) and bool(torch.isfinite(vec).all())
    complete = lam.shape[0] == problem.k
    converged = bool(solver_ok and finite and complete and bool((residuals <= tol).all()))
    if not converged:
        worst = float(residuals.max()) if finite and lam.numel() else float("nan")
        warnings.warn(
            f"eigensolver {method!r} did not converge: {lam.shape[0]} of {problem.k} pairs, "
            f"max residual {worst:.3g} (tolerance {tol:.1e}, solver reported "
            f"{'success' if solver_ok else 'failure'})",
            ConvergenceWarning,
            stacklevel=3,
        )
    lam = lam * problem.scale
    if not problem.torch_output:
        lam, vec, residuals = lam.numpy(), vec.numpy(), residuals.numpy()
    details = dict(info or {})
    if problem.scale != 1.0:
        details["scale"] = problem.scale
    return EigenResult(lam, vec, residuals, method, converged, details)


def _row_sums(matrix: torch.Tensor, *, signed_diagonal: bool) -> float:
    """max_i sum_j |L_ij|, or with the diagonal counted with its sign (Gershgorin)."""
    if matrix.is_sparse:
        rows, cols = matrix.indices()
        values = matrix.values()
        magnitude = values.abs()
        if signed_diagonal:
            magnitude = torch.where(rows == cols, values, magnitude)
        sums = torch.zeros(matrix.shape[0], dtype=values.dtype, device=values.device)
        sums.index_add_(0, rows, magnitude)
    else:
        magnitude = matrix.abs()
        if signed_diagonal:
            magnitude = magnitude - torch.diag(magnitude.diagonal() - matrix.diagonal())
        sums = magnitude.sum(dim=1)
    return float(sums.max())
