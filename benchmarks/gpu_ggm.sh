#!/usr/bin/env bash
# GGM l1 graphical lasso on one GPU, p up to 10000: graphopt's default solver on CUDA
# (device="cuda": admm with its Newton-CG end game, float64; the compiled coordinate
# descent that "auto" takes for sparse problems on the CPU is CPU-only) for the issue-3
# anchor (p = 1000, 2000) and the chain family (p = 2000, 5000, 10000), the same solves on the CPU at
# p = 2000 for a ratio, through benchmarks/ggm_peers.py's problems, run_graphopt and
# l1_objective. Every solve stops at CAP seconds (reported with its best iterate), so
# the whole check fits about 10 minutes on one H100/H200.
# Usage (repository root, on the GPU machine): bash benchmarks/gpu_ggm.sh
# Writes benchmarks/results/gpu_ggm.md/.json (or under $OUT when set).
set -euo pipefail
cd "$(dirname "$0")/.."
results="${OUT:-benchmarks/results}"
mkdir -p "$results"
python3 -m pip install -q --no-deps --no-index --no-build-isolation -e . >/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$results/gpu_info.txt"
export PYTHONUNBUFFERED=1 RESULTS_DIR="$results"
python3 - <<'PY'
import json, os, sys, time
import torch
sys.path.insert(0, "benchmarks")
from ggm_peers import FAMILIES, l1_objective, run_graphopt

CAP = 100.0  # seconds a solve
CASES = [("anchor", 1000, 0.2), ("anchor", 2000, 0.2), ("chain", 2000, 0.15),
         ("chain", 5000, 0.15), ("chain", 10000, 0.15)]
rows = []
for family, p, lam in CASES:
    began = time.perf_counter()
    s = FAMILIES[family](p)
    row = {"family": family, "p": p, "lam": lam, "setup_seconds": time.perf_counter() - began}
    for device in ["cuda", "cpu"] if p == 2000 else ["cuda"]:
        run_graphopt(FAMILIES[family](50), lam, device=device)  # warm-up: context, kernels
        began = time.perf_counter()
        precision, extra = run_graphopt(s, lam, cap=CAP, device=device)
        seconds = time.perf_counter() - began
        trace = extra.pop("trace")
        if precision is None:  # stopped at the cap: its best iterate
            extra["objective"] = min((f for _, f in trace), default=float("nan"))
        else:
            extra["objective"] = l1_objective(precision, s, lam)
        row[device] = {"seconds": seconds, "converged": precision is not None, **extra}
        print(family, p, device, row[device], flush=True)
    rows.append(row)
out = os.environ["RESULTS_DIR"]
name = torch.cuda.get_device_name(0)
with open(f"{out}/gpu_ggm.json", "w") as handle:
    json.dump({"gpu": name, "cap_seconds": CAP, "rows": rows}, handle, indent=2)
lines = [f"# GGM l1 graphical lasso on {name}", "", "Reproduce: `bash benchmarks/gpu_ggm.sh`", "",
         f"graphopt solver 'auto', float64. Each solve stops at {CAP:.0f} s; a stopped one "
         "reports its best iterate's objective.", "",
         "| problem | p | lam | device | solver | seconds | iterations | objective | duality gap "
         "| converged |", "|---|---|---|---|---|---|---|---|---|---|"]
for row in rows:
    for device in ("cuda", "cpu"):
        if device in row:
            r = row[device]
            gap = f"{r['duality_gap']:.1e}" if r.get("duality_gap") is not None else "-"
            lines.append(f"| {row['family']} | {row['p']} | {row['lam']} | {device} | "
                         f"{r.get('solver', '-')} | {r['seconds']:.2f} | {r['n_iter']} | "
                         f"{r['objective']:.9f} | {gap} | {r['converged']} |")
open(f"{out}/gpu_ggm.md", "w").write("\n".join(lines) + "\n")
PY
