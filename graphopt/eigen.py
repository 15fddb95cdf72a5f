"""The k smallest eigenpairs of a Laplacian, with the solver chosen by plugins.

``smallest_eigenpairs`` is the registry-aware front of
``graphopt.solvers.eigen``: the solver is looked up by name among the
registered ``eigensolver`` entries (so a plugin can add one), and when no name
is given the ``graphopt_choose_eigensolver`` hook picks it (so a plugin can
change the policy; graphopt's measured default answers last).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from graphopt._registry import Registry
    from graphopt.solvers.eigen import EigenResult


def choose_eigensolver(
    n: int, nnz: int, k: int, device: str, registry: Registry | None = None
) -> str:
    """The eigensolver name the ``graphopt_choose_eigensolver`` hook answers.

    The implementations are asked in pluggy's order and the first registered
    eigensolver name wins. One that raises, or answers something that is not
    a registered eigensolver, is reported (a ``PluginWarning`` naming the
    plugin) and skipped, so a broken plugin cannot break every automatic
    choice; with ``GRAPHOPT_STRICT_PLUGINS=1`` it raises ``PluginError``.
    """
    from graphopt._registry import PluginError, PluginWarning, _strict

    registry = registry or _default_registry()
    registry.load()
    hook = registry.pm.hook.graphopt_choose_eigensolver
    arguments = {"n": n, "nnz": nnz, "k": k, "device": device}
    known = set(registry.names("eigensolver"))
    sources = {source.label: source for source in registry.plugins}
    for impl in reversed(hook.get_hookimpls()):  # the order pluggy calls them in
        if impl.hookwrapper or impl.wrapper:
            continue
        try:
            name = impl.function(*(arguments[key] for key in impl.argnames))
        except Exception as err:
            problem = f"raised {type(err).__name__}: {err}"
            error: Exception | None = err
        else:
            if name is None:
                continue
            if isinstance(name, str) and name in known:
                return name
            problem = f"answered {name!r}, which is not a registered eigensolver"
            error = None
        source = sources.get(impl.plugin_name)
        where = source.where if source else f"graphopt plugin {impl.plugin_name!r}"
        message = f"{where}: graphopt_choose_eigensolver {problem}; its answer is skipped"
        if _strict():
            raise PluginError(message) from error
        warnings.warn(message, PluginWarning, stacklevel=2)
    raise ValueError(
        f"no plugin chose an eigensolver for n={n}, nnz={nnz}, k={k}, device={device!r}"
    )


def smallest_eigenpairs(
    L: Any,
    k: int,
    method: str | None = None,
    *,
    registry: Registry | None = None,
    **options: Any,
) -> EigenResult:
    """The k smallest eigenpairs of symmetric ``L`` (torch, scipy sparse or numpy).

    ``method`` names a registered eigensolver (``graphopt plugins --kind
    eigensolver`` lists them); ``None`` asks the ``graphopt_choose_eigensolver``
    hook. ``options`` go to the solver. An unknown name raises
    ``UnknownNameError`` listing the choices.
    """
    from graphopt.solvers.eigen import problem_size

    registry = registry or _default_registry()
    if method is None:
        method = choose_eigensolver(*problem_size(L, k), registry=registry)
    solver = registry.get("eigensolver", method)
    return solver(L, k, **options)


def _default_registry() -> Registry:
    from graphopt import registry

    return registry
