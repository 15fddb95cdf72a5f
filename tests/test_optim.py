"""GraphOptimizer: base equivalence, shared groups, schedulers, state, transforms."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import graphopt
from graphopt.optim import GraphOptimizer
from graphopt.testing import no_host_sync

BASES = {
    "adamw": (torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.1}),
    "sgd_momentum": (torch.optim.SGD, {"lr": 1e-2, "momentum": 0.9, "nesterov": True}),
    "adam": (torch.optim.Adam, {"lr": 1e-2, "amsgrad": True}),
}


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + step)
    return torch.randn(16, 6, generator=gen), torch.randn(16, 3, generator=gen)


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: range, sched: Any = None) -> None:
    for step in steps:
        x, y = _batch(step)
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        if sched is not None:
            sched.step()


def _same_params(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


class Scale:
    """Toy transform: g <- factor * g."""

    def __init__(self, params: list[torch.Tensor], factor: float, name: str = "scale") -> None:
        self.name, self.params, self.factor = name, params, factor

    def init_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def transform(self, grad, param, state, factor: float | None = None):
        return grad.mul_(self.factor if factor is None else factor)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class Shift(Scale):
    """Toy transform: g <- g + offset (returns a new tensor)."""

    def transform(self, grad, param, state, factor: float | None = None):
        return grad + self.factor


class GradientAverage:
    """Toy stateful transform: g <- running mean of g (tensor state plus a counter)."""

    name = "average"

    def __init__(self, params: list[torch.Tensor]) -> None:
        self.params, self.calls = params, 0

    def init_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"mean": torch.zeros_like(param), "count": torch.zeros((), device=param.device)}

    def transform(self, grad, param, state):
        self.calls += 1
        state["count"].add_(1)
        state["mean"].add_((grad - state["mean"]) / state["count"])
        return state["mean"]

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.calls = state["calls"]


class L2:
    """Toy regularizer: R = weight * ||theta||^2."""

    name = "l2"

    def __init__(self, params: list[torch.Tensor], weight: float) -> None:
        self.params, self.weight = params, weight

    def init_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def grad(self, param, state, weight: float | None = None):
        return 2 * (self.weight if weight is None else weight) * param

    def value(self, param, state):
        return self.weight * param.square().sum()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class DampUpdate:
    """Toy stateful update transform: d <- factor * d, counting the updates it saw."""

    name = "damp"

    def __init__(self, params: list[torch.Tensor], factor: float = 0.5) -> None:
        self.params, self.factor, self.seen = params, factor, []

    def init_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"count": torch.zeros((), device=param.device)}

    def transform_update(self, update, param, state, factor: float | None = None):
        self.seen.append(update.clone())
        state["count"].add_(1)
        return update.mul_(self.factor if factor is None else factor)

    def state_dict(self) -> dict[str, Any]:
        return {"factor": self.factor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.factor = state["factor"]


class Recorder:
    """Toy callback recording the first parameter after each step."""

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.seen.append(optimizer.param_groups[0]["params"][0].detach().clone())

    def state_dict(self) -> dict[str, Any]:
        return {"n": len(self.seen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


# -- equivalence with the base ---------------------------------------------------------------


@pytest.mark.parametrize("base", list(BASES))
def test_without_transforms_updates_equal_the_base_optimizer_exactly(base: str) -> None:
    cls, kwargs = BASES[base]
    plain, wrapped = _model(), _model()
    _train(plain, cls(plain.parameters(), **kwargs), range(6))
    _train(wrapped, GraphOptimizer(wrapped.parameters(), base=cls, **kwargs), range(6))
    assert _same_params(plain, wrapped)


def test_base_instance_is_wrapped_without_copying() -> None:
    model = _model()
    base = torch.optim.SGD(model.parameters(), lr=0.1)
    opt = GraphOptimizer(base=base)
    assert opt.base is base
    assert opt.param_groups is base.param_groups
    assert opt.state is base.state
    assert opt.defaults is base.defaults


def test_zero_grad_clears_gradients_like_the_base() -> None:
    model = _model()
    opt = GraphOptimizer(model.parameters(), lr=0.1)
    x, y = _batch(0)
    nn.functional.mse_loss(model(x), y).backward()
    opt.zero_grad(set_to_none=False)
    assert all(torch.count_nonzero(p.grad) == 0 for p in model.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_add_param_group_reaches_the_base() -> None:
    model, extra = _model(), nn.Parameter(torch.ones(3))
    opt = GraphOptimizer(model[0].parameters(), base=torch.optim.SGD, lr=0.1)
    opt.add_param_group({"params": [extra], "lr": 0.5})
    assert len(opt.base.param_groups) == 2
    extra.grad = torch.ones(3)
    opt.step()
    torch.testing.assert_close(extra.detach(), torch.full((3,), 0.5), rtol=0, atol=0)


def test_closure_is_evaluated_with_grad_and_its_loss_returned() -> None:
    model = _model()
    opt = GraphOptimizer(model.parameters(), base=torch.optim.SGD, lr=0.1)
    x, y = _batch(0)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    assert opt.step(closure).requires_grad


def _scheduler(name: str, opt: torch.optim.Optimizer) -> Any:
    if name == "step_lr":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    if name == "lambda_lr":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=8)


@pytest.mark.parametrize("name", ["step_lr", "lambda_lr", "linear_warmup"])
def test_lr_schedulers_act_exactly_as_on_the_base(name: str) -> None:
    plain, wrapped = _model(), _model()
    base_opt = torch.optim.AdamW(plain.parameters(), lr=1e-2)
    opt = GraphOptimizer(wrapped.parameters(), lr=1e-2)
    base_sched, sched = _scheduler(name, base_opt), _scheduler(name, opt)
    for step in range(6):
        _train(plain, base_opt, range(step, step + 1), base_sched)
        _train(wrapped, opt, range(step, step + 1), sched)
        assert opt.base.param_groups[0]["lr"] == base_opt.param_groups[0]["lr"]
        assert sched.get_last_lr() == base_sched.get_last_lr()
    assert _same_params(plain, wrapped)


def test_for_model_without_methods_optimises_every_trainable_parameter() -> None:
    model = _model()
    model[2].bias.requires_grad_(False)
    opt = GraphOptimizer.for_model(model, base=torch.optim.SGD, lr=0.1, transforms=[])
    chosen = {id(p) for g in opt.param_groups for p in g["params"]}
    assert chosen == {id(p) for p in model.parameters() if p.requires_grad}
    assert id(model[2].bias) not in chosen


# -- transforms, regularizers, callbacks -----------------------------------------------------


def test_transforms_run_in_order_before_the_base_step() -> None:
    model = _model()
    weight = model[0].weight
    transforms = [Scale([weight], 3.0), Shift([weight], 1.0, name="shift")]
    opt = GraphOptimizer(model.parameters(), base=torch.optim.SGD, lr=0.1, transforms=transforms)
    x, y = _batch(0)
    nn.functional.mse_loss(model(x), y).backward()
    before, grad = weight.detach().clone(), weight.grad.clone()
    opt.step()
    torch.testing.assert_close(weight.detach(), before - 0.1 * (3.0 * grad + 1.0))


def test_regularizer_gradient_is_added_after_the_transforms() -> None:
    model = _model()
    weight = model[0].weight
    opt = GraphOptimizer(
        model.parameters(),
        base=torch.optim.SGD,
        lr=0.1,
        transforms=[Scale([weight], 2.0)],
        regularizers=[L2([weight], 0.25)],
    )
    x, y = _batch(0)
    nn.functional.mse_loss(model(x), y).backward()
    before, grad = weight.detach().clone(), weight.grad.clone()
    opt.step()
    torch.testing.assert_close(weight.detach(), before - 0.1 * (2.0 * grad + 0.5 * before))


def test_group_settings_switch_transforms_off_and_pass_options() -> None:
    model = _model()
    first, second = model[0].weight, model[2].weight
    groups = [
        {"params": [first], "transforms": {"scale": {"factor": 5.0}}},
        {"params": [second], "transforms": False},
        {"params": [model[0].bias, model[2].bias], "transforms": ["other"]},
    ]
    scale = Scale([first, second, model[0].bias], 2.0)
    opt = GraphOptimizer(groups, base=torch.optim.SGD, lr=0.1, transforms=[scale])
    x, y = _batch(0)
    nn.functional.mse_loss(model(x), y).backward()
    params = [first, second, model[0].bias]
    before = [p.detach().clone() for p in params]
    grads = [p.grad.clone() for p in params]
    opt.step()
    for param, start, grad, factor in zip(params, before, grads, (5.0, 1.0, 1.0), strict=True):
        torch.testing.assert_close(param.detach(), start - 0.1 * factor * grad)


def test_callbacks_run_after_the_base_step() -> None:
    model, recorder = _model(), Recorder()
    opt = GraphOptimizer(model.parameters(), base=torch.optim.SGD, lr=0.1, callbacks=[recorder])
    _train(model, opt, range(2))
    assert len(recorder.seen) == 2
    torch.testing.assert_close(recorder.seen[-1], model[0].weight.detach())


@pytest.mark.parametrize("base", list(BASES))
def test_update_transform_sees_the_base_update_and_rewrites_it(base: str) -> None:
    cls, kwargs = BASES[base]
    model, reference = _model(), _model()
    damp = DampUpdate([model[0].weight], factor=0.25)
    opt = GraphOptimizer(model.parameters(), base=cls, update_transforms=[damp], **kwargs)
    plain = cls(reference.parameters(), **kwargs)
    x, y = _batch(0)
    for net, optimizer in ((model, opt), (reference, plain)):
        optimizer.zero_grad()
        nn.functional.mse_loss(net(x), y).backward()
    old = model[0].weight.detach().clone()
    opt.step()
    plain.step()
    # the transform saw exactly the base's update; the parameter moved a quarter of it
    torch.testing.assert_close(damp.seen[0], reference[0].weight.detach() - old, rtol=0, atol=0)
    torch.testing.assert_close(model[0].weight.detach(), old + 0.25 * damp.seen[0])
    assert torch.equal(model[2].weight, reference[2].weight)  # not selected: untouched


def test_update_transforms_are_switched_per_group() -> None:
    model = _model()
    damp = DampUpdate([model[0].weight, model[2].weight])
    groups = [
        {"params": list(model[0].parameters()), "update_transforms": {"damp": {"factor": 0.0}}},
        {"params": list(model[2].parameters()), "update_transforms": False},
    ]
    opt = GraphOptimizer(groups, lr=1e-2, update_transforms=[damp])
    before = model[0].weight.detach().clone()
    _train(model, opt, range(1))
    assert torch.equal(model[0].weight, before)  # factor 0 from the group's options
    assert len(damp.seen) == 1  # switched off for the second group


@pytest.mark.parametrize("base", list(BASES))
def test_parameter_mask_keeps_masked_entries_bitwise_whatever_the_base(base: str) -> None:
    from graphopt.optim import ParameterMask

    cls, kwargs = BASES[base]
    model = _model()
    keep = torch.tensor([[1.0]] * 4 + [[0.0]] * 4)  # rows 4..7 of the first layer frozen
    mask = ParameterMask("rows", [model[0].weight], lambda param: keep)
    opt = GraphOptimizer(
        model.parameters(), base=cls, transforms=[mask], update_transforms=[mask], **kwargs
    )
    before = model[0].weight.detach().clone()
    _train(model, opt, range(4))
    assert torch.equal(model[0].weight[4:], before[4:])
    assert not torch.equal(model[0].weight[:4], before[:4])
    assert not model[0].weight.grad[4:].any()


def test_parameter_without_gradient_is_left_to_the_base() -> None:
    model = _model()
    frozen_grad_param = model[2].weight
    opt = GraphOptimizer(
        model.parameters(),
        base=torch.optim.SGD,
        lr=0.1,
        regularizers=[L2([frozen_grad_param], 1.0)],
    )
    before = frozen_grad_param.detach().clone()
    model[0].weight.grad = torch.ones_like(model[0].weight)
    opt.step()
    assert frozen_grad_param.grad is None
    assert torch.equal(frozen_grad_param.detach(), before)


def test_transform_registered_as_a_plugin_is_found_by_name() -> None:
    class Plugin:
        @graphopt.hookimpl
        def graphopt_register(self, registry: Any) -> None:
            registry.add("transform", "test_scale", Scale)

    reg = graphopt.Registry(builtins=(), entry_point_group="graphopt-none")
    reg.register(Plugin(), name="test-plugin")
    model = _model()
    transform = reg.get("transform", "test_scale")([model[0].weight], 2.0)
    opt = GraphOptimizer(model.parameters(), transforms=[transform])
    assert opt.transforms == [transform]


# -- state -----------------------------------------------------------------------------------


def _stateful(model: nn.Module, cls: type = torch.optim.AdamW) -> GraphOptimizer:
    weight = model[0].weight
    return GraphOptimizer(
        [{"params": list(model[0].parameters())}, {"params": list(model[2].parameters())}],
        base=cls,
        lr=1e-2,
        transforms=[GradientAverage([weight, model[2].weight])],
        regularizers=[L2([weight], 0.01)],
        update_transforms=[DampUpdate([model[2].weight])],
        callbacks=[Recorder()],
    )


def test_state_dict_loads_with_weights_only(tmp_path) -> None:
    model = _model()
    opt = _stateful(model)
    _train(model, opt, range(3))
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    state = torch.load(tmp_path / "opt.pt", weights_only=True)
    saved = state["graphopt"]["transforms"][0]
    assert saved["extra"] == {"calls": 6}
    assert torch.equal(
        saved["state"][0]["mean"], opt.transform_state(opt.transforms[0])[model[0].weight]["mean"]
    )


@pytest.mark.parametrize("base", list(BASES))
def test_resuming_from_a_saved_state_gives_bit_identical_steps(base: str, tmp_path) -> None:
    cls, _ = BASES[base]
    model = _model()
    opt = _stateful(model, cls)
    _train(model, opt, range(3))
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, tmp_path / "ckpt.pt")
    _train(model, opt, range(3, 6))

    resumed = _model(seed=1)
    checkpoint = torch.load(tmp_path / "ckpt.pt", weights_only=True, map_location="cpu")
    resumed.load_state_dict(checkpoint["model"])
    resumed_opt = _stateful(resumed, cls)
    resumed_opt.load_state_dict(checkpoint["opt"])
    assert resumed_opt.transforms[0].calls == 6
    damp = resumed_opt.update_transforms[0]
    assert float(resumed_opt.transform_state(damp)[resumed[2].weight]["count"]) == 3
    _train(resumed, resumed_opt, range(3, 6))
    assert _same_params(model, resumed)


def test_load_state_dict_rejects_a_different_transform_chain() -> None:
    model = _model()
    opt = _stateful(model)
    other = GraphOptimizer(model.parameters(), transforms=[Scale([model[0].weight], 2.0)])
    with pytest.raises(ValueError, match="transforms"):
        other.load_state_dict(opt.state_dict())


def test_load_state_dict_rejects_a_plain_optimizer_state() -> None:
    model = _model()
    opt = GraphOptimizer(model.parameters())
    with pytest.raises(ValueError, match="not saved by a GraphOptimizer"):
        opt.load_state_dict(torch.optim.AdamW(model.parameters()).state_dict())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA to move state across devices")
def test_state_loaded_onto_cpu_returns_to_the_parameters_device(tmp_path) -> None:
    model = _model().cuda()
    opt = _stateful(model)
    _train_cuda(model, opt, range(2))
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    state = torch.load(tmp_path / "opt.pt", weights_only=True, map_location="cpu")
    fresh = _stateful(model)
    fresh.load_state_dict(state)
    mean = fresh.transform_state(fresh.transforms[0])[model[0].weight]["mean"]
    assert mean.device == model[0].weight.device
    assert fresh.state[model[0].weight]["exp_avg"].device == model[0].weight.device


def _train_cuda(model: nn.Module, opt: torch.optim.Optimizer, steps: range) -> None:
    for step in steps:
        x, y = (t.cuda() for t in _batch(step))
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA to detect host syncs")
def test_step_does_not_synchronise_with_the_host() -> None:
    model = _model().cuda()
    opt = _stateful(model)
    _train_cuda(model, opt, range(1))  # first step: lazy base state
    x, y = (t.cuda() for t in _batch(1))
    opt.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()
    with no_host_sync():
        opt.step()


# -- bad input -------------------------------------------------------------------------------


def test_base_that_is_not_an_optimizer_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"base must be a torch\.optim\.Optimizer"):
        GraphOptimizer(_model().parameters(), base="adamw")


def test_lbfgs_base_is_rejected() -> None:
    with pytest.raises(ValueError, match="LBFGS"):
        GraphOptimizer(_model().parameters(), base=torch.optim.LBFGS)


def test_base_instance_with_params_is_rejected() -> None:
    model = _model()
    with pytest.raises(ValueError, match="params=None"):
        GraphOptimizer(model.parameters(), base=torch.optim.SGD(model.parameters(), lr=0.1))


def test_transform_selecting_a_foreign_parameter_is_rejected() -> None:
    model, other = _model(), _model()
    with pytest.raises(ValueError, match="in none of the optimizer's param groups"):
        GraphOptimizer(model.parameters(), transforms=[Scale([other[0].weight], 2.0)])


def test_object_missing_protocol_members_is_rejected() -> None:
    with pytest.raises(ValueError, match="GradientTransform"):
        GraphOptimizer(_model().parameters(), transforms=[object()])


def test_repeated_transform_names_are_rejected() -> None:
    model = _model()
    weight = model[0].weight
    with pytest.raises(ValueError, match="repeated"):
        GraphOptimizer(model.parameters(), transforms=[Scale([weight], 2.0), Scale([weight], 3.0)])


# -- Hugging Face Trainer --------------------------------------------------------------------


def test_trainer_runs_the_transform_each_step_and_lowers_the_loss(tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        vocab_size=100,
        num_labels=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 100, (16, 12), generator=gen)
    labels = (ids[:, 0] > 50).long()
    data = [{"input_ids": i, "labels": y} for i, y in zip(ids, labels, strict=True)]

    average = GradientAverage([model.classifier.weight])
    opt = GraphOptimizer(model.parameters(), lr=1e-3, transforms=[average])
    steps = 12
    sched = transformers.get_linear_schedule_with_warmup(opt, 2, steps)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=steps,
        per_device_train_batch_size=16,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=data, optimizers=(opt, sched)
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert average.calls == steps
    assert len(losses) == steps
    assert losses[-1] < losses[0]
    assert opt.param_groups[0]["lr"] == pytest.approx(sched.get_last_lr()[0])
