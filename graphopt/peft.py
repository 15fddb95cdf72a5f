"""PEFT interoperability: graphopt adapters out as PEFT LoRA folders, PEFT LoRA folders in.

**Export** (``export_peft``). Every method of the model's stack either gives its
trained change as a low-rank delta (``Method.low_rank_delta``: lora, linchain,
pca_ggm) or trains only tensors of such an adapter in place (spectral on
``lora_B``). The folder holds, with PEFT 0.21's key names
(``base_model.model.<module>...``):

* ``<layer>.lora_A.weight`` / ``<layer>.lora_B.weight`` per adapted layer, ``r`` and
  ``lora_alpha`` per module (``rank_pattern`` / ``alpha_pattern`` where they differ
  from the first layer's), ``fan_in_fan_out`` for ``Conv1D`` targets;
* a changed bias of an adapted layer as ``<layer>.base_layer.bias``; other trained
  biases as ``<module>.bias`` (``bias="lora_only"`` / ``"all"``, as PEFT saves them);
* every other trained parameter (a head, through ``trainable_extra``) as its module
  in ``modules_to_save``, whole (PEFT loads a module to save from all its keys);
  a tied parameter puts every module that holds it there.

Anything else (a trained tensor inside an adapted layer that is not a factor or
its bias, a method without a low-rank form) raises ``ValueError`` before a file
is written: PEFT would otherwise serve other outputs, silently.

**Import** (``read_peft_lora``, used by ``graphopt.load_adapter``). A PEFT LoRA
folder becomes graphopt's ``lora`` with the same ``r``, ``lora_alpha`` (``alpha``),
``lora_dropout``, ``use_rslora``, ``rank_pattern``, ``alpha_pattern``,
``target_modules``, ``exclude_modules``, ``layers_to_transform``,
``layers_pattern`` and ``bias``; ``modules_to_save`` tensors and saved biases load
as ``trainable_extra``; ``fan_in_fan_out`` follows each layer's type. An option
graphopt cannot represent (DoRA, ``lora_bias``, trainable tokens, a base-rewriting
initialisation such as PiSSA, ...) raises ``ValueError`` naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from graphopt.io import atomic_write, atomic_write_json
from graphopt.linear_layers import is_conv1d
from graphopt.methods import LowRankDelta, extra_parameters, methods_of

PEFT_PREFIX = "base_model.model."
"""Prefix of tensor names in a PEFT adapter saved from ``get_peft_model(base, ...)``."""
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"

MAPPED = {
    "r": "r",
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
    "use_rslora": "use_rslora",
    "target_modules": "target_modules",
    "exclude_modules": "exclude_modules",
    "layers_to_transform": "layers_to_transform",
    "layers_pattern": "layers_pattern",
    "rank_pattern": "rank_pattern",
    "alpha_pattern": "alpha_pattern",
    "bias": "bias",
}
"""PEFT ``LoraConfig`` option -> graphopt ``lora`` option."""
IGNORED = {
    "peft_type",
    "task_type",
    "auto_mapping",
    "peft_version",
    "base_model_name_or_path",
    "revision",
    "inference_mode",
    "runtime_config",
    "megatron_core",
    "qalora_group_size",
    "fan_in_fan_out",
    "modules_to_save",
    "init_lora_weights",
    "eva_config",
    "corda_config",
    "lora_ga_config",
    "loftq_config",
    "ensure_weight_tying",
}
"""Options that do not change the trained adapter's function (initialisation recipes,
bookkeeping; ``fan_in_fan_out`` is read from each layer's type, ``modules_to_save``
from the tensors)."""
BASE_REWRITING_INITS = ("pissa", "olora", "corda", "lora_ga", "loftq")
"""``init_lora_weights`` values that rewrite (or quantize) the base weights: the saved
factors only fit that rewritten base."""


@dataclass
class SavedAdapter:
    """An adapter folder in graphopt's terms: method entries (name, config, extra
    state, target shapes), each method's tensors under ``methods.<i>.`` and the other
    trained tensors by their names in the model (``extra``)."""

    entries: list[dict[str, Any]]
    tensors: dict[str, torch.Tensor]
    extra: dict[str, torch.Tensor]


# -- export ------------------------------------------------------------------------------


def export_peft(model: nn.Module, directory: str | Path) -> Path:
    """Write the model's adapters (and trained heads) as a PEFT LoRA folder.

    ``peft.PeftModel.from_pretrained(base_model, directory)`` then computes the
    adapted model's outputs. Raises ``ValueError`` before writing anything when a
    trained tensor has no place in a LoRA folder (see the module docstring).
    """
    from safetensors.torch import save_file

    deltas, covered = _low_rank_deltas(model)
    tensors, modules_to_save, biases = _trained_extras(model, deltas, covered)
    for name, delta in deltas.items():
        prefix = f"{PEFT_PREFIX}{name}"
        tensors[f"{prefix}.lora_A.weight"] = _cpu(delta.lora_A)
        tensors[f"{prefix}.lora_B.weight"] = _cpu(delta.lora_B)
        if delta.bias is not None:
            tensors[f"{prefix}.base_layer.bias"] = _cpu(delta.bias)
    rslora = {d.use_rslora for d in deltas.values()}
    if len(rslora) > 1:
        raise ValueError("the adapters mix use_rslora True and False; PEFT has one setting")
    first = next(iter(deltas.values()))
    rank_pattern = {_exact(n): d.rank for n, d in deltas.items() if d.rank != first.rank}
    alpha_pattern = {_exact(n): d.alpha for n, d in deltas.items() if d.alpha != first.alpha}
    adapted_bias = any(d.bias is not None for d in deltas.values())
    dropout = next((getattr(m.config, "dropout", None) for m in methods_of(model)), None)
    config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": getattr(getattr(model, "config", None), "_name_or_path", None)
        or None,
        "inference_mode": True,
        "r": first.rank,
        "lora_alpha": first.alpha,
        "lora_dropout": float(dropout or 0.0),
        "use_rslora": first.use_rslora,
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "target_modules": sorted(deltas),
        "fan_in_fan_out": all(is_conv1d(model.get_submodule(n).base_layer) for n in deltas),
        "bias": "all" if biases else ("lora_only" if adapted_bias else "none"),
        "modules_to_save": sorted(modules_to_save) or None,
        "init_lora_weights": True,
        "use_dora": False,
    }
    directory = Path(directory)
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp)))
    atomic_write_json(directory / CONFIG_FILE, config)
    return directory


def _low_rank_deltas(model: nn.Module) -> tuple[dict[str, LowRankDelta], set[int]]:
    """Every method's low-rank delta, and the ids of the tensors they cover."""
    methods = methods_of(model)
    if not methods:
        raise ValueError("model has no graphopt method applied; nothing to export")
    if any(m.merged for m in methods):
        raise ValueError("the model's methods are merged; unmerge before export_peft")
    deltas: dict[str, LowRankDelta] = {}
    covered: set[int] = set()
    in_place = []
    with torch.no_grad():
        for method in methods:
            found = method.low_rank_delta(model)
            if found is None:
                in_place.append(method)
                continue
            twice = sorted(set(found) & set(deltas))
            if twice:
                raise ValueError(f"two methods adapt {twice[:3]}; PEFT holds one LoRA per layer")
            deltas.update({n: LowRankDelta(**_detached(d)) for n, d in found.items()})
            covered |= {id(p) for p in method.adapter_parameters(model).values()}
    for method in in_place:
        outside = [n for n, p in method.adapter_parameters(model).items() if id(p) not in covered]
        if outside:
            raise ValueError(
                f"method {method.name!r} has no low-rank form and trains {outside[:3]}, which "
                "are not factors of a low-rank adapter: a PEFT LoRA folder cannot hold them"
            )
    if not deltas:
        raise ValueError(
            f"none of the methods {[m.name for m in methods]} has a low-rank delta to export"
        )
    return deltas, covered


def _detached(delta: LowRankDelta) -> dict[str, Any]:
    return {
        "lora_A": delta.lora_A.detach(),
        "lora_B": delta.lora_B.detach(),
        "alpha": delta.alpha,
        "use_rslora": delta.use_rslora,
        "bias": None if delta.bias is None else delta.bias.detach(),
    }


def _trained_extras(
    model: nn.Module, deltas: dict[str, LowRankDelta], covered: set[int]
) -> tuple[dict[str, torch.Tensor], set[str], set[str]]:
    """(tensors, modules_to_save, biases outside the adapted layers) for the trained
    parameters that are not factors."""
    owners: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(param), []).append(name)
    modules_to_save: set[str] = set()
    biases: set[str] = set()
    for param in extra_parameters(model).values():
        if id(param) in covered:
            continue
        for full in owners[id(param)]:
            module, _, leaf = full.rpartition(".")
            layer = module.removesuffix(".base_layer")
            if layer in deltas and leaf == "bias" and module.endswith(".base_layer"):
                if deltas[layer].bias is None:
                    deltas[layer].bias = param.detach()
            elif any(module == d or module.startswith(d + ".") for d in deltas):
                raise ValueError(
                    f"{full} is trained but sits inside the adapted layer {layer!r} and is not "
                    "its bias: a PEFT LoRA folder cannot hold it"
                )
            elif leaf == "bias":
                biases.add(full)
            else:
                modules_to_save.add(module)
    tensors: dict[str, torch.Tensor] = {}
    for module_name in sorted(modules_to_save):
        module = model.get_submodule(module_name)
        for key, value in module.state_dict().items():
            tensors[f"{PEFT_PREFIX}{module_name}.{key}"] = _cpu(value)
    biases = {b for b in biases if b.rpartition(".")[0] not in modules_to_save}
    named = dict(model.named_parameters(remove_duplicate=False))
    for full in sorted(biases):
        tensors[f"{PEFT_PREFIX}{full}"] = _cpu(named[full])
    return tensors, modules_to_save, biases


def _exact(name: str) -> str:
    """A ``rank_pattern`` key that matches exactly this module under PEFT's rule."""
    return "^" + "".join("\\." if c == "." else c for c in name)


def _cpu(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", copy=True).contiguous()


# -- import ------------------------------------------------------------------------------


def is_peft_config(config: dict[str, Any]) -> bool:
    """Whether a parsed ``adapter_config.json`` is PEFT's."""
    return "peft_type" in config


def read_peft_lora(directory: str | Path, config: dict[str, Any]) -> SavedAdapter:
    """A PEFT LoRA folder as graphopt's ``lora`` (see the module docstring)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    where = str(directory / CONFIG_FILE)
    options = lora_options(config, where)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        pickled = (directory / "adapter_model.bin").exists()
        hint = " (adapter_model.bin is a pickle, which graphopt never loads)" if pickled else ""
        raise ValueError(f"{str(directory)!r} has no {WEIGHTS_FILE}{hint}")
    factors: dict[str, torch.Tensor] = {}
    extra: dict[str, torch.Tensor] = {}
    older: dict[str, torch.Tensor] = {}
    for key, tensor in load_file(str(weights), device="cpu").items():
        name = key.removeprefix(PEFT_PREFIX)
        module, _, leaf = name.rpartition(".")
        if module.endswith((".lora_A", ".lora_B")) and leaf == "weight":
            factors[name] = tensor
        elif "lora_" in name:
            raise ValueError(f"{weights}: tensor {key!r} is no plain LoRA factor graphopt can load")
        elif ".original_module." in f".{name}":
            continue  # PEFT's copy of a module to save as it was before training
        elif ".modules_to_save." in f".{name}":
            older[name.replace(".modules_to_save.", ".")] = tensor  # older PEFT spelling
        else:
            extra[name] = tensor  # a module to save (PEFT 0.21 spelling) or a bias
    extra = {**older, **extra}
    if not factors:
        raise ValueError(f"{weights} holds no LoRA factors (lora_A / lora_B)")
    entry = {"name": "lora", "config": options, "extra_state": {}, "target_shapes": {}}
    tensors = {f"methods.0.{name}": tensor for name, tensor in factors.items()}
    return SavedAdapter([entry], tensors, extra)


def lora_options(config: dict[str, Any], where: str) -> dict[str, Any]:
    """graphopt ``lora`` options for a PEFT ``LoraConfig`` (as parsed JSON)."""
    if config.get("peft_type") != "LORA":
        raise ValueError(
            f"{where}: PEFT adapter type {config.get('peft_type')!r} is not supported; "
            "graphopt loads LORA adapters"
        )
    if config.get("use_dora"):
        raise ValueError(
            f"{where}: the adapter uses DoRA (use_dora=true), a magnitude-direction "
            "decomposition graphopt's lora cannot represent"
        )
    init = config.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(BASE_REWRITING_INITS):
        raise ValueError(
            f"{where}: init_lora_weights={init!r} rewrites or quantizes the base weights, so the "
            "saved factors only fit that rewritten model; convert the adapter to plain LoRA "
            "(PEFT's path_initial_model_for_weight_conversion) first"
        )
    options: dict[str, Any] = {}
    for key, value in config.items():
        if key in MAPPED:
            if value is not None:
                options[MAPPED[key]] = value
        elif key not in IGNORED and value not in (None, False, [], {}, 0):
            raise ValueError(
                f"{where}: LoraConfig option {key}={value!r} is not supported by graphopt's lora "
                "(it changes the adapter's function, or graphopt cannot tell)"
            )
    if isinstance(options.get("target_modules"), list):
        options["target_modules"] = sorted(options["target_modules"])
    if "target_modules" not in options:
        raise ValueError(f"{where}: the adapter names no target_modules")
    options.setdefault("r", 8)
    options.setdefault("alpha", 8)
    options.setdefault("dropout", 0.0)
    return options
