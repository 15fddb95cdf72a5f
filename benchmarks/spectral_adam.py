"""How much of the spectral filter survives AdamW, and why it leaves LoRA's predictions alone.

all-MiniLM-L6-v2 on BBC News (full training split), ``lora`` on every attention
and FFN matrix, the job's defaults (``graphopt.finetune.config.FinetuneConfig``:
lr, head lr, weight decay, batch, max_length, steps, warm-up, linear schedule).

1. **Per step, same state, same gradient.** Along the trajectory of
   ``lora + spectral`` (the filter on the gradient, [SPEC]'s "a spectral filter
   adjusts gradients"), at every step the gradient ``g`` of each ``lora_B`` and
   AdamW's state are taken as they are, and AdamW's update is computed three
   ways from that one state (with a scratch copy of the optimizer):
   ``u(g)`` (no filter), ``u(F g)`` (the filter on the gradient: what the run
   does; checked equal to the real step) and ``F u(g)`` (the filter on the
   update). Reported: cosines and relative differences, over all 36 ``lora_B``
   together.
2. **Weights vs predictions.** ``lora`` and ``lora + spectral`` trained side by
   side (same seed, batches and dropout masks); after 3 steps and at the end:
   how far apart ``B`` and ``dW = s B A`` are, how large the adapter's output is
   next to the base layer's, how far apart the test logits are compared with
   the logit margins, and how many test predictions differ.

    .venv/bin/python benchmarks/spectral_adam.py            # results/spectral_adam.{md,json}
    .venv/bin/python benchmarks/spectral_adam.py --quick    # 12 steps, smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import graphopt
from graphopt.data import load_bbc_news, stratified_split
from graphopt.finetune.batches import batch_indices, encode
from graphopt.finetune.config import FinetuneConfig
from graphopt.finetune.model import default_target_modules, head_modules, load_classifier
from graphopt.optim import GraphOptimizer

RESULTS = Path(__file__).parent / "results"
SNAPSHOT_STEP = 3
FINDINGS = "## Findings"
"""Heading of the hand-written part of the results file (kept when the tables are rewritten)."""


# -- a run ------------------------------------------------------------------------------------


def build(
    data: Any, spectral: dict[str, Any] | None, config: FinetuneConfig, total_steps: int
) -> tuple[nn.Module, Any, GraphOptimizer, Any]:
    """The job's model, methods, optimizer (body at lr, head at head_lr) and schedule."""
    from transformers import get_scheduler

    torch.manual_seed(config.seed)
    model, tokenizer = load_classifier(None, len(data.train.label_names))
    targets = default_target_modules(model)
    head = head_modules(model)
    graphopt.apply(model, "lora", target_modules=targets, trainable_extra=head)
    if spectral is not None:
        stacked = [f"{name}.lora_B" for name in targets]
        graphopt.apply(model, "spectral", target_modules=stacked, **spectral)
    body = [
        p for n, p in model.named_parameters() if p.requires_grad and n.split(".")[0] not in head
    ]
    heads = [p for n, p in model.named_parameters() if p.requires_grad and n.split(".")[0] in head]
    optimizer = GraphOptimizer.for_model(
        model,
        params=[{"params": body, "lr": config.lr}, {"params": heads, "lr": config.head_lr}],
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    scheduler = get_scheduler(
        "linear",
        optimizer,
        num_warmup_steps=math.ceil(config.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    return model, tokenizer, optimizer, scheduler


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if hasattr(m, "lora_B")}


def adamw_updates(
    optimizer: GraphOptimizer, params: list[torch.Tensor], grads: list[torch.Tensor]
) -> list[torch.Tensor]:
    """AdamW's update of ``params`` for ``grads``, from the optimizer's current state
    and settings, on scratch copies (the optimizer itself is not touched)."""
    group = next(g for g in optimizer.param_groups if any(p is params[0] for p in g["params"]))
    copies = [p.detach().clone() for p in params]
    scratch = torch.optim.AdamW(
        copies,
        lr=group["lr"],
        betas=group["betas"],
        eps=group["eps"],
        weight_decay=group["weight_decay"],
    )
    for copy, param, grad in zip(copies, params, grads, strict=True):
        copy.grad = grad.clone()
        if optimizer.state.get(param):
            scratch.state[copy] = {k: v.clone() for k, v in optimizer.state[param].items()}
    scratch.step()
    return [copy - param.detach() for copy, param in zip(copies, params, strict=True)]


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||."""
    return float((a - b).norm() / b.norm())


def flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1).double() for t in tensors])


def step_record(optimizer: GraphOptimizer, model: nn.Module) -> dict[str, float]:
    """The three AdamW updates of every lora_B from the current state and gradient."""
    spectral_filter = optimizer.transforms[0]
    states = optimizer.transform_state(spectral_filter)
    params = [layer.lora_B.weight for layer in lora_layers(model).values()]
    grads = [p.grad.detach().clone() for p in params]
    filtered = [
        spectral_filter.transform(g.clone(), p, states[p])
        for g, p in zip(grads, params, strict=True)
    ]
    raw_update = adamw_updates(optimizer, params, grads)
    gradient_filtered = adamw_updates(optimizer, params, filtered)
    update_filtered = [
        spectral_filter.transform(u.clone(), p, states[p])
        for u, p in zip(raw_update, params, strict=True)
    ]
    g, fg = flat(grads), flat(filtered)
    u, ufg, fu = flat(raw_update), flat(gradient_filtered), flat(update_filtered)
    return {
        "cos_gradient": cosine(g, fg),
        "cos_update_gradient_filter": cosine(u, ufg),
        "rel_update_gradient_filter": relative(ufg, u),
        "cos_update_update_filter": cosine(u, fu),
        "rel_update_update_filter": relative(fu, u),
        "norm_ratio_gradient": float(fg.norm() / g.norm()),
        "norm_ratio_update_gradient_filter": float(ufg.norm() / u.norm()),
        "norm_ratio_update_update_filter": float(fu.norm() / u.norm()),
        "_expected": gradient_filtered,  # checked against the real step, then dropped
    }


@torch.no_grad()
def logits_and_ratios(
    model: nn.Module, encoded: Any, batch_size: int
) -> tuple[torch.Tensor, float]:
    """Test logits and the median over adapted layers of ||adapter output|| / ||base output||."""
    was_training = model.training
    model.eval()
    ratios: dict[str, list[float]] = {}
    hooks = []
    for name, layer in lora_layers(model).items():

        def hook(module, inputs, output, name=name):
            base = module.base_layer(inputs[0])
            delta = output - base
            ratios.setdefault(name, []).append(float(delta.norm() / base.norm()))

        hooks.append(layer.register_forward_hook(hook))
    out = []
    for start in range(0, len(encoded), batch_size):
        batch = encoded.batch(list(range(start, min(start + batch_size, len(encoded)))), "cpu")
        out.append(model(**batch).logits)
    for handle in hooks:
        handle.remove()
    model.train(was_training)
    return torch.cat(out), statistics.median(statistics.mean(v) for v in ratios.values())


@torch.no_grad()
def without_adapter(model: nn.Module, encoded: Any, batch_size: int) -> torch.Tensor:
    """Test logits with every lora_B set to zero (the trained head on the base encoder)."""
    layers = list(lora_layers(model).values())
    saved = [layer.lora_B.weight.detach().clone() for layer in layers]
    for layer in layers:
        layer.lora_B.weight.zero_()
    logits, _ = logits_and_ratios(model, encoded, batch_size)
    for layer, weight in zip(layers, saved, strict=True):
        layer.lora_B.weight.copy_(weight)
    return logits


@torch.no_grad()
def adapter_output_difference(lora: nn.Module, stacked: nn.Module, encoded: Any) -> float:
    """Median over adapted layers of ||X (dW_spectral - dW_lora)^T|| / ||X dW_lora^T||, X
    the layer's inputs in the lora run on the first 32 test articles: how far apart the
    two adapters' outputs B A x are on real inputs (what the weights' distance becomes)."""
    inputs: dict[str, list[torch.Tensor]] = {}
    layers = lora_layers(lora)
    hooks = [
        layer.register_forward_hook(
            lambda module, args, out, name=name: inputs.setdefault(name, []).append(args[0])
        )
        for name, layer in layers.items()
    ]
    was_training = lora.training
    lora.eval()
    lora(**encoded.batch(list(range(32)), "cpu"))
    lora.train(was_training)
    for handle in hooks:
        handle.remove()
    other = lora_layers(stacked)
    ratios = []
    for name, layer in layers.items():
        x = torch.cat(inputs[name]).reshape(-1, layer.in_features)
        mask = x.abs().sum(dim=1) > 0
        ours, theirs = layer.delta_weight()[0], other[name].delta_weight()[0]
        ratios.append(float((x[mask] @ (theirs - ours).T).norm() / (x[mask] @ ours.T).norm()))
    return statistics.median(ratios)


def compare(
    lora: nn.Module, stacked: nn.Module, encoded: Any, labels: torch.Tensor, batch_size: int
) -> dict[str, float]:
    """Weights vs predictions of the two runs at one step."""
    b1 = flat([m.lora_B.weight.detach() for m in lora_layers(lora).values()])
    b2 = flat([m.lora_B.weight.detach() for m in lora_layers(stacked).values()])

    def delta_w(model: nn.Module) -> torch.Tensor:
        return flat([m.delta_weight()[0].detach() for m in lora_layers(model).values()])

    logits1, ratio1 = logits_and_ratios(lora, encoded, batch_size)
    logits2, ratio2 = logits_and_ratios(stacked, encoded, batch_size)
    logits0 = without_adapter(lora, encoded, batch_size)
    top2 = logits1.topk(2, dim=1).values
    margin = (top2[:, 0] - top2[:, 1]).double()
    spectral_shift = (logits2 - logits1).abs().amax(dim=1).double()
    adapter_shift = (logits1 - logits0).abs().amax(dim=1).double()
    predicted1, predicted2, predicted0 = (x.argmax(1) for x in (logits1, logits2, logits0))
    return {
        "rel_lora_B": relative(b2, b1),
        "rel_delta_w": relative(delta_w(stacked), delta_w(lora)),
        "cos_lora_B": cosine(b2, b1),
        "rel_adapter_output": adapter_output_difference(lora, stacked, encoded),
        "adapter_to_base_output_lora": ratio1,
        "adapter_to_base_output_stacked": ratio2,
        "median_logit_margin": float(margin.median()),
        "median_max_logit_shift_spectral": float(spectral_shift.median()),
        "max_logit_shift_spectral": float(spectral_shift.max()),
        "median_max_logit_shift_adapter": float(adapter_shift.median()),
        "predictions_changed_by_spectral": int((predicted1 != predicted2).sum()),
        "predictions_changed_by_adapter": int((predicted1 != predicted0).sum()),
        "accuracy_lora": float((predicted1 == labels).double().mean()),
        "accuracy_stacked": float((predicted2 == labels).double().mean()),
        "accuracy_without_adapter": float((predicted0 == labels).double().mean()),
        "test_examples": len(labels),
    }


def train_side_by_side(
    steps: int, config: FinetuneConfig, spectral: dict[str, Any]
) -> dict[str, Any]:
    data = stratified_split(load_bbc_news(), seed=0)
    lora, tokenizer, lora_opt, lora_sched = build(data, None, config, steps)
    stacked, _, stacked_opt, stacked_sched = build(data, spectral, config, steps)
    train = encode(tokenizer, data.train, config.max_length)
    test = encode(tokenizer, data.test, config.max_length)
    per_step, losses, comparisons = [], {"lora": [], "stacked": []}, {}
    torch.manual_seed(config.seed)  # the same dropout masks in both runs
    rng = torch.get_rng_state()
    began = time.perf_counter()
    for step in range(steps):
        _, indices = batch_indices(len(train), config.batch_size, config.seed, step)
        batch = train.batch(indices, "cpu")
        for name, model, opt, sched in (
            ("lora", lora, lora_opt, lora_sched),
            ("stacked", stacked, stacked_opt, stacked_sched),
        ):
            torch.set_rng_state(rng)
            loss = model(**batch).loss
            loss.backward()
            # the schedule's first step has lr 0 (linear warm-up from 0): no update to compare
            measured = name == "stacked" and opt.param_groups[0]["lr"] > 0
            if measured:
                record = step_record(opt, model)
                expected = record.pop("_expected")
                params = [m.lora_B.weight for m in lora_layers(model).values()]
                before = [p.detach().clone() for p in params]
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses[name].append(float(loss.detach()))
            if measured:
                actual = flat([p.detach() - b for p, b in zip(params, before, strict=True)])
                record["check_real_step_rel_error"] = relative(actual, flat(expected))
                record["step"] = step + 1
                per_step.append(record)
        rng = torch.get_rng_state()
        if step + 1 in (SNAPSHOT_STEP, steps):
            comparisons[step + 1] = compare(
                lora, stacked, test, test.labels, config.eval_batch_size
            )
            torch.set_rng_state(rng)
        print(f"step {step + 1}/{steps}  {time.perf_counter() - began:.0f} s", flush=True)
    return {"per_step": per_step, "losses": losses, "comparisons": comparisons}


# -- report -----------------------------------------------------------------------------------


def summary(per_step: list[dict[str, float]], key: str) -> str:
    values = [r[key] for r in per_step]
    return (
        f"{values[0]:.4f} | {statistics.median(values):.4f} | {min(values):.4f} | "
        f"{max(values):.4f} | {values[-1]:.4f}"
    )


def write_markdown(result: dict[str, Any], path: Path) -> None:
    meta, per_step, comparisons = result["meta"], result["per_step"], result["comparisons"]
    rows = [
        ("cos(g, F g): the gradient itself", "cos_gradient"),
        ("cos(u(g), u(F g)): filter on the gradient, through AdamW", "cos_update_gradient_filter"),
        ("cos(u(g), F u(g)): filter on the update", "cos_update_update_filter"),
        ("rel. change ‖u(F g) − u(g)‖ / ‖u(g)‖", "rel_update_gradient_filter"),
        ("rel. change ‖F u(g) − u(g)‖ / ‖u(g)‖", "rel_update_update_filter"),
        ("‖F g‖ / ‖g‖", "norm_ratio_gradient"),
        ("‖u(F g)‖ / ‖u(g)‖", "norm_ratio_update_gradient_filter"),
        ("‖F u(g)‖ / ‖u(g)‖", "norm_ratio_update_update_filter"),
    ]
    lines = [
        "# How much of the spectral filter survives AdamW",
        "",
        f"Reproduce: `{meta['command']}` ({meta['seconds']:.0f} s, {meta['threads']} thread(s), "
        f"torch {meta['torch']}).",
        "",
        f"all-MiniLM-L6-v2 on BBC News (full training split, {meta['train_examples']} articles), "
        f"`lora` (r = 8) on the 36 attention and FFN matrices, `spectral` stacked on every "
        f"`lora_B` with its defaults ({meta['spectral']}); the job's defaults: lr {meta['lr']}, "
        f"head lr {meta['head_lr']}, weight decay {meta['weight_decay']}, batch "
        f"{meta['batch_size']}, max_length {meta['max_length']}, {meta['steps']} steps, "
        f"linear schedule with {meta['warmup_ratio']:.0%} warm-up, seed {meta['seed']}.",
        "",
        "## 1. Per step: AdamW's update with and without the filter, same state, same gradient",
        "",
        "`g`: the gradient of all 36 `lora_B` (concatenated); `u(.)`: AdamW's update from "
        "the run's current state; `F`: the spectral filter. The trajectory is the "
        "`lora + spectral` run (filter on the gradient); its real step matched `u(F g)` to "
        f"{max(r['check_real_step_rel_error'] for r in per_step):.1e} relative at every step. "
        f"First step: step {per_step[0]['step']} (the linear warm-up gives step 1 lr 0).",
        "",
        "| quantity | first step | median | min | max | last step |",
        "|---|---|---|---|---|---|",
        *[f"| {label} | {summary(per_step, key)} |" for label, key in rows],
        "",
        "## 2. Weights vs predictions: `lora` and `lora + spectral` side by side",
        "",
        "Same seed, batches and dropout masks; test split "
        f"({comparisons[str(SNAPSHOT_STEP)]['test_examples']} articles). The adapter's "
        "output ratio is the median over adapted layers of ‖B A x‖ s / ‖W x + b‖ on the test "
        "set; a logit shift is the largest |change| of an article's 5 logits.",
        "",
        "| quantity | " + " | ".join(f"after {s} steps" for s in comparisons) + " |",
        "|---|" + "---|" * len(comparisons),
    ]
    keys = [
        ("‖B_spectral − B_lora‖ / ‖B_lora‖", "rel_lora_B", "{:.3f}"),
        ("‖dW_spectral − dW_lora‖ / ‖dW_lora‖", "rel_delta_w", "{:.3f}"),
        ("cos(B_spectral, B_lora)", "cos_lora_B", "{:.4f}"),
        ("‖(dW_spectral − dW_lora) x‖ / ‖dW_lora x‖ on test inputs x", "rel_adapter_output",
         "{:.3f}"),
        ("adapter output / base output (lora)", "adapter_to_base_output_lora", "{:.2e}"),
        ("adapter output / base output (lora + spectral)", "adapter_to_base_output_stacked",
         "{:.2e}"),
        ("median logit margin (top 1 − top 2, lora)", "median_logit_margin", "{:.3f}"),
        ("median logit shift: adapter on vs off (lora)", "median_max_logit_shift_adapter",
         "{:.2e}"),
        ("median logit shift: lora + spectral vs lora", "median_max_logit_shift_spectral",
         "{:.2e}"),
        ("largest logit shift: lora + spectral vs lora", "max_logit_shift_spectral", "{:.2e}"),
        ("test predictions changed by the adapter", "predictions_changed_by_adapter", "{}"),
        ("test predictions changed by spectral", "predictions_changed_by_spectral", "{}"),
        ("test accuracy, lora", "accuracy_lora", "{:.4f}"),
        ("test accuracy, lora + spectral", "accuracy_stacked", "{:.4f}"),
        ("test accuracy, lora's head without the adapter", "accuracy_without_adapter", "{:.4f}"),
    ]  # fmt: skip
    for label, key, fmt in keys:
        lines.append(
            f"| {label} | " + " | ".join(fmt.format(c[key]) for c in comparisons.values()) + " |"
        )
    lines += ["", "Training loss (lora / lora + spectral), every 10th step:", ""]
    losses = result["losses"]
    lines.append(
        ", ".join(
            f"{i + 1}: {losses['lora'][i]:.3f} / {losses['stacked'][i]:.3f}"
            for i in range(0, len(losses["lora"]), 10)
        )
    )
    previous = path.read_text(encoding="utf-8") if path.exists() else ""
    findings = previous[previous.find(FINDINGS) :] if FINDINGS in previous else ""
    path.write_text(
        "\n".join(lines) + "\n" + ("\n" + findings if findings else ""), encoding="utf-8"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="12 steps, written to a temporary folder"
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = FinetuneConfig()
    steps = 12 if args.quick else config.max_steps
    spectral: dict[str, Any] = {}
    began = time.perf_counter()
    result = train_side_by_side(steps, config, spectral)
    defaults = graphopt.registry.get("method", "spectral").config_class(target_modules="x")
    result["comparisons"] = {str(k): v for k, v in result["comparisons"].items()}
    result["meta"] = {
        "command": "python benchmarks/spectral_adam.py" + (" --quick" if args.quick else ""),
        "seconds": time.perf_counter() - began,
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": platform.platform(),
        "steps": steps,
        "train_examples": len(stratified_split(load_bbc_news(), seed=0).train),
        "spectral": f"k = {defaults.k}, {defaults.graph}, heat t = "
        f"{defaults.response_options['t']}, high_gain = {defaults.high_gain}",
        **{
            k: getattr(config, k)
            for k in (
                "lr",
                "head_lr",
                "weight_decay",
                "batch_size",
                "max_length",
                "seed",
                "warmup_ratio",
            )
        },
    }
    out = Path(tempfile.mkdtemp()) / "spectral_adam" if args.quick else RESULTS / "spectral_adam"
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    write_markdown(result, out.with_suffix(".md"))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
