"""A spectral filter that keeps the gradient's norm, a graphopt ``transform`` plugin.

With the k lowest Laplacian modes (U, Lambda) of a parameter's row graph, the
spectral filter f(g) = U h(Lambda) U^T g + high_gain (g - U U^T g) smooths the
gradient g along the graph but also shrinks it, which changes the effective
learning rate. This transform keeps the direction of f(g) and the size of g:

    g <- f(g) ||g||_F / ||f(g)||_F     (0 when g = 0; ||f(g)|| is floored at eps ||g||).

It reuses the built-in ``SpectralFilter`` for everything but the rescaling: the
constructor the spectral method calls (``params, bases, response=h,
high_gain=..., accumulate_gradients=...``), the per-parameter ``state`` holding
the basis (``vectors``, ``values``; ``gradient_sum`` with
``accumulate_gradients=True``, so the gradient-feature refresh works) and
``state_dict``. ``transform`` runs in every optimizer step under
``torch.no_grad()``: tensor arithmetic on the parameter's device, no host
synchronisation (the norms stay tensors).
"""

from __future__ import annotations

import torch

from graphopt.plugins.spectral import SpectralFilter


class NormPreservingFilter(SpectralFilter):
    """g <- f(g) ||g|| / ||f(g)|| with f the spectral low-pass filter (module docstring)."""

    name = "norm_preserving_filter"

    def transform(
        self,
        grad: torch.Tensor,
        param: torch.Tensor,
        state: dict[str, torch.Tensor],
        high_gain: float | None = None,
    ) -> torch.Tensor:
        size = torch.linalg.vector_norm(grad.to(state["vectors"].dtype))  # before grad is reused
        filtered = super().transform(grad, param, state, high_gain).to(size.dtype)
        floor = torch.finfo(size.dtype).eps * size
        scaled = filtered * (size / torch.maximum(torch.linalg.vector_norm(filtered), floor))
        scaled = torch.where(size > 0, scaled, torch.zeros_like(scaled))
        return scaled.to(grad.dtype)
