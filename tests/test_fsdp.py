"""FSDP2 (``fully_shard``) with GraphOptimizer on 2 gloo CPU processes, and the refusals.

accelerate runs FSDP only on GPU processes, so the Trainer path (``graphopt
finetune --fsdp``) is exercised by benchmarks/gpu_finetune.sh; here torch's own
``fully_shard`` shards a tiny BERT on the CPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from gloo_workers import in_gloo_group
from test_integration_transformers import classifier

from graphopt.integrations.transformers import check_engine
from graphopt.optim import GraphOptimizer

STEPS = 3


def _train(model: torch.nn.Module, rank: int, world: int) -> None:
    optimizer = GraphOptimizer.for_model(model, lr=1e-2)
    ids = torch.randint(5, 64, (8, 10), generator=torch.Generator().manual_seed(0))
    labels = ids[:, 0] % 3
    part = slice(rank * 8 // world, (rank + 1) * 8 // world)
    for _ in range(STEPS):
        optimizer.zero_grad()
        model(input_ids=ids[part], labels=labels[part]).loss.backward()
        optimizer.step()


def _job(rank: int, world: int, out: str, method: str) -> None:
    from torch.distributed.fsdp import fully_shard

    model = classifier(method, dropout=0.0)
    for layer in model.bert.encoder.layer:
        fully_shard(layer)
    fully_shard(model)
    try:
        _train(model, rank, world)
    except ValueError as err:
        if rank == 0:
            Path(out).write_text(f"ValueError: {err}")
        return
    state = {n: p.full_tensor() for n, p in model.named_parameters()}
    if rank == 0:
        torch.save(state, out)


def _sharded(tmp_path: Path, method: str) -> Path:
    out = tmp_path / "fsdp.pt"
    store = str(tmp_path / "store")
    mp.spawn(in_gloo_group, args=(2, store, _job, str(out), method), nprocs=2, join=True)
    return out


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
@pytest.mark.parametrize("method", ["lora", "linchain"])
def test_fsdp2_sharded_training_equals_one_process(tmp_path, method):
    state = torch.load(_sharded(tmp_path, method), weights_only=True)
    single = classifier(method, dropout=0.0)
    _train(single, rank=0, world=1)
    for name, value in single.named_parameters():
        torch.testing.assert_close(state[name], value.detach(), rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_a_transform_that_needs_whole_matrices_refuses_sharded_parameters(tmp_path):
    message = _sharded(tmp_path, "spectral").read_text()
    assert "'spectral_filter' needs whole parameters" in message and "FSDP2" in message, message


@pytest.mark.parametrize(
    ("method", "refused"),
    [("lora", False), ("linchain", False), ("spectral", True), ("pca_ggm", True)],
)
def test_fsdp_and_deepspeed_refuse_methods_with_optimizer_parts_by_name(method, refused):
    model = classifier(method)
    for engine in ("FSDP", "DeepSpeed ZeRO"):
        if refused:
            with pytest.raises(ValueError, match=rf"{engine} is not supported .*'{method}'"):
                check_engine(model, engine)
        else:
            check_engine(model, engine)


def test_fsdp_on_the_cpu_is_refused_before_any_work(tmp_path, tiny_bert_dir, topic_csv):
    from test_finetune import tiny_config

    from graphopt.finetune.run import finetune

    config = tiny_config(tiny_bert_dir, topic_csv, tmp_path / "run", fsdp=True)
    with pytest.raises(ValueError, match="--fsdp needs CUDA GPUs"):
        finetune(config, progress=False)
    assert not (tmp_path / "run").exists()
