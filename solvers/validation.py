"""Input checks shared by every solver, graph and eigensolver entry point.

Each check raises ``ValueError`` naming the argument and the problem, before
any work is done. The same rules hold for torch tensors, numpy arrays and
nested lists:

- accepted element types (``ACCEPTED_DTYPES``): float64 and float32 (kept),
  float16 and bfloat16 (computed in float32: no solver tolerance is reachable
  in half precision), signed and unsigned integers (converted to float64);
  complex, bool, string and object data are rejected, never silently cast
  (numpy would drop an imaginary part with only a ``ComplexWarning``);
- a torch tensor that requires grad is detached: solvers are not
  differentiable and their results carry no autograd graph;
- sparse input (scipy or torch) is rejected where a dense array is expected,
  with the same message for both;
- integers are exact: 3, ``np.int64(3)`` and 3.0 are 3; 3.5, ``True`` and
  ``"3"`` are rejected.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch

TORCH_KEPT_DTYPES: tuple[torch.dtype, ...] = (torch.float64, torch.float32)
"""Floating tensor dtypes a solver computes and answers in."""

TORCH_HALF_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16)
"""Half-precision tensor dtypes, computed in float32."""

TORCH_INTEGER_DTYPES: tuple[torch.dtype, ...] = (
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.uint8,
)
"""Integer tensor dtypes, converted to float64."""

NUMPY_KINDS = {"f": "floating", "i": "signed integer", "u": "unsigned integer"}
"""numpy dtype kinds accepted (numpy input is converted to float64)."""

ACCEPTED_DTYPES = (
    "float64, float32 (kept); float16, bfloat16 (computed in float32); "
    "int8, int16, int32, int64, uint8 and numpy's other integer types (as float64)"
)
"""The accepted element types, as error messages state them."""


def working_dtype(dtype: torch.dtype | np.dtype, name: str) -> torch.dtype:
    """The torch dtype a solver computes in for input of ``dtype``, or ``ValueError``."""
    if isinstance(dtype, torch.dtype):
        if dtype in TORCH_KEPT_DTYPES:
            return dtype
        if dtype in TORCH_HALF_DTYPES:
            return torch.float32
        if dtype in TORCH_INTEGER_DTYPES:
            return torch.float64
    elif np.dtype(dtype).kind in NUMPY_KINDS:
        return torch.float64
    raise ValueError(f"{name} must hold real numbers ({ACCEPTED_DTYPES}); got dtype {dtype}")


def reject_sparse(value: Any, name: str) -> None:
    """A dense array is expected: the same ``ValueError`` for scipy and torch sparse input."""
    import scipy.sparse as sp

    kind = None
    if sp.issparse(value):
        kind = f"a scipy sparse {type(value).__name__}"
    elif isinstance(value, torch.Tensor) and value.layout != torch.strided:
        kind = f"a torch {str(value.layout).removeprefix('torch.')} tensor"
    if kind is not None:
        raise ValueError(
            f"{name} must be a dense array (numpy, torch or nested lists); got {kind} "
            "(convert it with .toarray() / .to_dense())"
        )


def as_numpy(value: Any, name: str) -> np.ndarray:
    """A numpy array or nested list as an array of an accepted kind (not yet converted)."""
    if isinstance(value, (str, bytes)):
        raise ValueError(f"{name} must be a numeric array; got {type(value).__name__}")
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as err:  # ragged nested lists
        raise ValueError(f"{name} must be a numeric array; got {type(value).__name__}") from err
    if array.dtype.kind not in NUMPY_KINDS:
        detail = f"dtype {array.dtype}" if array.dtype.kind != "O" else type(value).__name__
        raise ValueError(f"{name} must hold real numbers ({ACCEPTED_DTYPES}); got {detail}")
    return array


def as_tensor(
    value: Any,
    name: str,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, bool]:
    """``value`` as a dense floating torch tensor, and whether the caller passed numpy.

    numpy arrays and lists become float64 on the CPU; a torch tensor keeps its
    device and dtype (float32/float64; half precision becomes float32,
    integers float64) and is detached from autograd. ``dtype``/``device``
    override both. Solvers use the flag to answer numpy callers with numpy.
    """
    reject_sparse(value, name)
    from_numpy = not isinstance(value, torch.Tensor)
    if from_numpy:
        tensor = torch.from_numpy(as_numpy(value, name).astype(np.float64))
    else:
        tensor = value.detach()
    target = dtype or working_dtype(tensor.dtype, name)
    return tensor.to(device=device, dtype=target), from_numpy


def check_device(device: Any, name: str) -> torch.device | None:
    """``device`` (None, a string or ``torch.device``) as a usable ``torch.device``:
    ``ValueError`` for a malformed name or a device this machine does not have."""
    if device is None:
        return None
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"{name} must be a torch device such as 'cpu', 'cuda' or 'cuda:1'; got {device!r}"
        ) from None
    if parsed.type == "cpu":
        return parsed
    backend = getattr(torch, parsed.type, None)
    if parsed.type == "mps":
        backend = torch.backends.mps
    if backend is None or not hasattr(backend, "is_available") or not backend.is_available():
        raise ValueError(f"{name} is {device!r} but no {parsed.type} device is available here")
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if parsed.index is not None and parsed.index >= count:
        raise ValueError(
            f"{name} is {device!r} but this machine has {count} {parsed.type} device(s)"
        )
    return parsed


def check_finite(tensor: torch.Tensor, name: str) -> None:
    """Reject NaN and infinite entries."""
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} contains NaN or infinite values")


def check_matrix(tensor: torch.Tensor, name: str, *, min_columns: int = 1) -> tuple[int, int]:
    """Reject anything but a 2-D matrix with >= 1 row and >= ``min_columns`` columns."""
    if tensor.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, d) matrix; got shape {tuple(tensor.shape)}")
    rows, columns = tensor.shape
    if rows == 0 or columns < min_columns:
        raise ValueError(
            f"{name} must have at least 1 row and {min_columns} column(s); "
            f"got shape {tuple(tensor.shape)}"
        )
    return int(rows), int(columns)


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


def as_real(value: Any, name: str) -> float:
    """A real scalar (Python, numpy or a one-element tensor/array; not bool) as a float.

    NaN and infinities pass through; callers bound the value.
    """
    scalar = _scalar(value, name, "a real number")
    if not isinstance(scalar, numbers.Real):
        raise ValueError(f"{name} must be a real number; got {value!r}")
    return float(scalar)


def check_real(
    value: Any,
    name: str,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    open_low: bool = False,
    open_high: bool = False,
) -> float:
    """A finite real number in the interval from ``low`` to ``high`` (ends closed unless open)."""
    number = as_real(value, name)
    inside = (number > low if open_low else number >= low) and (
        number < high if open_high else number <= high
    )
    if not math.isfinite(number) or not inside:
        left, right = "(" if open_low else "[", ")" if open_high else "]"
        interval = f"{left}{low:g}, {high:g}{right}"
        raise ValueError(f"{name} must be a finite number in {interval}; got {value!r}")
    return number


def check_positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """A finite real scalar > 0 (or >= 0 with ``allow_zero``), as float."""
    number = as_real(value, name)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite real number; got {value!r}")
    if number < 0 or (number == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}; got {value!r}")
    return number


def as_integer(value: Any, name: str) -> int:
    """An exact integer: ints, numpy integers, integral floats (3.0) and one-element
    integer or float arrays/tensors; bools, 3.5, NaN and strings are rejected."""
    scalar = _scalar(value, name, "an integer")
    if isinstance(scalar, numbers.Integral):
        return int(scalar)
    if isinstance(scalar, numbers.Real) and math.isfinite(scalar) and float(scalar).is_integer():
        return int(scalar)
    raise ValueError(f"{name} must be an integer; got {value!r}")


def check_int_in_range(value: Any, name: str, low: int, high: int | None = None) -> int:
    """An exact integer (``as_integer``) with low <= value (< high when given)."""
    number = as_integer(value, name)
    if number < low or (high is not None and number >= high):
        bound = f">= {low}" + (f" and < {high}" if high is not None else "")
        raise ValueError(f"{name} must be {bound}; got {number}")
    return number


def check_positive_semidefinite(
    tensor: torch.Tensor, name: str, *, definite: bool = False, eps: float | None = None
) -> None:
    """Reject a symmetric matrix that is not positive semidefinite (or definite).

    One Cholesky factorization (no eigendecomposition) of the correlation-scaled
    ``C = D^-1/2 A D^-1/2`` (so the test does not depend on A's units): semidefinite
    means ``C + t I`` factorizes, t = max(1e-8, 4 n eps) (above the rounding of the
    data: ``eps`` default the tensor dtype's; pass the input's when the check runs on
    an up-cast copy), definite that ``C`` itself does; the diagonal must be positive.
    """
    diagonal = tensor.diagonal()
    if not bool((diagonal > 0).all()):
        raise ValueError(
            f"{name} must have a positive diagonal; min {name}_ii = {float(diagonal.min()):.3g}"
        )
    root = diagonal.rsqrt()
    scaled = tensor * root[:, None] * root[None, :]
    size = tensor.shape[0]
    eps = torch.finfo(tensor.dtype).eps if eps is None else eps
    shift = 0.0 if definite else max(1e-8, 4 * size * eps)
    eye = torch.eye(size, dtype=tensor.dtype, device=tensor.device)
    if int(torch.linalg.cholesky_ex(scaled + shift * eye)[1]) != 0:
        kind = "positive definite" if definite else "positive semidefinite"
        raise ValueError(f"{name} must be {kind} (its Cholesky factorization failed)")


def check_symmetric_matrix(
    matrix: Any, name: str, *, nonnegative: bool = False, hint: str = ""
) -> int:
    """Square, finite, symmetric (and optionally non-negative) matrix of any storage.

    Accepts a torch tensor (dense, COO, CSR; checked on its own device), a
    scipy sparse matrix, a numpy array or nested lists, of an accepted dtype;
    only stored entries are read, so a sparse matrix is never densified.
    Symmetric means max |A - A^T| <= 1e-8 max(max |A_ij|, 1). Returns the size;
    ``hint`` is appended to the asymmetry message.
    """
    import scipy.sparse as sp

    if isinstance(matrix, torch.Tensor) or sp.issparse(matrix):
        working_dtype(matrix.dtype, name)
        shape = tuple(matrix.shape)
    else:
        matrix = as_numpy(matrix, name)
        shape = matrix.shape
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square matrix; got shape {shape}")
    if isinstance(matrix, torch.Tensor):
        dense = matrix.layout == torch.strided
        coo = matrix.detach() if dense else matrix.detach().to_sparse_coo().coalesce()
        coo = coo.to(working_dtype(matrix.dtype, name))
        values = coo if dense else coo.values()
        gap = coo - coo.T if dense else (coo - coo.t()).coalesce().values()
        finite = bool(torch.isfinite(values).all())
        stats = [float(v.abs().max()) if v.numel() else 0.0 for v in (values, gap)]
        low = float(values.min()) if values.numel() else 0.0
    else:
        if sp.issparse(matrix):
            array = sp.csr_array(matrix, dtype=np.float64)
            values, gap = array.data, (array - array.T).data
        else:
            array = matrix.astype(np.float64)
            values, gap = array, array - array.T
        finite = bool(np.isfinite(values).all())
        with np.errstate(over="ignore", invalid="ignore"):
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


def _scalar(value: Any, name: str, what: str) -> Any:
    """``value`` unwrapped from a one-element numeric array or tensor; bools rejected."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        count = value.numel() if isinstance(value, torch.Tensor) else value.size
        numeric = (
            value.dtype.is_floating_point or value.dtype in TORCH_INTEGER_DTYPES
            if isinstance(value, torch.Tensor)
            else value.dtype.kind in NUMPY_KINDS
        )
        if count != 1 or not numeric:
            raise ValueError(f"{name} must be {what}; got {value!r}")
        value = value.item()
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be {what}; got {value!r}")
    return value
