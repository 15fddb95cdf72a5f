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
