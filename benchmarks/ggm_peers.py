"""The GGM benchmarks' shared parts: problems, one objective, and every solver side by side.

Problems (none of them graphopt's): the issue-3 anchor (the correlation of 2p
samples from scikit-learn's ``make_sparse_spd_matrix(p, alpha=0.98, ...)``), a
chain (AR(1) covariance rho^|i-j|, a tridiagonal precision) and a random sparse
graph (Erdos-Renyi precision with n close to p). Options: graphopt (``auto``,
and each solver by name), scikit-learn ``graphical_lasso(mode="cd")``, GGLasso
``block_SGL`` / ``ADMM_SGL`` and skggm's compiled QUIC (a separate venv, see
benchmarks/README.md). Each option runs in its own process with a thread count
and a time cap; every objective is recomputed by ``l1_objective``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOCS_IMAGES = HERE.parent / "docs" / "img"
QUIC_PYTHON = os.environ.get("QUIC_PYTHON", "/work/quic-venv/bin/python")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def anchor(p: int, seed: int = 0) -> np.ndarray:
    """Correlation matrix of 2p samples from issue 3's sparse SPD precision."""
    from sklearn.datasets import make_sparse_spd_matrix

    precision = make_sparse_spd_matrix(
        p, alpha=0.98, smallest_coef=0.1, largest_coef=0.4, norm_diag=True, random_state=seed
    )
    rng = np.random.default_rng(seed)
    x = rng.multivariate_normal(np.zeros(p), np.linalg.inv(precision), size=2 * p)
    return np.corrcoef(x, rowvar=False)


def chain(p: int, seed: int = 0, rho: float = 0.7) -> np.ndarray:
    """Sample covariance of 2p draws of an AR(1) series: covariance rho^|i-j|, precision
    tridiagonal (the banded / chain family)."""
    rng = np.random.default_rng(seed)
    n = 2 * p
    x = np.empty((n, p))
    x[:, 0] = rng.standard_normal(n)
    noise = rng.standard_normal((n, p)) * math.sqrt(1.0 - rho**2)
    for j in range(1, p):
        x[:, j] = rho * x[:, j - 1] + noise[:, j]
    return np.cov(x, rowvar=False, bias=True)


def random_graph(p: int, seed: int = 0, degree: float = 4.0) -> np.ndarray:
    """Sample covariance of n = p draws from an Erdos-Renyi precision (mean degree
    ``degree``, weights +-[0.3, 0.6], diagonally dominant, unit diagonal): singular S."""
    rng = np.random.default_rng(seed)
    edges = np.triu(rng.random((p, p)) < degree / p, 1)
    weights = rng.uniform(0.3, 0.6, (p, p)) * rng.choice([-1.0, 1.0], (p, p))
    a = np.where(edges, weights, 0.0)
    a = a + a.T
    a += np.diag(np.abs(a).sum(axis=1) + 0.5)
    d = 1.0 / np.sqrt(np.diag(a))
    precision = a * d[:, None] * d[None, :]
    factor = np.linalg.cholesky(np.linalg.inv(precision))
    x = rng.standard_normal((p, p)) @ factor.T
    return np.cov(x, rowvar=False, bias=True)


FAMILIES: dict[str, Callable[..., np.ndarray]] = {
    "anchor": anchor,
    "chain": chain,
    "random_graph": random_graph,
}


def l1_objective(precision: np.ndarray, s: np.ndarray, lam: float) -> float:
    """-log det + tr(S Omega) + lam sum_{i != j} |Omega_ij|; inf when not positive definite."""
    precision = 0.5 * (precision + precision.T)
    sign, logdet = np.linalg.slogdet(precision)
    if sign <= 0:
        return float("inf")
    off = np.abs(precision).sum() - np.abs(np.diag(precision)).sum()
    return float(-logdet + np.sum(s * precision) + lam * off)


class _PastCap(Exception):
    """Raised from graphopt's progress callback to stop a solve at the time cap."""


def run_graphopt(
    s: np.ndarray,
    lam: float,
    cap: float = math.inf,
    device: str | None = None,
    solver: str = "auto",
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """graphopt's solve, with the (seconds, objective) trace of its iterates (one block).

    Past ``cap`` seconds the solve is stopped and only the trace is returned.
    """
    from graphopt.solvers.ggm import make_groups, screen_blocks, solve

    began = time.perf_counter()
    trace: list[tuple[float, float]] = []

    def record(iteration: int, values: dict[str, float]) -> None:
        trace.append((time.perf_counter() - began, values["objective"]))
        if trace[-1][0] > cap:
            raise _PastCap

    import torch

    blocks = screen_blocks(torch.from_numpy(s), make_groups(None, s.shape[0]), lam)
    one_block = len(blocks) == 1
    try:
        result = solve(s, lam=lam, device=device, progress=record, solver=solver)
    except _PastCap:
        return None, {"trace": trace if one_block else [], "n_iter": len(trace)}
    if not result.converged:
        raise RuntimeError("graphopt did not converge")
    counters = ("newton_steps", "admm_iterations", "float32_steps")
    return result.precision, {
        "trace": trace if one_block else [],
        "n_iter": result.n_iter,
        "duality_gap": result.duality_gap,
        "solver": result.info["solver"],
        "largest_block": len(blocks[0]),
        **{key: result.info[key] for key in counters if key in result.info},
    }


def run_sklearn(s: np.ndarray, lam: float) -> tuple[np.ndarray, dict[str, Any]]:
    from sklearn.covariance import graphical_lasso

    return graphical_lasso(s, alpha=lam, mode="cd", tol=1e-4)[1], {}


def run_gglasso_block(s: np.ndarray, lam: float) -> tuple[np.ndarray, dict[str, Any]]:
    from gglasso.solver.single_admm_solver import block_SGL

    return block_SGL(s, lam, np.eye(s.shape[0]), tol=1e-7)["Theta"], {}


def run_gglasso_admm(s: np.ndarray, lam: float) -> tuple[np.ndarray, dict[str, Any]]:
    from gglasso.solver.single_admm_solver import ADMM_SGL

    return ADMM_SGL(s, lam, np.eye(s.shape[0]), tol=1e-7)[0]["Theta"], {}


def run_quic(
    s: np.ndarray, lam: float, cap: float = math.inf, tol: float = 1e-6
) -> tuple[np.ndarray, dict[str, Any]]:
    """skggm's QUIC (``ggm_quic.py`` in the QUIC venv), tol 1e-6 (skggm's default)."""
    if not Path(QUIC_PYTHON).exists():
        raise RuntimeError(f"no QUIC venv at {QUIC_PYTHON} (see benchmarks/README.md)")
    with tempfile.TemporaryDirectory() as folder:
        s_path, out = Path(folder) / "s.npy", Path(folder) / "theta.npy"
        np.save(s_path, s)
        command = [QUIC_PYTHON, str(HERE / "ggm_quic.py"), str(s_path), str(lam), str(tol)]
        command += ["1000", str(out)]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=None if math.isinf(cap) else cap
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip().splitlines()[-1])
        report = json.loads(done.stdout.strip().splitlines()[-1])
        return np.load(out), {"n_iter": report["n_iter"], "trace": report["trace"]}


OPTIONS: dict[str, Callable[..., tuple[np.ndarray | None, dict[str, Any]]]] = {
    "graphopt": run_graphopt,
    "graphopt_newton": functools.partial(run_graphopt, solver="newton"),
    "graphopt_admm": functools.partial(run_graphopt, solver="admm"),
    "sklearn_cd": run_sklearn,
    "gglasso_block_SGL": run_gglasso_block,
    "gglasso_ADMM_SGL": run_gglasso_admm,
    "quic": run_quic,
}
PEERS = ("sklearn_cd", "gglasso_block_SGL", "gglasso_ADMM_SGL", "quic")
CAPPED = ("graphopt", "graphopt_newton", "graphopt_admm", "quic")  # stop themselves


@contextlib.contextmanager
def thread_count(threads: int | None) -> Iterator[None]:
    """The BLAS/OpenMP thread variables a child process starts with (None: defaults)."""
    saved = {key: os.environ.get(key) for key in THREAD_VARIABLES}
    if threads is not None:
        os.environ.update({key: str(threads) for key in THREAD_VARIABLES})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _child(name: str, s_path: str, lam: float, repeats: int, cap: float, queue: Any) -> None:
    warnings.simplefilter("ignore")
    sys.stdout = open(os.devnull, "w")  # GGLasso prints every solve  # noqa: SIM115
    run = OPTIONS[name]
    if name in CAPPED:
        run = functools.partial(run, cap=cap)
    try:
        import torch

        threads = os.environ.get("OMP_NUM_THREADS")
        if threads:
            torch.set_num_threads(int(threads))
        run(anchor(30), 0.2)  # warm-up: imports, numba JIT, first calls
        s = np.load(s_path)
        if repeats > 1:  # and the first call at this size (allocations, workspace queries)
            run(s, lam)
        seconds = []
        for _ in range(repeats):
            began = time.perf_counter()
            precision, extra = run(s, lam)
            seconds.append(time.perf_counter() - began)
            if precision is None:
                objectives = [f for _, f in extra["trace"]]
                best = f"; best iterate {min(objectives):.9f}" if objectives else ""
                queue.put(
                    {
                        "error": f"stopped at the cap ({cap:.0f} s) after {extra['n_iter']} "
                        f"iterations{best}",
                        "capped": True,
                        **extra,
                    }
                )
                return
        queue.put(
            {
                "seconds": statistics.median(seconds),
                "runs": seconds,
                "objective": l1_objective(precision, s, lam),
                "nonzero": int(np.count_nonzero(np.abs(precision) > 1e-12)),
                **extra,
            }
        )
    except Exception as err:  # a peer failing (e.g. sklearn's "non SPD") is a result
        queue.put({"error": f"{type(err).__name__}: {err}"[:200]})


def measure(
    name: str, s: np.ndarray, lam: float, cap: float, repeats: int, threads: int | None
) -> dict[str, Any]:
    """``repeats`` timed runs of ``name`` on S in one process with ``threads`` BLAS/OpenMP
    threads, killed past ``cap`` seconds a run (graphopt and QUIC stop themselves)."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    with tempfile.TemporaryDirectory() as folder:
        s_path = str(Path(folder) / "s.npy")
        np.save(s_path, s)
        with thread_count(threads):
            process = context.Process(target=_child, args=(name, s_path, lam, repeats, cap, queue))
            process.start()
        try:
            result = queue.get(timeout=cap * (repeats + (repeats > 1)) + 120)
        except Exception:
            result = {"error": f"killed past the cap ({cap:.0f} s)", "capped": True}
        finally:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join()
    result["threads"] = threads
    return result


def matched_time(trace: list[tuple[float, float]], target: float) -> float | None:
    """The first time an iterate's objective in ``trace`` is <= ``target``."""
    reached = [t for t, f in trace if f <= target]
    return reached[0] if reached else None


def machine(note: str | None = None) -> str:
    """The machine line of a report, with ``note`` (e.g. its load) appended."""
    import platform

    line = f"{platform.processor() or platform.machine()}, {mp.cpu_count()} cores"
    return f"{line}, {note}" if note else line


def row_lines(rows: list[dict[str, Any]], options: tuple[str, ...]) -> list[str]:
    """A markdown table of benchmark rows ({"family", "p", "lam", option: result}): every
    option's time and objective, its gap to the row's best objective, graphopt's speed-up,
    and the speed-up at matched accuracy (graphopt's iterates reaching the option's
    objective; for QUIC also its iterates reaching graphopt's)."""
    lines = [
        "| problem | p | lam | option | threads | seconds | objective | above best "
        "| speed-up of graphopt | graphopt at this objective |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        finite = [row[n]["objective"] for n in options if "objective" in row.get(n, {})]
        for name in options:
            if "seconds" not in row.get(name, {"seconds": 0}):  # stopped at the cap
                finite += [f for _, f in row[name].get("trace", [])]
        best = min(finite) if finite else float("nan")
        ours = row.get("graphopt", {})
        head = f"| {row['family']} | {row['p']} | {row['lam']:g} |"
        for name in options:
            if name not in row:
                lines.append(
                    f"{head} {name} | | - | not run in this row (see the commands) | | | |"
                )
                continue
            v = row[name]
            threads = v.get("threads") or "all"
            if "seconds" not in v:
                lines.append(f"{head} {name} | {threads} | - | {v['error']} | | | |")
                continue
            above = (v["objective"] - best) / abs(best)
            ratio = matched = ""
            if name != "graphopt" and "seconds" in ours:
                ratio = f"{v['seconds'] / ours['seconds']:.2f}x"
            if name != "graphopt":
                reached = matched_time(ours.get("trace", []), v["objective"])
                if reached:
                    matched = f"{reached:.3f} s ({v['seconds'] / reached:.2f}x)"
            if name == "quic" and "objective" in ours:
                caught = matched_time(v.get("trace", []), ours["objective"])
                matched += f"; QUIC reaches graphopt's at {caught:.2f} s" if caught else ""
            lines.append(
                f"{head} {name} | {threads} | {v['seconds']:.3f} | {v['objective']:.9f} | "
                f"{above:.1e} | {ratio} | {matched} |"
            )
    return lines


def plot_rows(rows: list[dict[str, Any]], options: tuple[str, ...], paths: list[Path]) -> None:
    """One panel per row: graphopt's (and QUIC's) iterates against time, the other options'
    answers as points, as the objective's relative gap to the row's best objective."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def finished(row: dict[str, Any]) -> bool:  # else the best is graphopt's own last iterate
        return any("objective" in row.get(name, {}) for name in options)

    rows = [r for r in rows if r.get("graphopt", {}).get("trace") and finished(r)]
    if not rows:
        return
    columns = min(3, len(rows))
    lines = -(-len(rows) // columns)
    figure, axes = plt.subplots(lines, columns, figsize=(5.5 * columns, 4 * lines), squeeze=False)
    markers = dict(zip(options, "*o^sDvP", strict=False))
    colors = {name: f"C{i}" for i, name in enumerate(options)}  # the same in every panel
    for axis, row in zip(axes.flat, rows, strict=False):
        objectives = [row[n]["objective"] for n in options if "objective" in row.get(n, {})]
        objectives += [f for _, f in row["graphopt"]["trace"]]
        best = min(objectives)

        def gap(value: float, best: float = best) -> float:
            return max((value - best) / abs(best), 1e-16)

        for name, style in (("graphopt", "k-"), ("quic", "C3--")):
            trace = row.get(name, {}).get("trace", [])
            if trace:
                times, values = zip(*trace, strict=True)
                axis.plot(times, [gap(f) for f in values], style, label=f"{name} iterates")
        for name in options:
            v = row.get(name, {})
            if "objective" in v:
                axis.plot(v["seconds"], gap(v["objective"]), markers[name], color=colors[name],
                          markersize=8, label=name)  # fmt: skip
        axis.set_yscale("log")
        axis.set_xscale("log")
        title = f"{row['family']}, p = {row['p']}, lam = {row['lam']:g}"
        if row.get("threads"):
            title += f", {row['threads']} thread{'s' if row['threads'] > 1 else ''}"
        if row["graphopt"].get("capped"):  # the optimum is unknown: say what "best" is
            title += "\ngraphopt stopped at the cap; best = its last iterate"
        axis.set(
            title=title,
            xlabel="seconds",
            ylabel="objective above the best (relative)",
        )
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(rows) :]:
        axis.set_visible(False)
    figure.tight_layout()
    for path in paths:
        figure.savefig(path, dpi=110)
    plt.close(figure)
