"""PEFT both ways: ``graphopt.export_peft`` folders served by ``PeftModel.from_pretrained``
with the adapted model's outputs, PEFT LoRA folders loaded by ``graphopt.load_adapter``,
and graphopt methods applied on top of a PEFT model without freezing PEFT's tensors."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from tiny_models import TARGETS, tiny
from torch import nn

import graphopt
from graphopt.optim import GraphOptimizer
from graphopt.targets import stacked_targets
from graphopt.testing import default_inputs, first_tensor

pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning",
    "ignore::FutureWarning",
    "ignore::graphopt.solvers.ggm.GGMConvergenceWarning",
)


def outputs(model: nn.Module, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        return first_tensor(model(**batch)).detach()


def randomize(model: nn.Module, std: float = 0.2) -> None:
    """Move every trainable tensor off its initial value (seeded)."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(std * torch.randn(param.shape, generator=generator))


def served_by_peft(base: nn.Module, folder) -> nn.Module:
    from peft import PeftModel

    return PeftModel.from_pretrained(base, folder).eval()


# -- export ----------------------------------------------------------------------------------

METHODS = {
    "lora": {"r": 4},
    "linchain": {"r": 4, "n": 2},
    "pca_ggm": {"r": 4, "warmup_steps": 2, "top_k": 12, "n_important": 6},
}


@pytest.mark.parametrize("architecture", ["bert", "llama", "qwen2", "gpt2", "t5"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_export_is_served_by_peft_with_the_adapted_outputs(tmp_path, method, architecture):
    model = tiny(architecture)
    base = copy.deepcopy(model)
    graphopt.apply(model, method, TARGETS[architecture], **METHODS[method])
    randomize(model)
    batch = default_inputs(model)
    graphopt.export_peft(model, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["fan_in_fan_out"] == (architecture == "gpt2")
    served = outputs(served_by_peft(base, tmp_path), batch)
    torch.testing.assert_close(served, outputs(model, batch), rtol=1e-5, atol=1e-5)


def test_export_keeps_per_module_ranks_alphas_and_rslora(tmp_path):
    model = tiny("llama")
    base = copy.deepcopy(model)
    graphopt.apply(
        model, "lora", ["q_proj", "v_proj", "down_proj"], r=4, alpha=8, use_rslora=True,
        rank_pattern={"down_proj": 2}, alpha_pattern={r"layers\.1\.self_attn\.q_proj": 3.0},
    )  # fmt: skip
    randomize(model)
    batch = default_inputs(model)
    graphopt.export_peft(model, tmp_path)
    peft_model = served_by_peft(base, tmp_path)
    ranks = {n: m.r["default"] for n, m in peft_model.named_modules() if hasattr(m, "lora_A")}
    assert sorted(set(ranks.values())) == [2, 4]
    torch.testing.assert_close(
        outputs(peft_model, batch), outputs(model, batch), rtol=1e-5, atol=1e-5
    )


def test_export_writes_a_trained_head_as_modules_to_save(tmp_path):
    """The reported bug: PEFT served outputs 0.12 away when the head had been trained."""
    model = tiny("bert_classifier")
    base = copy.deepcopy(model)
    graphopt.apply(model, "lora", ["query", "value"], r=4, trainable_extra=r"classifier(\..*)?")
    randomize(model, std=0.5)
    batch = default_inputs(model)
    graphopt.export_peft(model, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["modules_to_save"] == ["classifier"]
    served = outputs(served_by_peft(base, tmp_path), batch)
    torch.testing.assert_close(served, outputs(model, batch), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bias", ["lora_only", "all"])
def test_export_carries_trained_biases(tmp_path, bias):
    model = tiny("bert_classifier")
    base = copy.deepcopy(model)
    graphopt.apply(model, "lora", ["query", "value"], r=4, bias=bias)
    randomize(model)
    batch = default_inputs(model)
    graphopt.export_peft(model, tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["bias"] == bias
    served = outputs(served_by_peft(base, tmp_path), batch)
    torch.testing.assert_close(served, outputs(model, batch), rtol=1e-5, atol=1e-5)


def test_export_of_a_trained_tied_lm_head_saves_every_module_holding_it(tmp_path):
    model = tiny("gpt2")
    base = copy.deepcopy(model)
    graphopt.apply(model, "lora", TARGETS["gpt2"], r=4, trainable_extra=["lm_head"])
    randomize(model, std=0.05)
    batch = default_inputs(model)
    graphopt.export_peft(model, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["modules_to_save"] == ["lm_head", "transformer.wte"]
    served = outputs(served_by_peft(base, tmp_path), batch)
    torch.testing.assert_close(served, outputs(model, batch), rtol=1e-5, atol=1e-5)


def test_a_stack_whose_extra_method_trains_the_factors_in_place_exports(tmp_path):
    model = tiny("bert")
    base = copy.deepcopy(model)
    graphopt.apply(model, "lora", TARGETS["bert"], r=4)
    graphopt.apply(model, "spectral", **stacked_targets(model, TARGETS["bert"]), k=4,
                   graph_options={"k": 3})  # fmt: skip
    randomize(model)
    batch = default_inputs(model)
    graphopt.export_peft(model, tmp_path)
    served = outputs(served_by_peft(base, tmp_path), batch)
    torch.testing.assert_close(served, outputs(model, batch), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda m: graphopt.apply(m, "spectral", ["query"], k=4, graph_options={"k": 3}),
         "no low-rank form"),
        (lambda m: (graphopt.apply(m, "lora", ["query"], r=2), graphopt.merge(m)), "merged"),
        (lambda m: graphopt.apply(m, "lora", ["query"], r=2,
                                  trainable_extra=r".*query\.weight"), "inside the adapted layer"),
    ],
)  # fmt: skip
def test_export_refuses_what_a_lora_folder_cannot_hold_and_writes_nothing(tmp_path, setup, message):
    model = tiny("bert")
    setup(model)
    with pytest.raises(ValueError, match=message):
        graphopt.export_peft(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- import ----------------------------------------------------------------------------------


def peft_folder(tmp_path, base: nn.Module, **options) -> tuple[nn.Module, object]:
    """A PEFT LoRA model on a copy of ``base`` with random factors, saved to ``tmp_path``."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(3)
    peft_model = get_peft_model(copy.deepcopy(base), LoraConfig(init_lora_weights=False, **options))
    randomize(peft_model, std=0.1)
    peft_model.eval().save_pretrained(tmp_path)
    return peft_model, tmp_path


@pytest.mark.parametrize(
    ("architecture", "options"),
    [
        ("bert", {"r": 4, "lora_alpha": 8, "target_modules": ["query", "value"]}),
        ("llama", {"r": 4, "target_modules": "all-linear", "use_rslora": True,
                   "rank_pattern": {"down_proj": 2}, "alpha_pattern": {"q_proj": 3}}),
        ("gpt2", {"r": 2, "target_modules": ["c_attn", "c_fc"], "fan_in_fan_out": True,
                  "bias": "lora_only"}),
        ("t5", {"r": 2, "target_modules": ["q", "v"], "layers_to_transform": [1],
                "layers_pattern": "block"}),
        ("qwen2", {"r": 2, "target_modules": ["q_proj", "v_proj"], "bias": "all",
                   "exclude_modules": r".*layers\.0\.self_attn\.v_proj"}),
    ],
)  # fmt: skip
def test_a_peft_lora_folder_loads_as_graphopt_lora_with_peft_outputs(
    tmp_path, architecture, options
):
    base = tiny(architecture)
    peft_model, folder = peft_folder(tmp_path / "peft", base, **options)
    batch = default_inputs(base)
    model = graphopt.load_adapter(copy.deepcopy(base), folder)
    assert [m.name for m in graphopt.methods_of(model)] == ["lora"]
    expected = outputs(peft_model, batch)
    torch.testing.assert_close(outputs(model, batch), expected, rtol=1e-5, atol=1e-5)
    graphopt.save_adapter(model, tmp_path / "graphopt")  # and on, in graphopt's own format
    again = graphopt.load_adapter(copy.deepcopy(base), tmp_path / "graphopt")
    assert torch.equal(outputs(again, batch), outputs(model, batch))
    graphopt.export_peft(model, tmp_path / "back")  # and back to PEFT
    served = outputs(served_by_peft(copy.deepcopy(base), tmp_path / "back"), batch)
    torch.testing.assert_close(served, expected, rtol=1e-5, atol=1e-5)


def test_a_peft_folder_with_modules_to_save_loads_the_trained_head(tmp_path):
    base = tiny("bert_classifier")
    peft_model, folder = peft_folder(
        tmp_path, base, r=2, target_modules=["query"], modules_to_save=["classifier"]
    )
    batch = default_inputs(base)
    model = graphopt.load_adapter(copy.deepcopy(base), folder)
    torch.testing.assert_close(
        outputs(model, batch), outputs(peft_model, batch), rtol=1e-5, atol=1e-5
    )
    assert model.classifier.weight.requires_grad


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"use_dora": True}, "DoRA"),
        ({"lora_bias": True}, "lora_bias"),
        ({"init_lora_weights": "pissa"}, "rewrites or quantizes the base weights"),
        ({"peft_type": "IA3"}, "'IA3' is not supported"),
        ({"layer_replication": [[0, 1]]}, "layer_replication"),
    ],
)
def test_a_peft_option_graphopt_cannot_represent_is_a_clear_error_and_model_unchanged(
    tmp_path, change, message
):
    base = tiny("bert")
    _, folder = peft_folder(tmp_path, base, r=2, target_modules=["query"])
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, **change}))
    model = copy.deepcopy(base)
    with pytest.raises(ValueError, match=message):
        graphopt.load_adapter(model, folder)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), base.state_dict().values(), strict=True)
    )
    assert graphopt.methods_of(model) == []


def test_a_pickled_peft_adapter_is_refused(tmp_path):
    base = tiny("bert")
    _, folder = peft_folder(tmp_path, base, r=2, target_modules=["query"])
    (folder / "adapter_model.safetensors").rename(folder / "adapter_model.bin")
    with pytest.raises(ValueError, match="pickle"):
        graphopt.load_adapter(copy.deepcopy(base), folder)


# -- graphopt on a PEFT model ------------------------------------------------------------------


def test_graphopt_on_a_peft_model_keeps_peft_tensors_trainable_and_trains_them():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    peft_model = get_peft_model(
        tiny("llama"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    peft_trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    graphopt.apply(peft_model, "lora", ["o_proj"], r=2)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert peft_trainable < trainable
    assert all(".o_proj.lora_" in n for n in trainable - peft_trainable)
    optimizer = GraphOptimizer.for_model(peft_model, lr=1e-2)
    optimized = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert optimized == {id(p) for p in peft_model.parameters() if p.requires_grad}


def test_spectral_filters_the_lora_factors_of_a_peft_model():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    targets = ["q_proj", "v_proj"]
    peft_model = get_peft_model(
        tiny("llama"), LoraConfig(r=4, target_modules=targets, init_lora_weights=False)
    )
    stacked = stacked_targets(peft_model, targets)
    assert all(n.endswith(".lora_B.default") for n in stacked["target_modules"])
    graphopt.apply(peft_model, "spectral", **stacked, k=4, graph_options={"k": 3})
    optimizer = GraphOptimizer.for_model(peft_model, lr=1e-2)
    filtered = {id(p) for t in optimizer.transforms for p in t.params}
    factors_b = {id(p) for n, p in peft_model.named_parameters() if ".lora_B." in n}
    factors_a = [p for n, p in peft_model.named_parameters() if ".lora_A." in n]
    assert filtered == factors_b
    assert all(p.requires_grad for p in factors_a)
    batch = default_inputs(peft_model)
    before = [p.detach().clone() for p in factors_a]
    optimizer.zero_grad()
    first_tensor(peft_model(**batch)).pow(2).mean().backward()
    optimizer.step()
    assert all(not torch.equal(p, b) for p, b in zip(factors_a, before, strict=True))
