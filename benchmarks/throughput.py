"""Training throughput and peak memory of each method vs lora and full fine-tuning.

A randomly initialised RoBERTa-base-sized classifier (built from a config:
nothing is downloaded), random token batches, the GraphOptimizer over AdamW.
Methods are measured in interleaved rounds (median of the rounds), so a
slowdown of the machine hits all of them alike.

    .venv/bin/python benchmarks/throughput.py --device cuda      # what gpu_finetune.sh runs
    .venv/bin/python benchmarks/throughput.py --tiny             # a CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from graphopt.finetune.config import FinetuneConfig
from graphopt.finetune.run import apply_methods
from graphopt.optim import GraphOptimizer

# --method specs as ``graphopt finetune`` takes them; pca_ggm allocates after the
# 2 warm-up steps, so the timed steps are its post-allocation steps.
METHODS = {
    "full": ["full"],
    "lora": ["lora:r=8"],
    "linchain": ["linchain:r=8"],
    "pca_ggm": ["pca_ggm:warmup_steps=2"],
    "spectral": ["spectral"],
    "lora+spectral": ["lora:r=8", "spectral"],
    "linchain+spectral": ["linchain:r=8", "spectral"],
}


def build(name: str, size: str, device: torch.device) -> tuple[torch.nn.Module, GraphOptimizer]:
    from transformers import RobertaConfig, RobertaForSequenceClassification

    dims = {"base": (768, 12, 12, 3072), "tiny": (64, 2, 2, 128)}[size]
    config = RobertaConfig(
        hidden_size=dims[0], num_hidden_layers=dims[1], num_attention_heads=dims[2],
        intermediate_size=dims[3], vocab_size=50265, max_position_embeddings=514, num_labels=5,
    )  # fmt: skip
    torch.manual_seed(0)
    model = RobertaForSequenceClassification(config)
    # The main job's rules: every attention and FFN matrix, the head trained in full.
    apply_methods(model, FinetuneConfig.build({"methods": METHODS[name]}))
    model.to(device)
    return model, GraphOptimizer.for_model(model, lr=1e-4)


def measure(model, optimizer, batch, steps: int, device: torch.device) -> float:
    """Seconds per training step (synchronised at the ends only)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    began = time.perf_counter()
    for _ in range(steps):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - began) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="a tiny model (CPU smoke test)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="autocast to bfloat16 (CUDA)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "throughput"))
    args = parser.parse_args()
    device = torch.device(args.device)
    size = "tiny" if args.tiny else "base"
    generator = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(3, 50000, (args.batch_size, args.seq_len), generator=generator),
        "labels": torch.randint(0, 5, (args.batch_size,), generator=generator),
    }
    batch = {k: v.to(device) for k, v in batch.items()}
    times: dict[str, list[float]] = {name: [] for name in METHODS}
    memory: dict[str, float] = {}
    trainable: dict[str, int] = {}
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    for round_ in range(args.rounds):
        for name in METHODS:
            model, optimizer = build(name, size, device)
            trainable[name] = sum(p.numel() for p in model.parameters() if p.requires_grad)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            with autocast:
                measure(model, optimizer, batch, 2, device)  # warm-up (and pca_ggm scoring)
                times[name].append(measure(model, optimizer, batch, args.steps, device))
            if device.type == "cuda" and round_ == 0:
                memory[name] = torch.cuda.max_memory_allocated(device) / 2**20
            del model, optimizer
    tokens = args.batch_size * args.seq_len
    rows = []
    for name in METHODS:
        step = statistics.median(times[name])
        rows.append({
            "method": name, "trainable_parameters": trainable[name], "step_s": step,
            "tokens_per_s": tokens / step, "peak_memory_mb": memory.get(name),
        })  # fmt: skip
    by_name = {r["method"]: r for r in rows}
    lines = [
        f"# Training throughput ({'tiny' if args.tiny else 'RoBERTa-base-sized'} model, "
        f"{device.type}{', bf16 autocast' if args.bf16 else ''})",
        "",
        f"batch {args.batch_size} x {args.seq_len} tokens, {args.steps} steps x {args.rounds}"
        " interleaved rounds (median). Reproduce: `benchmarks/gpu_finetune.sh`.",
        "",
        "| method | trainable params | tokens/s | step time vs lora | step time vs full |"
        " peak memory (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        peak = f"{row['peak_memory_mb']:.0f}" if row["peak_memory_mb"] is not None else "n/a (CPU)"
        lines.append(
            f"| {row['method']} | {row['trainable_parameters']:,} | {row['tokens_per_s']:.0f} | "
            f"{row['step_s'] / by_name['lora']['step_s']:.2f} | "
            f"{row['step_s'] / by_name['full']['step_s']:.2f} | {peak} |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
