"""The default eigensolver choice, from measurements (``benchmarks/eigen_knn.py``).

On a shared 2-core CPU, for k = 16 on high-dimensional kNN Laplacians, ARPACK on
the flipped operator was the fastest option meeting residual 1e-6 at n = 5,000 and
100,000, and within noise of scipy LOBPCG at n = 20,000 (table in
``benchmarks/results/eigen_knn.md``); shift-invert, torch.lobpcg and dense
``eigh`` were 10-140x slower or past the cap. Dense ``eigh`` wins only for
small n, where its O(n^3) is still cheap and it cannot miss a repeated
eigenvalue. On a GPU dense ``eigh`` is fast well past the CPU crossover; past
that the torch block Lanczos does the same job as ARPACK on the device.
"""

from __future__ import annotations

CPU_DENSE_MAX_N = 300
"""Largest n for which dense ``eigh`` is the CPU default: measured in one process, one
BLAS thread, k = 16, dense took 0.03-0.04 s vs 0.05 s for flipped ARPACK at n = 250,
and 0.12-0.14 s vs 0.06-0.07 s at n = 500."""

GPU_DENSE_MAX_N = 8192
"""Largest n for which dense ``eigh`` is the GPU default (0.5 GB in float64). Not yet
measured (no GPU in the development session): ``benchmarks/gpu_eigen.sh`` measures it."""

KRYLOV_MAX_K_FRACTION = 0.1
"""Past k > this * n a Krylov basis (about 2k vectors) nears n: dense is as cheap and exact."""


def choose_method(n: int, nnz: int, k: int, device: str) -> str:
    """Name of the eigensolver to use for the k smallest pairs of an n x n matrix.

    ``nnz`` is the number of stored entries (n * n for dense input), ``device``
    a torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).
    """
    on_cpu = device.split(":")[0] == "cpu"
    dense_max = CPU_DENSE_MAX_N if on_cpu else GPU_DENSE_MAX_N
    if n <= dense_max or k > KRYLOV_MAX_K_FRACTION * n:
        return "dense"
    return "arpack_flipped" if on_cpu else "lanczos_torch"
