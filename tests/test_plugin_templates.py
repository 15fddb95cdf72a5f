"""``graphopt new-plugin``: every kind's template installs with pip, registers through its
entry point and passes its own test; the guides in docs/plugins/ show exactly its files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from graphopt.cli import main
from graphopt.cli.new_plugin import TEMPLATES, plugin_files

ROOT = Path(__file__).resolve().parent.parent
GUIDES = ROOT / "docs" / "plugins"
EXAMPLES = {
    "graph": "epsilon_ball",
    "eigensolver": "inverse_subspace",
    "response": "butterworth",
    "transform": "norm_preserving_filter",
    "penalty": "mcp",
    "ggm_solver": "proximal_gradient",
}
"""Each guide's example: kind -> the name the guide registers."""

BLOCK = re.compile(r'^```\w* title="(graphopt-[\w-]+)/([^"]+)"\n(.*?)^```$', re.M | re.S)
SNIPPET = re.compile(r'^--8<-- "([^"]+)"\n$')


def guide_blocks(kind: str) -> dict[str, str]:
    """Relative path -> contents of the files a guide shows (snippets resolved)."""
    blocks = {}
    for root, path, body in BLOCK.findall((GUIDES / f"{kind}.md").read_text()):
        assert root == f"graphopt-{EXAMPLES[kind].replace('_', '-')}", root
        snippet = SNIPPET.match(body)
        blocks[path] = (ROOT / snippet.group(1)).read_text() if snippet else body
    return blocks


def test_every_template_kind_has_a_guide_and_an_example():
    assert set(TEMPLATES) == set(EXAMPLES)
    # the method guide's example is a whole distribution of its own (tests/test_method_guide.py)
    assert {p.stem for p in GUIDES.glob("*.md")} == set(EXAMPLES) | {"index", "method"}


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_the_guide_shows_exactly_the_files_new_plugin_writes(kind):
    written = plugin_files(EXAMPLES[kind], kind)
    shown = guide_blocks(kind)
    assert sorted(shown) == sorted(written), f"docs/plugins/{kind}.md shows other files"
    for path, text in written.items():
        assert shown[path] == text, f"docs/plugins/{kind}.md: {path} differs from:\n{text}"


def test_new_plugin_refuses_a_bad_name_and_an_existing_folder(tmp_path, capsys):
    assert main(["new-plugin", "Bad-Name", "--directory", str(tmp_path)]) == 2
    assert "plugin name must be lowercase" in capsys.readouterr().err
    assert main(["new-plugin", "fine", "--kind", "response", "--directory", str(tmp_path)]) == 0
    assert main(["new-plugin", "fine", "--directory", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The six examples written by ``graphopt new-plugin`` and pip-installed (offline, no
    dependencies, this environment's setuptools) into one target folder."""
    work = tmp_path_factory.mktemp("plugins")
    projects = []
    for kind, name in EXAMPLES.items():
        assert main(["new-plugin", name, "--kind", kind, "--directory", str(work)]) == 0
        projects.append(str(work / f"graphopt-{name.replace('_', '-')}"))
    target = work / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--target",
            str(target),
            *projects,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}
    for variable in ("GRAPHOPT_DISABLE_PLUGINS", "GRAPHOPT_STRICT_PLUGINS"):
        env.pop(variable, None)
    return work, projects, env


def test_installed_templates_register_through_their_entry_points(installed):
    work, _, env = installed
    code = "from graphopt.cli import main; raise SystemExit(main(['plugins', '--json', '--check']))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]  # every object imports
    listing = json.loads(out.stdout)
    assert listing["failures"] == []
    assert all(e["import_error"] is None for e in listing["entries"])
    found = {(e["kind"], e["name"]): e for e in listing["entries"]}
    for kind, name in EXAMPLES.items():
        entry = found[(kind, name)]
        assert entry["distribution"] == f"graphopt-{name.replace('_', '-')}"
        assert entry["version"] == "0.1.0" and entry["plugin"] == name


def test_installed_templates_pass_their_own_tests(installed):
    work, projects, env = installed
    tests = [str(Path(p) / "tests") for p in projects]
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert f"{2 * len(EXAMPLES)} passed" in out.stdout


def test_written_files_are_ruff_clean(installed):
    _, projects, _ = installed
    ruff = Path(sys.executable).parent / "ruff"
    rules = "E,F,W,B,UP"  # errors and style; import order is the author's choice
    out = subprocess.run(
        [str(ruff), "check", "--no-cache", "--select", rules, *projects],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout
