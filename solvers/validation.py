"""Input checks shared by every solver: each raises ``ValueError`` naming the
argument and the problem, before any work is done."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch


def as_tensor(
    value: Any,
    name: str,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, bool]:
    """``value`` as a floating torch tensor, and whether the caller passed numpy.

    numpy (and lists) become float64 on CPU unless ``dtype``/``device`` say
    otherwise; a torch tensor keeps its device and floating dtype unless told.
    Solvers use the flag to answer numpy callers with numpy.
    """
    from_numpy = not isinstance(value, torch.Tensor)
    if from_numpy:
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} must be a numeric array; got {type(value).__name__}") from err
        tensor = torch.from_numpy(array)
    else:
        tensor = value
        if not (tensor.is_floating_point() or tensor.dtype in (torch.int32, torch.int64)):
            raise ValueError(f"{name} must be a real floating tensor; got dtype {tensor.dtype}")
    target_dtype = dtype or (tensor.dtype if tensor.is_floating_point() else torch.float64)
    return tensor.to(device=device, dtype=target_dtype), from_numpy


def check_finite(tensor: torch.Tensor, name: str) -> None:
    """Reject NaN and infinite entries."""
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} contains NaN or infinite values")


def check_square(tensor: torch.Tensor, name: str) -> int:
    """Reject anything but a 2-D square matrix; return its size."""
    if tensor.ndim != 2 or tensor.shape[0] != tensor.shape[1]:
        raise ValueError(f"{name} must be a square matrix; got shape {tuple(tensor.shape)}")
    if tensor.shape[0] == 0:
        raise ValueError(f"{name} must not be empty")
    return int(tensor.shape[0])


def check_symmetric(tensor: torch.Tensor, name: str, rtol: float = 1e-8) -> None:
    """Reject a matrix that differs from its transpose by more than ``rtol`` * max|entry|."""
    scale = float(tensor.abs().max()) if tensor.numel() else 0.0
    gap = float((tensor - tensor.T).abs().max()) if tensor.numel() else 0.0
    if gap > rtol * max(scale, 1.0):
        raise ValueError(f"{name} must be symmetric; max |{name} - {name}.T| = {gap:.3g}")


def check_square_symmetric_finite(tensor: torch.Tensor, name: str) -> int:
    """The checks every symmetric-matrix solver starts with; returns the size."""
    size = check_square(tensor, name)
    check_finite(tensor, name)
    check_symmetric(tensor, name)
    return size


def check_positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """A real scalar > 0 (or >= 0 with ``allow_zero``), as float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite real number; got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}; got {value!r}")
    return float(value)


def check_int_in_range(value: Any, name: str, low: int, high: int | None = None) -> int:
    """An integer with low <= value (< high when given)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer; got {value!r}")
    if value < low or (high is not None and value >= high):
        bound = f">= {low}" + (f" and < {high}" if high is not None else "")
        raise ValueError(f"{name} must be {bound}; got {value}")
    return int(value)


def check_positive_semidefinite(tensor: torch.Tensor, name: str, *, definite: bool = False) -> None:
    """Reject a symmetric matrix that is not positive semidefinite (or definite).

    One Cholesky factorization (no eigendecomposition): semidefinite means
    ``A + 1e-8 max(|A_ii|) I`` factorizes, definite that ``A`` itself does; the
    diagonal must be positive either way.
    """
    diagonal = tensor.diagonal()
    if not bool((diagonal > 0).all()):
        raise ValueError(
            f"{name} must have a positive diagonal; min {name}_ii = {float(diagonal.min()):.3g}"
        )
    shift = 0.0 if definite else 1e-8 * float(diagonal.max())
    eye = torch.eye(tensor.shape[0], dtype=tensor.dtype, device=tensor.device)
    if int(torch.linalg.cholesky_ex(tensor + shift * eye)[1]) != 0:
        kind = "positive definite" if definite else "positive semidefinite"
        raise ValueError(f"{name} must be {kind} (its Cholesky factorization failed)")


def check_symmetric_matrix(
    matrix: Any, name: str, *, nonnegative: bool = False, hint: str = ""
) -> int:
    """Square, finite, symmetric (and optionally non-negative) matrix of any storage.

    Accepts a torch tensor (dense, COO, CSR; checked on its own device), a
    scipy sparse matrix or a numpy array; only stored entries are read, so a
    sparse matrix is never densified. Symmetric means max |A - A^T| <=
    1e-8 max(max |A_ij|, 1). Returns the size; ``hint`` is appended to the
    asymmetry message.
    """
    import scipy.sparse as sp

    if isinstance(matrix, torch.Tensor):
        if not matrix.is_floating_point():
            raise ValueError(f"{name} must be a floating tensor; got dtype {matrix.dtype}")
        shape = tuple(matrix.shape)
    else:
        shape = tuple(getattr(matrix, "shape", np.shape(matrix)))
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square matrix; got shape {shape}")
    if isinstance(matrix, torch.Tensor):
        dense = matrix.layout == torch.strided
        coo = matrix.detach() if dense else matrix.detach().to_sparse_coo().coalesce()
        values = coo if dense else coo.values()
        gap = coo - coo.T if dense else (coo - coo.t()).coalesce().values()
        finite = bool(torch.isfinite(values).all())
        stats = [float(v.abs().max()) if v.numel() else 0.0 for v in (values, gap)]
        low = float(values.min()) if values.numel() else 0.0
    else:
        array = sp.csr_array(matrix, dtype=np.float64) if sp.issparse(matrix) else None
        if array is None:
            array = np.asarray(matrix, dtype=np.float64)
            values, gap = array, array - array.T
        else:
            values, gap = array.data, (array - array.T).data
        finite = bool(np.isfinite(values).all())
        stats = [float(np.abs(v).max()) if v.size else 0.0 for v in (values, gap)]
        low = float(values.min()) if values.size else 0.0
    if not finite:
        raise ValueError(f"{name} contains NaN or infinite values")
    if nonnegative and low < 0:
        raise ValueError(f"{name} must have non-negative entries; min entry {low:.3g}")
    scale, asymmetry = stats
    if asymmetry > 1e-8 * max(scale, 1.0):
        raise ValueError(
            f"{name} must be symmetric; max |{name} - {name}.T| = {asymmetry:.3g}{hint}"
        )
    return int(shape[0])
