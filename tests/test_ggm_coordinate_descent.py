"""QUIC's coordinate descent (the compiled model solver of ``newton`` for the l1 graphical
lasso): its answer satisfies the model's optimality conditions in closed form, it stays on
its free set, bad buffers raise, and ``newton`` with it reaches the optimum the CG model
solver, ADMM and cvxpy reach; ``choose_solver`` takes it where the benchmarks say."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from test_ggm_newton import LAM, correlation

from graphopt.solvers.ggm import choose_solver, make_groups, solve
from graphopt.solvers.ggm.admm import admm
from graphopt.solvers.ggm.penalties import L1Penalty
from graphopt.solvers.reference import graphical_lasso_reference

newton_module = importlib.import_module("graphopt.solvers.ggm.newton")
extension = pytest.importorskip("graphopt.solvers.ggm._coordinate_descent")


def model_problem(p: int, seed: int):
    """W, G = S - W, X (positive definite, sparse) and per-pair weights of a Newton model."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((2 * p, p))
    s = a.T @ a / (2 * p)
    x = np.eye(p) + np.triu(rng.standard_normal((p, p)) * (rng.random((p, p)) < 0.3), 1) * 0.1
    x = x + np.triu(x, 1).T
    w = np.linalg.inv(x)
    lam = np.triu(np.full((p, p), 0.1), 1) * rng.uniform(0.5, 1.5, (p, p))
    return w, s - w, x, lam


def run_sweeps(w, g, x, lam, free, max_sweeps=20000, tol=1e-13):
    cols, rows = np.nonzero(np.triu(free).T)  # ordered by column, as newton passes them
    d, u = np.zeros_like(w), np.zeros_like(w)
    done = extension.sweeps(
        w, g, x, lam, rows.astype(np.int64), cols.astype(np.int64), d, u, max_sweeps, tol
    )
    return d, u, done


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("density", [1.0, 0.4])
def test_sweeps_solve_the_newton_model_to_its_optimality_conditions(seed, density):
    """min <G, D> + 1/2 <D, W D W> + sum Lam_ij |X + D|_ij over D on F: on F the gradient
    M = G + W D W satisfies M_ii = 0, M_ij = -Lam_ij sign(X + D)_ij where X + D != 0 and
    |M_ij| <= Lam_ij where it is 0; off F, D = 0. U is D W throughout."""
    p = 9
    w, g, x, lam = model_problem(p, seed)
    rng = np.random.default_rng(100 + seed)
    free = (rng.random((p, p)) < density) | np.eye(p, dtype=bool)
    free = np.triu(free | free.T)
    d, u, done = run_sweeps(w, g, x, lam, free)
    assert done < 20000  # stopped on its tolerance, not the cap
    np.testing.assert_allclose(d, d.T, atol=0)
    np.testing.assert_allclose(u, d @ w, atol=1e-12)
    sym_free = free | free.T
    assert np.all(d[~sym_free] == 0)
    m = g + w @ d @ w
    upper = np.triu(sym_free, 1)
    target = x + d
    nonzero = upper & (target != 0)
    np.testing.assert_allclose(np.diag(m), 0, atol=1e-10)
    np.testing.assert_allclose(m[nonzero], -np.sign(target[nonzero]) * lam[nonzero], atol=1e-10)
    zero = upper & (target == 0)
    assert np.all(np.abs(m[zero]) <= lam[zero] + 1e-10)


def test_sweeps_stop_at_the_relative_tolerance_and_the_sweep_cap():
    w, g, x, lam = model_problem(6, 0)
    free = np.ones((6, 6), dtype=bool)
    *_, capped = run_sweeps(w, g, x, lam, free, max_sweeps=2, tol=0.0)
    *_, loose = run_sweeps(w, g, x, lam, free, tol=0.5)
    *_, tight = run_sweeps(w, g, x, lam, free, tol=1e-12)
    assert capped == 2
    assert 1 <= loose < tight


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: {**a, "w": np.zeros((3, 4))}, "W must be a square"),
        (lambda a: {**a, "g": np.zeros((5, 5))}, "G must hold 16 items"),
        (lambda a: {**a, "d": np.zeros((4, 4), dtype=np.float32)}, "D must hold 16 items"),
        (lambda a: {**a, "cols": a["cols"][:-1]}, "cols must hold"),
        (lambda a: {**a, "rows": a["cols"], "cols": a["rows"]}, "pairs 0 <= i <= j < p"),
        (lambda a: {**a, "rows": a["rows"].astype(np.int32)}, "rows must hold"),
    ],
)
def test_sweeps_reject_buffers_of_the_wrong_size_or_pairs_out_of_order(change, message):
    w, g, x, lam = model_problem(4, 1)
    rows, cols = np.triu_indices(4, 1)
    args = {
        "w": w, "g": g, "x": x, "lam": lam, "rows": rows.astype(np.int64),
        "cols": cols.astype(np.int64), "d": np.zeros((4, 4)), "u": np.zeros((4, 4)),
    }  # fmt: skip
    args = change(args)
    with pytest.raises(ValueError, match=message):
        extension.sweeps(*args.values(), 10, 0.0)


def test_sweeps_do_not_write_to_read_only_outputs():
    w, g, x, lam = model_problem(4, 2)
    rows, cols = (a.astype(np.int64) for a in np.triu_indices(4))
    d = np.zeros((4, 4))
    d.flags.writeable = False
    with pytest.raises((ValueError, BufferError, TypeError)):
        extension.sweeps(w, g, x, lam, rows, cols, d, np.zeros((4, 4)), 10, 0.0)


@pytest.mark.parametrize(("p", "seed"), [(12, 0), (30, 1), (60, 3)])
def test_newton_with_coordinate_descent_reaches_the_optimum_of_cg_admm_and_cvxpy(p, seed):
    s = correlation(p, seed)
    cd = solve(s, lam=LAM, solver="newton", inner="cd", screen=False)
    cg = solve(s, lam=LAM, solver="newton", inner="cg", screen=False)
    by_admm = solve(s, lam=LAM, solver="admm", screen=False)
    assert cd.converged and cd.info["cd_sweeps"] > 0
    assert cd.duality_gap <= 1e-8 * abs(cd.objective)
    for other in (cg, by_admm):
        assert abs(cd.objective - other.objective) <= 1e-8 * abs(other.objective)
        np.testing.assert_allclose(cd.precision, other.precision, atol=1e-6)
    if p <= 30:  # cvxpy's conic solve: small p
        reference = graphical_lasso_reference(s, LAM)
        assert cd.objective <= reference.objective + 1e-7 * abs(reference.objective)


def test_newton_on_strongly_coupled_coordinates_switches_to_cg_and_converges():
    """scikit-learn's 2-D iris case: coordinate descent would need hundreds of sweeps a
    Newton step; past ``MAX_SWEEPS`` newton solves the model by CG, and reaches skggm's
    answer (tests/test_sklearn_glasso_port.py) to rounding."""
    from sklearn import datasets
    from sklearn.covariance import empirical_covariance

    s = empirical_covariance(datasets.load_iris().data[:, 2:])
    result = solve(s, lam=0.1, solver="newton", inner="cd")
    assert result.converged
    assert result.info["cd_sweeps"] >= newton_module.MAX_SWEEPS
    assert result.info["cg_steps"] > 0
    assert result.stationarity <= 1e-10


def test_inner_solver_is_validated_before_work():
    s = correlation(10, 0)
    with pytest.raises(ValueError, match="inner must be 'cd', 'cg' or None"):
        solve(s, lam=LAM, solver="newton", inner="qr")
    with pytest.raises(ValueError, match="inner='cd' needs the l1 graphical lasso"):
        solve(s, lam=LAM, groups="node", solver="newton", inner="cd")


def test_without_the_extension_newton_uses_cg_and_auto_uses_admm(monkeypatch):
    monkeypatch.setattr(newton_module, "_sweeps", None)
    s = correlation(20, 2)
    result = solve(s, lam=LAM, solver="newton", screen=False)
    assert result.converged and result.info["cd_sweeps"] == 0 and result.info["cg_steps"] > 0
    structure = make_groups(None, 20)
    assert choose_solver(L1Penalty(), structure, torch.from_numpy(s), LAM) is admm
    with pytest.raises(ValueError, match="compiled extension"):
        solve(s, lam=LAM, solver="newton", inner="cd")


def test_auto_takes_newton_for_few_edges_and_admm_for_many_or_for_groups():
    s = torch.from_numpy(correlation(40, 4))
    off = s[np.triu_indices(40, 1)].abs()
    few = float(off.quantile(1 - newton_module_edge_fraction() / 2))
    many = float(off.quantile(1 - 2 * newton_module_edge_fraction()))
    singleton, node = make_groups(None, 40), make_groups("node", 40)
    assert choose_solver(L1Penalty(), singleton, s, few) is newton_module.newton
    assert choose_solver(L1Penalty(), singleton, s, many) is admm
    assert choose_solver(L1Penalty(), node, s, few) is admm
    assert solve(s.numpy(), lam=few).info["solver"] == "newton"
    # the choice is scale free: the same solver for c S and c lam
    assert solve(1e-6 * s.numpy(), lam=1e-6 * few).info["solver"] == "newton"
    assert solve(1e6 * s.numpy(), lam=1e6 * many).info["solver"] == "admm"


def newton_module_edge_fraction() -> float:
    from graphopt.solvers.ggm.api import EDGE_FRACTION

    return EDGE_FRACTION


def test_proximal_newton_checks_its_inner_solver_too():
    from graphopt.solvers.ggm import proximal_newton, singleton_groups

    s = torch.from_numpy(correlation(10, 1))
    start = torch.diag(1.0 / s.diagonal())
    with pytest.raises(ValueError, match="inner must be 'cd', 'cg' or None"):
        proximal_newton(s, start, singleton_groups(10), LAM, 1e-8, inner="lu")
    polish = proximal_newton(s, start, singleton_groups(10), LAM, 1e-10, inner=None)
    assert polish.converged and polish.sweeps > 0
