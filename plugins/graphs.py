"""graphopt's graph constructions, as a plugin (kind ``graph``).

Registered by reference: ``graphopt.solvers.graphs`` (torch, scipy) is imported
on the first lookup of a graph, not when the registry loads.
"""

from __future__ import annotations

import graphopt
from graphopt._registry import Registrar

GRAPHS = "graphopt.solvers.graphs"


@graphopt.hookimpl
def graphopt_register(registry: Registrar) -> None:
    registry.add_lazy("graph", "knn_cosine", f"{GRAPHS}:knn_cosine")
    registry.add_lazy("graph", "gaussian", f"{GRAPHS}:gaussian_kernel")
    registry.add_lazy("graph", "correlation_threshold", f"{GRAPHS}:correlation_threshold")
    registry.add_lazy("graph", "partial_correlation", f"{GRAPHS}:partial_correlation_graph")
