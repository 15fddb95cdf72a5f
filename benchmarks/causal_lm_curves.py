"""Causal-LM fine-tuning through the job on a tiny Llama: loss curves per method.

A randomly initialised Llama (hidden 64, 2 layers, 4 heads; the packaged
all-MiniLM-L6-v2 WordPiece tokenizer, 30,522 tokens) is first pre-trained briefly
in full on 400 BBC News texts (so the adapters start from a model that has
learnt something), then fine-tuned with every method through
``graphopt finetune --task causal-lm`` on the same texts (packed blocks of 64
tokens), same steps, batch, learning rate per method as given below, seed 0:
the training loss per step and dev perplexity every ``EVAL_EVERY`` steps are
plotted per method, with the final test perplexity in the table.

Run: ``.venv/bin/python benchmarks/causal_lm_curves.py [--steps 60]`` (results:
``benchmarks/results/causal_lm_curves.{md,json,png}``).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
EVAL_EVERY = 20
METHODS = {
    "full": (["full"], 1e-3),
    "lora": (["lora:r=8"], 5e-3),
    "linchain": (["linchain:r=8"], 5e-3),
    "pca_ggm": (["pca_ggm:r=8,warmup_steps=10,n_important=8,top_k=24"], 5e-3),
    "lora+spectral": (["lora:r=8", "spectral:k=8"], 5e-3),
}


DOCUMENTS = 400
"""BBC News articles used (every k-th of the 2,127, all classes): ~3,000 blocks of 64
tokens, 10% each for dev and test."""


def corpus(folder: Path) -> Path:
    """``DOCUMENTS`` BBC News texts as a JSONL of ``text`` records."""
    from graphopt.data import load_bbc_news

    texts = load_bbc_news().texts
    path = folder / "bbc.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for text in texts[:: len(texts) // DOCUMENTS][:DOCUMENTS]:
            handle.write(json.dumps({"text": text}) + "\n")
    return path


def tiny_llama(folder: Path) -> Path:
    """A random tiny Llama saved with the packaged MiniLM tokenizer."""
    import torch
    import transformers

    from graphopt.finetune.model import default_model_path

    tokenizer = transformers.AutoTokenizer.from_pretrained(default_model_path())
    tokenizer.eos_token = tokenizer.sep_token
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.sep_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def finetune(
    model: Path, data: Path, output: Path, methods: list[str], lr: float, steps: int
) -> dict:
    """One run of the job; its training losses, dev perplexities and results."""
    command = [
        sys.executable, "-m", "graphopt.cli", "finetune", "--task", "causal-lm",
        "--model", str(model), "--train-file", str(data), "--max-length", "64",
        "--batch-size", "16", "--max-steps", str(steps), "--lr", str(lr),
        "--eval-every", str(EVAL_EVERY), "--eval-batch-size", "64", "--device", "cpu",
        "--no-progress", "--output-dir", str(output), "--checkpoint-every", str(10 * steps),
        "--generate-samples", "0",
    ]  # fmt: skip
    for method in methods:
        command += ["--method", method]
    subprocess.run(command, check=True, capture_output=True, text=True)
    records = [json.loads(x) for x in (output / "metrics.jsonl").read_text().splitlines()]
    return {
        "train": [(r["step"], r["loss"]) for r in records if r.get("loss") is not None],
        "dev": [
            (r["step"], math.exp(r["eval"]["loss"]))
            for r in records
            if r.get("split") == "dev" and r["eval"].get("loss") is not None
        ],
        "results": json.loads((output / "results.json").read_text()),
    }


def pretrained(base: Path, data: Path, root: Path, steps: int) -> Path:
    """``base`` trained in full for ``steps`` steps, saved as a model folder."""
    from safetensors.torch import load_file
    from transformers import LlamaForCausalLM

    run = root / "pretraining"
    finetune(base, data, run, ["full"], 3e-3, steps)
    model = LlamaForCausalLM.from_pretrained(base)
    model.load_state_dict(load_file(str(run / "model.safetensors")), strict=False)
    start = root / "start"
    model.save_pretrained(start)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (base / name).exists():
            shutil.copy(base / name, start / name)
    return start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--pretrain-steps", type=int, default=200)
    args = parser.parse_args()
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = corpus(root)
        base = tiny_llama(root / "llama")
        start = pretrained(base, data, root, args.pretrain_steps)
        for name, (methods, lr) in METHODS.items():
            runs[name] = finetune(start, data, root / name, methods, lr, args.steps)
            print(name, runs[name]["results"]["test"], flush=True)
    _write(runs, args)


def _write(runs: dict, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "causal_lm_curves.json").write_text(json.dumps(runs, indent=1) + "\n")
    figure, (train_axis, dev_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, run in runs.items():
        train_axis.plot(*zip(*run["train"], strict=True), lw=1, label=name)
        dev = [(s, p) for s, p in run["dev"] if p is not None]
        if dev:
            dev_axis.plot(*zip(*dev, strict=True), "o-", ms=3, label=name)
    train_axis.set(xlabel="step", ylabel="training loss", title="tiny Llama on BBC News")
    dev_axis.set(xlabel="step", ylabel="dev perplexity", yscale="log")
    for axis in (train_axis, dev_axis):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(RESULTS / "causal_lm_curves.png", dpi=120)
    lines = [
        "# Causal-LM fine-tuning on a tiny Llama: every method through the job",
        "",
        f"`python benchmarks/causal_lm_curves.py --steps {args.steps} "
        f"--pretrain-steps {args.pretrain_steps}` (setup: the script's docstring).",
        "",
        "| method | lr | trainable parameters | test perplexity | median step (s) |",
        "|---|---|---|---|---|",
    ]
    for name, run in runs.items():
        res = run["results"]
        lines.append(
            f"| {name} | {METHODS[name][1]:g} | {res['trainable_parameters']:,} | "
            f"{res['test']['perplexity']:.2f} | {res['median_step_time_s']:.3f} |"
        )
    lines += ["", "![loss curves](causal_lm_curves.png)"]
    (RESULTS / "causal_lm_curves.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
