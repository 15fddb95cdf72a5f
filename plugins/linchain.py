"""LinChain (Wang et al., arXiv 2411.00039): a chain of linear maps inside the low-rank update.

``dW = (alpha / r) B M_n ... M_1 A`` with ``A`` (r x d_in), ``M_i`` (r x r,
``nn.Linear(r, r)`` with an optional bias, so the chain is affine:
``z_1 = M_1 A x + b_1``, ``z_k = M_k z_{k-1} + b_k``) and ``B`` (d_out x r).
Reference-code defaults: n = 3, r = 8, alpha = 2r, dropout 0.05 on the input,
``A`` and every ``M_i`` Kaiming-uniform (a = sqrt(5)), ``B`` = 0, chain biases on
(the reference model, RoBERTa, has a bias on every target). The merge is exact,
biases included (METHODS.md section 5):

    W += (alpha / r) B (M_n ... M_1) A
    b += (alpha / r) B (M_n ... M_2 b_1 + ... + M_n b_{n-1} + b_n)

The chain's bias term needs the layer's own bias to fold into, so chain biases
go exactly on the targets that have a bias (``chain_bias=None``, the default; on
BERT that is the reference behaviour, on LLaMA none); ``chain_bias=True`` refuses
a bias-free target at ``apply``, ``False`` has no chain biases. A trained LinChain
adapter is a LoRA adapter with ``lora_A = M_n ... M_1 A`` and the folded bias:
``graphopt.export_peft`` writes it in PEFT's LoRA format. Trainable parameters
per adapted matrix: ``r (d_in + d_out) + n r^2`` (``+ n r`` with chain biases).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from graphopt.layers import AdaptedLinear, WrappingMethod
from graphopt.methods import LowRankDelta, MethodConfig
from graphopt.plugins.lora import check_rank_alpha_dropout


@dataclass
class LinChainConfig(MethodConfig):
    """LinChain settings.

    Attributes:
        r: rank of the update.
        n: chain length (``n = 0`` is LoRA).
        alpha: scale (``None`` = 2r, the reference code's); the update is scaled by
            ``alpha / r``.
        dropout: dropout rate on the adapter's input.
        chain_bias: whether the chain's ``nn.Linear(r, r)`` maps have biases: ``None``
            on the targets that have a bias, ``True`` on every target (a bias-free
            target is refused), ``False`` never.
        rank_pattern: ``{module regex: r}`` for modules with another rank (PEFT's rule).
        alpha_pattern: ``{module regex: alpha}`` likewise.
    """

    r: int = 8
    n: int = 3
    alpha: float | None = None
    dropout: float = 0.05
    chain_bias: bool | None = None
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)

    pattern_fields: ClassVar[dict[str, str]] = {"rank_pattern": "r", "alpha_pattern": "alpha"}

    def __post_init__(self) -> None:
        if isinstance(self.bias, bool):
            raise ValueError(
                "bias is PEFT's 'none' | 'all' | 'lora_only' (which existing biases train); "
                f"LinChain's own chain biases are chain_bias=None/True/False; got bias={self.bias}"
            )
        super().__post_init__()
        check_rank_alpha_dropout(self.r, self.scale_alpha, self.dropout)
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 0:
            raise ValueError(f"n (chain length) must be a non-negative integer; got {self.n!r}")
        if self.chain_bias is not None and not isinstance(self.chain_bias, bool):
            raise ValueError(f"chain_bias must be None, True or False; got {self.chain_bias!r}")

    @property
    def scale_alpha(self) -> float:
        """``alpha``, defaulting to ``2 r`` as in the reference code."""
        return float(2 * self.r if self.alpha is None else self.alpha)

    @classmethod
    def migrate(cls, options: dict[str, Any]) -> dict[str, Any]:
        """graphopt <= 0.1 saved the chain biases as ``bias: true/false``."""
        if isinstance(options.get("bias"), bool):
            warnings.warn(
                f"linchain config 'bias: {str(options['bias']).lower()}' (saved by an older "
                "graphopt) is read as chain_bias; bias now means PEFT's bias option",
                UserWarning,
                stacklevel=4,
            )
            options["chain_bias"] = options.pop("bias")
        return options


class LinChainLinear(AdaptedLinear):
    """``base_layer(x) + scaling * lora_B(M_n(...M_1(lora_A(dropout(x)))))``."""

    output_factor = "lora_B.weight"

    def __init__(self, base_layer: nn.Module, config: LinChainConfig) -> None:
        super().__init__(base_layer)
        weight = self.base_weight()
        kw = {"device": weight.device, "dtype": config.torch_dtype(weight)}
        r = self.r = config.r
        self.alpha = config.scale_alpha
        chain_bias = base_layer.bias is not None if config.chain_bias is None else config.chain_bias
        self.lora_A = nn.Linear(self.in_features, r, bias=False, **kw)
        self.chain = nn.ModuleList(nn.Linear(r, r, bias=chain_bias, **kw) for _ in range(config.n))
        self.lora_B = nn.Linear(r, self.out_features, bias=False, **kw)
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.scaling = self.alpha / r
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # chain: nn.Linear's own
        nn.init.zeros_(self.lora_B.weight)

    @property
    def chain_bias(self) -> bool:
        """Whether the chain's maps have biases."""
        return any(link.bias is not None for link in self.chain)

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

    def low_rank_delta(self) -> LowRankDelta:
        """``lora_A = M_n ... M_1 A``, ``lora_B = B``; the chain's bias term
        ``scaling B c`` folded into the layer's bias."""
        product, offset = self.chain_product()
        bias = self.base_layer.bias
        folded = None
        if offset is not None and bias is not None:
            folded = bias + (self.scaling * (self.lora_B.weight @ offset)).to(bias.dtype)
        return LowRankDelta(product, self.lora_B.weight, self.alpha, bias=folded)


class LinChain(WrappingMethod):
    """Low-rank adaptation through a chain of ``n`` trainable r x r linear maps."""

    name = "linchain"
    config_class = LinChainConfig
    config: LinChainConfig

    def validate(self, targets: dict[str, nn.Module]) -> None:
        super().validate(targets)
        if self.config.chain_bias and self.config.n > 0:
            bare = [name for name, layer in targets.items() if layer.bias is None]
            if bare:
                raise ValueError(
                    f"chain_bias=True needs a bias on every target to fold the chain's bias "
                    f"into (merge, export); {len(bare)} target(s) have none, e.g. {bare[0]!r}: "
                    "use chain_bias=None (chain biases where the layer has a bias) or False"
                )

    def wrap(self, layer: nn.Module, config: MethodConfig) -> LinChainLinear:
        assert isinstance(config, LinChainConfig)
        return LinChainLinear(layer, config)

    def num_trainable_parameters(self, model: nn.Module) -> int:
        """``sum over adapted matrices of r (d_in + d_out) + n r^2`` (``+ n r`` where the
        chain has biases), each with its own r."""
        n = self.config.n
        total = 0
        for layer in self.layers(model).values():
            r = layer.r  # type: ignore[attr-defined]
            chain = n * (r * r + (r if layer.chain_bias else 0))  # type: ignore[attr-defined]
            total += r * (layer.in_features + layer.out_features) + chain
        return total
