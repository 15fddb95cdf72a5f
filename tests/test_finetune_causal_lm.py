"""The job's causal-LM task on tiny random decoders: data, labels, perplexity, samples."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import word_tokenizer, write_lm_jsonl
from test_finetune import tiny_config

from graphopt.finetune.config import FinetuneConfig
from graphopt.finetune.run import finetune
from graphopt.finetune.tasks import IGNORE, LmCollator, LmRecords, encode_lm


def lm_config(model_dir: Path, data: Path, output: Path, **overrides) -> FinetuneConfig:
    """``test_finetune.tiny_config`` for a causal LM: 4 steps, 2 generated samples."""
    return tiny_config(
        model_dir, data, output, **{"max_steps": 4, "generate_samples": 2, **overrides}
    )


def test_text_records_are_joined_with_eos_and_packed_into_blocks(tmp_path):
    tokenizer = word_tokenizer(tmp_path)
    records = LmRecords("text", texts=("w1 w2 w3", "w4 w5", "w6 w7 w8 w9"))
    blocks = encode_lm(tokenizer, records, max_length=4)
    eos = tokenizer.eos_token_id
    stream = [tokenizer.convert_tokens_to_ids(w) for w in ("w1", "w2", "w3")] + [eos]
    stream += [tokenizer.convert_tokens_to_ids(w) for w in ("w4", "w5")] + [eos]
    stream += [tokenizer.convert_tokens_to_ids(w) for w in ("w6", "w7", "w8", "w9")] + [eos]
    assert [b["input_ids"] for b in blocks] == [stream[i : i + 4] for i in range(0, 12, 4)]
    assert all(b["labels"] == b["input_ids"] for b in blocks)  # every token is a target


def test_prompt_records_carry_the_loss_on_the_completion_only(tmp_path):
    tokenizer = word_tokenizer(tmp_path)
    records = LmRecords("prompt", prompts=("w1 w2 w3",), completions=("w4 w5",))
    (example,) = encode_lm(tokenizer, records, max_length=16)
    ids = [tokenizer.convert_tokens_to_ids(w) for w in ("w1", "w2", "w3", "w4", "w5")]
    assert example["input_ids"] == [*ids, tokenizer.eos_token_id]
    assert example["labels"] == [IGNORE] * 3 + [*ids[3:], tokenizer.eos_token_id]
    batch = LmCollator(pad_id=0)([example, {"input_ids": [7], "labels": [7]}])
    assert batch["labels"][1].tolist() == [7] + [IGNORE] * 5
    assert batch["attention_mask"].sum(dim=1).tolist() == [6, 1]


@pytest.mark.parametrize(
    "methods",
    [
        ["lora:r=2"],
        ["linchain:r=2"],
        ["pca_ggm:r=2,warmup_steps=2,n_important=4,top_k=8"],
        ["lora:r=2", "spectral:k=2,graph_options={k: 3}"],  # k_proj has 8 rows (1 kv head)
        ["full"],
    ],
    ids=["lora", "linchain", "pca_ggm", "lora+spectral", "full"],
)
def test_causal_lm_job_trains_every_method_and_reports_perplexity(
    tmp_path, tiny_llama_dir, lm_text_jsonl, methods
):
    config = lm_config(tiny_llama_dir, lm_text_jsonl, tmp_path / "run", methods=methods)
    results = finetune(config, progress=False)
    assert results["task"] == "causal-lm" and results["steps"] == 4
    for split in ("dev", "test"):
        assert results[split]["perplexity"] == pytest.approx(math.exp(results[split]["loss"]))
    assert len(results["samples"]) == 2 and all(s["completion"] for s in results["samples"])
    saved = json.loads((tmp_path / "run" / "run_config.json").read_text())
    assert saved["task"] == "causal-lm"  # inferred from LlamaForCausalLM


def test_training_on_completions_lowers_their_loss(tmp_path, tiny_llama_dir, lm_prompt_jsonl):
    before = lm_config(tiny_llama_dir, lm_prompt_jsonl, tmp_path / "a", max_steps=1, lr=1e-9)
    after = lm_config(tiny_llama_dir, lm_prompt_jsonl, tmp_path / "b", max_steps=30, lr=3e-2)
    assert (
        finetune(after, progress=False)["dev"]["loss"]
        < finetune(before, progress=False)["dev"]["loss"]
    )


def test_an_encoder_cannot_be_trained_as_a_causal_lm(tmp_path, tiny_bert_dir, lm_text_jsonl):
    config = lm_config(tiny_bert_dir, lm_text_jsonl, tmp_path / "run", task="causal-lm")
    with pytest.raises(
        ValueError, match=r"cannot be trained for task 'causal-lm': it is an encoder"
    ):
        finetune(config, progress=False)
    assert not (tmp_path / "run").exists()


def test_a_causal_lm_folder_without_data_is_a_clear_error(tmp_path, tiny_llama_dir):
    config = FinetuneConfig.build({"model": str(tiny_llama_dir), "output_dir": str(tmp_path / "r")})
    with pytest.raises(ValueError, match="needs a train_file"):
        finetune(config, progress=False)


def test_records_without_the_named_fields_are_named(tmp_path, tiny_llama_dir):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"body": "w1 w2"}\n')
    config = lm_config(tiny_llama_dir, data, tmp_path / "run")
    with pytest.raises(ValueError, match=r"bad.jsonl row 1 has neither a 'text' field"):
        finetune(config, progress=False)
    mixed = write_lm_jsonl(tmp_path / "mixed.jsonl", "prompt", rows=5)
    with mixed.open("a") as handle:
        handle.write('{"prompt": "w1"}\n')
    config = lm_config(tiny_llama_dir, mixed, tmp_path / "run")
    with pytest.raises(ValueError, match=r"mixed.jsonl row 6: 'completion' must be non-empty"):
        finetune(config, progress=False)
    assert not (tmp_path / "run").exists()


def test_a_decoder_can_be_fine_tuned_as_a_classifier_explicitly(
    tmp_path, tiny_llama_dir, topic_csv
):
    """--task classification on a causal-LM checkpoint: a fresh score head; pads with eos."""
    config = lm_config(tiny_llama_dir, topic_csv, tmp_path / "run", task="classification")
    results = finetune(config, progress=False)
    assert 0.0 <= results["test"]["accuracy"] <= 1.0
    assert torch.tensor(results["trainable_parameters"]) > 0
