"""k = 16 smallest eigenpairs of a high-dimensional kNN Laplacian, every solver side by side.

The graph: n standard-normal points in 32 dimensions, symmetrized 10-nearest-
neighbour connectivity (scikit-learn ``NearestNeighbors``), combinatorial
Laplacian L = D - W; built once per n. The options, run on the same L in the
same session: scipy ``eigsh`` on the flipped operator c I - L (``which="LA"``),
scipy ``eigsh(sigma=-1e-3, which="LM")`` (shift-invert), scipy ``lobpcg``
with and without a pyamg preconditioner, ``torch.lobpcg``, dense
``torch.linalg.eigh`` and graphopt's automatic choice
(``graphopt.eigen.smallest_eigenpairs`` with no method). Every option aims at
relative residual ||L u - l u|| / ||L||_inf <= 1e-6 (its own tolerance set to
1e-7) and the residual is recomputed here the same way for all.

Each run is a fresh subprocess with a wall-clock cap: past the cap it is
killed and reported as "skipped past cap"; an option past the cap at one n is
not retried at larger n, and dense eigh is skipped where its measured time
scaled by n^3 predicts a run past the cap. The fast options (flipped ARPACK
and the automatic choice) run ``--repeats`` times, interleaved, and report
the median. Every run uses one BLAS/OpenMP/torch thread (``OMP_NUM_THREADS``,
``OPENBLAS_NUM_THREADS``): on this shared 2-core machine a threaded BLAS made
ARPACK 10-20x slower (threads spin on its small level-2 calls) and the same
setting for every option keeps the comparison fair. A second table sweeps
small n for the dense/ARPACK crossover the automatic choice uses.

    .venv/bin/python benchmarks/eigen_knn.py            # n = 5,000, 20,000, 100,000
    .venv/bin/python benchmarks/eigen_knn.py --quick    # n = 2,000, 5,000
    .venv/bin/python benchmarks/eigen_knn.py --device cuda --name gpu_eigen   # GPU options
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
K = 16
NEIGHBOURS = 10
DIMENSIONS = 32
SOLVER_TOL = 1e-7
TARGET = 1e-6
THREADS = 1
DENSE_MAX_N = 30_000
"""Dense eigh holds n^2 float64 plus workspace: 7 GB at 30,000, 80 GB at 100,000."""
"""BLAS/OpenMP threads of every run (see the module doc)."""

CPU_OPTIONS = (
    "scipy_eigsh_flipped",
    "graphopt_auto",
    "scipy_eigsh_shift_invert",
    "scipy_lobpcg",
    "scipy_lobpcg_amg",
    "torch_lobpcg",
    "dense_eigh",
)
GPU_OPTIONS = ("graphopt_auto", "lanczos_torch", "dense_eigh", "torch_lobpcg")
REPEATED = ("scipy_eigsh_flipped", "graphopt_auto", "lanczos_torch")
CROSSOVER_SIZES = (250, 500, 1000, 1500, 2000, 3000)


def knn_laplacian(n: int, seed: int = 0):  # -> scipy.sparse.csr_array
    """Combinatorial Laplacian of the symmetrized 10-NN graph of n Gaussian points in 32-D."""
    import numpy as np
    import scipy.sparse as sp
    from sklearn.neighbors import NearestNeighbors

    points = np.random.default_rng(seed).standard_normal((n, DIMENSIONS))
    directed = NearestNeighbors(n_neighbors=NEIGHBOURS + 1).fit(points)
    adjacency = directed.kneighbors_graph(points, mode="connectivity")
    adjacency.setdiag(0)
    adjacency.eliminate_zeros()
    symmetric = sp.csr_array(adjacency.maximum(adjacency.T))
    degrees = np.asarray(symmetric.sum(axis=1)).ravel()
    return sp.csr_array(sp.diags_array(degrees) - symmetric)


def run_option(option: str, matrix_path: str, device: str) -> dict:
    """Solve once in this process; return seconds, max residual, method and k values."""
    import numpy as np
    import scipy.sparse as sp
    import torch

    L = sp.load_npz(matrix_path).tocsr()
    n = L.shape[0]
    norm = float(abs(L).sum(axis=1).max())
    start_vector = np.random.default_rng(0).standard_normal(n)
    block = np.random.default_rng(0).standard_normal((n, K))
    block[:, 0] = 1 / np.sqrt(n)
    method = option
    operand = L  # graphopt's solvers take scipy input on the CPU, torch on a GPU
    if option in ("dense_eigh", "torch_lobpcg") or device != "cpu":
        coo = L.tocoo()
        indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
        operand = torch.sparse_coo_tensor(indices, torch.from_numpy(coo.data), coo.shape)
        operand = operand.coalesce().to(device)
        if option == "dense_eigh":
            operand = operand.to_dense()
        torch.cuda.synchronize() if device.startswith("cuda") else None
    start = time.perf_counter()
    if option == "scipy_eigsh_flipped":
        from scipy.sparse.linalg import LinearOperator, eigsh

        shift = float((L.diagonal() + abs(L).sum(axis=1) - abs(L.diagonal())).max())
        flipped = LinearOperator(L.shape, matvec=lambda x: shift * x - L @ x, dtype=np.float64)
        values, vectors = eigsh(flipped, K, which="LA", v0=start_vector, tol=SOLVER_TOL)
        values = shift - values
    elif option == "scipy_eigsh_shift_invert":
        from scipy.sparse.linalg import eigsh

        values, vectors = eigsh(
            L.tocsc(), K, sigma=-1e-3, which="LM", v0=start_vector, tol=SOLVER_TOL
        )
    elif option in ("scipy_lobpcg", "scipy_lobpcg_amg"):
        from scipy.sparse.linalg import lobpcg

        preconditioner = None
        if option == "scipy_lobpcg_amg":
            import pyamg

            preconditioner = pyamg.smoothed_aggregation_solver(L).aspreconditioner()
        values, vectors = lobpcg(
            L, block, M=preconditioner, tol=SOLVER_TOL * norm, maxiter=2000, largest=False
        )
    elif option == "torch_lobpcg":
        values, vectors = torch.lobpcg(
            operand,
            k=K,
            X=torch.from_numpy(block).to(device),
            largest=False,
            tol=SOLVER_TOL,
            niter=2000,
        )
    elif option == "dense_eigh":
        values, vectors = torch.linalg.eigh(operand)
        values, vectors = values[:K], vectors[:, :K]
    else:
        from graphopt.eigen import smallest_eigenpairs

        name = None if option == "graphopt_auto" else option
        result = smallest_eigenpairs(operand, K, method=name)
        values, vectors, method = result.values, result.vectors, result.method
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    values = np.asarray(torch.as_tensor(values).cpu(), dtype=np.float64)
    vectors = np.asarray(torch.as_tensor(vectors).cpu(), dtype=np.float64)
    order = np.argsort(values)
    values, vectors = values[order], vectors[:, order]
    vectors = vectors / np.linalg.norm(vectors, axis=0)
    residual = np.linalg.norm(L @ vectors - vectors * values, axis=0) / norm
    return {
        "seconds": seconds,
        "max_residual": float(residual.max()),
        "method": method,
        "values": values.tolist(),
    }


def timed_child(option: str, matrix_path: str, device: str, cap: float) -> dict:
    """``run_option`` in a fresh subprocess, killed past ``cap`` seconds."""
    command = [sys.executable, __file__, "--child", option, matrix_path, "--device", device]
    threads = str(THREADS)
    env = {**os.environ, **{v: threads for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=cap + 60, check=False, env=env
        )  # + 60: interpreter and import start-up, not counted in the reported time
    except subprocess.TimeoutExpired:
        return {"status": f"skipped past cap ({cap:.0f} s)"}
    if done.returncode != 0:
        return {"status": "failed", "error": done.stderr.strip().splitlines()[-1:]}
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    if outcome["seconds"] > cap:
        return {"status": f"skipped past cap ({cap:.0f} s)", "seconds": outcome["seconds"]}
    outcome["status"] = "ok" if outcome["max_residual"] <= TARGET else "residual above 1e-6"
    return outcome


def benchmark(
    sizes: list[int], device: str, cap: float, repeats: int, skip: dict[str, str]
) -> list[dict]:
    options = GPU_OPTIONS if device.startswith("cuda") else CPU_OPTIONS
    rows, past_cap, dense_seconds = [], dict(skip), None
    for n in sizes:
        start = time.perf_counter()
        L = knn_laplacian(n)
        build = time.perf_counter() - start
        print(f"n={n}: graph built in {build:.1f} s, nnz={L.nnz}", flush=True)
        with tempfile.TemporaryDirectory() as folder:
            import scipy.sparse as sp

            path = str(Path(folder) / "laplacian.npz")
            sp.save_npz(path, L)
            runs: dict[str, list[dict]] = {o: [] for o in options}
            for round_ in range(repeats):
                for option in options:
                    if round_ and option not in REPEATED:
                        continue
                    if option in past_cap:
                        runs[option].append(
                            {"status": f"skipped (past cap at n={past_cap[option]})"}
                        )
                        continue
                    if option == "dense_eigh" and n > DENSE_MAX_N:
                        runs[option].append({"status": f"skipped (n > {DENSE_MAX_N:,}: memory)"})
                        continue
                    if (
                        option == "dense_eigh"
                        and dense_seconds
                        and dense_seconds[1] * (n / dense_seconds[0]) ** 3 > cap
                    ):
                        runs[option].append({"status": "skipped (n^3 scaling predicts past cap)"})
                        continue
                    outcome = timed_child(option, path, device, cap)
                    runs[option].append(outcome)
                    print(f"  {option}: {outcome}"[:200], flush=True)
                    if outcome["status"].startswith("skipped past cap"):
                        past_cap[option] = n
                    if option == "dense_eigh" and "seconds" in outcome:
                        dense_seconds = (n, outcome["seconds"])
        rows.extend(_summaries(n, L.nnz, build, runs))
    return rows


def crossover(device: str, cap: float, repeats: int) -> list[dict]:
    """graphopt's dense vs flipped-ARPACK solvers at small n (where the policy switches)."""
    import scipy.sparse as sp

    rows = []
    for n in CROSSOVER_SIZES:
        L = knn_laplacian(n)
        with tempfile.TemporaryDirectory() as folder:
            path = str(Path(folder) / "laplacian.npz")
            sp.save_npz(path, L)
            runs: dict[str, list[dict]] = {"dense": [], "arpack_flipped": []}
            for _ in range(repeats):
                for option in runs:
                    runs[option].append(timed_child(option, path, device, cap))
        rows.extend(_summaries(n, L.nnz, 0.0, runs))
        print(f"crossover n={n}: {[(r['option'], r.get('seconds')) for r in rows[-2:]]}")
    return rows


def _summaries(n: int, nnz: int, build: float, runs: dict[str, list[dict]]) -> list[dict]:
    rows = []
    for option, outcomes in runs.items():
        timed = [o for o in outcomes if "max_residual" in o and o["status"] != "failed"]
        row = {"n": n, "nnz": nnz, "build_seconds": round(build, 2), "option": option}
        if timed and all(o["status"] != "failed" for o in outcomes):
            row.update(
                seconds=statistics.median(o["seconds"] for o in timed),
                repeats=len(timed),
                max_residual=max(o["max_residual"] for o in timed),
                method=timed[0]["method"],
                status=timed[0]["status"],
            )
        else:
            row.update(status=outcomes[0]["status"], error=outcomes[0].get("error"))
        rows.append(row)
    correct = [r for r in rows if r.get("status") == "ok"]
    fastest = min((r["seconds"] for r in correct), default=None)
    for row in rows:
        if fastest and row.get("status") == "ok":
            row["ratio_to_fastest"] = round(row["seconds"] / fastest, 3)
    return rows


def write_report(name: str, rows: list[dict], cross: list[dict], args: argparse.Namespace) -> None:
    import torch

    from graphopt.io import atomic_write_json, atomic_write_text

    command = " ".join(["python", "benchmarks/eigen_knn.py", *sys.argv[1:]])
    machine = (
        f"{platform.machine()}, {platform.processor() or 'cpu'}, torch {torch.__version__}, "
        f"device {args.device}"
        + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else "")
    )
    lines = [
        f"# {name}: k = {K} smallest eigenpairs of a {NEIGHBOURS}-NN Laplacian in {DIMENSIONS}-D",
        "",
        f"Reproduce: `{command}`",
        "",
        f"Machine: {machine}. "
        + (
            "2-core shared machine with other jobs running: absolute times are noisy; "
            "ratios are measured side by side in the same run."
            if not args.device.startswith("cuda")
            else ""
        ),
        f"One BLAS/OpenMP thread per run. Cap per run: {args.cap:.0f} s; "
        f"median of {args.repeats} interleaved runs for "
        f"{', '.join(REPEATED)}, one run for the others. Residual = max_i ||L u_i - l_i u_i|| "
        "/ ||L||_inf, target <= 1e-6. Ratio = time / fastest option meeting the target.",
        "",
        "| n | nnz | option | method | seconds | max residual | ratio | status |",
        "|---|-----|--------|--------|---------|--------------|-------|--------|",
    ]
    lines += [_table_row(r) for r in rows]
    if cross:
        lines += [
            "",
            "## Dense eigh vs flipped ARPACK at small n",
            "",
            "graphopt's own solvers, where the automatic choice switches from one to the other.",
            "",
            "| n | nnz | option | method | seconds | max residual | ratio | status |",
            "|---|-----|--------|--------|---------|--------------|-------|--------|",
        ]
        lines += [_table_row(r) for r in cross]
    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(RESULTS / f"{name}.md", "\n".join(lines) + "\n")
    atomic_write_json(
        RESULTS / f"{name}.json",
        {"command": command, "machine": machine, "rows": rows, "crossover": cross},
    )


def _table_row(row: dict) -> str:
    seconds = f"{row['seconds']:.3f}" if "seconds" in row else "-"
    residual = f"{row['max_residual']:.1e}" if "max_residual" in row else "-"
    ratio = f"{row['ratio_to_fastest']:.2f}x" if "ratio_to_fastest" in row else "-"
    return (
        f"| {row['n']:,} | {row['nnz']:,} | {row['option']} | {row.get('method', '-')} | "
        f"{seconds} | {residual} | {ratio} | {row['status']} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 2,000 and 5,000 only")
    parser.add_argument("--sizes", type=int, nargs="+", help="override the sizes")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--cap", type=float, default=90.0, help="seconds per run (default 90)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-crossover", action="store_true")
    parser.add_argument("--name", default="eigen_knn", help="results file stem")
    parser.add_argument(
        "--skip",
        nargs="+",
        default=[],
        metavar="OPTION=N",
        help="options already past the cap at size N in an earlier run (not run again)",
    )
    parser.add_argument("--child", nargs=2, metavar=("OPTION", "MATRIX"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_option(args.child[0], args.child[1], args.device)))
        return
    sizes = args.sizes or ([2000, 5000] if args.quick else [5000, 20000, 100000])
    skip = dict(item.split("=", 1) for item in args.skip)
    rows = benchmark(sizes, args.device, args.cap, args.repeats, skip)
    cross = [] if args.no_crossover else crossover(args.device, args.cap, args.repeats)
    write_report(args.name, rows, cross, args)


if __name__ == "__main__":
    main()
