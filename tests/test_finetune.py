"""The main job, ``graphopt finetune``, on a tiny local model and data."""

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
from conftest import write_tiny_bert
from safetensors.torch import load_file

import graphopt
from graphopt.cli import main
from graphopt.finetune.config import FinetuneConfig, MethodSpec
from graphopt.finetune.run import evaluate_saved, finetune


def tiny_config(model_dir: Path, data: Path, output: Path, **overrides) -> FinetuneConfig:
    values = {
        "model": str(model_dir),
        "train_file": str(data),
        "methods": ["lora:r=2"],
        "max_steps": 6,
        "batch_size": 4,
        "eval_batch_size": 8,
        "max_length": 16,
        "lr": 1e-2,
        "checkpoint_every": 2,
        "output_dir": str(output),
        "device": "cpu",
    }
    values.update(overrides)
    return FinetuneConfig.build(values)


def cli_args(config: FinetuneConfig, method: str = "lora:r=2") -> list[str]:
    return [
        "finetune",
        "--model", config.model,
        "--train-file", config.train_file,
        "--method", method,
        "--max-steps", str(config.max_steps),
        "--batch-size", str(config.batch_size),
        "--max-length", str(config.max_length),
        "--lr", str(config.lr),
        "--checkpoint-every", str(config.checkpoint_every),
        "--output-dir", config.output_dir,
        "--device", "cpu",
        "--no-progress",
    ]  # fmt: skip


def adapter_tensors(output: Path) -> dict:
    return load_file(str(output / "adapter" / "adapter_model.safetensors"))


def test_method_spec_parses_names_options_and_mappings():
    assert MethodSpec.parse("linchain:r=4,n=2,bias=false") == MethodSpec(
        "linchain", {"r": 4, "n": 2, "bias": False}
    )
    assert MethodSpec.parse({"name": "Spectral", "k": 8}) == MethodSpec("spectral", {"k": 8})
    with pytest.raises(ValueError, match="must look like key=value"):
        MethodSpec.parse("lora:r")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lr": -1.0}, "lr must be > 0"),
        ({"device": "tpu"}, "device must be one of"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"nonsense": 1}, r"unknown config option\(s\) \['nonsense'\]"),
        ({"methods": ["full", "lora"]}, "cannot be combined"),
        ({"dev_file": "x.csv"}, "need a train_file"),
    ],
)
def test_bad_config_values_are_named(values, message):
    with pytest.raises(ValueError, match=message):
        FinetuneConfig.build(values)


def test_config_file_is_read_and_flags_win(tmp_path, tiny_bert_dir, topic_csv, capsys):
    config_file = tmp_path / "run.toml"
    config_file.write_text('max_steps = 1000\nmethod = "lora:r=2"\nbatch_size = 4\n')
    output = tmp_path / "out"
    code = main(
        ["finetune", "--config", str(config_file), "--model", str(tiny_bert_dir),
         "--train-file", str(topic_csv), "--max-steps", "2", "--max-length", "16",
         "--output-dir", str(output), "--device", "cpu", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    saved = json.loads((output / "run_config.json").read_text())
    assert saved["max_steps"] == 2 and saved["batch_size"] == 4
    assert "test accuracy" in capsys.readouterr().out


def test_training_writes_metrics_checkpoints_adapter_and_results(
    tmp_path, tiny_bert_dir, topic_csv
):
    methods = ["lora:r=2", "spectral:k=2"]  # spectral acts on lora_B, and plots its spectrum
    config = tiny_config(
        tiny_bert_dir, topic_csv, tmp_path / "run", max_steps=12, plot=True, methods=methods
    )
    results = finetune(config, progress=False)
    output = Path(config.output_dir)
    steps = [json.loads(x) for x in (output / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps if "loss" in s] == list(range(1, 13))
    assert sorted(p.name for p in (output / "checkpoints").glob("step-*")) == [
        "step-000010",
        "step-000012",
    ]
    assert json.loads((output / "results.json").read_text()) == results
    assert 0.0 <= results["test"]["accuracy"] <= 1.0
    assert results["trainable_parameters"] < results["total_parameters"]
    for plot in ("loss.png", "spectral_spectrum.png"):
        assert (output / "plots" / plot).read_bytes()[:4] == b"\x89PNG"
    # Scoring the saved adapter again reproduces the reported test metrics.
    assert evaluate_saved(output, device="cpu") == pytest.approx(results["test"])


def test_output_dir_with_another_run_is_refused_and_left_untouched(
    tmp_path, tiny_bert_dir, topic_csv
):
    config = tiny_config(tiny_bert_dir, topic_csv, tmp_path / "run", max_steps=2)
    finetune(config, progress=False)
    before = {p: p.read_bytes() for p in Path(config.output_dir).rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="already holds a run; pass --resume"):
        finetune(config, progress=False)
    after = {p: p.read_bytes() for p in Path(config.output_dir).rglob("*") if p.is_file()}
    assert after == before
    finetune(config, overwrite=True, progress=False)  # explicit replacement works


def test_resume_with_a_different_config_is_refused(tmp_path, tiny_bert_dir, topic_csv):
    config = tiny_config(tiny_bert_dir, topic_csv, tmp_path / "run", max_steps=2)
    finetune(config, progress=False)
    changed = tiny_config(tiny_bert_dir, topic_csv, tmp_path / "run", max_steps=2, lr=0.5)
    with pytest.raises(ValueError, match=r"different \['lr'\]"):
        finetune(changed, resume=True, progress=False)


def test_model_path_that_is_not_a_transformers_model(tmp_path, topic_csv):
    config = tiny_config(tmp_path, topic_csv, tmp_path / "run")
    with pytest.raises(ValueError, match=r"is not a transformers model: it has no config\.json"):
        finetune(config, progress=False)


def test_method_that_does_not_fit_the_model(tmp_path, tiny_bert_dir, topic_csv):
    config = tiny_config(
        tiny_bert_dir, topic_csv, tmp_path / "run", target_modules="no_such_module"
    )
    with pytest.raises(ValueError, match="target_modules"):
        finetune(config, progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def run_cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "graphopt.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_checkpoint(output: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    pointer = output / "checkpoints" / "latest.json"
    deadline = time.monotonic() + timeout
    while not pointer.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)


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
    wait_for_checkpoint(Path(interrupted.output_dir), process)
    process.send_signal(kill_signal)
    code = process.wait()
    _, stderr = process.communicate()
    output = Path(interrupted.output_dir)
    assert not (output / "results.json").exists(), "the run finished before it was killed"
    if kill_signal == signal.SIGINT:  # Ctrl-C: a checkpoint of the current step, then exit 130
        assert code == 130 and "continue with --resume" in stderr
    step = json.loads((output / "checkpoints" / "latest.json").read_text())["step"]
    assert 0 < step < steps

    resumed = run_cli([*cli_args(interrupted), "--resume"])
    assert resumed.wait() == 0, resumed.communicate()
    got, want = adapter_tensors(output), adapter_tensors(Path(reference.output_dir))
    assert got.keys() == want.keys()
    for name in want:
        assert (got[name] == want[name]).all(), name


def test_resume_after_the_pca_ggm_allocation_reproduces_the_uninterrupted_run(
    tmp_path, tiny_bert_dir, topic_csv
):
    """Resuming from a checkpoint made after pca_ggm shrank its factors continues
    exactly: same selection, same weights."""
    methods = ["pca_ggm:r=3,warmup_steps=3,n_important=4,top_k=10"]
    config = tiny_config(
        tiny_bert_dir, topic_csv, tmp_path / "run", max_steps=8, methods=methods, plot=True
    )
    finetune(config, progress=False)
    output = Path(config.output_dir)
    assert (output / "plots" / "pca_ggm_allocation.png").read_bytes()[:4] == b"\x89PNG"
    want = adapter_tensors(output)
    # Roll the run back to its step-6 checkpoint (the allocation happened at step 3).
    pointer = output / "checkpoints" / "latest.json"
    pointer.write_text(json.dumps({"checkpoint": "step-000006"}))
    shutil.rmtree(output / "checkpoints" / "step-000008")
    shutil.rmtree(output / "adapter")
    (output / "results.json").unlink()
    finetune(config, resume=True, progress=False)
    got = adapter_tensors(output)
    assert got.keys() == want.keys()
    for name in want:
        assert (got[name] == want[name]).all(), name


def test_torchrun_two_processes_match_one_process_on_the_same_global_batch(tmp_path, topic_csv):
    model_dir = write_tiny_bert(tmp_path / "bert", dropout=0.0)
    one = tiny_config(model_dir, topic_csv, tmp_path / "one", max_steps=4, batch_size=4)
    two = tiny_config(model_dir, topic_csv, tmp_path / "two", max_steps=4, batch_size=2)
    method = "lora:r=2,dropout=0"
    single = run_cli(cli_args(one, method))
    assert single.wait() == 0, single.communicate()
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    command = [*launcher, "--standalone", "-m", "graphopt.cli", *cli_args(two, method)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got, want = adapter_tensors(Path(two.output_dir)), adapter_tensors(Path(one.output_dir))
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6)


def test_saved_merged_model_is_a_plain_transformers_model_with_the_adapted_outputs(
    tmp_path, tiny_bert_dir, topic_csv
):
    from transformers import AutoModelForSequenceClassification

    from graphopt.finetune.batches import encode
    from graphopt.finetune.model import load_classifier
    from graphopt.finetune.run import apply_methods, load_splits

    config = tiny_config(
        tiny_bert_dir, topic_csv, tmp_path / "run", max_steps=4, save_merged=True,
        methods=["linchain:r=2,dropout=0"],
    )  # fmt: skip
    finetune(config, progress=False)
    output = Path(config.output_dir)
    merged = AutoModelForSequenceClassification.from_pretrained(output / "merged").eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    adapted, tokenizer = load_classifier(config.model, 3)
    apply_methods(adapted, config)
    graphopt.load_adapter(adapted, output / "adapter")
    batch = encode(tokenizer, load_splits(config).test, config.max_length).batch(
        list(range(4)), torch.device("cpu")
    )
    with torch.no_grad():
        torch.testing.assert_close(
            merged(**batch).logits, adapted.eval()(**batch).logits, rtol=1e-5, atol=1e-5
        )
