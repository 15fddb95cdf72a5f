"""Split an eigenproblem along the connected components of L's sparsity graph.

A single-vector Krylov method (ARPACK, Lanczos with one start vector) sees one
vector per eigenspace in exact arithmetic: on a graph with c components it
would report one zero eigenvalue instead of c. But L is block diagonal over
its components (after a permutation), so its spectrum is the union of the
blocks' spectra: each component is solved on its own (the wanted solver for
large ones, dense ``eigh`` for small ones, ``DENSE_BELOW``) and the k smallest pairs of the
union are kept, embedded back into n-vectors. This is exact, not a heuristic.
Repeated eigenvalues within one connected component (exact symmetries such
as a ring) are the next blind spot of Krylov methods; ``multiplicity``
certifies the answer against them.
The components are found on the CPU (``scipy.sparse.csgraph``, O(nnz)); for
a GPU matrix that is one copy of its pattern to the host per solve.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components

from graphopt.solvers.eigen._common import Problem

DENSE_BELOW = 64
"""Components with fewer nodes are solved by dense ``eigh`` whatever the solver: exact,
and well under a millisecond there, where iterative solvers spent up to seconds
(torch.lobpcg: 4 s for k = 1 on a 40-node graph; LOBPCG with AMG: 15 s)."""

BlockSolution = tuple[Any, Any, bool, dict[str, Any]]
"""(values (j,), vectors (n_block, j), solver_ok, info) from one block."""


def solve_by_components(
    problem: Problem,
    solve: Callable[[Problem], BlockSolution],
    *,
    min_size: int,
) -> BlockSolution:
    """``solve`` each component with at least max(``min_size``, ``DENSE_BELOW``) nodes
    (and more than k), ``eigh`` the others (a connected L among them).

    Returns the k smallest pairs of the union (values, vectors) plus the
    combined ``solver_ok`` and info (with the number of components). An
    isolated node i contributes the pair (L_ii, e_i) without any solve.
    """
    min_size = max(min_size, DENSE_BELOW, problem.k + 1)
    pattern = problem.to_scipy()
    count, labels = connected_components(pattern, directed=False)
    if count == 1 and problem.n >= min_size:
        return solve(problem)
    n, k = problem.n, problem.k
    order = np.argsort(labels, kind="stable")
    sizes = np.bincount(labels, minlength=count)
    groups = np.split(order, np.cumsum(sizes)[:-1])
    singletons = order[sizes[labels[order]] == 1]
    lowest = singletons[np.argsort(pattern.diagonal()[singletons], kind="stable")[:k]]
    all_values = [torch.from_numpy(pattern.diagonal()[lowest].astype(np.float64))]
    all_vectors = [torch.zeros(n, lowest.size, dtype=torch.float64)]
    all_vectors[0][torch.from_numpy(lowest), torch.arange(lowest.size)] = 1.0
    solver_ok, infos = True, []
    for nodes in groups:
        if nodes.size == 1:
            continue
        block = _block(pattern, nodes, problem)
        if nodes.size >= min_size:
            values, vectors, ok, info = solve(Problem(block, k, True, problem.norm))
            solver_ok &= ok
            infos.append(info)
        else:
            dense = block.to_dense() if problem.is_torch else torch.from_numpy(block.toarray())
            values, vectors = torch.linalg.eigh(dense)
            values, vectors = values[:k], vectors[:, :k]
        values = torch.as_tensor(values).detach().to("cpu", torch.float64)
        embedded = torch.zeros(n, values.shape[0], dtype=torch.float64)
        embedded[torch.from_numpy(nodes)] = torch.as_tensor(vectors).detach().to("cpu").double()
        all_values.append(values)
        all_vectors.append(embedded)
    values = torch.cat(all_values)
    chosen = torch.argsort(values, stable=True)[:k]
    info = {"components": count, "component_info": infos}
    return values[chosen], torch.cat(all_vectors, dim=1)[:, chosen], solver_ok, info


def _block(pattern: sp.csr_array, nodes: np.ndarray, problem: Problem) -> Any:
    """The principal submatrix of L on ``nodes``, in the problem's own form."""
    sub = pattern[nodes][:, nodes]
    if not problem.is_torch:
        return sp.csr_array(sub)
    sub = sp.coo_array(sub)
    indices = torch.from_numpy(np.vstack([sub.row, sub.col]).astype(np.int64))
    values = torch.from_numpy(sub.data)
    matrix = torch.sparse_coo_tensor(indices, values, sub.shape, check_invariants=False)
    return matrix.coalesce().to(problem.device, problem.dtype)
