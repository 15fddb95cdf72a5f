"""Eigensolvers against numpy.linalg.eigh and the closed-form spectra of path, ring, grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import graphopt
from graphopt import Registry, UnknownNameError
from graphopt._registry import BUILTIN_PLUGINS
from graphopt.eigen import choose_eigensolver, smallest_eigenpairs
from graphopt.solvers.eigen import SOLVERS, ConvergenceWarning, choose_method, smallest
from graphopt.solvers.laplacian import laplacian

BLOCK_SOLVERS = ("dense", "lobpcg", "lobpcg_amg", "torch_lobpcg", "lanczos_torch")
"""Solvers that find repeated eigenvalues (block or full methods)."""

SLOW_TORCH_LOBPCG = [
    pytest.param(name, marks=pytest.mark.slow) if name == "torch_lobpcg" else name
    for name in sorted(SOLVERS)
]
"""All solvers, with torch.lobpcg (seconds per small graph) only in the slow suite."""

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def path_adjacency(n: int) -> sp.csr_array:
    return sp.csr_array(sp.diags_array([np.ones(n - 1), np.ones(n - 1)], offsets=[1, -1]))


def ring_adjacency(n: int) -> sp.csr_array:
    adjacency = sp.lil_array(path_adjacency(n))
    adjacency[0, n - 1] = adjacency[n - 1, 0] = 1.0
    return sp.csr_array(adjacency)


def grid_adjacency(a: int, b: int) -> sp.csr_array:
    """Cartesian product of paths: A = A_a (x) I_b + I_a (x) A_b."""
    return sp.csr_array(
        sp.kron(path_adjacency(a), sp.eye(b)) + sp.kron(sp.eye(a), path_adjacency(b))
    )


def path_spectrum(n: int) -> np.ndarray:
    return np.sort(2 - 2 * np.cos(np.pi * np.arange(n) / n))


def ring_spectrum(n: int) -> np.ndarray:
    return np.sort(2 - 2 * np.cos(2 * np.pi * np.arange(n) / n))


def grid_spectrum(a: int, b: int) -> np.ndarray:
    return np.sort((path_spectrum(a)[:, None] + path_spectrum(b)[None, :]).ravel())


def knn_laplacian(n: int, seed: int) -> sp.csr_array:
    """A weighted symmetric kNN Laplacian of random points (simple spectrum)."""
    from graphopt.solvers.graphs import knn_cosine, to_scipy

    points = torch.randn(n, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return laplacian(to_scipy(knn_cosine(points, k=6)))


def solve(name: str, L, k: int, **options):
    return SOLVERS[name](L, k, **options)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_solver_matches_numpy_eigh_values_and_vectors(name):
    L = knn_laplacian(150, seed=0)
    result = solve(name, L, 6)
    values, vectors = np.linalg.eigh(L.toarray())
    np.testing.assert_allclose(result.values, values[:6], atol=1e-7)
    overlap = np.abs(vectors[:, :6].T @ result.vectors)  # simple spectrum: same lines
    np.testing.assert_allclose(overlap, np.eye(6), atol=1e-5)
    assert result.converged and result.method == name


@pytest.mark.parametrize("name", SLOW_TORCH_LOBPCG)
def test_path_graph_closed_form_spectrum(name):
    result = solve(name, laplacian(path_adjacency(90)), 8)
    np.testing.assert_allclose(result.values, path_spectrum(90)[:8], atol=1e-7)


@pytest.mark.parametrize(
    "name", [n for n in SLOW_TORCH_LOBPCG if getattr(n, "values", [n])[0] in BLOCK_SOLVERS]
)
def test_ring_graph_closed_form_spectrum_with_double_eigenvalues(name):
    result = solve(name, laplacian(ring_adjacency(80)), 7)
    np.testing.assert_allclose(result.values, ring_spectrum(80)[:7], atol=1e-7)


@pytest.mark.parametrize("name", BLOCK_SOLVERS)
def test_square_grid_closed_form_spectrum(name):
    result = solve(name, laplacian(grid_adjacency(10, 10)), 6)
    np.testing.assert_allclose(result.values, grid_spectrum(10, 10)[:6], atol=1e-7)


@pytest.mark.parametrize("name", SLOW_TORCH_LOBPCG)
def test_rectangular_grid_with_simple_low_spectrum(name):
    expected = grid_spectrum(7, 11)[:6]
    assert np.min(np.diff(expected)) > 1e-3  # simple: single-vector Krylov methods apply
    result = solve(name, laplacian(grid_adjacency(7, 11)), 6)
    np.testing.assert_allclose(result.values, expected, atol=1e-7)


@pytest.mark.parametrize("name", SLOW_TORCH_LOBPCG)
def test_zero_multiplicity_equals_number_of_components(name):
    parts = [knn_laplacian(n, seed) for seed, n in enumerate((70, 80, 90))]
    L = sp.csr_array(sp.block_diag(parts))
    result = solve(name, L, 5)
    assert np.sum(np.abs(result.values) < 1e-8) == 3
    assert result.values[3] > 1e-3


def test_symmetric_normalized_laplacian_of_ring():
    L = laplacian(ring_adjacency(80), "symmetric")  # = combinatorial / 2 for a 2-regular graph
    result = smallest(L, 5, method="lanczos_torch")
    np.testing.assert_allclose(result.values, ring_spectrum(80)[:5] / 2, atol=1e-8)


@pytest.mark.parametrize("name", SLOW_TORCH_LOBPCG)
def test_residuals_are_reported_below_tolerance_and_recomputable(name):
    L = knn_laplacian(120, seed=3)
    result = solve(name, L, 4)
    norm = np.abs(L.toarray()).sum(axis=1).max()
    recomputed = np.linalg.norm(L @ result.vectors - result.vectors * result.values, axis=0) / norm
    np.testing.assert_allclose(result.residuals, recomputed, rtol=1e-6, atol=1e-15)
    assert result.residuals.max() <= 1e-6


@pytest.mark.parametrize("name", SLOW_TORCH_LOBPCG)
def test_results_are_deterministic_with_largest_entry_positive(name):
    L = knn_laplacian(100, seed=4)
    first, second = solve(name, L, 4), solve(name, L, 4)
    np.testing.assert_array_equal(first.values, second.values)
    np.testing.assert_array_equal(first.vectors, second.vectors)
    pivots = np.abs(first.vectors).argmax(axis=0)
    assert (first.vectors[pivots, np.arange(4)] > 0).all()


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_torch_sparse_input_gives_torch_output_in_its_dtype(name):
    L = knn_laplacian(100, seed=5).tocoo()
    indices = torch.from_numpy(np.vstack([L.row, L.col]).astype(np.int64))
    tensor = torch.sparse_coo_tensor(
        indices, torch.from_numpy(L.data), L.shape, check_invariants=True
    ).coalesce()
    result = solve(name, tensor, 3)
    assert isinstance(result.values, torch.Tensor) and result.vectors.shape == (100, 3)
    assert result.values.dtype == torch.float64 and result.vectors.device == tensor.device
    reference = solve("dense", L.toarray(), 3)
    np.testing.assert_allclose(result.values.numpy(), reference.values, atol=1e-8)


def test_float32_dense_tensor_uses_the_float32_tolerance():
    L = torch.from_numpy(laplacian(path_adjacency(70)).toarray()).float()
    result = smallest(L, 3, method="lanczos_torch")
    assert result.values.dtype == torch.float32 and result.converged
    np.testing.assert_allclose(result.values.numpy(), path_spectrum(70)[:3], atol=1e-4)


def test_not_converging_sets_flag_and_warns():
    L = knn_laplacian(300, seed=6)
    with pytest.warns(ConvergenceWarning, match="lanczos_torch.*did not converge"):
        result = smallest(L, 6, method="lanczos_torch", max_restarts=0, basis_size=10)
    assert not result.converged
    with pytest.warns(ConvergenceWarning, match="arpack_flipped"):
        result = smallest(L, 6, method="arpack_flipped", max_iter=1)
    assert not result.converged


ASYMMETRIC = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])


@pytest.mark.parametrize("name", sorted(SOLVERS))
@pytest.mark.parametrize(
    ("matrix", "k", "message"),
    [
        (ASYMMETRIC, 1, "L must be symmetric"),
        (np.diag([np.nan, 1.0, 2.0]), 1, "NaN"),
        (np.eye(3), 3, "k must be >= 1 and < 3; got 3"),
        (np.eye(3), 0, "k must be"),
        (np.ones((3, 2)), 1, "square"),
    ],
)
def test_bad_input_raises_value_error_before_work(name, matrix, k, message):
    with pytest.raises(ValueError, match=message):
        solve(name, matrix, k)
    with pytest.raises(ValueError, match=message):
        solve(name, sp.csr_array(matrix), k)


def test_random_walk_laplacian_is_rejected_with_advice():
    adjacency = sp.csr_array(np.array([[0, 1.0, 1], [1, 0, 0], [1, 0, 0]]))
    with pytest.raises(ValueError, match="symmetric normalized"):
        smallest(laplacian(adjacency, "random_walk"), 1, method="dense")


@pytest.mark.parametrize(("name", "n", "k"), [("torch_lobpcg", 8, 3), ("lanczos_torch", 10, 4)])
def test_matrices_below_a_solvers_minimum_size_are_solved_densely(name, n, k):
    result = smallest(laplacian(path_adjacency(n)), k, method=name)
    np.testing.assert_allclose(result.values, path_spectrum(n)[:k], atol=1e-12)
    assert result.converged and result.info["components"] == 1


def test_shift_invert_sigma_must_lie_below_the_spectrum():
    L = laplacian(path_adjacency(80))
    with pytest.raises(ValueError, match="sigma must lie below the spectrum"):
        smallest(L, 2, method="arpack_shift_invert", sigma=0.0)
    result = smallest(L, 3, method="arpack_shift_invert", sigma=-0.5)
    np.testing.assert_allclose(result.values, path_spectrum(80)[:3], atol=1e-9)


def test_shift_invert_default_sigma_handles_an_indefinite_matrix():
    L = laplacian(path_adjacency(100)) - 0.7 * sp.eye_array(100)  # eigenvalues from -0.7
    result = smallest(L, 4, method="arpack_shift_invert")
    np.testing.assert_allclose(result.values, path_spectrum(100)[:4] - 0.7, atol=1e-9)


def test_default_policy_by_size_and_device():
    assert choose_method(200, 2000, 16, "cpu") == "dense"
    assert choose_method(1000, 15_000, 16, "cpu") == "arpack_flipped"
    assert choose_method(100_000, 1_500_000, 16, "cpu") == "arpack_flipped"
    assert choose_method(100_000, 1_500_000, 16, "cuda:0") == "lanczos_torch"
    assert choose_method(4000, 60_000, 16, "cuda") == "dense"
    assert choose_method(5000, 60_000, 1000, "cpu") == "dense"


def test_every_solver_is_registered_under_its_name():
    for name, solver in SOLVERS.items():
        assert graphopt.registry.get("eigensolver", name) is solver


def test_smallest_eigenpairs_asks_the_default_policy():
    result = smallest_eigenpairs(laplacian(path_adjacency(40)), 3)
    assert result.method == "dense"
    assert choose_eigensolver(50_000, 10**6, 16, "cpu") == "arpack_flipped"


def test_smallest_eigenpairs_unknown_method_lists_choices():
    with pytest.raises(UnknownNameError, match=r"registered eigensolvers: .*'arpack_flipped'"):
        smallest_eigenpairs(np.eye(4), 2, method="magic")


class PreferLobpcg:
    """A third-party plugin that overrides the eigensolver choice for large sparse input."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int, str]] = []

    @graphopt.hookimpl
    def graphopt_choose_eigensolver(self, n: int, nnz: int, k: int, device: str) -> str | None:
        self.calls.append((n, nnz, k, device))
        return "lobpcg" if n >= 100 else None


def test_third_party_plugin_overrides_the_eigensolver_choice():
    registry = Registry(builtins=BUILTIN_PLUGINS, entry_point_group="graphopt-test-none")
    plugin = PreferLobpcg()
    registry.register(plugin, name="prefer_lobpcg")
    large = knn_laplacian(120, seed=7)
    assert smallest_eigenpairs(large, 3, registry=registry).method == "lobpcg"
    assert plugin.calls == [(120, large.nnz, 3, "cpu")]
    small = laplacian(path_adjacency(30))  # the plugin answers None: the default decides
    assert smallest_eigenpairs(small, 3, registry=registry).method == "dense"


@needs_cuda
@pytest.mark.parametrize("name", ["dense", "lanczos_torch", "torch_lobpcg"])
def test_gpu_solvers_match_cpu_and_stay_on_the_gpu(name):
    L = torch.from_numpy(knn_laplacian(200, seed=8).toarray()).to_sparse()
    result = solve(name, L.cuda(), 5)
    assert result.vectors.is_cuda and result.converged
    reference = solve("dense", L, 5)
    torch.testing.assert_close(result.values.cpu(), reference.values, atol=1e-7, rtol=0)


@needs_cuda
def test_default_policy_on_cuda_returns_cuda_tensors():
    L = torch.from_numpy(laplacian(path_adjacency(300)).toarray()).cuda()
    result = smallest_eigenpairs(L, 4)
    assert result.values.is_cuda and result.method == "dense"


def run_cli(*arguments: object) -> int:
    from graphopt.cli import main

    return main(["eigen", *map(str, arguments)])


@pytest.mark.usefixtures("restore_threads")
def test_cli_eigen_end_to_end_on_an_adjacency(tmp_path, capsys):
    sp.save_npz(tmp_path / "ring.npz", ring_adjacency(40))
    out, report = tmp_path / "pairs.npz", tmp_path / "report.json"
    options = ["-k", 3, "--adjacency", "--out", out, "--report", report, "--method", "lobpcg"]
    assert run_cli(tmp_path / "ring.npz", *options) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(report.read_text())
    assert printed["method"] == "lobpcg" and printed["converged"] and printed["n"] == 40
    with np.load(out) as pairs:
        np.testing.assert_allclose(pairs["values"], ring_spectrum(40)[:3], atol=1e-8)
        assert pairs["vectors"].shape == (40, 3) and pairs["residuals"].max() <= 1e-6


@pytest.mark.usefixtures("restore_threads")
def test_cli_eigen_reads_a_dense_npy_laplacian(tmp_path, capsys):
    np.save(tmp_path / "L.npy", laplacian(path_adjacency(20)).toarray())
    assert run_cli(tmp_path / "L.npy", "-k", 2, "--out", tmp_path / "p.npz") == 0
    assert json.loads(capsys.readouterr().out)["method"] == "dense"


@pytest.mark.usefixtures("restore_threads")
def test_cli_eigen_reports_bad_input(tmp_path, capsys):
    np.save(tmp_path / "L.npy", np.eye(3))
    assert run_cli(tmp_path / "L.npy", "-k", 3, "--out", tmp_path / "p.npz") == 2
    assert "k must be" in capsys.readouterr().err
    assert run_cli(tmp_path / "missing.npz", "--out", tmp_path / "p.npz") == 2
    assert not (tmp_path / "p.npz").exists()


# -- robustness: small graphs, repeated eigenvalues, units, dtypes, options, plugins ----------


def spider_adjacency(legs: int, length: int) -> sp.csr_array:
    """``legs`` paths of ``length`` nodes joined at one hub: every eigenvalue of a leg's
    antisymmetric modes has multiplicity legs - 1 (exact symmetry, one component)."""
    n = 1 + legs * length
    rows, cols = [], []
    for leg in range(legs):
        previous = 0
        for step in range(length):
            node = 1 + leg * length + step
            rows += [previous, node]
            cols += [node, previous]
            previous = node
    return sp.csr_array((np.ones(len(rows)), (rows, cols)), shape=(n, n))


@pytest.mark.parametrize("name", ["lobpcg", "lobpcg_amg", "torch_lobpcg", "arpack_flipped"])
@pytest.mark.parametrize("n", [5, 9, 12, 40])
def test_small_connected_graphs_are_solved(name, n):
    """A connected L below a solver's minimum size goes to dense eigh (lobpcg crashed)."""
    result = solve(name, laplacian(path_adjacency(n)), 2)
    np.testing.assert_allclose(result.values, path_spectrum(n)[:2], atol=1e-9)
    assert result.converged


@pytest.mark.parametrize("name", SLOW_TORCH_LOBPCG)
def test_ring_of_400_finds_every_double_eigenvalue(name):
    """The default-policy size where flipped ARPACK skipped the second copy of each pair."""
    result = solve(name, laplacian(ring_adjacency(400)), 9)
    np.testing.assert_allclose(result.values, ring_spectrum(400)[:9], atol=1e-9)
    assert result.converged
    np.testing.assert_allclose(result.vectors.T @ result.vectors, np.eye(9), atol=1e-6)


def test_default_choice_on_a_ring_of_400_is_correct():
    L = laplacian(ring_adjacency(400))
    result = smallest_eigenpairs(L, 16)
    assert result.method == "arpack_flipped"
    np.testing.assert_allclose(result.values, ring_spectrum(400)[:16], atol=1e-9)


@pytest.mark.parametrize("name", sorted(SOLVERS))
@pytest.mark.parametrize("legs", [3, 7])
def test_multiplicity_beyond_the_block_size_is_found(name, legs):
    L = laplacian(spider_adjacency(legs, 25))
    expected = np.linalg.eigvalsh(L.toarray())[:16]
    result = solve(name, L, 16)
    np.testing.assert_allclose(result.values, expected, atol=1e-8)
    assert result.converged


def test_an_uncertified_answer_is_not_converged():
    """If the complement search cannot run, a single-vector answer is not a certificate."""
    from graphopt.solvers.eigen._common import prepare
    from graphopt.solvers.eigen.multiplicity import certify_multiplicity

    part = prepare(laplacian(ring_adjacency(200)), 3)
    values = torch.tensor(ring_spectrum(200)[[0, 1, 3]])  # the second copy of lambda_1 missing
    vectors = torch.zeros(200, 3, dtype=torch.float64)

    def failing(part, locked, count, round_):
        return torch.empty(0), torch.empty(200, 0), False, {}

    *_, ok, info = certify_multiplicity(
        part, (values, vectors, True, {}), failing, block_size=1, tolerance=1e-6
    )
    assert not ok and not info["multiplicity"]["certified"]

    def finds_the_copy(part, locked, count, round_):
        return values[1:2], torch.ones(200, 1, dtype=torch.float64) / 200**0.5, True, {}

    found, _, ok, _ = certify_multiplicity(
        part, (values, vectors, True, {}), finds_the_copy, block_size=1, tolerance=1e-6
    )
    np.testing.assert_allclose(found.numpy(), ring_spectrum(200)[:3])


SCALES = [1e-150, 1e-40, 1e-8, 1.0, 1e8, 1e40, 1e150]


@pytest.mark.parametrize("name", SLOW_TORCH_LOBPCG)
@pytest.mark.parametrize("scale", SCALES)
def test_eigenpairs_scale_with_the_matrix(name, scale):
    """smallest(c L) = c smallest(L), same vectors, for c across 300 orders of magnitude."""
    L = knn_laplacian(120, seed=9)
    reference = solve(name, L, 4)
    scaled = solve(name, L * scale, 4)
    np.testing.assert_allclose(
        scaled.values, reference.values * scale, rtol=1e-7, atol=1e-9 * scale
    )
    np.testing.assert_allclose(scaled.vectors, reference.vectors, atol=1e-6)
    assert scaled.converged and np.isfinite(scaled.residuals).all()


def test_row_sums_that_overflow_are_rescaled():
    L = knn_laplacian(100, seed=10) * 1e307  # entries finite, row sums past float64's max
    result = solve("dense", L, 3)
    reference = solve("dense", knn_laplacian(100, seed=10), 3)
    np.testing.assert_allclose(result.values / 1e307, reference.values, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        (np.eye(4) * (1 + 1j), "L must hold real numbers"),
        (sp.csr_array(np.eye(4) * (1 + 1j)), "L must hold real numbers"),
        (torch.eye(4, dtype=torch.complex128), "L must hold real numbers"),
        (np.eye(4, dtype=bool), "L must hold real numbers"),
        (torch.eye(4, dtype=torch.bool), "L must hold real numbers"),
        ([["a", "b"], ["c", "d"]], "L must hold real numbers"),
        ([[1.0, 2.0], [3.0]], "L must be a numeric array"),
        (np.zeros((0, 0)), "non-empty square"),
        (np.float64(3.0), "non-empty square"),
    ],
)
@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_bad_element_types_are_rejected(name, matrix, message):
    with pytest.raises(ValueError, match=message):
        solve(name, matrix, 1)


def test_integer_lists_and_half_precision_are_accepted_as_documented():
    L = laplacian(path_adjacency(12)).toarray()
    expected = path_spectrum(12)[:3]
    listed = smallest_eigenpairs(L.astype(int).tolist(), 3)
    np.testing.assert_allclose(listed.values, expected, atol=1e-12)
    half = smallest(torch.from_numpy(L).to(torch.bfloat16), 3, method="dense")
    assert half.values.dtype == torch.float32  # computed in float32, documented
    np.testing.assert_allclose(half.values.numpy(), expected, atol=1e-5)


def test_requires_grad_input_is_detached():
    L = torch.from_numpy(laplacian(path_adjacency(10)).toarray()).requires_grad_()
    result = smallest(L, 2, method="dense")
    assert not result.values.requires_grad and not result.vectors.requires_grad


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("arpack_flipped", {"tol": -1.0}, "tol must be > 0"),
        ("arpack_flipped", {"ncv": 2}, "ncv must be >= 4"),
        ("arpack_flipped", {"max_iter": 0}, "max_iter must be >= 1"),
        ("arpack_flipped", {"blas_threads": 0}, "blas_threads must be >= 1"),
        ("arpack_shift_invert", {"sigma": "low"}, "sigma must be a real number"),
        ("lobpcg", {"seed": -1}, "seed must be >= 0"),
        ("lobpcg", {"seed": 1.5}, "seed must be an integer"),
        ("torch_lobpcg", {"residual_tol": float("nan")}, "residual_tol must be a finite"),
        ("lanczos_torch", {"block_size": 0}, "block_size must be >= 1"),
        ("lanczos_torch", {"max_restarts": True}, "max_restarts must be an integer"),
        ("lanczos_torch", {"basis_size": 3}, "basis_size must be >= "),
        ("dense", {"residual_tol": 0}, "residual_tol must be > 0"),
    ],
)
def test_bad_options_name_the_option(name, options, message):
    with pytest.raises(ValueError, match=message):
        solve(name, laplacian(path_adjacency(90)), 3, **options)


def test_k_is_an_exact_integer():
    L = laplacian(path_adjacency(20))
    assert smallest(L, 2.0, method="dense").values.shape == (2,)
    for bad in (2.5, True, "2", None):
        with pytest.raises(ValueError, match="k must be an integer"):
            smallest_eigenpairs(L, bad)


class RaisingChooser:
    @graphopt.hookimpl(tryfirst=True)
    def graphopt_choose_eigensolver(self, n: int, nnz: int, k: int, device: str) -> str | None:
        raise RuntimeError("policy server unreachable")


class UnknownChooser:
    @graphopt.hookimpl(tryfirst=True)
    def graphopt_choose_eigensolver(self, n: int, nnz: int, k: int, device: str) -> str | None:
        return "no_such_solver"


@pytest.mark.parametrize(
    ("plugin", "problem"),
    [(RaisingChooser(), "raised RuntimeError"), (UnknownChooser(), "'no_such_solver'")],
)
def test_a_broken_choice_plugin_is_reported_and_skipped(plugin, problem, monkeypatch):
    from graphopt._registry import PluginError, PluginWarning

    registry = Registry(builtins=BUILTIN_PLUGINS, entry_point_group="graphopt-test-none")
    registry.register(PreferLobpcg(), name="prefer_lobpcg")
    registry.register(plugin, name="broken_chooser")
    large = knn_laplacian(120, seed=7)
    with pytest.warns(PluginWarning, match=f"'broken_chooser'.*{problem}"):
        assert smallest_eigenpairs(large, 3, registry=registry).method == "lobpcg"
    with pytest.warns(PluginWarning, match="broken_chooser"):  # the built-in policy last
        assert choose_eigensolver(30, 88, 3, "cpu", registry=registry) == "dense"
    monkeypatch.setenv("GRAPHOPT_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="broken_chooser"):
        choose_eigensolver(30, 88, 3, "cpu", registry=registry)


@pytest.mark.parametrize("name", SLOW_TORCH_LOBPCG)
def test_an_indefinite_symmetric_matrix_is_solved_by_every_solver(name):
    """Not only Laplacians: LOBPCG's AMG hierarchy (built on a singular or indefinite L)
    did not converge here until it was shifted by the Gershgorin bound."""
    rng = np.random.default_rng(11)
    weights = np.triu(rng.random((90, 90)) * (rng.random((90, 90)) < 0.3), 1)
    L = weights + weights.T - np.diag(rng.standard_normal(90))
    result = solve(name, L, 5)
    np.testing.assert_allclose(result.values, np.linalg.eigvalsh(L)[:5], atol=1e-8)
    assert result.converged
