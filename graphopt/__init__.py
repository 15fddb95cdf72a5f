"""graphopt: graph-structured solvers and optimizers for fine-tuning large models.

``import graphopt`` is cheap: plugins load on the first registry lookup and
heavy subpackages (solvers, methods, the optimizer) load when first used.
"""

from __future__ import annotations

__version__ = "0.1.0"

from graphopt._registry import (
    Entry,
    PluginError,
    PluginWarning,
    Registry,
    UnknownNameError,
    registry,
)
from graphopt.hookspecs import hookimpl

__all__ = [
    "Entry",
    "PluginError",
    "PluginWarning",
    "Registry",
    "UnknownNameError",
    "__version__",
    "hookimpl",
    "registry",
]
