"""Configuration of a fine-tuning run: one dataclass, read from YAML/TOML and
overridden by command-line flags, validated before any work."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from graphopt.options import parse_options

DEVICES = ("auto", "cpu", "cuda")
SCHEDULES = ("linear", "cosine", "constant")
FULL_FINETUNING = "full"
"""Method name meaning: no adapter, every parameter trains."""


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
    train_file: str | None = None  # CSV/JSONL; None -> the embedded BBC News corpus
    dev_file: str | None = None
    test_file: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    few_shot: int | None = None  # examples per class drawn from the training split
    methods: list[MethodSpec] = field(default_factory=lambda: [MethodSpec("linchain", {"r": 8})])
    target_modules: str | list[str] | None = None  # None -> the model family's attention + FFN
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
    max_length: int = 128
    seed: int = 0
    device: str = "auto"
    output_dir: str = "runs/demo"
    checkpoint_every: int = 50
    log_every: int = 1
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
            raw = [raw] if isinstance(raw, str | dict) else list(raw)
            values["methods"] = [MethodSpec.parse(v) for v in raw]
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise ValueError naming the first bad option."""
        _choice("device", self.device, DEVICES)
        _choice("schedule", self.schedule, SCHEDULES)
        for name in ("lr", "epochs"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0; got {getattr(self, name)}")
        if self.head_lr is not None and not self.head_lr > 0:
            raise ValueError(f"head_lr must be > 0; got {self.head_lr}")
        for name in (
            "batch_size",
            "eval_batch_size",
            "max_length",
            "checkpoint_every",
            "log_every",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if self.max_steps is not None and (
            not isinstance(self.max_steps, int) or self.max_steps < 1
        ):
            raise ValueError(f"max_steps must be a positive integer; got {self.max_steps!r}")
        if self.few_shot is not None and (not isinstance(self.few_shot, int) or self.few_shot < 1):
            raise ValueError(f"few_shot must be a positive integer; got {self.few_shot!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1); got {self.warmup_ratio}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0; got {self.weight_decay}")
        if not self.methods:
            raise ValueError(f"methods must name at least one method (or {FULL_FINETUNING!r})")
        names = [m.name for m in self.methods]
        if FULL_FINETUNING in names and len(names) > 1:
            raise ValueError(f"method {FULL_FINETUNING!r} cannot be combined with {names}")
        if (self.dev_file or self.test_file) and not self.train_file:
            raise ValueError("dev_file/test_file need a train_file as well")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (what ``run_config.json`` stores)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @property
    def is_full_finetuning(self) -> bool:
        return [m.name for m in self.methods] == [FULL_FINETUNING]


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}; got {value!r}")
