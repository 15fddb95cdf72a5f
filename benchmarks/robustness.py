"""Fuzz every public solver, graph, eigensolver, Laplacian and spectral function and the
CLI commands with good and bad input, and count what happened.

The cases and the oracle are ``tests/fuzz_cases.py`` (the same ones the bounded
``tests/test_fuzz_*.py`` run): bad input must be a ``ValueError``/``TypeError``
naming the argument (CLI: exit 2 and the file or option), good input a finite
answer or a warning; a converged eigenproblem must match dense ``eigh``. Each
call runs under a 20 s limit. Run::

    .venv/bin/python benchmarks/robustness.py [--examples 1000] [--only NAME ...]

Writes ``benchmarks/results/robustness.{md,json}`` (with every failing case's
description and message).
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fuzz_cases import FAILURES, OUTCOMES, entry_points, outcome

RESULTS = Path(__file__).parent / "results"


def collect(strategy, examples: int, seed_value: int) -> list[tuple[str, str, str]]:
    """(description, outcome, detail) of ``examples`` cases drawn from ``strategy``."""
    rows: list[tuple[str, str, str]] = []

    @seed(seed_value)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case):
        result, detail = outcome(case)
        rows.append((case.description, result, detail[:300]))

    run()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=1000, help="cases per entry point")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--only", nargs="+", help="entry points to run (default: all)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    counts: dict[str, dict[str, int]] = {}
    failures: dict[str, list[dict[str, str]]] = {}
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for name, strategy in entry_points(folder).items():
            if args.only and name not in args.only:
                continue
            started = time.perf_counter()
            rows = collect(strategy, args.examples, args.seed)
            tally = collections.Counter(result for _, result, _ in rows)
            counts[name] = {key: tally.get(key, 0) for key in OUTCOMES}
            counts[name]["seconds"] = round(time.perf_counter() - started, 1)
            failures[name] = [
                {"case": d, "outcome": r, "detail": m} for d, r, m in rows if r in FAILURES
            ]
            print(name, counts[name], flush=True)
    meta = {
        "command": "python benchmarks/robustness.py " + " ".join(sys.argv[1:]),
        "examples_per_entry_point": args.examples,
        "seed": args.seed,
        "python": platform.python_version(),
        "seconds": round(time.perf_counter() - began, 1),
    }
    RESULTS.mkdir(exist_ok=True)
    payload = {"meta": meta, "counts": counts, "failures": failures}
    (RESULTS / "robustness.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / "robustness.md").write_text(table(counts, failures, meta))


def table(counts: dict, failures: dict, meta: dict) -> str:
    heads = ["clear", "ok", "deep", "hang", "silent_nan", "wrong_acceptance", "wrong_answer"]
    total = {key: sum(row[key] for row in counts.values()) for key in heads}
    lines = [
        "# Robustness: fuzzed calls by outcome",
        "",
        f"{meta['examples_per_entry_point']} hypothesis cases per entry point (seed "
        f"{meta['seed']}), {sum(total.values())} calls in {meta['seconds']} s. Reproduce: "
        f"`{meta['command']}`.",
        "",
        "- **clear**: bad input, a `ValueError`/`TypeError` naming the argument (CLI: exit 2,",
        "  one `graphopt: error: <file or option>: ...` line);",
        "- **ok**: good input, a finite answer (or a warning saying it is not converged);",
        "- **deep**: any other exception, or an error not naming the argument;",
        "- **hang**: past 20 s; **silent NaN**: a non-finite answer without a warning;",
        "- **wrong acceptance**: bad input accepted; **wrong answer**: a converged",
        "  eigenproblem whose values differ from dense `eigh` by more than 1e-5 ||L||.",
        "",
        "| entry point | clear | ok | deep | hang | silent NaN | wrong acceptance | wrong answer |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in [*counts.items(), ("**total**", total)]:
        cells = " | ".join(str(row[key]) for key in heads)
        lines.append(f"| {name} | {cells} |")
    failed = sum(total[key] for key in FAILURES)
    lines += [
        "",
        f"{failed} failing calls (deep, hang, silent NaN, wrong acceptance, wrong answer).",
        "The `(all arguments)` rows vary every argument of the GGM solvers (penalty, groups,",
        "solver, lam, tol, max_iter, p; bcd's lambda0 on S's scale) and badly scaled or",
        "singular S; the `(S)` rows vary only S (bad S, or a well-conditioned S).",
    ]
    broken = {name: rows for name, rows in failures.items() if rows}
    if broken:
        lines += ["", "## Failing cases", ""]
        for name, rows in broken.items():
            shown = {}
            for row in rows:
                shown.setdefault((row["outcome"], row["detail"][:120]), row)
            lines.append(f"- `{name}`: {len(rows)}")
            lines += [
                f"  - {row['outcome']}: {row['case']} -> {row['detail'][:160]}"
                for row in list(shown.values())[:8]
            ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
