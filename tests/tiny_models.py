"""Tiny random-weight models of six Hugging Face architectures, built from configs.

Each is built once per test session (seed 0) and handed out as deep copies, so
every call returns the same weights at the cost of a copy. No downloads.
"""

from __future__ import annotations

import copy
import functools
import warnings
from collections.abc import Callable

import torch
from conftest import tiny_bert
from torch import nn

DECODER = {
    "vocab_size": 64,
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 16,
}
"""Sizes of the tiny decoder-only models (LLaMA, Qwen2)."""


def _llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaModel

    return LlamaModel(LlamaConfig(**DECODER))


def _qwen2() -> nn.Module:
    from transformers import Qwen2Config, Qwen2Model

    return Qwen2Model(Qwen2Config(**DECODER))


def _llama_causal() -> nn.Module:
    """LLaMA with its LM head and three blocks (for layer-index options)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(**{**DECODER, "num_hidden_layers": 3}))


def _bert_classifier() -> nn.Module:
    """BERT with a 3-class sequence-classification head."""
    from transformers import BertForSequenceClassification

    config = tiny_bert().config
    config.num_labels = 3
    return BertForSequenceClassification(config)


def _gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=16, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    return GPT2LMHeadModel(config)  # lm_head tied to the token embedding


def _t5() -> nn.Module:
    from transformers import T5Config, T5Model

    config = T5Config(
        vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
        decoder_start_token_id=0,
    )  # fmt: skip
    return T5Model(config)


def _vit() -> nn.Module:
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        image_size=16, patch_size=8, num_channels=3,
    )  # fmt: skip
    return ViTModel(config)


BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "bert": tiny_bert,
    "llama": _llama,
    "qwen2": _qwen2,
    "gpt2": _gpt2,
    "t5": _t5,
    "vit": _vit,
    "llama_causal": _llama_causal,
    "bert_classifier": _bert_classifier,
}
TARGETS: dict[str, str | list[str]] = {
    "bert": ["query", "value", "intermediate.dense"],
    "llama": r".*\.(q_proj|v_proj|down_proj)",
    "qwen2": ["q_proj", "v_proj", "down_proj"],  # q, v with a bias; down_proj without
    "gpt2": ["c_attn", "c_proj", "c_fc"],  # transformers Conv1D, weight (in, out)
    "t5": ["q", "v", "wi"],  # no bias anywhere
    "vit": ["q_proj", "v_proj", "fc1"],
}
"""Target modules of the six conformance architectures: attention and feed-forward
matrices, with and without biases."""


@functools.cache
def _built(name: str) -> nn.Module:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return BUILDERS[name]().eval()


def factory(name: str) -> Callable[[], nn.Module]:
    """A function returning a fresh copy of the tiny ``name`` model (same weights)."""
    return lambda: copy.deepcopy(_built(name))


def tiny(name: str) -> nn.Module:
    """A fresh copy of the tiny ``name`` model."""
    return factory(name)()
