"""Run skggm's compiled QUIC on one problem (run by the QUIC venv's python, not graphopt's).

skggm's Python wrapper no longer imports on current scikit-learn, so this loads its
``inverse_covariance.pyquic`` extension directly and calls it in "trace" mode (the
objective and CPU time of every Newton iteration). Build the venv as
benchmarks/README.md says.

    QUIC_PYTHON S.npy LAM TOL MAX_ITER OUT.npy   # prints a JSON line; writes Theta
"""

from __future__ import annotations

import glob
import importlib.util
import json
import sys
import time

import numpy as np


def load_pyquic():
    """The compiled extension, without the package's failing ``__init__``."""
    pattern = f"{sys.prefix}/lib/python3*/site-packages/inverse_covariance/pyquic/pyquic*.so"
    paths = glob.glob(pattern)
    if not paths:
        raise SystemExit(f"no QUIC extension under {pattern}")
    spec = importlib.util.spec_from_file_location("pyquic", paths[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    s_path, lam, tol, max_iter, out = sys.argv[1:6]
    s = np.ascontiguousarray(np.load(s_path), dtype=np.float64)
    lam, tol, max_iter = float(lam), float(tol), int(max_iter)
    p = s.shape[0]
    penalty = np.full((p, p), lam)
    penalty[np.diag_indices(p)] = 0.0  # unpenalized diagonal, as graphopt's
    theta, sigma = np.eye(p), np.eye(p)
    objective, cputime, gap = np.zeros(max_iter), np.zeros(max_iter), np.zeros(max_iter)
    iterations = np.zeros(1, dtype=np.uint32)
    quic = load_pyquic()
    began = time.perf_counter()
    quic.quic(
        b"trace", p, s, penalty, 1, np.empty(1), tol, 0, max_iter,
        theta, sigma, objective, cputime, iterations, gap,
    )  # fmt: skip
    seconds = time.perf_counter() - began
    n = int(iterations[0])
    np.save(out, theta)
    trace = list(zip(cputime[:n].tolist(), objective[:n].tolist(), strict=True))
    print(json.dumps({"seconds": seconds, "n_iter": n, "trace": trace}))


if __name__ == "__main__":
    main()
