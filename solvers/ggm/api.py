"""``solve``: validate, screen into blocks, run a solver per bin of blocks, assemble.

Penalties and solvers are objects here (a ``Penalty`` instance, a solver
callable with the signature of ``admm``); the names of graphopt's built-ins
("l1", "l2p"; "admm", "bcd") are understood directly. Names registered by
third-party plugins are resolved one layer up, by ``graphopt.ggm.solve``,
which looks them up in the plugin registry and calls this function with the
objects: solvers never import the graphopt core.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from graphopt.solvers.ggm.admm import Progress, admm
from graphopt.solvers.ggm.bcd import REFERENCE_TAU, bcd
from graphopt.solvers.ggm.groups import GroupStructure, make_groups
from graphopt.solvers.ggm.objective import objective as objective_value
from graphopt.solvers.ggm.penalties import L1Penalty, L2pPenalty, Penalty
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

SOLVERS: dict[str, Callable[..., GGMResult]] = {"admm": admm, "bcd": bcd}
"""Built-in solvers by name (also registered as ``ggm_solver`` plugins)."""


def make_penalty(penalty: str | Penalty, p: float | None = None) -> Penalty:
    """A ``Penalty`` from a built-in name (with exponent ``p`` for "l2p") or an instance."""
    if isinstance(penalty, Penalty):
        if p is not None:
            raise ValueError("p is only used with a penalty given by name")
        return penalty
    if penalty not in PENALTIES:
        raise ValueError(
            f"penalty must be one of {sorted(PENALTIES)} or a Penalty instance; got {penalty!r} "
            "(plugin penalties: use graphopt.ggm.solve)"
        )
    if penalty == "l1":
        if p not in (None, 1, 1.0):
            raise ValueError(f"p must be None or 1 for penalty 'l1'; got {p!r}")
        return L1Penalty()
    return L2pPenalty() if p is None else L2pPenalty(p)


def solve(
    S: Any,
    penalty: str | Penalty = "l1",
    groups: Any = None,
    lam: float | None = None,
    solver: str | Callable[..., GGMResult] = "admm",
    tol: float | None = None,
    max_iter: int | None = None,
    device: str | torch.device | None = None,
    *,
    p: float | None = None,
    screen: bool | None = None,
    omega0: Any = None,
    progress: Progress | None = None,
    **solver_options: Any,
) -> GGMResult:
    """Minimize -log det Omega + tr(S Omega) + 2 sum_g lam w_g phi(||Omega_g||_2) over Omega > 0.

    Args:
        S: sample covariance (p, p), symmetric positive semidefinite with a
            positive diagonal; numpy (answered with numpy) or torch (answered
            with torch on its device).
        penalty: "l1" (phi(t) = t: graphical / group lasso), "l2p" (t^p) or a ``Penalty``.
        groups: None/"singleton" (l1 graphical lasso), "node", "important:K", a
            ``GroupStructure`` or a list of groups of (i, j) pairs.
        lam: penalty weight >= 0; for ``solver="bcd"`` the paper's tau
            (default 20, the reference value).
        solver: "admm" (exact problem), "bcd" (the [GGM] coupled BCD) or a callable.
        tol: stopping tolerance; None takes the solver's default.
        max_iter: iteration limit; None takes the solver's default.
        device: where to compute (float64); default the input's device.
        p: the exponent of "l2p", in (0, 1] (default 0.9).
        screen: split into the solution's diagonal blocks first; default: for
            convex penalties (where it is exact).
        omega0: warm start (p, p), positive definite.
        progress: called as progress(iteration, values) after every iteration.
        **solver_options: e.g. ``rho`` (admm), ``lambda0`` (bcd).

    Returns:
        GGMResult; a non-converged solve has ``converged=False`` and warns.
    """
    tensor, from_numpy = as_tensor(S, "S")
    out_dtype, out_device = tensor.dtype, tensor.device
    s = tensor.to(device=device or out_device, dtype=torch.float64)
    size = check_square_symmetric_finite(s, "S")
    s = 0.5 * (s + s.T)
    penalty_obj = make_penalty(penalty, p)
    solver_fn = _solver(solver)
    if lam is None:
        if solver_fn is not bcd:
            raise ValueError("lam is required (a penalty weight >= 0)")
        lam = REFERENCE_TAU
    lam = check_positive(lam, "lam", allow_zero=True)
    structure = make_groups(groups, size)
    check_positive_semidefinite(s, "S", definite=lam == 0)
    options = dict(solver_options)
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


def _solver(solver: str | Callable[..., GGMResult]) -> Callable[..., GGMResult]:
    if callable(solver):
        return solver
    if solver not in SOLVERS:
        raise ValueError(
            f"solver must be one of {sorted(SOLVERS)} or a callable; got {solver!r} "
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
    """Run ``solver`` on each bin of screened blocks (``_pack``); single nodes are 1 / S_ii."""
    size = s.shape[0]
    if lam == 0 and solver is admm:  # no penalty: the maximum-likelihood Omega = S^-1
        precision = torch.cholesky_inverse(torch.linalg.cholesky(s))
        covariance = s.clone()
        value = objective_value(precision, s, structure, penalty, 0.0)
        return GGMResult(
            precision, covariance, value, 0, True, {}, 0.0, precision, {"blocks": [size]}
        )
    began = time.perf_counter()
    blocks = screen_blocks(s, structure, lam) if screen and lam > 0 else [np.arange(size)]
    screen_seconds = time.perf_counter() - began
    if len(blocks) == 1:
        result = solver(s, structure, penalty, lam, omega0=omega0, progress=progress, **options)
        result.info.update(blocks=[size], screen_seconds=screen_seconds)
        return result
    precision = torch.zeros_like(s)
    covariance = torch.zeros_like(s)
    sparse = torch.zeros_like(s)
    objective, kkt_squares, n_iter, converged = 0.0, 0.0, 0, True
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
        sub_s = s[index][:, index] * same
        start = None if omega0 is None else omega0[index][:, index] * same
        part = solver(
            sub_s,
            structure.restrict(index.cpu().numpy()),
            penalty,
            lam,
            omega0=start,
            progress=progress if number == 0 else None,
            warn=False,
            **options,
        )
        grid = torch.meshgrid(index, index, indexing="ij")
        precision[grid] = part.precision
        covariance[grid] = part.covariance
        sparse[grid] = part.sparse_precision
        objective += part.objective
        kkt_squares += (part.kkt_residual or 0.0) ** 2
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
    return GGMResult(
        precision=precision,
        covariance=covariance,
        objective=objective,
        n_iter=n_iter,
        converged=converged,
        history=history,
        kkt_residual=math.sqrt(kkt_squares) if penalty.convex else None,
        sparse_precision=sparse,
        info={
            "blocks": [len(b) for b in blocks if len(b) > 1],
            "singletons": len(singletons),
            "screen_seconds": screen_seconds,
            **counts,
        },
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
