"""The conformance matrix every fine-tuning method passes, as a public helper.

Plugin authors call ``check_method("mymethod", make_model, target_modules)``
in their own test suite; graphopt's tests run it for every registered method
on tiny BERT- and LLaMA-style models. Each check raises ``AssertionError``
naming the method and what broke:

1. ``trainable_count``: ``apply``'s summary, the method's documented formula
   (``num_trainable_parameters``) and the tensors it trains agree;
2. ``identity_at_init``: the adapted model computes the base model's outputs
   (when ``Method.identity_at_init``);
3. ``only_trainable_changed``: after a few optimizer steps (``GraphOptimizer.for_model``,
   so the method's callbacks run) every parameter the method does not train
   is unchanged (for ``reparameterizes_base`` methods: outside the targets);
4. ``merge_equals_adapted``: merged outputs equal adapted outputs (``rtol``);
5. ``merge_idempotent``: merging twice changes nothing;
6. ``unmerge_restores``: unmerge gives the adapted outputs back (when supported);
7. ``save_load_round_trip``: save, load onto a fresh base model, identical outputs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from graphopt.adapters import apply, load_adapter, merge, save_adapter, unmerge
from graphopt.methods import UnsupportedOperationError, methods_of

Inputs = Callable[[nn.Module], Any]


@contextmanager
def no_host_sync() -> Iterator[None]:
    """Make any CUDA host synchronisation inside the block raise (``step()`` must not
    wait for the GPU); pending work is finished first so only the block is checked."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


@dataclass
class ConformanceReport:
    """Which checks ran (all passed, or ``check_method`` would have raised) and which
    were skipped because the method does not promise them."""

    method: str
    passed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def default_inputs(model: nn.Module, batch: int = 2, length: int = 8) -> dict[str, torch.Tensor]:
    """Random ``input_ids`` for a transformers model (uses ``model.config.vocab_size``)."""
    generator = torch.Generator().manual_seed(1234)
    vocab = int(model.config.vocab_size)  # type: ignore[union-attr]
    ids = torch.randint(0, vocab, (batch, length), generator=generator)
    device = next(model.parameters()).device
    return {"input_ids": ids.to(device)}


def first_tensor(output: Any) -> torch.Tensor:
    """The main output of a model call: the tensor itself, or the first element of a
    tuple / ``ModelOutput`` (``last_hidden_state``, ``logits``)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        return next(v for v in output.values() if isinstance(v, torch.Tensor))
    return first_tensor(output[0])


def check_method(
    method_name: str,
    model_factory: Callable[[], nn.Module],
    target_modules: str | list[str],
    config: dict[str, Any] | None = None,
    *,
    inputs: Inputs = default_inputs,
    steps: int = 3,
    lr: float = 1e-2,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    seed: int = 0,
) -> ConformanceReport:
    """Run the conformance matrix for ``method_name`` (see the module docstring).

    Args:
        method_name: a registered method.
        model_factory: returns a fresh base model, with the same weights every call
            (it is called with the torch RNG seeded by ``seed``).
        target_modules: passed to ``graphopt.apply``.
        config: the method's other config fields.
        inputs: builds the keyword arguments of a forward call from the model.
        steps: optimizer steps taken before the merge and round-trip checks.
        lr: AdamW learning rate of those steps.
        rtol: relative tolerance of the floating-point comparisons (merge, identity);
            the save/load round trip must be bitwise identical.
        atol: absolute tolerance, as a fraction of the largest expected output.
    """
    config = dict(config or {})
    report = ConformanceReport(method_name)

    def fresh() -> nn.Module:
        torch.manual_seed(seed)
        return model_factory()

    def run(model: nn.Module, batch: Any) -> torch.Tensor:
        with torch.no_grad():
            return first_tensor(model(**batch)).detach().clone()

    def close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
        scale = float(expected.abs().max()) or 1.0
        if not torch.allclose(actual, expected, rtol=rtol, atol=atol * scale):
            gap = float((actual - expected).abs().max())
            raise AssertionError(f"method {method_name!r}: {what} (max |difference| {gap:.3g})")

    model = fresh().eval()
    batch = inputs(model)
    base_out = run(model, batch)
    summary = apply(model, method_name, target_modules, **config)
    method = methods_of(model)[-1]

    _check_count(model, method, summary.trainable_parameters, method_name, "after apply")
    report.passed.append("trainable_count")

    if method.identity_at_init:
        close(run(model, batch), base_out, "forward differs from the base model at init")
        report.passed.append("identity_at_init")
    else:
        report.skipped.append("identity_at_init")

    _train(model, batch, steps, lr, method_name)
    report.passed.append("only_trainable_changed")
    _check_count(model, method, None, method_name, f"after {steps} steps")

    model.eval()
    adapted = run(model, batch)
    try:
        merge(model)
    except UnsupportedOperationError:
        report.skipped += ["merge_equals_adapted", "merge_idempotent", "unmerge_restores"]
    else:
        merged = run(model, batch)
        close(merged, adapted, "merged output differs from the adapted output")
        report.passed.append("merge_equals_adapted")
        weights = {n: p.detach().clone() for n, p in model.named_parameters()}
        merge(model)
        same = all(torch.equal(weights[n], p) for n, p in model.named_parameters())
        if not same or not torch.equal(run(model, batch), merged):
            raise AssertionError(f"method {method_name!r}: a second merge changed the model")
        report.passed.append("merge_idempotent")
        try:
            unmerge(model)
        except UnsupportedOperationError:
            report.skipped.append("unmerge_restores")
        else:
            close(run(model, batch), adapted, "unmerged output differs from the adapted output")
            report.passed.append("unmerge_restores")

    if any(m.merged for m in methods_of(model)):
        report.skipped.append("save_load_round_trip")
        return report
    with tempfile.TemporaryDirectory() as tmp:
        save_adapter(model, Path(tmp) / "adapter")
        loaded = fresh().eval()
        load_adapter(loaded, Path(tmp) / "adapter")
    if not torch.equal(run(loaded, batch), adapted):
        gap = float((run(loaded, batch) - adapted).abs().max())
        raise AssertionError(
            f"method {method_name!r}: outputs after save -> load differ (max {gap:.3g})"
        )
    report.passed.append("save_load_round_trip")
    return report


def _check_count(model: nn.Module, method: Any, reported: int | None, name: str, when: str) -> None:
    counted = method.count_trained_entries(model)
    formula = method.num_trainable_parameters(model)
    if counted != formula or (reported is not None and reported != counted):
        raise AssertionError(
            f"method {name!r} {when}: documented count {formula}, adapter tensors hold "
            f"{counted}, apply reported {reported}"
        )


def _train(model: nn.Module, batch: Any, steps: int, lr: float, name: str) -> None:
    from graphopt.optim import GraphOptimizer

    model.train()
    method = methods_of(model)[-1]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable_before = set(method.trainable_parameters(model))
    optimizer = GraphOptimizer.for_model(model, lr=lr)
    with torch.no_grad():
        target = torch.randn_like(first_tensor(model(**batch)))
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (first_tensor(model(**batch)) - target).pow(2).mean()
        loss.backward()
        optimizer.step()
    trainable = trainable_before | set(method.trainable_parameters(model))
    protected = set(before) - trainable
    if method.reparameterizes_base:
        protected = {
            n for n in protected if not any(n.startswith(t + ".") for t in method.adapted_modules)
        }
    now = dict(model.named_parameters())
    changed = [n for n in sorted(protected) if n in now and not torch.equal(now[n], before[n])]
    if changed:
        raise AssertionError(
            f"method {name!r}: parameters it does not train changed in training: {changed[:5]}"
        )
    if not any(
        n in before and (now[n].shape != before[n].shape or not torch.equal(now[n], before[n]))
        for n in trainable
        if n in now
    ):
        raise AssertionError(f"method {name!r}: no trainable parameter changed in {steps} steps")
