"""The ``graphopt`` console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import graphopt
from graphopt.cli import main


def test_version_flag(capsys):
    try:
        main(["--version"])
    except SystemExit as exit_:
        assert exit_.code == 0
    assert capsys.readouterr().out.strip() == f"graphopt {graphopt.__version__}"


def test_plugins_lists_builtins_with_their_distribution(capsys):
    assert main(["plugins", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    expected = [
        {
            "kind": e.kind,
            "name": e.name,
            "plugin": e.plugin,
            "distribution": e.distribution,
            "version": e.version,
            "object": e.reference,
        }
        for e in graphopt.registry.entries()
    ]
    assert listing["entries"] == expected
    assert listing["failures"] == []


def test_plugins_table_has_header_and_one_row_per_entry(capsys):
    assert main(["plugins"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["KIND", "NAME", "PLUGIN", "DISTRIBUTION", "VERSION"]
    assert len(lines) - 1 == len(graphopt.registry.entries())


def test_console_script_is_installed():
    exe = str(Path(sys.executable).parent / "graphopt")
    if not Path(exe).exists():
        exe = shutil.which("graphopt") or exe
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert graphopt.__version__ in out.stdout
