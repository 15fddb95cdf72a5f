"""LoRA (Hu et al., ICLR 2022), the baseline every other method is compared with.

``y = W x + (alpha / r) B A dropout(x)`` with ``A`` (r x d_in) Kaiming-uniform
(a = sqrt(5), as ``nn.Linear`` and PEFT), ``B`` (d_out x r) zero, so the adapted
model equals the base model at initialisation. Exact merge: ``W += (alpha / r) B A``
(on the (out, in) form of the weight: GPT-2's ``Conv1D`` too). The same module
names, initialisation, scaling and forward as PEFT's LoRA, so a graphopt LoRA
adapter exports to PEFT (``graphopt.export_peft``) and a PEFT LoRA folder loads
as one (``graphopt.load_adapter``). Trainable parameters per adapted matrix:
``r (d_in + d_out)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from graphopt.layers import AdaptedLinear, WrappingMethod
from graphopt.methods import LowRankDelta, MethodConfig, lora_scaling


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
    """LoRA settings (PEFT's ``LoraConfig`` names where they differ: ``lora_alpha`` ->
    ``alpha``, ``lora_dropout`` -> ``dropout``).

    Attributes:
        r: rank of the update.
        alpha: scale; the update is scaled by ``alpha / r`` (``alpha / sqrt(r)`` with
            ``use_rslora``).
        dropout: dropout rate on the adapter's input.
        use_rslora: rank-stabilised scaling (Kalajdzievski, arXiv 2312.03732).
        rank_pattern: ``{module regex: r}`` for modules with another rank (PEFT's rule).
        alpha_pattern: ``{module regex: alpha}`` likewise.
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    use_rslora: bool = False
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)

    pattern_fields: ClassVar[dict[str, str]] = {"rank_pattern": "r", "alpha_pattern": "alpha"}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_rank_alpha_dropout(self.r, self.alpha, self.dropout)
        if not isinstance(self.use_rslora, bool):
            raise ValueError(f"use_rslora must be True or False; got {self.use_rslora!r}")


class LoraLinear(AdaptedLinear):
    """``base_layer(x) + scaling * lora_B(lora_A(dropout(x)))``."""

    output_factor = "lora_B.weight"

    def __init__(self, base_layer: nn.Module, config: LoraConfig) -> None:
        super().__init__(base_layer)
        weight = self.base_weight()
        kw = {"device": weight.device, "dtype": config.torch_dtype(weight)}
        self.r = config.r
        self.alpha = config.alpha
        self.use_rslora = config.use_rslora
        self.lora_A = nn.Linear(self.in_features, config.r, bias=False, **kw)
        self.lora_B = nn.Linear(config.r, self.out_features, bias=False, **kw)
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.scaling = lora_scaling(config.alpha, config.r, config.use_rslora)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x.to(self.lora_A.weight.dtype))
        return self.lora_B(self.lora_A(x)) * self.scaling

    def delta_weight(self) -> tuple[torch.Tensor, None]:
        return self.scaling * (self.lora_B.weight @ self.lora_A.weight), None

    def low_rank_delta(self) -> LowRankDelta:
        return LowRankDelta(self.lora_A.weight, self.lora_B.weight, self.alpha, self.use_rslora)


class Lora(WrappingMethod):
    """Low-rank adaptation: a trainable ``B A`` next to every target matrix."""

    name = "lora"
    config_class = LoraConfig
    config: LoraConfig

    def wrap(self, layer: nn.Module, config: MethodConfig) -> LoraLinear:
        assert isinstance(config, LoraConfig)
        return LoraLinear(layer, config)

    def num_trainable_parameters(self, model: nn.Module) -> int:
        """``sum over adapted matrices of r (d_in + d_out)`` (each with its own r)."""
        return sum(
            layer.r * (layer.in_features + layer.out_features)  # type: ignore[operator]
            for layer in self.layers(model).values()
        )
