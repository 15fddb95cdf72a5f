"""GraphOptimizer under DistributedDataParallel: 2 CPU processes (gloo) equal one process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from graphopt.optim import GraphOptimizer

STEPS = 3
GLOBAL_BATCH = 16


class Normalize:
    """Transform g <- g / ||g||: nonlinear in g, so it must see the reduced gradient."""

    name = "normalize"

    def __init__(self, params: list[torch.Tensor]) -> None:
        self.params = params

    def init_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def transform(self, grad, param, state):
        return grad / grad.norm()

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 2))


def _train(model: nn.Module, inner: nn.Module, rank: int, world: int) -> None:
    opt = GraphOptimizer(inner.parameters(), lr=0.05, transforms=[Normalize([inner[0].weight])])
    per_rank = GLOBAL_BATCH // world
    for step in range(STEPS):
        gen = torch.Generator().manual_seed(step)
        x, y = (
            torch.randn(GLOBAL_BATCH, 5, generator=gen),
            torch.randn(GLOBAL_BATCH, 2, generator=gen),
        )
        part = slice(rank * per_rank, (rank + 1) * per_rank)
        opt.zero_grad()
        nn.functional.mse_loss(model(x[part]), y[part]).backward()
        opt.step()


def _worker(rank: int, world: int, store: str, out: str) -> None:
    # a file rendezvous: no TCP port to pick (and possibly lose to another process)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        inner = _model()
        _train(nn.parallel.DistributedDataParallel(inner), inner, rank, world)
        if rank == 0:
            torch.save(inner.state_dict(), out)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_process_ddp_equals_one_process_on_the_same_global_batch(tmp_path: Path) -> None:
    out = tmp_path / "ddp.pt"
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(out)), nprocs=2, join=True)
    ddp_state = torch.load(out, weights_only=True)
    single = _model()
    _train(single, single, rank=0, world=1)
    for name, value in single.state_dict().items():
        torch.testing.assert_close(ddp_state[name], value, rtol=1e-6, atol=1e-7)
