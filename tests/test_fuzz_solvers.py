"""Fuzzed calls to every public graph, Laplacian, eigensolver, spectral and GGM entry point:
bad input is a ValueError/TypeError naming the argument, good input a finite answer (or a
warning), a converged eigenproblem matches dense eigh; no hang, no silent NaN.

The cases and the oracle live in ``fuzz_cases.py``; ``benchmarks/robustness.py`` runs the
same cases in bulk for ``benchmarks/results/robustness.md``.
"""

from __future__ import annotations

import pytest
from fuzz_cases import DEFAULT_EXAMPLES, SLOW_EXAMPLES, entry_points, run_fuzz

NAMES = [name for name in entry_points("unused") if not name.startswith("cli")]


@pytest.mark.filterwarnings("ignore")  # convergence warnings of good cases are expected
@pytest.mark.parametrize("name", NAMES)
def test_fuzzed_solver_calls(name):
    run_fuzz(entry_points("unused")[name], DEFAULT_EXAMPLES, derandomize=True)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", NAMES)
def test_fuzzed_solver_calls_in_bulk(name):
    run_fuzz(entry_points("unused")[name], SLOW_EXAMPLES, derandomize=False)
