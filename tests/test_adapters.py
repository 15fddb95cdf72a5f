"""Adapter machinery: target resolution, apply/freeze, merge, save/load and their errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

import graphopt
from graphopt import UnknownNameError
from graphopt.adapters import CONFIG_FILE, WEIGHTS_FILE
from graphopt.methods import MethodConfig
from graphopt.targets import resolve_targets


def targets_of(model: nn.Module, patterns, **options) -> dict[str, nn.Module]:
    return resolve_targets(model, MethodConfig(target_modules=patterns, **options)).targets


def tiny_bert(hidden: int = 32):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=16,
        num_labels=3,
    )
    return BertForSequenceClassification(config).eval()


IDS = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(0))


def logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert set(after) == set(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert graphopt.methods_of(model) == []


def perturb(model: nn.Module) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)


# -- target resolution -------------------------------------------------------------------


def test_regex_target_is_full_matched():
    model = tiny_bert()
    names = targets_of(model, r".*\.self\.(query|value)")
    assert sorted(n.rsplit(".", 1)[1] for n in names) == ["query"] * 2 + ["value"] * 2
    with pytest.raises(ValueError, match="matches no module"):
        targets_of(model, "query")  # a regex must match the whole name


def test_list_target_matches_names_and_suffixes():
    model = tiny_bert()
    names = targets_of(model, ["query", "bert.encoder.layer.1.attention.self.key"])
    assert len(names) == 3
    assert all(isinstance(m, nn.Linear) for m in names.values())


def test_no_match_names_target_modules_and_lists_linear_candidates():
    model = tiny_bert()
    before = snapshot(model)
    with pytest.raises(ValueError, match="target_modules") as info:
        graphopt.apply(model, "lora", target_modules=["q_proj"])
    assert "bert.encoder.layer.0.attention.self.query" in str(info.value)
    assert_unchanged(model, before)


def test_non_linear_target_is_a_clear_error_and_model_unchanged():
    model = tiny_bert()
    before = snapshot(model)
    with pytest.raises(
        ValueError,
        match=r"adapts nn\.Linear / Conv1D layers; .*LayerNorm' is a torch\.nn\..*LayerNorm",
    ):
        graphopt.apply(model, "lora", target_modules=["attention.output.LayerNorm"])
    assert_unchanged(model, before)


def test_rank_above_min_dimension_is_a_clear_error_and_model_unchanged():
    model = tiny_bert()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"r = 33 .* exceeds min\(in_features, out_features\)"):
        graphopt.apply(model, "linchain", target_modules=["query"], r=33)
    assert_unchanged(model, before)


def test_unregistered_method_raises_unknown_name_listing_choices():
    with pytest.raises(UnknownNameError, match="'lora'"):
        graphopt.apply(tiny_bert(), "loraa", target_modules=["query"])


def test_unknown_config_key_raises_on_apply():
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['rnak'\]"):
        graphopt.apply(tiny_bert(), "lora", target_modules=["query"], rnak=4)


def test_applying_an_adapted_module_again_points_to_its_base_layer():
    model = tiny_bert()
    graphopt.apply(model, "lora", target_modules=["query"])
    with pytest.raises(ValueError, match=r"already adapted.*query\.base_layer"):
        graphopt.apply(model, "lora", target_modules=["query"])


# -- apply / freeze ----------------------------------------------------------------------


def test_apply_freezes_all_but_adapter_and_trainable_extra():
    model = tiny_bert()
    summary = graphopt.apply(
        model, "lora", target_modules=["query", "value"], r=4, trainable_extra=["classifier"]
    )
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in trainable if "lora_" in n or n.startswith("classifier.")}
    assert {"classifier.weight", "classifier.bias"} <= trainable
    head = 32 * 3 + 3
    assert summary.trainable_parameters == 4 * 4 * (32 + 32) + head
    assert summary.total_parameters == sum(p.numel() for p in model.parameters())
    method = graphopt.methods_of(model)[0]
    assert "classifier.weight" in method.trainable_parameters(model)
    assert "classifier.weight" not in method.adapter_parameters(model)


def test_optimizer_for_model_trains_the_trainable_extra_head():
    from graphopt.optim import GraphOptimizer

    model = tiny_bert()
    graphopt.apply(model, "lora", target_modules=["query"], trainable_extra=r"classifier(\..*)?")
    optimizer = GraphOptimizer.for_model(model, lr=1e-2)
    params = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert id(model.classifier.weight) in params


def test_methods_stack_in_order_and_merge_applies_all():
    model = tiny_bert()
    graphopt.apply(model, "lora", target_modules=["query"], r=2)
    graphopt.apply(model, "linchain", target_modules=["value"], r=2)
    assert [m.name for m in graphopt.methods_of(model)] == ["lora", "linchain"]
    perturb(model)
    adapted = logits(model)
    graphopt.merge(model)
    assert all(m.merged for m in graphopt.methods_of(model))
    torch.testing.assert_close(logits(model), adapted, rtol=1e-5, atol=1e-6)


def test_import_graphopt_does_not_import_torch():
    code = "import sys, graphopt; assert 'torch' not in sys.modules; graphopt.apply"
    code += "; assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bf16_adapter_lives_in_the_layer_dtype_and_merges():
    model = tiny_bert().to(torch.bfloat16)
    graphopt.apply(model, "lora", target_modules=["query"], r=2)
    layer = model.bert.encoder.layer[0].attention.self.query
    assert layer.lora_A.weight.dtype == torch.bfloat16
    perturb(model)
    adapted = logits(model).float()
    graphopt.merge(model)
    torch.testing.assert_close(logits(model).float(), adapted, rtol=0.05, atol=0.05)


def test_adapter_dtype_can_be_configured():
    model = tiny_bert().to(torch.bfloat16)
    graphopt.apply(model, "lora", target_modules=["query"], r=2, dtype="float32")
    layer = model.bert.encoder.layer[0].attention.self.query
    assert layer.lora_A.weight.dtype == torch.float32
    assert logits(model).dtype == torch.bfloat16


# -- save / load -------------------------------------------------------------------------


def test_save_writes_config_and_safetensors_with_version_and_extra(tmp_path):
    model = tiny_bert()
    graphopt.apply(model, "lora", target_modules=["query"], r=2, trainable_extra=["classifier"])
    graphopt.save_adapter(model, tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert config["graphopt_version"] == graphopt.__version__
    assert config["methods"][0]["name"] == "lora"
    assert config["methods"][0]["config"]["r"] == 2
    from safetensors.torch import load_file

    keys = set(load_file(str(tmp_path / WEIGHTS_FILE)))
    assert "extra.classifier.weight" in keys
    assert any(k.startswith("methods.0.") and k.endswith("lora_A.weight") for k in keys)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_load_restores_adapter_and_head_onto_fresh_model(tmp_path):
    model = tiny_bert()
    graphopt.apply(model, "lora", target_modules=["query"], r=2, trainable_extra=["classifier"])
    perturb(model)
    with torch.no_grad():
        model.classifier.weight.add_(1.0)
    graphopt.save_adapter(model, tmp_path)
    fresh = tiny_bert()
    graphopt.load_adapter(fresh, tmp_path)
    assert torch.equal(logits(fresh), logits(model))
    assert fresh.classifier.weight.requires_grad


def test_load_onto_model_with_the_same_methods_only_loads_tensors(tmp_path):
    model = tiny_bert()
    graphopt.apply(model, "lora", target_modules=["query"], r=2)
    perturb(model)
    graphopt.save_adapter(model, tmp_path)
    other = tiny_bert()
    graphopt.apply(other, "lora", target_modules=["query"], r=2)
    graphopt.load_adapter(other, tmp_path)
    assert len(graphopt.methods_of(other)) == 1
    assert torch.equal(logits(other), logits(model))


def test_load_onto_different_shapes_is_a_clear_error_and_model_unchanged(tmp_path):
    model = tiny_bert()
    graphopt.apply(model, "lora", target_modules=["query"], r=2)
    graphopt.save_adapter(model, tmp_path)
    other = tiny_bert(hidden=48)
    before = snapshot(other)
    with pytest.raises(ValueError, match=r"shape \(out, in\) = \(32, 32\).*\(48, 48\)"):
        graphopt.load_adapter(other, tmp_path)
    assert_unchanged(other, before)


def test_load_with_other_rank_onto_applied_model_is_a_clear_error_and_unchanged(tmp_path):
    model = tiny_bert()
    graphopt.apply(model, "lora", target_modules=["query"], r=2)
    graphopt.save_adapter(model, tmp_path)
    other = tiny_bert()
    graphopt.apply(other, "lora", target_modules=["query"], r=4)
    before = snapshot(other)
    with pytest.raises(ValueError, match=r"has shape \(2, 32\) but the model expects \(4, 32\)"):
        graphopt.load_adapter(other, tmp_path)
    after = other.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_unknown_config_key_in_saved_adapter_warns(tmp_path):
    model = tiny_bert()
    graphopt.apply(model, "lora", target_modules=["query"], r=2)
    graphopt.save_adapter(model, tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    config["methods"][0]["config"]["future_option"] = 1
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.warns(UserWarning, match="future_option"):
        graphopt.load_adapter(tiny_bert(), tmp_path)


def test_unregistered_method_in_saved_adapter_is_unknown_name(tmp_path):
    model = tiny_bert()
    graphopt.apply(model, "lora", target_modules=["query"], r=2)
    graphopt.save_adapter(model, tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    config["methods"][0]["name"] = "nosuchmethod"
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(UnknownNameError, match="nosuchmethod"):
        graphopt.load_adapter(tiny_bert(), tmp_path)


def test_folder_without_adapter_config_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not an adapter folder"):
        graphopt.load_adapter(tiny_bert(), tmp_path)


def test_save_without_methods_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no graphopt method"):
        graphopt.save_adapter(tiny_bert(), tmp_path)
