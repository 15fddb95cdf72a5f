"""Spectral coordination on the update (``where="update"``) and with non-finite values.

The filter and the Dirichlet proximal map act on the base optimizer's update
p_new - p_old; checked against closed forms computed independently (scipy's
dense eigendecomposition and linear solve on the same graph).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from test_spectral_method import HIGH_GAIN, LR, K, T, _apply, _reference_laplacian
from torch import nn

import graphopt
from graphopt.optim import GraphOptimizer
from graphopt.plugins.spectral_optim import PROXIMAL_TOLERANCE
from graphopt.solvers.spectral import heat, spectral_filter

ROWS = 64


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, ROWS), nn.Tanh(), nn.Linear(ROWS, 8)).double()


def _loss(model: nn.Module, step: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(step)
    x = torch.randn(40, 12, generator=gen, dtype=torch.float64)
    y = torch.randn(40, 8, generator=gen, dtype=torch.float64)
    return nn.functional.mse_loss(model(x), y)


def _laplacian(weight: torch.Tensor) -> np.ndarray:
    return _reference_laplacian(weight.double()).numpy()


def _filter(x: torch.Tensor, theta0: torch.Tensor) -> torch.Tensor:
    values, vectors = scipy.linalg.eigh(_laplacian(theta0))
    u, lam = torch.from_numpy(vectors[:, :K]), torch.from_numpy(values[:K])
    return spectral_filter(x, u, lam, heat(T), high_gain=HIGH_GAIN)


def _base_update(param: torch.Tensor, grad: torch.Tensor, base: type, **kwargs) -> torch.Tensor:
    """The base optimizer's first update of ``param`` for ``grad``, on a copy."""
    copy_ = param.detach().clone().requires_grad_(True)
    copy_.grad = grad.clone()
    base([copy_], **kwargs).step()
    return copy_.detach() - param.detach()


@pytest.mark.parametrize(
    ("base", "kwargs"),
    [(torch.optim.SGD, {"lr": LR}), (torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.1})],
)
def test_update_filter_rewrites_the_base_step_as_the_closed_form(base, kwargs) -> None:
    model = _model()
    weight = model[0].weight
    theta0 = weight.detach().clone()
    _apply(model, where="update")
    opt = GraphOptimizer.for_model(model, base=base, **kwargs)
    assert not opt.transforms and [t.name for t in opt.update_transforms] == ["spectral_filter"]
    _loss(model).backward()
    raw = _base_update(weight, weight.grad, base, **kwargs)
    opt.step()
    torch.testing.assert_close(
        weight.detach() - theta0, _filter(raw, theta0), rtol=1e-9, atol=1e-12
    )


def test_update_filter_differs_from_the_gradient_filter_under_adam() -> None:
    """Adam's per-coordinate scaling acts between a gradient filter and the step; a
    filter on the update is not rescaled (the reason where='update' exists)."""
    steps = {}
    for where in ("gradient", "update"):
        model = _model()
        theta0 = model[0].weight.detach().clone()
        _apply(model, where=where)
        opt = GraphOptimizer.for_model(model, lr=1e-2)
        _loss(model).backward()
        grad = model[0].weight.grad.clone()
        opt.step()
        steps[where] = model[0].weight.detach() - theta0
    raw = _base_update(theta0, grad, torch.optim.AdamW, lr=1e-2)
    torch.testing.assert_close(steps["update"], _filter(raw, theta0), rtol=1e-9, atol=1e-12)
    filtered_first = _base_update(theta0, _filter(grad, theta0), torch.optim.AdamW, lr=1e-2)
    torch.testing.assert_close(steps["gradient"], filtered_first, rtol=1e-9, atol=1e-12)
    assert (steps["update"] - steps["gradient"]).norm() > 0.1 * steps["gradient"].norm()


@pytest.mark.parametrize("weight", [1e-3, 0.05, 1.0, 30.0])
def test_dirichlet_on_the_update_is_its_proximal_map(weight) -> None:
    """d <- argmin_x 1/2 ||x - d||^2 + weight tr(x^T L x) = (I + 2 weight L)^-1 d, to the
    solver's tolerance, across four decades of weight (CG steps grow with sqrt(kappa))."""
    model = _model()
    param = model[0].weight
    theta0 = param.detach().clone()
    _apply(model, where="update", transform=None, dirichlet_weight=weight)
    opt = GraphOptimizer.for_model(model, base=torch.optim.SGD, lr=LR)
    _loss(model).backward()
    raw = _base_update(param, param.grad, torch.optim.SGD, lr=LR)
    opt.step()
    system = np.eye(ROWS) + 2 * weight * _laplacian(theta0)
    expected = scipy.linalg.solve(system, raw.numpy(), assume_a="pos")
    error = param.detach().numpy() - theta0.numpy() - expected
    # the CG bound is on the energy norm of the error, relative to that of the solution
    energy = math.sqrt(np.sum(error * (system @ error)) / np.sum(expected * (system @ expected)))
    assert energy <= PROXIMAL_TOLERANCE
    prox = opt.update_transforms[0]
    assert prox.iterations(param) <= ROWS


def test_filter_and_proximal_map_together_on_the_update() -> None:
    """Both on the update: the filter first, then the proximal map."""
    weight = 0.05
    model = _model()
    param = model[0].weight
    theta0 = param.detach().clone()
    _apply(model, where="update", dirichlet_weight=weight)
    opt = GraphOptimizer.for_model(model, base=torch.optim.SGD, lr=LR)
    assert [t.name for t in opt.update_transforms] == ["spectral_filter", "spectral_dirichlet"]
    assert not opt.regularizers
    _loss(model).backward()
    raw = _base_update(param, param.grad, torch.optim.SGD, lr=LR)
    opt.step()
    system = np.eye(ROWS) + 2 * weight * _laplacian(theta0)
    expected = scipy.linalg.solve(system, _filter(raw, theta0).numpy(), assume_a="pos")
    np.testing.assert_allclose(param.detach().numpy() - theta0.numpy(), expected, atol=1e-8)


def test_proximal_map_of_a_zero_update_is_exactly_zero() -> None:
    model = _model()
    param = model[0].weight
    _apply(model, where="update", transform=None, dirichlet_weight=0.5)
    opt = GraphOptimizer.for_model(model, base=torch.optim.SGD, lr=LR)
    prox = opt.update_transforms[0]
    state = opt.transform_state(prox)[param]
    update = torch.zeros_like(param)
    update[:, 3] = 1.0
    result = prox.transform_update(update, param, state)
    assert torch.count_nonzero(result[:, [0, 1, 2, *range(4, 12)]]) == 0
    assert result[:, 3].abs().sum() > 0


@pytest.mark.parametrize("where", ["gradient", "update"])
def test_update_pieces_resume_bit_identically(tmp_path, where) -> None:
    def build() -> tuple[nn.Module, GraphOptimizer]:
        model = _model()
        _apply(model, where=where, dirichlet_weight=0.1, features="gradients", refresh_every=2)
        return model, GraphOptimizer.for_model(model, lr=1e-2)

    model, opt = build()
    for step in range(3):  # one refresh (after step 2) before the checkpoint
        opt.zero_grad()
        _loss(model, step).backward()
        opt.step()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, tmp_path / "ckpt.pt")
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    resumed, resumed_opt = build()
    resumed.load_state_dict(saved["model"])
    resumed_opt.load_state_dict(saved["opt"])
    for step in range(3, 7):  # through a second refresh
        for m, o in ((model, opt), (resumed, resumed_opt)):
            o.zero_grad()
            _loss(m, step).backward()
            o.step()
    for p, q in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)


def test_refreshed_graph_gives_the_proximal_map_its_laplacian_and_bound() -> None:
    model = _model()
    param = model[0].weight
    _apply(
        model,
        where="update",
        dirichlet_weight=0.2,
        features="gradients",
        refresh_every=3,
    )
    opt = GraphOptimizer.for_model(model, base=torch.optim.SGD, lr=LR)
    total = torch.zeros_like(param)
    for step in range(3):
        opt.zero_grad()
        _loss(model, step).backward()
        total += param.grad
        opt.step()
    prox = opt.update_transforms[1]
    state = opt.transform_state(prox)[param]
    n = param.shape[0]
    lap = torch.sparse_csr_tensor(
        state["laplacian_crow"],
        state["laplacian_col"],
        state["laplacian_values"],
        (n, n),
        check_invariants=True,
    ).to_dense()
    np.testing.assert_allclose(lap.numpy(), _laplacian(total), atol=1e-12)
    bound = np.abs(_laplacian(total)).sum(axis=1).max()
    assert prox.state_dict()["bounds"] == [pytest.approx(bound)]


# -- non-finite values -----------------------------------------------------------------------


def _nan_gradient(param: torch.Tensor, row: int = 5, col: int = 7) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    grad = torch.randn(param.shape, generator=gen, dtype=param.dtype)
    grad[row, col] = float("nan")
    return grad


@pytest.mark.parametrize("where", ["gradient", "update"])
@pytest.mark.parametrize("base", [torch.optim.SGD, torch.optim.AdamW])
def test_one_nan_gradient_entry_stays_in_its_entry(where, base) -> None:
    """Issue 17: one NaN entry used to turn all 64 rows of the parameter NaN. Now the
    column holding it (the entries the graph couples it with) passes unfiltered, so the
    NaN stays where it came from, and every other column is filtered as before."""
    model = _model()
    param = model[0].weight
    theta0 = param.detach().clone()
    _apply(model, where=where)
    settings = {"lr": LR} if base is torch.optim.SGD else {"lr": LR, "weight_decay": 0.0}
    opt = GraphOptimizer.for_model(model, base=base, **settings)
    grad = _nan_gradient(param)
    param.grad = grad.clone()
    opt.step()
    bad = ~torch.isfinite(param)
    assert bad.sum() == 1 and bad[5, 7]

    def filter_but_column_7(x: torch.Tensor) -> torch.Tensor:
        clean = torch.where(torch.isfinite(x), x, 0.0)
        return torch.cat(
            [_filter(clean, theta0)[:, :7], clean[:, 7:8], _filter(clean, theta0)[:, 8:]], 1
        )

    if where == "gradient":
        expected = _base_update(theta0, filter_but_column_7(grad), base, **settings)
    else:
        expected = filter_but_column_7(_base_update(theta0, grad, base, **settings))
    finite = ~bad
    torch.testing.assert_close((param.detach() - theta0)[finite], expected[finite])


def test_non_finite_entries_do_not_spread_through_the_dirichlet_terms() -> None:
    """The regularizer adds nothing to a column of dTheta holding an infinity; the
    proximal map passes a column holding a NaN through unchanged."""
    weight = 0.3
    model = _model()
    param = model[0].weight
    theta0 = param.detach().clone()
    _apply(model, dirichlet_weight=weight, transform=None)
    opt = GraphOptimizer.for_model(model, base=torch.optim.SGD, lr=LR)
    regularizer = opt.regularizers[0]
    with torch.no_grad():
        param.add_(0.01)
        param[2, 4] = float("inf")
    grad = regularizer.grad(param, opt.transform_state(regularizer)[param])
    assert torch.isfinite(grad).all() and not grad[:, 4].any()
    delta = (param.detach() - theta0).numpy()
    expected = 2 * weight * _laplacian(theta0) @ np.where(np.isfinite(delta), delta, 0.0)
    others = [c for c in range(12) if c != 4]
    np.testing.assert_allclose(grad.numpy()[:, others], expected[:, others], atol=1e-12)

    model = _model()
    param = model[0].weight
    _apply(model, where="update", dirichlet_weight=weight, transform=None)
    opt = GraphOptimizer.for_model(model, base=torch.optim.SGD, lr=LR)
    prox = opt.update_transforms[0]
    update = _nan_gradient(param)
    result = prox.transform_update(update.clone(), param, opt.transform_state(prox)[param])
    assert (~torch.isfinite(result)).sum() == 1 and torch.isnan(result[5, 7])
    torch.testing.assert_close(result[:, 7], update[:, 7], equal_nan=True)
    assert not torch.equal(result[:, 6], update[:, 6])


def test_nan_gradient_is_not_collected_into_the_gradient_graph() -> None:
    model = _model()
    param = model[0].weight
    _apply(model, features="gradients", refresh_every=2)
    opt = GraphOptimizer.for_model(model, base=torch.optim.SGD, lr=LR)
    param.grad = _nan_gradient(param)
    opt.step()
    assert torch.isfinite(opt.transform_state(opt.transforms[0])[param]["gradient_sum"]).all()


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"where": "loss"}, "where must be one of 'gradient', 'update'"),
        ({"parameters": []}, "parameters must be None or a non-empty list"),
        ({"parameters": "weight"}, "parameters must be None or a non-empty list"),
        (
            {"dirichlet_weight": 0.1, "laplacian": "random_walk"},
            "dirichlet_weight needs a symmetric Laplacian",
        ),
    ],
)
def test_bad_update_settings_are_rejected_before_the_model_is_touched(option, message) -> None:
    model = _model()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=message):
        _apply(model, **option)
    assert not graphopt.methods_of(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_update_place_needs_a_transform_that_filters_updates(monkeypatch) -> None:
    class GradientOnly:
        name = "gradient_only"

        def transform(self, grad, param, state):
            return grad

    registry = graphopt.registry
    original = registry.get

    def get(kind, name):
        if (kind, name) == ("transform", "gradient_only"):
            return GradientOnly
        return original(kind, name)

    monkeypatch.setattr(registry, "get", get)
    with pytest.raises(ValueError, match="where='update' needs a transform with transform_upd"):
        _apply(_model(), where="update", transform="gradient_only")
