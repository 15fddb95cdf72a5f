"""Every Python example in README.md and docs/ runs as written.

The blocks of one page run in order in one namespace (a page builds on its
earlier blocks), in a fresh working folder. A block preceded by
``<!-- not run: REASON -->`` is skipped (a torchrun script, an excerpt of
graphopt's own code); ``--8<-- "path"`` lines (pymdownx.snippets) are replaced by
the file they include, as mkdocs renders them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"(<!-- not run: ([^>]*)-->\n)?```python\n(.*?)```", re.S)
SNIPPET = re.compile(r'^--8<-- "([^"]+)"$', re.M)


def blocks(page: Path) -> list[tuple[str | None, str]]:
    """(reason it is not run or None, code) of every python block of ``page``."""
    found = []
    for _, reason, code in BLOCK.findall(page.read_text(encoding="utf-8")):
        code = SNIPPET.sub(lambda m: (ROOT / m[1]).read_text(encoding="utf-8"), code)
        found.append((reason.strip() or None, code))
    return found


RUNNABLE = [page for page in PAGES if any(reason is None for reason, _ in blocks(page))]


def test_every_skipped_block_says_why():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        assert "<!-- not run: -->" not in text, page


@pytest.mark.parametrize("page", RUNNABLE, ids=[str(p.relative_to(ROOT)) for p in RUNNABLE])
def test_the_page_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for number, (reason, code) in enumerate(blocks(page)):
        if reason is None:
            exec(compile(code, f"{page.name}, python block {number}", "exec"), namespace)
