"""``key=value,...`` option strings with nested YAML values (``--method NAME:...``)."""

from __future__ import annotations

import math

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from graphopt.cli import main
from graphopt.finetune.config import MethodSpec
from graphopt.options import EXPONENT_FLOAT, parse_options, parse_value, split_items


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("graph=x,graph_options={a: 1, b: 2}", {"graph": "x", "graph_options": {"a": 1, "b": 2}}),
        ("target_modules=[q, v],r=8", {"target_modules": ["q", "v"], "r": 8}),
        ("opts={a: [1, {b: [2, 3]}], c: 'x, y'}", {"opts": {"a": [1, {"b": [2, 3]}], "c": "x, y"}}),
        ("name='a, b', other=\"c}d\"", {"name": "a, b", "other": "c}d"}),
        (
            "lr=1e-3,big=2E5,neg=-1.5e+2,plain=3",
            {"lr": 1e-3, "big": 2e5, "neg": -150.0, "plain": 3},
        ),
        ("flag=true,none=,zero=0", {"flag": True, "none": None, "zero": 0}),
        ("expr=a=b", {"expr": "a=b"}),
        (" spaced = yes , trailing=1,", {"spaced": True, "trailing": 1}),
        ("", {}),
    ],
)
def test_parse_options_examples(text, expected):
    assert parse_options(text) == expected


def test_method_spec_reads_nested_values():
    spec = MethodSpec.parse("spectral:graph=x,graph_options={a: 1, b: 2}")
    assert spec.name == "spectral"
    assert spec.config == {"graph": "x", "graph_options": {"a": 1, "b": 2}}
    assert MethodSpec.parse("lora:target_modules=[q, v]").config == {"target_modules": ["q", "v"]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("k=3,graph_options={a: 1", r"option 'graph_options': unclosed '\{'"),
        ("x=[1, 2},y=2", r"option 'x': unexpected '\}'"),
        ("x=]", r"option 'x': unexpected '\]'"),
        ("x='abc", r"option 'x': unclosed quote '"),
        ("x={a: : b}", r"option 'x': '\{a: : b\}' is not a valid YAML value"),
        ("x=[a, b]c", r"option 'x': .* is not a valid YAML value"),
        ("x=1,lonely", r"option 'lonely' must look like key=value"),
        ("=1", r"option '=1' must look like key=value"),
        ("a b=1", r"option name 'a b' is not an identifier"),
        ("x=1,x=2", r"option 'x' is given twice"),
    ],
)
def test_a_bad_option_is_a_value_error_naming_it(text, message):
    with pytest.raises(ValueError, match=r"^--method ['\"]m:.*['\"]: " + message):
        MethodSpec.parse(f"m:{text}")


def test_split_items_keeps_brackets_and_quotes_together():
    assert split_items('a=[1, 2], b={c: \'d, e\'}, f="g\\", h"') == [
        "a=[1, 2]",
        "b={c: 'd, e'}",
        'f="g\\", h"',
    ]


def test_parse_value_loads_no_python_objects():
    with pytest.raises(ValueError, match="not a valid YAML value"):
        parse_value("!!python/object/apply:os.system ['true']")


def test_cli_reports_a_bad_method_option_without_traceback(tmp_path, capsys):
    code = main(
        ["finetune", "--method", "spectral:graph_options={k: 3", "--output-dir", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("graphopt: error: --method 'spectral:graph_options={k: 3': ")
    assert "option 'graph_options': unclosed '{'" in err
    assert "Traceback" not in err


# -- round trip: any mapping, written as a user would type it, reads back equal ---------------


class _Dumper(yaml.SafeDumper):
    """Quotes what YAML 1.2 reads as a float (``1e-3``), as the parser's loader does."""


_Dumper.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_FLOAT, list("-+0123456789"))


def _typed(value: object) -> str:
    """The text of one value, as the flow item it would be inside a list."""
    dumped = yaml.dump([value], Dumper=_Dumper, default_flow_style=True, width=math.inf)
    return dumped.strip()[1:-1].strip()


scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(
                st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]),
                min_size=1,
                max_size=6,
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)
keys = st.from_regex(r"[a-z_][a-z0-9_]{0,11}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(keys, values, max_size=6))
def test_option_mappings_round_trip(options):
    text = ",".join(f"{key}={_typed(value)}" for key, value in options.items())
    assert parse_options(text) == options
    assert MethodSpec.parse(f"method:{text}").config == options
