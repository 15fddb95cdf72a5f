"""Shared solver input checks name the argument and the problem."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from graphopt.solvers import validation as v


def test_numpy_input_becomes_float64_and_is_flagged():
    tensor, from_numpy = v.as_tensor(np.eye(2, dtype=np.float32), "S")
    assert from_numpy and tensor.dtype == torch.float64


def test_torch_input_keeps_dtype():
    tensor, from_numpy = v.as_tensor(torch.eye(2, dtype=torch.float32), "S")
    assert not from_numpy and tensor.dtype == torch.float32


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        (np.ones((2, 3)), r"S must be a square matrix; got shape \(2, 3\)"),
        (np.array([[1.0, 2.0], [0.0, 1.0]]), "S must be symmetric"),
        (np.array([[np.nan, 0.0], [0.0, 1.0]]), "S contains NaN"),
    ],
)
def test_bad_matrices_are_named(matrix, message):
    tensor, _ = v.as_tensor(matrix, "S")
    with pytest.raises(ValueError, match=message):
        v.check_square_symmetric_finite(tensor, "S")


@pytest.mark.parametrize("value", [-1.0, float("nan"), "a", True])
def test_positive_scalar_checks(value):
    with pytest.raises(ValueError, match="lam must be"):
        v.check_positive(value, "lam")


def test_int_range_check():
    assert v.check_int_in_range(3, "k", 1, 5) == 3
    with pytest.raises(ValueError, match=r"k must be >= 1 and < 5; got 5"):
        v.check_int_in_range(5, "k", 1, 5)


# -- one set of rules for every input kind ---------------------------------------------------


KINDS = {
    "numpy": lambda a: np.asarray(a),
    "list": lambda a: np.asarray(a).tolist(),
    "torch": lambda a: torch.as_tensor(np.asarray(a)),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize(
    "values",
    [
        [[1 + 2j, 0], [0, 1]],
        [[True, False], [False, True]],
    ],
    ids=["complex", "bool"],
)
def test_complex_and_bool_are_rejected_for_every_input_kind(kind, values):
    with pytest.raises(ValueError, match=r"S must hold real numbers \(float64"):
        v.as_tensor(KINDS[kind](values), "S")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_integers_become_float64_for_every_input_kind(kind):
    tensor, _ = v.as_tensor(KINDS[kind]([[2, 1], [1, 2]]), "S")
    assert tensor.dtype == torch.float64
    assert tensor.tolist() == [[2.0, 1.0], [1.0, 2.0]]


@pytest.mark.parametrize(
    ("dtype", "working"),
    [
        (torch.float64, torch.float64),
        (torch.float32, torch.float32),
        (torch.float16, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.int32, torch.float64),
        (torch.uint8, torch.float64),
    ],
)
def test_the_accepted_torch_dtypes_and_what_they_compute_in(dtype, working):
    assert v.as_tensor(torch.ones(2, 2, dtype=dtype), "S")[0].dtype == working


def test_strings_objects_and_ragged_lists_are_rejected():
    for value in ("abc", [["a", "b"]], [[1.0, 2.0], [3.0]], {"a": 1}, None):
        with pytest.raises(ValueError, match="S must"):
            v.as_tensor(value, "S")


def test_scipy_and_torch_sparse_get_the_same_error():
    import scipy.sparse as sp

    messages = []
    with warnings.catch_warnings():  # torch: "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        csr = torch.eye(3).to_sparse_csr()
    for value in (sp.csr_array(np.eye(3)), torch.eye(3).to_sparse(), csr):
        with pytest.raises(ValueError, match="S must be a dense array") as caught:
            v.as_tensor(value, "S")
        messages.append(str(caught.value).split("; got")[0])
    assert len(set(messages)) == 1


def test_a_tensor_that_requires_grad_is_detached():
    value = torch.eye(3, dtype=torch.float64, requires_grad=True)
    tensor, _ = v.as_tensor(value, "S")
    assert not tensor.requires_grad and tensor.data_ptr() == value.data_ptr()


@pytest.mark.parametrize("value", [3, np.int64(3), 3.0, np.float32(3.0), torch.tensor(3)])
def test_exact_integers_are_accepted(value):
    assert v.as_integer(value, "k") == 3


@pytest.mark.parametrize(
    "value", [3.5, True, np.bool_(False), "3", None, float("nan"), float("inf"), [3]]
)
def test_inexact_integers_are_rejected(value):
    with pytest.raises(ValueError, match="k must be an integer"):
        v.as_integer(value, "k")


@pytest.mark.parametrize("value", [0.5, np.float32(0.5), torch.tensor(0.5), np.array(0.5)])
def test_real_scalars_of_every_kind(value):
    assert v.check_real(value, "t", low=0.0, high=1.0) == pytest.approx(0.5)


@pytest.mark.parametrize("value", [-0.1, 1.1, float("nan"), float("inf"), "x", None, True])
def test_real_scalars_outside_the_interval_are_named(value):
    with pytest.raises(ValueError, match=r"t must be (a finite number in \[0, 1\]|a real number)"):
        v.check_real(value, "t", low=0.0, high=1.0)


def test_check_matrix_rejects_empty_shapes():
    for shape in ((0, 3), (3, 0), (3,), (2, 2, 2)):
        with pytest.raises(ValueError, match="features must"):
            v.check_matrix(torch.zeros(shape), "features")
    assert v.check_matrix(torch.zeros(4, 2), "features") == (4, 2)


# -- the rules at the solver entry points ---------------------------------------------------


def covariance(p: int = 6, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((4 * p, p))
    return np.cov(x, rowvar=False, bias=True)


@pytest.mark.filterwarnings("ignore::graphopt.solvers.ggm.GGMConvergenceWarning")  # bcd's budget
@pytest.mark.parametrize("solver", ["admm", "bcd"])
def test_ggm_solve_detaches_a_tensor_that_requires_grad(solver):
    """It crashed in anderson.py (an out= op under autograd)."""
    from graphopt.ggm import solve

    s = torch.tensor(covariance(), requires_grad=True)
    result = solve(s, lam=0.1, solver=solver)
    reference = solve(s.detach().clone(), lam=0.1, solver=solver)
    assert not result.precision.requires_grad
    torch.testing.assert_close(result.precision, reference.precision, rtol=0, atol=0)


def test_ggm_solve_rejects_torch_sparse_as_it_rejects_scipy_sparse():
    import scipy.sparse as sp

    from graphopt.ggm import solve

    s = covariance()
    for value in (sp.csr_array(s), torch.tensor(s).to_sparse()):
        with pytest.raises(ValueError, match="S must be a dense array"):
            solve(value, lam=0.1)


def test_ggm_solve_rejects_complex_and_accepts_lists():
    from graphopt.ggm import solve

    s = covariance()
    with pytest.raises(ValueError, match="S must hold real numbers"):
        solve(s + 0j, lam=0.1)
    listed = solve(s.tolist(), lam=0.1)
    np.testing.assert_array_equal(listed.precision, solve(s, lam=0.1).precision)


def test_devices_are_checked_against_this_machine(monkeypatch):
    assert v.check_device(None, "device") is None
    assert v.check_device("cpu", "device") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device is 'cuda:0' but no cuda device is available"):
        v.check_device("cuda:0", "device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="this machine has 1 cuda device"):
        v.check_device("cuda:3", "device")
    for bad in ("gpu", "", 3.5, [0]):
        with pytest.raises(ValueError, match="device must be a torch device"):
            v.check_device(bad, "device")


def test_reference_solver_names_are_checked_first():
    from graphopt.solvers.reference import graphical_lasso_reference, omega_step_reference

    with pytest.raises(ValueError, match="solver must be one of"):
        graphical_lasso_reference(np.eye(3), 0.1, solver="ECOS")
    with pytest.raises(ValueError, match=r"D must have the shape of S \(3, 3\)"):
        omega_step_reference(np.eye(3), np.eye(2), 0.5)
    solution = graphical_lasso_reference(np.eye(3) * 2.0, 0.1)
    np.testing.assert_allclose(solution.precision, np.eye(3) / 2.0, atol=1e-5)  # S^-1: diagonal
