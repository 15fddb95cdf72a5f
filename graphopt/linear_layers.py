"""The linear layers graphopt adapts, read and written in one (out, in) form.

``torch.nn.Linear`` stores ``weight`` as (out, in) with ``y = x W^T + b``;
``transformers.pytorch_utils.Conv1D`` (GPT-2, GPT-J's ancestors) stores it as
(in, out) with ``y = x W + b`` (PEFT's ``fan_in_fan_out=True``). Every adapter
works on ``weight_matrix(layer)``: the (out, in) matrix itself for a Linear, the
transposed *view* for a Conv1D, so an in-place write through it updates the
layer's own tensor. One code path serves both layer types.
"""

from __future__ import annotations

import sys

import torch
from torch import nn


def is_instance_of_imported(obj: object, module: str, name: str) -> bool:
    """``isinstance(obj, module.name)`` when ``module`` is imported; False otherwise (no
    object can be an instance of a class whose module was never imported), so checking
    for a transformers or peft class imports neither."""
    cls = getattr(sys.modules.get(module), name, None)
    return isinstance(cls, type) and isinstance(obj, cls)


def is_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is a transformers ``Conv1D`` (weight stored (in, out))."""
    return is_instance_of_imported(module, "transformers.pytorch_utils", "Conv1D")


def is_linear_layer(module: nn.Module) -> bool:
    """Whether graphopt can adapt ``module``: an ``nn.Linear`` or a transformers ``Conv1D``."""
    return isinstance(module, nn.Linear) or is_conv1d(module)


def features(layer: nn.Module) -> tuple[int, int]:
    """``(out_features, in_features)`` of a linear layer."""
    rows, cols = layer.weight.shape  # type: ignore[union-attr]
    return (int(cols), int(rows)) if is_conv1d(layer) else (int(rows), int(cols))


def weight_matrix(layer: nn.Module) -> torch.Tensor:
    """The layer's weight as an (out, in) matrix: the tensor itself for ``nn.Linear``,
    its transposed view for ``Conv1D`` (writes through it change the layer)."""
    weight = layer.weight  # type: ignore[union-attr]
    return weight.T if is_conv1d(layer) else weight


def describe(layer: nn.Module) -> str:
    """``"Linear (out x in)"``-style text for error messages."""
    out_features, in_features = features(layer)
    return f"{type(layer).__name__} ({out_features} x {in_features})"
