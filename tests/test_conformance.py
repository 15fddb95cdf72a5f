"""The conformance matrix (graphopt.testing.check_method) for every registered method on
tiny BERT, LLaMA, Qwen2, GPT-2 (Conv1D), T5 and ViT models, plus third-party methods
registered at run time: an additive one, a multiplicative (IA3-style) one, and two
broken ones the checks must catch."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from types import ModuleType

import pytest
import torch
from conftest import tiny_bert
from tiny_models import TARGETS, factory, tiny
from torch import nn

import graphopt
from graphopt import Registry
from graphopt._registry import BUILTIN_PLUGINS
from graphopt.layers import AdaptedLayer, AdaptedLinear, WrappingMethod
from graphopt.methods import MethodConfig
from graphopt.optim import GraphOptimizer
from graphopt.targets import stacked_targets
from graphopt.testing import check_method

ARCHITECTURES = sorted(TARGETS)

CONFIGS: dict[str, dict] = {
    "lora": {"r": 4},
    "linchain": {"r": 4, "n": 2},
    "pca_ggm": {"r": 4, "warmup_steps": 2, "top_k": 12, "n_important": 6},
    "spectral": {"k": 4, "graph_options": {"k": 3}},
}
"""Small settings per method so the matrix runs fast (pca_ggm selects after 2 steps)."""


# -- third-party methods, registered at run time --------------------------------------------


@dataclass
class PlainConfig(MethodConfig):
    """Only the shared target options."""


class ShiftLinear(AdaptedLinear):
    """``y = base_layer(x) + s``, ``s`` = 0 at init (a BitFit-style output shift)."""

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        weight = self.base_weight()
        self.shift = nn.Parameter(torch.zeros(self.out_features, dtype=weight.dtype))

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        return self.shift.expand(*x.shape[:-1], -1)

    def delta_weight(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return torch.zeros_like(self.base_weight()), self.shift


class Shift(WrappingMethod):
    name = "shift"
    config_class = PlainConfig

    def validate(self, targets: dict[str, nn.Module]) -> None:
        super().validate(targets)
        bare = [n for n, layer in targets.items() if layer.bias is None]
        if bare:
            raise ValueError(f"shift folds into the layer's bias; {bare[0]!r} has none")

    def wrap(self, layer: nn.Module, config: MethodConfig) -> ShiftLinear:
        return ShiftLinear(layer)

    def num_trainable_parameters(self, model: nn.Module) -> int:
        return sum(layer.out_features for layer in self.layers(model).values())


class IA3Linear(AdaptedLayer):
    """``y = l * base_layer(x)`` (IA3, Liu et al. 2022; the output scaled per unit)."""

    output_factor = "ia3_l"

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        weight = self.base_weight()
        self.ia3_l = nn.Parameter(torch.ones(self.out_features, 1, dtype=weight.dtype))

    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) * self.ia3_l[:, 0]

    def merged_weights(self, weight, bias):  # type: ignore[no-untyped-def]
        return weight * self.ia3_l, None if bias is None else bias * self.ia3_l[:, 0]

    def unmerged_weights(self, weight, bias):  # type: ignore[no-untyped-def]
        return weight / self.ia3_l, None if bias is None else bias / self.ia3_l[:, 0]


class WrongUnmergeIA3Linear(IA3Linear):
    """Unmerges by subtracting ``(l - 1) W'`` recomputed from the merged weight."""

    def unmerged_weights(self, weight, bias):  # type: ignore[no-untyped-def]
        scale = self.ia3_l - 1
        return weight - scale * weight, None if bias is None else bias - scale[:, 0] * bias


class NaiveIA3Linear(AdaptedLinear):
    """IA3 written as an additive adapter whose ``delta_weight`` reads the base weight."""

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.ia3_l = nn.Parameter(torch.ones(self.out_features, 1))

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        return (self.ia3_l[:, 0] - 1) * self.base_layer(x)

    def delta_weight(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        bias = self.base_layer.bias
        scale = self.ia3_l - 1
        return scale * self.base_weight(), None if bias is None else scale[:, 0] * bias


def ia3_method(name: str, layer_class: type[AdaptedLayer]) -> type[WrappingMethod]:
    class IA3(WrappingMethod):
        config_class = PlainConfig

        def wrap(self, layer: nn.Module, config: MethodConfig) -> AdaptedLayer:
            return layer_class(layer)

        def num_trainable_parameters(self, model: nn.Module) -> int:
            return sum(layer.out_features for layer in self.layers(model).values())

    IA3.name = name
    return IA3


THIRD_PARTY = {
    "shift": Shift,
    "ia3": ia3_method("ia3", IA3Linear),
    "ia3_wrong_unmerge": ia3_method("ia3_wrong_unmerge", WrongUnmergeIA3Linear),
    "naive_ia3": ia3_method("naive_ia3", NaiveIA3Linear),
}


def third_party_plugin() -> ModuleType:
    module = ModuleType("graphopt_thirdparty_adapters")

    @graphopt.hookimpl
    def graphopt_register(registry) -> None:  # type: ignore[no-untyped-def]
        for name, cls in THIRD_PARTY.items():
            registry.add("method", name, cls)

    module.graphopt_register = graphopt_register  # type: ignore[attr-defined]
    return module


@pytest.fixture
def with_third_party(monkeypatch):
    """A registry with the built-ins plus the run-time plugin, in place of the global one."""
    registry = Registry(builtins=BUILTIN_PLUGINS)
    plugin = third_party_plugin()
    monkeypatch.setitem(sys.modules, plugin.__name__, plugin)
    registry.register(plugin, name="thirdparty-adapters")
    monkeypatch.setattr(graphopt, "registry", registry)
    return registry


# -- the matrix ------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::graphopt.solvers.ggm.GGMConvergenceWarning")
@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("method_name", graphopt.registry.names("method"))
def test_registered_method_passes_conformance(method_name, architecture):
    report = check_method(
        method_name, factory(architecture), TARGETS[architecture], CONFIGS.get(method_name, {})
    )
    assert {"save_load_round_trip", "only_trainable_changed", "merged_reload"} <= set(report.passed)
    if graphopt.registry.get("method", method_name).adds_parameters:
        assert {"merge_equals_adapted", "merge_idempotent", "unmerge_restores"} <= set(
            report.passed
        )


@pytest.mark.parametrize("architecture", ["bert", "gpt2", "vit"])
def test_third_party_additive_method_passes_conformance(with_third_party, architecture):
    report = check_method("shift", factory(architecture), TARGETS[architecture])
    assert report.skipped == []


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_third_party_multiplicative_method_passes_conformance(with_third_party, architecture):
    report = check_method("ia3", factory(architecture), TARGETS[architecture])
    assert report.skipped == []


def test_check_method_catches_a_wrong_unmerge_of_a_multiplicative_adapter(
    with_third_party, monkeypatch
):
    """At lr 1e-3 the scales barely move from 1 in 3 steps: the wrong unmerge hides in the
    rounding unless the checks perturb the adapter first."""
    arguments = ("ia3_wrong_unmerge", factory("bert"), TARGETS["bert"])
    with pytest.raises(AssertionError, match="unmerged output differs"):
        check_method(*arguments, lr=1e-3)
    monkeypatch.setattr(graphopt.testing, "perturb", lambda model, seed=0: None)
    assert "unmerge_restores" in check_method(*arguments, lr=1e-3).passed


def test_merge_refuses_a_delta_that_reads_the_base_weight_and_leaves_the_layer(with_third_party):
    model = tiny("bert")
    graphopt.apply(model, "naive_ia3", TARGETS["bert"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ia3_l" in name:
                p.uniform_(0.5, 1.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"delta_weight\(\) changed .* merged_weights/unmerged"):
        graphopt.merge(model)
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_check_method_catches_a_wrong_parameter_count(with_third_party, monkeypatch):
    monkeypatch.setattr(Shift, "num_trainable_parameters", lambda self, model: 1)
    with pytest.raises(AssertionError, match="documented count 1"):
        check_method("shift", tiny_bert, ["query"])


def test_a_method_that_would_create_a_bias_is_stopped_at_merge_never_silently(
    with_third_party, monkeypatch
):
    monkeypatch.setattr(Shift, "validate", WrappingMethod.validate)  # no refusal at apply
    model = tiny("llama")
    graphopt.apply(model, "shift", ["q_proj"])
    with pytest.raises(ValueError, match="has no bias, a bias"):
        graphopt.merge(model)
    assert all(layer.bias is None for n, layer in model.named_modules() if n.endswith("base_layer"))


def test_merged_reload_is_skipped_for_a_model_without_save_pretrained():
    def sequential() -> nn.Module:
        return nn.Sequential(nn.Embedding(64, 16), nn.Linear(16, 16), nn.Linear(16, 8))

    def inputs(model: nn.Module) -> dict:
        return {"input": torch.randint(0, 64, (2, 5), generator=torch.Generator().manual_seed(0))}

    report = check_method("lora", sequential, ["1", "2"], {"r": 2}, inputs=inputs)
    assert "merged_reload" in report.skipped
    assert "save_load_round_trip" in report.passed


# -- stacking on a third-party adapter -----------------------------------------------------------


def test_spectral_stacks_on_a_multiplicative_adapter_through_its_output_factor(with_third_party):
    model = tiny("gpt2")
    graphopt.apply(model, "ia3", TARGETS["gpt2"])
    stacked = stacked_targets(model, TARGETS["gpt2"])
    assert stacked["parameters"] == ["ia3_l"]
    assert all(name.endswith(("c_attn", "c_proj", "c_fc")) for name in stacked["target_modules"])
    graphopt.apply(model, "spectral", **stacked, k=4, graph_options={"k": 3})
    optimizer = GraphOptimizer.for_model(model, lr=1e-2)
    filtered = {id(p) for t in optimizer.transforms for p in t.params}
    scales = [p for n, p in model.named_parameters() if n.endswith("ia3_l")]
    assert {id(p) for p in scales} == filtered
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    before = [p.detach().clone() for p in scales]
    for _ in range(2):
        optimizer.zero_grad()
        model(input_ids=ids).logits.pow(2).mean().backward()
        optimizer.step()
    assert any(not torch.equal(p, b) for p, b in zip(scales, before, strict=True))
    adapted = model(input_ids=ids).logits.detach()
    graphopt.merge(model)
    torch.testing.assert_close(model(input_ids=ids).logits, adapted, rtol=1e-5, atol=1e-6)
