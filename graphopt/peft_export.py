"""Writing an adapter in PEFT's LoRA format, so any LoRA runtime can serve it.

A method whose trained update is ``dW = scaling * lora_B @ lora_A`` per layer
(plus, optionally, a new bias for the layer) exports through
``write_peft_lora``; PEFT (``PeftModel.from_pretrained(base, directory)``)
then computes the same outputs. New biases go in as ``<layer>.base_layer.bias``
with ``bias="lora_only"``, which is how PEFT itself saves trained biases of
LoRA layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from graphopt.io import atomic_write, atomic_write_json

PEFT_PREFIX = "base_model.model."
"""Prefix of tensor names in a PEFT adapter saved from ``get_peft_model(base, ...)``."""


@dataclass
class LoraFactors:
    """One layer's update: ``dW = scaling * lora_B @ lora_A``; ``bias``: the layer's new bias."""

    lora_A: torch.Tensor
    lora_B: torch.Tensor
    bias: torch.Tensor | None = None


def write_peft_lora(
    directory: str | Path,
    layers: dict[str, LoraFactors],
    *,
    r: int,
    alpha: float,
    dropout: float = 0.0,
) -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` in PEFT's LoRA format.

    ``layers`` maps module names (as in the base model) to their factors, all of
    rank ``r``; PEFT scales by ``alpha / r``.
    """
    from safetensors.torch import save_file

    if not layers:
        raise ValueError("layers must name at least one adapted module")
    tensors: dict[str, torch.Tensor] = {}
    for name, factors in layers.items():
        if factors.lora_A.shape[0] != r or factors.lora_B.shape[1] != r:
            raise ValueError(
                f"module {name!r}: lora_A {tuple(factors.lora_A.shape)} and lora_B "
                f"{tuple(factors.lora_B.shape)} are not of rank r = {r}"
            )
        prefix = f"{PEFT_PREFIX}{name}"
        tensors[f"{prefix}.lora_A.weight"] = _cpu(factors.lora_A)
        tensors[f"{prefix}.lora_B.weight"] = _cpu(factors.lora_B)
        if factors.bias is not None:
            tensors[f"{prefix}.base_layer.bias"] = _cpu(factors.bias)
    any_bias = any(f.bias is not None for f in layers.values())
    config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": None,
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "target_modules": sorted(layers),
        "bias": "lora_only" if any_bias else "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "modules_to_save": None,
        "use_rslora": False,
        "use_dora": False,
    }
    directory = Path(directory)
    atomic_write(directory / "adapter_model.safetensors", lambda t: save_file(tensors, str(t)))
    atomic_write_json(directory / "adapter_config.json", config)
    return directory


def _cpu(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", copy=True).contiguous()
