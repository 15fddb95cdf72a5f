"""Penalties: generalized soft thresholding and the group prox."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphopt.solvers.ggm import (
    L1Penalty,
    L2pPenalty,
    generalized_soft_threshold,
    group_prox,
    node_groups,
)


@pytest.mark.parametrize("p", [0.3, 0.5, 0.9])
@pytest.mark.parametrize("weight", [0.2, 1.0])
def test_gst_equals_brute_force_grid_minimization(p, weight):
    ys = torch.linspace(-3, 3, 61, dtype=torch.float64)
    grid = np.linspace(-4, 4, 400_001)
    for y, x in zip(ys, generalized_soft_threshold(ys, weight, p), strict=True):
        values = 0.5 * (grid - float(y)) ** 2 + weight * np.abs(grid) ** p
        best = values.min()
        ours = 0.5 * (float(x) - float(y)) ** 2 + weight * abs(float(x)) ** p
        assert ours <= best + 1e-9


def test_gst_with_p_one_is_soft_thresholding():
    y = torch.linspace(-2, 2, 41, dtype=torch.float64)
    expected = y.sign() * (y.abs() - 0.5).clamp_min(0)
    torch.testing.assert_close(generalized_soft_threshold(y, 0.5, 1.0), expected)


def test_l2p_rejects_p_outside_unit_interval():
    for p in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="p must"):
            L2pPenalty(p)


def test_group_prox_shrinks_each_group_norm_and_keeps_diagonal():
    generator = torch.Generator().manual_seed(0)
    v = torch.randn(5, 5, generator=generator, dtype=torch.float64)
    v = v + v.T
    structure = node_groups(5)
    z = group_prox(v, structure, L1Penalty(), 0.7)
    torch.testing.assert_close(z.diagonal(), v.diagonal())
    torch.testing.assert_close(z, z.T)
    for j in range(1, 5):
        before, after = v[:j, j].norm(), z[:j, j].norm()
        assert float(after) == pytest.approx(max(float(before) - 0.7, 0.0), abs=1e-12)
        if after > 0:
            torch.testing.assert_close(z[:j, j] / after, v[:j, j] / before)
