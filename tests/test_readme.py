"""A fresh clone runs every shell block of README.md as written (slow: it installs).

The clone of the committed HEAD is set up with the Makefile (``make setup``,
what the README's two commands begin with), then each ``bash`` block runs with
``bash -e`` in the clone. A block after ``<!-- not run: REASON -->`` is skipped;
one after ``<!-- needs: cuda -->`` runs only where CUDA is available. The Python
blocks run in tests/test_docs_examples.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- (not run|needs): ([^>]*)-->\n)?```bash\n(.*?)```", re.S)


def shell_blocks() -> list[tuple[str, str, str]]:
    """(marker kind, marker text, script) of every bash block of the README."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [(kind, note.strip(), code) for _, kind, note, code in BLOCK.findall(text)]


def test_every_readme_shell_block_is_run_skipped_with_a_reason_or_needs_a_device():
    for kind, note, _ in shell_blocks():
        assert kind in ("", "not run", "needs") and (kind == "" or note), (kind, note)


@pytest.mark.slow
def test_a_fresh_clone_runs_every_readme_block_as_written(tmp_path):
    if shutil.which("make") is None or shutil.which("git") is None:
        pytest.fail("the README needs make and git")
    clone = tmp_path / "graphopt"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("VIRTUAL_ENV", None)
    subprocess.run(["make", "setup"], cwd=clone, check=True, env=env, timeout=1800)
    for number, (kind, note, code) in enumerate(shell_blocks()):
        if kind == "not run" or (note == "cuda" and not torch.cuda.is_available()):
            continue
        done = subprocess.run(
            ["bash", "-e", "-c", code], cwd=clone, env=env, capture_output=True, text=True,
            timeout=1800,
        )  # fmt: skip
        assert done.returncode == 0, f"README bash block {number}:\n{code}\n{done.stderr[-3000:]}"
