"""Penalties: generalized soft thresholding, the group prox, rescaling, and the contract a
third-party penalty meets (hyperparameters as options, convexity, derivative, conjugate)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphopt.solvers.ggm import (
    L1Penalty,
    L2pPenalty,
    Penalty,
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


class McpPenalty(Penalty):
    """The minimax concave penalty phi(t) = t - t^2 / (2 gamma) up to gamma, gamma / 2 after
    (Zhang 2010): non-convex, with its own hyperparameter gamma > 1."""

    name = "mcp"

    def __init__(self, gamma: float = 3.0) -> None:
        if not gamma > 1:
            raise ValueError(f"gamma must be > 1; got {gamma!r}")
        self.gamma = gamma

    def phi(self, t):
        return torch.where(t <= self.gamma, t - t.square() / (2 * self.gamma), self.gamma / 2)

    def prox(self, t, weight):  # firm thresholding, weight < gamma
        middle = (t - weight).clamp_min(0.0) / (1.0 - weight / self.gamma)
        return torch.where(t > self.gamma, t, middle.clamp_max(self.gamma))

    def derivative(self, t):
        return (1.0 - t / self.gamma).clamp_min(0.0)


def _registry_with(monkeypatch, name, factory):
    import graphopt

    registry = graphopt.Registry(builtins=("graphopt.plugins.ggm_solvers",))
    registry.load()

    class Plugin:
        @staticmethod
        @graphopt.hookimpl
        def graphopt_register(registry):
            registry.add("penalty", name, factory)

    registry.register(Plugin, name="third_party")
    monkeypatch.setattr("graphopt.ggm.registry", registry)


def _covariance(p: int = 8) -> np.ndarray:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((60, p)) @ (np.eye(p) + 0.3 * rng.standard_normal((p, p)))
    return np.cov(x, rowvar=False, bias=True)


def test_registered_penalty_is_built_from_its_options(monkeypatch):
    from graphopt.ggm import solve as solve_by_name
    from graphopt.solvers.ggm import solve

    _registry_with(monkeypatch, "mcp", McpPenalty)
    s = _covariance()
    by_name = solve_by_name(s, penalty="mcp", penalty_options={"gamma": 2.5}, lam=0.1)
    direct = solve(s, penalty=McpPenalty(2.5), lam=0.1)
    assert by_name.info["penalty"] == direct.info["penalty"] == "McpPenalty()"
    np.testing.assert_array_equal(by_name.precision, direct.precision)
    other = solve_by_name(s, penalty="mcp", penalty_options={"gamma": 20.0}, lam=0.1)
    assert np.abs(other.precision - direct.precision).max() > 1e-6  # gamma reached it
    # non-convex: no duality gap, a relative stationarity residual instead
    assert direct.duality_gap is None and direct.stationarity is not None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"gama": 2.0}, "penalty 'mcp' has no option 'gama'"),
        ({"gamma": 0.5}, r"^gamma must be > 1.*\(an option of penalty 'mcp'\)"),
    ],
)
def test_bad_penalty_options_name_the_penalty_and_the_option(monkeypatch, options, message):
    from graphopt.ggm import solve as solve_by_name

    _registry_with(monkeypatch, "mcp", McpPenalty)
    with pytest.raises(ValueError, match=message):
        solve_by_name(_covariance(), penalty="mcp", penalty_options=options, lam=0.1)


def test_p_is_the_l2p_option_p():
    from graphopt.solvers.ggm import solve

    s = _covariance()
    by_p = solve(s, penalty="l2p", p=0.7, lam=0.1, groups="node")
    by_option = solve(s, penalty="l2p", penalty_options={"p": 0.7}, lam=0.1, groups="node")
    np.testing.assert_array_equal(by_p.precision, by_option.precision)
    with pytest.raises(ValueError, match="disagree"):
        solve(s, penalty="l2p", p=0.7, penalty_options={"p": 0.8}, lam=0.1)
    with pytest.raises(ValueError, match="penalty 'l1' has no option 'p'"):
        solve(s, penalty="l1", p=0.7, lam=0.1)
    with pytest.raises(ValueError, match="only used with a penalty given by name"):
        solve(s, penalty=L1Penalty(), penalty_options={"p": 1.0}, lam=0.1)


@pytest.mark.parametrize("scale", [0.5, 3.0])
def test_rescaled_prox_is_the_prox_of_the_rescaled_phi(scale):
    """prox of w phi(. / c) against a brute-force grid minimization."""
    from graphopt.solvers.ggm import RescaledPenalty

    penalty = RescaledPenalty(L2pPenalty(0.6), scale)
    ts = torch.linspace(0.0, 3.0, 31, dtype=torch.float64)
    grid = np.linspace(0.0, 4.0, 400_001)
    for t, x in zip(ts, penalty.prox(ts, 0.4), strict=True):
        values = 0.5 * (grid - float(t)) ** 2 + 0.4 * (grid / scale) ** 0.6
        ours = 0.5 * (float(x) - float(t)) ** 2 + 0.4 * (float(x) / scale) ** 0.6
        assert ours <= values.min() + 1e-9


def test_penalty_derivative_and_conjugate_contract():
    """phi* of the lasso is 0 on [0, 1]; t^p has phi'(0+) = inf and no conjugate."""
    from graphopt.solvers.ggm.penalties import has_conjugate, has_derivative

    s = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
    assert not L1Penalty().conjugate(s).any() and L1Penalty().dual_radius == 1.0
    nonconvex = L2pPenalty(0.5)
    assert torch.isinf(nonconvex.derivative(torch.zeros(1, dtype=torch.float64))).all()
    assert has_derivative(nonconvex) and not has_conjugate(nonconvex)
    assert has_conjugate(L2pPenalty(1.0)) and has_conjugate(L1Penalty())


class DoubleL1(Penalty):
    """phi(t) = 2 t: with lam / 2 the same problem as l1 with lam (no degree, no conjugate:
    solved by ADMM on the rescaled penalty, certified by its stationarity)."""

    name = "double_l1"
    convex = True

    def phi(self, t):
        return 2 * t

    def prox(self, t, weight):
        return (t - 2 * weight).clamp_min(0)

    def derivative(self, t):
        return 2 * torch.ones_like(t)


def test_registered_third_party_penalty_is_found_by_name(monkeypatch):
    from graphopt.ggm import solve as solve_by_name
    from graphopt.solvers.ggm import solve

    _registry_with(monkeypatch, "double_l1", DoubleL1)
    s = _covariance(6)
    ours = solve_by_name(s, penalty="double_l1", lam=0.05)
    plain = solve(s, lam=0.1)
    assert ours.converged and ours.duality_gap is None
    assert ours.objective == pytest.approx(plain.objective, rel=1e-7)
    assert ours.stationarity <= 1e-4
