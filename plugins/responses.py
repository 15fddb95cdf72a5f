"""graphopt's spectral filter responses, as a plugin (kind ``response``).

Each entry is a factory: ``registry.get("response", "heat")(t=0.5)`` is the
callable l -> exp(-0.5 l) that ``spectral_filter`` takes. Registered by
reference (``graphopt.solvers.spectral`` imports torch on first lookup).
"""

from __future__ import annotations

import graphopt
from graphopt._registry import Registrar

SPECTRAL = "graphopt.solvers.spectral"


@graphopt.hookimpl
def graphopt_register(registry: Registrar) -> None:
    registry.add_lazy("response", "heat", f"{SPECTRAL}:heat")
    registry.add_lazy("response", "tikhonov", f"{SPECTRAL}:tikhonov")
    registry.add_lazy("response", "ideal", f"{SPECTRAL}:ideal")
