"""Quality benchmark of issue 20: every method through ``graphopt finetune``, tuned alike.

all-MiniLM-L6-v2 on BBC News. Every run is one ``graphopt finetune`` process
(the Trainer-based job); its ``results.json`` and ``metrics.jsonl`` are read back.

Stages, run one by one; each appends its rows to ``results/finetune_grid.json``
(a run already there with the same key is not run again, so an interrupted stage
continues where it stopped), and ``report`` writes the tables and plots:

* ``smoke``: one tiny run per method (2 steps, 4 per class, max_length 32) and one
  of 3 epochs with a dev evaluation every step, to check that the job accepts
  every method and option and writes what the grid reads, and two 10-step runs at
  max_length 128 that time a step (what ``plan`` estimates from).
* ``lr``: seed 0, 16 per class: each method at the 4 learning rates of its
  family; the best **dev** accuracy picks the method's learning rate (``budget
  full`` also picks one on the converged setting).
* ``few-shot``: 4, 8, 16, 32 examples per class x 5 seeds at the chosen rate.
* ``converged``: the whole training split, 3 epochs, max_length 128, dev
  accuracy every ``EVAL_EVERY`` steps (curves; steps to 95% of LoRA's final dev
  accuracy).
* ``high-lr``: 16 per class, 5 seeds, the chosen rate x 3 (stability).
* ``report``: mean and 95% t-interval over seeds of test accuracy and macro-F1,
  trainable parameters, step time; whether head-only falls within LoRA's interval
  (then that setting cannot rank adaptation methods); the goals of issue 20.

Budgets: ``cpu`` (this 2-core machine: the stages' method subsets below, about
the hours ``plan`` prints) and ``full`` (every method in every setting; what
``benchmarks/gpu_finetune.sh`` runs on one GPU).

    .venv/bin/python benchmarks/finetune_grid.py plan                  # runs + estimated cost
    .venv/bin/python benchmarks/finetune_grid.py smoke
    .venv/bin/python benchmarks/finetune_grid.py lr --jobs 2
    .venv/bin/python benchmarks/finetune_grid.py few-shot --jobs 2
    .venv/bin/python benchmarks/finetune_grid.py converged --jobs 2
    .venv/bin/python benchmarks/finetune_grid.py high-lr --jobs 2
    .venv/bin/python benchmarks/finetune_grid.py report
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
"""Default folder of ``finetune_grid.json`` / ``.md`` / ``.png`` (``--results``)."""

METHODS: dict[str, list[str]] = {
    "head": ["head"],  # the classification head on frozen features (the job's head-only mode)
    "full": ["full"],
    "lora": ["lora:r=8"],
    "linchain": ["linchain:r=8"],
    "pca_ggm": ["pca_ggm"],
    "spectral": ["spectral"],
    "lora+spectral": ["lora:r=8", "spectral"],
    "lora+spectral(update)": ["lora:r=8", "spectral:where=update"],
    "linchain+spectral": ["linchain:r=8", "spectral"],
    "pca_ggm+spectral": ["pca_ggm", "spectral"],
}
"""label -> ``--method`` arguments (each method at its defaults but the rank)."""

LR_GRIDS = {
    "adapter": [1e-4, 3e-4, 1e-3, 3e-3],
    "weights": [1e-5, 3e-5, 1e-4, 3e-4],  # methods that train the pretrained matrices
    "head": [1e-3, 3e-3, 1e-2, 3e-2],  # head-only: the head's rate is the one tuned
}
"""The same 4-value grid for every method of a family (factor ~3 apart)."""

HEAD_LR = 5e-3
"""The classification head's rate for every method but head-only (the job's default)."""
FEW_SHOT_STEPS = 40
EPOCHS = 3
EVAL_EVERY = 20
SEEDS = [0, 1, 2, 3, 4]
SHOTS = [4, 8, 16, 32]
HIGH_LR_FACTOR = 3.0
TRAIN_EXAMPLES, DEV_EXAMPLES = 1276, 425
"""Sizes of the job's stratified split of the deduplicated corpus (for cost estimates)."""

CPU_METHODS = {
    "few-shot-4": ["head", "lora", "lora+spectral", "lora+spectral(update)", "linchain",
                   "linchain+spectral", "pca_ggm", "pca_ggm+spectral"],
    "few-shot-8": ["head", "lora", "lora+spectral", "lora+spectral(update)", "linchain",
                   "linchain+spectral", "pca_ggm", "pca_ggm+spectral"],
    "few-shot-16": list(METHODS),
    "few-shot-32": ["head", "lora", "linchain", "pca_ggm"],
    "converged": ["head", "full", "lora", "linchain", "pca_ggm"],
    "high-lr": ["full", "lora", "linchain", "pca_ggm", "spectral", "lora+spectral",
                "lora+spectral(update)"],
}  # fmt: skip


@dataclass(frozen=True)
class Budget:
    """How much of the grid runs: ``full`` is all of it (one GPU); ``cpu`` fits this
    2-core machine in a few hours (``plan`` prints the estimate)."""

    methods: dict[str, list[str]] | None  # per setting; None: every method everywhere
    few_shot_max_length: int
    converged_seeds: list[int]
    high_lr_seeds: list[int]
    converged_eval_every: int
    lr_on_converged: bool  # pick the converged setting's rate on its own dev runs


BUDGETS = {
    "full": Budget(None, 128, SEEDS, SEEDS, EVAL_EVERY, True),
    # what the goals of issue 20 compare: the adapters against LoRA at 16 shots and
    # converged, spectral stacked on each adapter at 4 and 8 shots, head-only (can the
    # setting rank methods?) and full fine-tuning as references; few-shot at
    # max_length 64 (the converged setting keeps 128); 3 seeds and a dev evaluation
    # every 40 steps when converged, 3 seeds at the high rate; one rate per method
    "cpu": Budget(CPU_METHODS, 64, [0, 1, 2], [0, 1, 2], 2 * EVAL_EVERY, False),
}


def family(label: str) -> str:
    if label == "head":
        return "head"
    return "weights" if label in ("full", "spectral") else "adapter"


@dataclass(frozen=True)
class Run:
    """One ``graphopt finetune`` process."""

    setting: str  # "lr", "few-shot-<n>", "converged", "high-lr", "smoke"
    label: str
    lr: float
    seed: int
    few_shot: int | None
    steps: int | None  # None: EPOCHS epochs
    max_length: int
    eval_every: int | None = None

    @property
    def key(self) -> str:
        return f"{self.setting}|{self.label}|{self.lr:g}|{self.seed}|{self.few_shot}"

    def folder(self, workdir: Path) -> Path:
        safe = self.label.replace("+", "-").replace("(", "-").replace(")", "")
        return workdir / f"{self.setting}-{safe}-lr{self.lr:g}-s{self.seed}"


@dataclass
class Job:
    """How to invoke the CLI, found from its ``--help`` (the job's flags evolve)."""

    device: str = "cpu"
    command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "graphopt.cli"])
    flags: set[str] = field(default_factory=set)

    def discover(self) -> Job:
        text = subprocess.run(
            [*self.command, "finetune", "--help"], capture_output=True, text=True, check=True
        ).stdout
        self.flags = {word.rstrip(",") for word in text.split() if word.startswith("--")}
        return self

    def arguments(self, run: Run, output: Path, threads: int) -> list[str]:
        body_lr, head_lr = (HEAD_LR, run.lr) if run.label == "head" else (run.lr, HEAD_LR)
        methods = METHODS[run.label]
        if run.steps is not None and any(m.startswith("pca_ggm") for m in methods):
            # pca_ggm's warm-up (default 100 steps) must end inside a short budget
            methods = [m + ":warmup_steps=10" if m == "pca_ggm" else m for m in methods]
        args = [*self.command, "finetune", "--no-progress", "--overwrite",
                "--output-dir", str(output), "--seed", str(run.seed), "--lr", f"{body_lr:g}",
                "--head-lr", f"{head_lr:g}", "--max-length", str(run.max_length),
                "--device", self.device]  # fmt: skip
        if run.steps is not None:
            args += ["--max-steps", str(run.steps), "--checkpoint-every", str(run.steps)]
        else:
            args += ["--epochs", str(EPOCHS), "--max-steps", "0", "--checkpoint-every", "100000"]
        if run.few_shot is not None:
            args += ["--few-shot", str(run.few_shot)]
        if run.eval_every is not None and "--eval-every" in self.flags:
            args += ["--eval-every", str(run.eval_every)]
        if "--threads" in self.flags:
            args += ["--threads", str(threads)]
        for method in methods:
            args += ["--method", method]
        return args


# -- the grid ----------------------------------------------------------------------------------


def chosen_lrs(rows: list[dict], setting: str = "lr") -> dict[str, float]:
    """Per method, the learning rate of the best dev accuracy in the ``setting`` rows
    (a tie goes to the smaller rate)."""
    scores: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        if row["setting"] == setting and "dev_accuracy" in row:
            scores.setdefault(row["label"], []).append((row["dev_accuracy"], -row["lr"]))
    return {label: -max(values)[1] for label, values in scores.items()}


def stage_runs(stage: str, budget: Budget, rows: list[dict], fixed_lr: bool = False) -> list[Run]:
    """The runs of ``stage`` (needs the ``lr`` stage's rows for the chosen rates, unless
    ``fixed_lr``: every method at its family's second grid rate, untuned)."""

    def methods(setting: str) -> list[str]:
        return list(METHODS) if budget.methods is None else budget.methods[setting]

    length = budget.few_shot_max_length
    if stage == "smoke":  # every method, tiny; 3 epochs with dev curves; two timed runs
        return [
            *(Run("smoke", label, LR_GRIDS[family(label)][1], 0, 4, 2, 32) for label in METHODS),
            Run("smoke-epochs", "lora", LR_GRIDS["adapter"][1], 0, 4, None, 32, 1),
            *(Run("timing", label, LR_GRIDS[family(label)][1], 0, 16, 10, 128)
              for label in ("lora", "full")),
        ]  # fmt: skip
    if stage == "lr":
        runs = [
            Run("lr", label, lr, 0, 16, FEW_SHOT_STEPS, length)
            for label in METHODS
            for lr in LR_GRIDS[family(label)]
        ]
        if budget.lr_on_converged:
            runs += [
                Run("lr-converged", label, lr, 0, None, None, 128, EVAL_EVERY)
                for label in METHODS
                for lr in LR_GRIDS[family(label)]
            ]
        return runs
    lrs = {k: LR_GRIDS[family(k)][1] for k in METHODS} if fixed_lr else chosen_lrs(rows)
    converged_lrs = chosen_lrs(rows, "lr-converged") if budget.lr_on_converged else lrs
    missing = sorted(set(METHODS) - set(lrs))
    if missing:
        raise SystemExit(f"run the 'lr' stage first: no chosen learning rate for {missing}")
    if stage == "few-shot":
        return [
            Run(f"few-shot-{shots}", label, lrs[label], seed, shots, FEW_SHOT_STEPS, length,
                EVAL_EVERY // 2 if shots == 16 else None)
            for shots in SHOTS
            for label in methods(f"few-shot-{shots}")
            for seed in SEEDS
        ]  # fmt: skip
    if stage == "converged":
        return [
            Run(
                "converged",
                label,
                converged_lrs[label],
                seed,
                None,
                None,
                128,
                budget.converged_eval_every,
            )
            for label in methods("converged")
            for seed in budget.converged_seeds
        ]
    if stage == "high-lr":
        return [
            Run("high-lr", label, HIGH_LR_FACTOR * lrs[label], seed, 16, FEW_SHOT_STEPS, length)
            for label in methods("high-lr")
            for seed in budget.high_lr_seeds
        ]
    raise ValueError(f"unknown stage {stage!r}")


def execute(run: Run, job: Job, workdir: Path, threads: int) -> dict[str, Any]:
    """One run; its row (test/dev scores, timings, curves) or an ``error`` row."""
    output = run.folder(workdir)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    began = time.perf_counter()
    done = subprocess.run(
        job.arguments(run, output, threads), capture_output=True, text=True, env=env
    )
    row: dict[str, Any] = {
        **asdict(run),
        "key": run.key,
        "wall_s": time.perf_counter() - began,
        "load_average": os.getloadavg()[0],  # the machine is shared: read timings with it
    }
    if done.returncode != 0:
        row["error"] = (done.stderr or done.stdout)[-1500:]
        row["diverged"] = "diverged" in row["error"]
        return row
    results = json.loads((output / "results.json").read_text())
    row.update(
        accuracy=results["test"]["accuracy"],
        macro_f1=results["test"]["macro_f1"],
        dev_accuracy=results["dev"]["accuracy"],
        steps_run=results["steps"],
        trainable_parameters=results["trainable_parameters"],
        median_step_time_s=results["median_step_time_s"],
        curve=read_curve(output / "metrics.jsonl"),
    )
    return row


def read_curve(path: Path) -> dict[str, list]:
    """Training loss and dev accuracy by step, from the job's ``metrics.jsonl``."""
    loss, dev = [], []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record.get("split") == "dev" and "eval" in record:
                dev.append([record["step"], record["eval"].get("accuracy")])
            elif "loss" in record and "eval" not in record:
                loss.append([record["step"], record["loss"]])
    return {"loss": loss, "dev_accuracy": dev}


def load_rows(folder: Path) -> list[dict]:
    path = folder / "finetune_grid.json"
    return json.loads(path.read_text(encoding="utf-8"))["runs"] if path.exists() else []


def save_rows(folder: Path, rows: list[dict], meta: dict[str, Any]) -> None:
    """``finetune_grid.json`` in ``folder``, written atomically (a stage may be killed)."""
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / "finetune_grid.json.tmp"
    temporary.write_text(json.dumps({"meta": meta, "runs": rows}, indent=1) + "\n")
    temporary.replace(folder / "finetune_grid.json")


# -- cost ------------------------------------------------------------------------------------


def estimate_seconds(run: Run, rows: list[dict], step_seconds: float | None = None) -> float:
    """Wall time of ``run`` from the measured rows (of >= 5 steps), scaled linearly in
    max_length: the median step time of its method (else LoRA's, else 2 s at 128
    tokens), a dev evaluation of 425 articles as 425 / 16 forward passes of a batch (a
    third of a training step each) per ``eval_every``, and the median fixed cost of a
    process (loading, tokenising, the final dev + test evaluation; else 60 s at 128).
    ``step_seconds`` (a LoRA step at 128 tokens) replaces the measurements, scaling
    every method and the fixed cost alike (e.g. to estimate an idle machine)."""
    timed = [r for r in rows if r.get("median_step_time_s") and r.get("steps_run", 0) >= 5]
    if step_seconds is not None:
        lora = [r for r in timed if r["label"] == "lora"]
        scale = step_seconds / (128 * lora[0]["median_step_time_s"] / lora[0]["max_length"])
        timed = [{**r, "median_step_time_s": r["median_step_time_s"] * scale,
                  "wall_s": r["wall_s"] * scale} for r in timed]  # fmt: skip

    def per_token(row: dict) -> float:
        return row["median_step_time_s"] / row["max_length"]

    same = [per_token(r) for r in timed if r["label"] == run.label]
    same = same or [per_token(r) for r in timed if r["label"] == "lora"]
    step = (statistics.median(same) if same else 2.0 / 128) * run.max_length
    fixed = [(r["wall_s"] - r["steps_run"] * r["median_step_time_s"]) / r["max_length"]
             for r in timed]  # fmt: skip
    overhead = (statistics.median(fixed) if fixed else 60.0 / 128) * run.max_length
    steps = run.steps if run.steps is not None else EPOCHS * (TRAIN_EXAMPLES // 16)
    evaluations = 0 if run.eval_every is None else steps // run.eval_every
    return overhead + steps * step + evaluations * (DEV_EXAMPLES / 16 / 3) * step


# -- report ------------------------------------------------------------------------------------


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% t-interval."""
    from scipy import stats

    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, float("nan")
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, half


def summarise(rows: list[dict]) -> list[dict]:
    table = []
    tuning = ("lr", "lr-converged", "smoke", "smoke-epochs", "timing")
    settings = sorted({r["setting"] for r in rows if r["setting"] not in tuning})
    for setting in settings:
        for label in METHODS:
            runs = [r for r in rows if r["setting"] == setting and r["label"] == label]
            if not runs:
                continue
            ok = [r for r in runs if "error" not in r]
            entry: dict[str, Any] = {
                "setting": setting,
                "method": label,
                "runs": len(runs),
                "failed": len(runs) - len(ok),
                "diverged": sum(bool(r.get("diverged")) for r in runs),
            }
            if ok:
                entry.update(
                    lr=ok[0]["lr"],
                    accuracy=interval([r["accuracy"] for r in ok]),
                    macro_f1=interval([r["macro_f1"] for r in ok]),
                    trainable_parameters=ok[0]["trainable_parameters"],
                    median_step_time_s=statistics.median(r["median_step_time_s"] for r in ok),
                )
            table.append(entry)
    return table


def stacking_effects(rows: list[dict]) -> list[dict[str, Any]]:
    """Per setting, each ``<adapter>+spectral...`` label against ``<adapter>`` alone: the
    mean and 95% t-interval of the per-seed test accuracy differences (paired: a seed
    fixes the examples drawn and the initial factors)."""
    effects = []
    for setting in sorted({r["setting"] for r in rows}):
        scores: dict[str, dict[int, float]] = {}
        for r in rows:
            if r["setting"] == setting and "accuracy" in r:
                scores.setdefault(r["label"], {})[r["seed"]] = r["accuracy"]
        for label, by_seed in scores.items():
            base = label.split("+")[0]
            if "+spectral" not in label or base not in scores:
                continue
            seeds = sorted(set(by_seed) & set(scores[base]))
            if len(seeds) >= 2:
                differences = [by_seed[seed] - scores[base][seed] for seed in seeds]
                effects.append(
                    {"setting": setting, "stack": label, "base": base, "seeds": len(seeds),
                     "difference": interval(differences)}
                )  # fmt: skip
    return effects


def steps_to_target(rows: list[dict], setting: str = "converged") -> dict[str, int | None]:
    """First evaluated step at which a method's mean dev accuracy reaches 95% of LoRA's
    final mean dev accuracy (None: never within the budget)."""

    def mean_curve(label: str) -> dict[int, float]:
        curves = [r["curve"]["dev_accuracy"] for r in rows
                  if r["setting"] == setting and r["label"] == label and "curve" in r]  # fmt: skip
        by_step: dict[int, list[float]] = {}
        for curve in curves:
            for step, value in curve:
                if value is not None:
                    by_step.setdefault(step, []).append(value)
        return {s: statistics.mean(v) for s, v in sorted(by_step.items())}

    lora = mean_curve("lora")
    if not lora:
        return {}
    target = 0.95 * lora[max(lora)]
    result = {}
    for label in METHODS:
        curve = mean_curve(label)
        if curve:
            result[label] = next((s for s, v in curve.items() if v >= target), None)
    return result


def write_report(folder: Path, rows: list[dict], meta: dict[str, Any]) -> None:
    table = summarise(rows)
    lrs = chosen_lrs(rows)
    few_shot_length = BUDGETS[meta.get("budget", "cpu")].few_shot_max_length
    lines = [
        "# Fine-tuning quality grid: all-MiniLM-L6-v2 on BBC News (issue 20)",
        "",
        f"Reproduce: the stages in `benchmarks/finetune_grid.py` (budget `{meta.get('budget')}`),"
        " then `python benchmarks/finetune_grid.py report`.",
        "",
        (
            "Learning rate per method: the best dev accuracy over its family's grid at seed "
            f"0, 16 per class ({FEW_SHOT_STEPS} steps): "
            + ", ".join(f"{k} {v:g}" for k, v in lrs.items())
            + ". "
            if lrs
            else ""
        )
        + (
            "Settings ending in `-fixed-lr`: every method at its family's second grid rate, "
            "untuned (`--fixed-lr`). "
            if any(r["setting"].endswith("-fixed-lr") for r in rows)
            else ""
        )
        + f"Head lr {HEAD_LR:g} (head-only: the tuned rate is the head's). Few-shot: "
        f"{FEW_SHOT_STEPS} steps, max_length {few_shot_length}; converged: {EPOCHS} epochs, "
        "max_length 128. "
        "Intervals: 95% t-intervals over seeds. Trainable parameters include the 5-way head "
        "(1,925).",
        "",
        "| setting | method | lr | runs (failed, diverged) | test accuracy | test macro-F1 |"
        " trainable params | step time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in table:
        if "accuracy" not in row:
            lines.append(f"| {row['setting']} | {row['method']} | - | {row['runs']} "
                         f"({row['failed']}, {row['diverged']}) | failed | | | |")  # fmt: skip
            continue
        acc, f1 = row["accuracy"], row["macro_f1"]
        lines.append(
            f"| {row['setting']} | {row['method']} | {row['lr']:g} | {row['runs']} "
            f"({row['failed']}, {row['diverged']}) | {acc[0]:.4f} ± {acc[1]:.4f} | "
            f"{f1[0]:.4f} ± {f1[1]:.4f} | {row['trainable_parameters']:,} | "
            f"{row['median_step_time_s']:.3f} |"
        )
    lines += ["", "## Can the setting rank adaptation methods?", ""]
    for setting in sorted({r["setting"] for r in table}):
        head = next((r for r in table if r["setting"] == setting and r["method"] == "head"
                     and "accuracy" in r), None)  # fmt: skip
        lora = next((r for r in table if r["setting"] == setting and r["method"] == "lora"
                     and "accuracy" in r), None)  # fmt: skip
        if head and lora:
            inside = abs(head["accuracy"][0] - lora["accuracy"][0]) <= lora["accuracy"][1]
            lines.append(
                f"- {setting}: head-only {head['accuracy'][0]:.4f}, lora "
                f"{lora['accuracy'][0]:.4f} ± {lora['accuracy'][1]:.4f}: "
                + ("head-only is inside LoRA's interval: this setting cannot rank adaptation "
                   "methods." if inside else "adaptation matters here.")
            )  # fmt: skip
    if lines[-1] == "":
        lines.append("No setting has both head-only and LoRA runs yet.")
    stacked = stacking_effects(rows)
    if stacked:
        lines += [
            "",
            "## Spectral stacked on an adapter, paired by seed (same data, same draws)",
            "",
            "| setting | stack vs adapter | seeds | test accuracy difference | verdict |",
            "|---|---|---|---|---|",
        ]
        for row in stacked:
            mean, half = row["difference"]
            verdict = (
                "improves by more than the interval"
                if mean - half > 0
                else "worse by more than the interval"
                if mean + half < 0
                else "no difference beyond the interval"
            )
            lines.append(
                f"| {row['setting']} | {row['stack']} vs {row['base']} | {row['seeds']} | "
                f"{mean:+.4f} ± {half:.4f} | {verdict} |"
            )
    reached = steps_to_target(rows)
    if reached:
        lines += ["", "## Steps to 95% of LoRA's final dev accuracy (converged setting)", ""]
        lines += [f"- {label}: {step if step is not None else 'not reached'}"
                  for label, step in reached.items()]  # fmt: skip
    (folder / "finetune_grid.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plot_curves(rows, folder / "finetune_grid.png")


def plot_curves(rows: list[dict], path: Path) -> None:
    """Training loss and dev accuracy vs step (converged setting, mean over seeds); no
    file before the converged stage has run."""
    if not any(r["setting"] == "converged" and "curve" in r for r in rows):
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axis, dev_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for label in METHODS:
        runs = [r for r in rows if r["setting"] == "converged" and r["label"] == label
                and "curve" in r]  # fmt: skip
        if not runs:
            continue
        for axis, key in ((loss_axis, "loss"), (dev_axis, "dev_accuracy")):
            by_step: dict[int, list[float]] = {}
            for run in runs:
                for step, value in run["curve"][key]:
                    if value is not None:
                        by_step.setdefault(step, []).append(value)
            steps = sorted(by_step)
            axis.plot(steps, [statistics.mean(by_step[s]) for s in steps], label=label, lw=1)
    loss_axis.set(xlabel="step", ylabel="training loss", yscale="log", title="converged setting")
    dev_axis.set(xlabel="step", ylabel="dev accuracy", title="mean over seeds")
    dev_axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# -- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "stage", choices=["plan", "smoke", "lr", "few-shot", "converged", "high-lr", "report"]
    )
    parser.add_argument("--budget", choices=list(BUDGETS), default="cpu")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--workdir", type=Path, default=Path("runs/finetune_grid"))
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the results")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (passed to the job)")
    parser.add_argument("--only", nargs="+", choices=list(METHODS), help="method labels")
    parser.add_argument("--shots", nargs="+", type=int, help="few-shot: only these settings")
    parser.add_argument("--seeds", nargs="+", type=int, help="only these seeds")
    parser.add_argument(
        "--fixed-lr",
        action="store_true",
        help="skip the lr stage: every method at its family's second grid rate (untuned; "
        "rows keyed apart from tuned ones)",
    )
    parser.add_argument(
        "--step-seconds",
        type=float,
        help="plan: assume this LoRA step time at 128 tokens instead of the measured one",
    )
    args = parser.parse_args()
    rows = load_rows(args.results)
    meta = {
        "budget": args.budget,
        "threads": args.threads,
        "jobs": args.jobs,
        "device": args.device,
    }
    if args.stage == "report":
        write_report(args.results, rows, meta)
        print((args.results / "finetune_grid.md").read_text())
        return
    if args.stage == "plan":
        total = 0.0
        for stage in ("lr", "few-shot", "converged", "high-lr"):
            try:
                runs = stage_runs(stage, BUDGETS[args.budget], rows)
            except SystemExit:  # before the lr stage: assume the grid's second rate
                fake = [{"setting": "lr", "label": k, "lr": LR_GRIDS[family(k)][1],
                         "dev_accuracy": 1.0} for k in METHODS]  # fmt: skip
                fake += [{**f, "setting": "lr-converged"} for f in fake]
                runs = stage_runs(stage, BUDGETS[args.budget], fake)
            seconds = sum(estimate_seconds(r, rows, args.step_seconds) for r in runs)
            seconds /= max(args.jobs, 1)
            total += seconds
            print(f"{stage:10s} {len(runs):4d} runs  ~{seconds / 3600:.1f} h")
        timed = [r for r in rows if r["setting"] == "timing" and "median_step_time_s" in r]
        basis = (
            f"a LoRA step at 128 tokens = {args.step_seconds} s (given)"
            if args.step_seconds
            else ", ".join(f"{r['label']} {r['median_step_time_s']:.1f} s/step at load average "
                           f"{r.get('load_average', float('nan')):.1f}" for r in timed)
            or "no timing runs yet (assumed 2 s per step)"
        )  # fmt: skip
        print(f"{'total':10s}       ~{total / 3600:.1f} h (with --jobs {args.jobs}; {basis})")
        return
    done = {r["key"] for r in rows if "error" not in r}
    runs = stage_runs(args.stage, BUDGETS[args.budget], rows, args.fixed_lr)
    if args.fixed_lr:
        runs = [dataclasses.replace(r, setting=f"{r.setting}-fixed-lr") for r in runs]
    runs = [r for r in runs if r.key not in done]
    if args.only:
        runs = [r for r in runs if r.label in args.only]
    if args.shots:
        runs = [r for r in runs if r.few_shot in args.shots]
    if args.seeds:
        runs = [r for r in runs if r.seed in args.seeds]
    job = Job(device=args.device).discover()
    print(f"{len(runs)} runs; job flags: eval-every {'--eval-every' in job.flags}", flush=True)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for row in pool.map(lambda r: execute(r, job, args.workdir, args.threads), runs):
            rows = [r for r in rows if r["key"] != row["key"]] + [row]
            save_rows(args.results, rows, meta)
            status = row.get("error", "").splitlines()[-1:] or [f"test {row['accuracy']:.4f}"]
            print(f"{row['key']}: {status[0][-200:]} ({row['wall_s']:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
