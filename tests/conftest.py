"""Shared fixtures: tiny transformers models and data, built locally (no downloads)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch

WORDS = [f"w{i}" for i in range(40)]
TOPICS = {"alpha": WORDS[:12], "beta": WORDS[12:24], "gamma": WORDS[24:36]}


def write_tiny_bert(
    folder: Path, *, hidden: int = 16, layers: int = 2, dropout: float = 0.1
) -> Path:
    """A randomly initialised BERT classifier + WordPiece tokenizer saved with save_pretrained."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    config = BertConfig(
        vocab_size=len(WORDS) + 5,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden + 3,
        max_position_embeddings=64,
        num_labels=3,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def word_tokenizer(folder: Path):
    """A word-level fast tokenizer over ``WORDS`` with pad/unk/bos/eos, saved in ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<unk>", "<s>", "</s>", *WORDS])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
    )
    tokenizer.save_pretrained(folder)
    # keep this exact tokenizer whatever the model type (AutoTokenizer would otherwise
    # pick e.g. Qwen2Tokenizer for a qwen2 config and re-read tokenizer.json its own way)
    settings = folder / "tokenizer_config.json"
    settings.write_text(
        json.dumps(
            {**json.loads(settings.read_text()), "tokenizer_class": "PreTrainedTokenizerFast"}
        )
    )
    return tokenizer


def write_tiny_causal_lm(folder: Path, family: str = "llama", *, dropout: float = 0.0) -> Path:
    """A randomly initialised (seed 0) tiny causal LM of ``family`` ("llama", "gpt2",
    "qwen2") with a word-level tokenizer, saved with save_pretrained (for qwen2,
    transformers' AutoTokenizer insists on its own byte-level BPE class: load the
    tokenizer with ``PreTrainedTokenizerFast.from_pretrained``)."""
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = word_tokenizer(folder)
    vocab = len(tokenizer)
    common = {"vocab_size": vocab, "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3}
    if family == "gpt2":
        config = transformers.GPT2Config(
            n_embd=16, n_layer=2, n_head=2, n_positions=64, resid_pdrop=dropout,
            embd_pdrop=dropout, attn_pdrop=dropout, **common,
        )  # fmt: skip
        cls = transformers.GPT2LMHeadModel
    else:
        config_cls, cls = {
            "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
            "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        }[family]
        config = config_cls(
            hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, max_position_embeddings=64, attention_dropout=dropout,
            **common,
        )  # fmt: skip
    torch.manual_seed(0)
    cls(config).save_pretrained(folder)
    return folder


def write_lm_jsonl(path: Path, kind: str = "text", rows: int = 30, seed: int = 0) -> Path:
    """Causal-LM records over the topic words: ``text`` rows or ``prompt``/``completion``."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as handle:
        for _ in range(rows):
            words = rng.choice(list(TOPICS.values()))
            if kind == "text":
                record = {"text": " ".join(rng.choices(words, k=12))}
            else:
                record = {
                    "prompt": " ".join(rng.choices(words, k=4)),
                    "completion": " ".join(rng.choices(words, k=4)),
                }
            handle.write(json.dumps(record) + "\n")
    return path


def tiny_bert(**options: Any) -> torch.nn.Module:
    """A randomly initialised (seed 0) 2-layer BERT encoder with hidden size 32;
    ``options`` override ``BertConfig`` fields (e.g. dropout off)."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        **{
            "vocab_size": 64,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 48,
            "max_position_embeddings": 16,
            **options,
        }
    )
    return BertModel(config)


def write_topic_csv(path: Path, per_class: int = 12, seed: int = 0) -> Path:
    """A separable 3-class text dataset: each class draws words from its own topic."""
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"])
        writer.writeheader()
        for label, words in TOPICS.items():
            for _ in range(per_class):
                writer.writerow({"text": " ".join(rng.choices(words, k=8)), "label": label})
    return path


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def topic_csv(tmp_path_factory) -> Path:
    return write_topic_csv(tmp_path_factory.mktemp("data") / "topics.csv")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    return write_tiny_causal_lm(tmp_path_factory.mktemp("tiny_llama"), "llama")


@pytest.fixture(scope="session")
def lm_text_jsonl(tmp_path_factory) -> Path:
    return write_lm_jsonl(tmp_path_factory.mktemp("lm") / "text.jsonl", "text")


@pytest.fixture(scope="session")
def lm_prompt_jsonl(tmp_path_factory) -> Path:
    return write_lm_jsonl(tmp_path_factory.mktemp("lm") / "prompt.jsonl", "prompt")


@pytest.fixture
def restore_threads():
    """Undo what ``graphopt.cli.main`` sets for the process: torch's and the BLAS/OpenMP
    thread pools, and the exported ``*_NUM_THREADS`` variables."""
    import os

    from threadpoolctl import threadpool_limits

    from graphopt.threads import ENV_EXPORTS

    saved_env = {name: os.environ.get(name) for name in ENV_EXPORTS}
    saved_torch = torch.get_num_threads()
    with threadpool_limits(limits=None):  # restores the pools' sizes on exit
        yield
    torch.set_num_threads(saved_torch)
    for name, value in saved_env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
