"""LoRA (Hu et al., ICLR 2022), the baseline every other method is compared with.

``y = W x + (alpha / r) B A dropout(x)`` with ``A`` (r x d_in) Kaiming-uniform
(a = sqrt(5), as ``nn.Linear`` and PEFT), ``B`` (d_out x r) zero, so the adapted
model equals the base model at initialisation. Exact merge: ``W += (alpha / r) B A``.
Trainable parameters per adapted matrix: ``r (d_in + d_out)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from graphopt.layers import AdaptedLinear, WrappingMethod
from graphopt.methods import MethodConfig


def check_rank_alpha_dropout(r: object, alpha: object, dropout: object) -> None:
    """Shared config checks of low-rank adapters: ``r`` >= 1, ``alpha`` > 0, 0 <= dropout < 1."""
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"r must be a positive integer; got {r!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not alpha > 0:
        raise ValueError(f"alpha must be a positive number; got {alpha!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")


@dataclass
class LoraConfig(MethodConfig):
    """LoRA settings: rank ``r``, scale ``alpha`` (the update is scaled by alpha / r)
    and the dropout rate on the adapter's input."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.05

    def __post_init__(self) -> None:
        check_rank_alpha_dropout(self.r, self.alpha, self.dropout)


class LoraLinear(AdaptedLinear):
    """``base_layer(x) + scaling * lora_B(lora_A(dropout(x)))``."""

    output_factor = "lora_B.weight"

    def __init__(self, base_layer: nn.Linear, config: LoraConfig) -> None:
        super().__init__(base_layer)
        weight = base_layer.weight
        kw = {"device": weight.device, "dtype": config.torch_dtype(weight)}
        self.lora_A = nn.Linear(base_layer.in_features, config.r, bias=False, **kw)
        self.lora_B = nn.Linear(config.r, base_layer.out_features, bias=False, **kw)
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.scaling = config.alpha / config.r
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x.to(self.lora_A.weight.dtype))
        return self.lora_B(self.lora_A(x)) * self.scaling

    def delta_weight(self) -> tuple[torch.Tensor, None]:
        return self.scaling * (self.lora_B.weight @ self.lora_A.weight), None


class Lora(WrappingMethod):
    """Low-rank adaptation: a trainable ``B A`` next to every target matrix."""

    name = "lora"
    config_class = LoraConfig
    config: LoraConfig

    def wrap(self, layer: nn.Linear) -> LoraLinear:
        return LoraLinear(layer, self.config)

    def num_trainable_parameters(self, model: nn.Module) -> int:
        """``sum over adapted matrices of r (d_in + d_out)``."""
        return sum(
            self.config.r * (layer.in_features + layer.out_features)
            for layer in self.layers(model).values()
        )
