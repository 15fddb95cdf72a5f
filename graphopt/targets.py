"""Which modules and parameters a method acts on: PEFT's target options, resolved once.

``resolve_targets(model, config)`` applies, in PEFT's order and with PEFT's rules
(``peft.tuners.tuners_utils.check_target_module_exists``):

1. ``target_modules``: a regex full-matched against module names, a list of
   names / name suffixes, or ``"all-linear"`` (every ``nn.Linear``/``Conv1D`` that
   is not inside an adapted layer, minus the output head: the output embeddings
   of a ``PreTrainedModel``, else a top-level ``classifier``/``score`` head --
   PEFT's rule with ``task_type="SEQ_CLS"``);
2. ``layers_to_transform`` / ``layers_pattern`` (list form only): the block index
   is the first number after ``layers_pattern`` (or after any name part);
3. ``exclude_modules`` removes modules;
4. the config's ``pattern_fields`` (``rank_pattern``, ``alpha_pattern``) give
   per-module overrides: the first key ``k`` with
   ``re.match(rf"(.*\\.)?({k})$", name)``.

Every regular expression is matched in one batch by ``graphopt.patterns.evaluate``,
time-bounded when the config came from a file (``bounded=True``).

``resolve_parameters`` (``trainable_extra``) and ``bias_parameters`` (``bias=``)
return parameter *objects*, resolved before any layer is wrapped (wrapping renames
``q_proj.bias`` to ``q_proj.base_layer.bias``), matching tied parameters under every
name (``named_parameters(remove_duplicate=False)``: a tied ``lm_head.weight``).
``stacked_targets`` maps the layers an adapter wrapped to the tensor a stacked
method (spectral coordination) should act on: each layer's ``output_factor``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from graphopt.layers import AdaptedLayer
from graphopt.linear_layers import is_instance_of_imported, is_linear_layer
from graphopt.methods import MethodConfig
from graphopt.patterns import Spec, check_patterns, evaluate, suffix_matches

ALL_LINEAR = "all-linear"
"""PEFT's shorthand for every linear layer but the output head."""
SEQ_CLS_HEADS = ("classifier", "score")
"""Names of sequence-classification heads excluded from ``"all-linear"`` (PEFT's
``SEQ_CLS_HEAD_NAMES``)."""
ANY_LAYER_INDEX = r".*?\.[^.]*\.(?P<idx>\d+)\."
"""PEFT's block-index rule without ``layers_pattern``: the first numbered name part."""


@dataclass
class Resolution:
    """The target modules by name, and the per-module config overrides."""

    targets: dict[str, nn.Module]
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)


# -- adapted layers (graphopt's and PEFT's) ------------------------------------------------


def is_peft_layer(module: nn.Module) -> bool:
    """Whether ``module`` is a layer PEFT adapted (``lora.Linear``, ...)."""
    return is_instance_of_imported(module, "peft.tuners.tuners_utils", "BaseTunerLayer")


def is_peft_model(model: nn.Module) -> bool:
    """Whether PEFT wrapped ``model`` (a ``PeftModel``, or tuner layers injected into it)."""
    return hasattr(model, "peft_config") or any(is_peft_layer(m) for m in model.modules())


def is_adapted(module: nn.Module) -> bool:
    """Whether ``module`` is an adapted layer, graphopt's or PEFT's."""
    return isinstance(module, AdaptedLayer) or is_peft_layer(module)


def inside_adapted(model: nn.Module) -> set[str]:
    """Names of the modules strictly inside an adapted layer (its base layer, factors)."""
    inner: set[str] = set()
    for prefix, module in model.named_modules():
        if is_adapted(module):
            inner.update(f"{prefix}.{name}" for name, _ in module.named_modules() if name)
    return inner


def all_linear(model: nn.Module, *, include_adapted: bool = False) -> list[str]:
    """``"all-linear"``: the linear layers (and, with ``include_adapted``, the adapted
    layers) not inside an adapted layer, minus the output head."""
    inner = inside_adapted(model)
    names = [
        name
        for name, module in model.named_modules()
        if name
        and name not in inner
        and (is_linear_layer(module) or (include_adapted and is_adapted(module)))
    ]
    heads = _output_heads(model)
    return [name for name in names if name not in heads]


def _output_heads(model: nn.Module) -> set[str]:
    getter = getattr(model, "get_output_embeddings", None)
    output = getter() if callable(getter) else None
    heads = [output] if output is not None else []
    if output is None:
        heads = [h for h in (getattr(model, n, None) for n in SEQ_CLS_HEADS) if h is not None]
    ids = {id(h) for h in heads if isinstance(h, nn.Module)}
    return {name for name, module in model.named_modules() if id(module) in ids}


# -- target resolution -------------------------------------------------------------------


def resolve_targets(
    model: nn.Module, config: MethodConfig, *, bounded: bool = False, what: str = "config"
) -> Resolution:
    """The modules ``config`` targets and their overrides (see the module docstring).

    ``bounded=True`` for a config read from a file: its regular expressions are
    matched with a time bound. Raises ``ValueError`` when nothing is targeted, with
    the model's linear layers listed and, for a regex that matches nothing but would
    match as a list of names, a hint.
    """
    names = [name for name, _ in model.named_modules() if name]
    specs: list[Spec] = []
    slots: dict[str, Any] = {}

    def add(key: str, spec: Spec) -> None:
        slots[key] = len(specs)
        specs.append(spec)

    target = config.target_modules
    if isinstance(target, str) and target.lower() != ALL_LINEAR:
        add("target", (target, "fullmatch", None))
    if isinstance(config.exclude_modules, str):
        add("exclude", (config.exclude_modules, "fullmatch", None))
    if config.layers_to_transform is not None:
        pattern = config.layers_pattern
        layer_patterns = [pattern] if isinstance(pattern, str) else list(pattern or [])
        for i, p in enumerate(layer_patterns or [None]):
            regex = ANY_LAYER_INDEX if p is None else rf"(?:^|.*?\.){p}\.(?P<idx>\d+)\."
            add(f"layers.{i}", (regex, "match", "idx"))
    for field_name in config.pattern_fields:
        for i, key in enumerate(getattr(config, field_name)):
            add(f"{field_name}.{i}", (rf"(.*\.)?({key})$", "match", None))
    found = evaluate(specs, names, bounded=bounded, what=what)

    def hits(key: str) -> dict[str, str]:
        return found[slots[key]]

    if isinstance(target, str) and target.lower() == ALL_LINEAR:
        chosen = all_linear(model)
    elif isinstance(target, str):
        chosen = [n for n in names if n in hits("target")]
    else:
        chosen = [n for n in names if suffix_matches(target, n)]
        if config.layers_to_transform is not None:
            chosen = [n for n in chosen if _in_layers(n, config, hits)]
    exclude = config.exclude_modules
    if isinstance(exclude, str):
        chosen = [n for n in chosen if n not in hits("exclude")]
    elif exclude is not None:
        chosen = [n for n in chosen if not suffix_matches(exclude, n)]
    if not chosen:
        raise ValueError(_nothing_matched(model, config, names))
    overrides: dict[str, dict[str, Any]] = {}
    for field_name, overridden in config.pattern_fields.items():
        table = getattr(config, field_name)
        for name in chosen:
            for i, key in enumerate(table):
                if name in hits(f"{field_name}.{i}"):
                    overrides.setdefault(name, {})[overridden] = table[key]
                    break
    modules = dict(model.named_modules())
    return Resolution({n: modules[n] for n in chosen}, overrides)


def _in_layers(name: str, config: MethodConfig, hits: Any) -> bool:
    """PEFT's block filter: the first layer index found (trying each layers_pattern)."""
    pattern = config.layers_pattern
    count = 1 if pattern is None or isinstance(pattern, str) else max(len(pattern), 1)
    for i in range(count):
        index = hits(f"layers.{i}").get(name)
        if index is not None:
            wanted = config.layers_to_transform
            return int(index) == wanted if isinstance(wanted, int) else int(index) in wanted
    return False


def _nothing_matched(model: nn.Module, config: MethodConfig, names: list[str]) -> str:
    linear = [n for n, m in model.named_modules() if n and is_linear_layer(m)]
    shown = ", ".join(linear[:8]) + (", ..." if len(linear) > 8 else "")
    message = (
        f"target_modules {config.target_modules!r} matches no module of {type(model).__name__}"
    )
    if config.exclude_modules is not None or config.layers_to_transform is not None:
        message += " (after exclude_modules / layers_to_transform)"
    message += f"; its linear layers include: {shown or 'none'}"
    target = config.target_modules
    if isinstance(target, str) and target.lower() != ALL_LINEAR:
        as_list = sum(suffix_matches([target], n) for n in names)
        if as_list:
            message += (
                f". A string is a regular expression full-matched against the whole module "
                f"name (as in PEFT); the list [{target!r}] would match {as_list} module(s) by "
                "name or suffix"
            )
    return message


# -- parameters --------------------------------------------------------------------------


def matching_names(patterns: str | list[str], names: list[str]) -> set[str]:
    """The ``names`` that ``patterns`` matches (a regex full-matched, or names/suffixes)."""
    if isinstance(patterns, str):
        return set(evaluate([(patterns, "fullmatch", None)], names)[0])
    return {n for n in names if suffix_matches(patterns, n)}


def resolve_parameters(model: nn.Module, patterns: Any, what: str) -> list[nn.Parameter]:
    """The parameters (objects, each once) whose name -- under any of its names, a
    tied weight has several -- or an enclosing module's name matches ``patterns``
    (the ``target_modules`` rules). Raises ``ValueError`` naming ``what`` if none."""
    patterns = check_patterns(patterns, what)
    named = list(model.named_parameters(remove_duplicate=False))
    prefixes = {".".join(n.split(".")[:i]) for n, _ in named for i in range(1, n.count(".") + 2)}
    matched = matching_names(patterns, sorted(prefixes))
    chosen: dict[int, nn.Parameter] = {}
    for name, param in named:
        parts = name.split(".")
        if any(".".join(parts[:i]) in matched for i in range(1, len(parts) + 1)):
            chosen.setdefault(id(param), param)
    if not chosen:
        raise ValueError(f"{what} {patterns!r} matches no parameter of {type(model).__name__}")
    return list(chosen.values())


def bias_parameters(
    model: nn.Module, mode: str, targets: dict[str, nn.Module]
) -> list[nn.Parameter]:
    """PEFT's ``bias``: none; ``"all"``, every parameter named ``bias``; ``"lora_only"``,
    the biases of the target layers."""
    if mode == "all":
        found = [p for n, p in model.named_parameters() if n.rpartition(".")[2] == "bias"]
    elif mode == "lora_only":
        found = [
            b for m in targets.values() if isinstance(b := getattr(m, "bias", None), nn.Parameter)
        ]
    else:
        found = []
    return list({id(p): p for p in found}.values())


# -- stacking ------------------------------------------------------------------------------


def stacked_targets(model: nn.Module, targets: Any) -> dict[str, list[str]]:
    """``{"target_modules": [...], "parameters": [name]}`` for a method stacked on the
    layers ``targets`` names (e.g. ``graphopt.apply(model, "spectral",
    **stacked_targets(model, targets), k=8)``): each adapted layer's
    ``output_factor`` (LoRA's ``lora_B.weight``, pca_ggm's ``A``, a third party's),
    PEFT's ``lora_B.<adapter>.weight`` for a PEFT LoRA layer, and the weight itself
    for a layer no adapter wrapped. The factors must share one parameter name."""
    if isinstance(targets, str) and targets.lower() == ALL_LINEAR:
        names = all_linear(model, include_adapted=True)
    else:
        every = [n for n, _ in model.named_modules() if n]
        matched = matching_names(check_patterns(targets, "targets"), every)
        names = [n for n in every if n in matched]
    owners: list[str] = []
    leaves: dict[str, str] = {}
    for name in names:
        path = _output_factor(model.get_submodule(name), name)
        owner, _, leaf = path.rpartition(".")
        owners.append(owner)
        leaves.setdefault(leaf, path)
    if not owners:
        raise ValueError(f"targets {targets!r} match no module of {type(model).__name__}")
    if len(leaves) > 1:
        raise ValueError(
            f"the stacked tensors have different names ({sorted(leaves.values())[:4]}); a "
            "stacked method takes one parameter name: stack on one adapter at a time"
        )
    return {"target_modules": owners, "parameters": list(leaves)}


def _output_factor(module: nn.Module, name: str) -> str:
    if isinstance(module, AdaptedLayer):
        if module.output_factor is None:
            raise ValueError(
                f"{name!r} is adapted by {type(module).__name__}, which declares no output_factor "
                "for a stacked method to target"
            )
        return f"{name}.{module.output_factor}"
    lora_b = getattr(module, "lora_B", None)
    if is_peft_layer(module) and isinstance(lora_b, nn.ModuleDict):
        active = list(getattr(module, "active_adapters", [])) or list(lora_b)
        return f"{name}.lora_B.{active[0]}.weight"
    if is_linear_layer(module):
        return f"{name}.weight"
    raise ValueError(
        f"{name!r} is a {type(module).__name__}: neither an adapted layer nor a linear layer"
    )


__all__ = [
    "ALL_LINEAR",
    "Resolution",
    "all_linear",
    "bias_parameters",
    "is_peft_model",
    "resolve_parameters",
    "resolve_targets",
    "stacked_targets",
]
