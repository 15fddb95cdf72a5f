"""Symmetric group structures on the off-diagonal entries of a p x p matrix.

A group is a set of unordered off-diagonal pairs {i, j}; it is stored once, as
upper-triangle positions (i < j), and stands for itself and its transpose.
The penalty counts both triangles,

    P(Omega) = sum_g lam_g * (phi(||Omega_g||_2) + phi(||Omega_g^T||_2))
             = 2 * sum_g lam_g * phi(||Omega_g||_2),

so singleton groups with phi(t) = t give ``lam * sum_{i != j} |Omega_ij|``, exactly
scikit-learn's ``graphical_lasso`` penalty. Pairs in no group are unpenalized, as
is the diagonal. Groups must not overlap (a partition of a subset of pairs).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from graphopt.solvers.validation import check_int_in_range, check_positive


@dataclass(frozen=True)
class GroupStructure:
    """Validated groups of a p x p symmetric matrix.

    Attributes:
        size: p.
        rows, cols: upper-triangle positions (rows < cols) of every grouped entry, int64 (m,).
        group_index: the group of each grouped entry, int64 (m,), values in [0, n_groups).
        weights: per-group multiplier of lam (n_groups,), float64, > 0.
        singleton: every off-diagonal pair is its own group with weight 1 (plain l1):
            solvers may use elementwise fast paths.
    """

    size: int
    rows: np.ndarray
    cols: np.ndarray
    group_index: np.ndarray
    weights: np.ndarray
    singleton: bool = False

    @property
    def n_groups(self) -> int:
        return int(self.weights.shape[0])

    def restrict(self, nodes: np.ndarray) -> GroupStructure:
        """The groups of the principal submatrix on ``nodes`` (whole groups only).

        Screening guarantees that every group touching ``nodes`` lies inside them.
        """
        if self.singleton:
            return singleton_groups(len(nodes))
        position = np.full(self.size, -1, dtype=np.int64)
        position[nodes] = np.arange(len(nodes))
        inside = (position[self.rows] >= 0) & (position[self.cols] >= 0)
        kept_groups, group_index = np.unique(self.group_index[inside], return_inverse=True)
        return GroupStructure(
            size=len(nodes),
            rows=position[self.rows[inside]],
            cols=position[self.cols[inside]],
            group_index=group_index.astype(np.int64),
            weights=self.weights[kept_groups],
        )


def singleton_groups(p: int) -> GroupStructure:
    """Every off-diagonal pair its own group: the l1 graphical lasso."""
    p = check_int_in_range(p, "p", 1)
    rows, cols = np.triu_indices(p, k=1)
    m = rows.shape[0]
    return GroupStructure(
        size=p,
        rows=rows.astype(np.int64),
        cols=cols.astype(np.int64),
        group_index=np.arange(m, dtype=np.int64),
        weights=np.ones(m),
        singleton=True,
    )


def node_groups(p: int) -> GroupStructure:
    """Node-wise groups: group j holds the links of node j to the nodes before it.

    g_j = {Omega_ij : i < j} for j = 1, ..., p - 1 (and their transposes): a
    partition of all off-diagonal pairs, so a whole column is kept or cut.
    """
    p = _matrix_size(p, "node groups")
    sizes = np.arange(1, p)  # group j - 1 holds the j pairs (0, j) ... (j - 1, j)
    starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
    rows = np.arange(starts.shape[0]) - starts
    return _built_in(p, rows, np.repeat(sizes, sizes), np.repeat(np.arange(p - 1), sizes))


def important_set_groups(p: int, important: Iterable[int]) -> GroupStructure:
    """The [GGM] groups: for each node j outside the important set I, g_j = {Omega_ij : i in I}.

    Links inside I and links between two nodes outside I are unpenalized
    (Zheng & Cao 2024, sec. 3; reference code ``Graph_based_peft``).
    """
    p = _matrix_size(p, "important-set groups")
    important = _sequence(important, "important", "a list of node indices")
    members = sorted({check_int_in_range(i, "important", 0, p) for i in important})
    if not members or len(members) == p:
        raise ValueError(
            f"important must name between 1 and p - 1 = {p - 1} distinct nodes; got {len(members)}"
        )
    inside = np.asarray(members)[None, :]
    others = np.setdiff1d(np.arange(p), members)[:, None]  # one group per node outside I
    return _built_in(
        p,
        np.minimum(inside, others).ravel(),
        np.maximum(inside, others).ravel(),
        np.repeat(np.arange(others.shape[0]), inside.shape[1]),
    )


def _built_in(
    p: int, rows: np.ndarray, cols: np.ndarray, group_index: np.ndarray
) -> GroupStructure:
    """The structure of a built-in grouping, valid by construction (pairs rows < cols, each
    once), weights 1: no per-pair checks (``groups_from_pairs`` took 1.3 s on node groups
    at p = 500, a tenth of the solve; 5.2 s at p = 1000)."""
    return GroupStructure(
        size=p,
        rows=rows.astype(np.int64),
        cols=cols.astype(np.int64),
        group_index=group_index.astype(np.int64),
        weights=np.ones(int(group_index.max()) + 1),
    )


def _matrix_size(size: int, kind: str) -> int:
    """The size of S for groups that need off-diagonal pairs (at least a 2 x 2 S)."""
    size = check_int_in_range(size, "size of S", 1)
    if size < 2:
        raise ValueError(
            f"{kind} need a covariance S of at least 2 x 2 (off-diagonal pairs); S is 1 x 1"
        )
    return size


def _sequence(value: Any, name: str, expected: str) -> Sequence[Any]:
    """``value`` (a list, tuple, range, array, iterator) as a list, or a ValueError naming it."""
    if isinstance(value, str | bytes | dict) or not hasattr(value, "__iter__"):
        raise ValueError(f"{name} must be {expected}; got {value!r}")
    return list(value)


def groups_from_pairs(
    groups: Sequence[Sequence[Sequence[int]]],
    p: int,
    weights: Sequence[float] | None = None,
) -> GroupStructure:
    """Validate groups given as lists of (i, j) pairs (either order) and build the structure.

    Raises ``ValueError`` for an empty group, a malformed pair, an index out of
    range, a diagonal pair (the diagonal is never penalized), a pair listed twice
    or a pair in two groups.
    """
    p = check_int_in_range(p, "p", 1)
    groups = _sequence(groups, "groups", "a list of groups, each a list of pairs (i, j)")
    if len(groups) == 0:
        raise ValueError("groups must contain at least one group")
    pairs = _valid_pair_arrays(groups, p)
    if pairs is None:  # something is wrong: find it pair by pair, to name it
        pairs = _pairs_checked_one_by_one(groups, p)
    rows, cols, group_index = pairs
    if weights is None:
        weight_array = np.ones(len(groups))
    else:
        if len(weights) != len(groups):
            raise ValueError(f"weights must have one entry per group ({len(groups)})")
        weight_array = np.array([check_positive(w, "weights") for w in weights])
    return GroupStructure(
        size=p, rows=rows, cols=cols, group_index=group_index, weights=weight_array
    )


def _valid_pair_arrays(
    groups: Sequence[Any], p: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(rows, cols, group_index) by array checks, one conversion per group (pair by pair
    took 1.3 s for 125k pairs); None when any group is not a non-empty (k, 2) integer
    array of valid, distinct, off-diagonal pairs."""
    arrays = []
    for group in groups:
        if isinstance(group, str | bytes | dict) or not hasattr(group, "__len__"):
            return None
        try:
            array = np.asarray(group)
        except (TypeError, ValueError):  # ragged
            return None
        if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] != 2:
            return None
        if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
            return None
        if not isinstance(group, np.ndarray) and any(  # numpy reads True as 1
            isinstance(k, bool | np.bool_) for pair in group for k in pair
        ):
            return None
        arrays.append(array)
    pairs = np.concatenate(arrays).astype(np.int64)
    rows, cols = pairs.min(axis=1), pairs.max(axis=1)
    if rows.min() < 0 or cols.max() >= p or bool((rows == cols).any()):
        return None
    if np.unique(rows * p + cols).shape[0] != rows.shape[0]:
        return None
    sizes = [array.shape[0] for array in arrays]
    return rows, cols, np.repeat(np.arange(len(arrays), dtype=np.int64), sizes)


def _pairs_checked_one_by_one(
    groups: Sequence[Any], p: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, group_index), or the ValueError that names the first bad pair."""
    rows: list[int] = []
    cols: list[int] = []
    group_index: list[int] = []
    owner: dict[tuple[int, int], int] = {}
    for g, group in enumerate(groups):
        group = _sequence(group, f"groups[{g}]", "a list of pairs (i, j)")
        if len(group) == 0:
            raise ValueError(f"groups[{g}] is empty")
        for pair in group:
            if not hasattr(pair, "__len__") or len(pair) != 2:
                raise ValueError(f"groups[{g}] has {pair!r}; every entry must be a pair (i, j)")
            i, j = (check_int_in_range(k, f"groups[{g}] index", 0, p) for k in pair)
            if i == j:
                raise ValueError(f"groups[{g}] contains the diagonal entry ({i}, {j})")
            key = (min(i, j), max(i, j))
            if key in owner:
                where = "twice" if owner[key] == g else f"also in groups[{owner[key]}]"
                raise ValueError(f"groups overlap: pair {key} of groups[{g}] is {where}")
            owner[key] = g
            rows.append(key[0])
            cols.append(key[1])
            group_index.append(g)
    return (
        np.asarray(rows, dtype=np.int64),
        np.asarray(cols, dtype=np.int64),
        np.asarray(group_index, dtype=np.int64),
    )


def make_groups(groups: object, p: int) -> GroupStructure:
    """Normalize the ``groups`` argument of the solvers.

    Accepts ``None`` or ``"singleton"`` (l1), ``"node"``, ``"important:K"`` (the
    first K nodes are the important set), a ``GroupStructure`` of size p, or a
    list of groups of (i, j) pairs.
    """
    if groups is None or groups == "singleton":
        return singleton_groups(p)
    if groups == "node":
        return node_groups(p)
    if isinstance(groups, str) and groups.startswith("important:"):
        count = groups.split(":", 1)[1]
        if not count.isdigit():
            raise ValueError(f"groups 'important:K' needs an integer K; got {groups!r}")
        return important_set_groups(p, range(int(count)))
    if isinstance(groups, str):
        raise ValueError(
            f"groups must be 'singleton', 'node', 'important:K', a GroupStructure or a list "
            f"of groups of (i, j) pairs; got {groups!r}"
        )
    if isinstance(groups, GroupStructure):
        if groups.size != p:
            raise ValueError(
                f"groups is for a {groups.size} x {groups.size} matrix; S is {p} x {p}"
            )
        return groups
    if not isinstance(groups, Sequence):
        raise ValueError(f"groups must be a string, a GroupStructure or a list; got {groups!r}")
    return groups_from_pairs(groups, p)


def group_norms(matrix: torch.Tensor, structure: GroupStructure) -> torch.Tensor:
    """||Omega_g||_2 over the upper-triangle entries of every group, shape (n_groups,)."""
    rows, cols, index = _device_indices(structure, matrix.device)
    squares = matrix[rows, cols].square()
    sums = torch.zeros(structure.n_groups, dtype=matrix.dtype, device=matrix.device)
    return sums.index_add_(0, index, squares).sqrt()


def set_grouped(matrix: torch.Tensor, structure: GroupStructure, values: Any) -> torch.Tensor:
    """Write ``values`` (one per grouped upper-triangle entry, or a scalar) on every
    grouped entry of ``matrix`` and its transpose, in place; returns ``matrix``."""
    rows, cols, _ = _device_indices(structure, matrix.device)
    matrix[rows, cols] = values
    matrix[cols, rows] = values
    return matrix


def grouped_mask(structure: GroupStructure, device: torch.device) -> torch.Tensor:
    """(p, p) bool: the grouped entries, both triangles."""
    mask = torch.zeros(structure.size, structure.size, dtype=torch.bool, device=device)
    return set_grouped(mask, structure, True)


def _device_indices(
    structure: GroupStructure, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.as_tensor(structure.rows, device=device),
        torch.as_tensor(structure.cols, device=device),
        torch.as_tensor(structure.group_index, device=device),
    )


def pair_weights(
    structure: GroupStructure, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows, columns and the weight w_g of every grouped upper-triangle entry (float64)."""
    rows, cols, index = _device_indices(structure, device)
    weights = torch.as_tensor(structure.weights, dtype=torch.float64, device=device)
    return rows, cols, weights[index]
