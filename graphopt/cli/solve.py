"""``graphopt solve ggm``: a sparse precision matrix from a covariance or data file.

Reads a covariance matrix (.npy or .csv) or, with ``--data``, samples (rows)
from .csv/.npy; writes the precision matrix (.npy) and a JSON report
(objective, iterations, convergence, KKT residual, timings); ``--plot`` adds a
heatmap and sparsity-pattern PNG.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from graphopt.cli import CLIError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "solve",
        help="run a standalone solver (ggm: sparse precision matrix)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    problems = parser.add_subparsers(dest="problem", metavar="PROBLEM", required=True)
    ggm = problems.add_parser("ggm", help="l1 / group / l2,p penalized Gaussian graphical model")
    ggm.add_argument("input", help="covariance matrix (.npy/.csv), or data with --data")
    ggm.add_argument("--data", action="store_true", help="input holds samples (rows), not S")
    ggm.add_argument("--lam", type=float, help="penalty weight (required for admm)")
    ggm.add_argument("--penalty", default="l1", help="registered penalty name (l1, l2p, ...)")
    ggm.add_argument("--p", type=float, dest="exponent", help="exponent of l2p in (0, 1]")
    ggm.add_argument(
        "--penalty-option",
        action="append",
        default=[],
        dest="penalty_options",
        metavar="KEY=VALUE",
        help="a hyperparameter of the penalty (repeatable; VALUE is read as a YAML scalar)",
    )
    ggm.add_argument(
        "--solver", default="auto", help="registered GGM solver (auto, newton, admm, bcd, ...)"
    )
    ggm.add_argument(
        "--groups", default="singleton", help="singleton | node | important:K | groups.json"
    )
    ggm.add_argument("--tol", type=float)
    ggm.add_argument("--max-iter", type=int, dest="max_iter")
    ggm.add_argument("--device", help="torch device (default cpu)")
    ggm.add_argument("--output", "-o", help="precision .npy (default INPUT.precision.npy)")
    ggm.add_argument("--report", help="JSON report (default OUTPUT with .json)")
    ggm.add_argument("--plot", help="write a heatmap / sparsity PNG here")
    ggm.add_argument("--quiet", action="store_true", help="no progress bar")
    ggm.set_defaults(func=run_ggm)


def run_ggm(args: argparse.Namespace) -> int:
    from graphopt.ggm import solve
    from graphopt.io import atomic_write, atomic_write_json

    began = time.perf_counter()
    source = Path(args.input)
    matrix = _read_matrix(source)
    s = np.cov(matrix, rowvar=False, bias=True) if args.data else matrix
    s = np.atleast_2d(s)
    groups = _groups(args.groups)
    read_seconds = time.perf_counter() - began
    progress, bar = _progress(args.quiet, args.max_iter)
    try:
        result = solve(
            s,
            penalty=args.penalty,
            groups=groups,
            lam=args.lam,
            solver=args.solver,
            tol=args.tol,
            max_iter=args.max_iter,
            device=args.device,
            p=args.exponent,
            penalty_options=_penalty_options(args.penalty_options),
            progress=progress,
        )
    finally:
        if bar is not None:
            bar.close()
    precision = np.asarray(result.precision)
    output = Path(args.output) if args.output else source.with_suffix(".precision.npy")
    report_path = Path(args.report) if args.report else output.with_suffix(".json")
    atomic_write(output, lambda tmp: np.save(tmp.open("wb"), precision))
    report: dict[str, Any] = {
        "input": str(source),
        "p": int(precision.shape[0]),
        "penalty": args.penalty,
        "solver": args.solver,
        "lam": result.info.get("lam"),
        "groups": args.groups,
        "objective": result.objective,
        "n_iter": result.n_iter,
        "converged": result.converged,
        "kkt_residual": result.kkt_residual,
        "nonzero_offdiagonal": int(
            np.count_nonzero(precision) - np.count_nonzero(np.diag(precision))
        ),
        "blocks": result.info.get("blocks"),
        "timings": {
            "read_seconds": read_seconds,
            "solve_seconds": result.info.get("seconds"),
            "total_seconds": time.perf_counter() - began,
        },
        "precision_file": str(output),
    }
    if args.plot:
        _plot(precision, Path(args.plot))
        report["plot_file"] = args.plot
    atomic_write_json(report_path, report)
    print(json.dumps(report, indent=2))
    return 0


def _read_matrix(path: Path) -> np.ndarray:
    if not path.exists():
        raise FileNotFoundError(f"input file {str(path)!r} does not exist")
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if path.suffix == ".csv":
        return _read_csv(path)
    raise CLIError(f"input must be a .npy or .csv file; got {path.name!r}")


def _read_csv(path: Path) -> np.ndarray:
    """Numbers of a CSV; a first row that is not numeric is taken as a header."""
    with path.open(encoding="utf-8") as handle:
        first = handle.readline()
    try:
        [float(v) for v in first.strip().split(",")]
        skip = 0
    except ValueError:
        skip = 1
    return np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2)


def _groups(spec: str) -> Any:
    if spec in ("singleton", "node") or spec.startswith("important:"):
        return spec
    path = Path(spec)
    if path.suffix != ".json":
        raise CLIError(
            f"--groups must be singleton, node, important:K or a .json file; got {spec!r}"
        )
    if not path.exists():
        raise FileNotFoundError(f"groups file {spec!r} does not exist")
    return json.loads(path.read_text(encoding="utf-8"))


def _penalty_options(items: list[str]) -> dict[str, Any]:
    """``--penalty-option KEY=VALUE`` items as a dict, each VALUE a YAML scalar."""
    import contextlib

    import yaml

    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"--penalty-option must be KEY=VALUE; got {item!r}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise CLIError(f"--penalty-option {key.strip()}: cannot read {text!r}: {err}") from err
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, dict | list):
            raise CLIError(f"--penalty-option {key.strip()} must be a scalar; got {text!r}")
        options[key.strip()] = value
    return options


def _progress(quiet: bool, max_iter: int | None) -> tuple[Any, Any]:
    """A tqdm bar fed by the solver's per-iteration callback (stderr)."""
    if quiet:
        return None, None
    from tqdm.auto import tqdm

    bar = tqdm(total=max_iter, desc="ggm", unit="it", delay=1.0, leave=False)

    def progress(iteration: int, values: dict[str, float]) -> None:
        bar.update(1)
        bar.set_postfix(objective=f"{values['objective']:.8g}", refresh=False)

    return progress, bar


def _plot(precision: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from graphopt.io import atomic_write

    figure, (heat, pattern) = plt.subplots(1, 2, figsize=(10, 4.5))
    off = precision - np.diag(np.diag(precision))
    bound = float(np.abs(off).max()) or 1.0
    image = heat.imshow(off, cmap="RdBu_r", vmin=-bound, vmax=bound)
    heat.set_title("precision (off-diagonal)")
    figure.colorbar(image, ax=heat, shrink=0.8)
    pattern.spy(precision, markersize=max(0.5, 200 / precision.shape[0]))
    pattern.set_title(f"sparsity: {np.count_nonzero(off)} nonzero off-diagonal")
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    plt.close(figure)
