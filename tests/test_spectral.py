"""Dirichlet energies and the spectral gradient filter, against dense references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import graphopt
from graphopt.solvers import spectral
from graphopt.solvers.graphs import knn_cosine
from graphopt.solvers.laplacian import laplacian
from graphopt.solvers.spectral import ideal


@pytest.fixture
def graph() -> tuple[torch.Tensor, torch.Tensor]:
    """(W dense, L torch sparse) of a weighted kNN graph on 30 nodes."""
    points = torch.randn(30, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    adjacency = knn_cosine(points, k=4)
    return adjacency.to_dense(), laplacian(adjacency)


@pytest.fixture
def X() -> torch.Tensor:
    return torch.randn(30, 3, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def full_basis(L: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    values, vectors = torch.linalg.eigh(L.to_dense())
    return values, vectors


def test_dirichlet_energy_equals_half_weighted_sum_of_squared_differences(graph, X):
    W, L = graph
    rows = X.reshape(30, -1)
    differences = ((rows[:, None, :] - rows[None, :, :]) ** 2).sum(-1)
    expected = 0.5 * (W * differences).sum()
    torch.testing.assert_close(spectral.dirichlet_energy(X, L), expected)
    torch.testing.assert_close(spectral.dirichlet_energy(X, L.to_dense()), expected)


def test_dirichlet_energy_gradient_is_two_L_X(graph, X):
    _, L = graph
    X = X.clone().requires_grad_()
    spectral.dirichlet_energy(X, L).backward()
    expected = 2 * (L.to_dense() @ X.detach().reshape(30, -1)).reshape(X.shape)
    torch.testing.assert_close(X.grad, expected)


def test_dirichlet_energy_of_an_update_is_zero_for_a_constant_shift(graph, X):
    _, L = graph
    update = (X + 3.0) - X  # every node moved by the same vector
    assert float(spectral.dirichlet_energy(update, L)) == pytest.approx(0.0, abs=1e-10)


def test_spectral_energy_with_all_modes_equals_dirichlet_energy(graph, X):
    _, L = graph
    values, vectors = full_basis(L)
    torch.testing.assert_close(
        spectral.spectral_dirichlet_energy(X, vectors, values), spectral.dirichlet_energy(X, L)
    )


def test_spectral_energy_gradient_matches_autograd_of_the_projection(graph, X):
    _, L = graph
    values, vectors = full_basis(L)
    values, vectors = values[:5], vectors[:, :5]
    X = X.clone().requires_grad_()
    spectral.spectral_dirichlet_energy(X, vectors, values).backward()
    rows = X.detach().reshape(30, -1)
    expected = 2 * vectors @ (values[:, None] * (vectors.T @ rows))
    torch.testing.assert_close(X.grad.reshape(30, -1), expected)


def test_filter_with_unit_gains_and_unit_high_gain_is_identity(graph, X):
    _, L = graph
    values, vectors = full_basis(L)
    filtered = spectral.spectral_filter(X, vectors[:, :6], values[:6], spectral.ideal(), 1.0)
    torch.testing.assert_close(filtered, X)


def test_ideal_filter_with_zero_high_gain_is_the_projector(graph, X):
    _, L = graph
    values, vectors = full_basis(L)
    U = vectors[:, :6]
    once = spectral.spectral_filter(X, U, values[:6], spectral.ideal())
    twice = spectral.spectral_filter(once, U, values[:6], spectral.ideal())
    torch.testing.assert_close(once.reshape(30, -1), U @ U.T @ X.reshape(30, -1))
    torch.testing.assert_close(twice, once)  # idempotent


def test_ideal_cutoff_drops_modes_above_it(graph, X):
    _, L = graph
    values, vectors = full_basis(L)
    U, cutoff = vectors[:, :6], float(values[2])
    filtered = spectral.spectral_filter(X, U, values[:6], spectral.ideal(cutoff))
    torch.testing.assert_close(filtered.reshape(30, -1), U[:, :3] @ U[:, :3].T @ X.reshape(30, -1))


@pytest.mark.parametrize("response", [spectral.heat(0.7), spectral.tikhonov(2.0)])
@pytest.mark.parametrize("high_gain", [0.0, 0.3])
def test_filter_equals_dense_U_h_U_transpose(graph, X, response, high_gain):
    _, L = graph
    values, vectors = full_basis(L)
    U, lam = vectors[:, :8], values[:8]
    dense = U @ torch.diag(response(lam)) @ U.T + high_gain * (
        torch.eye(30, dtype=U.dtype) - U @ U.T
    )
    expected = (dense @ X.reshape(30, -1)).reshape(X.shape)
    torch.testing.assert_close(spectral.spectral_filter(X, U, lam, response, high_gain), expected)


def test_heat_filter_with_all_modes_is_the_matrix_exponential(graph, X):
    _, L = graph
    values, vectors = full_basis(L)
    filtered = spectral.spectral_filter(X, vectors, values, spectral.heat(0.5))
    expected = torch.linalg.matrix_exp(-0.5 * L.to_dense()) @ X.reshape(30, -1)
    torch.testing.assert_close(filtered.reshape(30, -1), expected)


def test_responses_have_their_formulas():
    lam = torch.tensor([0.0, 1.0, 4.0], dtype=torch.float64)
    torch.testing.assert_close(spectral.heat(0.5)(lam), torch.exp(-0.5 * lam))
    torch.testing.assert_close(spectral.tikhonov(0.5)(lam), 1 / (1 + 0.5 * lam))
    torch.testing.assert_close(spectral.ideal(1.0)(lam), torch.tensor([1.0, 1.0, 0.0]).double())


def test_filter_is_differentiable(graph, X):
    _, L = graph
    values, vectors = full_basis(L)
    X = X.clone().requires_grad_()
    spectral.spectral_filter(
        X, vectors[:, :4], values[:4], spectral.heat(1.0), 0.2
    ).sum().backward()
    assert X.grad is not None and torch.isfinite(X.grad).all()


def test_responses_are_registered_factories():
    for name in ("heat", "tikhonov", "ideal"):
        assert graphopt.registry.get("response", name) is getattr(spectral, name)


def test_device_mismatch_is_a_value_error(graph, X):
    _, L = graph
    values, vectors = full_basis(L)
    with pytest.raises(ValueError, match="different devices"):
        spectral.spectral_filter(X, vectors.to("meta"), values.to("meta"), spectral.ideal())
    with pytest.raises(ValueError, match="L is on meta but X is on cpu"):
        spectral.dirichlet_energy(X, L.to_dense().to("meta"))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda U, lam, X: spectral.spectral_filter(X, U, lam, spectral.ideal(), 1.5), "high_gain"),
        (lambda U, lam, X: spectral.spectral_filter(X[:10], U, lam, spectral.ideal()), "rows"),
        (lambda U, lam, X: spectral.spectral_filter(X, U, lam[:2], spectral.ideal()), "(n, k)"),
        (lambda U, lam, X: spectral.spectral_filter(X, U, lam, lambda v: v[:1]), "same shape"),
        (lambda U, lam, X: spectral.dirichlet_energy(X[:5], torch.eye(30)), "rows"),
        (lambda U, lam, X: spectral.heat(-1.0), "t must be"),
    ],
)
def test_bad_input_raises_named_value_error(graph, X, call, message):
    values, vectors = full_basis(graph[1])
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(vectors[:, :4], values[:4], X)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_filter_and_energy_run_on_cuda(graph, X):
    _, L = graph
    values, vectors = full_basis(L)
    result = spectral.spectral_filter(X.cuda(), vectors.cuda(), values.cuda(), spectral.heat(1.0))
    assert result.is_cuda
    energy = spectral.dirichlet_energy(X.cuda(), L.cuda())
    assert energy.is_cuda
    np.testing.assert_allclose(float(energy), float(spectral.dirichlet_energy(X, L)), rtol=1e-10)


def test_one_nan_gradient_entry_is_an_error_not_a_nan_column(graph, X):
    """It spread to every row of its column (U U^T mixes all rows), silently."""
    values, vectors = full_basis(graph[1])
    G = X.clone()
    G[3, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="G contains NaN or infinite values"):
        spectral.spectral_filter(G, vectors[:, :6], values[:6], spectral.heat(1.0))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda U, lam, X, L: spectral.spectral_filter(X, U.float(), lam, spectral.ideal()),
            "dtypes",
        ),
        (
            lambda U, lam, X, L: spectral.spectral_filter(X.int(), U, lam, spectral.ideal()),
            "floating",
        ),
        (
            lambda U, lam, X, L: spectral.spectral_filter(X, U, lam * np.nan, spectral.ideal()),
            "values",
        ),
        (lambda U, lam, X, L: spectral.spectral_filter(X, U, lam, lambda v: v * np.inf), "gains"),
        (lambda U, lam, X, L: spectral.spectral_filter(X, U, lam, lambda v: 1.0), "same shape"),
        (lambda U, lam, X, L: spectral.spectral_filter(X, U, lam, "heat"), "callable"),
        (
            lambda U, lam, X, L: spectral.spectral_filter(X, U, lam, spectral.ideal(), "x"),
            "high_gain",
        ),
        (
            lambda U, lam, X, L: spectral.spectral_filter(X, U.numpy(), lam, spectral.ideal()),
            "torch",
        ),
        (lambda U, lam, X, L: spectral.dirichlet_energy(X * np.inf, L), "X contains NaN"),
        (lambda U, lam, X, L: spectral.dirichlet_energy(X, L.float()), "dtypes"),
        (
            lambda U, lam, X, L: spectral.spectral_dirichlet_energy(X, U, lam.int()),
            "values torch.int32",
        ),
        (lambda U, lam, X, L: spectral.spectral_filter(X[:0], U, lam, ideal()), "G must be a non"),
        (
            lambda U, lam, X, L: spectral.spectral_filter(X.half(), U, lam, ideal()),
            "G torch.float16",
        ),
        (lambda U, lam, X, L: spectral.heat(True), "t must be"),
        (lambda U, lam, X, L: spectral.tikhonov(float("inf")), "t must be"),
        (lambda U, lam, X, L: spectral.ideal("x"), "cutoff must be"),
    ],
)
def test_more_bad_input_raises_named_value_error(graph, X, call, message):
    values, vectors = full_basis(graph[1])
    with pytest.raises(ValueError, match=message):
        call(vectors[:, :4], values[:4], X, graph[1])
