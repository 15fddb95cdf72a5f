"""A spectral filter that keeps the gradient's norm, a graphopt ``transform`` plugin.

With the k lowest Laplacian modes (U, Lambda) of a parameter's row graph, the
spectral filter f(g) = U h(Lambda) U^T g + high_gain (g - U U^T g) smooths the
gradient g along the graph but also shrinks it, which changes the effective
learning rate. This transform keeps the direction of f(g) and the size of g:

    g <- f(g) ||g||_F / ||f(g)||_F     (0 when g = 0; ||f(g)|| is floored at eps ||g||).

The spectral method builds it as ``NormPreservingFilter(params, bases,
response=h, high_gain=..., accumulate_gradients=...)`` -- ``bases[i].vectors``
(n, k) and ``.values`` (k,) belong to ``params[i]`` -- and the optimizer calls
``transform(grad, param, state, **options)`` every step under ``torch.no_grad()``:
tensor arithmetic on the parameter's device, no host synchronisation. The
basis lives in the per-parameter ``state`` (so it is saved with the optimizer
and the gradient-feature refresh can replace it); with
``accumulate_gradients=True`` the state also holds ``gradient_sum``, to which
every raw gradient is added.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch


class NormPreservingFilter:
    """g <- f(g) ||g|| / ||f(g)|| with f the spectral low-pass filter (module docstring)."""

    name = "norm_preserving_filter"

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        bases: Sequence[Any],
        response: Callable[[torch.Tensor], torch.Tensor],
        high_gain: float = 0.0,
        accumulate_gradients: bool = False,
    ) -> None:
        if len(params) != len(bases):
            raise ValueError(f"got {len(params)} params but {len(bases)} bases")
        self.params = list(params)
        self._bases = dict(zip(self.params, bases, strict=True))
        self.response = response
        self.high_gain = _check_gain(high_gain)
        self.accumulate_gradients = accumulate_gradients

    def init_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        basis = self._bases[param]
        state = {"vectors": basis.vectors.clone(), "values": basis.values.clone()}
        if self.accumulate_gradients:
            state["gradient_sum"] = torch.zeros_like(param, dtype=basis.vectors.dtype)
        return state

    def transform(
        self,
        grad: torch.Tensor,
        param: torch.Tensor,
        state: dict[str, torch.Tensor],
        high_gain: float | None = None,
    ) -> torch.Tensor:
        gain = self.high_gain if high_gain is None else _check_gain(high_gain)
        vectors, values = state["vectors"], state["values"]
        g = grad.to(vectors.dtype).reshape(grad.shape[0], -1)
        if "gradient_sum" in state:
            state["gradient_sum"].add_(g.reshape(grad.shape))
        coefficients = vectors.T @ g
        filtered = gain * g + vectors @ ((self.response(values) - gain)[:, None] * coefficients)
        size = torch.linalg.vector_norm(g)
        floor = torch.finfo(g.dtype).eps * size
        scaled = filtered * (size / torch.maximum(torch.linalg.vector_norm(filtered), floor))
        scaled = torch.where(size > 0, scaled, torch.zeros_like(scaled))
        return scaled.reshape(grad.shape).to(grad.dtype)

    def state_dict(self) -> dict[str, Any]:
        return {"high_gain": self.high_gain}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.high_gain = _check_gain(state["high_gain"])


def _check_gain(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"high_gain must be a number in [0, 1]; got {value!r}")
    return float(value)
