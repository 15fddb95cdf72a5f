"""graphopt.integrations.transformers: GraphoptTrainer on tiny BERT classifiers."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import transformers

import graphopt
from graphopt.integrations.transformers import CHECKPOINT_MARKER, GraphoptTrainer
from graphopt.optim import GraphOptimizer
from graphopt.optim.guard import SkippedTransformsWarning

SETTINGS = {
    "lora": {"r": 4},
    "linchain": {"r": 4},
    "pca_ggm": {"r": 4, "warmup_steps": 3, "top_k": 12, "n_important": 6},
    "spectral": {"k": 4},
}


def classifier(method: str | None = None, dropout: float = 0.1) -> torch.nn.Module:
    """Tiny BERT classifier (seed 0) with ``method`` on query/value; ``dropout`` everywhere."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, max_position_embeddings=16, num_labels=3,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
    )  # fmt: skip
    model = transformers.BertForSequenceClassification(config)
    if method is not None:
        adapter_dropout = {"dropout": dropout} if method in ("lora", "linchain") else {}
        graphopt.apply(
            model, method, target_modules=["query", "value"],
            trainable_extra=r"classifier(\..*)?", **SETTINGS[method], **adapter_dropout,
        )  # fmt: skip
    return model


def dataset(n: int = 48) -> list[dict]:
    ids = torch.randint(5, 64, (n, 10), generator=torch.Generator().manual_seed(0))
    return [{"input_ids": row, "labels": int(row[0] % 3)} for row in ids]


def arguments(output, **overrides) -> transformers.TrainingArguments:
    values = {
        "output_dir": str(output), "max_steps": 12, "per_device_train_batch_size": 8,
        "save_steps": 4, "report_to": [], "use_cpu": True, "logging_steps": 1, "seed": 0,
        "learning_rate": 1e-2, "disable_tqdm": True,
    }  # fmt: skip
    values.update(overrides)
    return transformers.TrainingArguments(**values)


def graph_optimizer(trainer: transformers.Trainer) -> GraphOptimizer:
    optimizer = trainer.optimizer
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper holds ours


@pytest.mark.parametrize(
    "request_kind", ["default", "optim_name", "cls_and_kwargs", "graph_cls", "instance"]
)
def test_the_optimizer_has_every_method_part_however_it_is_requested(tmp_path, request_kind):
    model = classifier("pca_ggm")
    graphopt.apply(model, "spectral", target_modules=["key"], k=4)
    kwargs: dict = {}
    args = arguments(tmp_path, max_steps=1)
    if request_kind == "optim_name":
        args = arguments(tmp_path, max_steps=1, optim="sgd")
    elif request_kind == "cls_and_kwargs":
        kwargs["optimizer_cls_and_kwargs"] = (torch.optim.SGD, {"lr": 0.1})
    elif request_kind == "graph_cls":
        kwargs["optimizer_cls_and_kwargs"] = (GraphOptimizer, {"base": torch.optim.SGD, "lr": 0.1})
    elif request_kind == "instance":
        kwargs["optimizers"] = (torch.optim.SGD(
            [p for p in model.parameters() if p.requires_grad], lr=0.1
        ), None)  # fmt: skip
    trainer = GraphoptTrainer(model=model, args=args, train_dataset=dataset(8), **kwargs)
    trainer.train()
    optimizer = graph_optimizer(trainer)
    assert isinstance(optimizer, GraphOptimizer)
    assert [t.name for t in optimizer.transforms] == ["pca_ggm_mask", "spectral_filter"]
    assert [t.name for t in optimizer.update_transforms] == ["pca_ggm_mask"]
    assert len(optimizer.callbacks) == 1  # pca_ggm's scoring
    expected = torch.optim.AdamW if request_kind == "default" else torch.optim.SGD
    assert type(optimizer.base) is expected


def test_a_graph_optimizer_built_without_its_methods_warns(tmp_path):
    model = classifier("spectral")
    bare = GraphOptimizer([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    with pytest.warns(UserWarning, match=r"lacks \['spectral_filter'\] of graphopt method"):
        GraphoptTrainer(
            model=model, args=arguments(tmp_path, max_steps=1), train_dataset=dataset(8),
            optimizers=(bare, None),
        ).train()  # fmt: skip


def test_a_plain_trainer_with_a_plain_optimizer_warns_naming_what_it_skips(tmp_path):
    model = classifier("spectral")
    plain = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    trainer = transformers.Trainer(
        model=model, args=arguments(tmp_path, max_steps=2), train_dataset=dataset(16),
        optimizers=(plain, None),
    )  # fmt: skip
    with pytest.warns(
        SkippedTransformsWarning, match=r"AdamW steps .* 'spectral' .*spectral_filter"
    ):
        trainer.train()


def test_lora_alone_needs_no_graph_optimizer_and_gets_no_warning(tmp_path):
    model = classifier("lora")
    plain = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SkippedTransformsWarning)
        transformers.Trainer(
            model=model, args=arguments(tmp_path, max_steps=1), train_dataset=dataset(8),
            optimizers=(plain, None),
        ).train()  # fmt: skip


def test_checkpoints_hold_the_adapter_and_no_pickle(tmp_path):
    trainer = GraphoptTrainer(
        model=classifier("lora"), args=arguments(tmp_path, max_steps=4), train_dataset=dataset()
    )
    trainer.train()
    folder = tmp_path / "checkpoint-4"
    names = {p.name for p in folder.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", CHECKPOINT_MARKER} <= names
    assert not names & {"model.safetensors", "training_args.bin", "pytorch_model.bin"}
    assert json.loads((folder / "training_args.json").read_text())["max_steps"] == 4
    fresh = classifier()
    graphopt.load_adapter(fresh, folder)  # a plain adapter folder
    trainer.model.eval()
    ids = torch.randint(5, 64, (2, 10), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(
        fresh.eval()(input_ids=ids).logits, trainer.model(input_ids=ids).logits
    )


@pytest.mark.parametrize(
    "methods", [["lora"], ["linchain"], ["pca_ggm"], ["spectral"], ["lora", "spectral"]]
)
def test_resume_from_a_checkpoint_is_bit_identical_to_the_uninterrupted_run(tmp_path, methods):
    def build() -> torch.nn.Module:
        model = classifier(methods[0])
        if len(methods) > 1:
            graphopt.apply(model, "spectral", target_modules=r".*\.(query|value)\.lora_B", k=2)
        return model

    reference = build()
    GraphoptTrainer(
        model=reference, args=arguments(tmp_path / "ref"), train_dataset=dataset()
    ).train()

    class StopAt8(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = state.global_step == 8

    cut = tmp_path / "cut"
    GraphoptTrainer(
        model=build(), args=arguments(cut), train_dataset=dataset(), callbacks=[StopAt8()]
    ).train()
    resumed = build()
    GraphoptTrainer(model=resumed, args=arguments(cut), train_dataset=dataset()).train(
        resume_from_checkpoint=True
    )
    for (name, want), got in zip(
        reference.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.equal(want, got), name


def test_a_second_train_call_keeps_the_graph_optimizer_and_resumes(tmp_path):
    trainer = GraphoptTrainer(
        model=classifier("spectral"), args=arguments(tmp_path, max_steps=4), train_dataset=dataset()
    )
    trainer.train()
    first = graph_optimizer(trainer)
    trainer.train(resume_from_checkpoint=True)  # accelerate's wrapper is not wrapped again
    assert graph_optimizer(trainer) is first or isinstance(graph_optimizer(trainer), GraphOptimizer)
    assert [t.name for t in graph_optimizer(trainer).transforms] == ["spectral_filter"]
