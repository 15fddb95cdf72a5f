"""The built documentation works offline, over file://: no CDN, no web fonts, .html
links, formulas as MathML."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(folder)],
        cwd=ROOT, check=True, env=env,
    )  # fmt: skip
    return folder


def pages(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


def test_no_page_loads_anything_from_the_network(site):
    for page in pages(site):
        text = page.read_text(encoding="utf-8")
        remote = re.findall(r'<(?:script|link|img)[^>]+(?:src|href)="(https?://[^"]+)"', text)
        assert not remote, (page.name, remote[:3])
        assert "fonts.googleapis" not in text and "mathjax" not in text.lower(), page.name


def test_navigation_links_name_html_files(site):
    text = (site / "index.html").read_text(encoding="utf-8")
    links = [
        link
        for link in re.findall(r'href="([^"#]+)"', text)
        if not link.startswith(("http", "assets/")) and not link.endswith((".css", ".png"))
    ]
    assert len(links) > 10 and all(link.endswith(".html") for link in links), links[:5]
    assert all((site / link).is_file() for link in links)


def test_formulas_are_mathml_with_no_raw_tex_left(site):
    text = (site / "solvers" / "ggm.html").read_text(encoding="utf-8")
    assert text.count("<math") > 20
    assert 'class="arithmatex"' not in text and "\\(" not in text


def test_no_heading_holds_a_formula():
    """A heading's text also goes to the table of contents, where the MathML hook does not
    reach: a formula there would show as raw TeX."""
    headings = [
        f"{page.relative_to(ROOT)}: {line}"
        for page in sorted((ROOT / "docs").rglob("*.md"))
        for line in page.read_text(encoding="utf-8").splitlines()
        if line.startswith("#") and "$" in line
    ]
    assert not headings, headings
