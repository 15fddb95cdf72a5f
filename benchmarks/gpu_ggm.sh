#!/usr/bin/env bash
# GGM l1 anchor problem (issue 3) on one GPU, p = 1000, 2000, 5000: graphopt's
# ADMM in float64 on CUDA (device="cuda") vs the same solver on the CPU (p <= 2000),
# objectives recomputed by benchmarks/ggm_l1.py's l1_objective. A few minutes on one H100.
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
import numpy as np
import torch
sys.path.insert(0, "benchmarks")
from ggm_l1 import LAM, anchor_problem, l1_objective
from graphopt.solvers.ggm import solve

rows = []
for p in (1000, 2000, 5000):
    s = anchor_problem(p)
    row = {"p": p}
    devices = ["cuda", "cpu"] if p <= 2000 else ["cuda"]
    for device in devices:
        tensor = torch.from_numpy(s).to(device)
        solve(tensor[:50, :50], lam=LAM)  # warm-up: CUDA context, kernels
        if device == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        result = solve(tensor, lam=LAM)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - began
        row[device] = {"seconds": seconds, "n_iter": result.n_iter, "converged": result.converged,
                       "objective": l1_objective(result.precision.cpu().numpy(), s, LAM),
                       "kkt": result.kkt_residual, "blocks": result.info.get("blocks", [])[:3]}
        print(p, device, row[device], flush=True)
    rows.append(row)
out = os.environ["RESULTS_DIR"]
name = torch.cuda.get_device_name(0)
with open(f"{out}/gpu_ggm.json", "w") as handle:
    json.dump({"gpu": name, "lam": LAM, "rows": rows}, handle, indent=2)
lines = [f"# GGM l1 anchor problem on {name}", "", "Reproduce: `bash benchmarks/gpu_ggm.sh`", "",
         "| p | device | seconds | iterations | objective | KKT | converged |", "|---|---|---|---|---|---|---|"]
for row in rows:
    for device in ("cuda", "cpu"):
        if device in row:
            r = row[device]
            lines.append(f"| {row['p']} | {device} | {r['seconds']:.2f} | {r['n_iter']} | "
                         f"{r['objective']:.9f} | {r['kkt']:.1e} | {r['converged']} |")
open(f"{out}/gpu_ggm.md", "w").write("\n".join(lines) + "\n")
PY
