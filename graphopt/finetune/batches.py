"""Tokenised datasets and a resumable batch order.

The order of training examples is a pure function of (seed, epoch), so a run
resumed at step s sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from graphopt.data import TextDataset


@dataclass(frozen=True)
class Encoded:
    """Token ids of every text (unpadded) and the labels."""

    input_ids: list[list[int]]
    labels: torch.Tensor
    pad_id: int

    def __len__(self) -> int:
        return len(self.input_ids)

    def batch(self, indices: list[int], device: torch.device) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids``/``attention_mask``/``labels`` for ``indices``."""
        rows = [self.input_ids[i] for i in indices]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        return {
            "input_ids": ids.to(device),
            "attention_mask": mask.to(device),
            "labels": self.labels[indices].to(device),
        }


def encode(tokenizer, data: TextDataset, max_length: int) -> Encoded:
    """Tokenise every text once, truncated to ``max_length`` tokens."""
    ids = tokenizer(list(data.texts), truncation=True, max_length=max_length)["input_ids"]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Encoded(ids, torch.tensor(data.labels, dtype=torch.long), pad)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The permutation of ``range(n)`` used in ``epoch`` (same on every rank)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


def batch_indices(
    n: int, batch_size: int, seed: int, step: int, rank: int = 0, world_size: int = 1
) -> tuple[int, list[int]]:
    """(epoch, this rank's example indices) of global ``step`` (0-based).

    A global batch holds ``batch_size * world_size`` examples; each epoch drops
    its last incomplete global batch so every step has the same size.
    """
    global_batch = batch_size * world_size
    steps_per_epoch = max(n // global_batch, 1)
    epoch, offset = divmod(step, steps_per_epoch)
    order = epoch_order(n, seed, epoch)
    start = offset * global_batch + rank * batch_size
    chosen = [order[i % n] for i in range(start, start + batch_size)]
    return epoch, chosen


def steps_per_epoch(n: int, batch_size: int, world_size: int = 1) -> int:
    """Optimizer steps in one pass over ``n`` examples."""
    return max(n // (batch_size * world_size), 1)
