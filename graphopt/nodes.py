"""Turn a model's named parameters into node feature sets for a graph.

A graph construction (``graphopt.solvers.graphs``) takes an (n_nodes, d)
matrix whose rows are the nodes. This module makes such matrices from the
parameters named by a pattern (the same rule as ``target_modules``: a regular
expression full-matched against the parameter name, or a list of names /
name suffixes, as in PEFT):

- ``unit="rows"``: every row of a 2-D weight is a node (an output unit);
  the result is the weight itself (a view, no copy);
- ``unit="heads"``: a 2-D weight (num_heads * head_dim, d_in) whose rows
  are grouped by attention head: head h is the node
  W[h*head_dim:(h+1)*head_dim].flatten() (a view reshaped to (num_heads,
  head_dim * d_in));
- ``unit="tensor"``: every matching tensor, flattened, is one node; all of
  them together form a single set, named ``"tensors"``, and must have the
  same number of elements.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import torch
from torch import nn

from graphopt.adapters import check_patterns, name_matches

Unit = Literal["rows", "heads", "tensor"]
UNITS: tuple[str, ...] = ("rows", "heads", "tensor")


def node_features(
    parameters: nn.Module | Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
    patterns: Any,
    unit: Unit = "rows",
    *,
    num_heads: int | None = None,
) -> dict[str, torch.Tensor]:
    """Named (n_nodes, d) node feature matrices from the parameters matching ``patterns``.

    ``parameters`` is a model (its ``named_parameters()``), a mapping or
    (name, tensor) pairs. Views share storage with the parameters; detach
    them (``.detach()``) before building a graph from a trained tensor.
    Raises ``ValueError`` when nothing matches or a match has the wrong shape.
    """
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(map(repr, UNITS))}; got {unit!r}")
    if unit == "heads" and (
        isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1
    ):
        raise ValueError(f"num_heads must be a positive integer with unit='heads'; got {num_heads}")
    patterns = check_patterns(patterns, "patterns")
    named = _named(parameters)
    matches = {name: tensor for name, tensor in named.items() if name_matches(patterns, name)}
    if not matches:
        some = ", ".join(list(named)[:8]) or "none"
        raise ValueError(f"patterns {patterns!r} match no parameter; parameters include: {some}")
    if unit == "tensor":
        sizes = {name: tensor.numel() for name, tensor in matches.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"unit='tensor' needs tensors of one size; got {sizes}")
        return {"tensors": torch.stack([t.reshape(-1) for t in matches.values()])}
    sets = {}
    for name, tensor in matches.items():
        if tensor.ndim != 2:
            raise ValueError(
                f"unit={unit!r} needs 2-D weights; {name} has shape {tuple(tensor.shape)}"
            )
        if unit == "rows":
            sets[name] = tensor
            continue
        if tensor.shape[0] % num_heads:
            raise ValueError(
                f"{name} has {tensor.shape[0]} rows, not a multiple of num_heads={num_heads}"
            )
        sets[name] = tensor.reshape(num_heads, -1)
    return sets


def _named(parameters: Any) -> dict[str, torch.Tensor]:
    if isinstance(parameters, nn.Module):
        return dict(parameters.named_parameters())
    items = parameters.items() if isinstance(parameters, Mapping) else parameters
    named = dict(items)
    bad = [name for name, value in named.items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise ValueError(f"parameters must map names to tensors; not tensors: {bad[:5]}")
    return named
