"""Checkpoints of a fine-tuning run, written atomically, read without pickle.

Layout of ``OUTPUT/checkpoints/step-000120/``:

- ``adapter/`` — ``graphopt.save_adapter`` output (methods' tensors, config,
  extra state and the trained head), or ``model.safetensors`` with every
  trainable tensor for full fine-tuning;
- ``training_state.pt`` — optimizer, scheduler and RNG states (tensors and
  plain values only; read with ``torch.load(weights_only=True)``);
- ``trainer_state.json`` — the step reached and the run's config.

``checkpoints/latest.json`` names the newest complete checkpoint; it is
replaced only after the checkpoint folder is complete.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

import graphopt
from graphopt.io import atomic_directory, atomic_write_json

KEEP_LAST = 2


def checkpoints_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    pointer = checkpoints_dir(output_dir) / "latest.json"
    if not pointer.is_file():
        return None
    folder = checkpoints_dir(output_dir) / json.loads(pointer.read_text())["checkpoint"]
    return folder if folder.is_dir() else None


def rng_state() -> dict[str, Any]:
    """Every RNG a training step draws from, as tensors and plain values."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(internal), gauss],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_model_state(model: nn.Module, folder: Path, full_finetuning: bool) -> None:
    """The trained tensors: the adapter, or every trainable tensor in full fine-tuning."""
    if full_finetuning:
        tensors = {
            n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad
        }
        save_file(tensors, str(folder / "model.safetensors"))
    else:
        graphopt.save_adapter(model, folder / "adapter")


def load_model_state(model: nn.Module, folder: Path, full_finetuning: bool) -> None:
    if full_finetuning:
        tensors = load_file(str(folder / "model.safetensors"))
        missing = set(tensors) - {n for n, _ in model.named_parameters()}
        if missing:
            raise ValueError(
                f"checkpoint {folder} has tensors the model lacks: {sorted(missing)[:5]}"
            )
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in tensors.items():
                params[name].copy_(value)
    else:
        graphopt.load_adapter(model, folder / "adapter")


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    config: dict[str, Any],
    full_finetuning: bool,
) -> Path:
    """Write checkpoint ``step`` atomically, point ``latest.json`` at it, prune old ones."""
    root = checkpoints_dir(output_dir)
    name = f"step-{step:06d}"
    with atomic_directory(root / name) as tmp:
        save_model_state(model, tmp, full_finetuning)
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng_state(),
            },
            tmp / "training_state.pt",
        )
        (tmp / "trainer_state.json").write_text(
            json.dumps({"step": step, "config": config}, indent=2, sort_keys=True)
        )
    atomic_write_json(root / "latest.json", {"checkpoint": name, "step": step})
    for old in sorted(root.glob("step-*"))[:-KEEP_LAST]:
        shutil.rmtree(old, ignore_errors=True)
    return root / name


def read_trainer_state(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "trainer_state.json").read_text())


def load_training_state(folder: Path) -> dict[str, Any]:
    """Optimizer, scheduler and RNG states of a checkpoint (no pickle code runs).

    Loaded on the CPU: the optimizer moves its state to each parameter's device.
    """
    return torch.load(folder / "training_state.pt", map_location="cpu", weights_only=True)
