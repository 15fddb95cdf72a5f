"""Scale invariance: solve(c S, lam c^k) = solve(S, lam) / c for every penalty, solver,
container and dtype, c from 1e-8 to 1e8 (k the penalty's degree)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import make_sparse_spd_matrix

from graphopt.solvers.ggm import GGMConvergenceWarning, Penalty, solve

P = 10
PAIRS = [[(0, 1), (0, 2), (1, 2)], [(3, 4), (5, 8)], [(6, 7)], [(0, 8), (2, 5), (1, 9)]]

# (penalty keyword arguments, groups, lam, degree)
PROBLEMS = {
    "l1": ({}, None, 0.1, 1.0),
    "node": ({}, "node", 0.15, 1.0),
    "important": ({}, "important:3", 0.2, 1.0),
    "pairs": ({}, PAIRS, 0.1, 1.0),
    "l2p": ({"penalty": "l2p", "p": 0.8}, "node", 0.15, 0.8),
}
CASES = [
    (problem, solver)
    for problem in PROBLEMS
    for solver in ("newton", "admm", "bcd")
    if not (solver == "newton" and problem == "l2p")  # newton: phi(t) = t only
]
LAMBDA0 = 50.0  # bcd's coupling, with the units of S^2


def covariance(n: int = 60, p: int = P, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    precision = make_sparse_spd_matrix(p, alpha=0.7, random_state=seed)
    x = rng.multivariate_normal(np.zeros(p), np.linalg.inv(precision), size=n)
    return np.cov(x, rowvar=False, bias=True)


def scaled_solve(s, c: float, problem: str, solver: str):
    """solve(c S, lam c^k) with the problem's penalty; bcd's lambda0 scaled as S^2."""
    options, groups, lam, degree = PROBLEMS[problem]
    extra = {"lambda0": LAMBDA0 * c**2} if solver == "bcd" else {}
    with warnings.catch_warnings():  # bcd at its reference 50 sweeps may stop short:
        warnings.simplefilter("ignore", GGMConvergenceWarning)  # the same path at every c
        return solve(c * s, lam=lam * c**degree, groups=groups, solver=solver, **options, **extra)


def relative_error(result, reference, c: float) -> float:
    scaled = np.asarray(torch.as_tensor(result.precision, dtype=torch.float64)) * c
    expected = np.asarray(torch.as_tensor(reference.precision, dtype=torch.float64))
    return float(np.abs(scaled - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize(("problem", "solver"), CASES)
@pytest.mark.parametrize("container", ["numpy", "torch"])
def test_float64_solution_scales_exactly_with_the_data(problem, solver, container):
    s = covariance()
    data = s if container == "numpy" else torch.from_numpy(s)
    reference = scaled_solve(data, 1.0, problem, solver)
    for c in (1e-8, 1e-4, 1e4, 1e8):
        result = scaled_solve(data, c, problem, solver)
        assert result.converged == reference.converged
        assert relative_error(result, reference, c) <= 1e-8, c
        # the objective shifts by p log c; the gap (a difference) does not change
        expected = reference.objective + P * np.log(c)
        assert result.objective == pytest.approx(expected, rel=1e-9, abs=1e-9)
        if reference.converged and reference.duality_gap is not None:  # certified alike
            unit_scale_objective = reference.objective - P * np.log(np.trace(s) / P)
            assert result.duality_gap <= 1e-8 * max(1.0, abs(unit_scale_objective))


@pytest.mark.parametrize(("problem", "solver"), CASES)
@pytest.mark.parametrize("container", ["numpy", "torch"])
def test_float32_solution_scales_exactly_with_the_data(problem, solver, container):
    """float32 input: a power of 2 scales it without rounding, and the solve is bit-exact;
    a power of 10 rounds the input (6e-8 relative), so the answer moves at that level."""
    s32 = covariance().astype(np.float32)
    data = s32 if container == "numpy" else torch.from_numpy(s32)
    reference = scaled_solve(data, 1.0, problem, solver)
    for k in (-26, 26):  # 2^26 = 6.7e7
        result = scaled_solve(data, 2.0**k, problem, solver)
        assert relative_error(result, reference, 2.0**k) <= 1e-8, k
        if container == "torch":
            assert result.precision.dtype == torch.float32
    result = scaled_solve(data, 1e-8, problem, solver)
    assert relative_error(result, reference, 1e-8) <= 1e-4


@settings(max_examples=15, deadline=None)
@given(exponent=st.floats(min_value=-8.0, max_value=8.0), seed=st.integers(0, 3))
def test_any_scale_gives_the_same_l1_solution(exponent, seed):
    s = covariance(seed=seed)
    c = 10.0**exponent
    reference = solve(s, lam=0.1)
    result = solve(c * s, lam=0.1 * c)
    assert result.converged and reference.converged
    assert relative_error(result, reference, c) <= 1e-8


class ElasticPenalty(Penalty):
    """phi(t) = t + a t^2 / 2: convex, not homogeneous (``degree`` None), with a conjugate."""

    name = "elastic"
    convex = True

    def __init__(self, a: float = 1.0) -> None:
        self.a = a

    def phi(self, t):
        return t + 0.5 * self.a * t.square()

    def prox(self, t, weight):
        return (t - weight).clamp_min(0.0) / (1.0 + weight * self.a)

    def derivative(self, t):
        return 1.0 + self.a * t

    def conjugate(self, s):
        return (s - 1.0).clamp_min(0.0).square() / (2.0 * self.a)


def test_a_penalty_without_a_degree_is_rescaled_exactly():
    """lam (t + a t^2 / 2) on Omega / c: lam c and a c keep the problem (RescaledPenalty)."""
    s = covariance()
    reference = solve(s, penalty=ElasticPenalty(0.5), lam=0.1, groups="node")
    assert reference.converged and reference.duality_gap <= 1e-8 * abs(reference.objective)
    for c in (1e-6, 1e6):
        result = solve(c * s, penalty=ElasticPenalty(0.5 * c), lam=0.1 * c, groups="node")
        assert relative_error(result, reference, c) <= 1e-8


def test_issue_reproducer_scaled_data_converges_to_the_scaled_answer():
    """The issue's reproducer printed ``False 0.28 | True 1 0.75``."""
    rng = np.random.RandomState(0)
    precision = make_sparse_spd_matrix(30, alpha=0.9, random_state=rng)
    x = rng.multivariate_normal(np.zeros(30), np.linalg.inv(precision), 100)
    s = np.cov(x, rowvar=False, bias=True)
    a, b, c = solve(s, lam=0.1), solve(100 * s, lam=10.0), solve(1e-6 * s, lam=1e-7)
    assert a.converged and b.converged and c.converged
    assert relative_error(b, a, 100) <= 1e-8
    assert relative_error(c, a, 1e-6) <= 1e-8
    assert c.n_iter == a.n_iter
