"""``graphopt plugins``: list everything registered and where it came from."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plugins",
        help="list registered methods, graphs, solvers and penalties",
        description="List every registered object with its kind, plugin and distribution.",
    )
    parser.add_argument("--kind", help="only this kind (e.g. method, eigensolver)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from graphopt import registry

    entries = registry.entries(args.kind)
    rows = [
        {
            "kind": e.kind,
            "name": e.name,
            "plugin": e.plugin,
            "distribution": e.distribution,
            "version": e.version,
        }
        for e in entries
    ]
    if args.json:
        print(json.dumps({"entries": rows, "failures": registry.failures}, indent=2))
        return 0
    print(format_table(rows, ["kind", "name", "plugin", "distribution", "version"]))
    for name, error in registry.failures.items():
        print(f"failed plugin {name!r}: {error}")
    return 0


def format_table(rows: list[dict[str, str]], columns: list[str]) -> str:
    """A plain aligned text table with a header row."""
    widths = {c: max([len(c)] + [len(str(r[c])) for r in rows]) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip()]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in columns).rstrip() for r in rows]
    return "\n".join(lines)
