"""Building blocks for methods that wrap ``nn.Linear`` layers with an additive adapter.

``AdaptedLinear`` computes ``y = base_layer(x) + delta(x)`` and merges exactly
by adding ``delta_weight()`` to the base weight (and bias); ``WrappingMethod``
is a ``Method`` that replaces every target by such a layer and implements the
verbs the wrapping gives for free (trainable parameters, merge, unmerge).
LoRA and LinChain are two small subclasses each; a third-party adapter can be
one too.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import nn

from graphopt.adapters import replace_module
from graphopt.methods import Method


class AdaptedLinear(nn.Module, abc.ABC):
    """An ``nn.Linear`` (``base_layer``, frozen) plus an additive adapter.

    Unmerged: ``y = base_layer(x) + delta(x)``. Merged: the base weight holds
    ``W + dW`` (and the bias ``b + db``) and ``y = base_layer(x)``, the same
    function up to floating-point rounding.
    """

    output_factor: ClassVar[str | None] = None
    """Name (relative to this layer) of the adapter parameter whose rows are the
    layer's output units (LoRA's ``lora_B.weight``), or None: what a method stacked
    on this adapter, e.g. spectral coordination, targets."""

    def __init__(self, base_layer: nn.Linear) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.merged = False
        self.created_bias = False
        """Whether ``merge`` had to give a bias-free base layer a bias (removed by unmerge)."""

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    @property
    def weight(self) -> torch.Tensor:
        """The base layer's weight (code that inspects ``layer.weight`` keeps working)."""
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        if self.merged:
            return out
        return out + self.delta(x).to(out.dtype)

    @abc.abstractmethod
    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """The adapter's contribution to the output for input ``x``."""

    @abc.abstractmethod
    def delta_weight(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(dW, db)`` with ``delta(x) = x dW^T + db`` in eval mode (``db`` may be None)."""

    def adapter_named_parameters(self) -> dict[str, nn.Parameter]:
        """The adapter's own parameters (everything but ``base_layer``)."""
        return {
            name: p for name, p in self.named_parameters() if not name.startswith("base_layer.")
        }

    @torch.no_grad()
    def merge(self) -> None:
        """``W += dW``, ``b += db`` (a bias is created if the base layer has none)."""
        if self.merged:
            return
        delta_w, delta_b = self.delta_weight()
        weight = self.base_layer.weight
        weight += delta_w.to(weight.dtype)
        if delta_b is not None:
            if self.base_layer.bias is None:
                self.base_layer.bias = nn.Parameter(
                    torch.zeros_like(delta_b, dtype=weight.dtype), requires_grad=False
                )
                self.created_bias = True
            self.base_layer.bias += delta_b.to(weight.dtype)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract what ``merge`` added (exact up to rounding)."""
        if not self.merged:
            return
        delta_w, delta_b = self.delta_weight()
        weight = self.base_layer.weight
        weight -= delta_w.to(weight.dtype)
        if self.created_bias:
            self.base_layer.bias = None
            self.created_bias = False
        elif delta_b is not None:
            self.base_layer.bias -= delta_b.to(weight.dtype)
        self.merged = False


class WrappingMethod(Method):
    """A method that replaces each target ``nn.Linear`` by an ``AdaptedLinear``.

    Subclasses implement ``wrap`` (build the layer) and
    ``num_trainable_parameters``; ``validate`` checks the config's rank ``r``
    (when it has one) against every target's dimensions.
    """

    @abc.abstractmethod
    def wrap(self, layer: nn.Linear) -> AdaptedLinear:
        """The adapted layer around ``layer``."""

    def validate(self, targets: dict[str, nn.Module]) -> None:
        rank = getattr(self.config, "r", None)
        if rank is None:
            return
        for name, layer in targets.items():
            assert isinstance(layer, nn.Linear)
            bound = min(layer.in_features, layer.out_features)
            if rank > bound:
                raise ValueError(
                    f"r = {rank} of method {self.name!r} exceeds min(in_features, out_features)"
                    f" = {bound} of module {name!r} (shape {layer.out_features} x "
                    f"{layer.in_features})"
                )

    def apply(self, model: nn.Module, targets: dict[str, nn.Module]) -> None:
        for name, layer in targets.items():
            assert isinstance(layer, nn.Linear)
            wrapped = self.wrap(layer)
            wrapped.train(layer.training)  # a model in eval mode stays in eval mode
            replace_module(model, name, wrapped)

    def layers(self, model: nn.Module) -> dict[str, AdaptedLinear]:
        """The adapted layers of this method in ``model``, by module name."""
        layers = {}
        for name in self.adapted_modules:
            layer = model.get_submodule(name)
            if not isinstance(layer, AdaptedLinear):
                raise ValueError(f"module {name!r} is no longer adapted by method {self.name!r}")
            layers[name] = layer
        return layers

    def adapter_parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        return {
            f"{name}.{pname}": p
            for name, layer in self.layers(model).items()
            for pname, p in layer.adapter_named_parameters().items()
        }

    def merge(self, model: nn.Module) -> None:
        for layer in self.layers(model).values():
            layer.merge()

    def unmerge(self, model: nn.Module) -> None:
        for layer in self.layers(model).values():
            layer.unmerge()
