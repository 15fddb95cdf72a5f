"""``graphopt eigen``: the k smallest eigenpairs of a matrix file.

The matrix is a scipy sparse ``.npz`` (``scipy.sparse.save_npz``), an ``.npz``
holding a single dense array, or a dense ``.npy`` (never unpickled; see
``graphopt.cli.files``). With ``--adjacency`` it is
a graph's weighted adjacency and its ``--laplacian`` is solved. The pairs go
to ``--out`` (``.npz`` with ``values``, ``vectors``, ``residuals``); a JSON
report (method, converged, max residual, seconds) is printed and, with
``--report``, written to a file.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from graphopt.cli import errors_named


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eigen",
        help="k smallest eigenpairs of a (Laplacian) matrix",
        description="Compute the k smallest eigenpairs of a symmetric matrix stored in a file.",
    )
    parser.add_argument("matrix", type=Path, help="MATRIX.npz (scipy sparse or one array) or .npy")
    parser.add_argument("-k", type=int, default=16, help="number of eigenpairs (default 16)")
    parser.add_argument(
        "--method", help="registered eigensolver name (default: the automatic choice)"
    )
    parser.add_argument(
        "--adjacency", action="store_true", help="MATRIX is an adjacency: solve its Laplacian"
    )
    parser.add_argument(
        "--laplacian",
        default="combinatorial",
        choices=("combinatorial", "symmetric"),
        help="Laplacian of an --adjacency input (default combinatorial)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output pairs (.npz)")
    parser.add_argument("--report", type=Path, help="also write the JSON report here")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from graphopt.cli.files import check_outputs, read_matrix
    from graphopt.eigen import smallest_eigenpairs
    from graphopt.io import atomic_write, atomic_write_json
    from graphopt.solvers.laplacian import laplacian

    outputs = {"--out": args.out}
    if args.report:
        outputs["--report"] = args.report
    check_outputs({"MATRIX": args.matrix}, outputs)
    matrix = read_matrix(args.matrix, (".npz", ".npy"))
    names = {
        "L": str(args.matrix),
        "adjacency": str(args.matrix),
        "eigensolver": "--method",
        "k": "-k",
    }
    with errors_named(names):
        if args.adjacency:
            matrix = laplacian(matrix, kind=args.laplacian)
        start = time.perf_counter()
        result = smallest_eigenpairs(matrix, args.k, method=args.method)
    seconds = time.perf_counter() - start

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(
                handle,
                values=result.values,
                vectors=result.vectors,
                residuals=result.residuals,
            )

    atomic_write(args.out, write)
    report = {
        "matrix": str(args.matrix),
        "n": int(matrix.shape[0]),
        "k": args.k,
        "method": result.method,
        "converged": result.converged,
        "max_residual": float(np.max(result.residuals)),
        "residuals": [float(r) for r in result.residuals],
        "values": [float(v) for v in result.values],
        "seconds": round(seconds, 6),
        "out": str(args.out),
    }
    if args.report:
        atomic_write_json(args.report, report)
    print(json.dumps(report, indent=2))
    return 0
