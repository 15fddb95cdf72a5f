"""graphopt's fine-tuning methods as plugins, one per method, registering names only.

Each method's module imports torch (and the adapter machinery), so the plugins
below name their objects by ``"module:attribute"`` reference
(``Registrar.add_lazy``): ``graphopt plugins``, ``graphopt --help`` and a name
check import none of them, and a method's module is imported on the first
``registry.get("method", name)``. ``BUILTIN_PLUGINS`` lists each object under
its short name, so ``GRAPHOPT_DISABLE_PLUGINS=lora`` leaves LoRA out.
"""

from __future__ import annotations

import graphopt
from graphopt._registry import Registrar


class LazyPlugin:
    """A plugin that registers every ``(kind, name)`` by the reference of its object."""

    def __init__(self, references: dict[tuple[str, str], str]) -> None:
        self.references = references

    @graphopt.hookimpl
    def graphopt_register(self, registry: Registrar) -> None:
        for (kind, name), reference in self.references.items():
            registry.add_lazy(kind, name, reference)

    def __repr__(self) -> str:
        names = ", ".join(f"{kind} {name!r}" for kind, name in self.references)
        return f"LazyPlugin({names})"


spectral = LazyPlugin(
    {
        ("method", "spectral"): "graphopt.plugins.spectral:SpectralMethod",
        ("transform", "spectral_filter"): "graphopt.plugins.spectral:SpectralFilter",
    }
)
lora = LazyPlugin({("method", "lora"): "graphopt.plugins.lora:Lora"})
linchain = LazyPlugin({("method", "linchain"): "graphopt.plugins.linchain:LinChain"})
pca_ggm = LazyPlugin({("method", "pca_ggm"): "graphopt.plugins.pca_ggm:PcaGgm"})
