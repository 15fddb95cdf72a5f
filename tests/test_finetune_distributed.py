"""The job under ``torchrun`` (DDP from the Trainer, 2 gloo CPU processes) equals one
process on the same global batch, for every method."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_tiny_bert
from test_finetune import adapter_tensors, cli_args, tiny_config

METHODS = {
    "lora": "lora:r=2,dropout=0",
    "linchain": "linchain:r=2,dropout=0",
    # the allocation is a discrete choice: tests/test_optim_ddp.py checks it under DDP;
    # here the masked factors train through DDP before it
    "pca_ggm": "pca_ggm:r=2,warmup_steps=50,n_important=4,top_k=8",
    "spectral": "spectral:k=2",
}


@pytest.mark.parametrize("method", list(METHODS))
def test_torchrun_two_processes_match_one_process_on_the_same_global_batch(
    tmp_path, topic_csv, method
):
    model_dir = write_tiny_bert(tmp_path / "bert", dropout=0.0)
    one = tiny_config(model_dir, topic_csv, tmp_path / "one", max_steps=4, batch_size=4)
    two = tiny_config(model_dir, topic_csv, tmp_path / "two", max_steps=4, batch_size=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, "-m", "graphopt.cli", *cli_args(one, METHODS[method])],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    command = [*launcher, "--standalone", "-m", "graphopt.cli", *cli_args(two, METHODS[method])]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    got, want = adapter_tensors(Path(two.output_dir)), adapter_tensors(Path(one.output_dir))
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6, msg=name)
