"""What a :class:`~graphopt.optim.GraphOptimizer` runs around the base step.

Four small protocols, checked structurally (any object with these members
works; nothing needs to inherit from them):

* :class:`GradientTransform` rewrites the gradient of each parameter it selects
  before the base step (e.g. the spectral low-pass filter);
* :class:`Regularizer` adds the gradient of a penalty on the parameters it
  selects (e.g. the Dirichlet energy of the update);
* :class:`UpdateTransform` rewrites the base optimizer's update
  ``p_new - p_old`` of each parameter it selects, after the base step (e.g. the
  spectral filter applied where Adam's per-coordinate scaling cannot undo it,
  or a mask that keeps frozen entries exactly where they were);
* :class:`StepCallback` runs after the base step (e.g. refreshing a basis).

Per-parameter state is a ``dict[str, Tensor]`` created by ``init_state`` and
owned by the optimizer, so it travels with ``GraphOptimizer.state_dict()``; an
object's own extra state (counters, settings) comes from its ``state_dict()``
and must hold tensors and plain values only (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from graphopt.optim.optimizer import GraphOptimizer


@runtime_checkable
class GradientTransform(Protocol):
    """Rewrites ``grad`` of each selected parameter, in order, before the base step.

    ``transform`` runs under ``torch.no_grad()`` on the parameter's device and
    must not synchronise with the host (no ``.item()``, no branching on tensor
    values). ``options`` are the per-group settings of this transform (see
    ``GraphOptimizer``); a transform that takes none may ignore them.
    """

    name: str
    """Registry-style name; the key of per-group settings."""
    params: Sequence[torch.Tensor]
    """The parameters this transform applies to."""

    def init_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-parameter state, created once when the optimizer is built."""
        ...

    def transform(
        self,
        grad: torch.Tensor,
        param: torch.Tensor,
        state: dict[str, torch.Tensor],
        **options: Any,
    ) -> torch.Tensor:
        """The new gradient (may be ``grad`` itself, modified in place)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The transform's own extra state (not the per-parameter state)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        ...


@runtime_checkable
class Regularizer(Protocol):
    """A penalty R(theta) whose exact gradient is added to ``param.grad``.

    A regularizer supplies its gradient, not a loss term: the optimizer only
    sees gradients, so the user's loss (and a ``Trainer``'s ``compute_loss``)
    stays untouched, no autograd graph or activation memory is spent on the
    penalty, and closed forms (``2 lambda L dTheta``) are exact and cheap.
    ``value`` reports R for logging; it is never called inside ``step()``.
    """

    name: str
    params: Sequence[torch.Tensor]

    def init_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-parameter state, created once when the optimizer is built."""
        ...

    def grad(
        self, param: torch.Tensor, state: dict[str, torch.Tensor], **options: Any
    ) -> torch.Tensor:
        """dR/dparam, same shape as ``param``; no host synchronisation."""
        ...

    def value(self, param: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """R(param) as a 0-d tensor (for logging)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class UpdateTransform(Protocol):
    """Rewrites the base optimizer's update of each selected parameter, in order.

    After the base step the optimizer computes ``update = p_new - p_old`` for
    every parameter an update transform selects, passes it through the update
    transforms in order and sets ``p = p_old + update``. Same rules as
    :class:`GradientTransform`: ``torch.no_grad()``, the parameter's device, no
    host synchronisation; ``options`` are the per-group settings (param-group
    key ``"update_transforms"``). The optimizer keeps one copy of each selected
    parameter during a step (the memory of those parameters once more).
    """

    name: str
    params: Sequence[torch.Tensor]

    def init_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-parameter state, created once when the optimizer is built."""
        ...

    def transform_update(
        self,
        update: torch.Tensor,
        param: torch.Tensor,
        state: dict[str, torch.Tensor],
        **options: Any,
    ) -> torch.Tensor:
        """The new update (may be ``update`` itself, modified in place)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class StepCallback(Protocol):
    """Runs after every base step, under ``torch.no_grad()``."""

    def after_step(self, optimizer: GraphOptimizer) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
