"""graphopt's graph constructions, as a plugin (kind ``graph``)."""

from __future__ import annotations

import graphopt
from graphopt._registry import Registrar
from graphopt.solvers import graphs


@graphopt.hookimpl
def graphopt_register(registry: Registrar) -> None:
    registry.add("graph", "knn_cosine", graphs.knn_cosine)
    registry.add("graph", "gaussian", graphs.gaussian_kernel)
    registry.add("graph", "correlation_threshold", graphs.correlation_threshold)
    registry.add("graph", "partial_correlation", graphs.partial_correlation_graph)
