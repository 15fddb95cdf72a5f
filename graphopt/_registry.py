"""The plugin registry: every method, graph, solver and penalty is found here.

Plugins are loaded lazily, on the first lookup, never at ``import graphopt``:

1. the built-in plugin modules in ``BUILTIN_PLUGINS`` (registered explicitly,
   through the same ``graphopt_register`` hook a third party implements);
2. every entry point of the ``graphopt`` group (``[project.entry-points.graphopt]``).

A plugin that fails to import or to register is reported (a ``PluginWarning``
naming it and the error) and skipped; with ``GRAPHOPT_STRICT_PLUGINS=1`` the
failure is raised instead. ``GRAPHOPT_DISABLE_PLUGINS=a,b`` skips the plugins
with those names (built-in or entry point); ``=all`` skips every entry point.
"""

from __future__ import annotations

import importlib
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from graphopt import hookspecs

ENTRY_POINT_GROUP = "graphopt"
STRICT_ENV = "GRAPHOPT_STRICT_PLUGINS"
DISABLE_ENV = "GRAPHOPT_DISABLE_PLUGINS"

KINDS: tuple[str, ...] = (
    "method",
    "graph",
    "eigensolver",
    "penalty",
    "ggm_solver",
    "transform",
    "response",
)
"""Kinds of registered things; ``Registry.add_kind`` adds more."""

BUILTIN_PLUGINS: tuple[str, ...] = (
    "graphopt.plugins.ggm_solvers",
    "graphopt.plugins.eigensolvers",
    "graphopt.plugins.graphs",
    "graphopt.plugins.responses",
    "graphopt.plugins.spectral",
    "graphopt.plugins.lora",
    "graphopt.plugins.linchain",
    "graphopt.plugins.pca_ggm",
)
"""Modules of graphopt's own plugins, registered like any entry point."""


class PluginError(RuntimeError):
    """A plugin failed to load or register (raised in strict mode)."""


class PluginWarning(UserWarning):
    """A plugin failed to load or register and was skipped."""


class UnknownNameError(KeyError, ValueError):
    """A lookup named something that is not registered."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


@dataclass(frozen=True)
class Entry:
    """One registered object and where it came from."""

    kind: str
    name: str
    obj: Any
    plugin: str
    distribution: str
    version: str


@dataclass(frozen=True)
class PluginSource:
    """A plugin to load: its name, how to import it and its distribution."""

    name: str
    load: Callable[[], Any]
    distribution: str
    version: str


class Registrar:
    """What ``graphopt_register`` receives: a registry bound to one plugin.

    Every ``add`` is recorded under the plugin's name, so a duplicate can name
    both plugins involved.
    """

    def __init__(self, registry: Registry, source: PluginSource) -> None:
        self._registry = registry
        self._source = source

    def add(self, kind: str, name: str, obj: Any) -> Any:
        """Register ``obj`` as ``kind`` under ``name``; returns ``obj``."""
        self._registry._add(kind, name, obj, self._source)
        return obj

    def add_kind(self, kind: str) -> None:
        """Declare a new kind of registered thing."""
        self._registry.add_kind(kind)


class Registry:
    """Registered methods, graphs, solvers, penalties, transforms and responses."""

    def __init__(
        self,
        builtins: tuple[str, ...] | None = None,
        entry_point_group: str = ENTRY_POINT_GROUP,
    ) -> None:
        self._builtins = BUILTIN_PLUGINS if builtins is None else builtins
        self._group = entry_point_group
        self._kinds: list[str] = list(KINDS)
        self._entries: dict[tuple[str, str], Entry] = {}
        self._failures: dict[str, str] = {}
        self._plugins: list[PluginSource] = []
        self._loaded = False
        self._lock = threading.RLock()
        self.pm = pluggy.PluginManager("graphopt")
        self.pm.add_hookspecs(hookspecs)

    # -- loading -----------------------------------------------------------------

    def load(self) -> None:
        """Load every plugin now (otherwise done on the first lookup)."""
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            disabled = _disabled_names()
            for source in self._sources(disabled):
                self._load_one(source)

    def _sources(self, disabled: set[str]) -> Iterator[PluginSource]:
        from graphopt import __version__

        for module in self._builtins:
            if module not in disabled:
                yield PluginSource(module, _importer(module), "graphopt", __version__)
        if "all" in disabled:
            return
        for ep in sorted(metadata.entry_points(group=self._group), key=lambda e: e.name):
            if ep.name in disabled:
                continue
            dist = ep.dist
            yield PluginSource(
                ep.name,
                ep.load,
                dist.metadata["Name"] if dist is not None else "?",
                dist.version if dist is not None else "?",
            )

    def _load_one(self, source: PluginSource) -> None:
        added_before = set(self._entries)
        try:
            plugin = source.load()
            if self.pm.is_registered(plugin):  # one module behind two names
                raise PluginError(f"module {plugin!r} is already registered")
            self.pm.register(plugin, name=source.name)
            for impl in self.pm.hook.graphopt_register.get_hookimpls():
                if impl.plugin is plugin:
                    impl.function(registry=Registrar(self, source))
        except Exception as err:
            for key in set(self._entries) - added_before:  # no half-registered plugin
                del self._entries[key]
            if self.pm.has_plugin(source.name):
                self.pm.unregister(name=source.name)
            message = (
                f"graphopt plugin {source.name!r} (distribution {source.distribution} "
                f"{source.version}) failed to load and was skipped: {type(err).__name__}: {err}"
            )
            if _strict():
                raise PluginError(message) from err
            self._failures[source.name] = f"{type(err).__name__}: {err}"
            warnings.warn(message, PluginWarning, stacklevel=3)
            return
        self._plugins.append(source)

    # -- registration ------------------------------------------------------------

    def add_kind(self, kind: str) -> None:
        """Declare a new kind (lowercase identifier); re-declaring is harmless."""
        _check_name("kind", kind)
        if kind not in self._kinds:
            self._kinds.append(kind)

    def _add(self, kind: str, name: str, obj: Any, source: PluginSource) -> None:
        self._check_kind(kind)
        _check_name("name", name)
        key = (kind, name)
        if key in self._entries:
            other = self._entries[key]
            raise PluginError(
                f"{kind} {name!r} is registered twice: by plugin {other.plugin!r} "
                f"({other.distribution}) and by plugin {source.name!r} ({source.distribution})"
            )
        self._entries[key] = Entry(
            kind, name, obj, source.name, source.distribution, source.version
        )

    def register(self, plugin: Any, name: str | None = None) -> None:
        """Register a plugin object at run time (e.g. in a notebook or a test).

        ``plugin`` is a module or object implementing ``graphopt_register``; it
        goes through the same path as an entry point.
        """
        self.load()
        label = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        with self._lock:
            self._load_one(PluginSource(label, lambda: plugin, "(runtime)", "-"))

    # -- lookup ------------------------------------------------------------------

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds that can be registered."""
        self.load()
        return tuple(self._kinds)

    def get(self, kind: str, name: str) -> Any:
        """The object registered as ``kind`` under ``name``.

        Raises ``UnknownNameError`` listing the registered names when there is
        no such object.
        """
        return self.entry(kind, name).obj

    def entry(self, kind: str, name: str) -> Entry:
        """The ``Entry`` (object and its origin) for ``kind``/``name``."""
        self.load()
        self._check_kind(kind)
        try:
            return self._entries[(kind, name)]
        except (KeyError, TypeError):
            available = ", ".join(repr(n) for n in self.names(kind)) or "none"
            raise UnknownNameError(
                f"unknown {kind} {name!r}; registered {kind}s: {available}"
            ) from None

    def names(self, kind: str) -> list[str]:
        """Sorted names registered under ``kind``."""
        self.load()
        self._check_kind(kind)
        return sorted(n for k, n in self._entries if k == kind)

    def entries(self, kind: str | None = None) -> list[Entry]:
        """Registered entries, sorted by kind order then name."""
        self.load()
        if kind is not None:
            self._check_kind(kind)
        order = {k: i for i, k in enumerate(self._kinds)}
        chosen = [e for e in self._entries.values() if kind is None or e.kind == kind]
        return sorted(chosen, key=lambda e: (order[e.kind], e.name))

    @property
    def failures(self) -> dict[str, str]:
        """Plugins that failed to load: name -> error."""
        self.load()
        return dict(self._failures)

    @property
    def plugins(self) -> list[PluginSource]:
        """Plugins loaded successfully, in load order."""
        self.load()
        return list(self._plugins)

    def _check_kind(self, kind: str) -> None:
        if kind not in self._kinds:
            raise UnknownNameError(
                f"unknown kind {kind!r}; kinds: {', '.join(repr(k) for k in self._kinds)}"
            )


def _importer(module: str) -> Callable[[], ModuleType]:
    return lambda: importlib.import_module(module)


def _check_name(what: str, value: object) -> None:
    if not isinstance(value, str) or not value or value != value.lower() or value.strip() != value:
        raise ValueError(f"{what} must be a non-empty lowercase string; got {value!r}")


def _strict() -> bool:
    return os.environ.get(STRICT_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _disabled_names() -> set[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return {part.strip() for part in raw.split(",") if part.strip()}


registry = Registry()
"""The process-wide registry that graphopt's functions look names up in."""
