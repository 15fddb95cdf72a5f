"""The two tasks of the job: what the data is, how it is tokenised and batched, and
how it is scored.

- ``classification``: labelled texts (the embedded BBC News corpus or CSV/JSONL),
  split stratified; scored by accuracy and macro-F1.
- ``causal-lm``: JSONL/CSV records with a ``text`` field (tokenised, joined with
  the end-of-sequence token and packed into blocks of ``max_length``: every
  token is a target) or ``prompt``/``completion`` fields (one example each; the
  loss is on the completion only); scored by perplexity, with a few greedy
  continuations of test prompts.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphopt.data import Splits, few_shot, load_bbc_news, load_table, read_rows, stratified_split
from graphopt.finetune.config import CAUSAL_LM, FinetuneConfig

IGNORE = -100
"""Label of a position that carries no loss (prompt tokens, padding)."""


# -- classification --------------------------------------------------------------------------


def classification_splits(config: FinetuneConfig) -> Splits:
    """The embedded BBC News corpus or the user's files, split and (optionally) few-shot."""
    if config.train_file is None:
        splits = stratified_split(load_bbc_news(), seed=0)
    else:
        columns = {"text_column": config.text_column, "label_column": config.label_column}
        train = load_table(config.train_file, **columns)
        if config.dev_file and config.test_file:
            splits = Splits(
                train,
                load_table(config.dev_file, label_names=train.label_names, **columns),
                load_table(config.test_file, label_names=train.label_names, **columns),
            )
        elif config.dev_file or config.test_file:
            raise ValueError(
                "give both dev_file and test_file, or neither (then train_file is split)"
            )
        else:
            splits = stratified_split(train, seed=0)
    if config.few_shot is not None:
        splits = Splits(
            few_shot(splits.train, config.few_shot, seed=config.seed), splits.dev, splits.test
        )
    for name in ("train", "dev", "test"):
        if len(getattr(splits, name)) == 0:
            raise ValueError(f"the {name} split is empty")
    return splits


def encode_classification(tokenizer: Any, data: Any, max_length: int) -> list[dict[str, Any]]:
    """One example per text: token ids (truncated to ``max_length``) and the label."""
    ids = tokenizer(list(data.texts), truncation=True, max_length=max_length)["input_ids"]
    return [
        {"input_ids": row, "labels": int(label)}
        for row, label in zip(ids, data.labels, strict=True)
    ]


def classification_metrics(prediction: Any) -> dict[str, float]:
    """Accuracy and macro-F1 from the Trainer's (predicted class, label) arrays."""
    from sklearn.metrics import accuracy_score, f1_score

    predicted, truth = np.asarray(prediction.predictions), np.asarray(prediction.label_ids)
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(f1_score(truth, predicted, average="macro")),
    }


def predicted_class(logits: Any, labels: Any) -> torch.Tensor:
    """Keep only the argmax of each batch's logits (``preprocess_logits_for_metrics``)."""
    return (logits[0] if isinstance(logits, tuple) else logits).argmax(dim=-1)


# -- causal language modelling ---------------------------------------------------------------


@dataclass(frozen=True)
class LmRecords:
    """Texts to model (``kind="text"``) or prompt/completion pairs (``kind="prompt"``)."""

    kind: str
    texts: tuple[str, ...] = ()
    prompts: tuple[str, ...] = ()
    completions: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.texts) if self.kind == "text" else len(self.prompts)

    def subset(self, indices: Sequence[int]) -> LmRecords:
        def pick(values: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(values[i] for i in indices) if values else ()

        return LmRecords(self.kind, pick(self.texts), pick(self.prompts), pick(self.completions))


def load_lm_records(path: str | Path, config: FinetuneConfig) -> LmRecords:
    """Records from a JSONL (or CSV) file: every row has ``config.text_column``, or every
    row has ``config.prompt_column`` and ``config.completion_column`` (the first row
    decides; any row that does not fit is an error naming it)."""
    path = Path(path)
    rows = read_rows(path)
    if not rows:
        raise ValueError(f"data file {str(path)!r} has no rows")
    text, prompt, completion = config.text_column, config.prompt_column, config.completion_column
    kind = "text" if text in rows[0] else "prompt" if prompt in rows[0] else None
    if kind is None:
        raise ValueError(
            f"{path.name} row 1 has neither a {text!r} field nor {prompt!r}/{completion!r} "
            f"fields; fields: {sorted(rows[0])} (set --text-column, or --prompt-column and "
            "--completion-column)"
        )
    fields = (text,) if kind == "text" else (prompt, completion)
    values: list[list[str]] = [[] for _ in fields]
    for number, row in enumerate(rows, start=1):
        for column, store in zip(fields, values, strict=True):
            value = row.get(column)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{path.name} row {number}: {column!r} must be non-empty text")
            store.append(value)
    if kind == "text":
        return LmRecords("text", texts=tuple(values[0]))
    return LmRecords("prompt", prompts=tuple(values[0]), completions=tuple(values[1]))


def lm_splits(config: FinetuneConfig) -> tuple[LmRecords, LmRecords, LmRecords]:
    """(train, dev, test): the given files, or the train file shuffled (seed 0) and cut
    80 / 10 / 10."""
    train = load_lm_records(config.train_file or "", config)
    if config.dev_file and config.test_file:
        parts = (
            train,
            load_lm_records(config.dev_file, config),
            load_lm_records(config.test_file, config),
        )
    elif config.dev_file or config.test_file:
        raise ValueError("give both dev_file and test_file, or neither (then train_file is split)")
    else:
        order = list(range(len(train)))
        random.Random(0).shuffle(order)
        cut = max(1, len(order) // 10)
        if len(order) < 3:
            raise ValueError(f"{config.train_file}: at least 3 records are needed to split it")
        parts = (
            train.subset(order[2 * cut :]),
            train.subset(order[:cut]),
            train.subset(order[cut : 2 * cut]),
        )
    if len({p.kind for p in parts}) > 1:
        raise ValueError(
            "train, dev and test files must all hold text records or all prompt/completion records"
        )
    return parts


def encode_lm(tokenizer: Any, records: LmRecords, max_length: int) -> list[dict[str, Any]]:
    """Token ids and labels: text records packed into blocks of ``max_length`` (labels =
    the ids); prompt records one example each, labels ``IGNORE`` on the prompt."""
    eos = tokenizer.eos_token_id
    if records.kind == "text":
        stream: list[int] = []
        for ids in tokenizer(list(records.texts), add_special_tokens=False)["input_ids"]:
            stream += [*ids, *(() if eos is None else (eos,))]
        blocks = [stream[i : i + max_length] for i in range(0, len(stream), max_length)]
        blocks = [b for b in blocks if len(b) > 1]
        return [{"input_ids": b, "labels": list(b)} for b in blocks]
    examples = []
    prompts = tokenizer(list(records.prompts), add_special_tokens=False)["input_ids"]
    completions = tokenizer(list(records.completions), add_special_tokens=False)["input_ids"]
    for prompt, completion in zip(prompts, completions, strict=True):
        ids = [*prompt, *completion, *(() if eos is None else (eos,))][:max_length]
        labels = [IGNORE] * min(len(prompt), len(ids)) + ids[len(prompt) :]
        examples.append({"input_ids": ids, "labels": labels})
    return examples


class LmCollator:
    """Right-pads ``input_ids`` (with the pad token) and ``labels`` (with ``IGNORE``)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(e["input_ids"]) for e in examples)
        ids = torch.full((len(examples), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for row, example in enumerate(examples):
            n = len(example["input_ids"])
            ids[row, :n] = torch.tensor(example["input_ids"])
            labels[row, :n] = torch.tensor(example["labels"])
            mask[row, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def perplexity(loss: float) -> float:
    """exp(mean token cross-entropy); inf rather than an overflow error."""
    return math.exp(loss) if loss < 700 else math.inf


def sample_prompts(records: LmRecords, count: int, tokenizer: Any, max_length: int) -> list[str]:
    """The first ``count`` prompts of ``records`` (for text records: the first half of
    each text's first ``max_length`` tokens)."""
    if records.kind == "prompt":
        return list(records.prompts[:count])
    prompts = []
    for text in records.texts[:count]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_length]
        prompts.append(tokenizer.decode(ids[: max(1, len(ids) // 2)]))
    return prompts


@torch.no_grad()
def generate_samples(
    model: Any, tokenizer: Any, prompts: list[str], new_tokens: int = 32
) -> list[dict[str, str]]:
    """Greedy continuations of ``prompts`` (deterministic: ``do_sample=False``)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    samples = []
    for prompt in prompts:
        batch = tokenizer(prompt, return_tensors="pt").to(device)
        out = model.generate(
            **batch, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        samples.append(
            {
                "prompt": prompt,
                "completion": tokenizer.decode(
                    out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True
                ),
            }
        )
    model.train(was_training)
    return samples


def is_causal(config: FinetuneConfig) -> bool:
    return config.task == CAUSAL_LM
