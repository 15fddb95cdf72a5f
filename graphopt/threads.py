"""How many CPU threads graphopt's numerical work uses: torch's intra-op pool and
the BLAS / OpenMP pools numpy and scipy call into.

``set_threads(n)`` exports ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and
``OPENBLAS_NUM_THREADS`` (read by torch, numpy and child processes when they
start their pools) and resizes the pools already running
(``torch.set_num_threads``, ``threadpoolctl``). It imports nothing heavy, so
the command line can call it before torch is loaded. The command line uses
``--threads N``, else ``GRAPHOPT_THREADS``, else ``default_threads()``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

ENV = "GRAPHOPT_THREADS"
"""Environment variable giving the thread count when ``--threads`` is not passed."""

ENV_EXPORTS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
"""Variables the thread pools read when they start (also inherited by child processes)."""

DEFAULT_THREADS = 1
"""Threads when no count is asked for and ``OMP_NUM_THREADS`` is unset. Measured in
``benchmarks/results/threads.md``."""


def set_threads(n: int) -> int:
    """Use ``n`` >= 1 threads in torch, BLAS and OpenMP from now on; returns ``n``."""
    n = parse_threads(n, "threads")
    for name in ENV_EXPORTS:
        os.environ[name] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    if "numpy" in sys.modules or "torch" in sys.modules:  # pools already loaded
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)
    return n


def requested_threads(flag: object, environ: Mapping[str, str] | None = None) -> int | None:
    """The thread count to set: the ``--threads`` flag, else ``GRAPHOPT_THREADS``, else
    ``DEFAULT_THREADS`` unless ``OMP_NUM_THREADS`` already says (then ``None``: leave it).

    ``ValueError`` names the flag or variable when it is not an integer >= 1.
    """
    environ = os.environ if environ is None else environ
    if flag is not None:
        return parse_threads(flag, "--threads")
    raw = environ.get(ENV, "").strip()
    if raw:
        return parse_threads(raw, ENV)
    return None if environ.get("OMP_NUM_THREADS", "").strip() else DEFAULT_THREADS


def parse_threads(value: object, name: str) -> int:
    """An integer >= 1 from an int or its decimal string, else ``ValueError`` naming ``name``."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return value
