"""``graphopt plugins``: list everything registered and where it came from.

Listing imports no plugin's objects (built-ins and well-behaved plugins
register by reference), so it is fast; ``--check`` imports every registered
object and reports the ones that fail, with exit code 1.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

COLUMNS = ["kind", "name", "plugin", "distribution", "version"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plugins",
        help="list registered methods, graphs, solvers and penalties",
        description="List every registered object with its kind, plugin and distribution, "
        "then the plugins that failed to load and those disabled by GRAPHOPT_DISABLE_PLUGINS.",
    )
    parser.add_argument("--kind", help="only this kind (e.g. method, eigensolver)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--check",
        action="store_true",
        help="import every registered object and report those that fail (exit code 1)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from graphopt import PluginError, registry

    rows: list[dict[str, Any]] = []
    broken = 0
    for entry in registry.entries(args.kind):
        row: dict[str, Any] = {column: getattr(entry, column) for column in COLUMNS}
        row["object"] = entry.reference
        if args.check:
            try:
                entry.obj  # noqa: B018 -- the import is the check
                row["import_error"] = None
            except PluginError as err:
                row["import_error"] = str(err)
                broken += 1
        rows.append(row)
    failures = [vars(failure) for failure in registry.failures]
    disabled = [
        {"plugin": s.name, "distribution": s.distribution, "version": s.version}
        for s in registry.disabled
    ]
    if args.json:
        print(json.dumps({"entries": rows, "failures": failures, "disabled": disabled}, indent=2))
        return 1 if broken else 0
    print(format_table(rows, COLUMNS))
    for failure in failures:
        print(
            f"failed plugin {failure['plugin']!r} (distribution {failure['distribution']} "
            f"{failure['version']}): {failure['error']}"
        )
    for source in disabled:
        print(
            f"disabled plugin {source['plugin']!r} (distribution {source['distribution']} "
            f"{source['version']}) by GRAPHOPT_DISABLE_PLUGINS"
        )
    for row in rows:
        if row.get("import_error"):
            print(f"cannot import: {row['import_error']}")
    if args.check and not broken:
        print(f"all {len(rows)} registered objects import")
    return 1 if broken else 0


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain aligned text table with a header row."""
    widths = {c: max([len(c)] + [len(str(r[c])) for r in rows]) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip()]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in columns).rstrip() for r in rows]
    return "\n".join(lines)
