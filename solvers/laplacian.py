"""Graph Laplacians of a weighted adjacency, in the adjacency's own format.

With degrees d_i = sum_j w_ij and D = diag(d):

- ``"combinatorial"``: L = D - W (positive semidefinite, L 1 = 0);
- ``"symmetric"``: L = I - D^-1/2 W D^-1/2 (spectrum in [0, 2]);
- ``"random_walk"``: L = I - D^-1 W (not symmetric; same spectrum as
  ``"symmetric"``, eigenvectors D^-1/2 u).

Isolated nodes (d_i = 0) follow Chung ("Spectral Graph Theory", 1997,
section 1.2): their row and column of a normalized Laplacian are zero, so each
isolated node is a connected component with eigenvalue 0, exactly as in the
combinatorial Laplacian, and the multiplicity of 0 is the number of connected
components for every kind. A self-loop w_ii adds to d_i and is subtracted
again by W, so it does not change the combinatorial Laplacian.

A torch sparse adjacency gives a torch sparse (COO) Laplacian, a scipy sparse
one a scipy CSR array, a dense tensor or numpy array (or nested lists) a dense
one. Tensors keep their dtype, except half precision (computed in float32)
and integers (float64); degrees that overflow the dtype are a ``ValueError``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch

from graphopt.solvers.validation import as_numpy, check_symmetric_matrix, working_dtype

LaplacianKind = Literal["combinatorial", "symmetric", "random_walk"]
KINDS: tuple[str, ...] = ("combinatorial", "symmetric", "random_walk")


def laplacian(adjacency: Any, kind: LaplacianKind = "combinatorial") -> Any:
    """The Laplacian of ``adjacency`` of the given ``kind`` (see the module doc).

    ``adjacency`` is validated first (square, symmetric, non-negative, finite).
    """
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}; got {kind!r}")
    validate_adjacency(adjacency)
    w = _working_copy(adjacency)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked below
        _check_degrees_finite(_degrees(w))
    if isinstance(w, torch.Tensor) and w.is_sparse_csr:
        result = _torch_sparse_laplacian(w.to_sparse_coo(), kind).to_sparse_csr()
    elif isinstance(w, torch.Tensor) and w.layout == torch.sparse_coo:
        result = _torch_sparse_laplacian(w, kind)
    elif isinstance(w, torch.Tensor):
        result = _dense_laplacian(w, kind)
    else:
        result = _scipy_laplacian(w, kind)
    if not isinstance(adjacency, torch.Tensor) and not sp.issparse(adjacency):
        return result.numpy()
    return result


def validate_adjacency(adjacency: Any, name: str = "adjacency") -> int:
    """Check that ``adjacency`` is a valid weighted adjacency; return its size.

    Accepts torch (dense, COO, CSR; checked on its own device), scipy sparse
    and numpy matrices. Raises ``ValueError`` naming ``name`` when it is not
    square, has NaN/inf, a negative weight, or differs from its transpose by
    more than 1e-8 times its largest weight.
    """
    return check_symmetric_matrix(adjacency, name, nonnegative=True)


def degrees(adjacency: Any) -> Any:
    """Weighted degrees d_i = sum_j w_ij, as a 1-D tensor (torch input, in the dtype
    ``laplacian`` computes in) or numpy array (scipy, numpy or list input); a degree
    that overflows is a ``ValueError``."""
    validate_adjacency(adjacency)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked below
        d = _degrees(_working_copy(adjacency))
    _check_degrees_finite(d)
    return d


def _working_copy(adjacency: Any) -> Any:
    """The adjacency as the Laplacian is computed from it: torch in its working dtype
    (half precision as float32, integers as float64), scipy as float64 CSR, numpy and
    lists as a float64 torch tensor."""
    if isinstance(adjacency, torch.Tensor):
        return adjacency.detach().to(working_dtype(adjacency.dtype, "adjacency"))
    if sp.issparse(adjacency):
        return sp.csr_array(adjacency, dtype=np.float64)
    return torch.from_numpy(as_numpy(adjacency, "adjacency").astype(np.float64))


def _check_degrees_finite(d: Any) -> None:
    finite = bool(torch.isfinite(d).all()) if isinstance(d, torch.Tensor) else np.isfinite(d).all()
    if not finite:
        raise ValueError(
            "adjacency weights are too large: a degree sum_j w_ij overflows its dtype "
            "(scale the weights down; the symmetric Laplacian does not depend on their scale)"
        )


def _degrees(adjacency: Any) -> Any:
    if isinstance(adjacency, torch.Tensor):
        if adjacency.layout == torch.strided:
            return adjacency.sum(dim=1)
        coo = adjacency.to_sparse_coo().coalesce()
        out = torch.zeros(coo.shape[0], dtype=coo.dtype, device=coo.device)
        return out.index_add_(0, coo.indices()[0], coo.values())
    return np.asarray(adjacency.sum(axis=1)).ravel()


def _inverse_sqrt(d: Any) -> Any:
    """d^-1/2 with 0 where d = 0 (isolated nodes)."""
    if isinstance(d, torch.Tensor):
        return torch.where(d > 0, d.clamp_min(torch.finfo(d.dtype).tiny).rsqrt(), 0.0)
    out = np.zeros_like(d)
    np.divide(1.0, np.sqrt(d), out=out, where=d > 0)
    return out


def _row_scale(d: Any, kind: str) -> tuple[Any, Any]:
    """(left, right) scalings of W: L = diag(identity) - left W right."""
    if kind == "symmetric":
        s = _inverse_sqrt(d)
        return s, s
    s = _inverse_sqrt(d)  # random_walk: left 1/d (0 for isolated nodes), right 1
    ones = torch.ones_like(d) if isinstance(d, torch.Tensor) else np.ones_like(d)
    return s * s, ones


def _dense_laplacian(w: torch.Tensor, kind: str) -> torch.Tensor:
    d = w.sum(dim=1)
    if kind == "combinatorial":
        return torch.diag(d) - w
    left, right = _row_scale(d, kind)
    return torch.diag((d > 0).to(w.dtype)) - left[:, None] * w * right[None, :]


def _scipy_laplacian(w: sp.csr_array, kind: str) -> sp.csr_array:
    d = np.asarray(w.sum(axis=1)).ravel()
    if kind == "combinatorial":
        return sp.csr_array(sp.diags_array(d) - w)
    left, right = _row_scale(d, kind)
    scaled = sp.diags_array(left) @ w @ sp.diags_array(right)
    return sp.csr_array(sp.diags_array((d > 0).astype(np.float64)) - scaled)


def _torch_sparse_laplacian(w: torch.Tensor, kind: str) -> torch.Tensor:
    w = w.coalesce()
    n = w.shape[0]
    rows, cols = w.indices()
    d = _degrees(w)
    if kind == "combinatorial":
        off, diagonal = -w.values(), d
    else:
        left, right = _row_scale(d, kind)
        off, diagonal = -left[rows] * w.values() * right[cols], (d > 0).to(w.dtype)
    node = torch.arange(n, device=w.device)
    indices = torch.cat([w.indices(), torch.stack([node, node])], dim=1)
    values = torch.cat([off, diagonal])
    return torch.sparse_coo_tensor(indices, values, (n, n), check_invariants=False).coalesce()
