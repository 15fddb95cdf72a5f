"""The job under bad luck: kill -9 and Ctrl-C, damaged checkpoints, divergence, two writers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_finetune import adapter_tensors, cli_args, tiny_config

from graphopt.finetune import rundir
from graphopt.finetune.run import finetune
from graphopt.integrations.transformers import CHECKPOINT_MARKER


def run_cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "graphopt.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def intact_steps(output: Path) -> list[int]:
    folder = rundir.checkpoints_dir(output)
    return sorted(
        int(p.name.split("-")[1])
        for p in folder.glob("checkpoint-*")
        if (p / CHECKPOINT_MARKER).is_file()
    )


def wait_for_checkpoint(output: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not intact_steps(output):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)


def metric_steps(output: Path) -> list[int]:
    lines = (output / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["step"] for x in lines if "loss" in json.loads(x)]


@pytest.mark.parametrize("kill_signal", [signal.SIGKILL, signal.SIGINT])
def test_killed_and_resumed_run_ends_with_the_uninterrupted_weights(
    tmp_path, tiny_bert_dir, topic_csv, kill_signal
):
    steps = 60
    reference = tiny_config(tiny_bert_dir, topic_csv, tmp_path / "ref", max_steps=steps)
    interrupted = tiny_config(tiny_bert_dir, topic_csv, tmp_path / "cut", max_steps=steps)
    finished = run_cli(cli_args(reference))
    assert finished.wait() == 0, finished.communicate()

    process = run_cli(cli_args(interrupted))
    output = Path(interrupted.output_dir)
    wait_for_checkpoint(output, process)
    process.send_signal(kill_signal)
    code = process.wait()
    _, stderr = process.communicate()
    assert not (output / "results.json").exists(), "the run finished before it was killed"
    if kill_signal == signal.SIGINT:  # Ctrl-C: a checkpoint of the current step, then exit 130
        assert code == 130 and "continue with --resume" in stderr
    assert 0 < max(intact_steps(output)) < steps

    resumed = run_cli([*cli_args(interrupted), "--resume"])  # the stale lock is no obstacle
    assert resumed.wait() == 0, resumed.communicate()
    got, want = adapter_tensors(output), adapter_tensors(Path(reference.output_dir))
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name
    assert metric_steps(output) == list(range(1, steps + 1))  # no step logged twice


def test_resume_after_the_pca_ggm_allocation_reproduces_the_uninterrupted_run(
    tmp_path, tiny_bert_dir, topic_csv
):
    """Resuming from a checkpoint made after pca_ggm's allocation continues exactly:
    same selection, same weights."""
    methods = ["pca_ggm:r=3,warmup_steps=3,n_important=4,top_k=10"]
    config = tiny_config(
        tiny_bert_dir, topic_csv, tmp_path / "run", max_steps=8, methods=methods, plot=True
    )
    finetune(config, progress=False)
    output = Path(config.output_dir)
    assert (output / "plots" / "pca_ggm_allocation.png").read_bytes()[:4] == b"\x89PNG"
    want = adapter_tensors(output)
    # Roll the run back to its step-6 checkpoint (the allocation happened at step 3).
    shutil.rmtree(output / "checkpoints" / "checkpoint-8")
    shutil.rmtree(output / "adapter")
    (output / "results.json").unlink()
    finetune(config, resume=True, progress=False)
    got = adapter_tensors(output)
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name


def damage(folder: Path, how: str) -> None:
    """One kind of damage to a checkpoint folder."""
    if how == "truncated_adapter":
        weights = folder / "adapter_model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
    elif how == "truncated_optimizer":
        state = folder / "optimizer.pt"
        state.write_bytes(state.read_bytes()[:50])
    elif how == "nan_adapter":
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(folder / "adapter_model.safetensors"))
        name = next(n for n in tensors if "lora_A" in n)
        tensors[name][0, 0] = float("nan")
        save_file(tensors, str(folder / "adapter_model.safetensors"))
    elif how in ("huge_step", "negative_step"):
        path = folder / "trainer_state.json"
        state = json.loads(path.read_text())
        state["global_step"] = 1_000_000_000 if how == "huge_step" else -3
        path.write_text(json.dumps(state))
    elif how == "no_marker":  # killed in the middle of writing it
        (folder / CHECKPOINT_MARKER).unlink()


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("truncated_adapter", "adapter_model.safetensors cannot be read"),
        ("truncated_optimizer", "optimizer.pt cannot be read"),
        ("nan_adapter", "non-finite values"),
        ("huge_step", "does not hold the step"),
        ("negative_step", "does not hold the step"),
        ("no_marker", "was not finished"),
    ],
)
def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_intact_one(
    tmp_path, tiny_bert_dir, topic_csv, how, reason
):
    reference = tiny_config(tiny_bert_dir, topic_csv, tmp_path / "ref", max_steps=6)
    finetune(reference, progress=False)
    config = tiny_config(tiny_bert_dir, topic_csv, tmp_path / "run", max_steps=6)
    finetune(config, progress=False)
    output = Path(config.output_dir)
    for item in ("adapter", "results.json"):  # as if killed just after checkpoint 6
        shutil.rmtree(output / item) if item == "adapter" else (output / item).unlink()
    damage(output / "checkpoints" / "checkpoint-6", how)
    with pytest.warns(UserWarning, match=f"skipping damaged checkpoint .*checkpoint-6: .*{reason}"):
        finetune(config, resume=True, progress=False)
    got, want = adapter_tensors(output), adapter_tensors(Path(reference.output_dir))
    for name in want:  # resumed from checkpoint-4: the same run in the end
        assert torch.equal(got[name], want[name]), name


def test_a_checkpoint_folder_linking_outside_the_run_is_never_resumed(
    tmp_path, tiny_bert_dir, topic_csv
):
    other = tiny_config(tiny_bert_dir, topic_csv, tmp_path / "other", max_steps=6)
    finetune(other, progress=False)
    config = tiny_config(
        tiny_bert_dir, topic_csv, tmp_path / "run", max_steps=6, checkpoint_every=100
    )
    finetune(config, progress=False)  # its only checkpoint: the last step's
    output = Path(config.output_dir)
    shutil.rmtree(output / "checkpoints" / "checkpoint-6")
    (output / "checkpoints" / "checkpoint-99").symlink_to(
        tmp_path / "other" / "checkpoints" / "checkpoint-6"
    )
    with pytest.raises(ValueError, match="holds no intact checkpoint to resume; use --overwrite"):
        finetune(config, resume=True, progress=False)


def test_a_diverged_run_stops_with_an_error_keeps_its_checkpoints_and_valid_json(
    tmp_path, tiny_bert_dir, topic_csv
):
    config = tiny_config(tiny_bert_dir, topic_csv, tmp_path / "run", max_steps=30, lr=1e30)
    process = run_cli(cli_args(config))
    code = process.wait()
    _, stderr = process.communicate()
    output = Path(config.output_dir)
    assert code == 3 and "training diverged at step" in stderr, stderr[-2000:]
    assert not (output / "adapter").exists() and not (output / "results.json").exists()
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in r["nonfinite"] for r in records if "nonfinite" in r)
    assert "NaN" not in (output / "metrics.jsonl").read_text()
    for step in intact_steps(output):  # every checkpoint it kept is finite
        weights = (
            rundir.checkpoints_dir(output) / f"checkpoint-{step}" / "adapter_model.safetensors"
        )
        from safetensors.torch import load_file

        assert all(torch.isfinite(t).all() for t in load_file(str(weights)).values())


def test_a_second_run_on_a_locked_folder_is_refused(tmp_path, tiny_bert_dir, topic_csv):
    config = tiny_config(tiny_bert_dir, topic_csv, tmp_path / "run", max_steps=2)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from graphopt.finetune.rundir import run_lock\n"
         f"with run_lock({str(tmp_path / 'run')!r}):\n"
         "    print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(
            rundir.RunLocked, match=rf"in use by a running graphopt job \(PID {holder.pid}\)"
        ):
            finetune(config, progress=False)
    finally:
        holder.kill()
        holder.wait()
    finetune(config, progress=False)  # the holder died: the kernel released its lock


def test_a_run_killed_before_its_first_checkpoint_is_refused_on_rerun(
    tmp_path, tiny_bert_dir, topic_csv
):
    config = tiny_config(tiny_bert_dir, topic_csv, tmp_path / "run", max_steps=2)
    output = Path(config.output_dir)
    output.mkdir()
    (output / "run_config.json").write_text(
        json.dumps({**config.to_dict(), "task": "classification"})
    )
    (output / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    with pytest.raises(ValueError, match="already holds a run"):
        finetune(config, progress=False)
    with pytest.raises(ValueError, match="no intact checkpoint to resume; use --overwrite"):
        finetune(config, resume=True, progress=False)
    finetune(config, overwrite=True, progress=False)


def test_leftovers_of_interrupted_writes_are_removed_at_the_next_start(
    tmp_path, tiny_bert_dir, topic_csv
):
    config = tiny_config(tiny_bert_dir, topic_csv, tmp_path / "run", max_steps=4)
    finetune(config, progress=False)
    output = Path(config.output_dir)
    leftovers = [output / ".results.json.x1.tmp", output / "checkpoints" / ".adapter.x2.tmp"]
    leftovers[0].write_text("half")
    leftovers[1].mkdir()
    shutil.rmtree(output / "adapter")
    (output / "results.json").unlink()
    finetune(config, resume=True, progress=False)
    assert not any(p.exists() for p in leftovers)
