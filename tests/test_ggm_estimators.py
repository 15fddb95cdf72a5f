"""The scikit-learn estimators: the estimator contract and agreement with solve()."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.covariance import GraphicalLasso
from sklearn.utils.estimator_checks import parametrize_with_checks

from graphopt.solvers.ggm import solve
from graphopt.solvers.ggm.estimators import GroupGraphicalLasso, GroupGraphicalLassoCV


@parametrize_with_checks([GroupGraphicalLasso(), GroupGraphicalLassoCV(alphas=3, cv=2)])
def test_sklearn_estimator_contract(estimator, check):
    check(estimator)


def _data(n: int = 60, p: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, p)) @ (np.eye(p) + 0.4 * rng.standard_normal((p, p)))


def test_fit_matches_scikit_learn_graphical_lasso_precision():
    x = _data(400)
    ours = GroupGraphicalLasso(alpha=0.1).fit(x)
    theirs = GraphicalLasso(alpha=0.1, tol=1e-8, max_iter=1000).fit(x)
    np.testing.assert_allclose(ours.precision_, theirs.precision_, atol=1e-3)
    assert ours.score(x) == pytest.approx(theirs.score(x), rel=1e-4)


def test_precomputed_covariance_gives_the_same_fit_as_data():
    x = _data()
    s = np.cov(x, rowvar=False, bias=True)
    from_data = GroupGraphicalLasso(alpha=0.1, groups="node").fit(x)
    from_s = GroupGraphicalLasso(alpha=0.1, groups="node", covariance="precomputed").fit(s)
    np.testing.assert_allclose(from_data.precision_, from_s.precision_, atol=1e-10)
    np.testing.assert_allclose(from_data.precision_, solve(s, lam=0.1, groups="node").precision)


def test_fitted_attributes_are_consistent():
    estimator = GroupGraphicalLasso(alpha=0.05).fit(_data())
    np.testing.assert_allclose(estimator.covariance_ @ estimator.precision_, np.eye(6), atol=1e-8)
    assert len(estimator.costs_) == estimator.n_iter_
    assert estimator.converged_


def test_cv_chooses_a_grid_alpha_by_held_out_likelihood():
    estimator = GroupGraphicalLassoCV(alphas=4, cv=3).fit(_data(90))
    scores = estimator.cv_results_["mean_test_score"]
    assert estimator.alpha_ == estimator.alphas_[int(np.argmax(scores))]
    assert np.all(np.diff(estimator.alphas_) < 0)
    refit = GroupGraphicalLasso(alpha=estimator.alpha_).fit(_data(90))
    np.testing.assert_allclose(estimator.precision_, refit.precision_, atol=1e-8)


def test_cv_rejects_bad_alpha_grid():
    with pytest.raises(ValueError, match="alphas"):
        GroupGraphicalLassoCV(alphas=[-1.0]).fit(_data())


def test_estimator_reports_its_certificate_and_takes_penalty_options():
    x = _data(80)
    convex = GroupGraphicalLasso(alpha=0.1).fit(x)
    assert convex.converged_
    assert convex.duality_gap_ <= 1e-8 * max(1.0, abs(convex.objective_))
    s = np.cov(x, rowvar=False, bias=True)
    assert convex.stationarity_ == pytest.approx(convex.kkt_residual_ / np.linalg.norm(s))
    by_options = GroupGraphicalLasso(
        alpha=0.1, penalty="l2p", penalty_options={"p": 0.8}, groups="node"
    ).fit(x)
    by_p = GroupGraphicalLasso(alpha=0.1, penalty="l2p", p=0.8, groups="node").fit(x)
    np.testing.assert_array_equal(by_options.precision_, by_p.precision_)
    assert by_options.duality_gap_ is None and by_options.get_params()["penalty_options"] == {
        "p": 0.8
    }
