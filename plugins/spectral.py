"""Spectral parameter coordination [SPEC] as a graphopt method.

Zhang et al., "Graph-Based Spectral Decomposition for Parameter Coordination
in Language Model Fine-Tuning" (arXiv 2504.19583, 2025), section 3: the
parameters are nodes of a weighted graph with Laplacian L = D - W = U Lambda U^T;
training minimises L_task + lambda L_spec and a spectral filter adjusts the
gradients; no trainable parameters are added.

Here (design choices, each pluggable; see ``docs/methods/spectral.md``):

* node = a row of a target parameter (one output unit of a weight, or one row
  of an adapter factor); edges = the registered graph construction (default
  10-NN cosine) on the pretrained rows, or on gradient rows accumulated between
  basis refreshes (``features="gradients"``);
* the k lowest modes (U_k, Lambda_k) from ``graphopt.eigen.smallest_eigenpairs``;
* (a) regularizer L_spec = tr(dTheta^T L dTheta), dTheta = Theta - Theta0, with
  exact gradient 2 lambda L dTheta added to the gradient;
* (b) filter g <- U_k h(Lambda_k) U_k^T g + high_gain (g - U_k U_k^T g).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import graphopt
from graphopt.methods import Method, MethodConfig
from graphopt.solvers.validation import check_int_in_range, check_positive

FEATURES = ("weights", "gradients")
"""Where the node features of the parameter graph come from."""


@dataclass
class SpectralConfig(MethodConfig):
    """Settings of spectral parameter coordination (defaults and why: docs/methods/spectral.md).

    Attributes:
        parameters: names of the parameters of each target module to coordinate
            (``["weight"]``; after LoRA e.g. the factor names).
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
        transform: registered gradient transform (kind ``transform``) built from the
            bases, or ``None`` for no filter.
        response: registered filter response (kind ``response``).
        response_options: keyword arguments of the response (e.g. ``{"t": 0.1}``).
        high_gain: gain in [0, 1] of the gradient outside the k lowest modes.
        dirichlet_weight: lambda of the Dirichlet regularizer; 0 switches it off.
    """

    parameters: list[str] = field(default_factory=lambda: ["weight"])
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


@dataclass
class SpectralBasis:
    """A parameter's graph: its Laplacian (CSR parts) and the k lowest eigenpairs."""

    vectors: torch.Tensor  # (n, k), orthonormal columns
    values: torch.Tensor  # (k,), ascending
    laplacian_crow: torch.Tensor
    laplacian_col: torch.Tensor
    laplacian_values: torch.Tensor

    def laplacian_state(self) -> dict[str, torch.Tensor]:
        """The Laplacian as plain tensors (so an optimizer state_dict can hold it)."""
        return {
            "laplacian_crow": self.laplacian_crow,
            "laplacian_col": self.laplacian_col,
            "laplacian_values": self.laplacian_values,
        }


def spectral_basis(
    features: torch.Tensor, config: SpectralConfig, dtype: torch.dtype
) -> SpectralBasis:
    """Graph over the rows of ``features``, its Laplacian and k lowest modes.

    The graph is built in float64 on the features' device; the basis is
    returned in ``dtype``. A non-converged eigensolve warns (the solver's
    ``ConvergenceWarning``) and still returns its best basis.
    """
    from graphopt.eigen import smallest_eigenpairs
    from graphopt.solvers.laplacian import laplacian

    rows = features.detach().reshape(features.shape[0], -1).to(torch.float64)
    adjacency = graphopt.registry.get("graph", config.graph)(rows, **config.graph_options)
    lap = laplacian(adjacency, kind=config.laplacian)
    result = smallest_eigenpairs(lap, config.k, method=config.eigensolver)
    with warnings.catch_warnings():  # torch's one-time "sparse CSR is in beta" notice
        warnings.simplefilter("ignore", UserWarning)
        csr = lap.to_sparse_csr()
    device = features.device
    return SpectralBasis(
        vectors=torch.as_tensor(result.vectors).to(device=device, dtype=dtype),
        values=torch.as_tensor(result.values).to(device=device, dtype=dtype),
        laplacian_crow=csr.crow_indices().to(device),
        laplacian_col=csr.col_indices().to(device),
        laplacian_values=csr.values().to(device=device, dtype=dtype),
    )


def _basis_dtype(param: torch.Tensor) -> torch.dtype:
    """float64/float32 parameters keep their dtype; half precision ones get a float32 basis."""
    return param.dtype if param.dtype in (torch.float32, torch.float64) else torch.float32


# -- the optimizer pieces ---------------------------------------------------------------------


class SpectralFilter:
    """Gradient transform g <- U h(Lambda) U^T g + high_gain (g - U U^T g), along rows.

    Computed in place as g <- high_gain g + U ((h(Lambda) - high_gain) * (U^T g)):
    the same filter as ``graphopt.solvers.spectral.spectral_filter`` with two
    matrix products instead of three and no temporary the size of g (this runs
    every step on every target). Per-parameter state: ``vectors`` U (n, k),
    ``values`` Lambda (k,), and ``gradient_sum`` (the accumulated raw gradient)
    when the graph is rebuilt from gradients. Per-group option: ``high_gain``.
    """

    name = "spectral_filter"

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        bases: Sequence[SpectralBasis],
        response: Callable[[torch.Tensor], torch.Tensor],
        high_gain: float = 0.0,
        accumulate_gradients: bool = False,
    ) -> None:
        if len(params) != len(bases):
            raise ValueError(f"got {len(params)} params but {len(bases)} bases")
        self.params = list(params)
        self._bases = dict(zip(self.params, bases, strict=True))
        self.response = response
        self.high_gain = _check_gain(high_gain)
        self.accumulate_gradients = accumulate_gradients

    def init_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        basis = self._bases[param]
        state = {"vectors": basis.vectors.clone(), "values": basis.values.clone()}
        if self.accumulate_gradients:
            state["gradient_sum"] = torch.zeros_like(param, dtype=basis.vectors.dtype)
        return state

    def transform(
        self,
        grad: torch.Tensor,
        param: torch.Tensor,
        state: dict[str, torch.Tensor],
        high_gain: float | None = None,
    ) -> torch.Tensor:
        gain = self.high_gain if high_gain is None else _check_gain(high_gain)
        vectors, values = state["vectors"], state["values"]
        work = grad if grad.dtype == vectors.dtype else grad.to(vectors.dtype)
        if "gradient_sum" in state:
            state["gradient_sum"].add_(work)
        matrix = work.reshape(work.shape[0], -1)
        coefficients = vectors.T @ matrix
        coefficients.mul_((self.response(values) - gain)[:, None])
        matrix.addmm_(vectors, coefficients, beta=gain)
        if matrix.data_ptr() == grad.data_ptr() and work is grad:
            return grad
        return matrix.reshape(grad.shape).to(grad.dtype)

    def state_dict(self) -> dict[str, Any]:
        return {"high_gain": self.high_gain}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.high_gain = _check_gain(state["high_gain"])


class DirichletRegularizer:
    """R = weight * tr(dTheta^T L dTheta), dTheta = Theta - Theta0; dR/dTheta = 2 weight L dTheta.

    L_spec of [SPEC] section 3 on the update, with the exact gradient (L is
    symmetric). Per-parameter state: ``theta0`` and L as CSR tensors. Per-group
    option: ``weight``.
    """

    name = "spectral_dirichlet"

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        bases: Sequence[SpectralBasis],
        theta0: Sequence[torch.Tensor],
        weight: float,
    ) -> None:
        self.params = list(params)
        self._init = {p: (b, t) for p, b, t in zip(self.params, bases, theta0, strict=True)}
        self.weight = check_positive(weight, "weight")

    def init_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        basis, theta0 = self._init[param]
        return {
            "theta0": theta0.clone(),
            **{k: v.clone() for k, v in basis.laplacian_state().items()},
        }

    def grad(
        self, param: torch.Tensor, state: dict[str, torch.Tensor], weight: float | None = None
    ) -> torch.Tensor:
        scale = 2.0 * (self.weight if weight is None else weight)
        update = (param - state["theta0"]).reshape(param.shape[0], -1)
        lap = _csr(state, param.shape[0])
        return (scale * (lap @ update.to(lap.dtype))).reshape(param.shape).to(param.dtype)

    def value(self, param: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
        update = (param - state["theta0"]).reshape(param.shape[0], -1)
        lap = _csr(state, param.shape[0])
        return self.weight * (update.to(lap.dtype) * (lap @ update.to(lap.dtype))).sum()

    def state_dict(self) -> dict[str, Any]:
        return {"weight": self.weight}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weight = check_positive(state["weight"], "weight")


class BasisRefresh:
    """Every ``every`` steps, rebuild each graph from the gradient rows summed since the last.

    Runs after the base step. A refresh builds graphs and solves eigenproblems,
    so it synchronises with the host; the steps in between do not.
    """

    def __init__(
        self,
        spectral_filter: SpectralFilter,
        regularizer: DirichletRegularizer | None,
        config: SpectralConfig,
    ) -> None:
        self.spectral_filter = spectral_filter
        self.regularizer = regularizer
        self.config = config
        self.steps = 0

    def after_step(self, optimizer: Any) -> None:
        self.steps += 1
        if self.steps % self.config.refresh_every:
            return
        filter_states = optimizer.transform_state(self.spectral_filter)
        reg_states = (
            optimizer.transform_state(self.regularizer) if self.regularizer is not None else {}
        )
        for param, state in filter_states.items():
            basis = spectral_basis(state["gradient_sum"], self.config, state["vectors"].dtype)
            state["vectors"], state["values"] = basis.vectors, basis.values
            state["gradient_sum"].zero_()
            if param in reg_states:
                reg_states[param].update(basis.laplacian_state())

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])


def _csr(state: dict[str, torch.Tensor], n: int) -> torch.Tensor:
    return torch.sparse_csr_tensor(
        state["laplacian_crow"],
        state["laplacian_col"],
        state["laplacian_values"],
        (n, n),
        check_invariants=False,
    )


def _check_gain(value: float) -> float:
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"high_gain must be a number in [0, 1]; got {value!r}")
    return float(value)


# -- the method -------------------------------------------------------------------------------


class SpectralMethod(Method):
    """Spectral parameter coordination: trains the target parameters themselves,
    with a spectral gradient filter and/or a Dirichlet regularizer on the update."""

    name = "spectral"
    config_class = SpectralConfig
    adds_parameters = False
    identity_at_init = True

    def __init__(self, config: SpectralConfig) -> None:
        super().__init__(config)
        _validate_config(config)
        self._bases: dict[str, SpectralBasis] = {}
        self._theta0: dict[str, torch.Tensor] = {}
        self._parts: tuple[list[Any], list[Any], list[Any]] | None = None

    def validate(self, targets: dict[str, nn.Module]) -> None:
        for module_name, module in targets.items():
            own = dict(module.named_parameters())
            for name in self.config.parameters:
                if name not in own:
                    raise ValueError(
                        f"target module {module_name!r} has no parameter {name!r}; "
                        f"its parameters: {sorted(own) or 'none'}"
                    )
                shape = tuple(own[name].shape)
                if len(shape) < 2:
                    raise ValueError(
                        f"spectral coordinates the rows of a matrix; {module_name}.{name} has "
                        f"shape {shape}"
                    )
                if self.config.k >= shape[0]:
                    raise ValueError(
                        f"k must be < the number of nodes (rows) of every target; "
                        f"{module_name}.{name} has shape {shape} and k = {self.config.k}"
                    )

    def apply(self, model: nn.Module, targets: dict[str, nn.Module]) -> None:
        self.validate(targets)
        for module_name, module in targets.items():
            own = dict(module.named_parameters())
            for name in self.config.parameters:
                param = own[name]
                full = f"{module_name}.{name}" if module_name else name
                parent_name = module_name.rpartition(".")[0]
                parent = model.get_submodule(parent_name) if module_name else model
                features = _node_features(param, own, dict(parent.named_parameters()))
                try:
                    basis = spectral_basis(features, self.config, _basis_dtype(param))
                except ValueError as err:
                    raise ValueError(f"parameter graph of {full!r}: {err}") from err
                self._bases[full] = basis
                self._theta0[full] = param.detach().clone()

    def adapter_parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        return {name: model.get_parameter(name) for name in self._bases}

    def num_trainable_parameters(self, model: nn.Module) -> int:
        """sum over targets of rows * columns (the target parameters themselves)."""
        return sum(math.prod(model.get_parameter(name).shape) for name in self._bases)

    def plot(self, model: nn.Module, folder: Path) -> list[Path]:
        """``spectral_spectrum.png``: the k lowest Laplacian eigenvalues of every
        target parameter's graph, as built when the method was applied."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(6, 3.5))
        for basis in self._bases.values():
            axis.plot(basis.values.cpu().numpy(), lw=0.8, alpha=0.6)
        axis.set(xlabel="mode index", ylabel="Laplacian eigenvalue")
        axis.set_title(f"spectral: k lowest modes of {len(self._bases)} parameter graphs")
        axis.grid(alpha=0.3)
        figure.tight_layout()
        path = Path(folder) / "spectral_spectrum.png"
        figure.savefig(path, dpi=120)
        plt.close(figure)
        return [path]

    def transforms(self, model: nn.Module) -> list[Any]:
        return self._optimizer_parts(model)[0]

    def regularizers(self, model: nn.Module) -> list[Any]:
        return self._optimizer_parts(model)[1]

    def callbacks(self, model: nn.Module) -> list[Any]:
        return self._optimizer_parts(model)[2]

    def merge(self, model: nn.Module) -> None:
        """Nothing to fold: the target weights are trained in place."""
        self.merged = True

    def unmerge(self, model: nn.Module) -> None:
        """Nothing to unfold (see ``merge``)."""
        self.merged = False

    def _optimizer_parts(self, model: nn.Module) -> tuple[list[Any], list[Any], list[Any]]:
        """Built once, so the refresh callback and the optimizer share one filter object."""
        if self._parts is None:
            config = self.config
            names = list(self._bases)
            params = [model.get_parameter(n) for n in names]
            bases = [self._bases[n] for n in names]
            transforms: list[Any] = []
            if config.transform is not None:
                response = graphopt.registry.get("response", config.response)(
                    **config.response_options
                )
                transforms.append(
                    graphopt.registry.get("transform", config.transform)(
                        params,
                        bases,
                        response=response,
                        high_gain=config.high_gain,
                        accumulate_gradients=config.features == "gradients",
                    )
                )
            regularizers: list[Any] = []
            if config.dirichlet_weight > 0:
                theta0 = [self._theta0[n] for n in names]
                regularizers.append(
                    DirichletRegularizer(params, bases, theta0, config.dirichlet_weight)
                )
            callbacks: list[Any] = []
            if config.features == "gradients":
                reg = regularizers[0] if regularizers else None
                callbacks.append(BasisRefresh(transforms[0], reg, config))
            self._parts = (transforms, regularizers, callbacks)
        return self._parts


def _node_features(
    param: torch.Tensor, own: dict[str, torch.Tensor], parents: dict[str, torch.Tensor]
) -> torch.Tensor:
    """The rows the graph is built on: ``param``'s own or, when they are all zero (a
    zero-initialised adapter factor such as LoRA's B), the rows of the first non-zero
    parameter with the same number of rows in the target module, then in its parent
    (for LoRA's B: the frozen base weight, whose rows are the same output units)."""
    if bool(param.detach().any()):
        return param
    for other in [*own.values(), *parents.values()]:
        same_rows = other is not param and other.ndim >= 2 and other.shape[0] == param.shape[0]
        if same_rows and bool(other.detach().any()):
            return other
    raise ValueError(
        f"cannot build a parameter graph: the parameter of shape {tuple(param.shape)} is all "
        "zero and neither its module nor the parent module has a non-zero parameter with "
        "the same number of rows"
    )


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
    if not config.parameters or isinstance(config.parameters, str):
        raise ValueError(f"parameters must be a non-empty list of names; got {config.parameters!r}")
    check_int_in_range(config.k, "k", 1)
    check_int_in_range(config.refresh_every, "refresh_every", 1)
    _check_gain(config.high_gain)
    check_positive(config.dirichlet_weight, "dirichlet_weight", allow_zero=True)
    if config.transform is None and config.dirichlet_weight == 0:
        raise ValueError(
            "spectral does nothing with transform=None and dirichlet_weight=0; set one of them"
        )
    if config.features == "gradients" and config.transform is None:
        raise ValueError(
            "features='gradients' collects gradient rows in the filter transform; "
            "set transform (e.g. 'spectral_filter')"
        )
