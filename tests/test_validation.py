"""Shared solver input checks name the argument and the problem."""

from __future__ import annotations

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
