"""Run a function in each process of a gloo CPU group, with an orderly teardown.

``torch.multiprocessing.spawn`` calls ``in_gloo_group(rank, world, store, job, *args)``
in every process. The job's objects (a DDP or FSDP2 model holds gloo work and
hooks) are released when it returns, and every process meets at a barrier before
the group is destroyed: a process that tore its group down while the other still
finished its last collective or was saving, or that left gloo objects to the
interpreter's exit, aborted once in a loaded CI run ("terminate called without an
active exception", SIGABRT).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist


def in_gloo_group(rank: int, world: int, store: str, job: Callable[..., None], *args: Any) -> None:
    """Run ``job(rank, world, *args)`` in a gloo group rendezvoused through the file
    ``store`` (no TCP port to pick and possibly lose to another process)."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        job(rank, world, *args)
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()
