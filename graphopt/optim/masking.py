"""``ParameterMask``: entries of a parameter that do not train, exactly.

A method that trains only part of a parameter (pca_ggm's kept components, a
sparse fine-tuning pattern) keeps the parameter whole -- its identity and
shape are fixed for the run, so DDP, FSDP and every checkpointer see one set
of tensors -- and masks it: the gradient is zeroed where the mask is 0 (so no
moment of Adam accumulates there) and the base optimizer's update is zeroed
there too (so weight decay and momentum move nothing). The masked entries
end every step bitwise where they started.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch


class ParameterMask:
    """Gradient transform and update transform: ``g <- m * g``, ``d <- m * d``.

    Written with ``torch.where``, so a non-finite value outside the mask cannot
    leak into the masked entries.

    Args:
        name: unique among the optimizer's transforms (e.g. ``"pca_ggm_mask"``).
        params: the masked parameters.
        mask: ``mask(param)`` -> a 0/1 tensor broadcastable to ``param`` (read at
            every step, so the owner may change it in place, e.g. at allocation).
    """

    def __init__(
        self,
        name: str,
        params: Sequence[torch.Tensor],
        mask: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        self.name = name
        self.params = list(params)
        self.mask = mask

    def init_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def transform(
        self, grad: torch.Tensor, param: torch.Tensor, state: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        return torch.where(self.mask(param).bool(), grad, 0.0)

    def transform_update(
        self, update: torch.Tensor, param: torch.Tensor, state: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        return torch.where(self.mask(param).bool(), update, 0.0)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
