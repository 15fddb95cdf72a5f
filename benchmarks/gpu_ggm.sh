#!/usr/bin/env bash
# GGM l1 anchor problem (issue 3) on one GPU, p = 1000, 2000, 5000: graphopt's
# ADMM in float64 on CUDA (device="cuda") vs the same solver on the CPU (p = 1000),
# through benchmarks/ggm_l1.py's run_graphopt and l1_objective. Every solve stops
# at CAP seconds (reported with its best iterate) so the whole check fits about
# 10 minutes on one H100.
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
from ggm_l1 import LAM, anchor_problem, l1_objective, run_graphopt

CAP = 150.0  # seconds a solve
rows = []
for p in (1000, 2000, 5000):
    s = anchor_problem(p)
    row = {"p": p}
    for device in ["cuda", "cpu"] if p <= 1000 else ["cuda"]:
        run_graphopt(anchor_problem(50), LAM, device=device)  # warm-up: CUDA context, kernels
        began = time.perf_counter()
        precision, extra = run_graphopt(s, LAM, cap=CAP, device=device)
        seconds = time.perf_counter() - began
        trace = extra.pop("trace")
        if precision is None:  # stopped at the cap: its best iterate
            extra["objective"] = min((f for _, f in trace), default=float("nan"))
        else:
            extra["objective"] = l1_objective(precision, s, LAM)
        row[device] = {"seconds": seconds, "converged": precision is not None, **extra}
        print(p, device, row[device], flush=True)
    rows.append(row)
out = os.environ["RESULTS_DIR"]
name = torch.cuda.get_device_name(0)
with open(f"{out}/gpu_ggm.json", "w") as handle:
    json.dump({"gpu": name, "lam": LAM, "cap_seconds": CAP, "rows": rows}, handle, indent=2)
lines = [f"# GGM l1 anchor problem on {name}", "", "Reproduce: `bash benchmarks/gpu_ggm.sh`", "",
         f"Each solve stops at {CAP:.0f} s; a stopped one reports its best iterate's objective.", "",
         "| p | device | seconds | iterations | objective | KKT | converged |", "|---|---|---|---|---|---|---|"]
for row in rows:
    for device in ("cuda", "cpu"):
        if device in row:
            r = row[device]
            kkt = f"{r['kkt']:.1e}" if r.get("kkt") is not None else "-"
            lines.append(f"| {row['p']} | {device} | {r['seconds']:.2f} | {r['n_iter']} | "
                         f"{r['objective']:.9f} | {kkt} | {r['converged']} |")
open(f"{out}/gpu_ggm.md", "w").write("\n".join(lines) + "\n")
PY
