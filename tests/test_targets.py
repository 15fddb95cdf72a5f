"""Target options at parity with PEFT (PEFT itself is the reference), parameters kept
trainable (trainable_extra, bias, tied weights), atomic apply, time-bounded regexes."""

from __future__ import annotations

import copy
import json
import time

import pytest
import torch
from tiny_models import TARGETS, tiny
from torch import nn

import graphopt
from graphopt import patterns
from graphopt.methods import MethodConfig
from graphopt.targets import resolve_targets


def resolved(model: nn.Module, **options) -> set[str]:
    return set(resolve_targets(model, MethodConfig(**options)).targets)


def peft_resolved(model: nn.Module, **options) -> set[str]:
    """The modules PEFT's own matching selects for a LoraConfig with ``options``."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import (
        _ExcludedModule,
        _maybe_include_all_linear_layers,
        check_target_module_exists,
    )

    config = _maybe_include_all_linear_layers(LoraConfig(**options), model)
    chosen = set()
    for name, _ in model.named_modules():
        found = check_target_module_exists(config, name)
        if found and not isinstance(found, _ExcludedModule):
            chosen.add(name)
    return chosen


# -- target options = PEFT's --------------------------------------------------------------

PEFT_CASES = [
    {"target_modules": ["q_proj", "v_proj"]},
    {"target_modules": r".*\.(q|k)_proj"},
    {"target_modules": ["self_attn.q_proj", "mlp.down_proj"]},
    {
        "target_modules": ["q_proj", "v_proj"],
        "exclude_modules": ["model.layers.1.self_attn.q_proj"],
    },
    {"target_modules": ["q_proj", "v_proj"], "exclude_modules": r".*layers\.2\..*"},
    {"target_modules": ["q_proj", "down_proj"], "layers_to_transform": 1},
    {"target_modules": ["q_proj", "down_proj"], "layers_to_transform": [0, 2]},
    {"target_modules": ["q_proj"], "layers_to_transform": [2], "layers_pattern": "layers"},
    {"target_modules": ["q_proj"], "layers_to_transform": [0], "layers_pattern": ["h", "layers"]},
    {"target_modules": "all-linear"},
    {"target_modules": "all-linear", "exclude_modules": ["gate_proj", "up_proj"]},
]


@pytest.mark.parametrize("options", PEFT_CASES, ids=[str(i) for i in range(len(PEFT_CASES))])
def test_target_options_select_what_peft_selects(options):
    model = tiny("llama_causal")
    assert resolved(model, **options) == peft_resolved(model, **options)
    assert resolved(model, **options)


@pytest.mark.parametrize("architecture", ["gpt2", "t5", "vit", "qwen2"])
def test_all_linear_is_peft_all_linear_on_every_architecture(architecture):
    model = tiny(architecture)
    ours = resolved(model, target_modules="all-linear")
    assert ours == peft_resolved(model, target_modules="all-linear")
    if architecture == "gpt2":
        assert "lm_head" not in ours and "transformer.h.0.attn.c_attn" in ours  # Conv1D in


def test_all_linear_leaves_out_a_classification_head():
    """PEFT's rule with task_type SEQ_CLS (graphopt has no task type: always)."""
    from peft.utils.constants import SEQ_CLS_HEAD_NAMES

    from graphopt.targets import SEQ_CLS_HEADS

    assert set(SEQ_CLS_HEADS) == set(SEQ_CLS_HEAD_NAMES)
    model = tiny("bert_classifier")
    ours = resolved(model, target_modules="all-linear")
    assert ours == peft_resolved(model, target_modules="all-linear", task_type="SEQ_CLS")
    assert "classifier" not in ours


def test_rank_and_alpha_patterns_give_each_module_what_peft_gives_it():
    from peft import LoraConfig, get_peft_model

    model = tiny("llama_causal")
    options = {
        "target_modules": ["q_proj", "v_proj", "down_proj"],
        "rank_pattern": {"down_proj": 2, r"model\.layers\.1\.self_attn\.q_proj": 6},
        "alpha_pattern": {"v_proj": 5, "q_proj": 7},
    }
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, **options))
    expected = {
        name.removeprefix("base_model.model."): (m.r["default"], m.lora_alpha["default"])
        for name, m in peft_model.named_modules()
        if hasattr(m, "lora_A")
    }
    graphopt.apply(model, "lora", r=4, alpha=8, **options)
    layers = graphopt.methods_of(model)[0].layers(model)
    assert {n: (layer.r, layer.alpha) for n, layer in layers.items()} == expected
    assert len({r for r, _ in expected.values()}) == 3


def test_a_regex_that_would_match_as_a_name_gets_a_hint():
    with pytest.raises(ValueError, match=r"the list \['q_proj'\] would match 3 module"):
        graphopt.apply(tiny("llama_causal"), "lora", "q_proj")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"target_modules": r".*q_proj", "layers_to_transform": [0]},
            "need target_modules as a list",
        ),
        ({"target_modules": ["q_proj"], "layers_pattern": "layers"}, "needs layers_to_transform"),
        ({"target_modules": ["q_proj"], "layers_to_transform": [-1]}, "non-negative"),
        ({"target_modules": ["q_proj"], "bias": "some"}, "bias must be one of"),
        ({"target_modules": ["q_proj"], "rank_pattern": {"(": 2}}, "rank_pattern key"),
        ({"target_modules": ["q_proj"], "rank_pattern": {"(?i)q": 2}}, "rank_pattern key"),
        ({"target_modules": ["q_proj"], "exclude_modules": []}, "exclude_modules"),
    ],
)
def test_bad_target_options_are_clear_errors(options, message):
    with pytest.raises(ValueError, match=message):
        graphopt.apply(tiny("llama_causal"), "lora", **options)


# -- parameters kept trainable --------------------------------------------------------------


def trainable(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("bias", ["none", "lora_only", "all"])
def test_bias_option_trains_the_biases_peft_trains(bias):
    from peft import LoraConfig, get_peft_model

    model = tiny("bert")
    peft_model = get_peft_model(
        copy.deepcopy(model), LoraConfig(r=2, target_modules=["query"], bias=bias)
    )
    expected = {
        n.removeprefix("base_model.model.").replace(".default.", ".")
        for n, p in peft_model.named_parameters()
        if p.requires_grad
    }
    graphopt.apply(model, "lora", ["query"], r=2, bias=bias)
    assert trainable(model) == expected


def test_trainable_extra_names_a_target_bias_before_the_layer_is_wrapped():
    """The reported bug: KeyError '...q_proj.bias' (it becomes ...q_proj.base_layer.bias)."""
    model = tiny("qwen2")
    graphopt.apply(model, "lora", ["q_proj"], r=2, trainable_extra=r".*q_proj\.bias")
    assert {n for n in trainable(model) if "bias" in n} == {
        f"layers.{i}.self_attn.q_proj.base_layer.bias" for i in range(2)
    }


def test_a_tied_lm_head_can_be_trained_and_is_saved_once_under_its_canonical_name(tmp_path):
    model = tiny("gpt2")
    graphopt.apply(model, "lora", TARGETS["gpt2"], r=2, trainable_extra=["lm_head"])
    assert (
        model.lm_head.weight.requires_grad and model.lm_head.weight is model.transformer.wte.weight
    )
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    graphopt.save_adapter(model, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["trainable_extra"] == ["transformer.wte.weight"]
    fresh = graphopt.load_adapter(tiny("gpt2"), tmp_path)
    assert torch.equal(fresh.lm_head.weight, model.lm_head.weight)
    assert fresh.lm_head.weight is fresh.transformer.wte.weight


def test_keep_trainable_keeps_what_the_user_made_trainable_and_trains_it():
    from graphopt.optim import GraphOptimizer

    model = tiny("bert")
    for p in model.parameters():
        p.requires_grad_(False)
    model.pooler.dense.weight.requires_grad_(True)
    graphopt.apply(model, "lora", ["query"], r=2, keep_trainable=True)
    assert "pooler.dense.weight" in trainable(model)
    optimizer = GraphOptimizer.for_model(model, lr=1e-3)
    assert any(p is model.pooler.dense.weight for g in optimizer.param_groups for p in g["params"])
    other = tiny("bert")
    graphopt.apply(other, "lora", ["query"], r=2)  # default on a plain model: frozen
    assert "pooler.dense.weight" not in trainable(other)


# -- atomic apply ----------------------------------------------------------------------------


def state(model: nn.Module) -> tuple:
    return (
        [(n, type(m).__name__) for n, m in model.named_modules()],
        {k: v.clone() for k, v in model.state_dict().items()},
        {n: p.requires_grad for n, p in model.named_parameters()},
        [id(m) for m in graphopt.methods_of(model)],
        [id(p) for p in model.parameters()],
    )


def assert_same_state(model: nn.Module, before: tuple) -> None:
    modules, tensors, flags, methods, params = state(model)
    assert modules == before[0]
    assert tensors.keys() == before[1].keys()
    assert all(torch.equal(tensors[k], before[1][k]) for k in tensors)
    assert flags == before[2] and methods == before[3] and params == before[4]


@pytest.mark.parametrize("method", ["lora", "linchain", "pca_ggm"])
def test_an_error_mid_apply_leaves_the_model_exactly_as_before(method, monkeypatch):
    model = tiny("bert")
    graphopt.apply(model, "lora", ["key"], r=2)  # a stack is there already
    with torch.no_grad():
        model.encoder.layer[0].attention.self.key.lora_B.weight.normal_()
    before = state(model)
    cls = type(graphopt.registry.get("method", method)(
        graphopt.registry.get("method", method).config_class(target_modules=["x"])
    ))  # fmt: skip
    original = cls.wrap
    calls = []

    def failing_wrap(self, layer, config):
        calls.append(layer)
        if len(calls) == 3:
            raise RuntimeError("injected failure at the third target")
        return original(self, layer, config)

    monkeypatch.setattr(cls, "wrap", failing_wrap)
    options = {"r": 2, "n_important": 3, "top_k": 6} if method == "pca_ggm" else {"r": 2}
    with pytest.raises(RuntimeError, match="injected"):
        graphopt.apply(model, method, TARGETS["bert"], trainable_extra=["pooler"], **options)
    assert len(calls) == 3
    assert_same_state(model, before)


def test_an_error_after_the_method_changed_the_model_is_rolled_back(monkeypatch):
    model = tiny("bert")
    before = state(model)
    monkeypatch.setattr(
        graphopt.adapters, "freeze_untrained", lambda m: (_ for _ in ()).throw(RuntimeError("late"))
    )
    with pytest.raises(RuntimeError, match="late"):
        graphopt.apply(model, "pca_ggm", TARGETS["bert"], r=2, n_important=3, top_k=6)
    assert_same_state(model, before)


def test_a_failed_load_leaves_the_model_as_it_was(tmp_path):
    model = tiny("bert")
    graphopt.apply(model, "lora", ["query"], r=2)
    graphopt.apply(model, "pca_ggm", ["value"], r=2, n_important=1, top_k=2, warmup_steps=2)
    graphopt.save_adapter(model, tmp_path)
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
    tensors = {k: v for k, v in tensors.items() if not k.endswith("value.A")}  # 2nd method broken
    save_file(tensors, str(tmp_path / "adapter_model.safetensors"))
    fresh = tiny("bert")
    before = state(fresh)
    with pytest.raises(ValueError, match="does not fit the model"):
        graphopt.load_adapter(fresh, tmp_path)
    assert_same_state(fresh, before)


# -- regular expressions from files ---------------------------------------------------------


def test_a_catastrophic_regex_in_an_adapter_file_is_refused_in_bounded_time(tmp_path, monkeypatch):
    """The reported hang: (.*.*)*[^\\s\\S] backtracks forever on module names."""
    monkeypatch.setattr(patterns, "TIME_LIMIT_S", 2.0)
    model = tiny("bert")
    graphopt.apply(model, "lora", ["query"], r=2)
    graphopt.save_adapter(model, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    config["methods"][0]["config"]["target_modules"] = r"(.*.*)*[^\s\S]"
    config["methods"][0]["target_shapes"] = {}
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    start = time.perf_counter()
    with pytest.raises(ValueError, match="did not finish within 2 s"):
        graphopt.load_adapter(tiny("bert"), tmp_path)
    assert time.perf_counter() - start < 30


def test_a_catastrophic_rank_pattern_in_a_peft_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(patterns, "TIME_LIMIT_S", 2.0)
    config = {"peft_type": "LORA", "r": 2, "lora_alpha": 2, "target_modules": ["query"],
              "rank_pattern": {r"(x+x+)+y": 4}}  # fmt: skip
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    from safetensors.torch import save_file

    save_file(
        {"base_model.model.x.lora_A.weight": torch.zeros(2, 2)},
        str(tmp_path / "adapter_model.safetensors"),
    )
    model = tiny("bert")
    for module in ("a", "b"):  # names on which (x+x+)+y backtracks exponentially
        model.add_module("x" * 40 + module, nn.Identity())
    with pytest.raises(ValueError, match="did not finish"):
        graphopt.load_adapter(model, tmp_path)


def test_an_overlong_regex_from_a_file_is_refused_before_matching():
    with pytest.raises(ValueError, match="limit 1000"):
        patterns.evaluate([("a" * 1001, "fullmatch", None)], ["a"], bounded=True)


@pytest.mark.parametrize(
    "pattern",
    [r".*\.(q|v)_proj", r"model\.layers\.[01]\..*", "(?:model|lm)\\..*_proj", r"[^\s\S]", "x|"],
)
def test_bounded_matching_has_exactly_python_re_semantics(pattern):
    names = [n for n, _ in tiny("llama_causal").named_modules()] + ["", "x"]
    specs = [(pattern, "fullmatch", None), (rf"(.*\.)?({pattern})$", "match", None)]
    assert patterns.evaluate(specs, names, bounded=True) == patterns.evaluate(specs, names)


# -- stacking --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "options", "owner", "parameter"),
    [
        ("lora", {"r": 2}, ".lora_B", "weight"),
        ("linchain", {"r": 2}, ".lora_B", "weight"),
        ("pca_ggm", {"r": 2, "n_important": 3, "top_k": 6}, "", "A"),
    ],
)
def test_stacked_targets_are_each_adapted_layers_output_factor(method, options, owner, parameter):
    from graphopt.targets import stacked_targets

    model = tiny("bert")
    graphopt.apply(model, method, TARGETS["bert"], **options)
    adapted = graphopt.methods_of(model)[0].adapted_modules
    stacked = stacked_targets(model, TARGETS["bert"])
    assert stacked == {"target_modules": [n + owner for n in adapted], "parameters": [parameter]}
    graphopt.apply(model, "spectral", **stacked, k=4, graph_options={"k": 3})
    spectral = graphopt.methods_of(model)[1]
    assert set(spectral.adapter_parameters(model)) == {f"{n}{owner}.{parameter}" for n in adapted}


def test_stacked_targets_of_plain_layers_are_their_weights_and_mixed_factors_are_refused():
    from graphopt.targets import stacked_targets

    model = tiny("bert")
    assert stacked_targets(model, ["query"]) == {
        "target_modules": [f"encoder.layer.{i}.attention.self.query" for i in range(2)],
        "parameters": ["weight"],
    }
    graphopt.apply(model, "pca_ggm", ["query"], r=2, n_important=1, top_k=2)
    with pytest.raises(ValueError, match="different names"):
        stacked_targets(model, ["query", "value"])
