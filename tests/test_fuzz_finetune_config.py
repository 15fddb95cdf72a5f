"""Fuzzing the job's configuration: any mapping gives a config or a ValueError naming
the option, never another exception, and a config that builds round-trips."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphopt.cli import main
from graphopt.finetune.config import FinetuneConfig

FIELDS = [f.name for f in dataclasses.fields(FinetuneConfig)] + ["method"]
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.text(max_size=6), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from([*FIELDS, "no_such_option"]), VALUES, max_size=4))
def test_any_mapping_gives_a_config_or_a_value_error_naming_the_option(values):
    try:
        config = FinetuneConfig.build(values)
    except ValueError as err:
        named = [k for k in values if k in str(err) or k.replace("_", "-") in str(err)]
        assert named or "method" in str(err), (values, str(err))
    else:
        assert FinetuneConfig.build(config.to_dict()).to_dict() == config.to_dict()


@pytest.mark.parametrize(
    "flags",
    [
        ["--lr", "inf"],
        ["--lr", "nan"],
        ["--max-steps", "-3"],
        ["--method", "lora:r={"],
        ["--method", "nosuch"],
        ["--batch-size", "0"],
        ["--config", "missing.yaml"],
        ["--task", "causal-lm"],
    ],
)
def test_bad_flags_are_an_error_with_exit_2_and_no_traceback(flags, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["finetune", *flags, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("graphopt: error:") and "Traceback" not in err
    assert not (tmp_path / "runs").exists()
