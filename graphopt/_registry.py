"""The plugin registry: every method, graph, solver and penalty is found here.

Plugins are loaded on the first lookup, never at ``import graphopt``:

1. graphopt's own plugins, ``BUILTIN_PLUGINS`` (registered through the same
   ``graphopt_register`` hook a third party implements);
2. every entry point of the ``graphopt`` group (``[project.entry-points.graphopt]``).

A plugin registers names, not necessarily objects: ``add_lazy(kind, name,
"package.module:attribute")`` names where the object lives, and that module
is imported on the first ``get`` of the name. graphopt's built-ins register
this way, so listing the registry (``graphopt plugins``) or checking a name
imports neither torch nor transformers.

A plugin that fails to import or to register (any exception, ``SystemExit``
included; not ``KeyboardInterrupt``) is reported (a ``PluginWarning`` naming
it, its distribution and the error) and skipped; with
``GRAPHOPT_STRICT_PLUGINS=1`` the failure is raised instead.
``GRAPHOPT_DISABLE_PLUGINS=a,b`` skips the plugins with those names (an entry
point's name, or a built-in's short name such as ``lora``); ``=all`` skips
every entry point.
"""

from __future__ import annotations

import importlib
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
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

BUILTIN_PLUGINS: dict[str, str] = {
    "ggm_solvers": "graphopt.plugins.ggm_solvers",
    "eigensolvers": "graphopt.plugins.eigensolvers",
    "graphs": "graphopt.plugins.graphs",
    "responses": "graphopt.plugins.responses",
    "spectral": "graphopt.plugins.methods:spectral",
    "lora": "graphopt.plugins.methods:lora",
    "linchain": "graphopt.plugins.methods:linchain",
    "pca_ggm": "graphopt.plugins.methods:pca_ggm",
}
"""graphopt's own plugins: short name -> ``"module[:attribute]"`` of the plugin
object, the form an entry point's value takes. The short name is what
``GRAPHOPT_DISABLE_PLUGINS`` and ``graphopt plugins`` call the plugin."""

_REFERENCE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class PluginError(RuntimeError):
    """A plugin failed to load or register (strict mode), or a registered
    reference could not be imported on lookup."""


class PluginWarning(UserWarning):
    """A plugin failed to load or register and was skipped."""


class UnknownNameError(KeyError, ValueError):
    """A lookup named something that is not registered."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class LazyReference:
    """An object named by where it lives, ``"package.module:attribute.path"``,
    imported on the first ``resolve()`` and kept from then on."""

    def __init__(self, reference: str) -> None:
        if not isinstance(reference, str) or not _REFERENCE.match(reference):
            raise ValueError(
                f"reference must look like 'package.module:attribute'; got {reference!r}"
            )
        self.reference = reference
        self._value: Any = None
        self._resolved = False

    def resolve(self) -> Any:
        """Import the module and return the attribute."""
        if not self._resolved:
            module, _, attribute = self.reference.partition(":")
            value: Any = importlib.import_module(module)
            for part in attribute.split("."):
                value = getattr(value, part)
            self._value, self._resolved = value, True
        return self._value

    def __repr__(self) -> str:
        return f"LazyReference({self.reference!r})"


@dataclass(frozen=True)
class Entry:
    """One registered object and where it came from.

    ``obj`` is the object itself; for a name registered with ``add_lazy`` the
    first access imports it (a failing import raises ``PluginError`` naming the
    entry, its plugin and distribution). ``reference`` says where the object
    lives (``"module:attribute"``) without importing anything.
    """

    kind: str
    name: str
    plugin: str
    distribution: str
    version: str
    target: Any = field(repr=False, compare=False)

    @property
    def lazy(self) -> bool:
        """Whether the entry was registered by reference (``add_lazy``)."""
        return isinstance(self.target, LazyReference)

    @property
    def reference(self) -> str:
        """``"module:attribute"`` of the object (as registered, or read off the object)."""
        if isinstance(self.target, LazyReference):
            return self.target.reference
        module = getattr(self.target, "__module__", None)
        qualname = getattr(self.target, "__qualname__", None)
        if module and qualname:
            return f"{module}:{qualname}"
        return f"<{type(self.target).__name__} object>"

    @property
    def obj(self) -> Any:
        """The registered object (imported now when registered by reference)."""
        if not isinstance(self.target, LazyReference):
            return self.target
        try:
            return self.target.resolve()
        except KeyboardInterrupt:
            raise
        except BaseException as err:
            raise PluginError(
                f"{self.kind} {self.name!r} of graphopt plugin {self.plugin!r} (distribution "
                f"{self.distribution} {self.version}) could not be imported from "
                f"{self.target.reference!r}: {type(err).__name__}: {err}"
            ) from err


@dataclass(frozen=True)
class PluginSource:
    """A plugin to load: its name, how to import it and its distribution."""

    name: str
    load: Callable[[], Any]
    distribution: str
    version: str

    @property
    def label(self) -> str:
        """``"name (distribution version)"``: how pluggy names the plugin."""
        return f"{self.name} ({self.distribution} {self.version})"

    @property
    def where(self) -> str:
        """How messages name the plugin: its name and the distribution to uninstall."""
        return f"graphopt plugin {self.name!r} (distribution {self.distribution} {self.version})"


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that failed to load: its name, distribution and the error."""

    plugin: str
    distribution: str
    version: str
    error: str


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

    def add_lazy(self, kind: str, name: str, reference: str) -> None:
        """Register the object at ``reference`` (``"package.module:attribute"``) as
        ``kind`` under ``name``, without importing it: the module is imported on the
        first ``get``. The way to keep a plugin whose objects import torch (or
        anything heavy) from slowing down every ``graphopt`` command."""
        self._registry._add(kind, name, LazyReference(reference), self._source)

    def add_kind(self, kind: str) -> None:
        """Declare a new kind of registered thing."""
        self._registry.add_kind(kind)


class Registry:
    """Registered methods, graphs, solvers, penalties, transforms and responses."""

    def __init__(
        self,
        builtins: Mapping[str, str] | Sequence[str] | None = None,
        entry_point_group: str = ENTRY_POINT_GROUP,
    ) -> None:
        """``builtins``: the plugins loaded before entry points, name -> ``"module[:attribute]"``
        (default ``BUILTIN_PLUGINS``); a sequence of references names each by its last
        component (``"graphopt.plugins.graphs"`` -> ``graphs``)."""
        builtins = BUILTIN_PLUGINS if builtins is None else builtins
        if not isinstance(builtins, Mapping):
            builtins = {re.split(r"[.:]", ref)[-1]: ref for ref in builtins}
        self._builtins = dict(builtins)
        self._group = entry_point_group
        self._kinds: list[str] = list(KINDS)
        self._entries: dict[tuple[str, str], Entry] = {}
        self._failures: list[PluginFailure] = []
        self._plugins: list[PluginSource] = []
        self._disabled: list[PluginSource] = []
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
                if source.name in disabled:
                    self._disabled.append(source)
                else:
                    self._load_one(source)

    def _sources(self, disabled: set[str]) -> Iterator[PluginSource]:
        from graphopt import __version__

        for name, reference in self._builtins.items():
            yield PluginSource(name, _importer(reference), "graphopt", __version__)
        if "all" in disabled:
            return
        for ep in sorted(metadata.entry_points(group=self._group), key=lambda e: e.name):
            dist = ep.dist
            yield PluginSource(
                ep.name,
                ep.load,
                dist.metadata["Name"] if dist is not None else "?",
                dist.version if dist is not None else "?",
            )

    def _load_one(self, source: PluginSource) -> None:
        added_before = set(self._entries)
        plugin: Any = None
        registered = False
        try:
            plugin = source.load()
            if self.pm.is_registered(plugin):  # one module behind two names
                raise PluginError(f"{plugin!r} is already registered")
            self.pm.register(plugin, name=source.label)
            registered = True
            _check_hooks(self.pm.get_hookcallers(plugin) or [])
            for impl in self.pm.hook.graphopt_register.get_hookimpls():
                if impl.plugin is plugin:
                    impl.function(registry=Registrar(self, source))
        except KeyboardInterrupt:
            raise
        except BaseException as err:  # SystemExit too: a plugin must not end the process
            for key in set(self._entries) - added_before:  # no half-registered plugin
                del self._entries[key]
            if registered:
                self.pm.unregister(plugin)
            self._fail(source, err)
            return
        self._plugins.append(source)

    def _fail(self, source: PluginSource, err: BaseException) -> None:
        error = f"{type(err).__name__}: {err}"
        where = source.where
        if _strict():
            raise PluginError(
                f"{where} raised {error} while loading; {STRICT_ENV} is set, so this is an "
                f"error (unset it to skip the plugin with a warning)"
            ) from err
        remedy = f"set {DISABLE_ENV}={source.name} to stop loading it"
        if source.distribution not in {"graphopt", "(runtime)", "?"}:
            remedy += f", or uninstall it: pip uninstall {source.distribution}"
        self._failures.append(
            PluginFailure(source.name, source.distribution, source.version, error)
        )
        warnings.warn(
            f"{where} failed to load and was skipped: {error} ({remedy})",
            PluginWarning,
            stacklevel=4,
        )

    # -- registration ------------------------------------------------------------

    def add_kind(self, kind: str) -> None:
        """Declare a new kind (lowercase identifier); re-declaring is harmless."""
        _check_name("kind", kind)
        if kind not in self._kinds:
            self._kinds.append(kind)

    def _add(self, kind: str, name: str, target: Any, source: PluginSource) -> None:
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
            kind, name, source.name, source.distribution, source.version, target
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
        """The object registered as ``kind`` under ``name`` (imported now if it was
        registered by reference).

        Raises ``UnknownNameError`` listing the registered names when there is
        no such object, ``PluginError`` when its module fails to import.
        """
        return self.entry(kind, name).obj

    def entry(self, kind: str, name: str) -> Entry:
        """The ``Entry`` (origin, and the object on ``.obj``) for ``kind``/``name``;
        imports nothing."""
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
    def failures(self) -> list[PluginFailure]:
        """Plugins that failed to load and were skipped, in load order."""
        self.load()
        return list(self._failures)

    @property
    def plugins(self) -> list[PluginSource]:
        """Plugins loaded successfully, in load order."""
        self.load()
        return list(self._plugins)

    @property
    def disabled(self) -> list[PluginSource]:
        """Plugins skipped by name through ``GRAPHOPT_DISABLE_PLUGINS``."""
        self.load()
        return list(self._disabled)

    def _check_kind(self, kind: str) -> None:
        if kind not in self._kinds:
            raise UnknownNameError(
                f"unknown kind {kind!r}; kinds: {', '.join(repr(k) for k in self._kinds)}"
            )


def _importer(reference: str) -> Callable[[], Any]:
    """Loads ``"module"`` (the module itself) or ``"module:attribute"``."""
    if ":" in reference:
        return LazyReference(reference).resolve
    return lambda: importlib.import_module(reference)


def _check_hooks(callers: list[pluggy.HookCaller]) -> None:
    """A plugin implements at least one hook, and only hooks that exist (a
    misspelt or undecorated ``graphopt_register`` would register nothing, silently)."""
    unknown = sorted(c.name for c in callers if not c.has_spec())
    known = ", ".join(name for name in vars(hookspecs) if name.startswith("graphopt_"))
    if unknown:
        raise PluginError(f"implements hooks that do not exist: {unknown}; hooks: {known}")
    if not callers:
        raise PluginError(
            f"implements no hook: mark its graphopt_register with @graphopt.hookimpl "
            f"(hooks: {known})"
        )


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
