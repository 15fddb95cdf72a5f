"""Laplacians: the textbook formulas in every format, isolated nodes, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from graphopt.solvers.laplacian import KINDS, degrees, laplacian, validate_adjacency

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")

WEIGHTS = np.array(
    [
        [0.0, 2.0, 0.0, 1.0, 0.0],
        [2.0, 0.0, 3.0, 0.0, 0.0],
        [0.0, 3.0, 0.0, 0.5, 0.0],
        [1.0, 0.0, 0.5, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0],  # node 4 is isolated
    ]
)


def reference(kind: str) -> np.ndarray:
    """The textbook formula, with Chung's convention for isolated nodes."""
    d = WEIGHTS.sum(axis=1)
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d > 0)
    connected = np.diag((d > 0).astype(float))
    if kind == "combinatorial":
        return np.diag(d) - WEIGHTS
    if kind == "symmetric":
        return connected - np.sqrt(inv)[:, None] * WEIGHTS * np.sqrt(inv)[None, :]
    return connected - inv[:, None] * WEIGHTS


def as_format(name: str):
    if name == "numpy":
        return WEIGHTS
    if name == "scipy":
        return sp.csr_array(WEIGHTS)
    if name == "torch_dense":
        return torch.from_numpy(WEIGHTS)
    if name == "torch_coo":
        return torch.from_numpy(WEIGHTS).to_sparse()
    return torch.from_numpy(WEIGHTS).to_sparse_csr()


def to_numpy(matrix) -> np.ndarray:
    if isinstance(matrix, torch.Tensor):
        return (matrix.to_dense() if matrix.layout != torch.strided else matrix).numpy()
    return matrix.toarray() if sp.issparse(matrix) else matrix


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fmt", ["numpy", "scipy", "torch_dense", "torch_coo", "torch_csr"])
def test_laplacian_matches_formula_in_every_format(kind, fmt):
    np.testing.assert_allclose(
        to_numpy(laplacian(as_format(fmt), kind)), reference(kind), atol=1e-15
    )


@pytest.mark.parametrize(
    ("fmt", "check"),
    [
        ("numpy", lambda m: isinstance(m, np.ndarray)),
        ("scipy", sp.issparse),
        ("torch_dense", lambda m: m.layout == torch.strided),
        ("torch_coo", lambda m: m.layout == torch.sparse_coo),
        ("torch_csr", lambda m: m.layout == torch.sparse_csr),
    ],
)
def test_output_format_follows_input_format(fmt, check):
    assert check(laplacian(as_format(fmt)))


def test_combinatorial_rows_sum_to_zero_and_quadratic_form_is_edge_sum():
    x = np.random.default_rng(0).standard_normal(5)
    edge_sum = 0.5 * sum(WEIGHTS[i, j] * (x[i] - x[j]) ** 2 for i in range(5) for j in range(5))
    np.testing.assert_allclose(to_numpy(laplacian(WEIGHTS)).sum(axis=1), 0, atol=1e-15)
    assert x @ to_numpy(laplacian(WEIGHTS)) @ x == pytest.approx(edge_sum)


@pytest.mark.parametrize("kind", KINDS)
def test_zero_multiplicity_counts_components_including_isolated_nodes(kind):
    values = np.linalg.eigvals(to_numpy(laplacian(WEIGHTS, kind))).real
    assert np.sum(np.abs(values) < 1e-12) == 2  # {0, 1, 2, 3} and {4}
    assert values.max() <= (2 + 1e-12 if kind != "combinatorial" else np.inf)


def test_random_walk_is_similar_to_symmetric():
    d = WEIGHTS.sum(axis=1)
    root = np.sqrt(d[:4])
    rw, sym = reference("random_walk")[:4, :4], reference("symmetric")[:4, :4]
    np.testing.assert_allclose(rw, np.diag(1 / root) @ sym @ np.diag(root), atol=1e-15)


def test_torch_laplacian_stays_on_device_and_dtype():
    adjacency = torch.from_numpy(WEIGHTS).float().to_sparse()
    result = laplacian(adjacency, "symmetric")
    assert result.dtype == torch.float32 and result.device == adjacency.device


def test_degrees_of_every_format_agree():
    for fmt in ["numpy", "scipy", "torch_dense", "torch_coo"]:
        np.testing.assert_allclose(np.asarray(degrees(as_format(fmt))), WEIGHTS.sum(axis=1))


@pytest.mark.parametrize("fmt", ["numpy", "scipy", "torch_dense", "torch_coo"])
@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        (np.array([[0.0, 1.0], [2.0, 0.0]]), "must be symmetric"),
        (np.array([[0.0, -1.0], [-1.0, 0.0]]), "non-negative"),
        (np.array([[0.0, np.nan], [np.nan, 0.0]]), "NaN"),
        (np.ones((2, 3)), "square"),
    ],
)
def test_bad_adjacency_raises_named_value_error(fmt, matrix, message):
    converted = {
        "numpy": matrix,
        "scipy": sp.csr_array(matrix),
        "torch_dense": torch.from_numpy(matrix),
        "torch_coo": torch.from_numpy(matrix).to_sparse(),
    }[fmt]
    with pytest.raises(ValueError, match=f"^adjacency .*{message}"):
        validate_adjacency(converted)
    with pytest.raises(ValueError, match=message):
        laplacian(converted)


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="kind must be one of"):
        laplacian(WEIGHTS, "normalized")


@pytest.mark.parametrize("fmt", ["numpy", "scipy", "torch_dense", "torch_coo"])
@pytest.mark.parametrize("scale", [1e-300, 1e-150, 1e-8, 1e8, 1e150, 1e300])
def test_laplacians_scale_with_the_weights(fmt, scale):
    """L(c W) = c L(W) for the combinatorial kind; the normalized kinds do not change."""

    def scaled(name):
        matrix = as_format(name)
        return matrix * scale

    for kind in KINDS:
        expected = reference(kind) * (scale if kind == "combinatorial" else 1.0)
        np.testing.assert_allclose(
            to_numpy(laplacian(scaled(fmt), kind)), expected, rtol=1e-12, atol=0
        )


@pytest.mark.parametrize("fmt", ["numpy", "scipy", "torch_dense", "torch_coo"])
def test_overflowing_degrees_are_a_value_error_not_inf(fmt):
    huge = {
        "numpy": WEIGHTS * 5e307,
        "scipy": sp.csr_array(WEIGHTS * 5e307),
        "torch_dense": torch.from_numpy(WEIGHTS * 5e307),
        "torch_coo": torch.from_numpy(WEIGHTS * 5e307).to_sparse(),
    }[fmt]
    with pytest.raises(ValueError, match=r"degree .* overflows"):
        laplacian(huge)
    with pytest.raises(ValueError, match=r"degree .* overflows"):
        degrees(huge)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int64])
def test_half_and_integer_adjacencies_use_their_working_dtype(dtype):
    result = laplacian(torch.from_numpy(WEIGHTS * 2).to(dtype), "combinatorial")
    assert result.dtype == (torch.float64 if dtype == torch.int64 else torch.float32)
    np.testing.assert_allclose(result.double().numpy(), reference("combinatorial") * 2)


def test_lists_and_bad_element_types():
    np.testing.assert_allclose(laplacian(WEIGHTS.tolist()), reference("combinatorial"))
    np.testing.assert_allclose(degrees(WEIGHTS.tolist()), WEIGHTS.sum(axis=1))
    for bad in (WEIGHTS * 1j, WEIGHTS > 0, [["a"]]):
        with pytest.raises(ValueError, match="adjacency must hold real numbers"):
            laplacian(bad)
    with pytest.raises(ValueError, match="kind must be one of"):
        laplacian(WEIGHTS, ["symmetric"])
