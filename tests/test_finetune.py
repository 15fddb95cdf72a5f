"""The main job, ``graphopt finetune``, on a tiny local model and data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
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
        ({"methods": ["lora", "head"]}, "method 'head' cannot be combined"),
        ({"dev_file": "x.csv"}, "need a train_file"),
        ({"lr": float("inf")}, "lr must be a finite number"),
        ({"lr": float("nan")}, "lr must be a finite number"),
        ({"head_lr": 1e400}, "head_lr must be a finite number"),
        ({"max_grad_norm": -1.0}, "max_grad_norm must be >= 0"),
        ({"bf16": True, "fp16": True}, "exclude each other"),
        ({"task": "translation"}, "task must be one of"),
        ({"task": "causal-lm"}, "needs a train_file"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps must be a positive"),
        ({"report_to": [1]}, "report_to must be a list of names"),
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
    captured = capsys.readouterr()
    printed = captured.out
    assert "Loading weights" not in captured.err and "it/s" not in captured.err  # --no-progress
    assert "test accuracy" in printed
    for name in ("adapter", "checkpoints", "metrics", "results"):  # where everything went
        assert f"{name}:" in printed


def test_training_writes_metrics_checkpoints_adapter_and_results(
    tmp_path, tiny_bert_dir, topic_csv
):
    methods = ["lora:r=2", "spectral:k=2"]  # spectral acts on lora_B, and plots its spectrum
    config = tiny_config(
        tiny_bert_dir, topic_csv, tmp_path / "run", max_steps=12, plot=True, methods=methods,
        eval_every=6,
    )  # fmt: skip
    results = finetune(config, progress=False)
    output = Path(config.output_dir)
    records = [json.loads(x) for x in (output / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 13))
    # eval_every=6 on dev, then the final dev and test evaluations
    assert [(r["step"], r["split"]) for r in records if "eval" in r] == [
        (6, "dev"), (12, "dev"), (12, "dev"), (12, "test"),
    ]  # fmt: skip
    assert records[-1]["eval"]["accuracy"] == results["test"]["accuracy"]
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == [
        "checkpoint-10",
        "checkpoint-12",
    ]
    checkpoint = output / "checkpoints" / "checkpoint-12"  # adapter-only, nothing pickled
    assert (checkpoint / "adapter_model.safetensors").is_file()
    assert not (checkpoint / "model.safetensors").exists()
    assert not (checkpoint / "training_args.bin").exists()
    assert json.loads((output / "results.json").read_text()) == results
    assert 0.0 <= results["test"]["accuracy"] <= 1.0
    assert results["trainable_parameters"] < results["total_parameters"]
    assert results["outputs"]["adapter"] == str(output / "adapter")
    for plot in ("loss.png", "spectral_spectrum.png"):
        assert (output / "plots" / plot).read_bytes()[:4] == b"\x89PNG"
    # Scoring the saved adapter again reproduces the reported test metrics.
    assert evaluate_saved(output, device="cpu", progress=False) == pytest.approx(results["test"])


def test_every_run_gets_its_own_folder_by_default(tmp_path, tiny_bert_dir, topic_csv, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tiny_config(tiny_bert_dir, topic_csv, tmp_path, max_steps=1, methods=["lora:r=2"])
    config.output_dir = None
    finetune(config, progress=False)
    first = config.output_dir
    assert first.startswith(str(Path("runs") / "lora-"))
    again = tiny_config(tiny_bert_dir, topic_csv, tmp_path, max_steps=1, methods=["lora:r=2"])
    again.output_dir = None
    import time

    time.sleep(1.1)  # the folder name has a one-second timestamp
    finetune(again, progress=False)  # no --overwrite needed: a new folder
    assert again.output_dir != first and (Path(again.output_dir) / "results.json").is_file()


def test_output_dir_with_another_run_is_refused_and_left_untouched(
    tmp_path, tiny_bert_dir, topic_csv
):
    config = tiny_config(tiny_bert_dir, topic_csv, tmp_path / "run", max_steps=2)
    finetune(config, progress=False)
    before = {p: p.read_bytes() for p in Path(config.output_dir).rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match=r"already holds a run .*; pass --resume"):
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


def test_method_that_does_not_fit_the_model_writes_nothing(tmp_path, tiny_bert_dir, topic_csv):
    config = tiny_config(
        tiny_bert_dir, topic_csv, tmp_path / "run", target_modules="no_such_module"
    )
    with pytest.raises(ValueError, match="target_modules"):
        finetune(config, progress=False)
    assert not (tmp_path / "run").exists()


def test_unknown_method_or_option_fails_before_data_and_model_load(
    tmp_path, tiny_bert_dir, topic_csv, monkeypatch
):
    import graphopt.finetune.run as job

    def must_not_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the method name was checked")

    monkeypatch.setattr(job, "prepare", must_not_load)
    for methods, message in (
        (["nosuch"], "unknown method 'nosuch'"),
        (["lora:rank=4"], r"unknown option\(s\) \['rank'\] for method 'lora'"),
    ):
        config = tiny_config(tiny_bert_dir, topic_csv, tmp_path / "run", methods=methods)
        with pytest.raises(ValueError, match=message):
            finetune(config, progress=False)


def test_fp16_without_a_gpu_is_refused_before_any_work(tmp_path, tiny_bert_dir, topic_csv):
    config = tiny_config(tiny_bert_dir, topic_csv, tmp_path / "run", fp16=True)
    with pytest.raises(ValueError, match="--fp16 needs a CUDA GPU"):
        finetune(config, progress=False)
    assert not (tmp_path / "run").exists()


def test_bf16_on_the_cpu_trains(tmp_path, tiny_bert_dir, topic_csv):
    config = tiny_config(tiny_bert_dir, topic_csv, tmp_path / "run", max_steps=2, bf16=True)
    results = finetune(config, progress=False)
    assert results["steps"] == 2 and 0.0 <= results["test"]["accuracy"] <= 1.0


def test_gradient_accumulation_equals_the_large_batch(tmp_path, topic_csv):
    """2 micro-batches of 2 accumulate to the step one batch of 4 takes (no dropout)."""
    from conftest import write_tiny_bert

    model_dir = write_tiny_bert(tmp_path / "bert", dropout=0.0)
    method = ["lora:r=2,dropout=0"]
    big = tiny_config(
        model_dir, topic_csv, tmp_path / "big", max_steps=3, batch_size=4, methods=method
    )
    small = tiny_config(
        model_dir, topic_csv, tmp_path / "small", max_steps=3, batch_size=2,
        gradient_accumulation_steps=2, methods=method,
    )  # fmt: skip
    finetune(big, progress=False)
    finetune(small, progress=False)
    got, want = adapter_tensors(tmp_path / "small"), adapter_tensors(tmp_path / "big")
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6)


def test_finetune_help_shows_defaults_and_the_registered_methods(capsys):
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    text = capsys.readouterr().out
    assert "`" not in text  # no raw markdown
    assert "(default: 0.0005)" in text and "(default: 100)" in text and "(default: 16)" in text
    assert "registered methods:" in text
    for name in ("lora", "linchain", "pca_ggm", "spectral"):
        assert name in text.split("registered methods:")[1]
    assert "score a finished run" not in text.split("registered methods:")[0]


def test_saved_merged_model_is_a_plain_transformers_model_with_the_adapted_outputs(
    tmp_path, tiny_bert_dir, topic_csv
):
    from transformers import AutoModelForSequenceClassification

    from graphopt.finetune.run import prepare

    config = tiny_config(
        tiny_bert_dir, topic_csv, tmp_path / "run", max_steps=4, save_merged=True,
        methods=["linchain:r=2,dropout=0"],
    )  # fmt: skip
    finetune(config, progress=False)
    output = Path(config.output_dir)
    merged = AutoModelForSequenceClassification.from_pretrained(output / "merged").eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    adapted = prepare(config)
    graphopt.load_adapter(adapted.model, output / "adapter")
    ids = torch.tensor([row["input_ids"][:8] for row in adapted.test[:4]])
    with torch.no_grad():
        torch.testing.assert_close(
            merged(input_ids=ids).logits, adapted.model.eval()(input_ids=ids).logits,
            rtol=1e-5, atol=1e-5,
        )  # fmt: skip


def test_head_only_trains_the_head_alone_and_saves_it(tmp_path, tiny_bert_dir, topic_csv):
    """The head-only baseline: only the head trains (``model.safetensors`` holds exactly
    its tensors, moved from their initial values), and they reload to the reported
    test metrics."""
    from transformers import AutoModelForSequenceClassification

    config = tiny_config(tiny_bert_dir, topic_csv, tmp_path / "run", methods=["head"])
    results = finetune(config, progress=False)
    saved = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert sorted(saved) == ["classifier.bias", "classifier.weight"]
    assert results["trainable_parameters"] == sum(t.numel() for t in saved.values())
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=3)
    assert not torch.equal(saved["classifier.weight"], base.classifier.weight)
    assert evaluate_saved(tmp_path / "run", device="cpu", progress=False) == pytest.approx(
        results["test"]
    )
    with pytest.raises(ValueError, match="method 'head' takes no options"):
        finetune(tiny_config(tiny_bert_dir, topic_csv, tmp_path / "b", methods=["head:r=2"]))
