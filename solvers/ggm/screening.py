"""Block-diagonal screening (Witten, Friedman & Simon 2011; Mazumder & Hastie 2012).

For phi(t) = t the solution is block diagonal along the connected components
of the graph whose edges are the groups that can be nonzero: a group g with
||S_g||_2 <= lam w_g phi'(0) whose entries all cross components is zero at the
optimum (Omega^-1 is then block diagonal, so its KKT condition reads
||S_g|| <= lam w_g). Components are grown until every group lies inside one
component or entirely across components; ungrouped pairs with S_ij != 0 are
always edges. Exact for convex penalties, a heuristic for the others.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components

from graphopt.solvers.ggm.groups import GroupStructure, group_norms


def screen_blocks(s: torch.Tensor, structure: GroupStructure, lam: float) -> list[np.ndarray]:
    """Node sets of the diagonal blocks of the solution, largest first."""
    p = s.shape[0]
    if structure.singleton:
        adjacency = (s.abs() > lam).cpu().numpy()
        np.fill_diagonal(adjacency, False)
        return _components(sp.csr_matrix(adjacency), p)
    threshold = lam * torch.as_tensor(structure.weights, dtype=s.dtype, device=s.device)
    active = (group_norms(s, structure) > threshold).cpu().numpy()
    rows, cols, group = structure.rows, structure.cols, structure.group_index
    grouped = np.zeros((p, p), dtype=bool)
    grouped[rows, cols] = True
    grouped[cols, rows] = True
    free = (s != 0).cpu().numpy() & ~grouped
    np.fill_diagonal(free, False)
    free_rows, free_cols = np.nonzero(free)
    edge_rows = [free_rows, rows[active[group]], _chain(rows, cols, group, active)[0]]
    edge_cols = [free_cols, cols[active[group]], _chain(rows, cols, group, active)[1]]
    merged = np.zeros(structure.n_groups, dtype=bool)
    while True:
        labels = _labels(np.concatenate(edge_rows), np.concatenate(edge_cols), p)
        within = labels[rows] == labels[cols]
        has_within = np.bincount(group, weights=within, minlength=structure.n_groups) > 0
        has_across = np.bincount(group, weights=~within, minlength=structure.n_groups) > 0
        straddling = has_within & has_across & ~active & ~merged
        if not straddling.any():
            break
        merged |= straddling
        chain_rows, chain_cols = _chain(rows, cols, group, straddling)
        edge_rows += [rows[straddling[group]], chain_rows]
        edge_cols += [cols[straddling[group]], chain_cols]
    return _blocks_from_labels(labels)


def _chain(
    rows: np.ndarray, cols: np.ndarray, group: np.ndarray, selected: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Edges joining consecutive entries of every selected group (one component per group)."""
    keep = selected[group]
    r, g = rows[keep], group[keep]
    same = g[1:] == g[:-1]
    return r[1:][same], r[:-1][same]


def _labels(rows: np.ndarray, cols: np.ndarray, p: int) -> np.ndarray:
    graph = sp.coo_matrix((np.ones(rows.shape[0]), (rows, cols)), shape=(p, p)).tocsr()
    return connected_components(graph, directed=False)[1]


def _components(graph: sp.csr_matrix, p: int) -> list[np.ndarray]:
    return _blocks_from_labels(connected_components(graph, directed=False)[1])


def _blocks_from_labels(labels: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels)
    blocks = np.split(order, np.cumsum(counts)[:-1])
    return sorted(blocks, key=len, reverse=True)
