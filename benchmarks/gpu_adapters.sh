#!/usr/bin/env bash
# Adapters on one CUDA GPU: the conformance matrix on CUDA (fp32, and a bf16 smoke run) for
# lora / linchain / pca_ggm on the six tiny architectures of the test suite (BERT, LLaMA,
# Qwen2, GPT-2 Conv1D, T5, ViT), then the all-MiniLM-L6-v2
# benchmark (graphopt lora vs PEFT LoRA on MiniLM and a tiny LLaMA: outputs, step time and
# peak CUDA memory; lora / linchain / pca_ggm step time and memory; merged inference;
# allocation cost). Writes benchmarks/results/adapters_minilm_cuda.{md,json} and
# gpu_adapters_tests.txt (copied to $OUT when set). Needs the `demo` extra. A few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
mkdir -p benchmarks/results
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'"
"$PY" - <<'PYCODE' 2>&1 | tee benchmarks/results/gpu_adapters_tests.txt
import sys, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, "tests")
import torch
from tiny_models import TARGETS, factory
from graphopt.testing import check_method

configs = {"lora": {"r": 4}, "linchain": {"r": 4, "n": 2},
           "pca_ggm": {"r": 4, "warmup_steps": 2, "top_k": 12, "n_important": 6}}
for architecture, targets in TARGETS.items():
    for dtype, tolerance in ((torch.float32, {}), (torch.bfloat16, {"rtol": 5e-2, "atol": 5e-2})):
        make = factory(architecture)
        for name, config in configs.items():
            report = check_method(name, lambda: make().to("cuda", dtype), targets, config,
                                  **tolerance)
            print(f"cuda {dtype} {architecture} {name} passed: {report.passed} "
                  f"skipped: {report.skipped}")
PYCODE
"$PY" benchmarks/adapters_minilm.py --device cuda --rounds 20 --steps 5 --warmup 50 --peft-rounds 30
if [ -n "${OUT:-}" ]; then
  cp benchmarks/results/adapters_minilm_cuda.* benchmarks/results/gpu_adapters_tests.txt "$OUT"/
fi
