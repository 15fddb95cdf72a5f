"""A warning, never silence, when a plain optimizer trains a graphopt method.

A method's transforms, regularizers, update transforms and step callbacks run
only inside ``GraphOptimizer.step``. A user who hands the parameters of a
``spectral`` or ``pca_ggm`` model to ``torch.optim.AdamW`` (directly or
through a ``transformers.Trainer``) would otherwise train something else
than they asked for without knowing. ``graphopt.apply`` registers the
parameters of every method that has such parts (``watch``); a process-wide
``torch.optim`` step pre-hook looks at each optimizer once, at its first
step, and warns naming what it skips. Base optimizers inside a
``GraphOptimizer`` are exempt (``exempt``).
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any

import torch

from graphopt.methods import Method

_watched: dict[int, tuple[weakref.ref, weakref.ref, weakref.ref]] = {}
"""id(parameter) -> (parameter, model, method), all weak."""
_seen: weakref.WeakSet = weakref.WeakSet()
"""Optimizers already looked at (each is checked at its first step only)."""
_handle: Any = None


class SkippedTransformsWarning(UserWarning):
    """A plain torch optimizer steps parameters whose graphopt method needs a GraphOptimizer."""


def optimizer_parts(method: Method, model: torch.nn.Module) -> list[str]:
    """Names of what ``GraphOptimizer`` runs for ``method``: its transforms, regularizers,
    update transforms and callbacks (empty for a method that needs none, e.g. LoRA)."""
    parts = [
        *method.transforms(model),
        *method.regularizers(model),
        *method.update_transforms(model),
        *method.callbacks(model),
    ]
    return list(dict.fromkeys(getattr(p, "name", type(p).__name__) for p in parts))


def watch(model: torch.nn.Module, method: Method) -> None:
    """Remember ``method``'s parameters if it has optimizer parts; install the hook once."""
    global _handle
    if not optimizer_parts(method, model):
        return
    model_ref, method_ref = weakref.ref(model), weakref.ref(method)
    for param in method.adapter_parameters(model).values():
        key = id(param)
        _watched[key] = (
            weakref.ref(param, lambda _, key=key: _watched.pop(key, None)),
            model_ref,
            method_ref,
        )
    if _handle is None:
        from torch.optim.optimizer import register_optimizer_step_pre_hook

        _handle = register_optimizer_step_pre_hook(_check)


def exempt(optimizer: torch.optim.Optimizer) -> None:
    """Never warn for ``optimizer`` (the base inside a ``GraphOptimizer``)."""
    _seen.add(optimizer)


def _check(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    if optimizer in _seen:
        return
    _seen.add(optimizer)
    from graphopt.optim.optimizer import GraphOptimizer

    if isinstance(optimizer, GraphOptimizer):
        return
    found: dict[int, tuple[Method, torch.nn.Module]] = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            refs = _watched.get(id(param))
            if refs is None or refs[0]() is not param:
                continue
            model, method = refs[1](), refs[2]()
            if model is not None and method is not None:
                found.setdefault(id(method), (method, model))
    for method, model in found.values():
        warnings.warn(
            f"{type(optimizer).__name__} steps the parameters of graphopt method "
            f"{method.name!r} directly, so its optimizer parts {optimizer_parts(method, model)} "
            "do not run: this is not the method you applied. Build the optimizer with "
            "graphopt.optim.GraphOptimizer.for_model(model) (it can wrap yours: base=optimizer) "
            "or train with graphopt.integrations.transformers.GraphoptTrainer",
            SkippedTransformsWarning,
            stacklevel=3,
        )
