"""graphopt: graph-structured solvers and optimizers for fine-tuning large models.

``import graphopt`` is cheap: plugins load on the first registry lookup and
heavy subpackages (solvers, methods, the optimizer) load when first used.
"""

from __future__ import annotations

__version__ = "0.1.0"

from graphopt._registry import (
    Entry,
    PluginError,
    PluginFailure,
    PluginWarning,
    Registry,
    UnknownNameError,
    registry,
)
from graphopt.hookspecs import hookimpl

_LAZY: dict[str, str] = {
    "apply": "graphopt.adapters",
    "export_peft": "graphopt.peft",
    "merge": "graphopt.adapters",
    "merge_and_unload": "graphopt.adapters",
    "unmerge": "graphopt.adapters",
    "save_adapter": "graphopt.adapters",
    "load_adapter": "graphopt.adapters",
    "methods_of": "graphopt.methods",
}
"""Public names imported on first access (module-level ``__getattr__``), keeping
``import graphopt`` free of torch."""


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'graphopt' has no attribute {name!r}")


__all__ = [
    "Entry",
    "PluginError",
    "PluginFailure",
    "PluginWarning",
    "Registry",
    "UnknownNameError",
    "__version__",
    "apply",
    "export_peft",
    "hookimpl",
    "load_adapter",
    "merge",
    "merge_and_unload",
    "methods_of",
    "registry",
    "save_adapter",
    "unmerge",
]
