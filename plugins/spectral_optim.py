"""The optimizer pieces of spectral coordination: the filter, the Dirichlet
regularizer and its proximal map on the update, and the basis refresh.

Each piece acts on a parameter's **node matrix**: the parameter with its node
axis first and the other axes flattened, (n, m). The node axis indexes the
output units: 0 for an ``nn.Linear`` weight (out, in) or an adapter's output
factor (LoRA's ``lora_B``, pca_ggm's ``A``), 1 for a GPT-2 ``Conv1D`` weight,
stored (in, out). One code path serves both layouts.

Where each piece acts ([SPEC] filters the gradient; ``docs/methods/spectral.md``
has the measurement behind offering the update as well):

* ``SpectralFilter``: ``g <- F g`` before the base step (``transform``) or
  ``d <- F d`` on the base step's update ``d = p_new - p_old``
  (``transform_update``), with F = U h(Lambda) U^T + high_gain (I - U U^T);
* ``DirichletRegularizer``: adds 2 lambda L (Theta - Theta0) to the gradient;
* ``DirichletProximal``: ``d <- argmin_x 1/2 ||x - d||^2 + lambda tr(x^T L x)
  = (I + 2 lambda L)^-1 d``, by conjugate gradients with a step count fixed in
  advance from an a-priori error bound (no host synchronisation in a step).

Non-finite values: the graph couples entries only within a column of the node
matrix (one input feature across the output units), so a column holding a NaN
or an infinity is left out of the coupling: the filter and the proximal map
pass it through unchanged and the regularizer adds nothing to it. The bad value
stays in its entry, where the run's divergence guard or the user sees it,
instead of spreading to every node of its column (one NaN in a gradient of 64
rows used to turn all 64 rows NaN); every other column is computed as usual.
No host synchronisation: the columns are found and handled with tensor ops.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

import graphopt
from graphopt.solvers.validation import check_positive

if TYPE_CHECKING:
    from graphopt.plugins.spectral import SpectralConfig

PROXIMAL_TOLERANCE = 1e-6
"""Bound on the relative error, in the energy norm of I + 2 lambda L, of the
proximal map's conjugate-gradient solve (guaranteed by the step count)."""


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
    """Graph over the rows of ``features`` (n, m), its Laplacian and k lowest modes.

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


# -- node matrices ---------------------------------------------------------------------------


def node_matrix(tensor: torch.Tensor, axis: int) -> torch.Tensor:
    """``tensor`` as (n, m): the node axis first, the other axes flattened (a view
    where the layout allows)."""
    moved = tensor if axis == 0 else tensor.movedim(axis, 0)
    return moved.reshape(moved.shape[0], -1)


def from_node_matrix(matrix: torch.Tensor, like: torch.Tensor, axis: int) -> torch.Tensor:
    """The inverse of ``node_matrix``: ``matrix`` (n, m) in the layout of ``like``."""
    moved_shape = like.shape if axis == 0 else like.movedim(axis, 0).shape
    result = matrix.reshape(moved_shape)
    return result if axis == 0 else result.movedim(0, axis)


def non_finite_columns(matrix: torch.Tensor) -> torch.Tensor:
    """(m,) bool: the columns of ``matrix`` (n, m) holding a NaN or an infinity."""
    return ~torch.isfinite(matrix).all(dim=0)


def laplacian_operator(state: dict[str, torch.Tensor], n: int) -> torch.Tensor:
    """The (n, n) sparse CSR Laplacian held in ``state``."""
    return torch.sparse_csr_tensor(
        state["laplacian_crow"],
        state["laplacian_col"],
        state["laplacian_values"],
        (n, n),
        check_invariants=False,
    )


# -- the filter ------------------------------------------------------------------------------


class SpectralFilter:
    """``x <- U h(Lambda) U^T x + high_gain (x - U U^T x)`` along the node axis, on the
    gradient (``transform``, a gradient transform) or on the base step's update
    (``transform_update``, an update transform); the method puts it in one place.

    Computed as ``x <- high_gain x + U ((h(Lambda) - high_gain) * (U^T x))``: the
    filter of ``graphopt.solvers.spectral.spectral_filter`` with two matrix
    products instead of three. Per-parameter state: ``vectors`` U (n, k),
    ``values`` Lambda (k,), and ``gradient_sum`` (the raw gradient summed between
    basis refreshes) when the graph is rebuilt from gradients. Per-group option:
    ``high_gain``.
    """

    name = "spectral_filter"

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        bases: Sequence[SpectralBasis],
        response: Callable[[torch.Tensor], torch.Tensor],
        high_gain: float = 0.0,
        accumulate_gradients: bool = False,
        node_axes: Sequence[int] | None = None,
    ) -> None:
        if len(params) != len(bases):
            raise ValueError(f"got {len(params)} params but {len(bases)} bases")
        self.params = list(params)
        self._bases = dict(zip(self.params, bases, strict=True))
        self._axes = _axes(self.params, node_axes)
        self.response = response
        self.high_gain = check_gain(high_gain)
        self.accumulate_gradients = accumulate_gradients

    def init_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        basis = self._bases[param]
        state = {"vectors": basis.vectors.clone(), "values": basis.values.clone()}
        if self.accumulate_gradients:
            state["gradient_sum"] = torch.zeros_like(param, dtype=basis.vectors.dtype)
        return state

    def node_axis(self, param: torch.Tensor) -> int:
        """The axis of ``param`` whose entries are the graph's nodes."""
        return self._axes[param]

    def transform(
        self,
        grad: torch.Tensor,
        param: torch.Tensor,
        state: dict[str, torch.Tensor],
        high_gain: float | None = None,
    ) -> torch.Tensor:
        """The filtered gradient (collects the raw gradient first when the graph is
        rebuilt from gradients)."""
        self._collect(grad, state)
        return self.apply(grad, param, state, high_gain)

    def transform_update(
        self,
        update: torch.Tensor,
        param: torch.Tensor,
        state: dict[str, torch.Tensor],
        high_gain: float | None = None,
    ) -> torch.Tensor:
        """The filtered update (collects ``param.grad`` first when the graph is rebuilt
        from gradients)."""
        if param.grad is not None:
            self._collect(param.grad, state)
        return self.apply(update, param, state, high_gain)

    def apply(
        self,
        tensor: torch.Tensor,
        param: torch.Tensor,
        state: dict[str, torch.Tensor],
        high_gain: float | None = None,
    ) -> torch.Tensor:
        """F ``tensor`` (shaped like ``param``), in place when ``tensor`` has the basis's
        dtype (then returned), else in a new tensor; no state changes.

        A column of the node matrix whose coefficients U^T x are not finite (it holds
        a NaN or an infinity) passes unchanged: that column's gain is 1 and its
        coefficients 0, decided by tensor ops on the small (k, m) coefficients, so
        the common path costs no extra pass over ``tensor`` but one scaling."""
        gain = self.high_gain if high_gain is None else check_gain(high_gain)
        vectors = state["vectors"]
        shift = (self.response(state["values"]) - gain)[:, None]
        axis = self._axes[param]
        work = tensor if tensor.dtype == vectors.dtype else tensor.to(vectors.dtype)
        matrix = node_matrix(work, axis)
        coefficients = vectors.T @ matrix
        passed = non_finite_columns(coefficients)
        coefficients = torch.where(passed, 0.0, shift * coefficients)
        matrix.mul_(torch.where(passed, 1.0, gain))
        matrix.addmm_(vectors, coefficients)
        if matrix.data_ptr() != work.data_ptr():  # node_matrix had to copy
            work.copy_(from_node_matrix(matrix, work, axis))
        return work if work.dtype == tensor.dtype else work.to(tensor.dtype)

    def _collect(self, grad: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        if "gradient_sum" in state:
            total = state["gradient_sum"]
            total.add_(torch.where(torch.isfinite(grad), grad, 0.0).to(total.dtype))

    def state_dict(self) -> dict[str, Any]:
        return {"high_gain": self.high_gain}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.high_gain = check_gain(state["high_gain"])


# -- the Dirichlet energy --------------------------------------------------------------------


class DirichletRegularizer:
    """R = weight * tr(dTheta^T L dTheta), dTheta = Theta - Theta0 (node matrices);
    dR/dTheta = 2 weight L dTheta, added to the gradient.

    L_spec of [SPEC] section 3 with its exact gradient (L symmetric). Per-parameter
    state: ``theta0`` and L as CSR tensors. Per-group option: ``weight``.
    """

    name = "spectral_dirichlet"

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        bases: Sequence[SpectralBasis],
        theta0: Sequence[torch.Tensor],
        weight: float,
        node_axes: Sequence[int] | None = None,
    ) -> None:
        self.params = list(params)
        self._init = {p: (b, t) for p, b, t in zip(self.params, bases, theta0, strict=True)}
        self._axes = _axes(self.params, node_axes)
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
        scale = 2.0 * (self.weight if weight is None else check_positive(weight, "weight"))
        axis = self._axes[param]
        delta = node_matrix(param.detach() - state["theta0"], axis)
        lap = laplacian_operator(state, delta.shape[0])
        gradient = scale * (lap @ delta.to(lap.dtype))
        gradient.masked_fill_(non_finite_columns(delta), 0.0)  # columns left out
        return from_node_matrix(gradient, param, axis).to(param.dtype)

    def value(self, param: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
        delta = node_matrix(param.detach() - state["theta0"], self._axes[param])
        lap = laplacian_operator(state, delta.shape[0])
        delta = delta.to(lap.dtype)
        return self.weight * (delta * (lap @ delta)).sum()

    def set_basis(self, param: torch.Tensor, state: dict[str, torch.Tensor], basis: SpectralBasis):
        """Take the Laplacian of a rebuilt graph (``BasisRefresh``)."""
        state.update(basis.laplacian_state())

    def state_dict(self) -> dict[str, Any]:
        return {"weight": self.weight}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weight = check_positive(state["weight"], "weight")


class DirichletProximal:
    """Update transform: the proximal map of the Dirichlet energy of the step's update,
    ``d <- argmin_x 1/2 ||x - d||^2 + weight tr(x^T L x) = (I + 2 weight L)^-1 d``.

    Each graph mode of the update is scaled by 1 / (1 + 2 weight lambda_i), on the
    whole spectrum (not only the k lowest modes). Solved per column by conjugate
    gradients with m steps, m the smallest with 2 q^m <= ``PROXIMAL_TOLERANCE``,
    q = (sqrt(kappa) - 1) / (sqrt(kappa) + 1), kappa = 1 + 2 weight lambda_max(L)
    bounded by Gershgorin's row sums (the a-priori CG bound on the energy-norm
    error); the count is fixed before the step, so there is no host
    synchronisation. Per-parameter state: L as CSR tensors; the eigenvalue bounds
    are this object's own state. Per-group option: ``weight``.
    """

    name = "spectral_dirichlet"

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        bases: Sequence[SpectralBasis],
        weight: float,
        node_axes: Sequence[int] | None = None,
    ) -> None:
        self.params = list(params)
        self._bases = dict(zip(self.params, bases, strict=True))
        self._axes = _axes(self.params, node_axes)
        self.weight = check_positive(weight, "weight")
        self._bounds = {p: gershgorin_bound(b) for p, b in self._bases.items()}

    def init_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self._bases[param].laplacian_state().items()}

    def iterations(self, param: torch.Tensor, weight: float | None = None) -> int:
        """Conjugate-gradient steps that meet ``PROXIMAL_TOLERANCE`` for ``param``'s graph."""
        weight = self.weight if weight is None else check_positive(weight, "weight")
        condition = 1.0 + 2.0 * weight * self._bounds[param]
        q = (math.sqrt(condition) - 1.0) / (math.sqrt(condition) + 1.0)
        nodes = param.shape[self._axes[param]]
        if q <= 0.0:
            return 1
        return min(nodes, max(1, math.ceil(math.log(PROXIMAL_TOLERANCE / 2) / math.log(q))))

    def transform_update(
        self,
        update: torch.Tensor,
        param: torch.Tensor,
        state: dict[str, torch.Tensor],
        weight: float | None = None,
    ) -> torch.Tensor:
        scale = 2.0 * (self.weight if weight is None else check_positive(weight, "weight"))
        steps = self.iterations(param, weight)
        axis = self._axes[param]
        lap = laplacian_operator(state, param.shape[axis])
        matrix = node_matrix(update.to(lap.dtype), axis)
        solved = solve_shifted_laplacian(lap, matrix, scale, steps)  # columns independent
        solved = torch.where(non_finite_columns(matrix), matrix, solved)  # columns left out
        return from_node_matrix(solved, update, axis).to(update.dtype)

    def set_basis(self, param: torch.Tensor, state: dict[str, torch.Tensor], basis: SpectralBasis):
        """Take the Laplacian of a rebuilt graph (``BasisRefresh``) and its bound."""
        state.update(basis.laplacian_state())
        self._bounds[param] = gershgorin_bound(basis)

    def state_dict(self) -> dict[str, Any]:
        return {"weight": self.weight, "bounds": [self._bounds[p] for p in self.params]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weight = check_positive(state["weight"], "weight")
        bounds = [float(b) for b in state["bounds"]]
        if len(bounds) != len(self.params):
            raise ValueError(
                f"spectral_dirichlet state holds {len(bounds)} bounds for {len(self.params)} "
                "parameters"
            )
        self._bounds = dict(zip(self.params, bounds, strict=True))


def gershgorin_bound(basis: SpectralBasis) -> float:
    """An upper bound on lambda_max(L): the largest absolute row sum (Gershgorin).
    Reads the values on the host (called when an optimizer is built or a basis refreshed)."""
    crow, values = basis.laplacian_crow, basis.laplacian_values.abs().double()
    rows = torch.repeat_interleave(
        torch.arange(crow.numel() - 1, device=crow.device), crow[1:] - crow[:-1]
    )
    sums = torch.zeros(crow.numel() - 1, dtype=torch.float64, device=crow.device)
    return float(sums.index_add_(0, rows, values).max()) if values.numel() else 0.0


def solve_shifted_laplacian(
    lap: torch.Tensor, rhs: torch.Tensor, scale: float, steps: int
) -> torch.Tensor:
    """``steps`` conjugate-gradient iterations for (I + scale L) X = rhs, every column at
    once, from X = 0. Columns never mix (a NaN stays in its column). A column whose
    residual vanishes stays put (guarded divisions), so a zero column of ``rhs``
    gives exactly zero."""
    x = torch.zeros_like(rhs)
    residual = rhs.clone()
    direction = rhs.clone()
    norm2 = (residual * residual).sum(dim=0)
    for _ in range(steps):
        applied = direction + scale * (lap @ direction)
        curvature = (direction * applied).sum(dim=0)
        alpha = torch.where(curvature > 0, norm2 / curvature, 0.0)
        x.add_(direction * alpha)
        residual.sub_(applied * alpha)
        new_norm2 = (residual * residual).sum(dim=0)
        beta = torch.where(norm2 > 0, new_norm2 / norm2, 0.0)
        direction = residual + direction * beta
        norm2 = new_norm2
    return x


# -- gradient graphs -------------------------------------------------------------------------


class BasisRefresh:
    """Every ``config.refresh_every`` steps, rebuild each graph from the gradient rows
    summed since the last refresh, for the filter and the Dirichlet pieces.

    Runs after the base step. A refresh builds graphs and solves eigenproblems,
    so it synchronises with the host; the steps in between do not.
    """

    def __init__(
        self, spectral_filter: SpectralFilter, dirichlet: Sequence[Any], config: SpectralConfig
    ) -> None:
        self.spectral_filter = spectral_filter
        self.dirichlet = list(dirichlet)
        self.config = config
        self.steps = 0

    def after_step(self, optimizer: Any) -> None:
        self.steps += 1
        if self.steps % self.config.refresh_every:
            return
        users = [(piece, optimizer.transform_state(piece)) for piece in self.dirichlet]
        for param, state in optimizer.transform_state(self.spectral_filter).items():
            features = node_matrix(state["gradient_sum"], self.spectral_filter.node_axis(param))
            basis = spectral_basis(features, self.config, state["vectors"].dtype)
            state["vectors"], state["values"] = basis.vectors, basis.values
            state["gradient_sum"].zero_()
            for piece, states in users:
                if param in states:
                    piece.set_basis(param, states[param], basis)

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])


def check_gain(value: float) -> float:
    """``high_gain`` must be a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"high_gain must be a number in [0, 1]; got {value!r}")
    return float(value)


def _axes(params: list[torch.Tensor], node_axes: Sequence[int] | None) -> dict[torch.Tensor, int]:
    axes = [0] * len(params) if node_axes is None else list(node_axes)
    if len(axes) != len(params):
        raise ValueError(f"got {len(params)} params but {len(axes)} node axes")
    for param, axis in zip(params, axes, strict=True):
        if not 0 <= axis < param.ndim:
            raise ValueError(f"node axis {axis} is not an axis of a tensor of shape {param.shape}")
    return dict(zip(params, axes, strict=True))
