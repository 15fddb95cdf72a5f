"""The contract every fine-tuning method implements (built-in or third party).

A method is a ``Method`` subclass with a ``MethodConfig`` dataclass, registered
as kind ``"method"``. ``graphopt.apply`` resolves the target modules, builds the
config, calls ``Method.validate`` (before the model is touched) and then
``Method.apply``; the method instance joins ``model.graphopt_methods``, the
stack of methods applied to the model in order (e.g. LoRA, then a gradient
filter on the LoRA factors). The optimizer (``GraphOptimizer.for_model``) asks
every method of the stack for its trainable parameters, gradient transforms,
regularizers and step callbacks.

Verbs a method implements (in place, on the model it was applied to):

* ``apply(model, targets)``: wrap or modify the target ``nn.Linear`` modules;
* ``adapter_parameters(model)``: the parameters the method trains;
* ``num_trainable_parameters(model)``: the documented closed-form count;
* optionally ``merge``/``unmerge`` (exact), ``transforms``/``regularizers``/
  ``update_transforms``/``callbacks`` for the optimizer, ``parameter_masks``
  (entries of its parameters that do not train), ``extra_state``/
  ``load_extra_state`` (JSON data saved with the adapter, e.g. an allocation),
  and their own ``adapter_state_dict``/``load_adapter_state_dict`` when the
  tensors to save are not just the trainable parameters.

**Parameter identity is fixed for a run**: ``apply`` creates every parameter a
method will ever train; afterwards no verb may replace, add or reshape one
(an optimizer, a DDP/FSDP wrapper or a Trainer may already hold them). A
method that trains part of a parameter masks it (``parameter_masks`` and a
``graphopt.optim.ParameterMask`` transform) instead of shrinking it.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

METHODS_ATTR = "graphopt_methods"
"""Attribute of a model holding the list of methods applied to it, in order."""

EXTRA_ATTR = "graphopt_trainable_extra"
"""Attribute of a model holding the names of parameters kept trainable besides the
methods' own (``trainable_extra`` of ``graphopt.apply``, e.g. a classification head)."""


class UnsupportedOperationError(RuntimeError):
    """A method was asked for a verb it does not offer (e.g. ``unmerge``)."""


@dataclass
class MethodConfig:
    """Settings shared by every method; each method subclasses it with its own fields.

    Attributes:
        target_modules: a regular expression full-matched against module names,
            or a list of module names / name suffixes (``"query"`` matches
            ``encoder.layer.0.attention.self.query``), as in PEFT.
        dtype: dtype of new adapter parameters (``"float32"``, ``"bfloat16"``...);
            ``None`` uses the dtype of the adapted layer.
    """

    target_modules: str | list[str]
    dtype: str | None = None

    def torch_dtype(self, like: torch.Tensor) -> torch.dtype:
        """The dtype for adapter tensors next to the weight ``like``."""
        if self.dtype is None:
            return like.dtype
        value = getattr(torch, self.dtype, None)
        if not isinstance(value, torch.dtype):
            raise ValueError(f"dtype must name a torch dtype such as 'float32'; got {self.dtype!r}")
        return value


class Method(abc.ABC):
    """A fine-tuning method: apply, train, merge, save.

    Subclasses set ``name``, ``config_class`` and ``adds_parameters`` and
    implement ``apply``, ``adapter_parameters`` and ``num_trainable_parameters``.
    """

    name: ClassVar[str]
    """Registry name (lowercase)."""
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    """The config dataclass ``graphopt.apply`` builds from keyword arguments."""
    adds_parameters: ClassVar[bool] = True
    """Whether ``apply`` adds new parameters (an adapter) rather than selecting existing ones."""
    identity_at_init: ClassVar[bool] = True
    """Whether the adapted model computes exactly the base model's function right after
    ``apply`` (true for LoRA-style zero-initialised adapters); checked by the
    conformance suite (``graphopt.testing.check_method``)."""
    reparameterizes_base: ClassVar[bool] = False
    """Whether the method rewrites the frozen weights of its target layers during
    training (e.g. pca_ggm folds frozen components into the residual weight); the
    conformance suite then checks for unchanged frozen parameters outside the targets."""

    def __init__(self, config: MethodConfig) -> None:
        if not isinstance(config, self.config_class):
            raise ValueError(
                f"config of method {self.name!r} must be a {self.config_class.__name__}; "
                f"got {type(config).__name__}"
            )
        self.config = config
        self.merged = False
        """Set by ``graphopt.merge``/``unmerge`` (which call ``merge``/``unmerge`` once)."""
        self.adapted_modules: list[str] = []
        """Names of the target modules, set by ``graphopt.apply`` before ``apply``."""

    # -- applying --------------------------------------------------------------------

    def validate(self, targets: dict[str, nn.Module]) -> None:  # noqa: B027 (optional hook)
        """Reject targets or settings this method cannot handle, before ``apply``
        touches anything (raise ``ValueError`` naming the module and the problem)."""

    @abc.abstractmethod
    def apply(self, model: nn.Module, targets: dict[str, nn.Module]) -> None:
        """Modify ``model`` in place; ``targets`` maps module names to the target modules."""

    # -- training --------------------------------------------------------------------

    @abc.abstractmethod
    def adapter_parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """The parameters this method trains, by their names in ``model``."""

    def trainable_parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """Everything to optimise: ``adapter_parameters`` plus the parameters the
        user kept trainable with ``graphopt.apply(..., trainable_extra=...)``."""
        params = dict(self.adapter_parameters(model))
        named = dict(model.named_parameters())
        for name in getattr(model, EXTRA_ATTR, ()):
            params.setdefault(name, named[name])
        return params

    @abc.abstractmethod
    def num_trainable_parameters(self, model: nn.Module) -> int:
        """The method's documented parameter count (the entries of
        ``adapter_parameters`` that train: ``parameter_masks`` excluded), computed
        from the formula, not by counting tensors."""

    def count_trained_entries(self, model: nn.Module) -> int:
        """Entries of ``adapter_parameters`` that train, counted from the tensors and
        ``parameter_masks`` (what ``num_trainable_parameters`` must equal)."""
        masks = self.parameter_masks(model)
        return sum(
            int(masks[name].expand_as(p).count_nonzero()) if name in masks else p.numel()
            for name, p in self.adapter_parameters(model).items()
        )

    def parameter_masks(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """0/1 tensors broadcastable to some ``adapter_parameters`` (by the same names):
        entries at 0 do not train (default: none, every entry trains)."""
        return {}

    def transforms(self, model: nn.Module) -> list[Any]:
        """Gradient transforms for ``GraphOptimizer`` (default: none)."""
        return []

    def regularizers(self, model: nn.Module) -> list[Any]:
        """Regularizers for ``GraphOptimizer`` (default: none)."""
        return []

    def update_transforms(self, model: nn.Module) -> list[Any]:
        """Update transforms for ``GraphOptimizer``, run on the base step's update
        (default: none)."""
        return []

    def callbacks(self, model: nn.Module) -> list[Any]:
        """Step callbacks for ``GraphOptimizer`` (default: none)."""
        return []

    def plot(self, model: nn.Module, folder: Path) -> list[Path]:
        """Write PNGs of what the method built or chose into ``folder`` and return
        their paths (``graphopt finetune --plot``; default: none)."""
        return []

    # -- merging ---------------------------------------------------------------------

    def merge(self, model: nn.Module) -> None:
        """Fold the adapter into the base weights, exactly (default: not supported)."""
        raise UnsupportedOperationError(f"method {self.name!r} does not support merge")

    def unmerge(self, model: nn.Module) -> None:
        """Undo ``merge`` (default: not supported)."""
        raise UnsupportedOperationError(f"method {self.name!r} does not support unmerge")

    # -- saving ----------------------------------------------------------------------

    def adapter_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The tensors that, with the base model and the config, restore the adapter
        (default: ``adapter_parameters``)."""
        return {name: p.detach() for name, p in self.adapter_parameters(model).items()}

    def check_adapter_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Raise ``ValueError`` unless ``state`` fits the applied adapter (after
        ``load_extra_state``); ``load_adapter`` calls it before changing anything."""
        check_state_matches(self.name, self.adapter_state_dict(model), state)

    def load_adapter_state_dict(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Copy ``state`` (from ``adapter_state_dict``) into the applied adapter.

        Checks every name and shape first, so a mismatch leaves the model unchanged.
        """
        self.check_adapter_state(model, state)
        current = self.adapter_state_dict(model)
        with torch.no_grad():
            for name, tensor in current.items():
                tensor.copy_(state[name].to(device=tensor.device, dtype=tensor.dtype))

    def extra_state(self) -> dict[str, Any]:
        """JSON-serialisable state saved with the adapter (default: none)."""
        return {}

    def load_extra_state(self, model: nn.Module, extra: dict[str, Any]) -> None:  # noqa: B027
        """Receive the saved ``extra_state`` before ``check_adapter_state`` and
        ``load_adapter_state_dict``; record it and leave the model unchanged (act on
        it in ``load_adapter_state_dict``), so a failed check changes nothing."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


def check_state_matches(
    method: str, current: dict[str, torch.Tensor], state: dict[str, torch.Tensor]
) -> None:
    """Raise ``ValueError`` unless ``state`` has exactly the names and shapes of ``current``."""
    missing = sorted(set(current) - set(state))
    unexpected = sorted(set(state) - set(current))
    if missing or unexpected:
        raise ValueError(
            f"adapter state of method {method!r} does not fit the model: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for name, tensor in current.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise ValueError(
                f"adapter tensor {name!r} of method {method!r} has shape "
                f"{tuple(state[name].shape)} but the model expects {tuple(tensor.shape)}"
            )


def methods_of(model: nn.Module) -> list[Method]:
    """The methods applied to ``model``, in the order they were applied."""
    return list(getattr(model, METHODS_ATTR, ()))
