"""The fine-tuning job behind ``graphopt finetune``: ``GraphoptTrainer`` plus callbacks.

The training loop, checkpointing, resumption, mixed precision, gradient
accumulation and clipping, DDP under ``torchrun``/``accelerate launch`` and
progress bars are the Hugging Face Trainer's; a user's own Trainer script
with ``graphopt.integrations.transformers.GraphoptTrainer`` runs the same
code. This module adds what a run of the job needs around it: data and model
for the task, the methods, the run folder (``rundir``: lock, refusal,
overwrite, resume checks), the callbacks (``callbacks``: metrics.jsonl,
divergence guard, SIGINT/SIGTERM checkpoints) and the final evaluation,
adapter, results and plots.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import statistics
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import graphopt
from graphopt.finetune import rundir
from graphopt.finetune.callbacks import (
    TIMINGS,
    DivergenceGuard,
    MetricsLog,
    QuietProgress,
    StepTimer,
    StopOnSignal,
)
from graphopt.finetune.config import CAUSAL_LM, HEAD_ONLY, FinetuneConfig
from graphopt.finetune.model import default_target_modules, head_modules, load_model, model_task
from graphopt.finetune.tasks import (
    LmCollator,
    classification_metrics,
    classification_splits,
    encode_classification,
    encode_lm,
    generate_samples,
    lm_splits,
    perplexity,
    predicted_class,
    sample_prompts,
)
from graphopt.integrations.transformers import (
    GraphoptTrainer,
    check_engine,
    check_finite_trainables,
    last_intact_checkpoint,
)
from graphopt.io import atomic_directory, atomic_write_json
from graphopt.threads import set_threads

KEEP_CHECKPOINTS = 2
"""Checkpoints kept in ``OUTPUT/checkpoints`` (the newest ones)."""
SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


class RunInterrupted(RuntimeError):
    """Training stopped on a signal after saving a checkpoint."""


@dataclass
class Prepared:
    """A run's model and data, built before anything is written."""

    config: FinetuneConfig
    task: str
    model: nn.Module
    tokenizer: Any
    train: list[dict[str, Any]]
    dev: list[dict[str, Any]]
    test: list[dict[str, Any]]
    test_records: Any
    """The test split before tokenisation (causal LM: where the sample prompts come from)."""


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA device is available")
    return torch.device(name)


def check_device(config: FinetuneConfig, device: torch.device) -> None:
    """bf16/fp16/FSDP where the device can run them, or a clear error before any work."""
    if config.fsdp and device.type != "cuda":
        raise ValueError(
            "--fsdp needs CUDA GPUs (accelerate shards only GPU processes); on the CPU "
            "use torchrun, which runs DDP"
        )
    if config.fp16 and device.type != "cuda":
        raise ValueError("--fp16 needs a CUDA GPU; on the CPU use --bf16 (or neither)")
    if config.bf16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"--bf16: the GPU {torch.cuda.get_device_name(device)} has no bfloat16 support; "
            "use --fp16"
        )


def check_methods(config: FinetuneConfig) -> None:
    """Every method name and option checked against the registry before data or model
    load (a typo costs nothing)."""
    from graphopt.adapters import method_class

    if config.without_methods:
        if config.methods[0].config:
            raise ValueError(f"method {config.methods[0].name!r} takes no options")
        return
    for spec in config.methods:
        cls = method_class(spec.name)
        fields = {f.name for f in dataclasses.fields(cls.config_class)}
        unknown = sorted(set(spec.config) - fields - {"trainable_extra"})
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for method {spec.name!r}; valid: {sorted(fields)}"
            )


def prepare(config: FinetuneConfig) -> Prepared:
    """Data, model and methods for ``config`` (nothing written anywhere)."""
    task = model_task(config.model or _default_model(), config.task)
    config.check_task(task)
    torch.manual_seed(config.seed)
    if task == CAUSAL_LM:
        parts = lm_splits(config)
        model, tokenizer = load_model(config.model, task)
        encoded = [encode_lm(tokenizer, part, config.max_length) for part in parts]
    else:
        splits = classification_splits(config)
        parts = (splits.train, splits.dev, splits.test)
        model, tokenizer = load_model(config.model, task, len(splits.train.label_names))
        encoded = [encode_classification(tokenizer, part, config.max_length) for part in parts]
    apply_methods(model, config)
    for name, part in zip(("train", "dev", "test"), encoded, strict=True):
        if not part:
            raise ValueError(f"the {name} split holds no example after tokenisation")
    return Prepared(config, task, model, tokenizer, *encoded, test_records=parts[2])


def apply_methods(model: nn.Module, config: FinetuneConfig) -> None:
    """Apply the configured methods in order; full fine-tuning trains everything, head-only
    the task head alone.

    A method stacked on an adapter (e.g. ``lora`` then ``spectral``) targets, unless
    its config names ``target_modules``, each adapted layer's ``output_factor`` (the
    adapter tensor whose rows are the layer's output units, e.g. ``lora_B.weight``).
    """
    heads = head_modules(model)
    if config.without_methods:
        head_only = not config.is_full_finetuning
        if head_only and not heads:
            raise ValueError(f"method {HEAD_ONLY!r} needs a task head; the model has none")
        for parameter in model.parameters():
            parameter.requires_grad_(not head_only)
        for name in heads if head_only else ():
            model.get_submodule(name).requires_grad_(True)
        return
    targets = config.target_modules or default_target_modules(model)
    for spec in config.methods:
        options = dict(spec.config)
        options.setdefault("target_modules", stacked_targets(model, targets, options))
        if heads:
            options.setdefault("trainable_extra", heads)
        graphopt.apply(model, spec.name, **options)


def stacked_targets(
    model: nn.Module, targets: str | list[str], options: dict[str, Any]
) -> str | list[str]:
    """``targets``, with each layer an earlier adapter wrapped replaced by the module that
    holds its ``output_factor`` (``lora_B.weight``: the module ``<layer>.lora_B``, whose
    ``weight`` a method stacked on it, e.g. spectral, then trains)."""
    from graphopt.layers import AdaptedLinear

    if isinstance(targets, str):
        return targets
    modules = dict(model.named_modules())
    stacked = []
    for name in targets:
        layer = modules.get(name)
        factor = type(layer).output_factor if isinstance(layer, AdaptedLinear) else None
        if factor is None:
            stacked.append(name)
            continue
        holder, _, parameter = factor.rpartition(".")
        stacked.append(f"{name}.{holder}" if holder else name)
        options.setdefault("parameters", [parameter])
    return stacked


def build_optimizer(model: nn.Module, config: FinetuneConfig) -> torch.optim.Optimizer:
    """The GraphOptimizer over the trainable parameters, the head at ``head_lr``."""
    from graphopt.optim import GraphOptimizer

    head = head_modules(model)
    body, head_params = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (head_params if name.split(".")[0] in head else body).append(parameter)
    groups = [{"params": body, "lr": config.lr}]
    if head_params:
        groups.append({"params": head_params, "lr": config.head_lr or config.lr})
    return GraphOptimizer.for_model(
        model, params=groups, base=torch.optim.AdamW, lr=config.lr, weight_decay=config.weight_decay
    )


def training_arguments(
    config: FinetuneConfig, output: Path, device: torch.device, progress: bool
) -> Any:
    """The Trainer's arguments for ``config`` (checkpoints under ``OUTPUT/checkpoints``)."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(rundir.checkpoints_dir(output)),
        max_steps=config.max_steps or -1,
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.lr,
        weight_decay=config.weight_decay,
        lr_scheduler_type=SCHEDULES[config.schedule],
        warmup_steps=config.warmup_ratio,
        max_grad_norm=config.max_grad_norm or 0.0,
        bf16=config.bf16,
        fp16=config.fp16,
        activation_checkpointing=config.gradient_checkpointing,
        logging_steps=config.log_every,
        logging_nan_inf_filter=False,  # a diverged loss must be seen, not averaged away
        save_strategy="steps",
        save_steps=config.checkpoint_every,
        save_total_limit=KEEP_CHECKPOINTS,
        eval_strategy="steps" if config.eval_every else "no",
        eval_steps=config.eval_every,
        report_to=config.report_to or "none",
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=device.type == "cpu",
        disable_tqdm=not progress,
        remove_unused_columns=False,
        prediction_loss_only=config.task == CAUSAL_LM,
        log_level="warning",
        **({"fsdp": "full_shard", "fsdp_config": {"fsdp_version": 2}} if config.fsdp else {}),
    )


def finetune(
    config: FinetuneConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Run the whole job; returns the final results (also in ``results.json``)."""
    from transformers.utils import logging as hf_logging

    if config.output_dir is None:
        config.output_dir = config.default_output_dir()
    output = Path(config.output_dir)
    main = int(os.environ.get("RANK", "0")) == 0
    if main:
        rundir.check_output_dir(output, resume, overwrite)
    device = resolve_device(config.device)
    check_device(config, device)
    check_methods(config)
    if config.threads is not None:  # torch, BLAS and OpenMP alike (graphopt.threads)
        set_threads(config.threads)
    if not progress:
        hf_logging.disable_progress_bar()
    prepared = prepare(config)
    if config.fsdp:
        check_engine(prepared.model, "FSDP")
    config.task = prepared.task
    args = training_arguments(config, output, device, progress)  # joins torchrun's group
    timer, stop = StepTimer(), StopOnSignal()
    with ExitStack() as stack:
        if args.process_index == 0:
            stack.enter_context(rundir.run_lock(output))
            _prepare_folder(output, config, resume, overwrite)
        _barrier()  # the other processes wait for the folder
        start = None
        if resume:
            start = last_intact_checkpoint(
                rundir.checkpoints_dir(output),
                prepared.model,
                max_step=_total_steps(config, prepared, args),
            )
            if start is None:
                raise ValueError(
                    f"{output} holds no intact checkpoint to resume; use --overwrite to start again"
                )
        trainer = _trainer(
            prepared, args, [MetricsLog(output / "metrics.jsonl"), DivergenceGuard(), stop, timer]
        )
        trainer.train(resume_from_checkpoint=str(start) if start else None)
        if stop.received:
            raise RunInterrupted(
                f"stopped by {stop.received} after step {trainer.state.global_step}; checkpoint "
                f"saved in {rundir.checkpoints_dir(output)} — continue with --resume"
            )
        return finish(trainer, prepared, timer.seconds, device)


def _prepare_folder(output: Path, config: FinetuneConfig, resume: bool, overwrite: bool) -> None:
    """Under the lock: check again (another run may have started), clear or check for
    resume, drop leftovers of interrupted writes, record the config."""
    rundir.check_output_dir(output, resume, overwrite)
    if overwrite:
        rundir.clear_outputs(output)
    rundir.remove_leftovers(output)
    if resume:
        rundir.check_resumable(output, config.to_dict())
    else:
        atomic_write_json(output / "run_config.json", config.to_dict())


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _total_steps(config: FinetuneConfig, prepared: Prepared, args: Any) -> int:
    if config.max_steps:
        return config.max_steps
    per_step = config.batch_size * args.world_size * config.gradient_accumulation_steps
    return max(1, math.ceil(config.epochs * max(1, len(prepared.train) // per_step)))


def _trainer(prepared: Prepared, args: Any, callbacks: list[Any]) -> GraphoptTrainer:
    from transformers import DataCollatorWithPadding, PrinterCallback, ProgressCallback

    classification = prepared.task != CAUSAL_LM
    collator = (
        DataCollatorWithPadding(prepared.tokenizer)
        if classification
        else LmCollator(prepared.tokenizer.pad_token_id)
    )
    trainer = GraphoptTrainer(
        model=prepared.model,
        args=args,
        train_dataset=prepared.train,
        eval_dataset=prepared.dev,
        data_collator=collator,
        processing_class=prepared.tokenizer,
        compute_metrics=classification_metrics if classification else None,
        preprocess_logits_for_metrics=predicted_class if classification else None,
        optimizers=(build_optimizer(prepared.model, prepared.config), None),
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # metrics.jsonl and the bar are the report
    if any(isinstance(c, ProgressCallback) for c in trainer.callback_handler.callbacks):
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(QuietProgress())
    return trainer


def evaluation(
    trainer: GraphoptTrainer, data: list[dict[str, Any]], split: str
) -> dict[str, float]:
    """The Trainer's evaluation of ``data`` as {accuracy, macro_f1, loss} or {loss, perplexity}."""
    raw = trainer.evaluate(data, metric_key_prefix=split)
    prefix = f"{split}_"
    metrics = {
        k[len(prefix) :]: float(v)
        for k, v in raw.items()
        if k.startswith(prefix) and not k.endswith(TIMINGS)
    }
    if "accuracy" not in metrics:
        metrics["perplexity"] = perplexity(metrics["loss"])
    return metrics


def finish(
    trainer: GraphoptTrainer, prepared: Prepared, step_seconds: list[float], device: torch.device
) -> dict[str, Any]:
    """Evaluate (every process: the Trainer's evaluation is distributed), then on the main
    process save the final adapter (and merged model) and write ``results.json``; the
    other processes return an empty dict."""
    config, model = prepared.config, prepared.model
    output = Path(config.output_dir or ".")
    steps = trainer.state.global_step
    check_finite_trainables(model, steps)
    metrics = {
        split: evaluation(trainer, data, split)
        for split, data in (("dev", prepared.dev), ("test", prepared.test))
    }
    if not trainer.is_world_process_zero():
        return {}
    save_model_state(model, output, config.without_methods)
    results: dict[str, Any] = {
        "task": prepared.task,
        "methods": [m.name for m in config.methods],
        "test": metrics["test"],
        "dev": metrics["dev"],
        "steps": steps,
        "trainable_parameters": trainable_count(model, config),
        "total_parameters": sum(p.numel() for p in model.parameters()),
        "median_step_time_s": statistics.median(step_seconds) if step_seconds else None,
        "peak_memory_mb": peak_memory_mb(device),
        "device": str(device),
        "seed": config.seed,
        "train_examples": len(prepared.train),
    }
    if prepared.task == CAUSAL_LM and config.generate_samples:
        prompts = sample_prompts(
            prepared.test_records, config.generate_samples, prepared.tokenizer, config.max_length
        )
        results["samples"] = generate_samples(model, prepared.tokenizer, prompts)
    outputs = {
        "adapter": str(output / ("model.safetensors" if config.without_methods else "adapter")),
        "checkpoints": str(rundir.checkpoints_dir(output)),
        "metrics": str(output / "metrics.jsonl"),
        "results": str(output / "results.json"),
    }
    if config.plot:
        from graphopt.finetune.plots import plot_run

        outputs["plots"] = [str(p) for p in plot_run(model, output)]
    if config.save_merged:  # last: the model is the plain architecture afterwards
        merged = output / "merged"
        if not config.without_methods:
            graphopt.merge_and_unload(model)
        with atomic_directory(merged) as folder:
            model.save_pretrained(folder)
            prepared.tokenizer.save_pretrained(folder)
        outputs["merged"] = str(merged)
    results["outputs"] = outputs
    atomic_write_json(output / "results.json", results)
    return results


def save_model_state(model: nn.Module, folder: Path, full_finetuning: bool) -> None:
    """The trained tensors: the adapter, or every trainable tensor (``full_finetuning``:
    full fine-tuning or head-only)."""
    from safetensors.torch import save_file

    from graphopt.io import atomic_write

    if full_finetuning:
        tensors = {
            n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad
        }
        atomic_write(folder / "model.safetensors", lambda tmp: save_file(tensors, str(tmp)))
    else:
        with atomic_directory(folder / "adapter") as tmp:
            graphopt.save_adapter(model, tmp)


def load_model_state(model: nn.Module, folder: Path, full_finetuning: bool) -> None:
    """Inverse of ``save_model_state``."""
    from safetensors.torch import load_file

    if not full_finetuning:
        graphopt.load_adapter(model, folder / "adapter")
        return
    tensors = load_file(str(folder / "model.safetensors"))
    params = dict(model.named_parameters())
    missing = sorted(set(tensors) - set(params))
    if missing:
        raise ValueError(
            f"{folder / 'model.safetensors'} has tensors the model lacks: {missing[:5]}"
        )
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)


def trainable_count(model: nn.Module, config: FinetuneConfig) -> int:
    """Entries that train: the methods' (masks honoured) and the head's."""
    from graphopt.adapters import count_trainable

    if config.without_methods or not graphopt.methods_of(model):
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    return count_trainable(model)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocator peak on GPU, max RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def evaluate_saved(
    output_dir: str | Path, *, split: str = "test", device: str = "auto", progress: bool = True
) -> dict[str, float]:
    """Score a finished run's saved adapter on ``split`` (``graphopt evaluate``)."""
    output = Path(output_dir)
    config_path = output / "run_config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{str(output)!r} holds no run (no run_config.json)")
    values = json.loads(config_path.read_text(encoding="utf-8"))
    values.update(device=device, output_dir=str(output))
    config = FinetuneConfig.build(values)
    if not ((output / "adapter").exists() or (output / "model.safetensors").exists()):
        raise FileNotFoundError(
            f"{str(output)!r} has no final adapter; finish or resume the run first"
        )
    torch_device = resolve_device(device)
    prepared = prepare(config)
    load_model_state(prepared.model, output, config.without_methods)
    args = training_arguments(config, output, torch_device, progress)
    trainer = _trainer(prepared, args, [])
    return evaluation(trainer, getattr(prepared, split), split)


def _default_model() -> Path:
    from graphopt.finetune.model import default_model_path

    return default_model_path()
