"""The fine-tuning job behind ``graphopt finetune``: data, model, methods,
optimizer, a resumable training loop, evaluation and the run's outputs.

Outputs in ``output_dir``: ``run_config.json``, ``metrics.jsonl`` (one line per
logged step and per evaluation), ``checkpoints/``, ``adapter/`` (the final
adapter, or ``model.safetensors`` for full fine-tuning), ``results.json`` and,
on request, ``merged/`` (a ``save_pretrained`` model) and ``plots/``.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import signal
import statistics
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from sklearn.metrics import accuracy_score, f1_score
from torch import nn

import graphopt
from graphopt.data import Splits, TextDataset, few_shot, load_bbc_news, load_table, stratified_split
from graphopt.finetune import checkpoint as ckpt
from graphopt.finetune.batches import Encoded, batch_indices, encode, steps_per_epoch
from graphopt.finetune.config import FinetuneConfig
from graphopt.finetune.model import default_target_modules, head_modules, load_classifier
from graphopt.io import atomic_directory, atomic_write_json

RESUME_NEUTRAL = {"plot", "save_merged", "checkpoint_every", "log_every", "device", "output_dir"}
"""Options that may differ between a run and its resumption."""


class RunInterrupted(RuntimeError):
    """Training stopped on a signal after saving a checkpoint."""


@dataclass
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: torch.device) -> Distributed:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), world_size)

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA device is available")
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(name)


def load_splits(config: FinetuneConfig) -> Splits:
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


def apply_methods(model: nn.Module, config: FinetuneConfig) -> None:
    """Apply the configured methods in order; full fine-tuning trains everything.

    A method stacked on an adapter (e.g. ``lora`` then ``spectral``) targets, unless
    its config names ``target_modules``, the adapter's output factor ``lora_B`` of
    each adapted layer: the filter then acts on the factor whose rows are the
    layer's output units, the nodes of the pretrained weight's graph.
    """
    if config.is_full_finetuning:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return
    targets = config.target_modules or default_target_modules(model)
    for spec in config.methods:
        options = dict(spec.config)
        options.setdefault("target_modules", stacked_targets(model, targets))
        options.setdefault("trainable_extra", head_modules(model))
        graphopt.apply(model, spec.name, **options)


def stacked_targets(model: nn.Module, targets: str | list[str]) -> str | list[str]:
    """``targets``, with each layer an earlier adapter wrapped replaced by its ``lora_B``."""
    if isinstance(targets, str):
        return targets
    modules = dict(model.named_modules())
    return [
        f"{name}.lora_B"
        if not isinstance(modules.get(name), nn.Linear) and f"{name}.lora_B" in modules
        else name
        for name in targets
    ]


def build_optimizer(
    model: nn.Module, config: FinetuneConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, Any]:
    """The GraphOptimizer over the trainable parameters (head at ``head_lr``) and the schedule."""
    from transformers import get_scheduler

    from graphopt.optim import GraphOptimizer

    head = head_modules(model)
    body, head_params = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (head_params if name.split(".")[0] in head else body).append(parameter)
    groups = [{"params": body, "lr": config.lr}]
    if head_params:
        groups.append({"params": head_params, "lr": config.head_lr or config.lr})
    optimizer = GraphOptimizer.for_model(
        model, params=groups, base=torch.optim.AdamW, lr=config.lr, weight_decay=config.weight_decay
    )
    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[
        config.schedule
    ]
    scheduler = get_scheduler(
        name,
        optimizer,
        num_warmup_steps=math.ceil(config.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    return optimizer, scheduler


@torch.no_grad()
def evaluate(
    model: nn.Module, data: Encoded, batch_size: int, device: torch.device
) -> dict[str, float]:
    """Accuracy, macro-F1 and mean loss over ``data`` (in its stored order)."""
    was_training = model.training
    model.eval()
    predictions, total_loss = [], 0.0
    for start in range(0, len(data), batch_size):
        indices = list(range(start, min(start + batch_size, len(data))))
        out = model(**data.batch(indices, device))
        total_loss += float(out.loss) * len(indices)
        predictions.append(out.logits.argmax(-1).cpu())
    model.train(was_training)
    predicted = torch.cat(predictions).numpy()
    truth = data.labels.numpy()
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(f1_score(truth, predicted, average="macro")),
        "loss": total_loss / len(data),
    }


@contextmanager
def stop_requests():
    """Turn the first SIGINT/SIGTERM into a flag the loop checks between steps."""
    flag = {"signal": None}

    def handler(signum, frame):
        flag["signal"] = signal.Signals(signum).name
        signal.signal(signum, previous[signum])  # a second Ctrl-C stops at once

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def prepare_output_dir(config: FinetuneConfig, resume: bool, overwrite: bool) -> Path | None:
    """Refuse to touch another run's outputs; return the checkpoint to resume from."""
    output = Path(config.output_dir)
    previous = ckpt.latest_checkpoint(output)
    has_run = previous is not None or (output / "results.json").exists()
    if resume:
        if previous is None:
            return None
        saved = ckpt.read_trainer_state(previous)["config"]
        current = config.to_dict()
        changed = sorted(
            k for k in current if k not in RESUME_NEUTRAL and saved.get(k) != current[k]
        )
        if changed:
            raise ValueError(
                f"cannot resume {output}: its checkpoint was made with different {changed}; "
                "use the same config or --overwrite"
            )
        return previous
    if has_run and not overwrite:
        raise ValueError(
            f"output_dir {str(output)!r} already holds a run; pass --resume to continue it "
            "or --overwrite to replace it"
        )
    if has_run and overwrite:
        for item in ("checkpoints", "adapter", "merged", "plots"):
            shutil.rmtree(output / item, ignore_errors=True)
        for item in ("results.json", "metrics.jsonl", "run_config.json", "model.safetensors"):
            (output / item).unlink(missing_ok=True)
    return None


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocator peak on GPU, max RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def trainable_counts(model: nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def finetune(
    config: FinetuneConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Run the whole job; returns the final results (also in ``results.json``)."""
    from tqdm.auto import tqdm

    device = resolve_device(config.device)
    dist = Distributed.from_env(device)
    start_from = prepare_output_dir(config, resume, overwrite) if dist.is_main else None
    dist.barrier()
    if not dist.is_main:
        start_from = ckpt.latest_checkpoint(config.output_dir) if resume else None
    output = Path(config.output_dir)

    splits = load_splits(config)
    torch.manual_seed(config.seed)
    model, tokenizer = load_classifier(config.model, len(splits.train.label_names))
    apply_methods(model, config)
    model.to(device)
    train_data = encode(tokenizer, splits.train, config.max_length)
    per_epoch = steps_per_epoch(len(train_data), config.batch_size, dist.world_size)
    total_steps = config.max_steps or math.ceil(config.epochs * per_epoch)
    step = 0
    if start_from is not None:  # before the optimizer: a method may reshape its parameters
        ckpt.load_model_state(model, start_from, config.is_full_finetuning)
    optimizer, scheduler = build_optimizer(model, config, total_steps)
    if start_from is not None:
        state = ckpt.load_training_state(start_from)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(state["rng"])
        step = ckpt.read_trainer_state(start_from)["step"]
    trained = model
    if dist.world_size > 1:
        trained = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if dist.is_main:
        output.mkdir(parents=True, exist_ok=True)
        atomic_write_json(output / "run_config.json", config.to_dict())

    run_config = config.to_dict()
    metrics_path = output / "metrics.jsonl"
    step_times: list[float] = []
    bar = tqdm(
        total=total_steps, initial=step, disable=not (progress and dist.is_main), desc="finetune"
    )
    trained.train()
    with ExitStack() as context:
        stop = context.enter_context(stop_requests())
        if dist.is_main:
            log = context.enter_context(open(metrics_path, "a", encoding="utf-8"))
        while step < total_steps:
            began = time.perf_counter()
            epoch, indices = batch_indices(
                len(train_data), config.batch_size, config.seed, step, dist.rank, dist.world_size
            )
            loss = trained(**train_data.batch(indices, device)).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            elapsed = time.perf_counter() - began
            step_times.append(elapsed)
            if dist.is_main and (step % config.log_every == 0 or step == total_steps):
                record = {
                    "step": step,
                    "epoch": epoch,
                    "loss": float(loss.detach()),
                    "lr": scheduler.get_last_lr()[0],
                    "samples_per_s": config.batch_size * dist.world_size / elapsed,
                }
                log.write(json.dumps(record) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{record['loss']:.4f}", ex_s=f"{record['samples_per_s']:.1f}")
            bar.update(1)
            stopping = stop["signal"] is not None
            if stopping or step % config.checkpoint_every == 0 or step == total_steps:
                if dist.is_main:
                    ckpt.save_checkpoint(
                        output,
                        step,
                        model,
                        optimizer,
                        scheduler,
                        run_config,
                        config.is_full_finetuning,
                    )
                dist.barrier()
            if stopping:
                bar.close()
                raise RunInterrupted(
                    f"stopped by {stop['signal']} after step {step}; checkpoint saved in "
                    f"{ckpt.checkpoints_dir(output)} — continue with --resume"
                )
    bar.close()
    return finish(model, tokenizer, config, splits, device, dist, step_times, total_steps)


def finish(
    model: nn.Module,
    tokenizer: Any,
    config: FinetuneConfig,
    splits: Splits,
    device: torch.device,
    dist: Distributed,
    step_times: list[float],
    total_steps: int,
) -> dict[str, Any]:
    """Evaluate, save the final adapter (and merged model), write ``results.json``."""
    output = Path(config.output_dir)
    if not dist.is_main:
        return {}
    metrics = {
        name: evaluate(
            model, encode(tokenizer, data, config.max_length), config.eval_batch_size, device
        )
        for name, data in (("dev", splits.dev), ("test", splits.test))
    }
    ckpt.save_model_state(model, output, config.is_full_finetuning)
    trainable, total = trainable_counts(model)
    results = {
        "methods": [m.name for m in config.methods],
        "test": metrics["test"],
        "dev": metrics["dev"],
        "steps": total_steps,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "median_step_time_s": statistics.median(step_times) if step_times else None,
        "peak_memory_mb": peak_memory_mb(device),
        "device": str(device),
        "seed": config.seed,
        "train_examples": len(splits.train),
    }
    if config.plot:
        from graphopt.finetune.plots import plot_run

        results["plots"] = [str(p) for p in plot_run(model, output)]
    if config.save_merged:  # last: the model is the plain architecture afterwards
        merged = output / "merged"
        if not config.is_full_finetuning:
            graphopt.merge_and_unload(model)
        with atomic_directory(merged) as folder:
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
        results["merged_model"] = str(merged)
    atomic_write_json(output / "results.json", results)
    with open(output / "metrics.jsonl", "a", encoding="utf-8") as log:
        log.write(json.dumps({"step": total_steps, "eval": metrics}) + "\n")
    return results


def evaluate_saved(output_dir: str | Path, *, split: str = "test", device: str = "auto") -> dict:
    """Score a finished run's saved adapter on ``split`` (``graphopt evaluate``)."""
    output = Path(output_dir)
    config_path = output / "run_config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{str(output)!r} holds no run (no run_config.json)")
    values = json.loads(config_path.read_text())
    values["methods"] = [{"name": m["name"], **m["config"]} for m in values["methods"]]
    config = FinetuneConfig.build(values)
    torch_device = resolve_device(device)
    splits = load_splits(config)
    data: TextDataset = getattr(splits, split)
    torch.manual_seed(config.seed)
    model, tokenizer = load_classifier(config.model, len(splits.train.label_names))
    apply_methods(model, config)
    source = (
        output if (output / "adapter").exists() or (output / "model.safetensors").exists() else None
    )
    if source is None:
        raise FileNotFoundError(
            f"{str(output)!r} has no final adapter; finish or resume the run first"
        )
    ckpt.load_model_state(model, source, config.is_full_finetuning)
    model.to(torch_device)
    return evaluate(
        model, encode(tokenizer, data, config.max_length), config.eval_batch_size, torch_device
    )
