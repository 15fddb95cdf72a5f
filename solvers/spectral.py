"""Spectral regularizers and gradient filters on a graph over parameter rows.

Rows of ``X`` (dimension 0) are the graph's nodes; trailing dimensions are
flattened. Everything is torch, differentiable, and runs on the tensors' own
device (all inputs must share it). After Zhang et al., "Graph-Based Spectral
Decomposition for Parameter Coordination in Language Model Fine-Tuning"
(arXiv 2504.19583, 2025), section 3: L = U Lambda U^T, a smoothness penalty
and a low-pass filter on the gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Response = Callable[[torch.Tensor], torch.Tensor]
"""A filter response: eigenvalues (k,) -> gains h(l) (k,)."""


def dirichlet_energy(X: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """tr(X^T L X) = 0.5 * sum_ij w_ij ||x_i - x_j||^2 for L = D - W.

    ``L`` is a dense or torch sparse (n, n) Laplacian; ``X`` is (n, ...). The
    gradient with respect to X is 2 L X (L symmetric). Cost O(nnz(L) * cols).
    """
    matrix = _rows(X, "X")
    _check_operator(L, matrix)
    product = torch.sparse.mm(L, matrix) if L.layout != torch.strided else L @ matrix
    return (matrix * product).sum()


def spectral_dirichlet_energy(
    X: torch.Tensor, vectors: torch.Tensor, values: torch.Tensor
) -> torch.Tensor:
    """sum_i l_i ||u_i^T X||^2: the Dirichlet energy of X within span(U).

    Equals ``dirichlet_energy(X, L)`` when U holds all n eigenvectors; with the
    k lowest it is the energy of X's projection onto the smooth modes.
    Cost O(k * rows * cols).
    """
    matrix = _rows(X, "X")
    _check_basis(vectors, values, matrix)
    coefficients = vectors.T @ matrix
    return (values * (coefficients * coefficients).sum(dim=1)).sum()


def spectral_filter(
    G: torch.Tensor,
    vectors: torch.Tensor,
    values: torch.Tensor,
    response: Response,
    high_gain: float = 0.0,
) -> torch.Tensor:
    """Filter G along its rows: U h(Lambda) U^T G + high_gain (G - U U^T G).

    ``vectors`` U (n, k) are orthonormal eigenvectors with eigenvalues
    ``values`` (k,); ``response`` maps the eigenvalues to gains; ``high_gain``
    in [0, 1] attenuates everything outside span(U). h = 1 with high_gain = 1
    is the identity; h = 1 with high_gain = 0 is the projector U U^T.
    Returns a tensor shaped like G. Cost O(k * rows * cols).
    """
    matrix = _rows(G, "G")
    _check_basis(vectors, values, matrix)
    if not 0.0 <= high_gain <= 1.0:
        raise ValueError(f"high_gain must be in [0, 1]; got {high_gain!r}")
    gains = response(values)
    if gains.shape != values.shape:
        raise ValueError(
            f"response must map values {tuple(values.shape)} to gains of the same shape; "
            f"got {tuple(gains.shape)}"
        )
    coefficients = vectors.T @ matrix
    low = vectors @ (gains[:, None] * coefficients)
    if high_gain:
        low = low + high_gain * (matrix - vectors @ coefficients)
    return low.reshape(G.shape)


def heat(t: float = 1.0) -> Response:
    """The heat-kernel response h(l) = exp(-t l) (diffusion for time t)."""
    _check_nonnegative(t, "t")
    return lambda values: torch.exp(-t * values)


def tikhonov(t: float = 1.0) -> Response:
    """The Tikhonov response h(l) = 1 / (1 + t l) (graph ridge smoothing)."""
    _check_nonnegative(t, "t")
    return lambda values: 1.0 / (1.0 + t * values)


def ideal(cutoff: float | None = None) -> Response:
    """The ideal low-pass h(l) = 1 for l <= cutoff, else 0 (default: keep all k modes).

    With ``high_gain=0`` and no cutoff the filter is the projector U U^T.
    """
    if cutoff is not None:
        _check_nonnegative(cutoff, "cutoff")
    if cutoff is None:
        return torch.ones_like
    return lambda values: (values <= cutoff).to(values.dtype)


def _rows(X: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(X, torch.Tensor) or X.ndim < 1:
        raise ValueError(f"{name} must be a torch tensor with rows as nodes; got {type(X)}")
    return X.reshape(X.shape[0], -1)


def _check_operator(L: torch.Tensor, X: torch.Tensor) -> None:
    if not isinstance(L, torch.Tensor) or L.ndim != 2 or L.shape[0] != L.shape[1]:
        raise ValueError(f"L must be a square torch tensor; got {getattr(L, 'shape', type(L))}")
    if L.shape[0] != X.shape[0]:
        raise ValueError(f"L is {tuple(L.shape)} but X has {X.shape[0]} rows (nodes)")
    if L.device != X.device:
        raise ValueError(f"L is on {L.device} but X is on {X.device}; put them on one device")


def _check_basis(vectors: torch.Tensor, values: torch.Tensor, X: torch.Tensor) -> None:
    if vectors.ndim != 2 or values.ndim != 1 or vectors.shape[1] != values.shape[0]:
        raise ValueError(
            f"vectors must be (n, k) and values (k,); got {tuple(vectors.shape)} and "
            f"{tuple(values.shape)}"
        )
    if vectors.shape[0] != X.shape[0]:
        raise ValueError(f"vectors have {vectors.shape[0]} rows but the input has {X.shape[0]}")
    devices = {X.device, vectors.device, values.device}
    if len(devices) > 1:
        raise ValueError(
            f"inputs are on different devices ({', '.join(sorted(map(str, devices)))}); "
            "put them on one device"
        )


def _check_nonnegative(value: float, name: str) -> None:
    if not (isinstance(value, (int, float)) and value >= 0 and value != float("inf")):
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
