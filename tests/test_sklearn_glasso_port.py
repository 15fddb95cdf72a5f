"""scikit-learn's own graphical lasso tests, ported to graphopt.

The source is ``sklearn/covariance/tests/test_graphical_lasso.py`` (scikit-learn 1.9,
shipped in the installed wheel). Every test is kept with its data, its reference values
(R's glasso on iris, skggm's QUIC on the 2-D case) and its assertions, run against
``graphopt.solvers.ggm.solve`` (in place of ``graphical_lasso``) and the estimators
``GroupGraphicalLasso`` / ``GroupGraphicalLassoCV`` (in place of ``GraphicalLasso`` /
``GraphicalLassoCV``). scikit-learn's two modes ("cd", "lars") become graphopt's
solvers ("newton", "admm"). Where graphopt legitimately differs, the test asserts
graphopt's documented behaviour instead and a comment says why.

scikit-learn's ``global_random_seed`` fixture (42 unless its CI sets another) becomes a
parametrization over a few seeds.
"""

from __future__ import annotations

import sys
from io import StringIO

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import linalg
from sklearn import config_context, datasets
from sklearn.covariance import empirical_covariance
from sklearn.datasets import make_sparse_spd_matrix
from sklearn.model_selection import GroupKFold
from sklearn.utils import check_random_state
from sklearn.utils._testing import (
    _convert_container,
    assert_array_almost_equal,
    assert_array_less,
)

from graphopt.solvers.ggm import solve
from graphopt.solvers.ggm.estimators import GroupGraphicalLasso, GroupGraphicalLassoCV

SEEDS = [0, 1, 42]
MODES = ["newton", "admm"]  # scikit-learn's "cd" and "lars"
TRUE_COV = np.array(  # written out in each of scikit-learn's CV tests
    [
        [0.8, 0.0, 0.2, 0.0],
        [0.0, 0.4, 0.0, 0.0],
        [0.2, 0.0, 0.3, 0.1],
        [0.0, 0.0, 0.1, 0.7],
    ]
)


@pytest.mark.parametrize("global_random_seed", SEEDS)
def test_graphical_lassos(global_random_seed):
    """Test the graphical lasso solvers."""
    # Sample data from a sparse multivariate normal
    dim = 10
    n_samples = 100
    random_state = check_random_state(global_random_seed)
    prec = make_sparse_spd_matrix(dim, alpha=0.95, random_state=random_state)
    cov = linalg.inv(prec)
    X = random_state.multivariate_normal(np.zeros(dim), cov, size=n_samples)
    emp_cov = empirical_covariance(X)

    for alpha in (0.0, 0.1, 0.25):
        covs = dict()
        icovs = dict()
        for method in MODES:
            # one solve, as scikit-learn's (no block screening: the history is then the
            # whole problem's)
            result = solve(emp_cov, lam=alpha, solver=method, tol=1e-7, max_iter=100, screen=False)
            covs[method] = result.covariance
            icovs[method] = result.precision
            costs = np.array(result.history.get("objective", []))
            if alpha != 0:
                if method == "newton":
                    # Check that the costs always decrease: Newton's line search is
                    # monotone (scikit-learn's assertion, kept)
                    assert_array_less(np.diff(costs), 1e-10)
                else:
                    # graphopt differs: ADMM is not a descent method; its history holds
                    # the objective of every (feasible) Omega iterate, so the certified
                    # answer lies below all of them, up to its duality gap (the history
                    # of float32 steps is good to ~1e-7 relative)
                    # (no history: the start diag(S)^-1 was already certified optimal)
                    slack = result.duality_gap + 1e-6 * abs(result.objective)
                    assert costs.size == result.n_iter
                    assert costs.size == 0 or result.objective <= costs.min() + slack
            else:  # lam = 0 is answered in closed form: no iterations to record
                assert result.n_iter == 0 and costs.size == 0
        # Check that the 2 approaches give similar results
        assert_allclose(covs["newton"], covs["admm"], atol=2e-3)
        assert_allclose(icovs["newton"], icovs["admm"], atol=2e-3)

    # Smoke test the estimator
    model = GroupGraphicalLasso(alpha=0.25, tol=1e-7, max_iter=100).fit(X)
    model.score(X)
    assert_allclose(model.covariance_, covs["newton"], rtol=1e-6)

    # For a centered matrix, assume_centered could be chosen True or False
    # Check that this returns indeed the same result for centered data
    Z = X - X.mean(0)
    precs = list()
    for assume_centered in (False, True):
        prec_ = GroupGraphicalLasso(assume_centered=assume_centered).fit(Z).precision_
        precs.append(prec_)
    assert_array_almost_equal(precs[0], precs[1])


@pytest.mark.parametrize("global_random_seed", SEEDS)
def test_graphical_lasso_when_alpha_equals_0(global_random_seed):
    """Test graphical_lasso's early return condition when alpha=0."""
    X = np.random.RandomState(global_random_seed).randn(100, 10)
    emp_cov = empirical_covariance(X, assume_centered=True)

    model = GroupGraphicalLasso(alpha=0, covariance="precomputed").fit(emp_cov)
    assert_allclose(model.precision_, np.linalg.inv(emp_cov))

    precision = solve(emp_cov, lam=0).precision
    assert_allclose(precision, np.linalg.inv(emp_cov))


@pytest.mark.parametrize("mode", [*MODES, "bcd"])
@pytest.mark.filterwarnings("ignore::graphopt.solvers.ggm.GGMConvergenceWarning")
def test_graphical_lasso_n_iter(mode):
    X, _ = datasets.make_classification(n_samples=5_000, n_features=20, random_state=0)
    emp_cov = empirical_covariance(X)

    result = solve(emp_cov, lam=0.2, solver=mode, max_iter=2, screen=False)
    assert result.n_iter == 2
    assert not result.converged  # graphopt also says so (and warns)


@pytest.mark.parametrize("method", MODES)
def test_graphical_lasso_iris(method):
    # Hard-coded solution from R glasso package for alpha=1.0
    # (need to set penalize.diagonal to FALSE)
    cov_R = np.array(
        [
            [0.68112222, 0.0000000, 0.265820, 0.02464314],
            [0.00000000, 0.1887129, 0.000000, 0.00000000],
            [0.26582000, 0.0000000, 3.095503, 0.28697200],
            [0.02464314, 0.0000000, 0.286972, 0.57713289],
        ]
    )
    icov_R = np.array(
        [
            [1.5190747, 0.000000, -0.1304475, 0.0000000],
            [0.0000000, 5.299055, 0.0000000, 0.0000000],
            [-0.1304475, 0.000000, 0.3498624, -0.1683946],
            [0.0000000, 0.000000, -0.1683946, 1.8164353],
        ]
    )
    X = datasets.load_iris().data
    emp_cov = empirical_covariance(X)
    result = solve(emp_cov, lam=1.0, solver=method)
    assert_array_almost_equal(result.covariance, cov_R)
    assert_array_almost_equal(result.precision, icov_R)


@pytest.mark.parametrize("method", MODES)
def test_graph_lasso_2D(method):
    # Hard-coded solution from Python skggm package
    # obtained by calling `quic(emp_cov, lam=.1, tol=1e-8)`
    cov_skggm = np.array([[3.09550269, 1.186972], [1.186972, 0.57713289]])

    icov_skggm = np.array([[1.52836773, -3.14334831], [-3.14334831, 8.19753385]])
    X = datasets.load_iris().data[:, 2:]
    emp_cov = empirical_covariance(X)
    result = solve(emp_cov, lam=0.1, solver=method)
    assert_array_almost_equal(result.covariance, cov_skggm)
    assert_array_almost_equal(result.precision, icov_skggm)


@pytest.mark.parametrize("method", MODES)
def test_graphical_lasso_iris_singular(method):
    # Small subset of rows to test the rank-deficient case
    # Need to choose samples such that none of the variances are zero
    indices = np.arange(10, 13)

    # Hard-coded solution from R glasso package for alpha=0.01
    # library(glasso)
    # X = t(array(c(
    #   5.4, 3.7, 1.5, 0.2,
    #   4.8, 3.4, 1.6, 0.2,
    #   4.8, 3. , 1.4, 0.1),
    #   dim = c(4, 3)
    # ))
    # n = nrow(X)
    # emp_cov = cov(X) * (n - 1)/n  # without Bessel correction
    # sol = glasso(emp_cov, 0.01, penalize.diagonal = FALSE)
    # # print cov_R
    # print(noquote(format(sol$w, scientific=FALSE, digits = 10)))
    cov_R = np.array(
        [
            [0.08, 0.056666662595, 0.00229729713223, 0.00153153142149],
            [0.056666662595, 0.082222222222, 0.00333333333333, 0.00222222222222],
            [0.002297297132, 0.003333333333, 0.00666666666667, 0.00009009009009],
            [0.001531531421, 0.002222222222, 0.00009009009009, 0.00222222222222],
        ]
    )
    icov_R = np.array(
        [
            [24.42244057, -16.831679593, 0.0, 0.0],
            [-16.83168201, 24.351841681, -6.206896552, -12.5],
            [0.0, -6.206896171, 153.103448276, 0.0],
            [0.0, -12.499999143, 0.0, 462.5],
        ]
    )
    X = datasets.load_iris().data[indices, :]
    emp_cov = empirical_covariance(X)
    result = solve(emp_cov, lam=0.01, solver=method)
    assert_allclose(result.covariance, cov_R, atol=1e-6)
    assert_allclose(result.precision, icov_R, atol=1e-5)


@pytest.mark.parametrize("global_random_seed", SEEDS)
# 6 samples in 5 folds: one-sample test folds, on which scikit-learn's
# empirical_covariance warns (as it does inside GraphicalLassoCV)
@pytest.mark.filterwarnings("ignore:Only one sample available:UserWarning")
def test_graphical_lasso_cv(global_random_seed):
    # Sample data from a sparse multivariate normal
    dim = 5
    n_samples = 6
    random_state = np.random.RandomState(global_random_seed)
    prec = make_sparse_spd_matrix(dim, alpha=0.96, random_state=random_state)
    cov = linalg.inv(prec)
    X = random_state.multivariate_normal(np.zeros(dim), cov, size=n_samples)
    # Capture stdout, to smoke test the verbose mode. graphopt differs: there is no
    # verbose mode (non-converged solves warn instead); the capture stays, and the
    # fit must print nothing
    orig_stdout = sys.stdout
    try:
        sys.stdout = StringIO()
        model = GroupGraphicalLassoCV(alphas=5, tol=1e-1).fit(X)
        printed = sys.stdout.getvalue()
    finally:
        sys.stdout = orig_stdout
    assert printed == ""
    assert model.alpha_ in model.alphas_
    assert np.all(np.linalg.eigvalsh(model.precision_) > 0)


@pytest.mark.parametrize("alphas_container_type", ["list", "tuple", "array"])
def test_graphical_lasso_cv_alphas_iterable(alphas_container_type):
    """Check that we can pass an array-like to `alphas`.

    Non-regression test for:
    https://github.com/scikit-learn/scikit-learn/issues/22489
    """
    true_cov = TRUE_COV
    rng = np.random.RandomState(0)
    X = rng.multivariate_normal(mean=[0, 0, 0, 0], cov=true_cov, size=200)
    alphas = _convert_container([0.02, 0.03], alphas_container_type)
    # graphopt has no n_jobs (the folds run in one process)
    model = GroupGraphicalLassoCV(alphas=alphas, tol=1e-1).fit(X)
    assert_allclose(model.alphas_, [0.03, 0.02])


@pytest.mark.parametrize(
    "alphas,err_type,err_msg",
    [
        ([-0.02, 0.03], ValueError, "must be"),
        ([0, 0.03], None, None),
        (["not_number", 0.03], ValueError, "alphas must be a non-empty list of numbers"),
    ],
)
def test_graphical_lasso_cv_alphas_invalid_array(alphas, err_type, err_msg):
    """Check that if an array-like containing a value
    outside of (0, inf] is passed to `alphas`, a ValueError is raised.
    Check if a string is passed, a TypeError is raised.

    graphopt differs: alpha = 0 is allowed (the unpenalized maximum likelihood
    S^-1, answered in closed form when S is definite, as here), so [0, 0.03] fits; a
    string is reported as a ValueError naming ``alphas`` (graphopt's rule for bad
    input) instead of scikit-learn's parameter-validation TypeError.
    """
    true_cov = TRUE_COV
    rng = np.random.RandomState(0)
    X = rng.multivariate_normal(mean=[0, 0, 0, 0], cov=true_cov, size=200)

    if err_type is None:
        model = GroupGraphicalLassoCV(alphas=alphas, tol=1e-1).fit(X)
        assert model.alpha_ in (0.0, 0.03)
        return
    with pytest.raises(err_type, match=err_msg):
        GroupGraphicalLassoCV(alphas=alphas, tol=1e-1).fit(X)


@pytest.mark.parametrize("global_random_seed", SEEDS)
def test_graphical_lasso_cv_scores(global_random_seed):
    splits = 4
    n_alphas = 5
    n_refinements = 3
    true_cov = TRUE_COV
    rng = np.random.RandomState(global_random_seed)
    X = rng.multivariate_normal(mean=[0, 0, 0, 0], cov=true_cov, size=200)
    # graphopt differs: no n_refinements (one grid, no zooming in around the best alpha)
    cov = GroupGraphicalLassoCV(cv=splits, alphas=n_alphas).fit(X)

    _assert_graphical_lasso_cv_scores(
        cov=cov,
        n_splits=splits,
        n_refinements=n_refinements,
        n_alphas=n_alphas,
    )


@pytest.mark.parametrize("global_random_seed", SEEDS)
@config_context(enable_metadata_routing=True)
def test_graphical_lasso_cv_scores_with_routing(global_random_seed):
    """Check that `GraphicalLassoCV` internally dispatches metadata to
    the splitter.

    graphopt: ``fit`` passes its keyword arguments to the splitter's ``split``.
    """
    splits = 5
    n_alphas = 5
    n_refinements = 3
    true_cov = TRUE_COV
    rng = np.random.RandomState(global_random_seed)
    X = rng.multivariate_normal(mean=[0, 0, 0, 0], cov=true_cov, size=300)
    n_samples = X.shape[0]
    groups = rng.randint(0, 5, n_samples)
    params = {"groups": groups}
    cv = GroupKFold(n_splits=splits)
    cv.set_split_request(groups=True)

    cov = GroupGraphicalLassoCV(cv=cv, alphas=n_alphas).fit(X, **params)

    _assert_graphical_lasso_cv_scores(
        cov=cov,
        n_splits=splits,
        n_refinements=n_refinements,
        n_alphas=n_alphas,
    )
    # the folds were the groups' (each test fold is whole groups)
    for train, test in cv.split(X, groups=groups):
        assert not set(groups[train]) & set(groups[test])


def _assert_graphical_lasso_cv_scores(cov, n_splits, n_refinements, n_alphas):
    cv_results = cov.cv_results_
    # alpha and one for each split

    # graphopt differs: scikit-learn scores n_refinements * n_alphas + 1 alphas
    # (its refinements plus alpha_max); graphopt scores its grid of n_alphas
    total_alphas = n_alphas
    keys = ["alphas"]
    split_keys = [f"split{i}_test_score" for i in range(n_splits)]
    for key in keys + split_keys:
        assert key in cv_results
        assert len(cv_results[key]) == total_alphas

    cv_scores = np.asarray([cov.cv_results_[key] for key in split_keys])
    expected_mean = cv_scores.mean(axis=0)
    expected_std = cv_scores.std(axis=0)

    assert_allclose(cov.cv_results_["mean_test_score"], expected_mean)
    assert_allclose(cov.cv_results_["std_test_score"], expected_std)
