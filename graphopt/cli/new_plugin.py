"""``graphopt new-plugin NAME --kind KIND``: a new plugin distribution to start from.

Writes ``DIRECTORY/graphopt-NAME/`` (DIRECTORY: the current folder by default)::

    pyproject.toml                   the distribution and its graphopt entry point
    README.md                        install, test, check, publish
    src/graphopt_NAME/__init__.py
    src/graphopt_NAME/plugin.py      graphopt_register: NAME registered by reference
    src/graphopt_NAME/MODULE.py      the worked example of KIND (graphopt.plugin_templates)
    tests/test_NAME.py               the kind's contract check (graphopt.testing)

``pip install -e graphopt-NAME`` then ``pytest graphopt-NAME/tests`` runs it:
the example already passes its check, so a change that breaks the contract
shows up at once. The guides in docs/plugins/ show these files for each kind.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Template:
    """A kind's worked example: its module in ``graphopt.plugin_templates``, the object
    the plugin registers, and the ``graphopt.testing`` check (with its arguments)."""

    module: str
    obj: str
    check: str
    check_arguments: str = ""


TEMPLATES: dict[str, Template] = {
    "graph": Template("epsilon_ball", "epsilon_ball", "check_graph"),
    "eigensolver": Template("inverse_subspace", "inverse_subspace", "check_eigensolver"),
    "response": Template(
        "butterworth", "butterworth", "check_response", ', options={"cutoff": 0.5, "order": 3}'
    ),
    "transform": Template("norm_preserving", "NormPreservingFilter", "check_transform"),
    "penalty": Template("mcp", "MCPPenalty", "check_penalty", ', options={"gamma": 3.0}'),
    "ggm_solver": Template("proximal_gradient", "proximal_gradient", "check_ggm_solver"),
}
"""The kinds ``new-plugin`` writes, with their example."""

NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "new-plugin",
        help="write a new plugin distribution (pyproject, module, test) to start from",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", help="the registered name (lowercase letters, digits, _)")
    parser.add_argument("--kind", choices=sorted(TEMPLATES), default="graph")
    parser.add_argument(
        "--directory", default=".", help="where the distribution's folder goes (default: here)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    root = write_plugin(args.name, args.kind, Path(args.directory))
    print(f"wrote {root}/ ({args.kind} {args.name!r}); next:")
    print(f"  pip install -e {root}")
    print(f"  pytest {root / 'tests'}")
    return 0


def write_plugin(name: str, kind: str, directory: Path) -> Path:
    """Write the distribution of ``kind`` plugin ``name`` under ``directory``; its folder."""
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(
            f"plugin name must be lowercase letters, digits and _ (starting with a letter); "
            f"got {name!r}"
        )
    if kind not in TEMPLATES:
        raise ValueError(f"kind must be one of {sorted(TEMPLATES)}; got {kind!r}")
    root = directory / f"graphopt-{name.replace('_', '-')}"
    if root.exists():
        raise ValueError(f"{str(root)!r} already exists; choose another name or --directory")
    files = plugin_files(name, kind)
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def plugin_files(name: str, kind: str) -> dict[str, str]:
    """Relative path -> contents of every file of the distribution."""
    from graphopt import __version__, plugin_templates

    template = TEMPLATES[kind]
    package = f"graphopt_{name}"
    distribution = f"graphopt-{name.replace('_', '-')}"
    example = Path(plugin_templates.__file__).parent / f"{template.module}.py"
    return {
        "pyproject.toml": PYPROJECT.format(
            name=name, kind=kind, package=package, distribution=distribution, version=__version__
        ),
        "README.md": README.format(
            name=name, kind=kind, distribution=distribution, check=template.check
        ),
        f"src/{package}/__init__.py": f'"""The graphopt {kind} plugin {name!r}."""\n',
        f"src/{package}/plugin.py": PLUGIN.format(
            name=name, kind=kind, package=package, module=template.module, obj=template.obj
        ),
        f"src/{package}/{template.module}.py": example.read_text(encoding="utf-8"),
        f"tests/test_{name}.py": TEST.format(
            name=name,
            kind=kind,
            distribution=distribution,
            check=template.check,
            arguments=template.check_arguments,
        ),
    }


PYPROJECT = """\
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "{distribution}"
version = "0.1.0"
description = "A graphopt {kind} plugin: {name}"
requires-python = ">=3.11"
dependencies = ["graphopt>={version}"]

[project.optional-dependencies]
test = ["pytest>=8"]

# graphopt finds the plugin through this entry point: name = "module" whose
# graphopt_register hook registers what the plugin offers
[project.entry-points.graphopt]
{name} = "{package}.plugin"

[tool.ruff]
line-length = 100  # graphopt's style, which the example follows
"""

PLUGIN = '''\
"""graphopt registration: the entry point in pyproject.toml names this module.

Kept light: the {kind} {name!r} is registered by reference, so graphopt imports
``{package}.{module}``
(and torch) on its first lookup, and ``graphopt plugins`` and every other
command stay fast.
"""

import graphopt


@graphopt.hookimpl
def graphopt_register(registry):
    registry.add_lazy(
        "{kind}",
        "{name}",
        "{package}.{module}:{obj}",
    )
'''

TEST = '''\
"""graphopt's {kind} contract (docs/plugins/{kind}.md), checked for this plugin."""

import graphopt
from graphopt.testing import {check}


def test_{name}_is_registered_by_this_distribution():
    entry = graphopt.registry.entry("{kind}", "{name}")
    assert entry.plugin == "{name}"
    assert entry.distribution == "{distribution}"


def test_{name}_meets_the_{kind}_contract():
    assert {check}("{name}"{arguments})
'''

README = """\
# {distribution}

A graphopt {kind} plugin registering `{name}`, written by `graphopt new-plugin`.

    pip install -e ".[test]"      # installs the entry point
    graphopt plugins --kind {kind}  # lists {name} with this distribution
    pytest tests                  # {check}: the {kind} contract

The module next to `plugin.py` is graphopt's worked example of a {kind};
change it into yours and keep the test passing. `graphopt plugins --check`
imports every registered object and reports a reference that does not resolve.
"""
