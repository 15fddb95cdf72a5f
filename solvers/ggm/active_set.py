"""The smooth piece of the (group) lasso GGM around an iterate: free set, orthant, model.

For phi(t) = t the penalty 2 sum_g lam_g ||Omega_g|| is smooth wherever no group is
zero. Around an iterate Omega with G = S - Omega^-1, Newton methods work on the
free set F: the diagonal, the ungrouped pairs, the nonzero groups, and the zero
groups that violate their optimality condition ||G_g|| <= lam_g (Hsieh et al.,
QUIC, JMLR 2014, sec. 3.1; the others stay zero this step). Each free group has a
reference direction r_g, its orthant: Omega_g / ||Omega_g|| if nonzero, else
-G_g / ||G_g|| (the steepest descent direction of a violating zero group). On
F the objective is modelled as smooth, with

- gradient R (the minimum-norm subgradient; G on the diagonal and ungrouped
  pairs, G_g + lam_g r_g on the free groups),
- Hessian W (x) W (the log det part, W = Omega^-1) plus, for nonzero groups of
  more than one entry, the curvature of the norm, lam_g (I - r r^T) / ||Omega_g||
  (zero for singletons: |x| is linear on an orthant),

and a trial point is projected onto the orthants: a free group whose component
along r_g is not positive becomes zero (for singletons: an entry that changes
sign). This is the orthant-based Newton of Oztoprak, Nocedal, Rennie & Olsen
(2012), extended to groups by their radial component.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from graphopt.solvers.ggm.groups import (
    GroupStructure,
    _device_indices,
    group_norms,
    grouped_mask,
    set_grouped,
)

GROWTH = 0.1
"""ADMM's polish: at most this fraction of the current support (at least 2 entries) of
violating zero groups joins the free set in one step, largest violations first, and
only when their violation outweighs the residual on the support (from ADMM's Z, adding
every violator made most steps cross zero and stall: measured). ``newton`` lets every
violator join (``growth=None``, as QUIC does) and bounds them by its path of lams."""


@dataclass
class ActiveSet:
    """The free set F (p, p) bool, the residual R (zero outside F) and the orthant
    data: ``signs`` (p, p) for singleton l1, else the free groups' reference
    directions ``directions`` on their upper-triangle entries and the penalty
    curvature ``curvature`` lam_g / ||Omega_g|| (0 for zero groups)."""

    free: torch.Tensor
    residual: torch.Tensor
    structure: GroupStructure
    signs: torch.Tensor | None = None
    groups: torch.Tensor | None = None  # free groups (n_groups,) bool
    directions: torch.Tensor | None = None  # (m,) on every grouped upper entry
    curvature: torch.Tensor | None = None  # (n_groups,)

    def project(self, trial: torch.Tensor) -> torch.Tensor:
        """``trial`` with every free group whose component along its orthant's direction
        is not positive set to zero (singletons: entries that cross zero)."""
        if self.signs is not None:
            kept = torch.where(trial.sign() == self.signs, trial, 0.0)
            return kept.diagonal_scatter(trial.diagonal())
        rows, cols, index = _device_indices(self.structure, trial.device)
        values = trial[rows, cols]
        along = torch.zeros_like(self.curvature).index_add_(0, index, values * self.directions)
        keep = (along > 0) | ~self.groups
        values = values * keep[index]
        return set_grouped(trial.clone(), self.structure, values)

    def penalty_hessian(self, d: torch.Tensor) -> torch.Tensor | None:
        """The norm's curvature applied to a symmetric direction D (p, p), or None when
        there is none (singletons)."""
        if self.signs is not None or self.curvature is None:
            return None
        rows, cols, index = _device_indices(self.structure, d.device)
        values = d[rows, cols]
        along = torch.zeros_like(self.curvature).index_add_(0, index, values * self.directions)
        product = self.curvature[index] * (values - self.directions * along[index])
        return set_grouped(torch.zeros_like(d), self.structure, product)


def build_active_set(
    omega: torch.Tensor,
    gradient: torch.Tensor,
    structure: GroupStructure,
    lam: float,
    residual: torch.Tensor,
    growth: float | None = GROWTH,
    within: torch.Tensor | None = None,
) -> ActiveSet:
    """The free set, orthants and model gradient at Omega (module doc).

    ``gradient`` = the smooth part's gradient (S - Omega^-1, or a quadratic model's)
    and ``residual`` its minimum-norm subgradient (``objective.subgradient``);
    ``growth``: see ``GROWTH`` (None: every violator joins); ``within`` (p, p) bool:
    zeros outside it never join (a group only if all its entries are inside).
    """
    if structure.singleton:
        if within is not None:
            residual = torch.where(within | (omega != 0), residual, 0.0)
        return _singleton_set(omega, residual, structure, growth)
    rows, cols, index = _device_indices(structure, omega.device)
    weights = lam * torch.as_tensor(structure.weights, dtype=omega.dtype, device=omega.device)
    norms = group_norms(omega, structure)
    nonzero = norms > 0
    g_norms = group_norms(gradient, structure)
    violation = torch.where(nonzero, 0.0, (g_norms - weights).clamp_min(0.0))
    if within is not None:
        outside = torch.zeros_like(norms).index_add_(
            0, index, (~within[rows, cols]).to(norms.dtype)
        )
        violation = torch.where(outside > 0, 0.0, violation)
    violation_sq = 2.0 * float(violation.square().sum())  # both triangles
    sizes = torch.bincount(index, minlength=structure.n_groups)
    if growth is None:
        joining = violation > 0
    elif violation_sq > float(residual.square().sum()) - violation_sq:
        support = 2 * int(sizes[nonzero].sum()) + omega.shape[0]
        joining = _largest(violation, sizes, max(2, int(growth * support)))
    else:
        joining = torch.zeros_like(nonzero)
    groups = nonzero | joining
    tiny = torch.finfo(omega.dtype).tiny
    directions = torch.where(
        nonzero[index],
        omega[rows, cols] / norms.clamp_min(tiny)[index],
        -gradient[rows, cols] / g_norms.clamp_min(tiny)[index],
    )
    entry_free = groups[index]
    free = set_grouped(~grouped_mask(structure, omega.device), structure, entry_free)
    model_values = gradient[rows, cols] + weights[index] * directions
    model_values = torch.where(entry_free, model_values, 0.0)
    model = set_grouped(torch.where(free, residual, 0.0), structure, model_values)
    curvature = torch.where(nonzero & (sizes > 1), weights / norms.clamp_min(tiny), 0.0)
    return ActiveSet(free, model, structure, None, groups, directions, curvature)


def _singleton_set(
    omega: torch.Tensor, residual: torch.Tensor, structure: GroupStructure, growth: float | None
) -> ActiveSet:
    support = omega != 0
    support.diagonal().fill_(True)
    on_support = torch.where(support, residual, 0.0)
    violation = torch.where(support, 0.0, residual)
    if growth is None:
        most = violation.numel()
    elif float(violation.square().sum()) <= float(on_support.square().sum()):
        most = 0
    else:
        most = max(2, int(growth * int(support.sum())))
    if most == 0:
        violation = torch.zeros_like(violation)
    elif int((violation != 0).sum()) > most:  # the largest (ties may add a few; pairs stay)
        threshold = violation.abs().flatten().kthvalue(violation.numel() - most + 1).values
        violation = torch.where(violation.abs() >= threshold, violation, 0.0)
    free = support | (violation != 0)
    signs = torch.where(support, omega.sign(), -violation.sign())
    return ActiveSet(free, on_support + violation, structure, signs)


def _largest(violation: torch.Tensor, sizes: torch.Tensor, most: int) -> torch.Tensor:
    """The violating groups with the largest violations, up to ``most`` entries in all."""
    order = torch.argsort(violation, descending=True)
    within = torch.cumsum(sizes[order], 0) <= most
    within[0] = True
    chosen = torch.zeros_like(violation, dtype=torch.bool)
    chosen[order[within]] = True
    return chosen & (violation > 0)


def quic_free_set(
    omega: torch.Tensor, residual: torch.Tensor, structure: GroupStructure
) -> torch.Tensor:
    """QUIC's free set (p, p): the diagonal, ungrouped pairs, and every group that is
    nonzero or has a nonzero minimum-norm subgradient ``residual`` (a violating zero)."""
    free = (omega != 0) | (residual != 0)
    free.fill_diagonal_(True)
    if structure.singleton:
        return free
    rows, cols, index = _device_indices(structure, omega.device)
    marked = torch.zeros(structure.n_groups, dtype=omega.dtype, device=omega.device)
    marked.index_add_(0, index, free[rows, cols].to(omega.dtype))
    free |= ~grouped_mask(structure, omega.device)
    set_grouped(free, structure, marked[index] > 0)
    return free.fill_diagonal_(True)
