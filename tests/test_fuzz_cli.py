"""Fuzzed ``graphopt solve ggm``, ``graphopt eigen`` and ``graphopt plugins`` runs: a bad
file, option or output path is exit 2 with one ``graphopt: error:`` line naming it, a good
run writes finite results; never a traceback. Cases: ``fuzz_cases.py``."""

from __future__ import annotations

import pytest
from fuzz_cases import DEFAULT_EXAMPLES, SLOW_EXAMPLES, entry_points, run_fuzz

CLI_POINTS = [name for name in entry_points("unused") if name.startswith("cli")]

pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.usefixtures("restore_threads")]


@pytest.mark.parametrize("name", CLI_POINTS)
def test_fuzzed_command_lines(name, tmp_path):
    run_fuzz(entry_points(str(tmp_path))[name], DEFAULT_EXAMPLES, derandomize=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", CLI_POINTS)
def test_fuzzed_command_lines_in_bulk(name, tmp_path):
    run_fuzz(entry_points(str(tmp_path))[name], SLOW_EXAMPLES, derandomize=False)
