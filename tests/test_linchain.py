"""LinChain: closed-form merge including the chain biases, parameter count, PEFT export."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_bert
from torch import nn

import graphopt
from graphopt.plugins.linchain import LinChainConfig, LinChainLinear, export_peft


def random_chain(d_in: int = 6, d_out: int = 5, **config) -> LinChainLinear:
    torch.manual_seed(0)
    layer = LinChainLinear(nn.Linear(d_in, d_out), LinChainConfig("x", dropout=0.0, **config))
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    return layer.eval()


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


def test_merge_creates_a_bias_on_a_bias_free_layer_and_unmerge_removes_it():
    torch.manual_seed(0)
    layer = LinChainLinear(nn.Linear(6, 5, bias=False), LinChainConfig("x", r=2, dropout=0.0))
    with torch.no_grad():
        layer.lora_B.weight.normal_()
    x = torch.randn(4, 6)
    adapted = layer(x)
    layer.merge()
    assert layer.base_layer.bias is not None
    torch.testing.assert_close(layer(x), adapted)
    layer.unmerge()
    assert layer.base_layer.bias is None


def test_zero_length_chain_is_lora():
    layer = random_chain(r=2, n=0)
    expected = layer.scaling * layer.lora_B.weight @ layer.lora_A.weight
    torch.testing.assert_close(layer.delta_weight()[0], expected)
    assert layer.delta_weight()[1] is None


def test_defaults_follow_the_reference_code():
    config = LinChainConfig("x")
    assert (config.r, config.n, config.scale_alpha, config.dropout, config.bias) == (
        8,
        3,
        16.0,
        0.05,
        True,
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


@pytest.mark.parametrize("chain_bias", [True, False])
def test_peft_loads_the_export_and_gives_the_same_outputs(tmp_path, chain_bias):
    from peft import PeftModel

    model = tiny_bert().eval()
    base = copy.deepcopy(model)
    graphopt.apply(model, "linchain", target_modules=["query", "value"], r=4, bias=chain_bias)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "chain" in name:
                p.normal_(std=0.3)
    ids = torch.randint(0, 50, (2, 7))
    with torch.no_grad():
        adapted = model(input_ids=ids).last_hidden_state
    export_peft(model, tmp_path)
    peft_model = PeftModel.from_pretrained(base, tmp_path).eval()
    with torch.no_grad():
        served = peft_model(input_ids=ids).last_hidden_state
    torch.testing.assert_close(served, adapted, rtol=1e-5, atol=1e-5)


def test_export_refuses_a_chain_bias_on_a_bias_free_layer(tmp_path):
    from transformers import LlamaConfig, LlamaModel

    model = LlamaModel(
        LlamaConfig(
            vocab_size=32,
            hidden_size=16,
            intermediate_size=24,
            num_hidden_layers=1,
            num_attention_heads=2,
        )
    )
    graphopt.apply(model, "linchain", target_modules=["q_proj"], r=2)
    with pytest.raises(ValueError, match=r"no bias.*bias=False"):
        export_peft(model, tmp_path)
    assert not any(tmp_path.iterdir())
