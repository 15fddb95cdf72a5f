"""GraphOptimizer under DistributedDataParallel: 2 CPU processes (gloo) equal one process,
for a gradient transform that must see the reduced gradient and for pca_ggm, whose
allocation masks components in the middle of the run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import tiny_bert
from gloo_workers import in_gloo_group
from torch import nn

import graphopt
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


def _job(rank: int, world: int, out: str) -> None:
    inner = _model()
    _train(nn.parallel.DistributedDataParallel(inner), inner, rank, world)
    if rank == 0:
        torch.save(inner.state_dict(), out)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_process_ddp_equals_one_process_on_the_same_global_batch(tmp_path: Path) -> None:
    out = tmp_path / "ddp.pt"
    mp.spawn(in_gloo_group, args=(2, str(tmp_path / "store"), _job, str(out)), nprocs=2, join=True)
    ddp_state = torch.load(out, weights_only=True)
    single = _model()
    _train(single, single, rank=0, world=1)
    for name, value in single.state_dict().items():
        torch.testing.assert_close(ddp_state[name], value, rtol=1e-6, atol=1e-7)


PCA_SETTINGS = {"r": 4, "warmup_steps": 3, "top_k": 4, "n_important": 4, "train_bias": False}
PCA_STEPS = 6


def _pca_model() -> nn.Module:
    """Tiny BERT without dropout (ranks would draw different masks) under pca_ggm.

    The allocation is a discrete choice: 2 processes reduce gradients in another
    order than one, and a node score within rounding of the cut could flip it. One
    value matrix is scaled up so its 4 components lead the sensitivity scores by a
    wide margin (~70x the rounding difference) and the comparison is meaningful.
    Bias nodes are off: a key bias has an exactly-zero gradient in exact arithmetic
    (softmax is shift-invariant), so Adam turns its rounding noise into full steps.
    """
    model = tiny_bert(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    with torch.no_grad():
        model.encoder.layer[1].attention.self.value.weight.mul_(10.0)
    graphopt.apply(model, "pca_ggm", target_modules=["query", "value"], **PCA_SETTINGS)
    return model


def _pca_train(model: nn.Module, inner: nn.Module, rank: int, world: int) -> None:
    opt = GraphOptimizer.for_model(inner, lr=1e-2, weight_decay=0.1)
    per_rank = GLOBAL_BATCH // world
    for step in range(PCA_STEPS):
        ids = torch.randint(0, 64, (GLOBAL_BATCH, 8), generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        model(input_ids=ids[rank * per_rank : (rank + 1) * per_rank]).last_hidden_state.pow(
            2
        ).mean().backward()
        opt.step()


def _pca_job(rank: int, world: int, out: str) -> None:
    inner = _pca_model()  # the wrapper exists before the allocation changes anything
    _pca_train(nn.parallel.DistributedDataParallel(inner), inner, rank, world)
    torch.save(inner.state_dict(), f"{out}.{rank}")


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_pca_ggm_under_two_process_ddp_equals_one_process(tmp_path: Path) -> None:
    out = tmp_path / "pca.pt"
    store = str(tmp_path / "store")
    mp.spawn(in_gloo_group, args=(2, store, _pca_job, str(out)), nprocs=2, join=True)
    ranks = [torch.load(f"{out}.{rank}", weights_only=True) for rank in range(2)]
    single = _pca_model()
    _pca_train(single, single, rank=0, world=1)
    assert bool(single.encoder.layer[0].attention.self.query.allocated)
    assert single.encoder.layer[1].attention.self.value.component_mask.tolist() == [1, 1, 1, 1]
    for name, value in single.state_dict().items():
        assert torch.equal(ranks[0][name], ranks[1][name]), name  # the processes agree exactly
        torch.testing.assert_close(ranks[0][name], value, rtol=1e-4, atol=1e-6, msg=name)
