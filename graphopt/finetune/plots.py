"""PNG plots of a finished run: the loss curve, plus whatever each applied
method draws (a method may define ``plot(model, folder) -> list[Path]``, e.g.
pca_ggm's allocation or spectral's spectrum)."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

import graphopt


def plot_run(model: nn.Module, output_dir: str | Path) -> list[Path]:
    """Write ``plots/loss.png`` and the methods' own plots; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output = Path(output_dir)
    folder = output / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]
    losses = [r["loss"] for r in records if "loss" in r]
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot(steps, losses, lw=1)
    axis.set(xlabel="step", ylabel="training loss", title="graphopt finetune")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    paths = [folder / "loss.png"]
    figure.savefig(paths[0], dpi=120)
    plt.close(figure)
    for method in graphopt.methods_of(model):
        if hasattr(method, "plot"):
            paths.extend(method.plot(model, folder))
    return paths
