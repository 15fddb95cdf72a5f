"""Applying, merging, saving and loading fine-tuning methods on a torch model.

``apply`` resolves ``target_modules`` to ``nn.Linear`` modules (a regular
expression full-matched against module names, or a list of names / name
suffixes, as in PEFT), validates everything, then lets the method modify the
model and freezes every parameter that no method of the model's stack trains
(except ``trainable_extra``, e.g. a classification head). Any invalid input
raises ``ValueError`` before the model is touched.

An adapter folder holds ``adapter_config.json`` (methods, configs, library
version, each method's ``extra_state``, the adapted modules' shapes) and
``adapter_model.safetensors`` (each method's ``adapter_state_dict`` under
``methods.<i>.`` and the ``trainable_extra`` tensors under ``extra.``). Both
are written atomically; nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import json
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from graphopt.io import atomic_write, atomic_write_json
from graphopt.methods import (
    EXTRA_ATTR,
    METHODS_ATTR,
    Method,
    MethodConfig,
    check_state_matches,
    methods_of,
)

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
FORMAT = "graphopt-adapter"

Patterns = str | list[str] | tuple[str, ...]


@dataclass(frozen=True)
class ApplySummary:
    """What ``apply`` did: the adapted modules and the parameter counts after it."""

    method: str
    adapted_modules: list[str]
    trainable_parameters: int
    total_parameters: int

    @property
    def trainable_fraction(self) -> float:
        """trainable / total parameters."""
        return self.trainable_parameters / max(self.total_parameters, 1)

    def __str__(self) -> str:
        return (
            f"{self.method}: {len(self.adapted_modules)} modules adapted; trainable parameters "
            f"{self.trainable_parameters:,} of {self.total_parameters:,} "
            f"({100 * self.trainable_fraction:.4f}%)"
        )


# -- names -------------------------------------------------------------------------------


def check_patterns(patterns: Any, name: str) -> Patterns:
    """Reject anything but a non-empty string or a non-empty list of non-empty strings."""
    if isinstance(patterns, str):
        if not patterns:
            raise ValueError(f"{name} must not be empty")
        try:
            re.compile(patterns)
        except re.error as err:
            raise ValueError(
                f"{name} {patterns!r} is not a valid regular expression: {err}"
            ) from None
        return patterns
    if (
        isinstance(patterns, list | tuple)
        and patterns
        and all(isinstance(p, str) and p for p in patterns)
    ):
        return list(patterns)
    raise ValueError(
        f"{name} must be a regular expression or a non-empty list of module names; got {patterns!r}"
    )


def name_matches(patterns: Patterns, name: str) -> bool:
    """PEFT's rule: a string is a regex full-matched against ``name``; a list matches
    ``name`` itself or any name ending in ``"." + entry``."""
    if isinstance(patterns, str):
        return re.fullmatch(patterns, name) is not None
    return any(name == p or name.endswith("." + p) for p in patterns)


def resolve_targets(model: nn.Module, target_modules: Any) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` modules of ``model`` named by ``target_modules``.

    Raises ``ValueError`` when nothing matches (listing some ``nn.Linear``
    names to choose from) or when a match is not an ``nn.Linear``.
    """
    patterns = check_patterns(target_modules, "target_modules")
    matched = {n: m for n, m in model.named_modules() if n and name_matches(patterns, n)}
    if not matched:
        linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        shown = ", ".join(linear[:8]) + (", ..." if len(linear) > 8 else "")
        raise ValueError(
            f"target_modules {target_modules!r} matches no module of {type(model).__name__}; "
            f"its nn.Linear modules include: {shown or 'none'}"
        )
    wrong = {n: m for n, m in matched.items() if not isinstance(m, nn.Linear)}
    if wrong:
        name, module = next(iter(wrong.items()))
        hint = (
            f" (it is already adapted; its nn.Linear is {name}.base_layer)"
            if isinstance(getattr(module, "base_layer", None), nn.Linear)
            else ""
        )
        raise ValueError(
            f"target_modules {target_modules!r} matches {len(wrong)} module(s) that are not "
            f"torch.nn.Linear, e.g. {name!r} ({type(module).__name__}){hint}; "
            "only nn.Linear layers can be adapted"
        )
    return matched  # type: ignore[return-value]


def resolve_parameters(model: nn.Module, patterns: Any, name: str) -> list[str]:
    """Names of the parameters of ``model`` whose own name or any enclosing module's
    name matches ``patterns`` (same rule as ``target_modules``)."""
    patterns = check_patterns(patterns, name)
    chosen = []
    for param_name, _ in model.named_parameters():
        parts = param_name.split(".")
        prefixes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(name_matches(patterns, p) for p in prefixes):
            chosen.append(param_name)
    if not chosen:
        raise ValueError(f"{name} {patterns!r} matches no parameter of {type(model).__name__}")
    return chosen


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at the dotted path ``name`` of ``model`` (for methods that wrap layers)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


# -- configs -----------------------------------------------------------------------------


def method_class(name: str) -> type[Method]:
    """The registered method class ``name`` (``UnknownNameError`` lists the choices)."""
    import graphopt

    cls = graphopt.registry.get("method", name)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise ValueError(
            f"method {name!r} is registered as {cls!r}, which is not a graphopt.methods.Method"
        )
    return cls


def build_config(cls: type[Method], options: dict[str, Any], *, unknown: str) -> MethodConfig:
    """``cls.config_class(**options)``; unknown keys raise (``unknown="error"``) or are
    dropped with a warning (``unknown="warn"``, used when loading saved adapters)."""
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    extra = sorted(set(options) - fields)
    if extra:
        message = (
            f"unknown config key(s) {extra} for method {cls.name!r}; valid keys: {sorted(fields)}"
        )
        if unknown == "error":
            raise ValueError(message)
        warnings.warn(message + " (ignored)", UserWarning, stacklevel=3)
    kwargs = {k: v for k, v in options.items() if k in fields}
    if "target_modules" not in kwargs:
        raise ValueError(f"method {cls.name!r} needs target_modules")
    try:
        return cls.config_class(**kwargs)
    except TypeError as err:
        raise ValueError(f"bad config for method {cls.name!r}: {err}") from None


def config_to_json(config: MethodConfig) -> dict[str, Any]:
    """The config as JSON-ready values (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


# -- apply / merge -----------------------------------------------------------------------


def apply(
    model: nn.Module,
    method: str | Method,
    target_modules: Any = None,
    *,
    trainable_extra: Any = None,
    **config: Any,
) -> ApplySummary:
    """Apply a fine-tuning method to ``model`` in place.

    Args:
        model: any ``nn.Module`` (e.g. a ``transformers`` model).
        method: a registered method name (``"lora"``, ...) or a ``Method`` instance.
        target_modules: regex or list of names/suffixes of the ``nn.Linear`` modules
            to adapt (with a ``Method`` instance, its config's value is used).
        trainable_extra: name patterns (same rules) of parameters to keep trainable
            besides the method's own, e.g. ``"classifier(\\..*)?"`` for a head.
        **config: the method's config fields (unknown keys raise ``ValueError``).

    Returns the summary; the method joins ``methods_of(model)``, and every
    parameter that no method trains (and no ``trainable_extra``) is frozen.
    """
    if isinstance(method, Method):
        if target_modules is not None or config:
            raise ValueError("pass target_modules and config inside the Method instance's config")
        instance = method
    elif isinstance(method, str):
        cls = method_class(method)
        if target_modules is not None:
            config["target_modules"] = target_modules
        instance = cls(build_config(cls, config, unknown="error"))
    else:
        raise ValueError(f"method must be a registered name or a Method; got {method!r}")
    if instance in methods_of(model):
        raise ValueError(f"this {instance.name!r} instance is already applied to the model")
    targets = resolve_targets(model, instance.config.target_modules)
    extra = (
        []
        if trainable_extra is None
        else resolve_parameters(model, trainable_extra, "trainable_extra")
    )
    instance.validate(targets)
    attach(model, instance, targets, extra)
    return ApplySummary(
        method=instance.name,
        adapted_modules=list(targets),
        trainable_parameters=count_trainable(model),
        total_parameters=sum(p.numel() for p in model.parameters()),
    )


def count_trainable(model: nn.Module) -> int:
    """Entries that train under the model's method stack: every method's
    ``trainable_parameters`` (each tensor once) less the entries its
    ``parameter_masks`` freeze."""
    entries: dict[int, int] = {}
    for method in methods_of(model):
        masks = method.parameter_masks(model)
        for name, param in method.trainable_parameters(model).items():
            count = int(masks[name].expand_as(param).count_nonzero()) if name in masks else None
            if count is not None or id(param) not in entries:
                entries[id(param)] = param.numel() if count is None else count
    return sum(entries.values())


def attach(
    model: nn.Module, method: Method, targets: dict[str, nn.Module], extra: list[str]
) -> None:
    """Run ``method.apply``, push it on the model's stack and re-freeze the model."""
    from graphopt.optim.guard import watch

    method.adapted_modules = list(targets)
    method.apply(model, targets)
    # plain attributes (object.__setattr__), never registered as submodules
    object.__setattr__(model, METHODS_ATTR, [*methods_of(model), method])
    _add_extra(model, extra)
    freeze_untrained(model)
    watch(model, method)  # a plain torch optimizer over its parameters will warn


def _add_extra(model: nn.Module, names: list[str]) -> None:
    known = list(getattr(model, EXTRA_ATTR, ()))
    object.__setattr__(model, EXTRA_ATTR, known + [n for n in names if n not in known])


def freeze_untrained(model: nn.Module) -> None:
    """``requires_grad`` on exactly the parameters some method of the stack trains."""
    trainable = {id(p) for m in methods_of(model) for p in m.trainable_parameters(model).values()}
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in trainable)


def merge(model: nn.Module) -> nn.Module:
    """Fold every method into the base weights (last applied first); idempotent."""
    for method in reversed(methods_of(model)):
        if not method.merged:
            method.merge(model)
            method.merged = True
    return model


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge, then put every adapted layer's plain ``nn.Linear`` back in its place
    and forget the methods: the model is again the original architecture (with
    the merged weights), e.g. for ``save_pretrained`` (PEFT's ``merge_and_unload``)."""
    from graphopt.layers import AdaptedLinear

    merge(model)
    wrapped = [(n, m) for n, m in model.named_modules() if isinstance(m, AdaptedLinear)]
    for name, module in wrapped:
        replace_module(model, name, module.base_layer)
    for attribute in (METHODS_ATTR, EXTRA_ATTR):
        if hasattr(model, attribute):
            delattr(model, attribute)
    return model


def unmerge(model: nn.Module) -> nn.Module:
    """Undo ``merge`` (first applied first); a method without unmerge raises."""
    for method in methods_of(model):
        if method.merged:
            method.unmerge(model)
            method.merged = False
    return model


# -- save / load -------------------------------------------------------------------------


def _target_shapes(model: nn.Module, names: Iterable[str]) -> dict[str, list[int]]:
    shapes = {}
    for name in names:
        module = model.get_submodule(name)
        layer = getattr(module, "base_layer", module)
        shapes[name] = [int(layer.out_features), int(layer.in_features)]
    return shapes


def save_adapter(model: nn.Module, directory: str | Path) -> Path:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` to ``directory``."""
    from safetensors.torch import save_file

    from graphopt import __version__

    methods = methods_of(model)
    if not methods:
        raise ValueError("model has no graphopt method applied; nothing to save")
    directory = Path(directory)
    tensors: dict[str, torch.Tensor] = {}
    entries = []
    for index, method in enumerate(methods):
        for key, tensor in method.adapter_state_dict(model).items():
            tensors[f"methods.{index}.{key}"] = tensor.detach().to("cpu", copy=True).contiguous()
        entries.append(
            {
                "name": method.name,
                "config": config_to_json(method.config),
                "extra_state": method.extra_state(),
                "target_shapes": _target_shapes(model, method.adapted_modules),
            }
        )
    named = dict(model.named_parameters())
    extra = list(getattr(model, EXTRA_ATTR, ()))
    for name in extra:
        tensors[f"extra.{name}"] = named[name].detach().to("cpu", copy=True).contiguous()
    config = {
        "format": FORMAT,
        "graphopt_version": __version__,
        "methods": entries,
        "trainable_extra": extra,
    }
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp)))
    atomic_write_json(directory / CONFIG_FILE, config)
    return directory


def read_adapter_config(directory: str | Path) -> dict[str, Any]:
    """The parsed ``adapter_config.json`` of an adapter folder (checked)."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"{str(directory)!r} is not an adapter folder: it has no {CONFIG_FILE}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{path} is not a graphopt adapter config (format {FORMAT!r})")
    return config


def load_adapter(model: nn.Module, directory: str | Path) -> nn.Module:
    """Restore a saved adapter onto ``model``.

    On a model without methods, the saved methods are applied first (their
    adapted modules must have the saved shapes); on a model that already has
    the same methods applied (e.g. resuming a run), only the state is loaded.
    Every check runs before the model is changed.
    """
    from safetensors.torch import load_file

    config = read_adapter_config(directory)
    weights = Path(directory) / WEIGHTS_FILE
    if not weights.is_file():
        raise ValueError(f"{str(directory)!r} has no {WEIGHTS_FILE}")
    tensors = load_file(str(weights), device="cpu")
    entries = config["methods"]
    saved_extra = list(config.get("trainable_extra", []))
    named = dict(model.named_parameters())
    for name in saved_extra:
        if name not in named:
            raise ValueError(f"adapter tensor extra.{name} has no parameter {name!r} in the model")
        saved = {name: tensors[f"extra.{name}"]}
        check_state_matches("trainable_extra", {name: named[name]}, saved)
    present = methods_of(model)
    if present:
        have, saved_names = [m.name for m in present], [e["name"] for e in entries]
        if have != saved_names:
            raise ValueError(
                f"model has methods {have} applied but the adapter holds {saved_names}"
            )
        if any(m.merged for m in present):
            raise ValueError("model's methods are merged; unmerge before loading an adapter")
        for index, (method, entry) in enumerate(zip(present, entries, strict=True)):
            method.load_extra_state(model, entry.get("extra_state", {}))
            method.check_adapter_state(model, _method_tensors(tensors, index))
        for index, method in enumerate(present):
            method.load_adapter_state_dict(model, _method_tensors(tensors, index))
    else:
        for index, entry in enumerate(entries):
            cls = method_class(entry["name"])
            method = cls(build_config(cls, dict(entry["config"]), unknown="warn"))
            targets = resolve_targets(model, method.config.target_modules)
            _check_target_shapes(model, entry.get("target_shapes", {}), targets)
            method.validate(targets)
            attach(model, method, targets, [])
            method.load_extra_state(model, entry.get("extra_state", {}))
            method.load_adapter_state_dict(model, _method_tensors(tensors, index))
    with torch.no_grad():
        for name in saved_extra:
            named[name].copy_(tensors[f"extra.{name}"].to(named[name].device, named[name].dtype))
    _add_extra(model, saved_extra)
    freeze_untrained(model)
    return model


def _method_tensors(tensors: dict[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
    prefix = f"methods.{index}."
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _check_target_shapes(
    model: nn.Module, saved: dict[str, list[int]], targets: dict[str, nn.Module]
) -> None:
    if not saved:
        return
    if sorted(saved) != sorted(targets):
        missing = sorted(set(saved) - set(targets))[:5]
        raise ValueError(
            f"adapter was saved for modules the model does not match: e.g. {missing}; "
            f"the model matches {len(targets)} module(s), the adapter {len(saved)}"
        )
    for name, shape in _target_shapes(model, targets).items():
        if shape != list(saved[name]):
            raise ValueError(
                f"adapter was saved for module {name!r} of shape (out, in) = {tuple(saved[name])} "
                f"but the model's is {tuple(shape)}"
            )


__all__ = [
    "ApplySummary",
    "apply",
    "load_adapter",
    "merge",
    "methods_of",
    "read_adapter_config",
    "replace_module",
    "resolve_targets",
    "save_adapter",
    "unmerge",
]
