"""Proximal Newton (the ``newton`` solver and ADMM's end game): its Newton system against a
dense Kronecker solve, the group curvature against the norm's Hessian, descent and
convergence, and agreement with cvxpy and with ADMM."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from sklearn.datasets import make_sparse_spd_matrix

from graphopt.solvers.ggm import (
    GGMConvergenceWarning,
    L1Penalty,
    build_active_set,
    kkt_residual,
    make_groups,
    proximal_newton,
    singleton_groups,
    solve,
    subgradient,
)
from graphopt.solvers.reference import graphical_lasso_reference, group_lasso_reference

newton_module = importlib.import_module("graphopt.solvers.ggm.newton")
LAM = 0.2


def correlation(p: int, seed: int) -> np.ndarray:
    """The benchmark's kind of problem: a correlation matrix of 2p samples of a sparse model."""
    precision = make_sparse_spd_matrix(
        p, alpha=0.9, smallest_coef=0.1, largest_coef=0.4, norm_diag=True, random_state=seed
    )
    rng = np.random.default_rng(seed)
    x = rng.multivariate_normal(np.zeros(p), np.linalg.inv(precision), size=2 * p)
    return np.corrcoef(x, rowvar=False)


def exact_solution(s: np.ndarray, groups: object = None) -> torch.Tensor:
    """Plain ADMM (no Newton polish) to rounding: the gap bounds f, not Omega (a gap of
    1e-13 leaves Omega ~1e-6 off here), so the stationarity residual is checked too."""
    result = solve(
        torch.from_numpy(s),
        lam=LAM,
        groups=groups,
        solver="admm",
        tol=1e-16,
        newton_switch=0,
        screen=False,
    )
    assert result.converged and result.stationarity <= 1e-8
    return result.sparse_precision


def test_newton_direction_solves_the_reduced_kronecker_system():
    s = torch.from_numpy(correlation(12, 0))
    optimum = exact_solution(s.numpy())
    omega = optimum + 0.05 * torch.where(optimum != 0, 1.0, 0.0).fill_diagonal_(0.0)
    covariance = torch.linalg.inv(omega)
    structure = singleton_groups(12)
    gradient = s - covariance
    residual = subgradient(omega, gradient, structure, L1Penalty(), LAM)
    model = build_active_set(omega, gradient, structure, LAM, residual, growth=None)
    direction, _ = newton_module.newton_direction(model, covariance, omega, 1e-13, 500)
    # reference: the Hessian W (x) W of -log det on vec(D), restricted to the free entries
    w = covariance.numpy()
    index = np.flatnonzero(model.free.numpy().ravel())
    hessian = np.kron(w, w)[np.ix_(index, index)]
    expected = np.linalg.solve(hessian, -model.residual.numpy().ravel()[index])
    np.testing.assert_allclose(direction.numpy().ravel()[index], expected, rtol=1e-8, atol=1e-10)
    assert not direction.numpy().ravel()[np.setdiff1d(np.arange(144), index)].any()


def test_group_curvature_is_the_hessian_of_the_group_norms():
    """<D, C D> = d^2/dt^2 of 2 sum_g lam w_g ||(Omega + t D)_g|| at t = 0 on nonzero groups."""
    generator = torch.Generator().manual_seed(1)
    p = 7
    structure = make_groups("node", p)
    omega = torch.randn(p, p, generator=generator, dtype=torch.float64)
    omega = omega + omega.T + 10 * torch.eye(p, dtype=torch.float64)
    d = torch.randn(p, p, generator=generator, dtype=torch.float64)
    d = d + d.T
    gradient = torch.zeros_like(omega)
    residual = subgradient(omega, gradient, structure, L1Penalty(), LAM)
    model = build_active_set(omega, gradient, structure, LAM, residual)
    quadratic = float((d * model.penalty_hessian(d)).sum())

    def penalty(t: float) -> float:
        x = omega + t * d
        return sum(2 * LAM * float(x[:j, j].norm()) for j in range(1, p))

    h = 1e-4
    second = (penalty(h) - 2 * penalty(0.0) + penalty(-h)) / h**2
    assert quadratic == pytest.approx(second, rel=1e-5)


@pytest.mark.parametrize("groups", [None, "node"])
def test_polish_descends_to_the_optimum_with_its_certificate(groups):
    s = torch.from_numpy(correlation(40, 1))
    structure = make_groups(groups, 40)
    optimum = exact_solution(s.numpy(), groups)
    noise = 1.0 + 0.2 * torch.rand(40, 40, generator=torch.Generator().manual_seed(0))
    start = optimum * (0.5 * (noise + noise.T))
    polish = proximal_newton(s, start, structure, LAM, 1e-10)
    assert polish is not None and polish.converged
    assert len(polish.objectives) >= 2
    assert np.all(np.diff(polish.objectives) <= 1e-12)  # Armijo: f never increases
    np.testing.assert_allclose(polish.omega.numpy(), optimum.numpy(), atol=1e-7)
    independent = kkt_residual(polish.omega, s, structure, L1Penalty(), LAM)
    assert independent == pytest.approx(polish.kkt, rel=1e-6, abs=1e-12)
    assert polish.gap <= 1e-10 * abs(polish.objective)


def test_polish_declines_starts_it_cannot_use():
    s = torch.from_numpy(correlation(20, 2))
    structure = singleton_groups(20)
    identity = torch.eye(20, dtype=torch.float64)
    indefinite = identity.clone()
    indefinite[0, 1] = indefinite[1, 0] = 2.0
    assert proximal_newton(s, indefinite, structure, LAM, 1e-8) is None
    assert proximal_newton(s, identity, structure, LAM, 1e-8, max_start_stationarity=1e-3) is None
    stopped = proximal_newton(s, identity, structure, LAM, 1e-12, max_steps=1)
    assert stopped is not None and not stopped.converged and len(stopped.objectives) == 1


@pytest.mark.parametrize(
    ("groups", "reference"),
    [
        (None, lambda s: graphical_lasso_reference(s, LAM)),
        ("node", lambda s: group_lasso_reference(s, LAM, "node")),
    ],
)
def test_newton_solver_matches_cvxpy_on_a_singular_covariance(groups, reference):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((10, 14)) @ (np.eye(14) + 0.3 * rng.standard_normal((14, 14)))
    s = np.cov(x, rowvar=False, bias=True)  # n < p: singular
    result = solve(s, lam=LAM, groups=groups, solver="newton", screen=False)
    expected = reference(s)
    assert result.converged
    assert result.info["admm_iterations"] == 0  # Newton finished on its own
    assert result.objective <= expected.objective + 1e-7 * abs(expected.objective)
    assert result.duality_gap <= 1e-8 * max(1.0, abs(result.objective))
    # the gap bounds the distance to cvxpy's optimum from above
    assert result.objective - expected.objective <= result.duality_gap + 1e-7


def test_newton_path_and_warm_start_reach_the_same_optimum(monkeypatch):
    monkeypatch.setattr(newton_module, "PATH_BUDGET", 1.0)  # a path even on this small problem
    s = correlation(60, 3)
    cold = solve(s, lam=LAM, solver="newton", screen=False)
    assert len(set(cold.history["lam"])) > 1  # it followed a path of lams
    warm_start = solve(s, lam=1.5 * LAM, solver="newton", screen=False).precision
    warm = solve(s, lam=LAM, solver="newton", screen=False, omega0=warm_start)
    assert set(warm.history["lam"]) == {LAM}
    assert cold.converged and warm.converged
    np.testing.assert_allclose(cold.precision, warm.precision, atol=1e-7)


def test_newton_path_reports_objectives_at_the_requested_lam(monkeypatch):
    """Path stages run at larger lams; history and progress report f at lam itself:
    a run stopped on the path answers its last iterate, whose f equals the last record."""
    monkeypatch.setattr(newton_module, "PATH_BUDGET", 1.0)
    s = correlation(60, 3)
    reported: list[float] = []
    with pytest.warns(GGMConvergenceWarning):
        stopped = solve(
            s,
            lam=LAM,
            solver="newton",
            screen=False,
            max_iter=2,
            progress=lambda _, values: reported.append(values["objective"]),
        )
    assert len(set(stopped.history["lam"])) == 1 and stopped.history["lam"][0] > LAM
    assert reported == stopped.history["objective"]
    assert reported[-1] == pytest.approx(stopped.objective, rel=1e-12)


def test_admm_hands_over_to_newton_and_reaches_the_same_optimum():
    s = correlation(60, 3)
    polished = solve(s, lam=LAM, solver="admm", screen=False)
    plain = solve(s, lam=LAM, solver="admm", screen=False, newton_switch=0)
    assert polished.converged and plain.converged
    assert polished.info["newton_steps"] > 0 and plain.info["newton_steps"] == 0
    # both certify f to 1e-8; the Newton end game (one step past it) also takes Omega
    # to rounding, where plain ADMM stops once f is certified
    assert polished.n_iter <= plain.n_iter
    assert polished.stationarity <= 1e-3 * plain.stationarity
    assert plain.stationarity <= 0.1 * 1e-8**0.5  # ADMM alone: its kkt_tol holds too
    assert polished.objective <= plain.objective + 1e-9 * abs(plain.objective)
    np.testing.assert_allclose(polished.precision, plain.precision, atol=1e-4)
    assert polished.duality_gap <= 1e-8 * abs(polished.objective)
    assert len(polished.history["objective"]) == polished.n_iter


@pytest.mark.parametrize("dense_fill", [0.0, 1.0])  # every F dense / every F sparse
def test_hessian_products_equal_the_dense_sandwich(monkeypatch, dense_fill):
    monkeypatch.setattr(newton_module, "DENSE_FILL", dense_fill)
    generator = torch.Generator().manual_seed(4)
    free = torch.rand(30, 30, generator=generator) < 0.1
    free = free | free.T
    free.fill_diagonal_(True)
    outer = torch.randn(30, 30, generator=generator, dtype=torch.float64)
    values = torch.randn(int(free.sum()), generator=generator, dtype=torch.float64)
    d = np.zeros((30, 30))
    d[free.numpy()] = values.numpy()
    expected = (outer.numpy() @ d @ outer.numpy())[free.numpy()]
    product = newton_module._sandwich(free)(values, outer)
    np.testing.assert_allclose(product.numpy(), expected, rtol=1e-12)


def test_newton_rejects_penalties_it_cannot_solve():
    with pytest.raises(ValueError, match="newton"):
        solve(correlation(10, 5), lam=LAM, penalty="l2p", p=0.5, solver="newton")


def test_newton_switch_outside_zero_one_is_rejected():
    with pytest.raises(ValueError, match="newton_switch"):
        solve(correlation(10, 5), lam=LAM, solver="admm", newton_switch=1.5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tol": 0.0}, "tol"),
        ({"lam": -1.0}, "lam"),
        ({"omega": torch.eye(3, dtype=torch.float64)}, "omega must have the shape"),
        ({"max_cg": 0}, "max_cg"),
    ],
)
def test_polish_rejects_bad_arguments_by_name(change, message):
    arguments = {
        "s": torch.from_numpy(correlation(10, 6)),
        "omega": torch.eye(10, dtype=torch.float64),
        "structure": singleton_groups(10),
        "lam": LAM,
        "tol": 1e-8,
    }
    arguments.update(change)
    with pytest.raises(ValueError, match=message):
        proximal_newton(**arguments)
