"""The ``graphopt`` command line.

argparse (standard library) rather than click/typer: no extra dependency, and
each subcommand lives in its own module of this package exposing
``add_parser(subparsers)`` that sets ``func`` on its parser. Adding a command
means adding a module and its name to ``COMMANDS``; nothing heavy is imported
until a command runs.

A user's mistake never prints a traceback: it is one line ``graphopt: error:
<file or option>: <problem>`` and exit code 2 (argparse's own usage errors
too). ``ValueError`` from the library is attributed to the option its message
names (``lam must be ...`` -> ``--lam``); unreadable or unwritable files are
named by path. Other exceptions are bugs and keep their traceback.
``--threads N`` (any position; ``GRAPHOPT_THREADS``) sets the CPU threads
before the command runs (``graphopt.threads``).
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

from graphopt import __version__

COMMANDS: tuple[str, ...] = ("plugins", "finetune", "solve", "eigen", "new_plugin")
"""Subcommand modules of ``graphopt.cli``, in the order ``--help`` lists them."""

USAGE_ERROR = 2
"""Exit code of every user error."""


class CLIError(Exception):
    """A user-facing error: printed as ``graphopt: error: ...`` with exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors in graphopt's one-line form."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(USAGE_ERROR, f"graphopt: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand attached (each accepting ``--threads``)."""
    parser = Parser(
        prog="graphopt",
        description="Graph-structured solvers and optimizers for fine-tuning large models.",
    )
    parser.add_argument("--version", action="version", version=f"graphopt {__version__}")
    _add_threads(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"graphopt.cli.{name}").add_parser(subparsers)
    for command in _leaf_parsers(parser):
        if "--threads" not in command._option_string_actions:  # a command may own it
            _add_threads(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``graphopt`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return USAGE_ERROR
    try:
        apply_threads(getattr(args, "threads", None))  # only present when given
        return int(args.func(args) or 0)
    except CLIError as err:
        return _fail(str(err))
    except ValueError as err:
        return _fail(attribute(str(err), command_options(parser, args.func)))
    except OSError as err:  # a file the command could not read or write
        where = err.filename if err.filename is not None else "file system"
        return _fail(f"{where}: {err.strerror or err}")
    except KeyboardInterrupt:
        print("graphopt: interrupted", file=sys.stderr)
        return 130


def apply_threads(flag: Any) -> None:
    """Set the thread count asked for (``graphopt.threads.requested_threads``), if any."""
    from graphopt.threads import requested_threads, set_threads

    count = requested_threads(flag)
    if count is not None:
        set_threads(count)


def attribute(message: str, names: Mapping[str, str]) -> str:
    """``"<label>: <message>"`` where the label is what the message's subject (its first
    word, after ``unknown``) stands for on the command line (``names``: an API argument or
    registry kind -> an option or file); the message alone when there is none."""
    label = _label(message, names)
    return message if label is None else f"{label}: {message}"


@contextmanager
def errors_named(names: Mapping[str, str]) -> Iterator[None]:
    """A ``ValueError`` raised inside whose subject is in ``names`` becomes a
    ``CLIError`` labelled by it (``attribute``); others propagate unchanged, for
    ``main`` to label by the command's options."""
    try:
        yield
    except ValueError as err:
        if _label(str(err), names) is None:
            raise
        raise CLIError(attribute(str(err), names)) from None


def _label(message: str, names: Mapping[str, str]) -> str | None:
    match = re.match(r"(?:unknown )?([A-Za-z_][A-Za-z0-9_]*)", message)
    label = names.get(match.group(1)) if match else None
    return None if label is None or message.startswith(f"{label}:") else label


def _fail(message: str) -> int:
    print(f"graphopt: error: {message}", file=sys.stderr)
    return USAGE_ERROR


def _add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=_threads,
        default=argparse.SUPPRESS,  # a value given before the command stands
        metavar="N",
        help="CPU threads for torch/BLAS (default: $GRAPHOPT_THREADS, $OMP_NUM_THREADS or 1)",
    )


def _threads(text: str) -> int:
    from graphopt.threads import parse_threads

    try:
        return parse_threads(text, "--threads")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--threads ")) from None


def _leaf_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every parser that runs a command (the subcommands', recursively)."""
    children = [
        choice
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for choice in dict.fromkeys(action.choices.values())
    ]
    if not children:
        yield parser
    for child in children:
        yield from _leaf_parsers(child)


def command_options(parser: argparse.ArgumentParser, func: Any) -> dict[str, str]:
    """dest -> the option's longest spelling (``max_iter`` -> ``--max-iter``) for the
    subcommand of ``parser`` that runs ``func``."""
    for command in _leaf_parsers(parser):
        if command.get_default("func") is func:
            return {
                action.dest: max(action.option_strings, key=len)
                for action in command._actions
                if action.option_strings and action.dest not in ("help", "version", "threads")
            }
    return {}


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
