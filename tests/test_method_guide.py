"""docs/plugins/method.md's example plugin, installed as a distribution (a module plus a
``.dist-info`` with the entry points of its ``pyproject.toml`` on ``sys.path``, as pip
leaves it) and tested with the guide's own test file, in a fresh interpreter."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

GUIDE = Path(__file__).parents[1] / "docs" / "plugins" / "method.md"


def guide_files() -> dict[str, str]:
    """The guide's code blocks whose first line is ``# file: NAME``, by name."""
    blocks = re.findall(r"```[a-z]*\n# file: (\S+)\n(.*?)```", GUIDE.read_text(), flags=re.S)
    return {name: body for name, body in blocks}


def install(site: Path, files: dict[str, str]) -> None:
    project = tomllib.loads(files["pyproject.toml"])["project"]
    (site / "my_adapters.py").write_text(files["my_adapters.py"])
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    points = project["entry-points"]["graphopt"]
    (info / "entry_points.txt").write_text(
        "[graphopt]\n" + "".join(f"{k} = {v}\n" for k, v in points.items())
    )


def test_the_guide_has_the_plugin_its_packaging_and_its_tests():
    assert set(guide_files()) == {"pyproject.toml", "my_adapters.py", "test_my_adapters.py"}


def test_the_guides_plugin_installs_and_passes_its_tests(tmp_path):
    files = guide_files()
    site = tmp_path / "site"
    site.mkdir()
    install(site, files)
    (tmp_path / "test_my_adapters.py").write_text(files["test_my_adapters.py"])
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    env.pop("GRAPHOPT_DISABLE_PLUGINS", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore",
         "test_my_adapters.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert re.search(r"\b7 passed\b", done.stdout), done.stdout[-1000:]
