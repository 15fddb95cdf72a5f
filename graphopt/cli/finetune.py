"""``graphopt finetune`` and ``graphopt evaluate``: the main job.

With no options: all-MiniLM-L6-v2 (packaged) fine-tuned with LinChain on the
packaged BBC News corpus, a few minutes on two CPU cores; prints the test
metrics. Options come from ``--config FILE`` (YAML/TOML) and flags, flags
winning.
"""

from __future__ import annotations

import argparse
import json
import sys

SUPPRESS = argparse.SUPPRESS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a transformers classifier with graphopt methods (the main job)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=SUPPRESS,
    )
    parser.add_argument("--config", help="YAML or TOML file of options (flags override it)")
    data = parser.add_argument_group("model and data")
    data.add_argument("--model", help="local transformers model folder (default: all-MiniLM-L6-v2)")
    data.add_argument("--train-file", dest="train_file", help="CSV/JSONL (default: BBC News)")
    data.add_argument("--dev-file", dest="dev_file")
    data.add_argument("--test-file", dest="test_file")
    data.add_argument("--text-column", dest="text_column")
    data.add_argument("--label-column", dest="label_column")
    data.add_argument("--few-shot", dest="few_shot", type=int, help="training examples per class")
    data.add_argument("--max-length", dest="max_length", type=int)
    method = parser.add_argument_group("method and optimizer")
    method.add_argument(
        "--method",
        dest="methods",
        action="append",
        help="NAME or NAME:key=value,... (repeat to stack, e.g. --method lora --method spectral);"
        " 'full' trains every parameter",
    )
    method.add_argument(
        "--target-modules", dest="target_modules", nargs="+", help="module names or one regex"
    )
    method.add_argument("--lr", type=float)
    method.add_argument(
        "--head-lr", dest="head_lr", type=float, help="classification head (default 5e-3)"
    )
    method.add_argument("--weight-decay", dest="weight_decay", type=float)
    method.add_argument("--schedule", choices=["linear", "cosine", "constant"])
    method.add_argument("--warmup-ratio", dest="warmup_ratio", type=float)
    loop = parser.add_argument_group("training loop")
    loop.add_argument("--epochs", type=float)
    loop.add_argument("--max-steps", dest="max_steps", type=int)
    loop.add_argument("--batch-size", dest="batch_size", type=int)
    loop.add_argument("--eval-batch-size", dest="eval_batch_size", type=int)
    loop.add_argument("--seed", type=int)
    loop.add_argument("--device", choices=["auto", "cpu", "cuda"])
    out = parser.add_argument_group("outputs")
    out.add_argument("--output-dir", dest="output_dir")
    out.add_argument("--checkpoint-every", dest="checkpoint_every", type=int)
    out.add_argument("--log-every", dest="log_every", type=int)
    out.add_argument("--plot", action="store_true", help="write PNG plots under OUTPUT/plots")
    out.add_argument("--save-merged", dest="save_merged", action="store_true")
    run = parser.add_argument_group("run control")
    run.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    run.add_argument("--overwrite", action="store_true", help="replace a previous run's outputs")
    run.add_argument(
        "--eval-only", dest="eval_only", action="store_true", help="score OUTPUT's adapter"
    )
    run.add_argument("--no-progress", dest="no_progress", action="store_true")
    parser.set_defaults(func=run_finetune)

    evaluate = subparsers.add_parser(
        "evaluate", help="score a finished run's saved adapter on its test split"
    )
    evaluate.add_argument("output_dir", help="the run's output folder")
    evaluate.add_argument("--split", choices=["dev", "test"], default="test")
    evaluate.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    evaluate.set_defaults(func=run_evaluate)


CONTROL = {"config", "resume", "overwrite", "eval_only", "no_progress", "func", "command"}


def run_finetune(args: argparse.Namespace) -> int:
    from graphopt.finetune.config import FinetuneConfig
    from graphopt.finetune.run import RunInterrupted, evaluate_saved, finetune

    given = vars(args)
    values = FinetuneConfig.from_file(given["config"]) if "config" in given else {}
    values.update({k: v for k, v in given.items() if k not in CONTROL})
    if values.get("target_modules") and len(values["target_modules"]) == 1:
        values["target_modules"] = values["target_modules"][0]
    config = FinetuneConfig.build(values)
    if given.get("eval_only"):
        print(json.dumps(evaluate_saved(config.output_dir, device=config.device), indent=2))
        return 0
    if given.get("resume") and given.get("overwrite"):
        raise ValueError("--resume and --overwrite exclude each other")
    try:
        results = finetune(
            config,
            resume=given.get("resume", False),
            overwrite=given.get("overwrite", False),
            progress=not given.get("no_progress", False),
        )
    except RunInterrupted as err:
        print(f"graphopt: {err}", file=sys.stderr)
        return 130
    if results:
        test = results["test"]
        print(
            f"test accuracy {test['accuracy']:.4f}  macro-F1 {test['macro_f1']:.4f}  "
            f"({results['trainable_parameters']:,} of {results['total_parameters']:,} parameters "
            f"trained, {results['steps']} steps) -> {config.output_dir}/results.json"
        )
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from graphopt.finetune.run import evaluate_saved

    print(
        json.dumps(evaluate_saved(args.output_dir, split=args.split, device=args.device), indent=2)
    )
    return 0
