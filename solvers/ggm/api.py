"""``solve``: validate, normalize the scale, screen into blocks, run a solver per bin, assemble.

Penalties and solvers are objects here (a ``Penalty`` instance, a solver
callable with the signature of ``admm``); the names of graphopt's built-ins
("l1", "l2p"; "auto", "newton", "admm", "bcd") are understood directly. Names
registered by third-party plugins are resolved one layer up, by
``graphopt.ggm.solve``, which looks them up in the plugin registry and calls
this function with the objects: solvers never import the graphopt core.

Scale: every solver sees its block of S divided by c = the block's mean
variance, the penalty rewritten for Theta = c Omega
(``penalties.rescale_penalty``), so the problem is the same and every
tolerance, floor and default of the solvers is relative to the data's scale:
solve(c S, lam c^k) = solve(S, lam) / c for a penalty of degree k, to rounding
(docs/solvers/ggm.md, "Scale").
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from graphopt.solvers.ggm.admm import Progress, admm
from graphopt.solvers.ggm.bcd import REFERENCE_TAU, bcd
from graphopt.solvers.ggm.groups import GroupStructure, make_groups, pair_weights
from graphopt.solvers.ggm.newton import coordinate_descent_available, newton
from graphopt.solvers.ggm.objective import objective as objective_value
from graphopt.solvers.ggm.objective import stationarity, symmetrized
from graphopt.solvers.ggm.penalties import (
    L1Penalty,
    L2pPenalty,
    Penalty,
    build_penalty,
    lasso_slope,
    rescale_penalty,
)
from graphopt.solvers.ggm.result import GGMResult, warn_not_converged
from graphopt.solvers.ggm.screening import screen_blocks
from graphopt.solvers.validation import (
    as_tensor,
    check_int_in_range,
    check_positive,
    check_positive_semidefinite,
    check_square_symmetric_finite,
)

PENALTIES: dict[str, type[Penalty]] = {"l1": L1Penalty, "l2p": L2pPenalty}
"""Built-in penalties by name (also registered as ``penalty`` plugins)."""

PACK_SIZE = 256
"""Screened blocks are packed into one block-diagonal solve up to this many nodes."""

SOLVERS: dict[str, Callable[..., GGMResult]] = {"newton": newton, "admm": admm, "bcd": bcd}
"""Built-in solvers by name (also registered as ``ggm_solver`` plugins); "auto" picks
one of them (``choose_solver``)."""


def make_penalty(
    penalty: str | Penalty,
    p: float | None = None,
    options: Mapping[str, Any] | None = None,
    *,
    factory: Callable[..., Penalty] | None = None,
) -> Penalty:
    """A ``Penalty`` from a name and its options, or an instance as given.

    A name is built as ``factory(**options)`` (``factory`` default: the built-in
    class of that name, ``PENALTIES``); ``p`` is the option ``p`` (the exponent of
    "l2p"), kept as its own argument. Unknown names, unknown options and values the
    penalty rejects raise ``ValueError`` naming the penalty and the option.
    """
    if isinstance(penalty, Penalty):
        if p is not None or options:
            raise ValueError("p and penalty_options are only used with a penalty given by name")
        return penalty
    if options is not None and not isinstance(options, Mapping):
        raise ValueError(f"penalty_options must be a mapping of option names; got {options!r}")
    if factory is None:
        if penalty not in PENALTIES:
            raise ValueError(
                f"penalty must be one of {sorted(PENALTIES)} or a Penalty instance; "
                f"got {penalty!r} (plugin penalties: use graphopt.ggm.solve)"
            )
        factory = PENALTIES[penalty]
    merged = dict(options or {})
    if p is not None:
        if "p" in merged and merged["p"] != p:
            raise ValueError(
                f"penalty {penalty!r}: p={p!r} and penalty_options p={merged['p']!r} disagree"
            )
        merged["p"] = p
    return build_penalty(str(penalty), factory, merged)


EDGE_FRACTION = 0.05
"""``choose_solver`` takes ``newton`` (with QUIC's coordinate descent) for the l1 graphical
lasso when at most this fraction of the pairs has |S_ij| > lam w_ij (the edges screening
sees), ``admm`` above it. Measured (benchmarks/results/ggm_families.md, ggm_l1.md, one
thread): at 0.09%-2.3% (chain and random-graph families, the anchor at p = 500) newton is
0.9x-1.9x ADMM's speed (below 1x only on the random graph at lam = 0.08, whose solution is
denser than its edges suggest); at 37% (the anchor at p = 1000) ADMM is faster (55 s;
newton > 100 s)."""


def choose_solver(
    penalty: Penalty, structure: GroupStructure, s: torch.Tensor, lam: float
) -> Callable[..., GGMResult]:
    """The default ("auto") solver for S (p, p) and the weight ``lam``: ``newton`` for
    the l1 graphical lasso (singleton groups, phi(t) = t) on the CPU with graphopt's
    compiled coordinate descent when S has few edges (``EDGE_FRACTION``); otherwise
    ``admm`` (with its Newton end game for phi(t) = t), measured faster than ``newton``
    with the conjugate-gradient model solver on every benchmark problem
    (docs/solvers/ggm.md, "Which solver")."""
    slope = lasso_slope(penalty)
    if slope is None or not coordinate_descent_available(s, structure) or lam == 0:
        return admm
    rows, cols, weights = pair_weights(structure, s.device)
    if rows.numel() == 0:
        return admm
    edges = s[rows, cols].abs() > lam * slope * weights
    return newton if float(edges.double().mean()) <= EDGE_FRACTION else admm


def solve(
    S: Any,
    penalty: str | Penalty = "l1",
    groups: Any = None,
    lam: float | None = None,
    solver: str | Callable[..., GGMResult] = "auto",
    tol: float | None = None,
    max_iter: int | None = None,
    device: str | torch.device | None = None,
    *,
    p: float | None = None,
    penalty_options: Mapping[str, Any] | None = None,
    screen: bool | None = None,
    omega0: Any = None,
    progress: Progress | None = None,
    **solver_options: Any,
) -> GGMResult:
    """Minimize -log det Omega + tr(S Omega) + 2 sum_g lam w_g phi(||Omega_g||_2) over Omega > 0.

    Args:
        S: sample covariance (p, p), symmetric positive semidefinite with a
            positive diagonal; numpy (answered with numpy) or torch (answered
            with torch on its device and dtype).
        penalty: "l1" (phi(t) = t: graphical / group lasso), "l2p" (t^p) or a ``Penalty``.
        groups: None/"singleton" (l1 graphical lasso), "node", "important:K", a
            ``GroupStructure`` or a list of groups of (i, j) pairs.
        lam: penalty weight >= 0; for ``solver="bcd"`` the paper's tau
            (default 20, the reference value).
        solver: "auto" (``choose_solver``), "newton" (second order, phi(t) = t),
            "admm" (any penalty), "bcd" (the [GGM] coupled BCD) or a callable.
        tol: stopping tolerance (for convex penalties the relative duality gap);
            None takes the solver's default (1e-8 for newton and admm).
        max_iter: iteration limit; None takes the solver's default.
        device: where to compute (float64); default the input's device.
        p: the exponent of "l2p", in (0, 1] (default 0.9): the option ``p``.
        penalty_options: the named penalty's hyperparameters, ``Penalty(**options)``.
        screen: split into the solution's diagonal blocks first; default: for
            convex penalties (where it is exact).
        omega0: warm start (p, p), positive definite.
        progress: called as progress(iteration, values) after every iteration
            (values["objective"] on the scale of S).
        **solver_options: e.g. ``rho`` (admm), ``lambda0`` (bcd).

    Returns:
        GGMResult; a non-converged solve has ``converged=False`` and warns.
    """
    tensor, from_numpy = as_tensor(S, "S")
    out_dtype, out_device = tensor.dtype, tensor.device
    s = tensor.to(device=device or out_device, dtype=torch.float64)
    size = check_square_symmetric_finite(s, "S")
    s = symmetrized(s)
    penalty_obj = make_penalty(penalty, p, penalty_options)
    structure = make_groups(groups, size)
    if lam is None:
        if solver != "bcd" and solver is not bcd:
            _solver(solver, penalty_obj, structure, s, 1.0)  # an unknown name says so first
            raise ValueError("lam is required (a penalty weight >= 0)")
        lam = REFERENCE_TAU
    lam = check_positive(lam, "lam", allow_zero=True)
    solver_fn = _solver(solver, penalty_obj, structure, s, lam)
    eps = torch.finfo(out_dtype).eps if out_dtype.is_floating_point else None
    check_positive_semidefinite(s, "S", definite=lam == 0, eps=eps)
    options = dict(solver_options)
    _check_solver_options(solver_fn, options)
    if tol is not None:
        options["tol"] = check_positive(tol, "tol")
    if max_iter is not None:
        options["max_iter"] = check_int_in_range(max_iter, "max_iter", 1)
    start = None
    if omega0 is not None:
        start = as_tensor(omega0, "omega0")[0].to(device=s.device, dtype=torch.float64)
        if start.shape != s.shape:
            raise ValueError(f"omega0 must have shape {tuple(s.shape)}; got {tuple(start.shape)}")
        check_square_symmetric_finite(start, "omega0")
        check_positive_semidefinite(start, "omega0", definite=True)
        start = symmetrized(start)  # symmetric to 1e-8 passes the check; solvers need exact
    if screen is None:
        screen = penalty_obj.convex
    began = time.perf_counter()
    result = _solve_blocks(
        s, structure, penalty_obj, lam, solver_fn, start, screen, progress, options
    )
    result.info.update(
        solver=getattr(solver_fn, "__name__", str(solver_fn)),
        penalty=repr(penalty_obj),
        lam=lam,
        seconds=time.perf_counter() - began,
    )
    if from_numpy:
        return _convert(result, lambda t: t.cpu().numpy())
    return _convert(result, lambda t: t.to(device=out_device, dtype=out_dtype))


SCALED_RANGE = (1e-100, 1e100)
"""Where a solver's scaled option (bcd's lambda0) may lie on the unit scale: its square
and reciprocal stay finite in float64."""


def _check_solver_options(solver: Callable[..., GGMResult], options: dict[str, Any]) -> None:
    """Reject options the solver does not take, naming them (before any work)."""
    try:
        parameters = inspect.signature(solver).parameters.values()
    except (TypeError, ValueError):  # no signature to read: the call decides
        return
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return
    accepted = {p.name for p in parameters if p.kind is p.KEYWORD_ONLY}
    accepted -= {"omega0", "progress", "warn"}
    for key in options:
        if key not in accepted:
            name = getattr(solver, "__name__", str(solver))
            known = ", ".join(sorted(accepted))
            raise ValueError(f"solver {name!r} has no option {key!r} (its options: {known})")


def _solve_scaled(
    solver: Callable[..., GGMResult],
    s: torch.Tensor,
    structure: GroupStructure,
    penalty: Penalty,
    lam: float,
    omega0: torch.Tensor | None,
    progress: Progress | None,
    options: dict[str, Any],
    **call: Any,
) -> GGMResult:
    """``solver`` on S / c, c = mean(diag S) (Theta = c Omega, the penalty rewritten),
    mapped back: Omega = Theta / c, W = c W~, the KKT residual (units of S) times c,
    objectives (result, history, progress) + p log c; ``info["scale"]`` = c.

    A solver's ``scaled_options`` (name -> k) are parameters of its problem with the
    units of S^-k (bcd's coupling lambda0: k = -2); they are passed as value c^k.
    """
    scale = float(s.diagonal().mean())
    scaled_penalty, scaled_lam = rescale_penalty(penalty, lam, scale)
    options = dict(options)
    for name, power in getattr(solver, "scaled_options", {}).items():
        value = options.get(name, inspect.signature(solver).parameters[name].default)
        options[name] = value * scale**power
        if not SCALED_RANGE[0] <= abs(options[name]) <= SCALED_RANGE[1]:
            raise ValueError(
                f"{name}={value:.3g} has the units of S^{-power}: on the unit scale of this S "
                f"(mean variance {scale:.3g}) it is {options[name]:.3g}, outside what float64 "
                f"can solve; give it on S's scale (e.g. {name}={value:.3g} * mean_variance"
                f"**{-power})"
            )
    shift = s.shape[0] * math.log(scale)
    shifted = progress
    if progress is not None and shift != 0.0:

        def shifted(iteration: int, values: dict[str, float]) -> None:
            progress(iteration, {**values, "objective": values["objective"] + shift})

    result = solver(
        s / scale,
        structure,
        scaled_penalty,
        scaled_lam,
        omega0=None if omega0 is None else omega0 * scale,
        progress=shifted,
        **call,
        **options,
    )
    result.precision = result.precision / scale
    result.covariance = result.covariance * scale
    if result.sparse_precision is not None:
        result.sparse_precision = result.sparse_precision / scale
    if result.kkt_residual is not None:
        result.kkt_residual *= scale
    result.objective += shift
    if "objective" in result.history:
        result.history["objective"] = [v + shift for v in result.history["objective"]]
    result.info["scale"] = scale
    return result


def regularization_path(S: Any, lams: Sequence[float], **options: Any) -> list[GGMResult]:
    """Solve for every lam, largest first, each warm-started from the previous solution.

    Returns the results in the order of decreasing lam.
    """
    if len(lams) == 0:
        raise ValueError("lams must not be empty")
    ordered = sorted((check_positive(v, "lams", allow_zero=True) for v in lams), reverse=True)
    results: list[GGMResult] = []
    start = options.pop("omega0", None)
    for lam in ordered:
        result = solve(S, lam=lam, omega0=start, **options)
        results.append(result)
        start = result.precision
    return results


def _solver(
    solver: str | Callable[..., GGMResult],
    penalty: Penalty,
    structure: GroupStructure,
    s: torch.Tensor,
    lam: float,
) -> Callable[..., GGMResult]:
    if callable(solver):
        return solver
    if solver == "auto":
        return choose_solver(penalty, structure, s, lam)
    if solver not in SOLVERS:
        raise ValueError(
            f"solver must be 'auto', one of {sorted(SOLVERS)} or a callable; got {solver!r} "
            "(plugin solvers: use graphopt.ggm.solve)"
        )
    return SOLVERS[solver]


def _solve_blocks(
    s: torch.Tensor,
    structure: GroupStructure,
    penalty: Penalty,
    lam: float,
    solver: Callable[..., GGMResult],
    omega0: torch.Tensor | None,
    screen: bool,
    progress: Progress | None,
    options: dict[str, Any],
) -> GGMResult:
    """Run ``solver`` on each bin of screened blocks (``_pack``), each on its own scale
    (``_solve_scaled``); single nodes are 1 / S_ii."""
    size = s.shape[0]
    if lam == 0:  # no penalty: the maximum-likelihood Omega = S^-1 (every solver's answer)
        precision = symmetrized(torch.cholesky_inverse(torch.linalg.cholesky(s)))
        value = objective_value(precision, s, structure, penalty, 0.0)
        return GGMResult(
            precision,
            s.clone(),
            value,
            0,
            True,
            {},
            0.0,
            precision,
            {"blocks": [size]},
            duality_gap=0.0 if penalty.convex else None,
            stationarity=0.0,
        )
    began = time.perf_counter()
    blocks = screen_blocks(s, structure, lam) if screen else [np.arange(size)]
    screen_seconds = time.perf_counter() - began
    if len(blocks) == 1 and size > 1:
        result = _solve_scaled(solver, s, structure, penalty, lam, omega0, progress, options)
        result.info.update(blocks=[size], screen_seconds=screen_seconds)
        return result
    precision = torch.zeros_like(s)
    covariance = torch.zeros_like(s)
    sparse = torch.zeros_like(s)
    objective, kkt_squares, n_iter, converged = 0.0, 0.0, 0, True
    gap: float | None = 0.0
    kkt_known = True
    history: dict[str, list[float]] = {}
    counts: dict[str, int] = {}  # the solver's counters (info), summed over bins
    singletons = [block for block in blocks if len(block) == 1]
    if singletons:  # closed form: Omega_ii = 1 / S_ii
        index = torch.as_tensor(np.concatenate(singletons), device=s.device)
        variance = s[index, index]
        precision[index, index] = 1.0 / variance
        covariance[index, index] = variance
        sparse[index, index] = 1.0 / variance
        objective += float(torch.log(variance).sum()) + len(singletons)
    for number, packed in enumerate(_pack([b for b in blocks if len(b) > 1], PACK_SIZE)):
        index = torch.as_tensor(np.concatenate(packed), device=s.device)
        # blocks packed together: the entries between them are zero at the optimum,
        # so S there is set to 0 too (exact) and the solver sees a block-diagonal problem
        label = torch.repeat_interleave(
            torch.arange(len(packed), device=s.device),
            torch.as_tensor([len(b) for b in packed], device=s.device),
        )
        same = label[:, None] == label[None, :]
        part = _solve_scaled(
            solver,
            s[index][:, index] * same,
            structure.restrict(index.cpu().numpy()),
            penalty,
            lam,
            None if omega0 is None else omega0[index][:, index] * same,
            progress if number == 0 else None,
            options,
            warn=False,
        )
        grid = torch.meshgrid(index, index, indexing="ij")
        precision[grid] = part.precision
        covariance[grid] = part.covariance
        sparse[grid] = part.sparse_precision
        objective += part.objective
        kkt_known = kkt_known and part.kkt_residual is not None
        kkt_squares += (part.kkt_residual or 0.0) ** 2
        gap = None if gap is None or part.duality_gap is None else gap + part.duality_gap
        n_iter = max(n_iter, part.n_iter)
        converged = converged and part.converged
        if number == 0:
            history = part.history
        for key, value in part.info.items():
            if isinstance(value, int):
                counts[key] = counts.get(key, 0) + value
    if not converged:
        warn_not_converged(
            getattr(solver, "__name__", "solver"), options.get("max_iter", n_iter), "a block"
        )
    kkt = math.sqrt(kkt_squares) if kkt_known else None
    return GGMResult(
        precision=precision,
        covariance=covariance,
        objective=objective,
        n_iter=n_iter,
        converged=converged,
        history=history,
        kkt_residual=kkt,
        sparse_precision=sparse,
        info={
            "blocks": [len(b) for b in blocks if len(b) > 1],
            "singletons": len(singletons),
            "screen_seconds": screen_seconds,
            **counts,
        },
        duality_gap=gap,
        stationarity=None if kkt is None else stationarity(kkt, s),
    )


def _pack(blocks: list[np.ndarray], size: int) -> list[list[np.ndarray]]:
    """Consecutive blocks (largest first) gathered into bins of at most ``size`` nodes.

    A block larger than ``size`` is a bin of its own. One solve of a bin costs
    little more than one of its largest block: per-solve overhead, not
    arithmetic, dominates small blocks.
    """
    bins: list[list[np.ndarray]] = []
    total = 0
    for block in blocks:
        if bins and total + len(block) <= size:
            bins[-1].append(block)
            total += len(block)
        else:
            bins.append([block])
            total = len(block)
    return bins


def _convert(result: GGMResult, convert: Callable[[torch.Tensor], Any]) -> GGMResult:
    for name in ("precision", "covariance", "sparse_precision"):
        value = getattr(result, name)
        if isinstance(value, torch.Tensor):
            setattr(result, name, convert(value))
    return result
