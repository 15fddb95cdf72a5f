#!/usr/bin/env bash
# GPU case of benchmarks/eigen_knn.py: k = 16 smallest eigenpairs of the 10-NN
# Laplacian (32-D Gaussian points) at n = 5,000, 20,000, 100,000 on one CUDA
# GPU: graphopt's automatic choice (dense eigh up to n = 8,192, the torch block
# Lanczos on the flipped operator beyond), lanczos_torch, dense torch eigh
# where it fits and torch.lobpcg, each with its max residual, capped at 120 s.
# Also runs the CUDA-only tests. Self-contained: needs the repository's venv
# (or any Python with graphopt's dependencies and a CUDA build of torch).
# Writes benchmarks/results/gpu_eigen.{md,json} and gpu_eigen_tests.txt.
# Expected run time on one H100: a few minutes (graph building is on the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
mkdir -p benchmarks/results
"$PY" -m pytest -q -m "not slow" tests/test_eigen.py tests/test_spectral.py -k "cuda or gpu" \
    | tee benchmarks/results/gpu_eigen_tests.txt
"$PY" benchmarks/eigen_knn.py --device cuda --name gpu_eigen --no-crossover --cap 120 --repeats 3
cat benchmarks/results/gpu_eigen.md
