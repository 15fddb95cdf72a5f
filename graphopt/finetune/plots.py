"""PNG plots of a finished run: the loss curves, plus whatever each applied method
draws (``Method.plot(model, folder) -> list[Path]``, e.g. pca_ggm's allocation or
spectral's spectrum)."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

import graphopt


def plot_run(model: nn.Module, output_dir: str | Path) -> list[Path]:
    """Write ``plots/loss.png`` (training loss per step, dev loss at every evaluation)
    and the methods' own plots; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output = Path(output_dir)
    folder = output / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    train = [(r["step"], r["loss"]) for r in records if r.get("loss") is not None]
    dev = [
        (r["step"], r["eval"]["loss"])
        for r in records
        if r.get("split") == "dev" and r["eval"].get("loss") is not None
    ]
    figure, axis = plt.subplots(figsize=(6, 3.5))
    if train:
        axis.plot(*zip(*train, strict=True), lw=1, label="training loss")
    if dev:
        axis.plot(*zip(*dev, strict=True), "o-", ms=4, label="dev loss")
    axis.set(xlabel="step", ylabel="loss", title="graphopt finetune")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    paths = [folder / "loss.png"]
    figure.savefig(paths[0], dpi=120)
    plt.close(figure)
    for method in graphopt.methods_of(model):
        paths.extend(method.plot(model, folder))
    return paths
