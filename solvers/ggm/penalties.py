"""Group penalties phi and their proximal operators.

A penalty is phi: [0, inf) -> [0, inf), phi(0) = 0, applied to group norms, with
the scalar prox  prox_{w phi}(t) = argmin_{x >= 0} 0.5 (x - t)^2 + w phi(x).  The
group prox of a vector v is then  prox_{w phi}(||v||) * v / ||v||  (block soft
thresholding for phi(t) = t). Third parties add penalties (log, MCP, SCAD) by
subclassing ``Penalty`` and registering the class as a ``penalty`` plugin; its
constructor's keyword arguments are the penalty's hyperparameters
(``solve(..., penalty="mcp", penalty_options={"gamma": 3.0})`` calls
``Penalty(gamma=3.0)``).
"""

from __future__ import annotations

import abc
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from graphopt.solvers.ggm.groups import GroupStructure, _device_indices, group_norms, set_grouped
from graphopt.solvers.validation import check_positive


class Penalty(abc.ABC):
    """phi of the group penalty sum_g lam_g phi(||Omega_g||_2).

    The contract (what the solvers read):

    - ``phi`` and ``prox`` (required), elementwise on tensors of group norms.
    - ``convex``: phi is convex. It decides block-diagonal screening (exact only
      for convex phi), Anderson acceleration and over-relaxation in ADMM, and
      which certificate a solve reports: a duality gap for convex phi (when
      ``conjugate`` is defined), else a relative stationarity residual.
    - ``derivative``: phi'(t) for t > 0 and the right derivative phi'(0+) at 0
      (may be +inf, as for t^p with p < 1); it gives the stationarity (KKT)
      residual. Without it no residual is reported.
    - ``conjugate`` and ``dual_radius`` (convex phi): phi*(s) = sup_{t >= 0}
      s t - phi(t) for s >= 0, finite on [0, dual_radius] (+inf beyond); they
      give the duality gap (Fenchel dual of the GGM problem).
    - ``degree``: k when phi(c t) = c^k phi(t) for every c > 0 (positively
      homogeneous), else None. Solvers work on S scaled to unit mean variance;
      a homogeneous penalty is kept with lam scaled by c^-k, any other is
      wrapped as ``RescaledPenalty`` (phi(t / c)): either way the problem is
      unchanged.
    """

    name: str = "penalty"
    convex: bool = False
    degree: float | None = None
    dual_radius: float = math.inf

    @abc.abstractmethod
    def phi(self, t: torch.Tensor) -> torch.Tensor:
        """phi(t) elementwise for t >= 0."""

    @abc.abstractmethod
    def prox(self, t: torch.Tensor, weight: torch.Tensor | float) -> torch.Tensor:
        """argmin_{x >= 0} 0.5 (x - t)^2 + weight * phi(x), elementwise for t >= 0."""

    def derivative(self, t: torch.Tensor) -> torch.Tensor:
        """phi'(t) elementwise, t >= 0 (at 0 the right derivative, possibly +inf).

        A penalty that keeps this default reports no stationarity residual.
        """
        raise TypeError(f"penalty {self.name!r} defines no derivative: no stationarity residual")

    def conjugate(self, s: torch.Tensor) -> torch.Tensor:
        """phi*(s) = sup_{t >= 0} s t - phi(t) elementwise for 0 <= s <= ``dual_radius``.

        Convex penalties that keep this default report no duality gap (their
        solves are certified by the relative stationarity residual instead).
        """
        raise TypeError(f"penalty {self.name!r} defines no conjugate: no duality gap")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class L1Penalty(Penalty):
    """phi(t) = t: the (group) lasso; its prox is soft thresholding max(t - w, 0)."""

    name = "l1"
    convex = True
    degree = 1.0
    dual_radius = 1.0

    def phi(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def prox(self, t: torch.Tensor, weight: torch.Tensor | float) -> torch.Tensor:
        return (t - weight).clamp_min(0.0)

    def derivative(self, t: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(t)

    def conjugate(self, s: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(s)


class L2pPenalty(Penalty):
    """phi(t) = t^p with 0 < p <= 1 (the [GGM] l2,p penalty; reference p = 0.9).

    Non-convex for p < 1 (phi'(0+) = +inf: every zero group is stationary); its
    prox is generalized soft thresholding. p = 1 is the group lasso.
    """

    name = "l2p"

    def __init__(self, p: float = 0.9) -> None:
        p = check_positive(p, "p")
        if p > 1:
            raise ValueError(f"p must be in (0, 1]; got {p!r}")
        self.p = p
        self.convex = p == 1.0
        self.degree = p
        self.dual_radius = 1.0 if self.convex else math.inf

    def phi(self, t: torch.Tensor) -> torch.Tensor:
        return t.pow(self.p)

    def prox(self, t: torch.Tensor, weight: torch.Tensor | float) -> torch.Tensor:
        return generalized_soft_threshold(t, weight, self.p)

    def derivative(self, t: torch.Tensor) -> torch.Tensor:
        if self.convex:
            return torch.ones_like(t)
        return self.p * t.pow(self.p - 1.0)  # +inf at 0

    def conjugate(self, s: torch.Tensor) -> torch.Tensor:
        if not self.convex:
            return super().conjugate(s)
        return torch.zeros_like(s)

    def __repr__(self) -> str:
        return f"L2pPenalty(p={self.p})"


class RescaledPenalty(Penalty):
    """phi_c(t) = phi(t / c): ``base`` on a problem whose variable is scaled by c.

    With x = c y: prox_{w phi_c}(t) = c prox_{(w / c^2) phi}(t / c),
    phi_c'(t) = phi'(t / c) / c, phi_c*(s) = phi*(c s) (radius / c).
    """

    def __init__(self, base: Penalty, scale: float) -> None:
        self.base = base
        self.scale = check_positive(scale, "scale")
        self.name = base.name
        self.convex = base.convex
        self.dual_radius = base.dual_radius / self.scale

    def phi(self, t: torch.Tensor) -> torch.Tensor:
        return self.base.phi(t / self.scale)

    def prox(self, t: torch.Tensor, weight: torch.Tensor | float) -> torch.Tensor:
        return self.scale * self.base.prox(t / self.scale, weight / self.scale**2)

    def derivative(self, t: torch.Tensor) -> torch.Tensor:
        return self.base.derivative(t / self.scale) / self.scale

    def conjugate(self, s: torch.Tensor) -> torch.Tensor:
        return self.base.conjugate(self.scale * s)

    def __repr__(self) -> str:
        return f"RescaledPenalty({self.base!r}, scale={self.scale!r})"


def has_conjugate(penalty: Penalty) -> bool:
    """Whether a duality gap can be computed: a convex penalty that defines ``conjugate``."""
    if isinstance(penalty, RescaledPenalty):
        return has_conjugate(penalty.base)
    if isinstance(penalty, L2pPenalty):
        return penalty.convex
    return penalty.convex and type(penalty).conjugate is not Penalty.conjugate


def has_derivative(penalty: Penalty) -> bool:
    """Whether a stationarity residual can be computed (``derivative`` is defined)."""
    if isinstance(penalty, RescaledPenalty):
        return has_derivative(penalty.base)
    return type(penalty).derivative is not Penalty.derivative


def lasso_slope(penalty: Penalty) -> float | None:
    """a when phi(t) = a t (convex and homogeneous of degree 1: the l1 / group lasso up to
    a factor), else None; solvers with lasso-only steps (Newton) read the weight lam a."""
    if not penalty.convex or penalty.degree != 1.0:
        return None
    return float(penalty.phi(torch.ones(1, dtype=torch.float64)))


def rescale_penalty(penalty: Penalty, lam: float, scale: float) -> tuple[Penalty, float]:
    """Penalty and weight for Theta = scale * Omega: lam phi(||Omega_g||) = lam' phi'(||Theta_g||).

    Homogeneous phi (``degree`` k) keeps its object (and the solvers' fast paths)
    with lam' = lam / scale^k; any other phi becomes ``RescaledPenalty(phi, scale)``.
    """
    if penalty.degree is not None:
        return penalty, lam / scale**penalty.degree
    return RescaledPenalty(penalty, scale), lam


def build_penalty(
    name: str, factory: Callable[..., Penalty], options: Mapping[str, Any] | None
) -> Penalty:
    """``factory(**options)`` (a ``Penalty`` class or factory found under ``name``), with
    a ``ValueError`` naming the penalty and the option for an unknown option or a value
    the penalty rejects."""
    options = dict(options or {})
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: let the call decide
        parameters = None
    if parameters is not None and not any(p.kind is p.VAR_KEYWORD for p in parameters):
        accepted = [
            p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        for key in options:
            if key not in accepted:
                known = ", ".join(accepted) or "none"
                raise ValueError(f"penalty {name!r} has no option {key!r} (its options: {known})")
    try:
        penalty = factory(**options)
    except (TypeError, ValueError) as err:
        if any(str(err).startswith(f"{key} ") for key in options):  # led by the option's name
            raise ValueError(f"{err} (an option of penalty {name!r})") from err
        raise ValueError(f"penalty {name!r} rejected its options {options!r}: {err}") from err
    if not isinstance(penalty, Penalty):
        raise ValueError(
            f"penalty {name!r} must build a Penalty instance; got {type(penalty).__name__}"
        )
    return penalty


def generalized_soft_threshold(
    y: torch.Tensor, weight: torch.Tensor | float, p: float, max_iter: int = 50
) -> torch.Tensor:
    """Prox of w |x|^p: argmin_x 0.5 (x - y)^2 + w |x|^p (Zuo et al., ICCV 2013, GST).

    tau_p(w) = (2 w (1 - p))^(1/(2-p)) + w p (2 w (1 - p))^((p-1)/(2-p)); |y| <= tau_p(w)
    gives 0, otherwise sign(y) t with the fixed point t = |y| - w p t^(p-1) from
    t = |y|. The reference code stops after 5 iterations; we iterate to machine
    precision (the iteration is a contraction above the threshold), so the step
    is an exact block minimization and BCD's objective cannot increase.
    """
    if p == 1.0:
        return y.sign() * (y.abs() - weight).clamp_min(0.0)
    if y.numel() == 0:  # p = 1 node: no off-diagonal entry
        return y.clone()
    weight = torch.as_tensor(weight, dtype=y.dtype, device=y.device)
    base = 2.0 * weight * (1.0 - p)
    threshold = base.pow(1.0 / (2.0 - p)) + weight * p * base.pow((p - 1.0) / (2.0 - p))
    magnitude = y.abs()
    active = magnitude > threshold
    t = magnitude.clone()
    safe = torch.where(active, t, torch.ones_like(t))
    for _ in range(max_iter):
        updated = magnitude - weight * p * safe.pow(p - 1.0)
        updated = torch.where(active, updated, torch.ones_like(updated))
        change = float((updated - safe).abs().max())
        safe = updated
        if change <= 1e-15 * max(1.0, float(magnitude.max())):
            break
    return torch.where(active, y.sign() * safe, torch.zeros_like(y))


def penalty_value(
    omega: torch.Tensor, structure: GroupStructure, penalty: Penalty, lam: float
) -> torch.Tensor:
    """P(Omega) = 2 sum_g lam w_g phi(||Omega_g||_2) (both triangles; see ``groups``)."""
    if structure.singleton and type(penalty) is L1Penalty:
        return l1_penalty(omega, lam)
    weights = torch.as_tensor(structure.weights, dtype=omega.dtype, device=omega.device)
    return 2.0 * lam * (weights * penalty.phi(group_norms(omega, structure))).sum()


def l1_penalty(omega: torch.Tensor, lam: float) -> torch.Tensor:
    """lam * sum_{i != j} |Omega_ij|: ``penalty_value`` for singleton groups and phi(t) = t."""
    return lam * (omega.abs().sum() - omega.diagonal().abs().sum())


def group_prox(
    v: torch.Tensor, structure: GroupStructure, penalty: Penalty, weight: float
) -> torch.Tensor:
    """Z = argmin_Z 0.5 ||Z - V||_F^2 + weight * P(Z) / lam for symmetric V, i.e. per group
    z_g = prox_{weight w_g phi}(||v_g||) v_g / ||v_g||; ungrouped entries and the diagonal copy V.
    """
    if structure.singleton and type(penalty) is L1Penalty:
        shrunk = v.sign() * (v.abs() - weight).clamp_min(0.0)
        return shrunk + torch.diag_embed(v.diagonal() - shrunk.diagonal())
    rows, cols, index = _device_indices(structure, v.device)
    weights = torch.as_tensor(structure.weights, dtype=v.dtype, device=v.device)
    norms = group_norms(v, structure)
    shrunk = penalty.prox(norms, weight * weights)
    scale = torch.where(norms > 0, shrunk / norms.clamp_min(torch.finfo(v.dtype).tiny), 0.0)
    return set_grouped(v.clone(), structure, v[rows, cols] * scale[index])
