"""Applying, merging, saving and loading fine-tuning methods on a torch model.

``apply`` resolves the targets (``graphopt.targets``: PEFT's ``target_modules``,
``exclude_modules``, ``layers_to_transform``, ``rank_pattern``...), resolves the
parameters to keep trainable to *objects* (``trainable_extra``, ``bias``, and on a
PEFT model what PEFT trains), lets the method validate, then modifies the model
and freezes every parameter that no method of the model's stack trains. Apply is
atomic: an invalid input raises before the model is touched, and any error
during the change restores the model exactly (``graphopt.snapshot``).

An adapter folder holds ``adapter_config.json`` (methods, configs, library
version, each method's ``extra_state``, the adapted modules' shapes) and
``adapter_model.safetensors`` (each method's ``adapter_state_dict`` under
``methods.<i>.`` and the ``trainable_extra`` tensors under ``extra.``). Both
are written atomically; nothing is pickled. ``load_adapter`` reads these and
PEFT LoRA folders (``graphopt.peft``).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from graphopt.io import atomic_write, atomic_write_json
from graphopt.layers import AdaptedLayer, replace_module
from graphopt.linear_layers import features, is_linear_layer
from graphopt.methods import (
    EXTRA_ATTR,
    METHODS_ATTR,
    Method,
    MethodConfig,
    check_state_matches,
    extra_parameters,
    methods_of,
    parameter_names,
)
from graphopt.patterns import check_patterns, name_matches
from graphopt.peft import SavedAdapter, export_peft, is_peft_config, read_peft_lora
from graphopt.snapshot import ModelSnapshot
from graphopt.targets import (
    bias_parameters,
    is_peft_model,
    resolve_parameters,
    resolve_targets,
    stacked_targets,
)

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
FORMAT = "graphopt-adapter"


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
    dropped with a warning (``unknown="warn"``, used when loading saved adapters, whose
    options first go through the config class's ``migrate``)."""
    config_class = cls.config_class
    if unknown == "warn":
        options = config_class.migrate(dict(options))
    fields = {f.name for f in dataclasses.fields(config_class)}
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
        return config_class(**kwargs)
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
    keep_trainable: bool | None = None,
    **config: Any,
) -> ApplySummary:
    """Apply a fine-tuning method to ``model`` in place, atomically.

    Args:
        model: any ``nn.Module`` (a ``transformers`` model, a PEFT model).
        method: a registered method name (``"lora"``, ...) or a ``Method`` instance.
        target_modules: regex, list of names/suffixes or ``"all-linear"`` (with a
            ``Method`` instance, its config's value is used).
        trainable_extra: name patterns (same rules, matched against parameter names
            and their modules' names, tied aliases included) of parameters to train
            besides the method's own, e.g. ``"classifier(\\..*)?"`` for a head
            (PEFT's ``modules_to_save``).
        keep_trainable: keep every parameter that is trainable now trainable (it
            joins ``trainable_extra``). ``None``: only on a PEFT model, so graphopt
            never freezes what another library made trainable unless asked.
        **config: the method's config fields (unknown keys raise ``ValueError``).

    Returns the summary; the method joins ``methods_of(model)``, and every
    parameter that no method trains (and no ``trainable_extra``) is frozen. On any
    error the model is left exactly as it was.
    """
    instance = _instance(method, target_modules, config)
    if instance in methods_of(model):
        raise ValueError(f"this {instance.name!r} instance is already applied to the model")
    resolution = resolve_targets(model, instance.config)
    targets = resolution.targets
    extra = bias_parameters(model, instance.config.bias, targets)
    if trainable_extra is not None:
        extra += resolve_parameters(model, trainable_extra, "trainable_extra")
    if keep_trainable is None:
        keep_trainable = is_peft_model(model)
    if keep_trainable:
        ours = {id(p) for m in methods_of(model) for p in m.adapter_parameters(model).values()}
        extra += [p for p in model.parameters() if p.requires_grad and id(p) not in ours]
    instance.adapted_modules = list(targets)
    instance.module_overrides = resolution.overrides
    instance.validate(targets)
    snapshot = ModelSnapshot(model)
    if instance.reparameterizes_base:
        snapshot.protect(targets.values())
    try:
        attach(model, instance, targets, extra)
    except BaseException:
        snapshot.restore()
        raise
    return ApplySummary(
        method=instance.name,
        adapted_modules=list(targets),
        trainable_parameters=count_trainable(model),
        total_parameters=sum(p.numel() for p in model.parameters()),
    )


def _instance(method: str | Method, target_modules: Any, config: dict[str, Any]) -> Method:
    if isinstance(method, Method):
        if target_modules is not None or config:
            raise ValueError("pass target_modules and config inside the Method instance's config")
        return method
    if isinstance(method, str):
        cls = method_class(method)
        if target_modules is not None:
            config["target_modules"] = target_modules
        return cls(build_config(cls, config, unknown="error"))
    raise ValueError(f"method must be a registered name or a Method; got {method!r}")


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
    model: nn.Module, method: Method, targets: dict[str, nn.Module], extra: list[nn.Parameter]
) -> None:
    """Run ``method.apply``, push it on the model's stack, add ``extra`` to the
    parameters kept trainable and re-freeze the model."""
    from graphopt.optim.guard import watch

    method.adapted_modules = list(targets)
    method.apply(model, targets)
    # plain attributes (object.__setattr__), never registered as submodules
    object.__setattr__(model, METHODS_ATTR, [*methods_of(model), method])
    _add_extra(model, extra)
    freeze_untrained(model)
    watch(model, method)  # a plain torch optimizer over its parameters will warn


def _add_extra(model: nn.Module, params: Iterable[nn.Parameter]) -> None:
    """Record each parameter with its canonical name (``extra_parameters`` finds it by
    identity, or by that name once a wrapper such as FSDP2 replaced the object)."""
    known = list(getattr(model, EXTRA_ATTR, ()))
    ids = {id(param) for _, param in known}
    names = parameter_names(model)
    for param in params:
        if id(param) not in ids:
            known.append((names[id(param)], param))
            ids.add(id(param))
    object.__setattr__(model, EXTRA_ATTR, known)


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
    """Merge, then put every adapted layer's base layer back in its place and forget
    the methods: the model is again the original architecture (with the merged
    weights, and no bias its config does not declare), e.g. for ``save_pretrained``
    (PEFT's ``merge_and_unload``)."""
    merge(model)
    wrapped = [(n, m) for n, m in model.named_modules() if isinstance(m, AdaptedLayer)]
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
    """(out, in) of each linear or adapted target; [] for other modules."""
    shapes = {}
    for name in names:
        module = model.get_submodule(name)
        layer = module.base_layer if isinstance(module, AdaptedLayer) else module
        shapes[name] = list(features(layer)) if is_linear_layer(layer) else []
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
            tensors[f"methods.{index}.{key}"] = _cpu(tensor)
        entries.append(
            {
                "name": method.name,
                "config": config_to_json(method.config),
                "extra_state": method.extra_state(),
                "target_shapes": _target_shapes(model, method.adapted_modules),
            }
        )
    extra = extra_parameters(model)
    tensors.update({f"extra.{name}": _cpu(param) for name, param in extra.items()})
    config = {
        "format": FORMAT,
        "graphopt_version": __version__,
        "methods": entries,
        "trainable_extra": list(extra),
    }
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp)))
    atomic_write_json(directory / CONFIG_FILE, config)
    return directory


def _cpu(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", copy=True).contiguous()


def read_adapter_config(directory: str | Path) -> dict[str, Any]:
    """The parsed ``adapter_config.json`` of an adapter folder, graphopt's or PEFT's."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"{str(directory)!r} is not an adapter folder: it has no {CONFIG_FILE}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(config, dict) or (
        config.get("format") != FORMAT and not is_peft_config(config)
    ):
        raise ValueError(
            f"{path} is neither a graphopt adapter config (format {FORMAT!r}) nor a PEFT one"
        )
    return config


def read_saved_adapter(directory: str | Path) -> SavedAdapter:
    """An adapter folder (graphopt's or a PEFT LoRA one) in graphopt's terms."""
    from safetensors.torch import load_file

    config = read_adapter_config(directory)
    if is_peft_config(config):
        return read_peft_lora(directory, config)
    weights = Path(directory) / WEIGHTS_FILE
    if not weights.is_file():
        raise ValueError(f"{str(directory)!r} has no {WEIGHTS_FILE}")
    tensors = load_file(str(weights), device="cpu")
    extra = {}
    for name in config.get("trainable_extra", []):
        if f"extra.{name}" not in tensors:
            raise ValueError(f"{weights} has no tensor extra.{name} for trainable_extra {name!r}")
        extra[name] = tensors[f"extra.{name}"]
    return SavedAdapter(list(config["methods"]), tensors, extra)


def load_adapter(model: nn.Module, directory: str | Path) -> nn.Module:
    """Restore a saved adapter (graphopt's, or a PEFT LoRA folder) onto ``model``.

    On a model without methods, the saved methods are applied first (their
    adapted modules must have the saved shapes; regular expressions from the file
    are matched with a time bound); on a model that already has the same methods
    applied (e.g. resuming a run), only the state is loaded. On any error the
    model is left exactly as it was.
    """
    saved = read_saved_adapter(directory)
    snapshot = ModelSnapshot(model)
    try:
        _load(model, saved, snapshot, str(Path(directory) / CONFIG_FILE))
    except BaseException:
        snapshot.restore()
        raise
    return model


def _load(model: nn.Module, saved: SavedAdapter, snapshot: ModelSnapshot, where: str) -> None:
    present = methods_of(model)
    if present:
        have, saved_names = [m.name for m in present], [e["name"] for e in saved.entries]
        if have != saved_names:
            raise ValueError(
                f"model has methods {have} applied but the adapter holds {saved_names}"
            )
        if any(m.merged for m in present):
            raise ValueError("model's methods are merged; unmerge before loading an adapter")
        for index, (method, entry) in enumerate(zip(present, saved.entries, strict=True)):
            method.load_extra_state(model, entry.get("extra_state", {}))
            method.check_adapter_state(model, _method_tensors(saved.tensors, index))
        extras = _saved_extras(model, saved.extra)
        for index, method in enumerate(present):
            method.load_adapter_state_dict(model, _method_tensors(saved.tensors, index))
    else:
        for index, entry in enumerate(saved.entries):
            cls = method_class(entry["name"])
            method = cls(build_config(cls, dict(entry["config"]), unknown="warn"))
            resolution = resolve_targets(model, method.config, bounded=True, what=where)
            targets = resolution.targets
            _check_target_shapes(model, entry.get("target_shapes", {}), targets)
            method.adapted_modules = list(targets)
            method.module_overrides = resolution.overrides
            method.validate(targets)
            if method.reparameterizes_base:
                snapshot.protect(targets.values())
            attach(model, method, targets, bias_parameters(model, method.config.bias, targets))
            method.load_extra_state(model, entry.get("extra_state", {}))
            method.load_adapter_state_dict(model, _method_tensors(saved.tensors, index))
        extras = _saved_extras(model, saved.extra)
    with torch.no_grad():
        for tensor, value in extras.values():
            tensor.copy_(value.to(tensor.device, tensor.dtype))
    _add_extra(model, [t for t, _ in extras.values() if isinstance(t, nn.Parameter)])
    freeze_untrained(model)


def _saved_extras(
    model: nn.Module, saved: dict[str, torch.Tensor]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The model tensor (parameter under any of its names, or buffer) for each saved
    extra tensor, shapes checked."""
    own: dict[str, torch.Tensor] = dict(model.named_parameters(remove_duplicate=False))
    own.update({n: b for n, b in model.named_buffers() if n not in own})
    found = {}
    for name, value in saved.items():
        if name not in own:
            raise ValueError(f"adapter tensor {name!r} has no parameter or buffer in the model")
        check_state_matches("trainable_extra", {name: own[name]}, {name: value})
        found[name] = (own[name], value)
    return found


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
    "check_patterns",
    "export_peft",
    "load_adapter",
    "merge",
    "merge_and_unload",
    "methods_of",
    "name_matches",
    "read_adapter_config",
    "replace_module",
    "resolve_targets",
    "save_adapter",
    "stacked_targets",
    "unmerge",
]
