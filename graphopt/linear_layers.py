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


def conv1d_class() -> type[nn.Module] | None:
    """transformers' ``Conv1D`` if transformers is imported (else no module can be one)."""
    module = sys.modules.get("transformers.pytorch_utils")
    return getattr(module, "Conv1D", None)


def is_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is a transformers ``Conv1D`` (weight stored (in, out))."""
    cls = conv1d_class()
    return cls is not None and isinstance(module, cls)


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
