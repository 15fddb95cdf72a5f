"""Spectral parameter coordination [SPEC] as a graphopt method.

Zhang et al., "Graph-Based Spectral Decomposition for Parameter Coordination
in Language Model Fine-Tuning" (arXiv 2504.19583, 2025), section 3: the
parameters are nodes of a weighted graph with Laplacian L = D - W = U Lambda U^T;
training minimises L_task + lambda L_spec and a spectral filter adjusts the
gradients; no trainable parameters are added.

Here (design choices, each pluggable; see ``docs/methods/spectral.md``):

* node = an output unit of a target parameter: a row of an ``nn.Linear`` weight
  or of an adapter's output factor (what an adapted layer names in
  ``output_factor``: LoRA's ``lora_B``, pca_ggm's ``A``), a column of a GPT-2
  ``Conv1D`` weight (stored (in, out)); edges = the registered graph
  construction (default 10-NN cosine) on the pretrained rows, or on gradient
  rows accumulated between basis refreshes (``features="gradients"``);
* the k lowest modes (U_k, Lambda_k) from ``graphopt.eigen.smallest_eigenpairs``;
* ``where="gradient"`` ([SPEC]): the filter g <- U_k h(Lambda_k) U_k^T g +
  high_gain (g - U_k U_k^T g) before the base step, and the regularizer
  L_spec = tr(dTheta^T L dTheta), dTheta = Theta - Theta0, by its exact gradient
  2 lambda L dTheta;
* ``where="update"``: the same filter on the base optimizer's update
  p_new - p_old, where Adam's per-coordinate scaling cannot undo it, and the
  Dirichlet energy as the proximal map of the update, d <- (I + 2 lambda L)^-1 d.

The optimizer pieces live in ``graphopt.plugins.spectral_optim``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import graphopt
from graphopt.methods import Method, MethodConfig, methods_of
from graphopt.plugins.spectral_optim import (
    BasisRefresh,
    DirichletProximal,
    DirichletRegularizer,
    SpectralBasis,
    SpectralFilter,
    check_gain,
    node_matrix,
    spectral_basis,
)
from graphopt.solvers.validation import check_int_in_range, check_positive

__all__ = ["SpectralBasis", "SpectralConfig", "SpectralFilter", "SpectralMethod", "spectral_basis"]

FEATURES = ("weights", "gradients")
"""Where the node features of the parameter graph come from."""
PLACES = ("gradient", "update")
"""Where the filter and the Dirichlet term act: on the gradient before the base step
(as in [SPEC]) or on the base step's update."""


@dataclass
class SpectralConfig(MethodConfig):
    """Settings of spectral parameter coordination (defaults and why: docs/methods/spectral.md).

    Attributes:
        parameters: names of the parameters of each target module to coordinate;
            ``None``: an adapted layer's ``output_factor``, else ``weight``.
        k: number of lowest Laplacian modes per parameter (must be < its rows).
        graph: registered graph construction (kind ``graph``) over the node rows.
        graph_options: keyword arguments of the graph construction; empty by
            default, so each graph runs with its own defaults (``knn_cosine``: k = 10).
        features: ``"weights"`` (pretrained rows) or ``"gradients"`` (gradient
            rows accumulated over ``refresh_every`` steps, then the basis is rebuilt).
        refresh_every: steps between basis refreshes when ``features="gradients"``.
        laplacian: ``"combinatorial"`` (L = D - W, as in [SPEC]), ``"symmetric"``
            or ``"random_walk"``.
        eigensolver: registered eigensolver name; ``None`` lets graphopt choose.
        transform: registered filter (kind ``transform``) built from the bases, or
            ``None`` for no filter; ``where="update"`` needs its ``transform_update``.
        response: registered filter response (kind ``response``).
        response_options: keyword arguments of the response (e.g. ``{"t": 0.1}``).
        high_gain: gain in [0, 1] of the filtered tensor outside the k lowest modes.
        dirichlet_weight: lambda of the Dirichlet regularizer; 0 switches it off.
        where: ``"gradient"`` (filter and regularizer act on the gradient before
            the base step, [SPEC]) or ``"update"`` (on the base step's update).
    """

    parameters: list[str] | None = None
    k: int = 32
    graph: str = "knn_cosine"
    graph_options: dict[str, Any] = field(default_factory=dict)
    features: str = "weights"
    refresh_every: int = 100
    laplacian: str = "combinatorial"
    eigensolver: str | None = None
    transform: str | None = "spectral_filter"
    response: str = "heat"
    response_options: dict[str, Any] = field(default_factory=lambda: {"t": 0.1})
    high_gain: float = 0.5
    dirichlet_weight: float = 0.0
    where: str = "gradient"


# -- the method -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One coordinated parameter: its name in the model and its node axis."""

    name: str
    node_axis: int


class SpectralMethod(Method):
    """Spectral parameter coordination: trains the target parameters themselves, with a
    spectral filter and/or the Dirichlet energy of the update, on the gradient or on
    the base optimizer's update (``where``)."""

    name = "spectral"
    config_class = SpectralConfig
    adds_parameters = False
    identity_at_init = True
    config: SpectralConfig

    def __init__(self, config: SpectralConfig) -> None:
        super().__init__(config)
        _validate_config(config)
        self._targets: list[Target] = []
        self._bases: dict[str, SpectralBasis] = {}
        self._theta0: dict[str, torch.Tensor] = {}
        self._parts: dict[str, list[Any]] | None = None

    def validate(self, targets: dict[str, nn.Module]) -> None:
        for module_name, module in targets.items():
            for name, axis in _target_parameters(module, self.config.parameters, module_name):
                param = module.get_parameter(name)
                full = f"{module_name}.{name}" if module_name else name
                shape = tuple(param.shape)
                if len(shape) < 2:
                    raise ValueError(
                        f"spectral coordinates the output units of a matrix; {full} has "
                        f"shape {shape}"
                    )
                if self.config.k >= shape[axis]:
                    raise ValueError(
                        f"k must be < the number of nodes (output units) of every target; "
                        f"{full} has shape {shape}, {shape[axis]} nodes along axis {axis}, "
                        f"and k = {self.config.k}"
                    )

    def apply(self, model: nn.Module, targets: dict[str, nn.Module]) -> None:
        self.validate(targets)
        keep_theta0 = self.config.dirichlet_weight > 0 and self.config.where == "gradient"
        chosen: list[tuple[Target, SpectralBasis]] = []
        for module_name, module in targets.items():
            for name, axis in _target_parameters(module, self.config.parameters, module_name):
                full = f"{module_name}.{name}" if module_name else name
                param = model.get_parameter(full)
                features = _node_features(model, full, param, axis)
                try:
                    basis = spectral_basis(features, self.config, _basis_dtype(param))
                except ValueError as err:
                    raise ValueError(f"parameter graph of {full!r}: {err}") from err
                chosen.append((Target(full, axis), basis))
        check_masks_commute(model, [target for target, _ in chosen])
        for target, basis in chosen:
            self._targets.append(target)
            self._bases[target.name] = basis
            if keep_theta0:
                self._theta0[target.name] = model.get_parameter(target.name).detach().clone()

    def adapter_parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        return {t.name: model.get_parameter(t.name) for t in self._targets}

    def num_trainable_parameters(self, model: nn.Module) -> int:
        """sum over targets of their entries (the target parameters themselves)."""
        return sum(math.prod(model.get_parameter(t.name).shape) for t in self._targets)

    def plot(self, model: nn.Module, folder: Path) -> list[Path]:
        """``spectral_spectrum.png``: the k lowest Laplacian eigenvalues of every target
        parameter's graph as built at ``apply``, one panel per layer type (the name
        without its layer index), one labelled line per layer."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure = spectrum_figure({name: b.values.cpu() for name, b in self._bases.items()})
        path = Path(folder) / "spectral_spectrum.png"
        figure.savefig(path, dpi=120)
        plt.close(figure)
        return [path]

    def transforms(self, model: nn.Module) -> list[Any]:
        return self._optimizer_parts(model)["transforms"]

    def regularizers(self, model: nn.Module) -> list[Any]:
        return self._optimizer_parts(model)["regularizers"]

    def update_transforms(self, model: nn.Module) -> list[Any]:
        return self._optimizer_parts(model)["update_transforms"]

    def callbacks(self, model: nn.Module) -> list[Any]:
        return self._optimizer_parts(model)["callbacks"]

    def merge(self, model: nn.Module) -> None:
        """Nothing to fold: the target weights are trained in place."""
        self.merged = True

    def unmerge(self, model: nn.Module) -> None:
        """Nothing to unfold (see ``merge``)."""
        self.merged = False

    def _optimizer_parts(self, model: nn.Module) -> dict[str, list[Any]]:
        """Built once, so the refresh callback and the optimizer share the same objects.
        Checks again, on every call, that every method's masks commute with the filter
        (a masking method may have been applied after this one)."""
        check_masks_commute(model, self._targets)
        if self._parts is None:
            config = self.config
            params = [model.get_parameter(t.name) for t in self._targets]
            bases = [self._bases[t.name] for t in self._targets]
            axes = [t.node_axis for t in self._targets]
            on_update = config.where == "update"
            parts: dict[str, list[Any]] = {
                "transforms": [],
                "regularizers": [],
                "update_transforms": [],
                "callbacks": [],
            }
            spectral_filter = None
            if config.transform is not None:
                response = graphopt.registry.get("response", config.response)(
                    **config.response_options
                )
                spectral_filter = graphopt.registry.get("transform", config.transform)(
                    params,
                    bases,
                    response=response,
                    high_gain=config.high_gain,
                    accumulate_gradients=config.features == "gradients",
                    node_axes=axes,
                )
                parts["update_transforms" if on_update else "transforms"].append(spectral_filter)
            dirichlet: list[Any] = []
            if config.dirichlet_weight > 0 and on_update:
                dirichlet.append(DirichletProximal(params, bases, config.dirichlet_weight, axes))
                parts["update_transforms"] += dirichlet
            elif config.dirichlet_weight > 0:
                theta0 = [self._theta0[t.name] for t in self._targets]
                dirichlet.append(
                    DirichletRegularizer(params, bases, theta0, config.dirichlet_weight, axes)
                )
                parts["regularizers"] += dirichlet
            if config.features == "gradients":
                parts["callbacks"].append(BasisRefresh(spectral_filter, dirichlet, config))
            self._parts = parts
        return self._parts


# -- targets and node features ----------------------------------------------------------------


def _target_parameters(
    module: nn.Module, names: list[str] | None, module_name: str
) -> list[tuple[str, int]]:
    """(parameter name relative to ``module``, node axis) of each coordinated parameter."""
    if names is None:
        factor = getattr(module, "output_factor", None)
        names = [factor] if isinstance(factor, str) else ["weight"]
    own = dict(module.named_parameters())
    chosen = []
    for name in names:
        if name not in own:
            raise ValueError(
                f"target module {module_name!r} has no parameter {name!r}; "
                f"its parameters: {sorted(own) or 'none'}"
            )
        owner = module.get_submodule(name.rpartition(".")[0])
        is_weight = name.rpartition(".")[2] == "weight"
        chosen.append((name, weight_node_axis(owner) if is_weight else 0))
    return chosen


def weight_node_axis(layer: nn.Module) -> int:
    """The axis of ``layer.weight`` that indexes output units: 1 for a transformers
    ``Conv1D`` (weight (in, out), y = x W + b), else 0 (``nn.Linear``: (out, in))."""
    from transformers.pytorch_utils import Conv1D

    return 1 if isinstance(layer, Conv1D) else 0


def _node_features(model: nn.Module, name: str, param: torch.Tensor, axis: int) -> torch.Tensor:
    """The rows the graph is built on, (n, m): ``param``'s own node matrix or, when it is
    all zero (a zero-initialised adapter factor such as LoRA's B), the node matrix of
    the frozen weight of the layer it adapts: the ``base_layer`` of the nearest
    enclosing module that has one (graphopt's adapted layers and PEFT's LoRA layers
    both keep it there), whose output units are the factor's nodes."""
    rows = node_matrix(param.detach(), axis)
    if bool(rows.any()):
        return rows
    for ancestor in _ancestors(model, name):
        base = getattr(ancestor, "base_layer", None)
        weight = getattr(base, "weight", None)
        if isinstance(base, nn.Module) and isinstance(weight, torch.Tensor):
            base_rows = node_matrix(weight.detach(), weight_node_axis(base))
            if base_rows.shape[0] != rows.shape[0]:
                raise ValueError(
                    f"cannot build a parameter graph for {name!r}: it is all zero, and the "
                    f"frozen layer it adapts has {base_rows.shape[0]} output units, not "
                    f"{rows.shape[0]}"
                )
            return base_rows
    raise ValueError(
        f"cannot build a parameter graph for {name!r} (shape {tuple(param.shape)}): it is "
        "all zero and no enclosing module has a base_layer whose rows could stand in"
    )


def _ancestors(model: nn.Module, name: str) -> Iterator[nn.Module]:
    """The modules enclosing parameter ``name``, nearest first, the model last."""
    parts = name.split(".")[:-1]
    for depth in range(len(parts), -1, -1):
        yield model.get_submodule(".".join(parts[:depth]))


def _basis_dtype(param: torch.Tensor) -> torch.dtype:
    """float64/float32 parameters keep their dtype; half precision ones get a float32 basis."""
    return param.dtype if param.dtype in (torch.float32, torch.float64) else torch.float32


def check_masks_commute(model: nn.Module, targets: list[Target]) -> None:
    """Raise unless every mask a method of ``model`` puts on a target is constant along the
    target's node axis (e.g. pca_ggm's masks of whole components, the columns of ``A``).

    The filter and the Dirichlet terms mix entries along the node axis only, within
    each column; such a mask therefore commutes with them, and the entries it freezes
    stay exactly where they are whatever order the optimizer applies the two in."""
    by_id = {id(model.get_parameter(t.name)): t for t in targets}
    for method in methods_of(model):
        for name, mask in method.parameter_masks(model).items():
            param = model.get_parameter(name)
            target = by_id.get(id(param))
            if target is None:
                continue
            aligned = (1,) * (param.ndim - mask.ndim) + tuple(mask.shape)
            if aligned[target.node_axis] != 1:
                raise ValueError(
                    f"method {method.name!r} masks {name!r} with a mask of shape "
                    f"{tuple(mask.shape)} that varies along the node axis {target.node_axis} "
                    "of spectral's graph; the filter would move entries that mask freezes"
                )


# -- the spectrum plot ------------------------------------------------------------------------

_LAYER_INDEX = re.compile(r"\.(\d+)\.")


def layer_groups(names: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Parameter names grouped by layer type: ``{type: [(layer label, name)]}``.

    The type is the name after its first numeric part (``layer.3.attention.self.query
    .lora_B.weight`` -> ``attention.self.query.lora_B``, label ``layer 3``); a name
    without one is its own type, labelled by itself."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for name in names:
        match = _LAYER_INDEX.search(name)
        if match is None:
            kind, label = name.removesuffix(".weight"), name
        else:
            kind = name[match.end() :].removesuffix(".weight")
            label = f"{name[: match.start()].rpartition('.')[2] or 'layer'} {match.group(1)}"
        groups.setdefault(kind, []).append((label, name))
    return groups


def spectrum_figure(values: dict[str, torch.Tensor]) -> Any:
    """The figure of ``SpectralMethod.plot``: one panel per layer type, one line per layer."""
    import matplotlib.pyplot as plt

    groups = layer_groups(list(values))
    columns = min(3, len(groups))
    rows = math.ceil(len(groups) / columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(4.2 * columns, 3.2 * rows), sharey=True, squeeze=False
    )
    for axis, (kind, members) in zip(axes.flat, groups.items(), strict=False):
        for label, name in members:
            axis.plot(values[name].numpy(), lw=1.0, label=label)
        axis.set_title(kind, fontsize=9)
        axis.set_xlabel("mode index")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, ncols=2)
    for axis in axes[:, 0]:
        axis.set_ylabel("Laplacian eigenvalue")
    for axis in list(axes.flat)[len(groups) :]:
        axis.set_visible(False)
    figure.suptitle(f"spectral: k lowest modes of {len(values)} parameter graphs")
    figure.tight_layout()
    return figure


def _validate_config(config: SpectralConfig) -> None:
    """Every name and number checked before any model is touched."""
    from graphopt.solvers.laplacian import KINDS as LAPLACIANS

    registry = graphopt.registry
    registry.get("graph", config.graph)
    registry.get("response", config.response)
    if config.transform is not None:
        registry.get("transform", config.transform)
    if config.eigensolver is not None:
        registry.get("eigensolver", config.eigensolver)
    if config.laplacian not in LAPLACIANS:
        raise ValueError(
            f"laplacian must be one of {', '.join(map(repr, LAPLACIANS))}; got {config.laplacian!r}"
        )
    if config.features not in FEATURES:
        raise ValueError(
            f"features must be one of {', '.join(map(repr, FEATURES))}; got {config.features!r}"
        )
    if config.parameters is not None and (
        not config.parameters
        or isinstance(config.parameters, str)
        or not all(isinstance(name, str) and name for name in config.parameters)
    ):
        raise ValueError(
            f"parameters must be None or a non-empty list of names; got {config.parameters!r}"
        )
    if config.where not in PLACES:
        raise ValueError(
            f"where must be one of {', '.join(map(repr, PLACES))}; got {config.where!r}"
        )
    check_int_in_range(config.k, "k", 1)
    check_int_in_range(config.refresh_every, "refresh_every", 1)
    check_gain(config.high_gain)
    check_positive(config.dirichlet_weight, "dirichlet_weight", allow_zero=True)
    if config.dirichlet_weight > 0 and config.laplacian == "random_walk":
        raise ValueError(
            "dirichlet_weight needs a symmetric Laplacian (tr(X^T L X) is a Dirichlet energy "
            "and 2 L X its gradient only then); use laplacian='combinatorial' or 'symmetric'"
        )
    if config.where == "update" and config.transform is not None:
        cls = registry.get("transform", config.transform)
        if not callable(getattr(cls, "transform_update", None)):
            raise ValueError(
                f"where='update' needs a transform with transform_update; {config.transform!r} "
                f"({getattr(cls, '__name__', cls)}) only filters gradients"
            )
    if config.transform is None and config.dirichlet_weight == 0:
        raise ValueError(
            "spectral does nothing with transform=None and dirichlet_weight=0; set one of them"
        )
    if config.features == "gradients" and config.transform is None:
        raise ValueError(
            "features='gradients' collects gradient rows in the filter transform; "
            "set transform (e.g. 'spectral_filter')"
        )
