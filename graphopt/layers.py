"""Building blocks for methods that wrap linear layers (``nn.Linear`` or GPT-2's ``Conv1D``).

``AdaptedLayer`` is the contract of an adapted layer: the base layer (frozen),
the adapted function, and how the adapter folds into the base weights and back
(``merged_weights`` / ``unmerged_weights``, on the weight in (out, in) form,
whatever the layer type stores). ``AdaptedLinear`` is the additive case,
``y = base_layer(x) + delta(x)``, merged exactly by adding ``delta_weight()``.
``WrappingMethod`` is a ``Method`` that replaces every target by such a layer and
implements the verbs the wrapping gives for free (trainable parameters, merge,
unmerge, the low-rank delta for export). LoRA, LinChain and pca_ggm are small
subclasses; a third-party adapter, additive or multiplicative (IA3), can be one too.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import nn

from graphopt.linear_layers import describe, features, is_linear_layer, weight_matrix
from graphopt.methods import LowRankDelta, Method, MethodConfig

Weights = tuple[torch.Tensor, torch.Tensor | None]
"""(weight in (out, in) form, bias or None)."""


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at the dotted path ``name`` of ``model`` (for methods that wrap layers)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


class AdaptedLayer(nn.Module, abc.ABC):
    """A linear layer (``base_layer``: ``nn.Linear`` or ``Conv1D``, frozen) plus an adapter.

    What a subclass implements (``AdaptedLinear`` does all three for an additive
    adapter from ``delta``/``delta_weight``):

    * ``adapted_forward(x)``: the adapted function;
    * ``merged_weights(weight, bias)``: new tensors ``(W', b')``, the base weights with
      the adapter folded in (``weight`` is (out, in) for every layer type), such
      that ``base_layer`` with ``W', b'`` computes ``adapted_forward``;
    * ``unmerged_weights(weight, bias)``: the inverse, from the merged ``W', b'`` and
      the adapter's own tensors only (a multiplicative adapter divides, it cannot
      subtract a delta recomputed from the merged weight).

    ``merge``/``unmerge`` write those into the base layer; neither may give a
    bias-free layer a bias (the architecture's config would not load it: a method
    that needs one refuses the layer in ``Method.validate``).
    """

    output_factor: ClassVar[str | None] = None
    """Name (relative to this layer) of the adapter parameter whose rows are the
    layer's output units (LoRA's ``lora_B.weight``, pca_ggm's ``A``, IA3's scaling
    vector), or None: what a method stacked on this adapter (spectral coordination)
    targets, found by ``graphopt.targets.stacked_targets``."""

    def __init__(self, base_layer: nn.Module) -> None:
        if not is_linear_layer(base_layer):
            raise ValueError(
                f"only nn.Linear and transformers Conv1D layers can be adapted; got "
                f"{type(base_layer).__name__}"
            )
        super().__init__()
        self.base_layer = base_layer
        self.merged = False

    @property
    def in_features(self) -> int:
        return features(self.base_layer)[1]

    @property
    def out_features(self) -> int:
        return features(self.base_layer)[0]

    @property
    def weight(self) -> torch.Tensor:
        """The base layer's weight as stored (code that inspects ``layer.weight`` keeps working)."""
        return self.base_layer.weight  # type: ignore[return-value]

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias  # type: ignore[return-value]

    def base_weight(self) -> torch.Tensor:
        """The base weight in (out, in) form (a view for ``Conv1D``)."""
        return weight_matrix(self.base_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base_layer(x)
        return self.adapted_forward(x)

    @abc.abstractmethod
    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The adapted layer's output for input ``x`` (unmerged)."""

    @abc.abstractmethod
    def merged_weights(self, weight: torch.Tensor, bias: torch.Tensor | None) -> Weights:
        """New ``(W', b')``: the base weights with the adapter folded in."""

    @abc.abstractmethod
    def unmerged_weights(self, weight: torch.Tensor, bias: torch.Tensor | None) -> Weights:
        """New ``(W, b)``: the merged weights with the adapter taken out again."""

    def low_rank_delta(self) -> LowRankDelta | None:
        """The trained change as ``scaling * B A`` (+ new bias); None if it is not one."""
        return None

    def adapter_named_parameters(self) -> dict[str, nn.Parameter]:
        """The adapter's own parameters (everything but ``base_layer``)."""
        return {
            name: p for name, p in self.named_parameters() if not name.startswith("base_layer.")
        }

    @torch.no_grad()
    def merge(self) -> None:
        """Write ``merged_weights`` into the base layer (idempotent)."""
        if not self.merged:
            self._write(*self.merged_weights(self.base_weight(), self.base_layer.bias))
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Write ``unmerged_weights`` into the base layer (undoes ``merge``)."""
        if self.merged:
            self._write(*self.unmerged_weights(self.base_weight(), self.base_layer.bias))
            self.merged = False

    def _write(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        own_bias = self.base_layer.bias
        if own_bias is None and bias is not None:
            raise ValueError(
                f"{type(self).__name__} would give its {describe(self.base_layer)} base layer, "
                "which has no bias, a bias; the method must refuse such a layer at apply"
            )
        target = self.base_weight()
        if tuple(weight.shape) != tuple(target.shape):
            raise ValueError(
                f"{type(self).__name__}: merged weight of shape {tuple(weight.shape)} does not "
                f"fit the base weight {tuple(target.shape)} (out, in)"
            )
        target.copy_(weight)
        if own_bias is not None and bias is not None:
            own_bias.copy_(bias)  # type: ignore[operator]


class AdaptedLinear(AdaptedLayer):
    """An additive adapter: unmerged ``y = base_layer(x) + delta(x)``; merged, the base
    weight holds ``W + dW`` (and the bias ``b + db``): the same function up to
    floating-point rounding.

    ``delta_weight`` must depend on the adapter's own tensors only (merging changes
    the base weight; a delta read from it would unmerge wrongly): ``merge`` checks
    that, restores the layer and raises if it does not hold. An adapter whose change
    depends on the base weight (multiplicative, IA3) subclasses ``AdaptedLayer``.
    """

    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        return out + self.delta(x).to(out.dtype)

    @abc.abstractmethod
    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """The adapter's contribution to the output for input ``x``."""

    @abc.abstractmethod
    def delta_weight(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(dW, db)`` with ``delta(x) = x dW^T + db`` in eval mode (``dW`` in (out, in)
        form; ``db`` None when the adapter adds no bias)."""

    def merged_weights(self, weight: torch.Tensor, bias: torch.Tensor | None) -> Weights:
        return self._shifted(weight, bias, 1.0)

    def unmerged_weights(self, weight: torch.Tensor, bias: torch.Tensor | None) -> Weights:
        return self._shifted(weight, bias, -1.0)

    def _shifted(self, weight: torch.Tensor, bias: torch.Tensor | None, sign: float) -> Weights:
        delta_w, delta_b = self.delta_weight()
        new_weight = weight + sign * delta_w.to(weight.dtype)
        if delta_b is None:
            return new_weight, bias
        if bias is None:
            return new_weight, delta_b  # refused by _write: no bias to fold it into
        return new_weight, bias + sign * delta_b.to(bias.dtype)

    @torch.no_grad()
    def merge(self) -> None:
        if self.merged:
            return
        before = self.delta_weight()
        saved = [
            t.detach().clone() for t in (self.base_weight(), self.base_layer.bias) if t is not None
        ]
        super().merge()
        after = self.delta_weight()
        if not all(_same(a, b) for a, b in zip(before, after, strict=True)):
            self._write(saved[0], saved[1] if len(saved) > 1 else None)
            self.merged = False
            raise ValueError(
                f"{type(self).__name__}.delta_weight() changed when the base weight was merged: "
                "it reads the base weight, so subtracting it cannot unmerge; implement "
                "merged_weights/unmerged_weights on an AdaptedLayer instead (see the method "
                "plugin guide). The layer was left unmerged."
            )


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))


class WrappingMethod(Method):
    """A method that replaces each target linear layer by an ``AdaptedLayer``.

    Subclasses implement ``wrap`` (build the layer from the module's own config:
    ``config_for(name)``, which applies ``rank_pattern``-style overrides) and
    ``num_trainable_parameters``; ``validate`` checks every target's rank ``r``
    (when the config has one) against the target's dimensions.
    """

    @abc.abstractmethod
    def wrap(self, layer: nn.Module, config: MethodConfig) -> AdaptedLayer:
        """The adapted layer around ``layer`` with that module's ``config``."""

    def validate(self, targets: dict[str, nn.Module]) -> None:
        for name, layer in targets.items():
            if not is_linear_layer(layer):
                adapted = isinstance(layer, AdaptedLayer) or hasattr(layer, "base_layer")
                hint = f" (already adapted; its own layer is {name}.base_layer)" if adapted else ""
                kind = type(layer)
                raise ValueError(
                    f"method {self.name!r} adapts nn.Linear / Conv1D layers; {name!r} is a "
                    f"{kind.__module__}.{kind.__qualname__}{hint}"
                )
            rank = getattr(self.config_for(name), "r", None)
            out_features, in_features = features(layer)
            if rank is not None and rank > min(in_features, out_features):
                raise ValueError(
                    f"r = {rank} of method {self.name!r} exceeds min(in_features, out_features)"
                    f" = {min(in_features, out_features)} of module {name!r} (shape "
                    f"{out_features} x {in_features})"
                )

    def apply(self, model: nn.Module, targets: dict[str, nn.Module]) -> None:
        for name, layer in targets.items():
            wrapped = self.wrap(layer, self.config_for(name))
            wrapped.train(layer.training)  # a model in eval mode stays in eval mode
            replace_module(model, name, wrapped)

    def layers(self, model: nn.Module) -> dict[str, AdaptedLayer]:
        """The adapted layers of this method in ``model``, by module name."""
        layers = {}
        for name in self.adapted_modules:
            layer = model.get_submodule(name)
            if not isinstance(layer, AdaptedLayer):
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

    def low_rank_delta(self, model: nn.Module) -> dict[str, LowRankDelta] | None:
        deltas = {name: layer.low_rank_delta() for name, layer in self.layers(model).items()}
        if any(delta is None for delta in deltas.values()):
            return None
        return deltas  # type: ignore[return-value]
