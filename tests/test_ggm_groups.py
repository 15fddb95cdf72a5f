"""Group structures: builders and validation."""

from __future__ import annotations

import numpy as np
import pytest

from graphopt.solvers.ggm import (
    groups_from_pairs,
    important_set_groups,
    make_groups,
    node_groups,
    singleton_groups,
)


def test_singleton_groups_cover_every_upper_pair_once():
    structure = singleton_groups(5)
    assert structure.n_groups == 10
    assert np.all(structure.rows < structure.cols)


def test_node_groups_partition_all_pairs_by_column():
    structure = node_groups(4)
    assert structure.n_groups == 3
    assert len(set(zip(structure.rows, structure.cols, strict=True))) == 6
    assert list(np.bincount(structure.group_index)) == [1, 2, 3]


def test_important_set_groups_link_each_other_node_to_the_set():
    structure = important_set_groups(5, [0, 2])
    assert structure.n_groups == 3
    for g in range(3):
        members = structure.group_index == g
        pairs = {
            tuple(x) for x in zip(structure.rows[members], structure.cols[members], strict=True)
        }
        other = ({int(i) for pair in pairs for i in pair} - {0, 2}).pop()
        assert pairs == {(min(i, other), max(i, other)) for i in (0, 2)}


def same_structure(a, b) -> bool:
    fields = ("rows", "cols", "group_index", "weights")
    same = all(np.array_equal(getattr(a, name), getattr(b, name)) for name in fields)
    return same and (a.size, a.singleton) == (b.size, b.singleton)


@pytest.mark.parametrize("p", [2, 3, 7, 31])
def test_built_in_groups_equal_their_validated_pair_lists(p):
    """node and important-set groups are built by array arithmetic (a validation pair by
    pair took 3.3 s at p = 500); the validated lists of pairs are the reference."""
    columns = [[(i, j) for i in range(j)] for j in range(1, p)]
    assert same_structure(node_groups(p), groups_from_pairs(columns, p))
    for important in ({0}, {p - 1}, set(range(0, p - 1, 2)), set(range(1, p))):
        others = [j for j in range(p) if j not in important]
        pairs = [[(i, j) for i in sorted(important)] for j in others]
        assert same_structure(important_set_groups(p, important), groups_from_pairs(pairs, p))


@pytest.mark.parametrize("seed", range(5))
def test_array_checked_groups_equal_the_pair_by_pair_checks(seed):
    """The fast path (array checks, one conversion per group) builds what the pair-by-pair
    checks build, for groups given as lists, tuples or arrays, pairs in either order."""
    from graphopt.solvers.ggm.groups import _pairs_checked_one_by_one

    rng = np.random.default_rng(seed)
    p = 12
    upper = [(i, j) for i in range(p) for j in range(i + 1, p)]
    chosen = rng.permutation(len(upper))[: rng.integers(1, len(upper))]
    groups = [
        [upper[k][:: rng.choice([1, -1])] for k in part]
        for part in np.array_split(chosen, rng.integers(1, len(chosen) + 1))
        if len(part)
    ]
    kinds = [list, tuple, np.array]
    given = [kinds[g % 3](group) for g, group in enumerate(groups)]
    built = groups_from_pairs(given, p)
    rows, cols, index = _pairs_checked_one_by_one(groups, p)
    assert np.array_equal(built.rows, rows) and np.array_equal(built.cols, cols)
    assert np.array_equal(built.group_index, index)


def test_pairs_in_either_order_are_the_same_entry():
    a = groups_from_pairs([[(0, 1), (2, 1)]], 3)
    b = groups_from_pairs([[(1, 0), (1, 2)]], 3)
    assert np.array_equal(a.rows, b.rows) and np.array_equal(a.cols, b.cols)


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ([[(0, 1)], [(1, 0)]], "overlap"),
        ([[(0, 1), (1, 0)]], "twice"),
        ([[(1, 1)]], "diagonal"),
        ([[(0, 3)]], "index"),
        ([[]], "empty"),
        ([[(0, 1, 2)]], "pair"),
        ([], "at least one"),
        ("columns", "groups must be"),
        ("important:x", "integer K"),
    ],
)
def test_malformed_groups_raise_value_error(groups, message):
    with pytest.raises(ValueError, match=message):
        make_groups(groups, 3)


def test_important_set_must_leave_other_nodes():
    with pytest.raises(ValueError, match="important"):
        important_set_groups(3, [0, 1, 2])


def test_restrict_keeps_whole_groups_inside_the_block():
    structure = important_set_groups(6, [0, 1])
    sub = structure.restrict(np.array([0, 1, 4]))
    assert sub.size == 3 and sub.n_groups == 1
    assert set(zip(sub.rows, sub.cols, strict=True)) == {(0, 2), (1, 2)}
