"""graphopt's GGM penalties and solvers, registered like any third-party plugin.

- ``penalty``: "l1" (``L1Penalty``), "l2p" (``L2pPenalty``): classes; the
  registry hands out the class and ``graphopt.ggm.solve`` instantiates it
  (with ``p=`` for "l2p").
- ``ggm_solver``: "newton", "admm", "bcd": callables
  ``solver(S, structure, penalty, lam, *, omega0, progress, warn, **options) -> GGMResult``.
"""

from __future__ import annotations

import graphopt
from graphopt.solvers.ggm import admm, bcd, newton
from graphopt.solvers.ggm.penalties import L1Penalty, L2pPenalty


@graphopt.hookimpl
def graphopt_register(registry: graphopt._registry.Registrar) -> None:
    registry.add("penalty", "l1", L1Penalty)
    registry.add("penalty", "l2p", L2pPenalty)
    registry.add("ggm_solver", "newton", newton)
    registry.add("ggm_solver", "admm", admm)
    registry.add("ggm_solver", "bcd", bcd)
