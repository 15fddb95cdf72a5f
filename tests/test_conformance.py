"""The conformance matrix (graphopt.testing.check_method) for every registered method,
plus a third-party method registered at run time, on tiny BERT- and LLaMA-style models."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from types import ModuleType

import pytest
import torch
from conftest import tiny_bert
from torch import nn

import graphopt
from graphopt import Registry
from graphopt._registry import BUILTIN_PLUGINS
from graphopt.layers import AdaptedLinear, WrappingMethod
from graphopt.methods import MethodConfig
from graphopt.testing import check_method


def tiny_llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaModel

    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=16,
    )
    return LlamaModel(config)


MODELS = {
    "bert": (tiny_bert, ["query", "value", "intermediate.dense"]),
    "llama": (tiny_llama, r".*\.(q_proj|v_proj|down_proj)"),
}

CONFIGS: dict[str, dict] = {
    "lora": {"r": 4},
    "linchain": {"r": 4, "n": 2},
    "pca_ggm": {"r": 4, "warmup_steps": 2, "top_k": 12, "n_important": 6},
    "spectral": {"k": 4, "graph_options": {"k": 3}},
}
"""Small settings per method so the matrix runs fast (pca_ggm selects after 2 steps)."""


# -- a third-party method, registered at run time -----------------------------------------


@dataclass
class ShiftConfig(MethodConfig):
    """Only ``target_modules``: one learned shift per output feature."""


class ShiftLinear(AdaptedLinear):
    """``y = base_layer(x) + s``, ``s`` = 0 at init (a BitFit-style output shift)."""

    def __init__(self, base_layer: nn.Linear) -> None:
        super().__init__(base_layer)
        weight = base_layer.weight
        self.shift = nn.Parameter(torch.zeros(base_layer.out_features, dtype=weight.dtype))

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        return self.shift.expand(*x.shape[:-1], -1)

    def delta_weight(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return torch.zeros_like(self.base_layer.weight), self.shift


class Shift(WrappingMethod):
    name = "shift"
    config_class = ShiftConfig

    def wrap(self, layer: nn.Linear) -> ShiftLinear:
        return ShiftLinear(layer)

    def num_trainable_parameters(self, model: nn.Module) -> int:
        return sum(layer.out_features for layer in self.layers(model).values())


def third_party_plugin() -> ModuleType:
    module = ModuleType("graphopt_thirdparty_shift")

    @graphopt.hookimpl
    def graphopt_register(registry) -> None:  # type: ignore[no-untyped-def]
        registry.add("method", "shift", Shift)

    module.graphopt_register = graphopt_register  # type: ignore[attr-defined]
    return module


@pytest.fixture
def with_third_party(monkeypatch):
    """A registry with the built-ins plus the run-time plugin, in place of the global one."""
    registry = Registry(builtins=BUILTIN_PLUGINS)
    plugin = third_party_plugin()
    monkeypatch.setitem(sys.modules, plugin.__name__, plugin)
    registry.register(plugin, name="thirdparty-shift")
    monkeypatch.setattr(graphopt, "registry", registry)
    return registry


@pytest.mark.filterwarnings("ignore::graphopt.solvers.ggm.GGMConvergenceWarning")
@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("method_name", graphopt.registry.names("method"))
def test_registered_method_passes_conformance(method_name, model_name):
    factory, targets = MODELS[model_name]
    report = check_method(method_name, factory, targets, CONFIGS.get(method_name, {}))
    assert "save_load_round_trip" in report.passed
    assert "only_trainable_changed" in report.passed
    if graphopt.registry.get("method", method_name).adds_parameters:
        assert {"merge_equals_adapted", "merge_idempotent", "unmerge_restores"} <= set(
            report.passed
        )


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_third_party_method_registered_at_run_time_passes_conformance(with_third_party, model_name):
    factory, targets = MODELS[model_name]
    report = check_method("shift", factory, targets)
    assert report.skipped == []


def test_check_method_catches_a_wrong_parameter_count(with_third_party, monkeypatch):
    monkeypatch.setattr(Shift, "num_trainable_parameters", lambda self, model: 1)
    with pytest.raises(AssertionError, match="documented count 1"):
        check_method("shift", tiny_bert, ["query"])
