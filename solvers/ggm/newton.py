"""Proximal Newton for the (group) lasso GGM: the ``newton`` solver and ADMM's end game.

Each step minimizes the quadratic model of the smooth part plus the exact penalty,

    X = argmin <G, X - Omega> + 1/2 <X - Omega, W (X - Omega) W> + P(X),
    G = S - W,  W = Omega^-1,

over the free set of QUIC (Hsieh, Sustik, Dhillon & Ravikumar, JMLR 2014, sec.
3.1: the nonzero groups, the diagonal, the ungrouped pairs and every zero group
that violates ||G_g|| <= lam w_g; the others stay zero), then takes
Omega + t (X - Omega) with the largest t = 1, 1/2, ... that keeps Omega positive
definite (a Cholesky factorization is the test and gives the next W) and
decreases f by the Armijo rule f(Omega + t D) <= f(Omega) + sigma t delta,
delta = <G, D> + P(X) - P(Omega) (QUIC's rule; Tseng & Yun 2009).

The model has two solvers (``inner``). "cd", for the l1 graphical lasso on the CPU:
QUIC's coordinate descent (sec. 3.2), one entry at a time in closed form, compiled
(``_coordinate_descent.c``), swept until no entry moves by more than the forcing
term times the first sweep's largest move; a model whose coordinates are so coupled
that ``MAX_SWEEPS`` sweeps do not settle it is solved by "cg" from that step on.
"cg" (groups, GPU, no compiler): orthant steps
(``active_set``: Oztoprak, Nocedal, Rennie & Olsen 2012), each a conjugate
gradient solve of P_F(W D W) + C D = -R_F, preconditioned with D -> P_F(Omega D
Omega), the exact inverse of W (x) W on the full space (CG then needs a few
products where a diagonal preconditioner needs hundreds: measured), followed by
a projected Armijo search on the model itself (a model value costs one product,
no factorization). Every operation is a matrix product: O(|F| p) (a sparse-dense
product and one sampled at F) or two dense products when F is dense.

The ``newton`` solver follows a path of lams from lam_max down to lam (warm
starts: from lam itself), a few steps at each (continuation: each start is close
to its optimum): the next lam is the smallest (within ``PATH_RATIO`` of the
current one) at which no more than max(p, nonzeros) entries of zero groups
violate their optimality condition at the current iterate, which bounds the free
set. It stops on the duality gap (``duality``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from graphopt.solvers.ggm.active_set import (
    GROWTH,
    ActiveSet,
    build_active_set,
    quic_free_set,
)
from graphopt.solvers.ggm.duality import duality_gap, relative_gap
from graphopt.solvers.ggm.groups import GroupStructure, group_norms, pair_weights
from graphopt.solvers.ggm.objective import log_det, stationarity, subgradient, symmetrized
from graphopt.solvers.ggm.penalties import L1Penalty, Penalty, lasso_slope, penalty_value
from graphopt.solvers.ggm.result import GGMResult, warn_not_converged
from graphopt.solvers.validation import check_int_in_range, check_positive

try:
    from graphopt.solvers.ggm._coordinate_descent import sweeps as _sweeps
except ImportError:  # built without a C compiler (setup.py: the extension is optional)
    _sweeps = None

PROGRESS_WINDOW = 5
"""Newton stops when a window of this many steps does not cut the KKT residual 10x."""

OVERSHOOT_STEPS = 1
"""Steps taken after the certificate first holds (unless the relative stationarity is
already at rounding level, ``ROUNDING``): the gap bounds the objective error, not
Omega's, which can be off by ~sqrt(gap / lambda_min(W)^2) (2e-6 on the 2-D iris case at
gap 5e-14); one quadratically convergent (inexact) step brings it closer (measured
against the exact optimum, docs/solvers/ggm.md: within 1.6e-7 relative at tol 1e-8).
The answer is the certified iterate with the lowest KKT residual."""

ROUNDING = 1e-13

DENSE_FILL = 0.08
"""Above this fraction of nonzeros in F, Hessian products use dense matrix products
(measured: at p = 1000 and 2000 the sparse products cost as much at 5-10% fill)."""

GAP_STATIONARITY = 1e-3
"""The duality gap (a factorization) is computed once the relative stationarity is below
this; above it the gap is far from any tolerance (measured: gaps >= 1e-2 there)."""

SUFFICIENT_DECREASE = 0.25
"""sigma of the Armijo rule on f (QUIC's value)."""

MODEL_STEPS = 10
MODEL_HALVINGS = 20
"""At most this many orthant steps on the quadratic model per Newton step; fewer once
its residual is below the forcing term min(0.5, sqrt(||R|| / ||S||)) ||R|| (inexact
Newton: superlinear convergence, Dembo, Eisenstat & Steihaug 1982)."""

PATH_RATIO = (0.25, 0.95)
"""Consecutive lams on ``newton``'s path differ by a factor in this range."""

PATH_BUDGET = 8.0
"""The next lam on the path lets at most PATH_BUDGET max(p, nonzeros) entries violate."""

STAGE_STATIONARITY = 1e-2
"""A lam on the path before the last is left once its relative stationarity residual
||R||_F / ||S||_F is below this (or after ``STAGE_STEPS`` steps)."""

STAGE_STEPS = 3

MAX_SWEEPS = 50
"""QUIC's coordinate descent on the model sweeps the free set until no entry changes by
more than ``_sweep_tol`` times the first sweep's largest change, at most MAX_SWEEPS
times; a model that needs more (coordinates strongly coupled: measured on scikit-learn's
2-D iris case, hundreds of sweeps a step) is solved by CG from that step on."""

NOISE_EPSILONS = 1e3
"""An off-diagonal entry with |Omega_ij| <= NOISE_EPSILONS eps sqrt(Omega_ii Omega_jj)
(eps: float64's, so a partial correlation of at most 2.2e-13) is rounding noise
(``_without_rounding_noise``)."""

POLISH_SWEEP_TOL = 1e-8
"""``_sweep_tol`` past the certificate (measured: at 1e-6 the 2-D iris case's Omega
stayed 2.7e-6 off skggm's)."""


def _sweep_tol(relative_kkt: float, certified: bool) -> float:
    """The coordinate descent's stop, relative to its first sweep's largest change: the
    forcing term of inexact Newton, min(0.1, sqrt(||R|| / ||S||)) (superlinear
    convergence; Dembo, Eisenstat & Steihaug 1982); ``POLISH_SWEEP_TOL`` for the steps
    past the certificate (``OVERSHOOT_STEPS``), which take Omega itself closer."""
    return POLISH_SWEEP_TOL if certified else min(0.1, math.sqrt(relative_kkt))


def coordinate_descent_available(s: torch.Tensor, structure: GroupStructure) -> bool:
    """Whether the compiled coordinate descent serves this problem: the l1 graphical lasso
    (singleton groups) on the CPU, with the extension built."""
    return _sweeps is not None and structure.singleton and s.device.type == "cpu"


def _inner_solver(inner: str | None, s: torch.Tensor, structure: GroupStructure) -> str:
    """``inner`` checked ("cd" or "cg"); None: "cd" where available, else "cg"."""
    if inner is None:
        return "cd" if coordinate_descent_available(s, structure) else "cg"
    if inner not in ("cd", "cg"):
        raise ValueError(f"inner must be 'cd', 'cg' or None; got {inner!r}")
    if inner == "cd" and not coordinate_descent_available(s, structure):
        raise ValueError(
            "inner='cd' needs the l1 graphical lasso (singleton groups) on the CPU and "
            "graphopt's compiled extension (built when a C compiler is present); use inner='cg'"
        )
    return inner


@dataclass
class Polish:
    """The outcome of ``proximal_newton``: its answer (the iterate with the lowest gap
    once certified, else the last) and the record of every step."""

    omega: torch.Tensor
    factor: torch.Tensor
    covariance: torch.Tensor
    objective: float
    kkt: float
    gap: float
    converged: bool
    objectives: list[float] = field(default_factory=list)
    step_norms: list[float] = field(default_factory=list)
    cg_steps: int = 0
    sweeps: int = 0


def proximal_newton(
    s: torch.Tensor,
    omega: torch.Tensor,
    structure: GroupStructure,
    lam: float,
    tol: float,
    *,
    certify: bool = True,
    max_start_stationarity: float = math.inf,
    max_steps: int = 50,
    max_cg: int = 100,
    growth: float | None = GROWTH,
    inner: str | None = "cg",
    on_step: Callable[[float, float, torch.Tensor], None] | None = None,
) -> Polish | None:
    """Proximal Newton steps on the (group) lasso problem with weight ``lam``
    (phi(t) = t) from a positive definite ``omega`` (module doc).

    ``certify``: stop once the relative duality gap is <= ``tol`` (and one step past
    it: ``OVERSHOOT_STEPS``); otherwise once the relative stationarity residual is <= ``tol``.
    Stops early when a line search fails (rounding, near the optimum) or a window of
    ``PROGRESS_WINDOW`` steps does not cut the best KKT residual 10x; ``converged``
    says whether the criterion held. None (no step taken) when ``omega`` is not
    positive definite or its relative stationarity exceeds ``max_start_stationarity``.
    ``growth``: how many violating zeros join the model's free set per orthant step
    (``active_set.GROWTH``; None: all). ``inner``: the model's solver, "cg" (orthant
    steps), "cd" (QUIC's coordinate descent, compiled; ``coordinate_descent_available``)
    or None (cd where available).
    ``on_step(objective, step_norm, omega)`` is called after every step. ``s`` and
    ``omega``: symmetric (p, p), same dtype and device.
    """
    if omega.shape != s.shape:
        raise ValueError(
            f"omega must have the shape of s {tuple(s.shape)}; got {tuple(omega.shape)}"
        )
    lam = check_positive(lam, "lam", allow_zero=True)
    tol = check_positive(tol, "tol")
    max_steps = check_int_in_range(max_steps, "max_steps", 0)
    max_cg = check_int_in_range(max_cg, "max_cg", 1)
    inner = _inner_solver(inner, s, structure)
    omega = _without_rounding_noise(symmetrized(omega))
    factor, info = torch.linalg.cholesky_ex(omega)
    if int(info) != 0:
        return None
    penalty = L1Penalty()
    value = _objective(omega, s, structure, lam, factor)
    best_before_window = best_kkt = math.inf
    past_target = 0
    polish: Polish | None = None
    step = 0
    while True:
        covariance = torch.cholesky_inverse(factor)
        covariance = symmetrized(covariance)
        gradient = s - covariance
        residual = subgradient(omega, gradient, structure, penalty, lam)
        kkt = float(residual.norm())
        relative_kkt = stationarity(kkt, s)
        if polish is None and relative_kkt > max_start_stationarity:
            return None
        if certify and relative_kkt <= GAP_STATIONARITY:
            gap = duality_gap(
                omega, s, structure, penalty, lam, covariance=covariance, factor=factor
            )
            accuracy = relative_gap(gap, value)
        elif certify:  # too far for the gap to be small: save its factorization
            gap = accuracy = math.inf
        else:
            gap, accuracy = math.nan, relative_kkt
        done = accuracy <= tol
        if polish is None:
            polish = Polish(omega, factor, covariance, value, kkt, gap, done)
        elif not polish.converged or (done and kkt <= polish.kkt):
            polish.omega, polish.factor, polish.covariance = omega, factor, covariance
            polish.objective, polish.kkt, polish.gap, polish.converged = value, kkt, gap, done
        past_target += polish.converged
        settled = past_target > OVERSHOOT_STEPS or (done and relative_kkt <= ROUNDING)
        if settled or (done and not certify) or step == max_steps:
            return polish
        best_kkt = min(best_kkt, kkt)
        if step % PROGRESS_WINDOW == 0:
            if best_kkt > 0.1 * best_before_window:
                return polish
            best_before_window = best_kkt
        if inner == "cd":
            target, sweeps = _coordinate_descent(
                omega,
                covariance,
                gradient,
                residual,
                structure,
                lam,
                _sweep_tol(relative_kkt, polish.converged),
            )
            polish.sweeps += sweeps
            if sweeps == MAX_SWEEPS:  # ill-conditioned for coordinates: CG from here on
                inner = "cg"
        if inner == "cg":
            forcing = min(0.5, math.sqrt(relative_kkt)) * kkt
            target, cg = _model_minimum(
                omega, covariance, gradient, residual, structure, lam, forcing, growth, max_cg
            )
            polish.cg_steps += cg
        trial = _line_search(s, structure, lam, omega, value, gradient, target)
        if trial is None:
            return polish
        new_omega, factor, new_value = trial
        step_norm = float((new_omega - omega).norm())
        omega, value = new_omega, new_value
        polish.objectives.append(value)
        polish.step_norms.append(step_norm)
        if on_step is not None:
            on_step(value, step_norm, omega)
        step += 1


def _model_minimum(
    omega: torch.Tensor,
    covariance: torch.Tensor,
    gradient: torch.Tensor,
    residual: torch.Tensor,
    structure: GroupStructure,
    lam: float,
    forcing: float,
    growth: float | None,
    max_cg: int,
) -> tuple[torch.Tensor, int]:
    """X minimizing the quadratic model plus P over QUIC's free set (module doc), to a
    residual below ``forcing`` or ``MODEL_STEPS`` orthant steps; X and the CG steps."""
    penalty = L1Penalty()
    quic_free = quic_free_set(omega, residual, structure)
    product = _sandwich(quic_free)
    rows, cols = quic_free.nonzero(as_tuple=True)
    g_values = gradient[rows, cols]
    x = omega
    curvature = torch.zeros_like(g_values)  # (W (X - Omega) W) on the free set

    def model(trial: torch.Tensor, trial_curvature: torch.Tensor) -> float:
        """The model's change from Omega (differences, so rounding does not swamp it)."""
        d = (trial - omega)[rows, cols]
        change = _penalty_change(trial, omega, structure, lam)
        return float(g_values @ d) + 0.5 * float(d @ trial_curvature) + change

    value = model(x, curvature)
    cg_steps = 0
    model_residual = residual
    for _ in range(MODEL_STEPS):
        if float(model_residual.norm()) <= forcing:
            break
        model_gradient = gradient.clone()
        model_gradient[rows, cols] += curvature
        active = build_active_set(
            x, model_gradient, structure, lam, model_residual, growth, within=quic_free
        )
        direction, cg = newton_direction(active, covariance, omega, forcing, max_cg)
        cg_steps += cg
        slope = float((active.residual * direction).sum())
        if not slope < 0:
            break
        step = 1.0
        for _ in range(MODEL_HALVINGS):
            trial = active.project(x + step * direction)
            trial_curvature = product((trial - omega)[rows, cols], covariance)
            trial_value = model(trial, trial_curvature)
            if trial_value <= value + 1e-4 * step * slope:
                break
            step *= 0.5
        else:
            break
        x, curvature, value = trial, trial_curvature, trial_value
        model_gradient = gradient.clone()
        model_gradient[rows, cols] += curvature
        model_residual = torch.where(
            quic_free, subgradient(x, model_gradient, structure, penalty, lam), 0.0
        )
    return x, cg_steps


def _coordinate_descent(
    omega: torch.Tensor,
    covariance: torch.Tensor,
    gradient: torch.Tensor,
    residual: torch.Tensor,
    structure: GroupStructure,
    lam: float,
    tol: float,
) -> tuple[torch.Tensor, int]:
    """X minimizing the quadratic model plus P over QUIC's free set by QUIC's coordinate
    descent (``_coordinate_descent.c``, float64 on the CPU; ``MAX_SWEEPS``); X and the
    sweeps run."""
    free = torch.triu(quic_free_set(omega, residual, structure))
    cols, rows = free.T.nonzero(as_tuple=True)  # pairs i <= j ordered by column j
    weights = torch.zeros_like(omega, dtype=torch.float64)
    grouped_rows, grouped_cols, pair_weight = pair_weights(structure, omega.device)
    weights[grouped_rows, grouped_cols] = lam * pair_weight
    d = torch.zeros_like(weights)
    u = torch.zeros_like(weights)
    run = _sweeps(
        *(t.to(torch.float64).contiguous().numpy() for t in (covariance, gradient, omega)),
        weights.numpy(),
        rows.contiguous().numpy(),
        cols.contiguous().numpy(),
        d.numpy(),
        u.numpy(),
        MAX_SWEEPS,
        tol,
    )
    return omega + d.to(omega.dtype), run


def _penalty_change(
    x: torch.Tensor, omega: torch.Tensor, structure: GroupStructure, lam: float
) -> float:
    """P(X) - P(Omega) for phi(t) = t, summed as differences entry by entry (singletons)
    or group by group: near the optimum the change is far below P's rounding."""
    if structure.singleton:
        change = x.abs() - omega.abs()
        return lam * float(change.sum() - change.diagonal().sum())
    weights = torch.as_tensor(structure.weights, dtype=x.dtype, device=x.device)
    norms = group_norms(x, structure) - group_norms(omega, structure)
    return 2.0 * lam * float((weights * norms).sum())


def _objective(
    omega: torch.Tensor,
    s: torch.Tensor,
    structure: GroupStructure,
    lam: float,
    factor: torch.Tensor,
) -> float:
    """f(Omega) for phi(t) = t with weight lam, given Omega's Cholesky factor."""
    penalty = float(penalty_value(omega, structure, L1Penalty(), lam))
    return -log_det(omega, factor) + float((s * omega).sum()) + penalty


def newton_direction(
    model: ActiveSet,
    covariance: torch.Tensor,
    omega: torch.Tensor,
    tol: float,
    max_cg: int,
) -> tuple[torch.Tensor, int]:
    """Preconditioned CG on P_F(W D W) + C D = -R_F until ||residual|| <= ``tol`` (the
    caller's forcing term) or ``max_cg`` steps; D as a (p, p) matrix and the steps taken."""
    free = model.free
    sandwich = _sandwich(free)
    rows, cols = free.nonzero(as_tuple=True)
    scratch = torch.zeros_like(omega)

    def hessian(values: torch.Tensor) -> torch.Tensor:
        product = sandwich(values, covariance)
        if model.curvature is not None:
            scratch[rows, cols] = values
            product = product + model.penalty_hessian(scratch)[rows, cols]
        return product

    remainder = -model.residual[rows, cols]
    solution = torch.zeros_like(remainder)
    preconditioned = sandwich(remainder, omega)
    search = preconditioned.clone()
    product = float(remainder @ preconditioned)
    steps = 0
    while steps < max_cg and product > 0:
        steps += 1
        curvature = hessian(search)
        length = product / float(search @ curvature)
        solution += length * search
        remainder -= length * curvature
        if float(remainder.norm()) <= tol:
            break
        preconditioned = sandwich(remainder, omega)
        product, previous = float(remainder @ preconditioned), product
        search = preconditioned + (product / previous) * search
    direction = torch.zeros_like(omega)
    direction[rows, cols] = solution
    return direction, steps


def _sandwich(free: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """values on F -> P_F(A D A) for D with those values on F (row-major order).

    Sparse (O(|F| p): a CSR-dense product, then one sampled at F) below
    ``DENSE_FILL`` of the entries, two dense matrix products above, where BLAS wins.
    """
    if int(free.sum()) > DENSE_FILL * free.numel():

        def dense(values: torch.Tensor, outer: torch.Tensor) -> torch.Tensor:
            inner = torch.zeros_like(outer)
            inner[free] = values
            return (outer @ inner @ outer)[free]

        return dense
    with warnings.catch_warnings():  # torch: "Sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        pattern = free.to(torch.float64).to_sparse_csr()
    crow, col = pattern.crow_indices(), pattern.col_indices()

    def sparse(values: torch.Tensor, outer: torch.Tensor) -> torch.Tensor:
        matrix = torch.sparse_csr_tensor(crow, col, values, pattern.shape, check_invariants=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            sampled = torch.sparse.sampled_addmm(
                pattern.to(outer.dtype), outer, matrix @ outer, beta=0.0
            )
        return sampled.values()

    return sparse


def _without_rounding_noise(omega: torch.Tensor) -> torch.Tensor:
    """Omega with the off-diagonal entries at rounding level of their scale,
    |Omega_ij| <= ``NOISE_EPSILONS`` eps sqrt(Omega_ii Omega_jj), set to zero.

    Such an entry (a sum that should have cancelled, one half of a pair symmetric only to
    rounding) has the sign of noise: as a nonzero it fixes an orthant, and the orthant
    steps, whose model asks it to cross zero, stall (measured: five entries of 5e-14 made
    CG return a zero step). As a zero it is free to move either way.
    """
    diagonal = omega.diagonal().clamp_min(0.0).sqrt()
    noise = NOISE_EPSILONS * torch.finfo(torch.float64).eps * torch.outer(diagonal, diagonal)
    noise.fill_diagonal_(0.0)
    return torch.where(omega.abs() <= noise, 0.0, omega)


def _line_search(
    s: torch.Tensor,
    structure: GroupStructure,
    lam: float,
    omega: torch.Tensor,
    value: float,
    gradient: torch.Tensor,
    target: torch.Tensor,
    halvings: int = 30,
) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    """Omega + t (X - Omega), t = 1, 1/2, ...: the first positive definite trial with
    f <= f(Omega) + sigma t delta (module doc); None when there is none or delta >= 0."""
    target = symmetrized(target)  # CG's two halves round apart
    direction = target - omega
    delta = float((gradient * direction).sum()) + _penalty_change(target, omega, structure, lam)
    if not delta < 0:
        return None
    step = 1.0
    for _ in range(halvings):
        trial = _without_rounding_noise(omega + step * direction)
        factor, info = torch.linalg.cholesky_ex(trial)
        if int(info) == 0:
            trial_value = _objective(trial, s, structure, lam, factor)
            if trial_value <= value + SUFFICIENT_DECREASE * step * delta:
                return trial, factor, trial_value
        step *= 0.5
    return None


def lam_max(s: torch.Tensor, structure: GroupStructure) -> float:
    """max_g ||S_g|| / w_g: from lam_max up, diag(S)^-1 has no violating group (for l1 and
    node groups it is the solution; with ungrouped pairs, the start of ``newton``'s path)."""
    if structure.n_groups == 0:
        return 0.0
    weights = torch.as_tensor(structure.weights, dtype=s.dtype, device=s.device)
    return float((group_norms(s, structure) / weights).max())


def next_lam(
    omega: torch.Tensor, gradient: torch.Tensor, structure: GroupStructure, current: float
) -> float:
    """The next lam of ``newton``'s path after ``current`` (module doc): the smallest lam
    at which at most max(p, nonzeros) upper-triangle entries of zero groups violate
    ||G_g|| <= lam w_g, kept within ``PATH_RATIO`` of ``current``."""
    p = omega.shape[0]
    if structure.singleton:
        upper = torch.triu(torch.ones_like(omega, dtype=torch.bool), diagonal=1)
        zero = upper & (omega == 0)
        scores = gradient.abs()[zero]
        sizes = None
        most = int(PATH_BUDGET * max(p, int(upper.sum()) - scores.numel()))
    else:
        norms = group_norms(omega, structure)
        weights = torch.as_tensor(structure.weights, dtype=omega.dtype, device=omega.device)
        counts = torch.bincount(
            torch.as_tensor(structure.group_index, device=omega.device),
            minlength=structure.n_groups,
        )
        zero = norms == 0
        scores = (group_norms(gradient, structure) / weights)[zero]
        sizes = counts[zero]
        most = int(PATH_BUDGET * max(p, int(counts[~zero].sum())))
    low, high = PATH_RATIO
    bound = 0.0
    if sizes is None:
        if scores.numel() > most:
            bound = float(scores.topk(most + 1).values[-1])
    else:
        order = torch.argsort(scores, descending=True)
        over = torch.nonzero(torch.cumsum(sizes[order], 0) > most)
        if over.numel():
            bound = float(scores[order[int(over[0])]])
    return min(max(bound, low * current), high * current)


def newton(
    s: torch.Tensor,
    structure: GroupStructure,
    penalty: Penalty,
    lam: float,
    *,
    omega0: torch.Tensor | None = None,
    tol: float = 1e-8,
    max_iter: int = 200,
    max_cg: int = 100,
    inner: str | None = None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
    warn: bool = True,
) -> GGMResult:
    """The second-order solver for phi(t) = t (l1 and group lasso); see module doc.

    Cold starts follow the path of lams from lam_max down to lam; a warm start
    ``omega0`` (positive definite) starts at lam itself. Converged: relative duality
    gap <= ``tol``. ``max_iter`` bounds the Newton steps over the whole path; a final
    lam that Newton cannot finish (a failed line search, no progress) is handed to
    ADMM from the best iterate, with the steps left. ``inner``: the model's solver,
    "cd" (QUIC's coordinate descent; the l1 graphical lasso on the CPU only) or "cg";
    None: "cd" where ``coordinate_descent_available``, else "cg".
    """
    inner = _inner_solver(inner, s, structure)
    slope = lasso_slope(penalty)
    if slope is None:
        raise ValueError(
            f"solver 'newton' needs phi(t) = t (the l1 / group lasso); got penalty {penalty!r}: "
            "use solver='admm'"
        )
    weight = lam * slope
    history: dict[str, list[float]] = {"objective": [], "step_norm": [], "lam": []}
    stage_lam = weight

    def record(value: float, step_norm: float, omega: torch.Tensor) -> None:
        """A step at the path's stage_lam; objectives are reported at lam (phi(t) = t:
        f is linear in lam), so that history and progress describe one function."""
        if stage_lam != weight:
            value += (weight - stage_lam) * float(penalty_value(omega, structure, L1Penalty(), 1.0))
        history["objective"].append(value)
        history["step_norm"].append(step_norm)
        history["lam"].append(stage_lam / slope)
        if progress is not None:
            progress(len(history["objective"]), {"objective": value, "step_norm": step_norm})

    cg_steps = sweeps = 0
    if omega0 is None:
        omega = torch.diag(1.0 / s.diagonal())
        stage_lam = lam_max(s, structure)
        gradient = s - torch.diag(s.diagonal())
        while True:
            stage_lam = next_lam(omega, gradient, structure, stage_lam)
            left = max_iter - len(history["objective"])
            if stage_lam <= weight or left <= 0:
                break
            stage = proximal_newton(
                s,
                omega,
                structure,
                stage_lam,
                STAGE_STATIONARITY,
                certify=False,
                max_steps=min(STAGE_STEPS, left),
                max_cg=max_cg,
                growth=None,
                inner=inner,
                on_step=record,
            )
            if stage is not None:
                omega, cg_steps, sweeps = (
                    stage.omega,
                    cg_steps + stage.cg_steps,
                    sweeps + stage.sweeps,
                )
                gradient = s - stage.covariance
    else:
        omega = omega0
    stage_lam = weight
    final = proximal_newton(
        s,
        omega,
        structure,
        weight,
        tol,
        max_steps=max_iter - len(history["objective"]),
        max_cg=max_cg,
        growth=None,
        inner=inner,
        on_step=record,
    )
    newton_steps = len(history["objective"])
    cg_steps += final.cg_steps if final is not None else 0
    sweeps += final.sweeps if final is not None else 0
    left = max_iter - newton_steps
    if (final is None or not final.converged) and left > 0:
        # Newton cannot finish (a failed line search, no progress): ADMM from its iterate
        from graphopt.solvers.ggm.admm import admm

        rest = admm(
            s,
            structure,
            penalty,
            lam,
            omega0=omega if final is None else final.omega,
            tol=tol,
            max_iter=left,
            progress=None
            if progress is None
            else lambda i, values: progress(newton_steps + i, values),
            warn=warn,
        )
        rest.history = {
            **rest.history,
            "objective": history["objective"] + rest.history["objective"],
            "step_norm": history["step_norm"],
            "lam": history["lam"],
        }
        rest.n_iter += newton_steps
        rest.info.update(
            newton_steps=newton_steps + rest.info["newton_steps"],
            admm_iterations=len(rest.history["primal_residual"]),
            cg_steps=cg_steps,
            cd_sweeps=sweeps,
        )
        return rest
    if final is None:  # no budget left at the start of the last lam
        final = proximal_newton(s, omega, structure, weight, tol, max_steps=0)
    if not final.converged and warn:
        warn_not_converged(
            "newton", max_iter, f"relative gap {relative_gap(final.gap, final.objective):.2e}"
        )
    return GGMResult(
        precision=final.omega,
        covariance=final.covariance,
        objective=final.objective,
        n_iter=newton_steps,
        converged=final.converged,
        history=history,
        kkt_residual=final.kkt,
        sparse_precision=final.omega,
        duality_gap=final.gap,
        stationarity=stationarity(final.kkt, s),
        info={
            "newton_steps": newton_steps,
            "cg_steps": cg_steps,
            "cd_sweeps": sweeps,
            "admm_iterations": 0,
        },
    )
