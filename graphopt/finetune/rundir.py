"""The run folder of ``graphopt finetune``: one writer at a time, never another run's
outputs overwritten by accident, and a resume that trusts nothing it reads.

Layout of ``OUTPUT/``: ``run_config.json``, ``metrics.jsonl``, ``checkpoints/
checkpoint-N/`` (the Trainer's, adapter-only; see
``graphopt.integrations.transformers``), ``adapter/`` (the final adapter, or
``model.safetensors`` for full fine-tuning), ``results.json``, and on request
``merged/`` and ``plots/``. ``.lock`` holds the PID of the process writing.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LOCK_FILE = ".lock"
OUTPUTS = (
    "run_config.json",
    "metrics.jsonl",
    "results.json",
    "model.safetensors",
    "checkpoints",
    "adapter",
    "merged",
    "plots",
)
"""What a run writes into its folder: any of them present means a run was there."""
RESUME_NEUTRAL = {
    "plot",
    "save_merged",
    "checkpoint_every",
    "log_every",
    "eval_every",
    "device",
    "output_dir",
    "threads",
    "report_to",
    "eval_batch_size",
}
"""Options that may differ between a run and its resumption."""


class RunLocked(RuntimeError):
    """Another process is writing to this run folder."""


def checkpoints_dir(output: str | Path) -> Path:
    return Path(output) / "checkpoints"


def previous_outputs(output: str | Path) -> list[str]:
    """The run outputs already in ``output`` (empty for a new or empty folder)."""
    folder = Path(output)
    return [name for name in OUTPUTS if (folder / name).exists()]


def check_output_dir(output: str | Path, resume: bool, overwrite: bool) -> None:
    """Refuse (before any work) a folder holding another run, unless told what to do."""
    folder = Path(output)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"output_dir {str(folder)!r} is a file, not a folder")
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    found = previous_outputs(folder)
    if found and not (resume or overwrite):
        raise ValueError(
            f"output_dir {str(folder)!r} already holds a run ({', '.join(found)}); pass --resume "
            "to continue it or --overwrite to replace it"
        )
    if resume and not found:
        raise ValueError(f"output_dir {str(folder)!r} holds no run to resume")


@contextmanager
def run_lock(output: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``OUTPUT/.lock`` for the block; a second process is
    refused at once naming the holder. The kernel drops the lock when its holder dies
    (even by kill -9), so a stale lock file never blocks a rerun."""
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held for the block)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunLocked(
                f"output_dir {str(folder)!r} is in use by a running graphopt job (PID {holder}); "
                "wait for it or choose another --output-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()


def clear_outputs(output: str | Path) -> None:
    """Delete every output of a previous run (``--overwrite``; under the lock)."""
    folder = Path(output)
    for name in OUTPUTS:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def remove_leftovers(output: str | Path) -> list[Path]:
    """Temporary files and folders an interrupted atomic write left (``.<name>.*.tmp``,
    ``.<name>.old``) in the run folder and its checkpoints folder; returns them."""
    removed = []
    for folder in (Path(output), checkpoints_dir(output)):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.name.startswith(".") and path.name.endswith((".tmp", ".old")):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def check_resumable(output: str | Path, current: dict[str, Any]) -> None:
    """Refuse to resume a run whose saved config differs in anything that matters."""
    path = Path(output) / "run_config.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot resume: {path} is missing or not valid JSON ({err})") from None
    if not isinstance(saved, dict):
        raise ValueError(f"cannot resume: {path} does not hold a run config")
    changed = sorted(k for k in current if k not in RESUME_NEUTRAL and saved.get(k) != current[k])
    if changed:
        raise ValueError(
            f"cannot resume {Path(output)}: its run was made with different {changed}; "
            "use the same config or --overwrite"
        )
