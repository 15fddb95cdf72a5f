"""Matrix files in, result files out, for the commands: every problem is a ``CLIError``
naming the file.

Reading never unpickles (``allow_pickle=False``); a file numpy cannot read
(empty, truncated, a corrupted header, a missing member, Python objects)
is reported in plain words, without numpy's advice to allow pickles. Output
paths are checked before any work: none may be an input or another output,
a folder, or in a folder that cannot be written.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from graphopt.cli import CLIError

SPARSE_MEMBERS = {
    "csr": ("data", "indices", "indptr", "shape"),
    "csc": ("data", "indices", "indptr", "shape"),
    "bsr": ("data", "indices", "indptr", "shape"),
    "coo": ("row", "col", "data", "shape"),
    "dia": ("data", "offsets", "shape"),
}
"""Members of a ``scipy.sparse.save_npz`` archive besides ``format``, by format."""

PICKLE_HINT = "holds Python objects (pickled data), which graphopt never loads"


def input_file(path: str | Path) -> Path:
    """``path`` as an existing regular file, or ``CLIError``."""
    path = Path(path)
    if not path.exists():
        raise CLIError(f"{path}: no such file")
    if path.is_dir():
        raise CLIError(f"{path}: is a folder, not a file")
    if not os.access(path, os.R_OK):
        raise CLIError(f"{path}: permission denied (cannot read)")
    if path.stat().st_size == 0:
        raise CLIError(f"{path}: is empty (0 bytes)")
    return path


def read_npy(path: Path) -> np.ndarray:
    """A dense array from a ``.npy`` file whose header matches its size."""
    _check_npy_header(path)
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as err:  # numpy's parser fails in many ways on a damaged file
        raise CLIError(f"{path}: not a valid .npy file ({_reason(err)})") from None
    if not isinstance(array, np.ndarray):  # np.load gave an archive: the suffix lies
        raise CLIError(f"{path}: is an .npz archive, not an .npy array")
    return array


def _check_npy_header(path: Path) -> None:
    """Read the header alone: no pickles, and as many data bytes as it promises."""
    from numpy.lib import format as npy

    with path.open("rb") as handle:
        try:
            version = npy.read_magic(handle)
            read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            shape, _, dtype = read(handle, max_header_size=10_000)
        except Exception as err:  # a corrupted header: bad magic, bad dict, bad dtype
            raise CLIError(f"{path}: not a valid .npy file ({_reason(err)})") from None
        start = handle.tell()
    if dtype.hasobject:
        raise CLIError(f"{path}: {PICKLE_HINT}")
    promised = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    present = path.stat().st_size - start
    if promised > present:
        raise CLIError(
            f"{path}: truncated: its header promises {promised} bytes of data "
            f"({dtype}, shape {shape}), the file holds {present}"
        )


def _reason(err: BaseException | str) -> str:
    """numpy's error text without advice meant for Python callers (allow_pickle, usecols)."""
    text = str(err) or type(err).__name__
    for advice in ("; use `usecols`", " Use `allow_pickle", "allow_pickle=True"):
        text = text.split(advice)[0]
    return text.rstrip(" .;")


def read_npz(path: Path) -> Any:
    """A scipy sparse matrix (``save_npz``) or the single array of an ``.npz`` archive."""
    import scipy.sparse as sp

    try:
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise CLIError(f"{path}: is an .npy array, not an .npz archive")
            names = list(archive.files)
            if "format" in names:
                return _sparse(path, archive, sp)
            if len(names) != 1:
                raise CLIError(
                    f"{path}: must be a scipy sparse .npz or hold exactly one array; "
                    f"found {names or 'no arrays'}"
                )
            return archive[names[0]]
    except CLIError:
        raise
    except ValueError as err:
        reason = PICKLE_HINT if "allow_pickle" in str(err) else f"not a valid .npz file ({err})"
        raise CLIError(f"{path}: {_reason(reason)}") from None
    except Exception as err:  # zipfile and numpy fail in many ways on a damaged archive
        raise CLIError(f"{path}: not a valid .npz file ({_reason(err)})") from None


def _sparse(path: Path, archive: Any, sp: Any) -> Any:
    """The scipy sparse matrix of a ``save_npz`` archive, checked member by member."""
    kind = archive["format"]
    kind = kind.item().decode() if isinstance(kind.item(), bytes) else str(kind.item())
    if kind not in SPARSE_MEMBERS:
        raise CLIError(f"{path}: unknown sparse format {kind!r}")
    missing = [m for m in SPARSE_MEMBERS[kind] if m not in archive.files]
    if missing:
        raise CLIError(f"{path}: a scipy sparse {kind} archive missing {', '.join(missing)}")
    try:
        return sp.load_npz(path)
    except (ValueError, TypeError, IndexError) as err:  # inconsistent members
        raise CLIError(f"{path}: not a valid scipy sparse {kind} archive ({err})") from None


def read_csv(path: Path) -> np.ndarray:
    """The numbers of a comma-separated file; a first row that is not numeric is a header."""
    try:
        with path.open(encoding="utf-8") as handle:
            first = handle.readline()
        try:
            [float(v) for v in first.strip().split(",")]
            skip = 0
        except ValueError:
            skip = 1
        with warnings.catch_warnings():  # "input contained no data": reported below
            warnings.simplefilter("ignore", UserWarning)
            array = np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2)
    except UnicodeDecodeError:
        raise CLIError(f"{path}: is not UTF-8 text (a binary file named .csv?)") from None
    except ValueError as err:
        raise CLIError(f"{path}: {_reason(err)}") from None
    if array.size == 0:
        raise CLIError(f"{path}: holds no numbers")
    return array


def read_matrix(path: str | Path, suffixes: tuple[str, ...]) -> Any:
    """The matrix in ``path`` (one of ``suffixes``: .npy, .npz, .csv), or ``CLIError``."""
    path = input_file(path)
    if path.suffix not in suffixes:
        raise CLIError(f"{path}: must be a {' or '.join(suffixes)} file; got {path.suffix!r}")
    reader = {".npy": read_npy, ".npz": read_npz, ".csv": read_csv}[path.suffix]
    return reader(path)


def check_outputs(inputs: Mapping[str, Path], outputs: Mapping[str, Path]) -> None:
    """Refuse output paths that are an input, another output, a folder, or unwritable.

    ``inputs``/``outputs`` map a label (the option, e.g. ``"-o"``) to a path.
    Paths are compared after resolving links, so ``./a.npy`` and ``a.npy``
    collide.
    """
    taken: dict[Path, str] = {}
    for label, path in inputs.items():
        taken[Path(path).resolve()] = f"the input {label}"
    for label, path in outputs.items():
        path = Path(path)
        resolved = path.resolve()
        if resolved in taken:
            raise CLIError(f"{label} {path}: is also {taken[resolved]}; choose another output path")
        taken[resolved] = label
        if path.is_dir():
            raise CLIError(f"{label} {path}: is a folder; give a file name")
        folder = _existing_ancestor(resolved.parent)
        if not folder.is_dir():
            raise CLIError(f"{label} {path}: {folder} is a file, not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise CLIError(f"{label} {path}: cannot write in {folder} (permission denied)")


def _existing_ancestor(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder
