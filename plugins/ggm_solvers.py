"""graphopt's GGM penalties and solvers, registered like any third-party plugin.

- ``penalty``: "l1" (``L1Penalty``), "l2p" (``L2pPenalty``): classes; the
  registry hands out the class and ``graphopt.ggm.solve`` instantiates it
  (with ``p=`` for "l2p").
- ``ggm_solver``: "newton", "admm", "bcd": callables
  ``solver(S, structure, penalty, lam, *, omega0, progress, warn, **options) -> GGMResult``.

Registered by reference: ``graphopt.solvers.ggm`` (torch) is imported on the
first lookup.
"""

from __future__ import annotations

import graphopt
from graphopt._registry import Registrar

GGM = "graphopt.solvers.ggm"


@graphopt.hookimpl
def graphopt_register(registry: Registrar) -> None:
    registry.add_lazy("penalty", "l1", f"{GGM}.penalties:L1Penalty")
    registry.add_lazy("penalty", "l2p", f"{GGM}.penalties:L2pPenalty")
    registry.add_lazy("ggm_solver", "newton", f"{GGM}.newton:newton")
    registry.add_lazy("ggm_solver", "admm", f"{GGM}.admm:admm")
    registry.add_lazy("ggm_solver", "bcd", f"{GGM}.bcd:bcd")
