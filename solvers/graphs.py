"""Weighted graphs over node feature vectors, as sparse symmetric adjacencies.

Nodes are the rows of ``features`` (n, d): rows of a weight matrix, attention
heads, SVD components, gradient rows collected over steps. Every construction
returns a coalesced torch sparse COO tensor (n, n) on the features' device and
in their floating dtype: symmetric, non-negative, zero diagonal.

Similarities are computed ``block_size`` rows at a time, so memory stays
O(n * block_size) however large n is. kNN graphs are symmetrized by the
elementwise maximum, W = max(A, A^T): i and j are linked when either is among
the other's k nearest neighbours (the "or" kNN graph of von Luxburg,
"A tutorial on spectral clustering", 2007, section 2.2).
"""

from __future__ import annotations

from collections.abc import Callable

import scipy.sparse as sp
import torch

from graphopt.solvers.validation import (
    as_tensor,
    check_finite,
    check_int_in_range,
    check_matrix,
    check_positive,
    check_real,
    check_square_symmetric_finite,
)

DEFAULT_BLOCK_SIZE = 2048
"""Rows of the similarity matrix held in memory at once."""


def knn_cosine(
    features: torch.Tensor, k: int = 10, *, block_size: int = DEFAULT_BLOCK_SIZE
) -> torch.Tensor:
    """Symmetrized k-nearest-neighbour graph weighted by cosine similarity.

    w_ij = max(0, <x_i, x_j> / (||x_i|| ||x_j||)) for j among the k most
    cosine-similar rows to i (or i among j's); negative similarities are
    clipped to 0 (their edges vanish). A zero row has similarity 0 to all.
    Each row is divided by its largest entry first (cosine ignores row
    scale), so no norm overflows or underflows.
    """
    x, k, block_size = _features(features, k, block_size)
    unit = _unit_rows(_scale_rows(x))
    rows, cols, sims = _top_k_blocks(unit, k, block_size, lambda a, b: a @ b.T)
    return _symmetrize_max(rows, cols, sims.clamp_min(0.0), x.shape[0])


def gaussian_kernel(
    features: torch.Tensor,
    k: int = 10,
    bandwidth: float | None = None,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> torch.Tensor:
    """Symmetrized k-nearest-neighbour graph with Gaussian (heat-kernel) weights.

    w_ij = exp(-||x_i - x_j||^2 / (2 sigma^2)) on the k nearest neighbours in
    Euclidean distance; ``bandwidth`` sigma defaults to the median distance of
    all kNN pairs (a scale-free choice). Distances are computed on x / max |x|
    (and sigma / max |x|), so no square overflows or underflows.
    """
    x, k, block_size = _features(features, k, block_size)
    if bandwidth is not None:
        bandwidth = check_positive(bandwidth, "bandwidth")
    unit = float(x.abs().max())
    x = x / unit if unit > 0 else x
    sq_norms = (x * x).sum(dim=1)

    def neg_sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        block_norms = (a * a).sum(dim=1, keepdim=True)
        return -(block_norms + sq_norms[None, :] - 2.0 * (a @ b.T)).clamp_min(0.0)

    rows, cols, neg = _top_k_blocks(x, k, block_size, neg_sq_dist)
    distances = (-neg).sqrt()
    if bandwidth is None:
        sigma = _median(distances)
        sigma = sigma if sigma > 0 else 1.0  # all kNN pairs coincide: any scale gives weight 1
    else:
        sigma = max(bandwidth / unit if unit > 0 else bandwidth, torch.finfo(x.dtype).tiny)
    weights = torch.exp(-0.5 * (distances / sigma) ** 2)
    return _symmetrize_max(rows, cols, weights, x.shape[0])


def correlation_threshold(
    features: torch.Tensor,
    threshold: float = 0.5,
    *,
    absolute: bool = True,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> torch.Tensor:
    """Graph linking nodes whose Pearson correlation passes a threshold.

    r_ij is the correlation of rows i and j across the d columns (e.g. the
    gradient of unit i over d steps). Edge weight |r_ij| where |r_ij| >=
    ``threshold`` (``absolute=True``), or r_ij where r_ij >= ``threshold``
    (``absolute=False``: anti-correlated nodes stay unlinked). A constant row
    has no correlation with anything.
    """
    x, _ = as_tensor(features, "features")
    check_matrix(x, "features", min_columns=2)
    check_finite(x, "features")
    threshold = check_real(threshold, "threshold", low=0.0, high=1.0)
    if not isinstance(absolute, bool):
        raise ValueError(f"absolute must be True or False; got {absolute!r}")
    block_size = check_int_in_range(block_size, "block_size", 1)
    centered = _scale_rows(x)
    centered = centered - centered.mean(dim=1, keepdim=True)
    unit = _unit_rows(_scale_rows(centered))
    n = x.shape[0]
    parts_r, parts_c, parts_w = [], [], []
    for start in range(0, n, block_size):
        corr = unit[start : start + block_size] @ unit.T
        score = corr.abs() if absolute else corr
        keep = score >= threshold
        keep &= score > 0  # a zero weight is no edge (threshold 0, constant rows)
        r, c = keep.nonzero(as_tuple=True)
        r = r + start
        upper = r < c  # each pair once, mirrored below: r_ij and r_ji differ by rounding
        parts_r.append(r[upper])
        parts_c.append(c[upper])
        parts_w.append(score[keep][upper])
    rows, cols = torch.cat(parts_r), torch.cat(parts_c)
    weights = torch.cat(parts_w)
    return _coo(torch.cat([rows, cols]), torch.cat([cols, rows]), weights.repeat(2), n)


def partial_correlation_graph(
    precision: torch.Tensor, threshold: float = 0.0, *, absolute: bool = True
) -> torch.Tensor:
    """Graph of partial correlations from a precision matrix (e.g. a GGM estimate).

    rho_ij = -Omega_ij / sqrt(Omega_ii Omega_jj) is the correlation of
    variables i and j given all others (Lauritzen, "Graphical Models", 1996,
    section 5.1.3). Edge weight |rho_ij| (``absolute=True``) or the positive
    part max(rho_ij, 0) (``absolute=False``); weights <= ``threshold`` are
    dropped, so a zero in Omega is no edge.
    """
    omega, _ = as_tensor(precision, "precision")
    check_square_symmetric_finite(omega, "precision")
    diagonal = omega.diagonal()
    if bool((diagonal <= 0).any()):
        raise ValueError("precision must have a positive diagonal")
    threshold = check_real(threshold, "threshold", low=0.0, high=1.0, open_high=True)
    if not isinstance(absolute, bool):
        raise ValueError(f"absolute must be True or False; got {absolute!r}")
    scale = diagonal.rsqrt()
    omega = 0.5 * (omega + omega.T)  # symmetric to the last bit, as the graph must be
    rho = -omega * (scale[:, None] * scale[None, :])
    weight = rho.abs() if absolute else rho.clamp_min(0.0)
    weight.fill_diagonal_(0.0)
    r, c = (weight > threshold).nonzero(as_tuple=True)
    return _coo(r, c, weight[r, c], omega.shape[0])


def to_scipy(adjacency: torch.Tensor) -> sp.csr_array:
    """A torch (sparse or dense) matrix as a scipy CSR array on the CPU, float64."""
    if not isinstance(adjacency, torch.Tensor):
        raise ValueError(f"adjacency must be a torch tensor; got {type(adjacency).__name__}")
    if adjacency.ndim != 2:
        raise ValueError(f"adjacency must be 2-D; got shape {tuple(adjacency.shape)}")
    matrix = adjacency.detach().to("cpu", torch.float64)
    if matrix.layout == torch.strided:
        return sp.csr_array(matrix.numpy())
    coo = matrix.to_sparse_coo().coalesce()
    rows, cols = coo.indices().numpy()
    return sp.csr_array((coo.values().numpy(), (rows, cols)), shape=tuple(matrix.shape))


def _median(values: torch.Tensor) -> float:
    """The median, averaging the two middle values for an even count (as numpy)."""
    ordered = values.flatten().sort().values
    middle = ordered.numel() // 2
    return float(
        ordered[middle - 1 : middle + 1].mean() if ordered.numel() % 2 == 0 else ordered[middle]
    )


def _features(features: torch.Tensor, k: int, block_size: int) -> tuple[torch.Tensor, int, int]:
    """Validated (n, d) features (n >= 2, d >= 1, finite), k in [1, n) and block_size."""
    x, _ = as_tensor(features, "features")
    n, _ = check_matrix(x, "features")
    if n < 2:
        raise ValueError(f"features must have at least 2 rows (nodes); got shape {tuple(x.shape)}")
    check_finite(x, "features")
    k = check_int_in_range(k, "k", 1, n)
    return x, k, check_int_in_range(block_size, "block_size", 1)


def _scale_rows(x: torch.Tensor) -> torch.Tensor:
    """Each row divided by its largest |entry| (zero rows stay zero)."""
    peak = x.abs().amax(dim=1, keepdim=True)
    return torch.where(peak > 0, x / peak.clamp_min(torch.finfo(x.dtype).tiny), 0.0)


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Each row divided by its Euclidean norm (zero rows stay zero)."""
    norms = x.norm(dim=1, keepdim=True)
    return torch.where(norms > 0, x / norms.clamp_min(torch.finfo(x.dtype).tiny), 0.0)


def _top_k_blocks(
    x: torch.Tensor,
    k: int,
    block_size: int,
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each row, the k highest-scoring other rows: (rows, cols, scores), flat."""
    n = x.shape[0]
    parts_c, parts_s = [], []
    for start in range(0, n, block_size):
        block = score(x[start : start + block_size], x)
        local = torch.arange(block.shape[0], device=x.device)
        block[local, local + start] = -torch.inf  # never your own neighbour
        top = block.topk(k, dim=1)
        parts_c.append(top.indices)
        parts_s.append(top.values)
    rows = torch.arange(n, device=x.device).repeat_interleave(k)
    return rows, torch.cat(parts_c).reshape(-1), torch.cat(parts_s).reshape(-1)


def _symmetrize_max(
    rows: torch.Tensor, cols: torch.Tensor, weights: torch.Tensor, n: int
) -> torch.Tensor:
    """W = max(A, A^T) for the directed graph A given as (rows, cols, weights)."""
    all_r = torch.cat([rows, cols])
    all_c = torch.cat([cols, rows])
    all_w = torch.cat([weights, weights])
    key = all_r * n + all_c
    unique, inverse = torch.unique(key, return_inverse=True)
    merged = torch.full(unique.shape, -torch.inf, dtype=weights.dtype, device=weights.device)
    merged = merged.scatter_reduce(0, inverse, all_w, reduce="amax")
    return _coo(unique // n, unique % n, merged, n)


def _coo(rows: torch.Tensor, cols: torch.Tensor, weights: torch.Tensor, n: int) -> torch.Tensor:
    keep = weights > 0
    indices = torch.stack([rows[keep], cols[keep]])
    return torch.sparse_coo_tensor(
        indices, weights[keep], (n, n), check_invariants=False
    ).coalesce()
