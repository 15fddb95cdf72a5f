"""An epsilon-ball graph construction, a graphopt ``graph`` plugin.

Nodes i and j are linked, with weight 1, when their Euclidean distance is at
most ``radius`` times the median distance over all pairs (von Luxburg, "A
tutorial on spectral clustering", 2007, section 2.2: the epsilon-neighbourhood
graph). Scaling the radius by the median makes the graph independent of the
features' units: epsilon_ball(c X) = epsilon_ball(X) for any c > 0.

The spectral method calls ``epsilon_ball(rows, **graph_options)`` with the rows
of a parameter as float64 on the parameter's device; the answer is a sparse COO
adjacency on that device and in that dtype: symmetric, non-negative, zero
diagonal. Memory is O(n^2) (all pairwise distances at once): fine for the rows
of one weight matrix (n up to a few thousand).
"""

from __future__ import annotations

import torch


def epsilon_ball(features: torch.Tensor, radius: float = 1.0) -> torch.Tensor:
    """Adjacency (n, n) with w_ij = 1 where ||x_i - x_j|| <= radius * median_{k<l} ||x_k - x_l||."""
    if not isinstance(features, torch.Tensor) or features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be an (n, d) tensor with n >= 2; got {features!r:.80}")
    if not bool(torch.isfinite(features).all()):
        raise ValueError("features contain NaN or infinite values")
    if not isinstance(radius, (int, float)) or not radius > 0:
        raise ValueError(f"radius must be a positive number; got {radius!r}")
    n = features.shape[0]
    # the direct formula (not the matrix-product shortcut): exactly symmetric, and the
    # same numbers whatever the order of the rows
    distances = torch.cdist(features, features, compute_mode="donot_use_mm_for_euclid_dist")
    upper = torch.triu_indices(n, n, offset=1, device=features.device)
    scale = distances[upper[0], upper[1]].median()
    linked = distances <= radius * scale
    linked.fill_diagonal_(False)
    if float(scale) == 0:  # every row identical: no distance to compare, no edge
        linked.zero_()
    rows, cols = linked.nonzero(as_tuple=True)
    weights = torch.ones(rows.shape[0], dtype=features.dtype, device=features.device)
    indices = torch.stack([rows, cols])  # valid by construction: skip torch's checks
    return torch.sparse_coo_tensor(indices, weights, (n, n), check_invariants=False).coalesce()
