"""Configuration of a fine-tuning run: one dataclass, read from YAML/TOML and
overridden by command-line flags, validated before any work."""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from graphopt.options import parse_options

DEVICES = ("auto", "cpu", "cuda")
SCHEDULES = ("linear", "cosine", "constant")
OPTIMIZERS = ("adamw",)
TEXT_OPTIONS = (
    "model", "train_file", "dev_file", "test_file", "text_column", "label_column",
    "prompt_column", "completion_column", "optimizer", "schedule", "device", "output_dir",
)  # fmt: skip
OPTIONAL_TEXT = {"model", "train_file", "dev_file", "test_file", "output_dir"}
CLASSIFICATION = "classification"
CAUSAL_LM = "causal-lm"
TASKS = (CLASSIFICATION, CAUSAL_LM)
FULL_FINETUNING = "full"
"""Method name meaning: no adapter, every parameter trains."""
HEAD_ONLY = "head"
"""Method name meaning: no adapter, only the task head trains (on frozen features)."""
MODEL_MODES = (FULL_FINETUNING, HEAD_ONLY)
"""Method names that train the model's own parameters (no graphopt method applied)."""


@dataclass
class MethodSpec:
    """One method applied to the model: its registered name and its config."""

    name: str
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: str | dict[str, Any] | MethodSpec) -> MethodSpec:
        """From ``"name"``, ``"name:key=value,key=value"`` (values read as YAML flow
        nodes, nested ``{a: 1}`` / ``[q, v]`` included: ``graphopt.options``) or a
        mapping ``{"name": ..., **config}``."""
        if isinstance(value, MethodSpec):
            return value
        if isinstance(value, dict):
            config = dict(value)
            name = config.pop("name", None)
            if not isinstance(name, str):
                raise ValueError(f"a method entry needs a 'name'; got {value!r}")
            return cls(name.strip().lower(), config)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"method must be a name or a mapping; got {value!r}")
        name, _, rest = value.partition(":")
        return cls(name.strip().lower(), parse_options(rest, f"--method {value!r}"))


@dataclass
class FinetuneConfig:
    """Everything a ``graphopt finetune`` run needs; defaults are the embedded demo."""

    model: str | None = None  # a local transformers model folder; None -> all-MiniLM-L6-v2
    task: str | None = None  # "classification" | "causal-lm"; None -> from the model
    train_file: str | None = None  # CSV/JSONL; None -> the embedded BBC News corpus
    dev_file: str | None = None
    test_file: str | None = None
    text_column: str = "text"
    label_column: str = "label"  # classification
    prompt_column: str = "prompt"  # causal-lm records with a prompt and a completion
    completion_column: str = "completion"
    few_shot: int | None = None  # examples per class drawn from the training split
    methods: list[MethodSpec] = field(default_factory=lambda: [MethodSpec("linchain", {"r": 8})])
    target_modules: str | list[str] | None = None  # None -> every linear layer but the head
    optimizer: str = "adamw"
    lr: float = 5e-4
    head_lr: float | None = 5e-3  # the fresh classification head; None -> same as lr
    weight_decay: float = 0.005
    schedule: str = "linear"
    warmup_ratio: float = 0.06
    epochs: float = 1.0
    max_steps: int | None = 100  # overrides epochs when set
    batch_size: int = 16
    eval_batch_size: int = 64
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    max_grad_norm: float | None = 1.0  # None or 0: no clipping
    bf16: bool = False
    fp16: bool = False
    fsdp: bool = False  # FSDP2 full sharding through accelerate (CUDA GPUs)
    max_length: int = 128
    seed: int = 0
    device: str = "auto"
    threads: int | None = None  # torch intra-op threads; None -> graphopt's default
    output_dir: str | None = None  # None -> runs/<methods>-<timestamp>
    checkpoint_every: int = 50
    log_every: int = 1
    eval_every: int | None = None  # steps between dev evaluations during training
    report_to: list[str] = field(default_factory=list)  # e.g. ["tensorboard"]
    generate_samples: int = 3  # causal-lm: prompts continued in results.json
    plot: bool = False
    save_merged: bool = False

    @classmethod
    def from_file(cls, path: str | Path) -> dict[str, Any]:
        """The mapping in a YAML (.yaml/.yml) or TOML (.toml) config file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} does not exist")
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix.lower() == ".toml":
                data = tomllib.loads(text)
            elif path.suffix.lower() in {".yaml", ".yml"}:
                data = yaml.safe_load(text) or {}
            else:
                raise ValueError(f"config file must be .yaml, .yml or .toml; got {path.name!r}")
        except (tomllib.TOMLDecodeError, yaml.YAMLError) as err:
            raise ValueError(f"config file {path.name!r} is not valid: {err}") from err
        if not isinstance(data, dict):
            raise ValueError(f"config file {path.name!r} must hold a mapping of options")
        return data

    @classmethod
    def build(cls, values: dict[str, Any]) -> FinetuneConfig:
        """A validated config from a mapping (file contents merged with flags)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known - {"method"})
        if unknown:
            raise ValueError(f"unknown config option(s) {unknown}; known options: {sorted(known)}")
        values = dict(values)
        if "method" in values:  # singular convenience form
            values["methods"] = [values.pop("method")]
        if "methods" in values:
            raw = values["methods"]
            if not isinstance(raw, str | dict | list | tuple):
                raise ValueError(
                    f"methods must be a method name, a mapping or a list of them; got {raw!r}"
                )
            raw = [raw] if isinstance(raw, str | dict) else list(raw)
            values["methods"] = [MethodSpec.parse(v) for v in raw]
        if isinstance(values.get("report_to"), str):
            values["report_to"] = [values["report_to"]]
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise ValueError naming the first bad option (types, ranges, finiteness)."""
        for name in TEXT_OPTIONS:
            value = getattr(self, name)
            optional = name in OPTIONAL_TEXT
            if not (isinstance(value, str) and value) and not (optional and value is None):
                kind = "a non-empty string" + (" or null" if optional else "")
                raise ValueError(f"{name} must be {kind}; got {value!r}")
        targets = self.target_modules
        if targets is not None and not (
            (isinstance(targets, str) and targets)
            or (
                isinstance(targets, list)
                and targets
                and all(isinstance(t, str) and t for t in targets)
            )
        ):
            raise ValueError(
                f"target_modules must be a regex or a non-empty list of names; got {targets!r}"
            )
        _choice("device", self.device, DEVICES)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.task is not None:
            _choice("task", self.task, TASKS)
        _number("lr", self.lr, low=0.0, strict=True)
        _number("epochs", self.epochs, low=0.0, strict=True)
        _number("weight_decay", self.weight_decay, low=0.0)
        _number("warmup_ratio", self.warmup_ratio, low=0.0, high=1.0)
        if self.head_lr is not None:
            _number("head_lr", self.head_lr, low=0.0, strict=True)
        if self.max_grad_norm is not None:
            _number("max_grad_norm", self.max_grad_norm, low=0.0)
        for name in (
            "batch_size",
            "eval_batch_size",
            "gradient_accumulation_steps",
            "max_length",
            "checkpoint_every",
            "log_every",
        ):
            _integer(name, getattr(self, name), 1)
        for name in ("max_steps", "few_shot", "eval_every", "threads"):
            if getattr(self, name) is not None:
                _integer(name, getattr(self, name), 1)
        _integer("generate_samples", self.generate_samples, 0)
        _integer("seed", self.seed, 0)
        for name in ("gradient_checkpointing", "bf16", "fp16", "fsdp", "plot", "save_merged"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false; got {getattr(self, name)!r}")
        if self.bf16 and self.fp16:
            raise ValueError("bf16 and fp16 exclude each other")
        if not isinstance(self.report_to, list) or not all(
            isinstance(r, str) for r in self.report_to
        ):
            raise ValueError(f"report_to must be a list of names; got {self.report_to!r}")
        if not self.methods:
            raise ValueError(
                f"methods must name at least one method (or {FULL_FINETUNING!r}, {HEAD_ONLY!r})"
            )
        names = [m.name for m in self.methods]
        for mode in MODEL_MODES:
            if mode in names and len(names) > 1:
                raise ValueError(f"method {mode!r} cannot be combined with {names}")
        if (self.dev_file or self.test_file) and not self.train_file:
            raise ValueError("dev_file/test_file need a train_file as well")
        if self.task is not None:
            self.check_task(self.task)

    def check_method_names(self) -> None:
        """Every method name registered (a registry lookup: no model, no torch import)."""
        import graphopt

        for spec in self.methods:
            if spec.name not in MODEL_MODES:
                graphopt.registry.entry("method", spec.name)

    def check_task(self, task: str) -> None:
        """The options that ``task`` needs or excludes (also run once the task is
        inferred from the model)."""
        if task == CAUSAL_LM and self.train_file is None:
            raise ValueError(
                "task 'causal-lm' needs a train_file (JSONL with a 'text' field, or "
                "'prompt'/'completion' fields); the embedded corpus is for classification"
            )
        if task == CAUSAL_LM and self.few_shot is not None:
            raise ValueError("few_shot draws examples per class: it needs task 'classification'")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (what ``run_config.json`` stores), in the form a config
        file takes: ``build(config.to_dict())`` gives the same config."""
        values = dataclasses.asdict(self)
        values["methods"] = [{"name": m.name, **m.config} for m in self.methods]
        return json.loads(json.dumps(values))

    @property
    def is_full_finetuning(self) -> bool:
        return [m.name for m in self.methods] == [FULL_FINETUNING]

    @property
    def without_methods(self) -> bool:
        """Full fine-tuning or head-only: the model's own parameters train, and are saved
        as ``model.safetensors`` (no adapter)."""
        return [m.name for m in self.methods] in ([mode] for mode in MODEL_MODES)

    def default_output_dir(self, now: datetime.datetime | None = None) -> str:
        """``runs/<methods>-<YYYYmmdd-HHMMSS>``: every run its own folder by default."""
        stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
        label = "+".join(re.sub(r"[^a-z0-9_]+", "-", m.name) for m in self.methods)
        return str(Path("runs") / f"{label}-{stamp}")


def _number(
    name: str, value: Any, *, low: float, high: float | None = None, strict: bool = False
) -> None:
    """A finite real number in [low, high) (or (low, ...) with ``strict``)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    if value < low or (strict and value == low) or (high is not None and value >= high):
        bound = f"> {low}" if strict else f">= {low}"
        bound += f" and < {high}" if high is not None else ""
        raise ValueError(f"{name} must be {bound}; got {value!r}")


def _integer(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        kind = "positive integer" if low == 1 else f"integer >= {low}"
        raise ValueError(f"{name} must be a {kind}; got {value!r}")


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}; got {value!r}")
