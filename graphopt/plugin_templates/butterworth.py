"""A Butterworth low-pass response, a graphopt ``response`` plugin.

h(l) = 1 / (1 + (l / cutoff)^(2 order)) (Butterworth, "On the theory of filter
amplifiers", 1930; on graph spectra e.g. Shuman et al., IEEE Signal Processing
Magazine 30(3), 2013): flat near l = 0, h(cutoff) = 1/2, and steeper with the
order; the ideal low-pass is its limit as the order grows.

The spectral method calls ``butterworth(**response_options)`` once and the
returned h in every optimizer step on the k lowest Laplacian eigenvalues (a
1-D tensor on the parameters' device): h must be pure tensor arithmetic (no
``.item()``, no Python branching on values), keep the shape, dtype and device,
leave its input alone and give gains in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def butterworth(cutoff: float = 1.0, order: int = 2) -> Callable[[torch.Tensor], torch.Tensor]:
    """The response l -> 1 / (1 + (l / cutoff)^(2 order)), cutoff > 0, order >= 1."""
    if not isinstance(cutoff, (int, float)) or not 0 < cutoff < float("inf"):
        raise ValueError(f"cutoff must be a positive finite number; got {cutoff!r}")
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"order must be an integer >= 1; got {order!r}")

    def response(values: torch.Tensor) -> torch.Tensor:
        return 1.0 / (1.0 + (values.clamp_min(0) / cutoff) ** (2 * order))

    return response
