"""Hugging Face ``Trainer`` for models with graphopt methods: one line changes.

``GraphoptTrainer`` is ``transformers.Trainer`` with what a graphopt model
needs, the way the Trainer special-cases PEFT models:

- **the optimizer** is a ``GraphOptimizer`` with every applied method's
  transforms, regularizers, update transforms and callbacks, however it was
  asked for: ``optim="adamw_torch"`` (any Trainer name),
  ``optimizer_cls_and_kwargs=(cls, kwargs)`` (a torch class or
  ``GraphOptimizer`` with ``base=``), or ``optimizers=(instance, scheduler)``
  (the instance becomes the base; the scheduler keeps working, the param groups
  are shared);
- **checkpoints hold the adapter**, not the model: ``adapter_config.json`` +
  ``adapter_model.safetensors`` (``graphopt.save_adapter``) next to the
  Trainer's optimizer/scheduler/RNG/trainer state, and a completion marker
  ``graphopt_checkpoint.json`` written last; nothing is pickled (the Trainer's
  ``training_args.bin`` becomes ``training_args.json``);
- **resume** (``train(resume_from_checkpoint=True)``) picks the newest intact
  checkpoint -- marker present, trainer state readable, every tensor finite and
  of the shape the model expects -- and warns about each damaged one it skips;
- **divergence**: a checkpoint whose trainable tensors are not finite is never
  written (``TrainingDiverged``);
- **gradient accumulation on classifiers**: transformers 5 takes any model whose
  ``forward`` has ``**kwargs`` to normalise its loss by ``num_items_in_batch``
  and then skips dividing by the accumulation steps; sequence classifiers (BERT's
  among them) return a plain per-micro-batch mean, so their accumulated gradient
  was N times too large. ``GraphoptTrainer`` treats sequence classifiers as the
  plain means they are (measured: the first logged loss was 2.204 instead of
  1.102 with 2 accumulation steps).

``GraphoptTrainerMixin`` brings the same to another Trainer subclass (e.g.
TRL's): ``class MyTrainer(GraphoptTrainerMixin, SFTTrainer)``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import warnings
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn

from graphopt.adapters import CONFIG_FILE, WEIGHTS_FILE, load_adapter, save_adapter
from graphopt.io import atomic_write_json
from graphopt.methods import methods_of
from graphopt.optim import GraphOptimizer
from graphopt.optim.guard import optimizer_parts

CHECKPOINT_MARKER = "graphopt_checkpoint.json"
"""Written last into every checkpoint folder: a folder without it is incomplete."""
TRAINING_ARGS_FILE = "training_args.json"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
GRAPH_OPTIONS = ("transforms", "regularizers", "update_transforms", "callbacks")
"""``GraphOptimizer`` arguments that ``optimizer_cls_and_kwargs`` may carry besides the base's."""


class TrainingDiverged(RuntimeError):
    """Training produced non-finite values; the last good checkpoint is kept."""


def as_graph_optimizer(
    optimizer: torch.optim.Optimizer, model: nn.Module, **graph_options: Any
) -> GraphOptimizer:
    """``optimizer`` wrapped as the base of a ``GraphOptimizer`` for ``model``'s methods.

    A ``GraphOptimizer`` is returned as is, with a warning naming the method parts
    it lacks (one built with ``GraphOptimizer(params)`` instead of ``for_model``), and one
    inside accelerate's wrapper (a second ``train()`` call) is unwrapped.
    """
    inner = getattr(optimizer, "optimizer", None)  # accelerate's AcceleratedOptimizer
    if isinstance(inner, GraphOptimizer):
        return inner
    if isinstance(optimizer, GraphOptimizer):
        have = {
            getattr(p, "name", type(p).__name__)
            for kind in GRAPH_OPTIONS
            for p in getattr(optimizer, kind)
        }
        for method in methods_of(model):
            missing = [name for name in optimizer_parts(method, model) if name not in have]
            if missing:
                warnings.warn(
                    f"the GraphOptimizer given to the Trainer lacks {missing} of graphopt method "
                    f"{method.name!r}; build it with GraphOptimizer.for_model(model)",
                    UserWarning,
                    stacklevel=3,
                )
        return optimizer
    return GraphOptimizer.for_model(model, base=optimizer, **graph_options)


def is_intact_checkpoint(
    folder: Path, model: nn.Module | None = None, max_step: int | None = None
) -> str | None:
    """None if ``folder`` is a complete, loadable checkpoint, else what is wrong with it
    (naming the file). With ``model``: the adapter's tensors must be finite and of the
    shapes the model's methods expect; with ``max_step``: its step must not exceed it."""
    marker = folder / CHECKPOINT_MARKER
    if not marker.is_file():
        return f"{marker.name} is missing (the checkpoint was not finished)"
    try:
        saved = json.loads(marker.read_text(encoding="utf-8"))
        state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return f"trainer state unreadable: {err}"
    step = CHECKPOINT_PATTERN.match(folder.name)
    if not isinstance(state, dict) or step is None or state.get("global_step") != int(step[1]):
        return "trainer_state.json does not hold the step the folder is named after"
    if saved.get("step") != int(step[1]):
        return f"{marker.name} does not hold the step the folder is named after"
    if max_step is not None and not 0 <= int(step[1]) <= max_step:
        return f"its step {int(step[1])} is outside this run's 0..{max_step}"
    for name in ("optimizer.pt", "scheduler.pt"):
        try:
            torch.load(folder / name, map_location="cpu", weights_only=True)
        except Exception as err:  # a truncated or foreign file: any unpickling error
            return f"{name} cannot be read: {type(err).__name__}: {err}"
    if model is not None and methods_of(model):
        return _adapter_problem(folder, model)
    return None


def _adapter_problem(folder: Path, model: nn.Module) -> str | None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(folder / WEIGHTS_FILE), device="cpu")
    except (OSError, SafetensorError) as err:
        return f"{WEIGHTS_FILE} cannot be read: {err}"
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return f"{WEIGHTS_FILE} holds non-finite values in {name}"
    current = {}
    for index, method in enumerate(methods_of(model)):
        current.update(
            {f"methods.{index}.{k}": v for k, v in method.adapter_state_dict(model).items()}
        )
    for name, tensor in current.items():
        if name not in tensors:
            return f"{WEIGHTS_FILE} lacks {name}"
        if tuple(tensors[name].shape) != tuple(tensor.shape):
            return (
                f"{WEIGHTS_FILE} has {name} of shape {tuple(tensors[name].shape)}; "
                f"the model expects {tuple(tensor.shape)}"
            )
    return None


def last_intact_checkpoint(
    output_dir: str | Path, model: nn.Module | None = None, max_step: int | None = None
) -> Path | None:
    """The newest intact ``checkpoint-N`` folder directly inside ``output_dir`` (None if none;
    see ``is_intact_checkpoint``); every newer damaged one is reported by a warning."""
    root = Path(output_dir)
    if not root.is_dir():
        return None
    found = []
    for folder in root.iterdir():
        match = CHECKPOINT_PATTERN.match(folder.name)
        if match and folder.is_dir() and not folder.is_symlink():
            found.append((int(match[1]), folder))
    for _, folder in sorted(found, reverse=True):
        problem = is_intact_checkpoint(folder, model, max_step)
        if problem is None:
            return folder
        warnings.warn(f"skipping damaged checkpoint {folder}: {problem}", UserWarning, stacklevel=2)
    return None


def check_engine(model: nn.Module, engine: str) -> None:
    """Refuse, by name, the methods of ``model`` that cannot train under ``engine``.

    FSDP and DeepSpeed ZeRO re-create or flatten the parameters after the optimizer
    is built (accelerate's ``prepare``), so the optimizer parts of a method (the
    spectral filter, pca_ggm's mask) would silently stop acting on them. Methods
    without such parts (lora, linchain) are fine.
    """
    needing = {m.name: optimizer_parts(m, model) for m in methods_of(model)}
    needing = {name: parts for name, parts in needing.items() if parts}
    if needing:
        raise ValueError(
            f"{engine} is not supported for graphopt methods whose optimizer parts need "
            f"whole, fixed parameters: {needing} ({engine} re-creates or flattens the "
            "parameters after the optimizer is built); use DDP (torchrun) for them, or "
            "a method without such parts (lora, linchain)"
        )


def check_finite_trainables(model: nn.Module, step: int) -> None:
    """Raise ``TrainingDiverged`` naming the step if any trainable tensor is not finite."""
    bad = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and not bool(torch.isfinite(p).all())
    ]
    if bad:
        raise TrainingDiverged(
            f"training diverged by step {step}: non-finite values in {bad[:3]}"
            + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        )


class GraphoptTrainerMixin:
    """The graphopt parts of ``GraphoptTrainer``, for any ``transformers.Trainer`` subclass."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if is_sequence_classifier(self._graphopt_model()):
            self.model_accepts_loss_kwargs = False

    def _graphopt_model(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.model, keep_torch_compile=False)  # type: ignore[attr-defined]

    # -- the optimizer ---------------------------------------------------------------

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """Build the Trainer's optimizer as it would, then make it a ``GraphOptimizer``."""
        self._check_engine()
        requested = self.optimizer_cls_and_kwargs  # type: ignore[attr-defined]
        options: dict[str, Any] = {}
        if (
            self.optimizer is None  # type: ignore[has-type]
            and requested is not None
            and isinstance(requested[0], type)
            and issubclass(requested[0], GraphOptimizer)
        ):
            kwargs = dict(requested[1])
            options = {key: kwargs.pop(key) for key in GRAPH_OPTIONS if key in kwargs}
            base = kwargs.pop("base", torch.optim.AdamW)
            if not (isinstance(base, type) and issubclass(base, torch.optim.Optimizer)):
                raise ValueError(
                    "optimizer_cls_and_kwargs=(GraphOptimizer, {...}) needs 'base' to be a "
                    f"torch.optim.Optimizer class; got {base!r}"
                )
            self.optimizer_cls_and_kwargs = (base, kwargs)
        try:
            super().create_optimizer(model)  # type: ignore[misc]
        finally:
            self.optimizer_cls_and_kwargs = requested
        self.optimizer = as_graph_optimizer(self.optimizer, self._graphopt_model(), **options)
        return self.optimizer

    def _check_engine(self) -> None:
        engine = (
            "FSDP" if getattr(self, "is_fsdp_enabled", False)
            else "DeepSpeed ZeRO" if getattr(self, "is_deepspeed_enabled", False)
            else None
        )  # fmt: skip
        if engine is not None:
            check_engine(self._graphopt_model(), engine)

    # -- saving ----------------------------------------------------------------------

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """The adapter (models with graphopt methods) or the model, never a pickle."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir  # type: ignore[attr-defined]
        model = self._graphopt_model()
        if not methods_of(model):
            super()._save(output_dir, state_dict)  # type: ignore[misc]
        elif self.args.should_save:  # type: ignore[attr-defined]
            save_adapter(model, output_dir)
            if self.processing_class is not None:  # type: ignore[attr-defined]
                self.processing_class.save_pretrained(output_dir)  # type: ignore[attr-defined]
        if self.args.should_save:  # type: ignore[attr-defined]
            Path(output_dir, "training_args.bin").unlink(missing_ok=True)
            atomic_write_json(Path(output_dir) / TRAINING_ARGS_FILE, _args_json(self.args))  # type: ignore[attr-defined]

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        step = self.state.global_step  # type: ignore[attr-defined]
        check_finite_trainables(self._graphopt_model(), step)
        super()._save_checkpoint(model, trial)  # type: ignore[misc]
        if self.args.should_save:  # type: ignore[attr-defined]
            folder = Path(self._get_output_dir(trial=trial), f"checkpoint-{step}")  # type: ignore[attr-defined]
            atomic_write_json(
                folder / CHECKPOINT_MARKER, {"step": step, "format": "graphopt-checkpoint"}
            )

    # -- loading ---------------------------------------------------------------------

    def train(
        self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any
    ) -> Any:
        """``Trainer.train``; ``resume_from_checkpoint=True`` takes the newest *intact*
        checkpoint in ``output_dir`` (see ``last_intact_checkpoint``)."""
        if resume_from_checkpoint is True:
            found = last_intact_checkpoint(self.args.output_dir, self._graphopt_model())  # type: ignore[attr-defined]
            if found is None:
                raise ValueError(f"no intact checkpoint in {self.args.output_dir}")  # type: ignore[attr-defined]
            resume_from_checkpoint = str(found)
        return super().train(resume_from_checkpoint, *args, **kwargs)  # type: ignore[misc]

    def _load_from_checkpoint(
        self, resume_from_checkpoint: str, model: nn.Module | None = None
    ) -> None:
        target = self._graphopt_model() if model is None else model
        if methods_of(target) and (Path(resume_from_checkpoint) / CONFIG_FILE).is_file():
            load_adapter(target, resume_from_checkpoint)
        else:
            super()._load_from_checkpoint(resume_from_checkpoint, model)  # type: ignore[misc]

    def _load_best_model(self) -> None:
        best = self.state.best_model_checkpoint  # type: ignore[attr-defined]
        model = self._graphopt_model()
        if methods_of(model) and best and (Path(best) / CONFIG_FILE).is_file():
            load_adapter(model, best)
        else:
            super()._load_best_model()  # type: ignore[misc]


class GraphoptTrainer(GraphoptTrainerMixin, transformers.Trainer):
    """``transformers.Trainer`` for a model with graphopt methods (see the module doc)."""


def is_sequence_classifier(model: nn.Module) -> bool:
    """Whether ``model`` is a transformers ``*ForSequenceClassification`` model."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    )

    return type(model).__name__ in set(MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.values())


def _args_json(args: Any) -> dict[str, Any]:
    """TrainingArguments as JSON-ready values (what ``training_args.bin`` pickled)."""
    values = args.to_dict() if hasattr(args, "to_dict") else dataclasses.asdict(args)
    return json.loads(json.dumps(values, default=str))


__all__ = [
    "CHECKPOINT_MARKER",
    "GraphoptTrainer",
    "GraphoptTrainerMixin",
    "TrainingDiverged",
    "as_graph_optimizer",
    "check_engine",
    "check_finite_trainables",
    "is_intact_checkpoint",
    "last_intact_checkpoint",
]
