"""The contract every fine-tuning method implements (built-in or third party).

A method is a ``Method`` subclass with a ``MethodConfig`` dataclass, registered
as kind ``"method"``. ``graphopt.apply`` resolves the target modules (and the
per-module overrides of ``rank_pattern``-style fields), builds the config,
calls ``Method.validate`` (before the model is touched) and then
``Method.apply``; the method instance joins ``model.graphopt_methods``, the
stack of methods applied to the model in order (e.g. LoRA, then a gradient
filter on the LoRA factors). The optimizer (``GraphOptimizer.for_model``) asks
every method of the stack for its trainable parameters, gradient transforms,
regularizers and step callbacks.

Verbs a method implements (in place, on the model it was applied to):

* ``apply(model, targets)``: wrap or modify the target layers;
* ``adapter_parameters(model)``: the parameters the method trains;
* ``num_trainable_parameters(model)``: the documented closed-form count;
* optionally ``merge``/``unmerge`` (exact), ``transforms``/``regularizers``/
  ``update_transforms``/``callbacks`` for the optimizer, ``parameter_masks``
  (entries of its parameters that do not train), ``extra_state``/
  ``load_extra_state`` (JSON data saved with the adapter, e.g. an allocation),
  their own ``adapter_state_dict``/``load_adapter_state_dict`` when the
  tensors to save are not just the trainable parameters, and ``low_rank_delta``
  when the trained change of every target is ``scaling * B A`` (what
  ``graphopt.export_peft`` writes in PEFT's LoRA format).

**Parameter identity is fixed for a run**: ``apply`` creates every parameter a
method will ever train; afterwards no verb may replace, add or reshape one
(an optimizer, a DDP/FSDP wrapper or a Trainer may already hold them). A
method that trains part of a parameter masks it (``parameter_masks`` and a
``graphopt.optim.ParameterMask`` transform) instead of shrinking it.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from graphopt.patterns import check_patterns

METHODS_ATTR = "graphopt_methods"
"""Attribute of a model holding the list of methods applied to it, in order."""

EXTRA_ATTR = "graphopt_trainable_extra"
"""Attribute of a model holding the parameters (objects, not names: wrapping a layer
renames its parameters) kept trainable besides the methods' own: ``trainable_extra``
and ``bias`` of ``graphopt.apply``, e.g. a classification head."""

BIAS_MODES = ("none", "all", "lora_only")
"""PEFT's ``bias`` options: train no bias, every bias of the model, or the biases of
the adapted layers."""


class UnsupportedOperationError(RuntimeError):
    """A method was asked for a verb it does not offer (e.g. ``unmerge``)."""


@dataclass
class MethodConfig:
    """Settings shared by every method; each method subclasses it with its own fields.

    The target options follow PEFT's ``LoraConfig`` (same names, same rules).

    Attributes:
        target_modules: a regular expression full-matched against module names,
            a list of module names / name suffixes (``"query"`` matches
            ``encoder.layer.0.attention.self.query``), or ``"all-linear"``: every
            ``nn.Linear``/``Conv1D`` but the output head (PEFT's meaning).
        exclude_modules: modules never adapted (same rules as ``target_modules``).
        layers_to_transform: only the blocks with these indices (an int or a list);
            the index is the first number in the module name after ``layers_pattern``
            (or after any name part, when ``layers_pattern`` is None). Needs a list
            ``target_modules``, as in PEFT.
        layers_pattern: the name(s) of the block list, e.g. ``"layers"`` or ``"h"``.
        bias: ``"none"``, ``"all"`` (every parameter named ``bias`` trains) or
            ``"lora_only"`` (the biases of the adapted layers train).
        dtype: dtype of new adapter parameters (``"float32"``, ``"bfloat16"``...);
            ``None`` uses the dtype of the adapted layer.
    """

    target_modules: str | list[str]
    exclude_modules: str | list[str] | None = None
    layers_to_transform: int | list[int] | None = None
    layers_pattern: str | list[str] | None = None
    bias: str = "none"
    dtype: str | None = None

    pattern_fields: ClassVar[dict[str, str]] = {}
    r"""Per-module override fields (PEFT's ``rank_pattern``): ``{"rank_pattern": "r"}``
    means ``rank_pattern = {regex: value}`` sets ``r`` of the modules the regex matches
    (PEFT's rule: ``re.match(rf"(.*\.)?({regex})$", module_name)``, first key wins)."""

    def __post_init__(self) -> None:
        self.target_modules = check_patterns(self.target_modules, "target_modules")
        if self.exclude_modules is not None:
            self.exclude_modules = check_patterns(self.exclude_modules, "exclude_modules")
        _check_layers(self)
        if self.bias not in BIAS_MODES:
            raise ValueError(f"bias must be one of {list(BIAS_MODES)}; got {self.bias!r}")
        dtype = getattr(torch, str(self.dtype), None)
        if self.dtype is not None and not isinstance(dtype, torch.dtype):
            raise ValueError(f"dtype must name a torch dtype such as 'float32'; got {self.dtype!r}")
        for name in self.pattern_fields:
            _check_pattern_field(getattr(self, name), name)

    @classmethod
    def migrate(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Options saved by an older graphopt, renamed to this version's fields (warn
        about each rename); ``load_adapter`` calls it. Default: unchanged."""
        return options

    def torch_dtype(self, like: torch.Tensor) -> torch.dtype:
        """The dtype for adapter tensors next to the weight ``like``."""
        return like.dtype if self.dtype is None else getattr(torch, self.dtype)


def _check_layers(config: MethodConfig) -> None:
    """PEFT's rules for ``layers_to_transform`` and ``layers_pattern``."""
    layers, pattern = config.layers_to_transform, config.layers_pattern
    if layers is not None:
        values = [layers] if isinstance(layers, int) else layers
        if (
            isinstance(layers, bool)
            or not isinstance(values, list | tuple)
            or not values
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values)
        ):
            raise ValueError(
                f"layers_to_transform must be a non-negative int or a non-empty list of them; "
                f"got {layers!r}"
            )
        config.layers_to_transform = layers if isinstance(layers, int) else list(values)
    if pattern is not None:
        patterns = [pattern] if isinstance(pattern, str) else pattern
        if not isinstance(patterns, list | tuple) or not all(
            isinstance(p, str) and p for p in patterns
        ):
            raise ValueError(f"layers_pattern must be a name or a list of names; got {pattern!r}")
        if layers is None:
            raise ValueError("layers_pattern needs layers_to_transform (as in PEFT)")
    if isinstance(config.target_modules, str) and (layers is not None or pattern is not None):
        raise ValueError(
            "layers_to_transform / layers_pattern need target_modules as a list of names, "
            "not a regular expression (as in PEFT)"
        )


def _check_pattern_field(value: Any, name: str) -> None:
    if not isinstance(value, dict) or not all(isinstance(k, str) and k for k in value):
        raise ValueError(
            f"{name} must map module-name regular expressions to values; got {value!r}"
        )
    for key in value:
        check_patterns(key, f"{name} key")
        check_patterns(rf"(.*\.)?({key})$", f"{name} key {key!r} (as PEFT matches it)")


@dataclass
class LowRankDelta:
    """One adapted layer's trained change as a LoRA update, in the (out, in) form of
    the original layer: ``dW = scaling * lora_B @ lora_A`` with ``scaling = alpha / r``
    (``alpha / sqrt(r)`` with ``use_rslora``), r = ``lora_A``'s rows; ``bias``: the
    layer's new bias (None: unchanged or absent). What ``graphopt.export_peft`` writes."""

    lora_A: torch.Tensor
    lora_B: torch.Tensor
    alpha: float
    use_rslora: bool = False
    bias: torch.Tensor | None = None

    @property
    def rank(self) -> int:
        return int(self.lora_A.shape[0])

    @property
    def scaling(self) -> float:
        return lora_scaling(self.alpha, self.rank, self.use_rslora)


def lora_scaling(alpha: float, r: int, use_rslora: bool = False) -> float:
    """LoRA's scale ``alpha / r``, or rank-stabilised ``alpha / sqrt(r)`` (Kalajdzievski,
    arXiv 2312.03732), computed exactly as PEFT computes it."""
    return alpha / math.sqrt(r) if use_rslora else alpha / r


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
    """Whether the method writes the frozen tensors of its target layers in place, in
    ``apply`` or in training (pca_ggm replaces ``W`` by the residual ``W - A B``):
    ``graphopt.apply`` then backs the targets' tensors up so a failed apply restores
    them, and the conformance suite checks frozen parameters outside the targets only.
    A method that writes base tensors must declare it."""

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
        """Names of the target modules, set by ``graphopt.apply`` before ``validate``."""
        self.module_overrides: dict[str, dict[str, Any]] = {}
        """Per-module config values from the config's ``pattern_fields`` (e.g. ``r`` from
        ``rank_pattern``), set by ``graphopt.apply`` before ``validate``."""

    def config_for(self, module_name: str) -> MethodConfig:
        """The config of one target: ``config`` with that module's ``module_overrides``."""
        overrides = self.module_overrides.get(module_name)
        return dataclasses.replace(self.config, **overrides) if overrides else self.config

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
        """Everything to optimise: ``adapter_parameters`` plus the parameters kept
        trainable with ``graphopt.apply(..., trainable_extra=..., bias=...)``."""
        params = dict(self.adapter_parameters(model))
        params.update({n: p for n, p in extra_parameters(model).items() if n not in params})
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

    def low_rank_delta(self, model: nn.Module) -> dict[str, LowRankDelta] | None:
        """Each target's trained change as ``scaling * B A`` (plus a new bias), by module
        name, in the original layer's (out, in) form; None when the method's change is
        not a low-rank delta of its targets (default). ``graphopt.export_peft`` writes it."""
        return None

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


def parameter_names(model: nn.Module) -> dict[int, str]:
    """``id(parameter) -> name`` with each tensor's canonical name: the first under
    which ``named_parameters()`` lists it (a tied ``lm_head.weight`` is named
    ``...embed_tokens.weight``, as in ``model.named_parameters()``)."""
    names: dict[int, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), name)
    return names


def extra_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters kept trainable besides the methods' own, by canonical name.

    Each is found by identity, else by the name it had at ``apply`` (a wrapper that
    swaps parameter objects, e.g. FSDP2's ``fully_shard``, keeps the names).
    """
    extra = list(getattr(model, EXTRA_ATTR, ()))
    if not extra:
        return {}
    names = parameter_names(model)
    by_name = dict(model.named_parameters(remove_duplicate=False))
    found: dict[str, nn.Parameter] = {}
    missing = []
    for name, param in extra:
        if id(param) in names:
            found[names[id(param)]] = param
        elif name in by_name:
            found[name] = by_name[name]
        else:
            missing.append(name)
    if missing:
        raise ValueError(
            f"{len(missing)} trainable_extra parameter(s) ({missing[:3]}) are no longer in "
            "the model; was a module replaced after graphopt.apply?"
        )
    return found
