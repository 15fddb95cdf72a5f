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

from graphopt.cli import CLIError, errors_named


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
    ggm.add_argument(
        "--lam",
        type=float,
        help="penalty weight >= 0, on the scale of S (required, except with --solver bcd, "
        "whose default is the reference tau of METHODS.md)",
    )
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
    ggm.add_argument("--tol", type=float, help="relative certificate tolerance (solver default)")
    ggm.add_argument("--max-iter", type=int, dest="max_iter", help="iteration cap (solver default)")
    ggm.add_argument("--device", help="torch device (default cpu)")
    ggm.add_argument("--output", "-o", help="precision .npy (default INPUT.precision.npy)")
    ggm.add_argument("--report", help="JSON report (default OUTPUT with .json)")
    ggm.add_argument("--plot", help="write a heatmap / sparsity PNG here")
    ggm.add_argument("--quiet", action="store_true", help="no progress bar")
    ggm.set_defaults(func=run_ggm)


def run_ggm(args: argparse.Namespace) -> int:
    import numpy as np

    from graphopt.cli.files import check_outputs, input_file, read_matrix
    from graphopt.ggm import solve
    from graphopt.io import atomic_write, atomic_write_json
    from graphopt.solvers.validation import check_device

    began = time.perf_counter()
    with errors_named({"device": "--device"}):
        check_device(args.device, "device")
    if args.lam is None and args.solver != "bcd":
        raise CLIError(f"--lam is required with --solver {args.solver} (only bcd has a default)")
    penalty_options = _penalty_options(args.penalty_options)
    source = Path(args.input)
    output = Path(args.output) if args.output else source.with_suffix(".precision.npy")
    report_path = Path(args.report) if args.report else output.with_suffix(".json")
    inputs = {"INPUT": source}
    if _groups_file(args.groups):
        inputs["--groups"] = input_file(args.groups)
    outputs = {"--output": output, "--report": report_path}
    if args.plot:
        outputs["--plot"] = Path(args.plot)
    check_outputs(inputs, outputs)
    matrix = _numeric_matrix(read_matrix(source, (".npy", ".csv")), source)
    if args.data:
        if matrix.shape[0] < 2:
            raise CLIError(f"{source}: --data needs at least 2 samples (rows); got {matrix.shape}")
        s = np.cov(matrix, rowvar=False, bias=True)
    else:
        s = matrix
    s = np.atleast_2d(s)
    groups = _groups(args.groups)
    read_seconds = time.perf_counter() - began
    names = {
        "S": str(source),
        "p": "--p",
        "ggm_solver": "--solver",
        "groups": str(args.groups) if _groups_file(args.groups) else "--groups",
        "important": "--groups",
    }
    progress, bar = _progress(args.quiet, args.max_iter)
    try:
        with errors_named(names):
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
                penalty_options=penalty_options,
                progress=progress,
            )
    finally:
        if bar is not None:
            bar.close()
    precision = np.asarray(result.precision)
    if not np.isfinite(precision).all():  # a solver bug, never a user error
        raise RuntimeError(f"the {args.solver} solver returned a non-finite precision matrix")

    def write_precision(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.save(handle, precision)

    atomic_write(output, write_precision)
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


def _numeric_matrix(array: Any, source: Path) -> Any:
    """``array`` as a finite float64 matrix (1-D or 2-D), or ``CLIError`` naming ``source``."""
    import numpy as np

    from graphopt.solvers.validation import as_numpy

    with errors_named({"matrix": str(source)}):
        array = as_numpy(array, "matrix").astype(np.float64)
    if array.ndim not in (1, 2) or array.size == 0:
        raise CLIError(f"{source}: must hold a non-empty matrix; got shape {array.shape}")
    if not np.isfinite(array).all():
        row, column = np.argwhere(~np.isfinite(np.atleast_2d(array)))[0]
        raise CLIError(
            f"{source}: contains NaN or infinite values (first at row {row}, column {column})"
        )
    return array


def _groups_file(spec: str) -> bool:
    return not (spec in ("singleton", "node") or spec.startswith("important:"))


def _groups(spec: str) -> Any:
    from graphopt.cli.files import input_file

    if not _groups_file(spec):
        return spec
    path = Path(spec)
    if path.suffix != ".json":
        raise CLIError(
            f"--groups must be singleton, node, important:K or a .json file; got {spec!r}"
        )
    try:
        return json.loads(input_file(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CLIError(f"{path}: is not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise CLIError(f"{path}: invalid JSON ({err})") from None


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


def _plot(precision: Any, path: Path) -> None:
    import matplotlib
    import numpy as np

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
