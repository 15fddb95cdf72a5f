"""LinChain: closed-form merge including the chain biases, chain biases only where the
layer has a bias (bias-free models merge and reload exactly), parameter count, PEFT export."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import tiny_bert
from tiny_models import tiny
from torch import nn

import graphopt
from graphopt.adapters import CONFIG_FILE
from graphopt.plugins.linchain import LinChainConfig, LinChainLinear


def random_chain(d_in: int = 6, d_out: int = 5, **config) -> LinChainLinear:
    torch.manual_seed(0)
    layer = LinChainLinear(nn.Linear(d_in, d_out), LinChainConfig("x", dropout=0.0, **config))
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    return layer.eval()


def randomize(model: nn.Module) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "chain" in name:
                p.normal_(std=0.3)


def test_merged_weights_equal_the_closed_form_including_biases():
    layer = random_chain(r=3, n=3, alpha=5.0)
    w, b = layer.base_layer.weight.detach().clone(), layer.base_layer.bias.detach().clone()
    a, bb = layer.lora_A.weight.detach(), layer.lora_B.weight.detach()
    (m1, m2, m3) = (link.weight.detach() for link in layer.chain)
    (b1, b2, b3) = (link.bias.detach() for link in layer.chain)
    s = 5.0 / 3
    layer.merge()
    torch.testing.assert_close(layer.base_layer.weight, w + s * bb @ m3 @ m2 @ m1 @ a)
    torch.testing.assert_close(layer.base_layer.bias, b + s * bb @ (m3 @ m2 @ b1 + m3 @ b2 + b3))


def test_chain_biases_default_to_the_layers_that_have_a_bias():
    layer = LinChainLinear(nn.Linear(6, 5, bias=False), LinChainConfig("x", r=2))
    assert not layer.chain_bias and layer.delta_weight()[1] is None
    assert LinChainLinear(nn.Linear(6, 5), LinChainConfig("x", r=2)).chain_bias


def test_merge_never_gives_a_bias_free_layer_a_bias():
    torch.manual_seed(0)
    layer = LinChainLinear(nn.Linear(6, 5, bias=False), LinChainConfig("x", r=2, dropout=0.0))
    with torch.no_grad():
        layer.lora_B.weight.normal_()
    x = torch.randn(4, 6)
    adapted = layer(x)
    layer.merge()
    assert layer.base_layer.bias is None
    torch.testing.assert_close(layer(x), adapted)


def test_chain_bias_true_on_a_bias_free_target_is_refused_at_apply_and_model_unchanged():
    model = tiny("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"chain_bias=True needs a bias .*self_attn.q_proj"):
        graphopt.apply(model, "linchain", ["q_proj"], r=2, chain_bias=True)
    assert set(model.state_dict()) == set(before)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert graphopt.methods_of(model) == []


@pytest.mark.parametrize("chain_bias", [None, False])
def test_linchain_on_llama_merges_saves_and_reloads_to_the_adapted_logits(tmp_path, chain_bias):
    """The reported bug: chain biases on LLaMA became biases its config does not declare."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    graphopt.apply(model, "linchain", "all-linear", chain_bias=chain_bias)
    randomize(model)
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
    keys = set(LlamaForCausalLM(config).state_dict())
    graphopt.merge_and_unload(model)
    assert set(model.state_dict()) == keys
    model.save_pretrained(tmp_path)
    reloaded = LlamaForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, adapted, rtol=1e-5, atol=1e-5)


def test_chain_biases_follow_each_target_on_a_mixed_model():
    """Qwen2: q_proj and v_proj have biases, down_proj has none."""
    model = tiny("qwen2")
    graphopt.apply(model, "linchain", ["q_proj", "down_proj"], r=2, n=2)
    method = graphopt.methods_of(model)[0]
    layers = method.layers(model)
    assert {n.rsplit(".", 1)[1]: layer.chain_bias for n, layer in layers.items()} == {
        "q_proj": True,
        "down_proj": False,
    }
    expected = sum(
        2 * (layer.in_features + layer.out_features) + 2 * (4 + (2 if layer.chain_bias else 0))
        for layer in layers.values()
    )
    assert method.num_trainable_parameters(model) == expected == method.count_trained_entries(model)


@pytest.mark.parametrize("saved", [True, False])
def test_an_adapter_saved_with_the_old_bias_field_loads_as_chain_bias(tmp_path, saved):
    model = tiny_bert().eval()
    graphopt.apply(model, "linchain", ["query"], r=2, chain_bias=saved)
    randomize(model)
    graphopt.save_adapter(model, tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    options = config["methods"][0]["config"]
    options.pop("chain_bias")
    options["bias"] = saved  # what graphopt 0.1 wrote
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    fresh = tiny_bert().eval()
    with pytest.warns(UserWarning, match="read as chain_bias"):
        graphopt.load_adapter(fresh, tmp_path)
    assert graphopt.methods_of(fresh)[0].config.chain_bias is saved
    ids = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(
            fresh(input_ids=ids).last_hidden_state, model(input_ids=ids).last_hidden_state
        )


def test_bias_as_a_bool_points_to_chain_bias():
    with pytest.raises(ValueError, match="chain biases are chain_bias"):
        graphopt.apply(tiny_bert(), "linchain", ["query"], bias=True)


def test_zero_length_chain_is_lora():
    layer = random_chain(r=2, n=0)
    expected = layer.scaling * layer.lora_B.weight @ layer.lora_A.weight
    torch.testing.assert_close(layer.delta_weight()[0], expected)
    assert layer.delta_weight()[1] is None


def test_defaults_follow_the_reference_code():
    config = LinChainConfig("x")
    assert (config.r, config.n, config.scale_alpha, config.dropout, config.chain_bias) == (
        8,
        3,
        16.0,
        0.05,
        None,
    )
    layer = LinChainLinear(nn.Linear(16, 12), config)
    assert torch.count_nonzero(layer.lora_B.weight) == 0


def test_parameter_count_formula():
    from transformers import BertConfig, BertModel

    model = BertModel(
        BertConfig(
            vocab_size=32,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=24,
        )
    )
    summary = graphopt.apply(model, "linchain", target_modules=["query", "intermediate.dense"], r=4)
    expected = 4 * (16 + 16) + 3 * (16 + 4) + 4 * (16 + 24) + 3 * (16 + 4)
    assert summary.trainable_parameters == expected
    assert graphopt.methods_of(model)[0].num_trainable_parameters(model) == expected


@pytest.mark.parametrize("chain_bias", [None, False])
def test_peft_loads_the_export_and_gives_the_same_outputs(tmp_path, chain_bias):
    from peft import PeftModel

    model = tiny_bert().eval()
    base = copy.deepcopy(model)
    graphopt.apply(model, "linchain", target_modules=["query", "value"], r=4, chain_bias=chain_bias)
    randomize(model)
    ids = torch.randint(0, 50, (2, 7))
    with torch.no_grad():
        adapted = model(input_ids=ids).last_hidden_state
    graphopt.export_peft(model, tmp_path)
    peft_model = PeftModel.from_pretrained(base, tmp_path).eval()
    with torch.no_grad():
        served = peft_model(input_ids=ids).last_hidden_state
    torch.testing.assert_close(served, adapted, rtol=1e-5, atol=1e-5)
