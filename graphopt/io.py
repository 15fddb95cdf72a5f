"""Atomic file output: a crash or Ctrl-C never leaves a half-written file.

Each writer puts the bytes in a temporary file in the destination's folder,
flushes them to disk and renames it over the destination (``os.replace`` is
atomic on POSIX and Windows). The temporary file and folder are created with
the permissions a plain ``open()`` / ``mkdir()`` would give (0o666 / 0o777
less the umask; an existing file's own mode when one is replaced), not the
owner-only ones of ``tempfile.mkstemp`` / ``mkdtemp``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
"""Flags creating a file that must not exist yet (mode 0o666 less the umask)."""


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then move the finished file to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _fresh_name(path, lambda name: os.close(os.open(name, _NEW_FILE, 0o666)))
    try:
        if path.is_file():  # as open(path, "w") would: the file keeps its mode
            os.chmod(tmp_path, stat.S_IMODE(path.stat().st_mode))
        write(tmp_path)
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Build a folder under a temporary name; it appears at ``path`` only when
    the ``with`` block finishes without error (an existing folder is replaced)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh_name(path, lambda name: os.mkdir(name, 0o777))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fresh_name(path: Path, create: Callable[[Path], None]) -> Path:
    """``.NAME.<random>.tmp`` beside ``path``, created by ``create`` (which must fail with
    ``FileExistsError`` when the name is taken)."""
    for _ in range(100):
        candidate = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            create(candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free temporary name beside {path}")
