"""The allocation step of pca_ggm: which principal-component nodes keep training.

Pure functions on tensors (METHODS.md section 4, steps 3-6; Zheng & Cao,
arXiv 2412.08592, reference code ``Graph_based_peft``):

1. ``log_score_covariance``: X = log(scores) (infinities clamped to the finite
   range), each sample (row) L2-normalised, S = Xc^T Xc / (n - 1) with Xc the
   column-centred X; m = the column means.
2. important set I = the ``n_important`` nodes with the largest m;
3. the l2,g-GGM with groups g_j = {Omega_ij : i in I}, j not in I, solved by
   ``graphopt.solvers.ggm.solve``; node score = ||Omega_{I,j}||_2 of the exactly
   sparse iterate (BCD's Delta, ADMM's Z), so a cut node scores 0;
4. keep I plus the best-scoring other nodes: up to ``top_k`` nodes in all, or
   as many as fit a trainable-parameter ``budget`` (greedy by score). A node
   whose group norm is 0 is never kept.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class Allocation:
    """The result of ``allocate`` (JSON-ready: saved with the adapter)."""

    kept: list[int]
    """Indices of the kept nodes (important ones first, then by group norm)."""
    important: list[int]
    mean_log_score: list[float]
    group_norm: list[float]
    """||Omega_{I,j}||_2 per node; 0 for important nodes (not scored: always kept)."""
    solver: dict[str, Any] = field(default_factory=dict)
    """The GGM solve's report: solver, penalty, lam, converged, n_iter, objective, seconds."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def log_score_covariance(
    samples: torch.Tensor, ridge: float = 1e-3
) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, m): covariance and column means of the row-normalised log-scores.

    ``samples`` is (n steps, p nodes), non-negative. ``ridge`` adds
    ``ridge * trace(S) / p`` to the diagonal (design choice: with n < p and
    nodes whose score never changes, S is singular with zero diagonal entries,
    which no GGM solver accepts).
    """
    if samples.ndim != 2 or samples.shape[0] < 2 or samples.shape[1] < 2:
        raise ValueError(
            f"samples must be (n >= 2 steps, p >= 2 nodes); got shape {tuple(samples.shape)}"
        )
    if bool((samples < 0).any()) or not bool(torch.isfinite(samples).all()):
        raise ValueError("samples (sensitivity scores) must be finite and non-negative")
    logs = samples.double().log()
    finite = logs[torch.isfinite(logs)]
    if finite.numel() == 0:
        raise ValueError("every sensitivity score is zero: did the adapted layers get gradients?")
    low, high = float(finite.min()), float(finite.max())
    logs = torch.nan_to_num(logs, nan=low, neginf=low, posinf=high)
    logs = logs / logs.norm(dim=1, keepdim=True).clamp_min(torch.finfo(logs.dtype).tiny)
    mean = logs.mean(dim=0)
    centred = logs - mean
    covariance = centred.T @ centred / (samples.shape[0] - 1)
    p = covariance.shape[0]
    scale = float(covariance.diagonal().sum()) / p
    covariance += ridge * (scale if scale > 0 else 1.0) * torch.eye(p, dtype=covariance.dtype)
    return covariance, mean


def select_nodes(
    important: list[int],
    group_norm: torch.Tensor,
    costs: list[int],
    top_k: int | None,
    budget: int | None,
) -> list[int]:
    """I first, then the other nodes with group norm > 0 by decreasing norm, up to
    ``top_k`` nodes in all or while they fit ``budget`` (sum of ``costs``)."""
    chosen = set(important)
    others = [j for j in torch.argsort(group_norm, descending=True).tolist() if j not in chosen]
    others = [j for j in others if float(group_norm[j]) > 0]
    kept = list(important)
    if budget is None:
        assert top_k is not None
        wanted = top_k - len(kept)
        kept += others[:wanted]
        if len(others) < wanted:
            warnings.warn(
                f"only {len(others)} nodes outside the important set have a non-zero group "
                f"norm; keeping {len(kept)} nodes instead of top_k = {top_k}",
                UserWarning,
                stacklevel=3,
            )
        return kept
    spent = sum(costs[j] for j in kept)
    if spent > budget:
        warnings.warn(
            f"the important set alone costs {spent} trainable parameters, over the budget "
            f"{budget}; keeping only it",
            UserWarning,
            stacklevel=3,
        )
    for j in others:
        if spent + costs[j] <= budget:
            kept.append(j)
            spent += costs[j]
    return kept


def allocate(
    samples: torch.Tensor,
    costs: list[int],
    *,
    n_important: int = 30,
    top_k: int | None = 60,
    budget: int | None = None,
    solver: str = "bcd",
    penalty: str = "l2p",
    lam: float | None = None,
    ridge: float = 1e-3,
    solver_options: dict[str, Any] | None = None,
) -> Allocation:
    """Steps 3-6 of the pipeline on the score samples (n steps, p nodes).

    ``costs[j]``: trainable parameters of node j (for ``budget``).
    """
    from graphopt.solvers.ggm import important_set_groups, solve

    p = samples.shape[1]
    if len(costs) != p:
        raise ValueError(f"costs must have one entry per node (p = {p}); got {len(costs)}")
    if not 1 <= n_important < p:
        raise ValueError(f"n_important must be in [1, p - 1 = {p - 1}]; got {n_important}")
    covariance, mean = log_score_covariance(samples.detach().cpu(), ridge)
    important = torch.argsort(mean, descending=True)[:n_important].tolist()
    start = time.perf_counter()
    result = solve(
        covariance,
        penalty=penalty,
        groups=important_set_groups(p, important),
        lam=lam,
        solver=solver,
        **(solver_options or {}),
    )
    seconds = time.perf_counter() - start
    sparse = result.sparse_precision if result.sparse_precision is not None else result.precision
    sparse = torch.as_tensor(sparse, dtype=torch.float64)
    norms = sparse[important].norm(dim=0)
    norms[important] = 0.0
    kept = select_nodes(important, norms, costs, top_k, budget)
    report = {
        "solver": solver,
        "penalty": penalty,
        "lam": result.info.get("lam", lam),
        "converged": bool(result.converged),
        "n_iter": int(result.n_iter),
        "objective": float(result.objective),
        "seconds": seconds,
    }
    return Allocation(kept, important, mean.tolist(), norms.tolist(), report)


def plot_allocation(allocation: dict[str, Any], path: str | Path) -> Path:
    """PNG of a pca_ggm allocation (``extra_state()["allocation"]``, also in a saved
    adapter's ``adapter_config.json``): one row per adapted module, one cell per
    node; colour = group norm (log scale), important nodes marked ``I``, kept
    nodes outlined in red."""
    import matplotlib
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from graphopt.io import atomic_write

    if not allocation or "nodes" not in allocation:
        raise ValueError("allocation must be a pca_ggm allocation (with its 'nodes')")
    nodes = allocation["nodes"]
    modules = list(dict.fromkeys(module for module, _ in nodes))
    slots = list(dict.fromkeys(str(slot) for _, slot in nodes))
    grid = np.full((len(modules), len(slots)), np.nan)
    norms = np.asarray(allocation["group_norm"], dtype=float)
    positive = norms[norms > 0]
    floor = positive.min() / 10 if positive.size else 1.0
    kept, important = set(allocation["kept"]), set(allocation["important"])
    for j, (module, slot) in enumerate(nodes):
        if j not in important:  # important nodes are not scored: left grey
            grid[modules.index(module), slots.index(str(slot))] = np.log10(max(norms[j], floor))
    fig = Figure(figsize=(4.5 + 0.4 * len(slots), 1.8 + 0.28 * len(modules)))
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
    image = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap=cmap)
    fig.colorbar(image, ax=ax, label="log10 group norm")
    for j, (module, slot) in enumerate(nodes):
        row, col = modules.index(module), slots.index(str(slot))
        if j in kept:
            ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, lw=1.5, ec="red"))
        if j in important:
            ax.text(col, row, "I", ha="center", va="center", color="black", fontsize=8)
    ax.set_xticks(range(len(slots)), slots, fontsize=7)
    ax.set_yticks(range(len(modules)), [m[-40:] for m in modules], fontsize=6)
    ax.set_xlabel("node (principal component / bias)")
    solver = allocation.get("solver", {})
    ax.set_title(
        f"pca_ggm: {len(kept)} of {len(nodes)} nodes kept (red), I = important set\n"
        f"GGM solver {solver.get('solver', '?')}, converged: {solver.get('converged', '?')}",
        fontsize=8,
    )
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    return path
