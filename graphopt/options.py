"""Options written on one command-line word: ``key=value,key=value`` with YAML values.

``--method 'spectral:graph=knn_cosine,graph_options={k: 5, block_size: 512}'``
and ``--method 'lora:target_modules=[q, v],r=8'``: the text after the method
name is split at the commas that are not inside brackets or quotes, each
item at its first ``=``, and each value is read as one YAML flow node (a
scalar, ``[a, b]`` or ``{a: 1}``, nested as deep as needed). Numbers follow
YAML 1.2, so ``1e-3`` is a float (PyYAML's YAML 1.1 would read it as the
string "1e-3"). A string holding a comma or a bracket, or starting with a
quote, is quoted: ``name='a, b'``.

Every problem is a ``ValueError`` naming the option and the text it came
from, raised before anything runs (the CLI prints it as ``graphopt: error: ...``).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

OPENING = {"[": "]", "{": "}"}
CLOSING = {"]": "[", "}": "{"}
QUOTE_AFTER = {"", "[", "{", ",", ":", "?"}
"""What may precede a quote that starts a quoted scalar inside a value."""


class _Loader(yaml.SafeLoader):
    """SafeLoader whose floats are YAML 1.2's: ``1e-3`` and ``2E5`` are numbers."""


EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
"""Floats YAML 1.2 reads and PyYAML's YAML 1.1 does not: ``1e-3``, ``2E5``, ``-1.5e+2``."""

_Loader.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_FLOAT, list("-+0123456789"))


def parse_value(text: str) -> Any:
    """One YAML flow node (``1e-3``, ``[q, v]``, ``{a: 1}``, ``'a, b'``); empty text is None.

    Raises ``ValueError`` with YAML's description of the problem.
    """
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no object tags
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"{text.strip()!r} is not a valid YAML value ({problem})") from None


def split_items(text: str) -> list[str]:
    """``text`` cut at its top-level commas (not inside ``[]``, ``{}`` or quotes), stripped;
    empty items dropped. Raises ``ValueError`` naming the item (its text before ``=``)
    with an unbalanced bracket or quote."""
    items: list[str] = []
    stack: list[str] = []
    quote: str | None = None
    start = 0
    escaped = False
    for position, char in enumerate(text):
        if quote is not None:
            if escaped:
                escaped = False
            elif char == "\\" and quote == '"':
                escaped = True
            elif char == quote == "'" and text[position + 1 : position + 2] == "'":
                escaped = True  # '' is a quote inside a single-quoted scalar
            elif char == quote:
                quote = None
        elif char in "'\"" and _opens_scalar(text[start:position], bool(stack)):
            quote = char
        elif char in OPENING:
            stack.append(char)
        elif char in CLOSING:
            if not stack or stack[-1] != CLOSING[char]:
                raise ValueError(
                    f"{_item_name(text[start:])}: unexpected {char!r} at the end of "
                    f"{text[start : position + 1].strip()!r}"
                )
            stack.pop()
        elif char == "," and not stack:
            items.append(text[start:position])
            start = position + 1
    rest = text[start:].strip()
    if quote is not None:
        raise ValueError(f"{_item_name(rest)}: unclosed quote {quote} in {rest!r}")
    if stack:
        raise ValueError(
            f"{_item_name(rest)}: unclosed {stack[-1]!r} in {rest!r} "
            f"(missing {OPENING[stack[-1]]!r})"
        )
    items.append(text[start:])
    return [item.strip() for item in items if item.strip()]


def _opens_scalar(before: str, nested: bool) -> bool:
    """Whether a quote after ``before`` (the item so far) starts a quoted scalar: only at
    the start of a scalar, as in YAML (``0'`` and ``a="`` inside brackets are plain)."""
    before = before.rstrip()
    if not nested and before.endswith("=") and before.count("=") == 1:
        return True  # right after the key
    return before[-1:] in QUOTE_AFTER


def _item_name(item: str) -> str:
    key = item.partition("=")[0].strip()
    return f"option {key!r}"


def parse_options(text: str, context: str = "option") -> dict[str, Any]:
    """``"k=v,k2={a: 1},k3=[x, y]"`` -> ``{"k": "v", "k2": {"a": 1}, "k3": ["x", "y"]}``.

    ``context`` names where the text came from in error messages (e.g.
    ``"--method 'spectral:...'"``). Keys are Python identifiers, each given once.
    """
    try:
        items = split_items(text)
    except ValueError as err:
        raise ValueError(f"{context}: {err}") from None
    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{context}: option {item!r} must look like key=value")
        if not key.isidentifier():
            raise ValueError(f"{context}: option name {key!r} is not an identifier")
        if key in options:
            raise ValueError(f"{context}: option {key!r} is given twice")
        try:
            options[key] = parse_value(raw)
        except ValueError as err:
            raise ValueError(f"{context}: option {key!r}: {err}") from None
    return options
