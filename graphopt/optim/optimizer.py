"""``GraphOptimizer``: any torch optimizer plus transforms, regularizers and callbacks.

One step (under ``torch.no_grad()``, on the parameters' device, with no host
synchronisation of its own)::

    loss = closure()                         # if given, with grad enabled
    for T in transforms:  g_p <- T(g_p)      # in order, for T's parameters
    for R in regularizers: g_p <- g_p + dR/dp
    p_old = p                                # only parameters of update transforms
    base.step()                              # AdamW by default
    for U in update_transforms: d_p <- U(d_p), d_p = p - p_old;  then p = p_old + d_p
    for C in callbacks: C.after_step(self)

The wrapper shares the base optimizer's ``param_groups``, ``state`` and
``defaults`` objects (properties, not copies), so LR schedulers, ``zero_grad``
and ``add_param_group`` act on the base exactly as they would without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from graphopt.optim.guard import exempt
from graphopt.optim.protocols import GradientTransform, Regularizer, StepCallback, UpdateTransform

if TYPE_CHECKING:
    from torch import nn

GROUP_KEYS = ("transforms", "regularizers", "update_transforms")
"""Param-group keys with the per-group settings of each kind (the kinds' own names)."""
STATE_KEY = "graphopt"
"""Key of ``state_dict()`` holding the transforms', regularizers' and callbacks' state."""

State = dict[str, torch.Tensor]


class GraphOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` running transforms and regularizers around a base optimizer.

    Args:
        params: parameters or param groups, as for any torch optimizer; ``None``
            when ``base`` is an optimizer instance (which already holds them).
        base: a ``torch.optim.Optimizer`` subclass (built with ``params`` and
            ``base_kwargs``) or an instance. Default ``torch.optim.AdamW``.
        transforms: :class:`GradientTransform` objects, applied in this order.
        regularizers: :class:`Regularizer` objects; their gradients are added
            after the transforms (so they are not filtered).
        update_transforms: :class:`UpdateTransform` objects, applied in this order
            to the base step's update ``p_new - p_old``.
        callbacks: :class:`StepCallback` objects, run after the base step and
            the update transforms.
        **base_kwargs: keyword arguments of ``base`` (``lr``, ``weight_decay``, ...).

    Per-group settings: a param group may carry ``"transforms"`` (and likewise
    ``"regularizers"``, ``"update_transforms"``): ``True``/absent = all apply to this
    group's parameters, ``False`` = none, a collection of names = only those, or a mapping
    ``name -> False | True | dict`` where a dict is passed as keyword options to
    ``transform(...)`` / ``grad(...)`` (e.g. ``{"spectral_filter": {"high_gain": 1.0}}``).

    Bases that re-evaluate the closure inside their step (``LBFGS``) are
    rejected: the transforms would not see those gradients.
    """

    def __init__(
        self,
        params: Iterable[Any] | None = None,
        base: type[torch.optim.Optimizer] | torch.optim.Optimizer = torch.optim.AdamW,
        transforms: Sequence[GradientTransform] = (),
        regularizers: Sequence[Regularizer] = (),
        callbacks: Sequence[StepCallback] = (),
        update_transforms: Sequence[UpdateTransform] = (),
        **base_kwargs: Any,
    ) -> None:
        self._base = _build_base(params, base, base_kwargs)
        self.transforms = _checked(transforms, GradientTransform, "transforms")
        self.regularizers = _checked(regularizers, Regularizer, "regularizers")
        self.update_transforms = _checked(update_transforms, UpdateTransform, "update_transforms")
        self.callbacks = _checked(callbacks, StepCallback, "callbacks")
        # torch.optim.Optimizer's own restore path installs the hook tables and the
        # profiled step without building param groups, which the base owns.
        super().__setstate__({})
        self._param_state: dict[str, list[dict[torch.Tensor, State]]] = {
            kind: [self._init_states(obj, kind) for obj in objects]
            for kind, objects in self._kinds()
        }

    # -- sharing the base's objects ------------------------------------------------------

    @property
    def base(self) -> torch.optim.Optimizer:
        """The wrapped optimizer."""
        return self._base

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self._base.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self._base.param_groups = value

    @property
    def state(self) -> Any:  # type: ignore[override]
        return self._base.state

    @state.setter
    def state(self, value: Any) -> None:
        self._base.state = value

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        return self._base.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self._base.defaults = value

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the base optimizer (the shared ``param_groups`` list)."""
        self._base.add_param_group(param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The base optimizer's ``zero_grad``."""
        self._base.zero_grad(set_to_none=set_to_none)

    # -- the step --------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Transforms, regularizer gradients, base step, update transforms, callbacks;
        returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = (
            {p: g for g in self.param_groups for p in g["params"]}
            if self.transforms or self.regularizers or self.update_transforms
            else {}
        )
        for transform, states in self._active("transforms", groups):
            for param, state, options in states:
                if param.grad is None:
                    continue
                new = transform.transform(param.grad, param, state, **options)
                if new is not param.grad:
                    param.grad.copy_(new)
        for regularizer, states in self._active("regularizers", groups):
            for param, state, options in states:
                if param.grad is not None:
                    param.grad.add_(regularizer.grad(param, state, **options))
        updated = self._active("update_transforms", groups)
        before = {param: param.detach().clone() for _, states in updated for param, _, _ in states}
        self._base.step()
        if updated:
            updates = {param: param - old for param, old in before.items()}
            for transform, states in updated:
                for param, state, options in states:
                    updates[param] = transform.transform_update(
                        updates[param], param, state, **options
                    )
            for param, old in before.items():
                param.copy_(old.add_(updates[param]))
        for callback in self.callbacks:
            callback.after_step(self)
        return loss

    def _active(
        self, kind: str, groups: Mapping[torch.Tensor, dict[str, Any]]
    ) -> list[tuple[Any, list[tuple[torch.Tensor, State, dict[str, Any]]]]]:
        """(object, [(param, state, options)]) of ``kind`` for the parameters it is on for
        (a kind's name is also its param-group key)."""
        active: list[tuple[Any, list[tuple[torch.Tensor, State, dict[str, Any]]]]] = []
        for obj, states in zip(dict(self._kinds())[kind], self._param_state[kind], strict=True):
            chosen = []
            for param, state in states.items():
                options = _options(groups, param, kind, obj.name)
                if options is not None:
                    chosen.append((param, state, options))
            if chosen:
                active.append((obj, chosen))
        return active

    def transform_state(
        self, transform: GradientTransform | Regularizer | UpdateTransform
    ) -> dict[torch.Tensor, State]:
        """The per-parameter state of one of this optimizer's transforms or regularizers
        (for an object in two lists, its first)."""
        for kind, objects in self._kinds():
            for obj, states in zip(objects, self._param_state[kind], strict=True):
                if obj is transform:
                    return states
        raise ValueError(f"transform {transform!r} is not one of this optimizer's")

    # -- state -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The base's state dict plus ``"graphopt"``: transform/regularizer/callback state.

        Parameters are numbered as torch numbers them (order within
        ``param_groups``); everything is tensors and plain values, so the result
        survives ``torch.save`` / ``torch.load(weights_only=True)``.
        """
        state = self._base.state_dict()
        index = self._param_index()
        state[STATE_KEY] = {
            kind: [
                {
                    "name": obj.name,
                    "state": {index[p]: dict(s) for p, s in states.items()},
                    "extra": obj.state_dict(),
                }
                for obj, states in zip(objects, self._param_state[kind], strict=True)
            ]
            for kind, objects in self._kinds()
        }
        state[STATE_KEY]["callbacks"] = [c.state_dict() for c in self.callbacks]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore ``state_dict()``; transform state moves to its parameter's device."""
        state_dict = dict(state_dict)
        extra = state_dict.pop(STATE_KEY, None)
        if extra is None:
            raise ValueError(
                f"state_dict has no {STATE_KEY!r} entry; it was not saved by a GraphOptimizer"
            )
        extra = {"update_transforms": [], **extra}  # saved before update transforms existed
        for kind, objects in (*self._kinds(), ("callbacks", self.callbacks)):
            names = [getattr(o, "name", type(o).__name__) for o in objects]
            if len(extra[kind]) != len(objects):
                raise ValueError(
                    f"state_dict holds {len(extra[kind])} {kind} but this optimizer has "
                    f"{len(objects)} ({names})"
                )
            if kind != "callbacks":
                saved = [entry["name"] for entry in extra[kind]]
                if saved != names:
                    raise ValueError(f"state_dict {kind} are {saved}; this optimizer has {names}")
        self._base.load_state_dict(state_dict)
        params = [p for g in self.param_groups for p in g["params"]]
        for kind, objects in self._kinds():
            for i, (obj, entry) in enumerate(zip(objects, extra[kind], strict=True)):
                self._param_state[kind][i] = {
                    params[idx]: {key: value.to(params[idx].device) for key, value in saved.items()}
                    for idx, saved in entry["state"].items()
                }
                obj.load_state_dict(entry["extra"])
        for callback, saved in zip(self.callbacks, extra["callbacks"], strict=True):
            callback.load_state_dict(saved)

    # -- construction from a model ---------------------------------------------------------

    @classmethod
    def for_model(
        cls,
        model: nn.Module,
        base: type[torch.optim.Optimizer] | torch.optim.Optimizer = torch.optim.AdamW,
        transforms: Sequence[GradientTransform] = (),
        regularizers: Sequence[Regularizer] = (),
        callbacks: Sequence[StepCallback] = (),
        params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]] | None = None,
        update_transforms: Sequence[UpdateTransform] = (),
        **base_kwargs: Any,
    ) -> GraphOptimizer:
        """An optimizer for ``model`` and every graphopt method applied to it.

        Trainable parameters are ``params`` when given (parameters or param groups,
        e.g. to give a classifier head its own learning rate), else the union of
        the methods' ``trainable_parameters`` (all ``requires_grad`` parameters
        when no method is applied); with ``base`` an optimizer instance, its own
        param groups (``params`` must then be None); the methods' transforms, regularizers, update
        transforms and callbacks come first, in the order the methods were
        applied, followed by the ones passed here.
        """
        from graphopt.methods import methods_of

        methods = methods_of(model)
        if isinstance(base, torch.optim.Optimizer):
            if params is not None:
                raise ValueError("params must be None when base is an optimizer instance")
        elif params is not None:
            params = list(params)
        elif methods:
            chosen: dict[int, torch.nn.Parameter] = {}
            for method in methods:
                for param in method.trainable_parameters(model).values():
                    chosen.setdefault(id(param), param)
            params = list(chosen.values())
        else:
            params = [p for p in model.parameters() if p.requires_grad]
        if params is not None and not params:
            raise ValueError("model has no trainable parameters to optimize")
        return cls(
            params,
            base=base,
            transforms=[t for m in methods for t in m.transforms(model)] + list(transforms),
            regularizers=[r for m in methods for r in m.regularizers(model)] + list(regularizers),
            update_transforms=[u for m in methods for u in m.update_transforms(model)]
            + list(update_transforms),
            callbacks=[c for m in methods for c in m.callbacks(model)] + list(callbacks),
            **base_kwargs,
        )

    # -- helpers ---------------------------------------------------------------------------

    def _kinds(self) -> tuple[tuple[str, list[Any]], ...]:
        """(state key, objects) of the kinds with per-parameter state."""
        return (
            ("transforms", self.transforms),
            ("regularizers", self.regularizers),
            ("update_transforms", self.update_transforms),
        )

    def _param_index(self) -> dict[torch.Tensor, int]:
        params = (p for g in self.param_groups for p in g["params"])
        return {p: i for i, p in enumerate(params)}

    def _init_states(
        self, obj: GradientTransform | Regularizer | UpdateTransform, kind: str
    ) -> dict[torch.Tensor, State]:
        known = self._param_index()
        states: dict[torch.Tensor, State] = {}
        for param in obj.params:
            if param not in known:
                sharded = any(_is_sharded(p) for p in known)
                raise ValueError(
                    f"{kind}: {obj.name!r} selects a parameter of shape {tuple(param.shape)} "
                    "that is in none of the optimizer's param groups"
                    + (
                        "; the model's parameters were replaced by sharded ones (FSDP2's "
                        f"fully_shard) after the method was applied, and {obj.name!r} needs "
                        "whole parameters: train this method with DDP"
                        if sharded
                        else ""
                    )
                )
            if _is_sharded(param) and not getattr(obj, "supports_sharded", False):
                raise ValueError(
                    f"{kind}: {obj.name!r} needs whole parameters, but one of shape "
                    f"{tuple(param.shape)} is sharded (FSDP2 DTensor); train this method with "
                    "DDP, or without sharding the parameters it selects"
                )
            states[param] = obj.init_state(param)
        return states

    def __repr__(self) -> str:
        names = [obj.name for _, objects in self._kinds() for obj in objects]
        return f"GraphOptimizer(base={type(self._base).__name__}, transforms={names})"


def _build_base(
    params: Iterable[Any] | None,
    base: type[torch.optim.Optimizer] | torch.optim.Optimizer,
    base_kwargs: dict[str, Any],
) -> torch.optim.Optimizer:
    if isinstance(base, torch.optim.Optimizer):
        if params is not None or base_kwargs:
            raise ValueError(
                "base is an optimizer instance, which already holds its parameters and "
                "settings; pass params=None and no base keyword arguments"
            )
        instance = base
    elif isinstance(base, type) and issubclass(base, torch.optim.Optimizer):
        if params is None:
            raise ValueError("params is required when base is an optimizer class")
        instance = base(params, **base_kwargs)
    else:
        raise ValueError(f"base must be a torch.optim.Optimizer subclass or instance; got {base!r}")
    if isinstance(instance, GraphOptimizer):
        raise ValueError("base must not itself be a GraphOptimizer; pass its transforms here")
    if isinstance(instance, torch.optim.LBFGS):
        raise ValueError(
            "base LBFGS re-evaluates the closure inside its step, where the transforms "
            "cannot see the gradients; use a first-order base optimizer"
        )
    exempt(instance)
    return instance


def _is_sharded(param: torch.Tensor) -> bool:
    """Whether ``param`` is a distributed tensor (FSDP2 shards parameters as DTensors)."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed
        return False
    return isinstance(param, DTensor)


def _checked(objects: Sequence[Any], protocol: type, name: str) -> list[Any]:
    objects = list(objects)
    for obj in objects:
        if not isinstance(obj, protocol):
            raise ValueError(
                f"{name} must be {protocol.__name__} objects; got {type(obj).__name__}, which "
                f"lacks one of the protocol's members"
            )
    if protocol is not StepCallback:
        names = [o.name for o in objects]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"{name} names must be unique; repeated: {duplicates}")
    return objects


def _options(
    groups: Mapping[torch.Tensor, dict[str, Any]], param: torch.Tensor, key: str, name: str
) -> dict[str, Any] | None:
    """The options for ``name`` in ``param``'s group; ``None`` when it is switched off there."""
    setting = groups[param].get(key, True)
    if setting is True or setting is None:
        return {}
    if setting is False:
        return None
    if isinstance(setting, Mapping):
        value = setting.get(name, True)
        if value is True:
            return {}
        if value is False:
            return None
        return dict(value)
    return {} if name in setting else None
