"""graphopt's spectral filter responses, as a plugin (kind ``response``).

Each entry is a factory: ``registry.get("response", "heat")(t=0.5)`` is the
callable l -> exp(-0.5 l) that ``spectral_filter`` takes.
"""

from __future__ import annotations

import graphopt
from graphopt._registry import Registrar
from graphopt.solvers import spectral


@graphopt.hookimpl
def graphopt_register(registry: Registrar) -> None:
    registry.add("response", "heat", spectral.heat)
    registry.add("response", "tikhonov", spectral.tikhonov)
    registry.add("response", "ideal", spectral.ideal)
