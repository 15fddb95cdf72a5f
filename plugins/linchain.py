"""LinChain (Wang et al., arXiv 2411.00039): a chain of linear maps inside the low-rank update.

``dW = (alpha / r) B M_n ... M_1 A`` with ``A`` (r x d_in), ``M_i`` (r x r,
``nn.Linear(r, r)`` with an optional bias, so the chain is affine:
``z_1 = M_1 A x + b_1``, ``z_k = M_k z_{k-1} + b_k``) and ``B`` (d_out x r).
Reference-code defaults: n = 3, r = 8, alpha = 2r, dropout 0.05 on the input,
``A`` and every ``M_i`` Kaiming-uniform (a = sqrt(5)), ``B`` = 0, biases on.
The merge is exact, biases included (METHODS.md section 5):

    W += (alpha / r) B (M_n ... M_1) A
    b += (alpha / r) B (M_n ... M_2 b_1 + ... + M_n b_{n-1} + b_n)

A trained LinChain adapter is a LoRA adapter with ``lora_A = M_n ... M_1 A``:
``export_peft`` writes it in PEFT's LoRA format. Trainable parameters per
adapted matrix: ``r (d_in + d_out) + n (r^2 + r)`` (``n r^2`` without biases).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from graphopt.layers import AdaptedLinear, WrappingMethod
from graphopt.methods import MethodConfig, methods_of
from graphopt.peft_export import LoraFactors, write_peft_lora
from graphopt.plugins.lora import check_rank_alpha_dropout


@dataclass
class LinChainConfig(MethodConfig):
    """LinChain settings: rank ``r``, chain length ``n``, scale ``alpha`` (``None`` = 2r),
    input dropout and whether the chain's ``nn.Linear(r, r)`` layers have biases."""

    r: int = 8
    n: int = 3
    alpha: float | None = None
    dropout: float = 0.05
    bias: bool = True

    def __post_init__(self) -> None:
        check_rank_alpha_dropout(self.r, self.scale_alpha, self.dropout)
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 0:
            raise ValueError(f"n (chain length) must be a non-negative integer; got {self.n!r}")
        if not isinstance(self.bias, bool):
            raise ValueError(f"bias must be True or False; got {self.bias!r}")

    @property
    def scale_alpha(self) -> float:
        """``alpha``, defaulting to ``2 r`` as in the reference code."""
        return float(2 * self.r if self.alpha is None else self.alpha)


class LinChainLinear(AdaptedLinear):
    """``base_layer(x) + scaling * lora_B(M_n(...M_1(lora_A(dropout(x)))))``."""

    output_factor = "lora_B.weight"

    def __init__(self, base_layer: nn.Linear, config: LinChainConfig) -> None:
        super().__init__(base_layer)
        weight = base_layer.weight
        kw = {"device": weight.device, "dtype": config.torch_dtype(weight)}
        r = config.r
        self.lora_A = nn.Linear(base_layer.in_features, r, bias=False, **kw)
        self.chain = nn.ModuleList(nn.Linear(r, r, bias=config.bias, **kw) for _ in range(config.n))
        self.lora_B = nn.Linear(r, base_layer.out_features, bias=False, **kw)
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.scaling = config.scale_alpha / r
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # chain: nn.Linear's own
        nn.init.zeros_(self.lora_B.weight)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """The chain applied as one affine map ``(M_n ... M_1 A) x + c``: the same
        function, but the per-token cost of LoRA (the r x r products are tiny)."""
        product, offset = self.chain_product()
        z = F.linear(self.dropout(x.to(product.dtype)), product, offset)
        return self.lora_B(z) * self.scaling

    def chain_product(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(M_n ... M_1 A, c)`` with ``c = M_n ... M_2 b_1 + ... + M_n b_{n-1} + b_n``
        (``None`` without biases): the chain as one affine map of ``A x``."""
        product = self.lora_A.weight
        offset: torch.Tensor | None = None
        for link in self.chain:
            product = link.weight @ product
            if offset is not None:
                offset = link.weight @ offset
            if link.bias is not None:
                offset = link.bias if offset is None else offset + link.bias
        return product, offset

    def delta_weight(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        product, offset = self.chain_product()
        delta_b = None if offset is None else self.scaling * (self.lora_B.weight @ offset)
        return self.scaling * (self.lora_B.weight @ product), delta_b


class LinChain(WrappingMethod):
    """Low-rank adaptation through a chain of ``n`` trainable r x r linear maps."""

    name = "linchain"
    config_class = LinChainConfig
    config: LinChainConfig

    def wrap(self, layer: nn.Linear) -> LinChainLinear:
        return LinChainLinear(layer, self.config)

    def num_trainable_parameters(self, model: nn.Module) -> int:
        """``sum over adapted matrices of r (d_in + d_out) + n (r^2 + r)`` (``n r^2`` without
        chain biases)."""
        r, n = self.config.r, self.config.n
        chain = n * (r * r + (r if self.config.bias else 0))
        return sum(
            r * (layer.in_features + layer.out_features) + chain
            for layer in self.layers(model).values()
        )


def export_peft(model: nn.Module, directory: str | Path) -> Path:
    """Write the model's LinChain adapter as a PEFT LoRA adapter in ``directory``.

    ``lora_A = M_n ... M_1 A``, ``lora_B = B``, ``lora_alpha = alpha``, ``r = r``,
    so PEFT computes the same ``(alpha / r) B M_n ... M_1 A x``. The chain's bias
    term ``(alpha / r) B c`` has no place in a LoRA adapter: it is folded into the
    adapted layers' own biases, which PEFT saves and loads with ``bias="lora_only"``
    (the export holds the folded bias of every adapted layer that has a bias). A
    bias-free layer with a non-zero chain bias cannot be exported (``ValueError``;
    train bias-free models such as LLaMA with ``bias=False``). Load with
    ``peft.PeftModel.from_pretrained(base_model, directory)``.
    """
    methods = methods_of(model)
    if len(methods) != 1 or not isinstance(methods[0], LinChain):
        raise ValueError(
            "export_peft needs a model adapted by exactly one method, linchain; "
            f"it has {[m.name for m in methods]}"
        )
    method = methods[0]
    if method.merged:
        raise ValueError("the LinChain adapter is merged; unmerge it before export_peft")
    layers: dict[str, LoraFactors] = {}
    with torch.no_grad():
        for name, layer in method.layers(model).items():
            product, offset = layer.chain_product()
            bias = layer.base_layer.bias
            if bias is None and offset is not None and bool(offset.abs().max() > 0):
                raise ValueError(
                    f"module {name!r} has no bias, so LinChain's chain bias cannot be folded "
                    "into a PEFT LoRA adapter; train with bias=False to export"
                )
            folded = None
            if bias is not None:
                folded = bias.detach().clone()
                if offset is not None:
                    folded += (layer.scaling * (layer.lora_B.weight @ offset)).to(bias.dtype)
            layers[name] = LoraFactors(product, layer.lora_B.weight, folded)
    config = method.config
    return write_peft_lora(
        directory, layers, r=config.r, alpha=config.scale_alpha, dropout=config.dropout
    )
