"""The ``graphopt`` command line.

argparse (standard library) rather than click/typer: no extra dependency, and
each subcommand lives in its own module of this package exposing
``add_parser(subparsers)`` that sets ``func`` on its parser. Adding a command
means adding a module and its name to ``COMMANDS``; nothing heavy is imported
until a command runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from graphopt import __version__

COMMANDS: tuple[str, ...] = ("plugins", "finetune", "solve", "eigen", "new_plugin")
"""Subcommand modules of ``graphopt.cli``, in the order ``--help`` lists them."""


class CLIError(Exception):
    """A user-facing error: printed as ``graphopt: error: ...`` with exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand attached."""
    parser = argparse.ArgumentParser(
        prog="graphopt",
        description="Graph-structured solvers and optimizers for fine-tuning large models.",
    )
    parser.add_argument("--version", action="version", version=f"graphopt {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"graphopt.cli.{name}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``graphopt`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, FileNotFoundError) as err:
        print(f"graphopt: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
