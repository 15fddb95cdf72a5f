"""The conformance matrix every fine-tuning method passes, as a public helper.

Plugin authors call ``check_method("mymethod", make_model, target_modules)``
in their own test suite; graphopt's tests run it for every registered method
on tiny BERT, LLaMA, Qwen2, GPT-2 (``Conv1D``), T5 and ViT models. Each check
raises ``AssertionError`` naming the method and what broke:

1. ``trainable_count``: ``apply``'s summary, the method's documented formula
   (``num_trainable_parameters``) and the tensors it trains agree;
2. ``identity_at_init``: the adapted model computes the base model's outputs
   (when ``Method.identity_at_init``);
3. ``only_trainable_changed``: after a few optimizer steps (``GraphOptimizer.for_model``,
   so the method's callbacks run) every parameter the method does not train
   is unchanged (for ``reparameterizes_base`` methods: outside the targets);

then every trainable tensor is perturbed to random, non-trivial values
(``p += 0.25 max(rms(p), 0.1) N(0, 1)``: a few small steps leave an adapter so
close to its initial value that a wrong merge or unmerge hides in the rounding),
and

4. ``merge_equals_adapted``: merged outputs equal adapted outputs (``rtol``);
5. ``merge_idempotent``: merging twice changes nothing;
6. ``unmerge_restores``: unmerge gives the adapted outputs back (when supported);
7. ``save_load_round_trip``: save, load onto a fresh base model, identical outputs;
8. ``merged_reload`` (Hugging Face models, i.e. with ``save_pretrained``):
   ``merge_and_unload`` -> ``save_pretrained`` -> plain ``from_pretrained`` gives
   the adapted outputs, with exactly the base model's state-dict keys (no bias
   the architecture's config does not declare).
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

from graphopt.adapters import apply, load_adapter, merge, merge_and_unload, save_adapter, unmerge
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
    """Random inputs for a transformers model: ``input_ids`` (``config.vocab_size``) or,
    for a vision model (``main_input_name == "pixel_values"``), images of
    ``config.image_size``; plus ``decoder_input_ids`` for an encoder-decoder (T5)."""
    generator = torch.Generator().manual_seed(1234)
    config = model.config  # type: ignore[union-attr]
    like = next(model.parameters())

    def ids() -> torch.Tensor:
        return torch.randint(0, int(config.vocab_size), (batch, length), generator=generator)

    if getattr(model, "main_input_name", "input_ids") == "pixel_values":
        size, channels = int(config.image_size), int(config.num_channels)
        inputs = {"pixel_values": torch.randn(batch, channels, size, size, generator=generator)}
    else:
        inputs = {"input_ids": ids()}
    if getattr(config, "is_encoder_decoder", False):
        inputs["decoder_input_ids"] = ids()
    return {
        name: value.to(like.device, like.dtype if value.is_floating_point() else value.dtype)
        for name, value in inputs.items()
    }


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
        rtol: relative tolerance of the floating-point comparisons (merge, identity,
            merged reload); the save/load round trip must be bitwise identical.
        atol: absolute tolerance, as a fraction of the largest expected output.

    Returns the report: ``passed`` and ``skipped`` (a check the method or the model
    does not offer, e.g. ``merged_reload`` on a model without ``save_pretrained``)
    list the checks by name; a failed check raises ``AssertionError``.
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
    base_keys = set(model.state_dict())
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
    perturb(model, seed)
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
    else:
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
    _check_merged_reload(model, batch, base_keys, adapted, close, report)
    return report


def perturb(model: nn.Module, seed: int = 0) -> None:
    """Move every trainable tensor of the model's methods by
    ``0.25 max(rms(p), 0.1) N(0, 1)`` (seeded): random, non-trivial adapter values."""
    generator = torch.Generator().manual_seed(seed + 1)
    seen: set[int] = set()
    with torch.no_grad():
        for method in methods_of(model):
            for param in method.trainable_parameters(model).values():
                if id(param) in seen:
                    continue
                seen.add(id(param))
                rms = float(param.detach().float().pow(2).mean().sqrt())
                noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
                param.add_((0.25 * max(rms, 0.1) * noise).to(param.device, param.dtype))


def _check_merged_reload(
    model: nn.Module,
    batch: Any,
    base_keys: set[str],
    adapted: torch.Tensor,
    close: Callable[[torch.Tensor, torch.Tensor, str], None],
    report: ConformanceReport,
) -> None:
    """``merge_and_unload`` -> ``save_pretrained`` -> ``from_pretrained`` (HF models)."""
    if not hasattr(model, "save_pretrained") or not hasattr(type(model), "from_pretrained"):
        report.skipped.append("merged_reload")
        return
    like = next(model.parameters())
    try:
        merge_and_unload(model)
    except UnsupportedOperationError:
        report.skipped.append("merged_reload")
        return
    extra = sorted(set(model.state_dict()) - base_keys)
    missing = sorted(base_keys - set(model.state_dict()))
    if extra or missing:
        raise AssertionError(
            f"method {report.method!r}: after merge_and_unload the model has state-dict keys "
            f"the architecture does not declare {extra[:5]} (missing {missing[:5]})"
        )
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)  # type: ignore[operator]
        reloaded = type(model).from_pretrained(tmp)  # type: ignore[attr-defined]
        reloaded = reloaded.to(like.device, like.dtype).eval()
    with torch.no_grad():
        output = first_tensor(reloaded(**batch)).detach()
    close(output, adapted, "merge_and_unload -> save_pretrained -> from_pretrained differs")
    report.passed.append("merged_reload")


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
