"""The l1 orthant Newton-CG polish: its Newton step against a dense Kronecker solve, its
descent and convergence, and ADMM's hand-over to it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import make_sparse_spd_matrix

from graphopt.solvers.ggm import kkt_residual, singleton_groups, solve
from graphopt.solvers.ggm.newton import _newton_direction, l1_newton
from graphopt.solvers.ggm.objective import l1_residual
from graphopt.solvers.ggm.penalties import L1Penalty

LAM = 0.2


def correlation(p: int, seed: int) -> np.ndarray:
    """The benchmark's kind of problem: a correlation matrix of 2p samples of a sparse model."""
    precision = make_sparse_spd_matrix(
        p, alpha=0.9, smallest_coef=0.1, largest_coef=0.4, norm_diag=True, random_state=seed
    )
    rng = np.random.default_rng(seed)
    x = rng.multivariate_normal(np.zeros(p), np.linalg.inv(precision), size=2 * p)
    return np.corrcoef(x, rowvar=False)


def exact_solution(s: np.ndarray) -> torch.Tensor:
    """Plain ADMM (no polish) to a tight tolerance."""
    result = solve(torch.from_numpy(s), lam=LAM, tol=1e-12, newton_switch=0, screen=False)
    assert result.converged
    return result.sparse_precision


def test_newton_direction_solves_the_reduced_kronecker_system():
    s = torch.from_numpy(correlation(12, 0))
    optimum = exact_solution(s.numpy())
    omega = optimum + 0.05 * torch.where(optimum != 0, 1.0, 0.0).fill_diagonal_(0.0)
    covariance = torch.linalg.inv(omega)
    residual = l1_residual(omega, s - covariance, LAM)
    free = omega != 0
    direction, _ = _newton_direction(free, residual, covariance, omega, 1e-13, 500)
    # reference: the Hessian W (x) W of -log det on vec(D), restricted to the free entries
    w = covariance.numpy()
    index = np.flatnonzero(free.numpy().ravel())
    hessian = np.kron(w, w)[np.ix_(index, index)]
    expected = np.linalg.solve(hessian, -residual.numpy().ravel()[index])
    np.testing.assert_allclose(direction.numpy().ravel()[index], expected, rtol=1e-8, atol=1e-10)
    assert not direction.numpy().ravel()[np.setdiff1d(np.arange(144), index)].any()


def test_polish_descends_to_the_optimum_with_its_kkt_residual():
    s = torch.from_numpy(correlation(40, 1))
    optimum = exact_solution(s.numpy())
    start = optimum * (1.0 + 0.2 * torch.rand(40, 40, generator=torch.Generator().manual_seed(0)))
    start = 0.5 * (start + start.T)
    polish = l1_newton(s, start, LAM, kkt_tol=1e-9)
    assert polish is not None and polish.converged
    assert len(polish.objectives) >= 2
    assert np.all(np.diff(polish.objectives) <= 1e-12)  # Armijo: f never increases
    np.testing.assert_allclose(polish.omega.numpy(), optimum.numpy(), atol=1e-7)
    structure = singleton_groups(40)
    independent = kkt_residual(polish.omega, s, structure, L1Penalty(), LAM)
    assert independent == pytest.approx(polish.kkt, rel=1e-6, abs=1e-12)
    assert polish.kkt <= 1e-9


def test_polish_declines_starts_it_cannot_use():
    s = torch.from_numpy(correlation(20, 2))
    identity = torch.eye(20, dtype=torch.float64)
    indefinite = identity.clone()
    indefinite[0, 1] = indefinite[1, 0] = 2.0
    assert l1_newton(s, indefinite, LAM, kkt_tol=1e-8) is None
    assert l1_newton(s, identity, LAM, kkt_tol=1e-8, max_start_kkt=1e-3) is None
    stopped = l1_newton(s, identity, LAM, kkt_tol=1e-12, max_steps=1)
    assert stopped is not None and not stopped.converged and len(stopped.objectives) == 1


def test_admm_hands_over_to_newton_and_reaches_the_same_optimum():
    s = correlation(60, 3)
    polished = solve(s, lam=LAM, screen=False)
    plain = solve(s, lam=LAM, screen=False, newton_switch=0)
    assert polished.converged and plain.converged
    assert polished.info["newton_steps"] > 0 and plain.info["newton_steps"] == 0
    assert polished.n_iter < plain.n_iter
    assert polished.objective <= plain.objective + 1e-9 * abs(plain.objective)
    np.testing.assert_allclose(polished.precision, plain.precision, atol=1e-4)
    assert polished.kkt_residual <= 1e-4
    assert len(polished.history["objective"]) == polished.n_iter


@pytest.mark.parametrize("dense_fill", [0.0, 1.0])  # every F dense / every F sparse
def test_hessian_products_equal_the_dense_sandwich(monkeypatch, dense_fill):
    from graphopt.solvers.ggm import newton

    monkeypatch.setattr(newton, "DENSE_FILL", dense_fill)
    generator = torch.Generator().manual_seed(4)
    free = torch.rand(30, 30, generator=generator) < 0.1
    free = free | free.T
    free.fill_diagonal_(True)
    outer = torch.randn(30, 30, generator=generator, dtype=torch.float64)
    values = torch.randn(int(free.sum()), generator=generator, dtype=torch.float64)
    d = np.zeros((30, 30))
    d[free.numpy()] = values.numpy()
    expected = (outer.numpy() @ d @ outer.numpy())[free.numpy()]
    np.testing.assert_allclose(newton._sandwich(free)(values, outer).numpy(), expected, rtol=1e-12)


def test_newton_switch_outside_zero_one_is_rejected():
    with pytest.raises(ValueError, match="newton_switch"):
        solve(correlation(10, 5), lam=LAM, newton_switch=1.5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kkt_tol": 0.0}, "kkt_tol"),
        ({"lam": -1.0}, "lam"),
        ({"omega": torch.eye(3, dtype=torch.float64)}, "omega must have the shape"),
        ({"max_cg": 0}, "max_cg"),
    ],
)
def test_polish_rejects_bad_arguments_by_name(change, message):
    arguments = {
        "s": torch.from_numpy(correlation(10, 6)),
        "omega": torch.eye(10, dtype=torch.float64),
        "lam": LAM,
        "kkt_tol": 1e-8,
    }
    arguments.update(change)
    with pytest.raises(ValueError, match=message):
        l1_newton(**arguments)
