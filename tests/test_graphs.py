"""Graph constructions and model-parameter node sets, against scikit-learn and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.neighbors import NearestNeighbors
from torch import nn

import graphopt
from graphopt.nodes import node_features
from graphopt.solvers import graphs


@pytest.fixture
def features() -> torch.Tensor:
    return torch.randn(40, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def dense(adjacency: torch.Tensor) -> np.ndarray:
    return adjacency.to_dense().numpy()


def sklearn_or_knn(points: np.ndarray, k: int, metric: str) -> np.ndarray:
    """0/1 pattern of the symmetrized ('or') kNN graph by scikit-learn."""
    pattern = NearestNeighbors(n_neighbors=k, metric=metric).fit(points)
    directed = pattern.kneighbors_graph(mode="connectivity").toarray()
    return np.maximum(directed, directed.T)


def check_adjacency(matrix: np.ndarray) -> None:
    np.testing.assert_array_equal(matrix, matrix.T)
    assert (matrix >= 0).all()
    assert (np.diag(matrix) == 0).all()


@pytest.mark.parametrize("block_size", [7, 4096])
def test_knn_cosine_matches_sklearn_neighbours_and_cosine_weights(features, block_size):
    adjacency = graphs.knn_cosine(features, k=5, block_size=block_size)
    matrix = dense(adjacency)
    check_adjacency(matrix)
    x = features.numpy()
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    expected = sklearn_or_knn(x, 5, "cosine") * np.clip(unit @ unit.T, 0, None)
    np.testing.assert_allclose(matrix, expected, atol=1e-12)


def test_knn_cosine_output_is_coalesced_sparse_on_input_device_and_dtype(features):
    adjacency = graphs.knn_cosine(features.float(), k=3)
    assert adjacency.layout == torch.sparse_coo and adjacency.is_coalesced()
    assert adjacency.dtype == torch.float32 and adjacency.device == features.device


def test_knn_cosine_drops_negative_similarities():
    points = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.1]], dtype=torch.float64)
    matrix = dense(graphs.knn_cosine(points, k=2))
    assert matrix[0, 1] == 0 and matrix[1, 2] == 0 and matrix[0, 2] > 0.99


def test_gaussian_kernel_weights_use_median_knn_distance(features):
    x = features.numpy()
    adjacency = dense(graphs.gaussian_kernel(features, k=4, block_size=9))
    check_adjacency(adjacency)
    distances, _ = NearestNeighbors(n_neighbors=4).fit(x).kneighbors()
    sigma = np.median(distances)
    squared = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    expected = sklearn_or_knn(x, 4, "euclidean") * np.exp(-squared / (2 * sigma**2))
    np.testing.assert_allclose(adjacency, expected, rtol=1e-9, atol=1e-12)


def test_gaussian_kernel_explicit_bandwidth(features):
    wide = dense(graphs.gaussian_kernel(features, k=4, bandwidth=1e6))
    assert np.allclose(wide[wide > 0], 1.0)


def test_correlation_threshold_matches_numpy_corrcoef(features):
    corr = np.corrcoef(features.numpy())
    np.fill_diagonal(corr, 0)
    adjacency = dense(graphs.correlation_threshold(features, 0.4, block_size=11))
    np.testing.assert_allclose(
        adjacency, np.where(np.abs(corr) >= 0.4, np.abs(corr), 0), atol=1e-12
    )
    signed = dense(graphs.correlation_threshold(features, 0.4, absolute=False))
    np.testing.assert_allclose(signed, np.where(corr >= 0.4, corr, 0), atol=1e-12)


def test_partial_correlation_graph_from_precision():
    omega = np.array([[2.0, -0.8, 0.0], [-0.8, 2.0, 0.6], [0.0, 0.6, 1.0]])
    rho = -omega / np.sqrt(np.outer(np.diag(omega), np.diag(omega)))
    np.fill_diagonal(rho, 0)
    absolute = dense(graphs.partial_correlation_graph(torch.from_numpy(omega)))
    np.testing.assert_allclose(absolute, np.abs(rho))
    positive = dense(graphs.partial_correlation_graph(omega, absolute=False))
    np.testing.assert_allclose(positive, np.clip(rho, 0, None))
    assert positive[1, 2] == 0  # a positive precision entry is a negative partial correlation


def test_partial_correlation_of_inverse_covariance_is_the_regression_correlation():
    rng = np.random.default_rng(1)
    data = rng.standard_normal((400, 4)) @ rng.standard_normal((4, 4))
    omega = np.linalg.inv(np.cov(data.T))
    adjacency = dense(graphs.partial_correlation_graph(omega))
    # partial correlation of 0 and 1: correlation of residuals after regressing out 2, 3
    rest = np.c_[np.ones(400), data[:, 2:]]
    residual = [
        data[:, i] - rest @ np.linalg.lstsq(rest, data[:, i], rcond=None)[0] for i in (0, 1)
    ]
    assert adjacency[0, 1] == pytest.approx(abs(np.corrcoef(residual)[0, 1]), rel=1e-9)


def test_to_scipy_round_trips(features):
    adjacency = graphs.knn_cosine(features, k=3)
    converted = graphs.to_scipy(adjacency)
    assert sp.issparse(converted) and converted.format == "csr"
    np.testing.assert_array_equal(converted.toarray(), dense(adjacency))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: graphs.knn_cosine(torch.ones(5, 2), k=5), "k must be"),
        (lambda: graphs.knn_cosine(torch.ones(5), k=2), "features must be a 2-D"),
        (lambda: graphs.knn_cosine(torch.tensor([[np.nan, 1.0], [1, 1]]), k=1), "NaN"),
        (lambda: graphs.gaussian_kernel(torch.ones(5, 2), k=2, bandwidth=-1.0), "bandwidth"),
        (lambda: graphs.correlation_threshold(torch.ones(5, 2), 1.5), "threshold"),
        (lambda: graphs.partial_correlation_graph(-torch.eye(3)), "positive diagonal"),
        (lambda: graphs.partial_correlation_graph(torch.tensor([[1.0, 2], [0, 1]])), "symmetric"),
    ],
)
def test_bad_input_raises_a_named_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_graph_constructions_are_registered():
    assert graphopt.registry.get("graph", "knn_cosine") is graphs.knn_cosine
    assert set(graphopt.registry.names("graph")) >= {
        "knn_cosine",
        "gaussian",
        "correlation_threshold",
        "partial_correlation",
    }


class TwoLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.query = nn.Linear(4, 6)
        self.value = nn.Linear(4, 6)
        self.out = nn.Linear(6, 3)


def test_node_features_rows_are_views_of_matching_weights():
    model = TwoLayers()
    sets = node_features(model, r".*(query|value)\.weight")
    assert list(sets) == ["query.weight", "value.weight"]
    assert sets["query.weight"].data_ptr() == model.query.weight.data_ptr()
    assert sets["query.weight"].shape == (6, 4)


def test_node_features_heads_group_consecutive_rows():
    model = TwoLayers()
    heads = node_features(model, ["query.weight"], unit="heads", num_heads=3)["query.weight"]
    assert heads.shape == (3, 8)
    torch.testing.assert_close(heads[1], model.query.weight[2:4].reshape(-1))


def test_node_features_whole_tensors_become_one_set():
    tensors = node_features(TwoLayers(), ["query.weight", "value.weight"], unit="tensor")
    assert tensors["tensors"].shape == (2, 24)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patterns": "nothing"}, "match no parameter"),
        ({"patterns": r".*bias", "unit": "rows"}, "needs 2-D"),
        ({"patterns": r".*weight", "unit": "tensor"}, "one size"),
        ({"patterns": r"query\.weight", "unit": "heads", "num_heads": 4}, "multiple"),
        ({"patterns": r"query\.weight", "unit": "heads"}, "num_heads"),
        ({"patterns": r"query\.weight", "unit": "cols"}, "unit must be"),
    ],
)
def test_node_features_bad_requests_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        node_features(TwoLayers(), **kwargs)


# -- robustness: units, dtypes, bad input --------------------------------------------------

SCALES = [1e-150, 1e-30, 1e-6, 1.0, 1e6, 1e30, 1e150]


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize(
    "build",
    [
        lambda x: graphs.knn_cosine(x, k=4),
        lambda x: graphs.gaussian_kernel(x, k=4),
        lambda x: graphs.correlation_threshold(x, 0.3),
    ],
    ids=["knn_cosine", "gaussian_kernel", "correlation_threshold"],
)
def test_graphs_do_not_depend_on_the_units_of_the_features(features, build, scale):
    """Scale-free constructions give the same graph for c x, c across 300 decades."""
    np.testing.assert_allclose(
        dense(build(features * scale)), dense(build(features)), rtol=1e-12, atol=1e-14
    )


@pytest.mark.parametrize("scale", SCALES)
def test_explicit_bandwidth_scales_with_the_features(features, scale):
    reference = dense(graphs.gaussian_kernel(features, k=4, bandwidth=2.0))
    scaled = dense(graphs.gaussian_kernel(features * scale, k=4, bandwidth=2.0 * scale))
    np.testing.assert_allclose(scaled, reference, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("scale", SCALES)
def test_partial_correlations_do_not_depend_on_the_units(scale):
    rng = np.random.default_rng(3)
    precision = np.linalg.inv(np.cov(rng.standard_normal((50, 5)), rowvar=False))
    reference = dense(graphs.partial_correlation_graph(precision))
    np.testing.assert_allclose(
        dense(graphs.partial_correlation_graph(precision * scale)), reference, rtol=1e-12
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_features_are_computed_in_float32(features, dtype):
    adjacency = graphs.knn_cosine(features.to(dtype), k=3)
    assert adjacency.dtype == torch.float32
    expected = dense(graphs.knn_cosine(features.to(dtype).float(), k=3))
    np.testing.assert_array_equal(dense(adjacency), expected)


def test_numpy_and_list_features_give_the_torch_answer(features):
    reference = dense(graphs.knn_cosine(features, k=3))
    np.testing.assert_array_equal(dense(graphs.knn_cosine(features.numpy(), k=3)), reference)
    np.testing.assert_array_equal(dense(graphs.knn_cosine(features.tolist(), k=3)), reference)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: graphs.knn_cosine(torch.ones(5, 0), k=2), "at least 1 row and 1 column"),
        (lambda: graphs.gaussian_kernel(torch.ones(5, 0), k=2), "at least 1 row and 1 column"),
        (lambda: graphs.knn_cosine(torch.ones(0, 3), k=1), "at least 1 row"),
        (lambda: graphs.knn_cosine(torch.ones(1, 3), k=1), "at least 2 rows"),
        (lambda: graphs.gaussian_kernel(torch.ones(5, 2), k=2, bandwidth="x"), "bandwidth"),
        (lambda: graphs.gaussian_kernel(torch.ones(5, 2), k=2, bandwidth=np.nan), "bandwidth"),
        (lambda: graphs.knn_cosine(torch.ones(5, 2), k=2.5), "k must be an integer"),
        (lambda: graphs.knn_cosine(torch.ones(5, 2), k=True), "k must be an integer"),
        (lambda: graphs.knn_cosine(torch.ones(5, 2), k=2, block_size=0), "block_size"),
        (lambda: graphs.knn_cosine(torch.ones(5, 2) * 1j, k=2), "features must hold real"),
        (lambda: graphs.knn_cosine(torch.ones(5, 2).to_sparse(), k=2), "dense array"),
        (lambda: graphs.correlation_threshold(torch.ones(5, 2), "x"), "threshold"),
        (lambda: graphs.correlation_threshold(torch.ones(5, 1)), "2 column"),
        (lambda: graphs.correlation_threshold(torch.ones(5, 3), absolute=1), "absolute"),
        (lambda: graphs.partial_correlation_graph(torch.eye(3), threshold=1.0), "threshold"),
        (lambda: graphs.partial_correlation_graph(np.zeros((0, 0))), "precision must not be empty"),
    ],
)
def test_more_bad_input_raises_a_named_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_graph_is_exactly_symmetric(features, dtype):
    """Blockwise products give r_ij and r_ji that differ in the last bit; a graph may not
    (validate_adjacency allows 1e-8 relative, float32 rounding is 6e-8)."""
    rng = np.random.default_rng(4)
    precision = np.linalg.inv(np.cov(rng.standard_normal((60, 7)), rowvar=False))
    x = features.to(dtype)
    for adjacency in (
        graphs.knn_cosine(x, k=5, block_size=7),
        graphs.gaussian_kernel(x, k=5, block_size=7),
        graphs.correlation_threshold(x, 0.0, block_size=7),
        graphs.partial_correlation_graph(torch.from_numpy(precision).to(dtype)),
    ):
        matrix = adjacency.to_dense()
        assert torch.equal(matrix, matrix.T)
