"""SpectralConfig.graph_options belong to the chosen graph: no option of another graph leaks in."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import graphopt
from graphopt.solvers.graphs import knn_cosine
from graphopt.solvers.laplacian import laplacian


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 30), nn.Tanh(), nn.Linear(30, 8)).double()


def _basis(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    [method] = graphopt.methods_of(model)
    basis = method._bases["0.weight"]
    return basis.values, basis.vectors


@pytest.mark.parametrize(
    ("graph", "options"),
    [
        ("correlation_threshold", {}),
        ("correlation_threshold", {"threshold": 0.2}),
        ("gaussian", {}),
        ("gaussian", {"k": 4, "bandwidth": 2.0}),
        ("knn_cosine", {}),
    ],
)
def test_every_row_graph_applies_with_its_own_options(graph, options):
    model = _model()
    graphopt.apply(model, "spectral", ["0"], k=4, graph=graph, graph_options=options)
    values, vectors = _basis(model)
    assert values.shape == (4,) and vectors.shape == (30, 4)
    assert bool(torch.isfinite(values).all())


def test_the_default_graph_keeps_ten_neighbours():
    assert inspect.signature(knn_cosine).parameters["k"].default == 10
    default, explicit = _model(), _model()
    graphopt.apply(default, "spectral", ["0"], k=4)
    graphopt.apply(explicit, "spectral", ["0"], k=4, graph_options={"k": 10})
    torch.testing.assert_close(_basis(default)[0], _basis(explicit)[0], rtol=0, atol=0)
    # and that basis is the one of the 10-NN cosine graph (closed check against its Laplacian)
    weight = _model()[0].weight.detach()
    dense = laplacian(knn_cosine(weight, k=10)).to_dense()
    values = torch.linalg.eigvalsh(dense)[:4]
    torch.testing.assert_close(_basis(default)[0], values, rtol=1e-8, atol=1e-9)


def test_an_option_the_graph_does_not_take_names_the_graph():
    with pytest.raises(TypeError, match=r"correlation_threshold.*'k'"):
        graphopt.apply(
            _model(), "spectral", ["0"], k=4, graph="correlation_threshold", graph_options={"k": 3}
        )
