"""The Python examples of the adapter pages run as written: each page's ``python`` code
blocks in order, in one namespace (as a reader pastes them into one session)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

DOCS = Path(__file__).parents[1] / "docs"
PAGES = ["adapters.md", "methods/lora.md", "methods/linchain.md", "methods/pca_ggm.md"]


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


@pytest.mark.parametrize("page", PAGES)
def test_the_pages_examples_run(page, tmp_path, monkeypatch):
    blocks = python_blocks(DOCS / page)
    assert blocks, f"{page} has no python example"
    monkeypatch.chdir(tmp_path)  # examples may write files (plots)
    namespace: dict = {"__name__": "__docs__"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for index, block in enumerate(blocks):
            exec(compile(block, f"{page}[{index}]", "exec"), namespace)
