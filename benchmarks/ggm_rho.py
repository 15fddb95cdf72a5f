"""Benchmark: ADMM's starting penalty rho on the problems where ``auto`` picks ADMM.

ADMM adapts rho by residual balancing every ``rho_every`` iterations; its start (the
``rho`` option; S is on unit mean variance inside ``solve``, so rho is scale-free)
decides how many iterations pass before that. This runs ``solver="admm"`` at several
starting rhos, one process, 1 thread, and reports time and iterations relative to the
default. Writes results/ggm_rho.{json,md}.

    .venv/bin/python benchmarks/ggm_rho.py
"""

from __future__ import annotations

import argparse
import inspect
import json
import time
from typing import Any

import numpy as np
import torch
from ggm_peers import RESULTS, anchor, chain, machine, random_graph

from graphopt.solvers.ggm import solve
from graphopt.solvers.ggm.admm import admm

DEFAULT_RHO = inspect.signature(admm).parameters["rho"].default

PROBLEMS: list[tuple[str, Any, int, float, dict[str, Any]]] = [
    ("anchor", anchor, 500, 0.2, {}),
    ("anchor", anchor, 1000, 0.2, {}),
    ("anchor, node groups", anchor, 500, 0.2, {"groups": "node"}),
    ("anchor, l2p p = 0.5", anchor, 300, 0.2, {"penalty": "l2p", "p": 0.5}),
    ("chain", chain, 1000, 0.08, {}),
    ("random graph", random_graph, 1000, 0.08, {}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rhos", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0, 8.0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name, make, p, lam, options in PROBLEMS:
        s = make(p)
        solve(s[:30, :30], lam=lam, solver="admm", **options)  # warm-up
        for rho in args.rhos:
            seconds = []
            for _ in range(args.repeats):
                began = time.perf_counter()
                result = solve(s, lam=lam, solver="admm", rho=rho, **options)
                seconds.append(time.perf_counter() - began)
            row = {
                "problem": name,
                "p": p,
                "lam": lam,
                "rho": rho,
                "seconds": float(np.median(seconds)),
                "iterations": result.n_iter,
                "newton_steps": result.info.get("newton_steps"),
                "final_rho": result.info.get("rho"),
                "converged": result.converged,
                "objective": result.objective,
            }
            rows.append(row)
            print(row, flush=True)
    write(rows, args)


def write(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    rhos = " ".join(str(rho) for rho in args.rhos)
    command = f".venv/bin/python benchmarks/ggm_rho.py --rhos {rhos} --repeats {args.repeats}"
    (RESULTS / "ggm_rho.json").write_text(
        json.dumps({"command": command, "machine": machine(), "rows": rows}, indent=1)
    )
    lines = [
        "# GGM benchmark: ADMM's starting rho",
        "",
        f"Reproduce: `{command}`",
        "",
        f"Machine: {machine()}; one process, 1 thread, nothing else running; seconds: the "
        f"median of {args.repeats} solves. Ratios: seconds at the default rho = {DEFAULT_RHO} "
        "over seconds at this rho. Final rho: after residual balancing ('-': several "
        "screened blocks, each its own).",
        "",
        "| problem | p | lam | rho | seconds | iterations | Newton steps | final rho | "
        "converged | objective | speed-up over default |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        base = next(
            r["seconds"]
            for r in rows
            if (r["problem"], r["p"], r["rho"]) == (row["problem"], row["p"], DEFAULT_RHO)
        )
        lines.append(
            f"| {row['problem']} | {row['p']} | {row['lam']} | {row['rho']} | "
            f"{row['seconds']:.2f} | {row['iterations']} | {row['newton_steps']} | "
            f"{'-' if row['final_rho'] is None else row['final_rho']} | {row['converged']} | "
            f"{row['objective']:.9f} | "
            f"{base / row['seconds']:.2f}x |"
        )
    (RESULTS / "ggm_rho.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
