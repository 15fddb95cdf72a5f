"""Start-up time of ``graphopt plugins``, ``--help`` and a registry lookup: before vs after.

"before" is the source at ``--baseline`` (default c951410, where every built-in
plugin module imported torch/transformers when the registry loaded), "after" the
working tree (built-ins registered by ``"module:attribute"`` reference). Both are
exported from git into a temporary folder laid out as the installed package
(``graphopt/``, ``graphopt/solvers``, ``graphopt/plugins``) and run with that
folder first on ``PYTHONPATH`` and as the working directory, so the two
differ in source only. Each command runs in a fresh Python process
(``--repeats`` times, default 10), before and after interleaved in
alternating order; the table reports the median wall time and the
before/after ratio. The OS file cache is warm (the first,
discarded round warms it for both). ``python -c pass`` is the interpreter's floor.

Run: ``.venv/bin/python benchmarks/registry_startup.py [--baseline REV] [--repeats N]``
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
LAYOUT = {"graphopt": "graphopt", "solvers": "graphopt/solvers", "plugins": "graphopt/plugins"}
"""Repository folder -> where it sits in the installed package (pyproject's package-dir)."""

CLI = "import sys; from graphopt.cli import main; sys.exit(main(sys.argv[1:]))"
COMMANDS: dict[str, list[str]] = {
    "python -c pass": ["-c", "pass"],
    "graphopt --help": ["-c", CLI, "--help"],
    "graphopt plugins": ["-c", CLI, "plugins"],
    "graphopt plugins --json": ["-c", CLI, "plugins", "--json"],
    "registry.names('method')": ["-c", "import graphopt; graphopt.registry.names('method')"],
}


def export(revision: str | None, folder: Path) -> Path:
    """The source at ``revision`` (None: the working tree) laid out as the installed package."""
    for source, target in LAYOUT.items():
        destination = folder / target
        if revision is None:
            files = subprocess.run(
                ["git", "ls-files", "--cached", "--others", "--exclude-standard", source],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            for name in files:
                path = ROOT / name
                if path.is_file():
                    out = destination / Path(name).relative_to(source)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(path.read_bytes())
            continue
        archive = subprocess.run(
            ["git", "archive", "--format=tar", revision, source],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            for member in tar.getmembers():
                if member.isfile():
                    data = tar.extractfile(member)
                    assert data is not None
                    out = destination / Path(member.name).relative_to(source)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(data.read())
    return folder


def run_once(tree: Path, arguments: list[str]) -> float:
    """Wall seconds of one fresh ``python ARGS`` process with ``tree`` first on the path."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    subprocess.run([sys.executable, *arguments], cwd=tree, env=env, capture_output=True, check=True)
    return time.perf_counter() - start


def imports_torch(tree: Path, arguments: list[str]) -> bool:
    """Whether the command imports torch (checked once, outside the timings)."""
    code = arguments[1] if arguments[:1] == ["-c"] else ""
    probe = (
        "import sys, atexit\n"
        "atexit.register(lambda: print('TORCH', 'torch' in sys.modules))\n"
        f"sys.argv = ['-c', *{arguments[2:]!r}]\n"
        f"exec(compile({code!r}, '<command>', 'exec'))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tree, env=env, capture_output=True, text=True
    )
    return "TORCH True" in out.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--baseline",
        default="c951410",
        help="git revision of 'before' (default: the commit the registry work started from)",
    )
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    baseline = subprocess.run(
        ["git", "rev-parse", "--short", args.baseline],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    after_rev = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {
            "before": export(args.baseline, Path(tmp) / "before"),
            "after": export(None, Path(tmp) / "after"),
        }
        times: dict[str, dict[str, list[float]]] = {
            c: {"before": [], "after": []} for c in COMMANDS
        }
        load_start = os.getloadavg()[0]
        for round_number in range(args.repeats + 1):  # round 0 warms the file cache
            order = ["before", "after"] if round_number % 2 else ["after", "before"]
            for command, arguments in COMMANDS.items():
                for side in order:
                    seconds = run_once(trees[side], arguments)
                    if round_number:
                        times[command][side].append(seconds)
        torch_imported = {
            command: {side: imports_torch(trees[side], arguments) for side in trees}
            for command, arguments in COMMANDS.items()
        }
    load_end = os.getloadavg()[0]
    rows = []
    for command, sides in times.items():
        before, after = statistics.median(sides["before"]), statistics.median(sides["after"])
        rows.append(
            {
                "command": command,
                "before_median_s": before,
                "after_median_s": after,
                "ratio": before / after,
                "before_s": sides["before"],
                "after_s": sides["after"],
                "imports_torch": torch_imported[command],
            }
        )
    meta = {
        "baseline": f"{args.baseline} ({baseline})",
        "after": f"working tree on {after_rev}",
        "repeats": args.repeats,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_1min": [load_start, load_end],
        "command": " ".join(["python benchmarks/registry_startup.py", *sys.argv[1:]]),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "registry_startup.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n"
    )
    lines = [
        "# Registry start-up: `graphopt plugins`, `--help`, a name lookup",
        "",
        f"Median wall time of {args.repeats} fresh processes per command, before "
        f"({meta['baseline']}) and after ({meta['after']}) interleaved in one run; "
        f"Python {meta['python']}, {meta['cpus']} CPUs shared with other jobs (1-minute load "
        f"{load_start:.2f} at the start, {load_end:.2f} at the end). Goal: `graphopt plugins` "
        "and `graphopt --help` under 1.5 s.",
        "",
        "| command | before (s) | after (s) | before / after | torch imported before / after |",
        "|---------|-----------:|----------:|---------------:|-------------------------------|",
    ]
    for row in rows:
        torch_flags = "/".join("yes" if row["imports_torch"][s] else "no" for s in trees)
        lines.append(
            f"| `{row['command']}` | {row['before_median_s']:.3f} | {row['after_median_s']:.3f} "
            f"| {row['ratio']:.2f}x | {torch_flags} |"
        )
    lines += ["", f"Reproduce: `.venv/bin/{meta['command']}`", ""]
    (RESULTS / "registry_startup.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
