"""Name patterns (PEFT's rules) and regular expressions matched with a time bound.

A pattern is either a **string**, a regular expression full-matched against a
name, or a **list** of names / name suffixes (``"query"`` matches
``encoder.layer.0.attention.self.query``), as in PEFT's ``target_modules``.

Regular expressions that come from a file (an ``adapter_config.json``) are
untrusted: ``(.*.*)*[^\\s\\S]`` backtracks for longer than the universe's age
on a 30-character name. ``evaluate(..., bounded=True)`` runs the matching
(Python's own ``re``, so the semantics are exactly PEFT's) in a child
interpreter that is killed after ``TIME_LIMIT_S``; the patterns' length and
number are capped before that. This module imports nothing of graphopt, so the
child runs it as a plain script.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

Patterns = str | list[str]

TIME_LIMIT_S = 10.0
"""Wall-clock bound on matching the untrusted regular expressions of one file."""
MAX_PATTERN_LENGTH = 1000
"""Longest regular expression accepted from a file (characters)."""
MAX_PATTERNS = 10_000
"""Most regular expressions accepted from one file."""

Spec = tuple[str, str, str | None]
"""(regular expression, ``"fullmatch"`` or ``"match"``, group name or None)."""


def check_patterns(patterns: Any, name: str) -> Patterns:
    """Reject anything but a non-empty string (a valid regex) or a non-empty list of
    non-empty strings; a tuple becomes a list."""
    if isinstance(patterns, str):
        if not patterns:
            raise ValueError(f"{name} must not be empty")
        try:
            re.compile(patterns)
        except re.error as err:
            raise ValueError(
                f"{name} {patterns!r} is not a valid regular expression: {err}"
            ) from None
        return patterns
    if (
        isinstance(patterns, list | tuple)
        and patterns
        and all(isinstance(p, str) and p for p in patterns)
    ):
        return list(patterns)
    raise ValueError(
        f"{name} must be a regular expression or a non-empty list of names; got {patterns!r}"
    )


def name_matches(patterns: Patterns, name: str) -> bool:
    """PEFT's rule: a string is a regex full-matched against ``name``; a list matches
    ``name`` itself or any name ending in ``"." + entry``."""
    if isinstance(patterns, str):
        return re.fullmatch(patterns, name) is not None
    return suffix_matches(patterns, name)


def suffix_matches(names: Sequence[str], name: str) -> bool:
    """Whether ``name`` is one of ``names`` or ends in ``"." + one of them``."""
    return any(name == entry or name.endswith("." + entry) for entry in names)


def evaluate(
    specs: Sequence[Spec], names: Sequence[str], *, bounded: bool = False, what: str = "pattern"
) -> list[dict[str, str]]:
    """For each spec, ``{name: matched text or group}`` of the names it matches.

    ``bounded=True`` (patterns read from a file): each pattern must be at most
    ``MAX_PATTERN_LENGTH`` characters, at most ``MAX_PATTERNS`` of them, and the
    whole evaluation finishes within ``TIME_LIMIT_S`` or raises ``ValueError``
    naming ``what``.
    """
    specs = [(str(p), str(mode), group) for p, mode, group in specs]
    if not bounded:
        return _evaluate(specs, list(names))
    if len(specs) > MAX_PATTERNS:
        raise ValueError(f"{what}: {len(specs)} regular expressions, more than {MAX_PATTERNS}")
    for pattern, _, _ in specs:
        if len(pattern) > MAX_PATTERN_LENGTH:
            raise ValueError(
                f"{what}: a regular expression of {len(pattern)} characters (limit "
                f"{MAX_PATTERN_LENGTH}): {pattern[:60]!r}..."
            )
    request = json.dumps({"specs": specs, "names": list(names)})
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-S", __file__],
            input=request,
            capture_output=True,
            text=True,
            timeout=TIME_LIMIT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        shown = ", ".join(repr(p) for p, _, _ in specs[:3])
        raise ValueError(
            f"{what}: matching the regular expression(s) {shown} against the model's "
            f"{len(names)} names did not finish within {TIME_LIMIT_S:g} s (catastrophic "
            "backtracking?); refusing the file"
        ) from None
    if done.returncode != 0:
        raise ValueError(f"{what}: could not match the regular expressions: {done.stderr[-500:]}")
    return json.loads(done.stdout)


def _evaluate(specs: list[Spec], names: list[str]) -> list[dict[str, str]]:
    results = []
    for pattern, mode, group in specs:
        compiled = re.compile(pattern)
        find = compiled.fullmatch if mode == "fullmatch" else compiled.match
        found = {}
        for name in names:
            match = find(name)
            if match is not None:
                found[name] = match.group(group) if group else match.group(0)
        results.append(found)
    return results


if __name__ == "__main__":  # the bounded child: JSON request on stdin, JSON answer on stdout
    request = json.load(sys.stdin)
    json.dump(_evaluate([tuple(s) for s in request["specs"]], request["names"]), sys.stdout)
