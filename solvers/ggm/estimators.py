"""scikit-learn estimators over ``graphopt.solvers.ggm.solve``.

``GroupGraphicalLasso`` is the thin estimator shell (hyperparameters in
``__init__``, all work in ``fit``); ``GroupGraphicalLassoCV`` picks ``alpha``
by held-out Gaussian log-likelihood over a grid, each fold solving a
warm-started regularization path (largest alpha first).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.covariance import empirical_covariance, log_likelihood
from sklearn.model_selection import check_cv
from sklearn.utils.validation import check_is_fitted, validate_data

from graphopt.solvers.ggm.api import make_penalty, regularization_path, solve
from graphopt.solvers.ggm.groups import group_norms, make_groups
from graphopt.solvers.ggm.result import GGMConvergenceWarning, GGMResult


class GroupGraphicalLasso(BaseEstimator):
    """Sparse inverse covariance with an (l2,g) group penalty.

    Minimizes -log det Omega + tr(S Omega) + 2 sum_g alpha w_g phi(||Omega_g||_2)
    (``graphopt.solvers.ggm.solve``); with the default singleton groups and
    ``penalty="l1"`` this is scikit-learn's ``GraphicalLasso``.

    Args:
        alpha: the penalty weight lam >= 0.
        penalty: "l1" or "l2p" (or a ``Penalty`` instance).
        p: exponent of "l2p" (default 0.9).
        penalty_options: the named penalty's hyperparameters (``Penalty(**options)``).
        groups: as in ``solve`` ("singleton", "node", "important:K", pairs, ...).
        solver: "auto", "newton", "admm" or "bcd".
        covariance: "precomputed" to pass the covariance matrix itself to ``fit``.
        tol: stopping tolerance of the solver (for convex penalties: the relative
            duality gap).
        max_iter: iteration limit of the solver.
        assume_centered: do not subtract the mean.
        device: torch device to compute on.

    Attributes:
        location_: the mean (zeros when precomputed or assume_centered).
        covariance_: the inverse of precision_.
        precision_: the estimated precision matrix.
        n_iter_: solver iterations.
        costs_: the objective at every iteration.
        objective_: the final objective.
        kkt_residual_: stationarity residual ||R||_F (units of S), None without one.
        duality_gap_: the duality gap certifying precision_ (convex penalties), else None.
        stationarity_: the relative stationarity residual ||R||_F / ||S||_F.
        converged_: whether the solver's stopping criterion held.
    """

    def __init__(
        self,
        alpha: float = 0.01,
        *,
        penalty: Any = "l1",
        p: float | None = None,
        penalty_options: dict[str, Any] | None = None,
        groups: Any = None,
        solver: str = "auto",
        covariance: str | None = None,
        tol: float = 1e-8,
        max_iter: int = 2000,
        assume_centered: bool = False,
        device: str | None = None,
    ) -> None:
        self.alpha = alpha
        self.penalty = penalty
        self.p = p
        self.penalty_options = penalty_options
        self.groups = groups
        self.solver = solver
        self.covariance = covariance
        self.tol = tol
        self.max_iter = max_iter
        self.assume_centered = assume_centered
        self.device = device

    def fit(self, X: Any, y: Any = None) -> GroupGraphicalLasso:
        """Estimate the precision matrix from data X (n_samples, n_features) or a covariance."""
        s, location = self._covariance_of(X)
        result = solve(
            s,
            penalty=self.penalty,
            groups=self.groups,
            lam=self.alpha,
            solver=self.solver,
            tol=self.tol,
            max_iter=self.max_iter,
            device=self.device,
            p=self.p,
            penalty_options=self.penalty_options,
        )
        self._store(result, location)
        return self

    def score(self, X_test: Any, y: Any = None) -> float:
        """Mean Gaussian log-likelihood of X_test under the fitted model (as scikit-learn's)."""
        check_is_fitted(self, "precision_")
        X_test = validate_data(self, X_test, reset=False)
        test_covariance = empirical_covariance(X_test - self.location_, assume_centered=True)
        return float(log_likelihood(test_covariance, self.precision_))

    def _covariance_of(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        if self.covariance == "precomputed":
            s = validate_data(self, X, dtype=np.float64, ensure_min_features=1)
            return s, np.zeros(s.shape[1])
        if self.covariance is not None:
            raise ValueError(f"covariance must be None or 'precomputed'; got {self.covariance!r}")
        X = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
        location = np.zeros(X.shape[1]) if self.assume_centered else X.mean(axis=0)
        return empirical_covariance(X, assume_centered=self.assume_centered), location

    def _store(self, result: GGMResult, location: np.ndarray) -> None:
        self.location_ = location
        self.precision_ = result.precision
        self.covariance_ = result.covariance
        self.n_iter_ = result.n_iter
        self.costs_ = list(result.history.get("objective", []))
        self.objective_ = result.objective
        self.kkt_residual_ = result.kkt_residual
        self.duality_gap_ = result.duality_gap
        self.stationarity_ = result.stationarity
        self.converged_ = result.converged

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.pairwise = self.covariance == "precomputed"
        return tags


class GroupGraphicalLassoCV(GroupGraphicalLasso):
    """``GroupGraphicalLasso`` with alpha chosen by K-fold held-out log-likelihood.

    Args:
        alphas: a list of candidate alphas, or the number of a geometric grid from
            alpha_max (the smallest alpha giving a diagonal solution for phi(t) = t)
            down to ``alpha_ratio * alpha_max``.
        cv: folds (int, splitter or iterable; default 5-fold).
        alpha_ratio: the grid's smallest over largest alpha.
        penalty: as in ``GroupGraphicalLasso`` (so are p, penalty_options, groups,
            solver, tol, max_iter, assume_centered and device).

    Differences from scikit-learn's ``GraphicalLassoCV`` (docs/solvers/ggm.md):
    a test fold is centred with its training fold's mean (scikit-learn centres it
    with its own), and the grid is not refined (no ``n_refinements``).

    Attributes:
        alpha_: the chosen alpha (then refit on all data, with the attributes of
            ``GroupGraphicalLasso``).
        alphas_: the grid, decreasing.
        cv_results_: "alphas", "split<k>_test_score", "mean_test_score", "std_test_score".
    """

    def __init__(
        self,
        *,
        alphas: int | list[float] = 6,
        cv: Any = None,
        alpha_ratio: float = 0.05,
        penalty: Any = "l1",
        p: float | None = None,
        penalty_options: dict[str, Any] | None = None,
        groups: Any = None,
        solver: str = "auto",
        tol: float = 1e-8,
        max_iter: int = 2000,
        assume_centered: bool = False,
        device: str | None = None,
    ) -> None:
        super().__init__(
            penalty=penalty,
            p=p,
            penalty_options=penalty_options,
            groups=groups,
            solver=solver,
            tol=tol,
            max_iter=max_iter,
            assume_centered=assume_centered,
            device=device,
        )
        self.alphas = alphas
        self.cv = cv
        self.alpha_ratio = alpha_ratio

    def fit(self, X: Any, y: Any = None, **split_params: Any) -> GroupGraphicalLassoCV:
        """Cross-validate alpha on data X (n_samples, n_features), then refit on all of X.

        ``split_params`` go to the splitter's ``split`` (e.g. ``groups`` for ``GroupKFold``).
        """
        X = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
        location = np.zeros(X.shape[1]) if self.assume_centered else X.mean(axis=0)
        s = empirical_covariance(X, assume_centered=self.assume_centered)
        alphas = self._grid(s)
        folds = list(check_cv(self.cv).split(X, y, **split_params))
        scores = np.empty((len(folds), len(alphas)))
        options = {
            "penalty": self.penalty,
            "groups": self.groups,
            "solver": self.solver,
            "tol": self.tol,
            "max_iter": self.max_iter,
            "device": self.device,
            "p": self.p,
            "penalty_options": self.penalty_options,
        }
        for k, (train, test) in enumerate(folds):
            train_s = empirical_covariance(X[train], assume_centered=self.assume_centered)
            center = 0.0 if self.assume_centered else X[train].mean(axis=0)
            test_s = empirical_covariance(X[test] - center, assume_centered=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", GGMConvergenceWarning)
                path = regularization_path(train_s, alphas, **options)
            scores[k] = [log_likelihood(test_s, r.precision) for r in path]
        mean = scores.mean(axis=0)
        best = int(np.argmax(np.where(np.isfinite(mean), mean, -np.inf)))
        self.alphas_ = alphas
        self.alpha_ = float(alphas[best])
        self.cv_results_ = {
            "alphas": alphas,
            "mean_test_score": mean,
            "std_test_score": scores.std(axis=0),
        }
        for k in range(len(folds)):
            self.cv_results_[f"split{k}_test_score"] = scores[k]
        self._store(solve(s, lam=self.alpha_, **options), location)
        return self

    def _grid(self, s: np.ndarray) -> np.ndarray:
        if not isinstance(self.alphas, int | np.integer):
            try:
                alphas = np.asarray(self.alphas, dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"alphas must be a non-empty list of numbers >= 0; got {self.alphas!r}"
                ) from err
            if alphas.ndim != 1 or alphas.size == 0 or not np.all(alphas >= 0):
                raise ValueError(
                    f"alphas must be a non-empty list of values >= 0; got {self.alphas!r}"
                )
            return np.sort(alphas)[::-1]
        if self.alphas < 1:
            raise ValueError(f"alphas must be >= 1 when an integer; got {self.alphas!r}")
        if not 0 < self.alpha_ratio < 1:
            raise ValueError(f"alpha_ratio must be in (0, 1); got {self.alpha_ratio!r}")
        make_penalty(self.penalty, self.p, self.penalty_options)
        structure = make_groups(self.groups, s.shape[0])
        import torch

        norms = group_norms(torch.from_numpy(s), structure).numpy() / structure.weights
        alpha_max = float(norms.max()) if norms.size else 1.0
        alpha_max = alpha_max if alpha_max > 0 else 1.0
        return np.geomspace(alpha_max, alpha_max * self.alpha_ratio, self.alphas)
