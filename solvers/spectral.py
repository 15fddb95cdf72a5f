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

from graphopt.solvers.validation import check_finite, check_real

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
    _check_basis(vectors, values, matrix, "X")
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

    Every entry of the output mixes a whole column of G, so one NaN in G
    would turn its column NaN in every row: non-finite G (or U, Lambda, gains)
    is a ``ValueError`` instead.
    """
    matrix = _rows(G, "G")
    _check_basis(vectors, values, matrix, "G")
    high_gain = check_real(high_gain, "high_gain", low=0.0, high=1.0)
    if not callable(response):
        raise ValueError(f"response must be a callable on the eigenvalues; got {response!r}")
    gains = response(values)
    if not isinstance(gains, torch.Tensor) or gains.shape != values.shape:
        shape = tuple(gains.shape) if isinstance(gains, torch.Tensor) else type(gains).__name__
        raise ValueError(
            f"response must map values {tuple(values.shape)} to gains of the same shape; "
            f"got {shape}"
        )
    check_finite(gains.detach(), "the response's gains")
    coefficients = vectors.T @ matrix
    low = vectors @ (gains[:, None] * coefficients)
    if high_gain:
        low = low + high_gain * (matrix - vectors @ coefficients)
    return low.reshape(G.shape)


def heat(t: float = 1.0) -> Response:
    """The heat-kernel response h(l) = exp(-t l) (diffusion for time t)."""
    t = check_real(t, "t", low=0.0)
    return lambda values: torch.exp(-t * values)


def tikhonov(t: float = 1.0) -> Response:
    """The Tikhonov response h(l) = 1 / (1 + t l) (graph ridge smoothing)."""
    t = check_real(t, "t", low=0.0)
    return lambda values: 1.0 / (1.0 + t * values)


def ideal(cutoff: float | None = None) -> Response:
    """The ideal low-pass h(l) = 1 for l <= cutoff, else 0 (default: keep all k modes).

    With ``high_gain=0`` and no cutoff the filter is the projector U U^T.
    """
    if cutoff is None:
        return torch.ones_like
    cutoff = check_real(cutoff, "cutoff", low=0.0)
    return lambda values: (values <= cutoff).to(values.dtype)


def _rows(X: torch.Tensor, name: str) -> torch.Tensor:
    """X as (rows, columns), after checking it is a finite floating tensor with rows."""
    if not isinstance(X, torch.Tensor) or X.ndim < 1 or X.shape[0] == 0 or X.numel() == 0:
        kind = f"shape {tuple(X.shape)}" if isinstance(X, torch.Tensor) else type(X).__name__
        raise ValueError(f"{name} must be a non-empty torch tensor with rows as nodes; got {kind}")
    _check_floating(X, name)
    check_finite(X.detach(), name)
    return X.reshape(X.shape[0], -1)


def _check_floating(tensor: torch.Tensor, name: str) -> None:
    if not tensor.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor; got dtype {tensor.dtype}")


def _check_same_kind(tensors: dict[str, torch.Tensor]) -> None:
    """One device and one dtype for every input (a matmul needs both)."""
    devices = {t.device for t in tensors.values()}
    if len(devices) > 1:
        raise ValueError(
            f"inputs are on different devices ({', '.join(sorted(map(str, devices)))}); "
            "put them on one device"
        )
    dtypes = {name: t.dtype for name, t in tensors.items()}
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"{name} {dtype}" for name, dtype in dtypes.items())
        raise ValueError(f"inputs have different dtypes ({listed}); convert them to one")


def _check_operator(L: torch.Tensor, X: torch.Tensor) -> None:
    if not isinstance(L, torch.Tensor) or L.ndim != 2 or L.shape[0] != L.shape[1]:
        raise ValueError(f"L must be a square torch tensor; got {getattr(L, 'shape', type(L))}")
    if L.shape[0] != X.shape[0]:
        raise ValueError(f"L is {tuple(L.shape)} but X has {X.shape[0]} rows (nodes)")
    if L.device != X.device:
        raise ValueError(f"L is on {L.device} but X is on {X.device}; put them on one device")
    _check_floating(L, "L")
    _check_same_kind({"X": X, "L": L})
    values = L.detach() if L.layout == torch.strided else L.detach().coalesce().values()
    check_finite(values, "L")


def _check_basis(vectors: torch.Tensor, values: torch.Tensor, X: torch.Tensor, name: str) -> None:
    if not isinstance(vectors, torch.Tensor) or not isinstance(values, torch.Tensor):
        raise ValueError(
            f"vectors and values must be torch tensors; got {type(vectors).__name__} and "
            f"{type(values).__name__}"
        )
    if vectors.ndim != 2 or values.ndim != 1 or vectors.shape[1] != values.shape[0]:
        raise ValueError(
            f"vectors must be (n, k) and values (k,); got {tuple(vectors.shape)} and "
            f"{tuple(values.shape)}"
        )
    if vectors.shape[0] != X.shape[0]:
        raise ValueError(f"vectors have {vectors.shape[0]} rows but {name} has {X.shape[0]}")
    _check_same_kind({name: X, "vectors": vectors, "values": values})
    for name, tensor in (("vectors", vectors), ("values", values)):
        _check_floating(tensor, name)
        check_finite(tensor.detach(), name)
