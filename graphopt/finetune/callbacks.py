"""The job's ``TrainerCallback`` objects: what ``graphopt finetune`` adds to a Trainer.

- ``MetricsLog``: ``metrics.jsonl``, one JSON object per logged step and per
  evaluation; non-finite numbers become ``null`` and are listed under
  ``"nonfinite"`` (the file stays valid JSON); on resume the lines past the
  checkpoint's step are dropped, so no step is logged twice.
- ``DivergenceGuard``: a non-finite training loss or gradient norm stops the run
  (``TrainingDiverged`` naming the step) before anything is saved at that step.
- ``StopOnSignal``: the first SIGINT/SIGTERM asks the Trainer to save a checkpoint
  at the end of the current step and stop; a second one stops at once.
- ``StepTimer``: wall time of every optimizer step (for results.json).
- ``QuietProgress``: the Trainer's progress bars, with the latest loss in the
  bar instead of a printed line per logged step.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any

from transformers import ProgressCallback, TrainerCallback

from graphopt.integrations.transformers import TrainingDiverged
from graphopt.io import atomic_write_text


def json_record(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with every non-finite float replaced by None, listed under "nonfinite"."""
    record: dict[str, Any] = {}
    bad = []
    for key, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            record[key] = None
            bad.append(key)
        elif isinstance(value, dict):
            record[key] = json_record(value)
            bad += [f"{key}.{k}" for k in record[key].pop("nonfinite", [])]
        else:
            record[key] = value
    if bad:
        record["nonfinite"] = bad
    return record


TIMINGS = ("runtime", "per_second", "model_preparation_time")
"""Suffixes of the Trainer's evaluation timings (not scores)."""


class MetricsLog(TrainerCallback):
    """Appends the Trainer's logs to ``path`` as JSON lines (main process only): training
    steps as ``{"step", "epoch", "loss", "grad_norm", "lr"}``, evaluations as
    ``{"step", "split", "eval": {...}}``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not self.path.exists():
            return
        kept = [
            line
            for line in self.path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= state.global_step
        ]  # a resumed run logs the steps past its checkpoint again: keep them once
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        values = {k: v for k, v in logs.items() if not k.startswith(("train_", "total_flos"))}
        if not set(values) - {"epoch"}:  # the end-of-training summary: runtimes only
            return
        split = next((k[: -len("_runtime")] for k in values if k.endswith("_runtime")), None)
        if split is not None:  # an evaluation: Trainer.evaluate(metric_key_prefix=split)
            prefix = f"{split}_"
            scores = {
                k[len(prefix) :]: v
                for k, v in values.items()
                if k.startswith(prefix) and not k.endswith(TIMINGS)
            }
            name = "dev" if split == "eval" else split  # eval_every evaluates the dev split
            record = {"step": state.global_step, "split": name, "eval": scores}
        else:
            record = {"step": state.global_step, "epoch": state.epoch, **values}
            record["lr"] = record.pop("learning_rate", None)
        self.write(record)

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as log:
            log.write(json.dumps(json_record(record), allow_nan=False) + "\n")


class DivergenceGuard(TrainerCallback):
    """Stops a run whose logged loss or gradient norm is not finite."""

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any
    ) -> None:
        for key in ("loss", "grad_norm"):
            value = (logs or {}).get(key)
            if isinstance(value, float) and not math.isfinite(value):
                raise TrainingDiverged(
                    f"training diverged at step {state.global_step}: {key} is {value}; the last "
                    "good checkpoint is kept, no adapter was written (try a lower --lr)"
                )


class StopOnSignal(TrainerCallback):
    """The first SIGINT/SIGTERM: checkpoint at the end of this step, then stop."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signal.Signals(signum).name
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))  # a second one: at once

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.received is not None:
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


class StepTimer(TrainerCallback):
    """Seconds of every optimizer step this process ran."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._began = 0.0

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._began = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.seconds.append(time.perf_counter() - self._began)


class QuietProgress(ProgressCallback):
    """The Trainer's progress bars; logs go to the training bar's postfix."""

    SHOWN = ("loss", "eval_loss", "eval_accuracy")

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any
    ) -> None:
        if state.is_world_process_zero and self.training_bar is not None and logs:
            shown = {
                k: f"{v:.4g}" for k, v in logs.items() if k in self.SHOWN and isinstance(v, float)
            }
            self.training_bar.set_postfix(shown, refresh=False)
