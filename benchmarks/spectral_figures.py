"""Figures for the spectral docs: a kNN Laplacian's low spectrum, a filtered gradient,
and the method's own plot of all-MiniLM-L6-v2's 36 parameter graphs.

    .venv/bin/python benchmarks/spectral_figures.py   # docs/img/spectrum.png, filter.png,
                                                      # spectral_spectrum.png

Nodes are the 400 rows of a synthetic weight matrix made of 4 clusters of
rows (as rows of a pretrained layer group by function); the "gradient" is a
cluster-wise constant signal plus row noise. The heat filter keeps the
smooth (cluster-wise) part and damps the noise. The last figure is what
``graphopt finetune --plot`` writes for ``spectral`` (``SpectralMethod.plot``):
one panel per layer type, one line per layer, on the packaged MiniLM.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from graphopt.eigen import smallest_eigenpairs
from graphopt.solvers.graphs import knn_cosine
from graphopt.solvers.laplacian import laplacian
from graphopt.solvers.spectral import heat, spectral_filter

OUT = Path(__file__).parents[1] / "docs" / "img"


def main() -> None:
    generator = torch.Generator().manual_seed(0)
    clusters, rows, width = 4, 100, 64
    centres = torch.randn(clusters, width, generator=generator, dtype=torch.float64)
    labels = torch.arange(clusters).repeat_interleave(rows)
    weights = centres[labels] + 0.6 * torch.randn(clusters * rows, width, generator=generator)
    L = laplacian(knn_cosine(weights, k=10), "symmetric")
    pairs = smallest_eigenpairs(L, 24)

    smooth = torch.randn(clusters, 1, generator=generator, dtype=torch.float64)[labels]
    gradient = smooth + 0.8 * torch.randn(clusters * rows, 1, generator=generator)
    filtered = spectral_filter(gradient, pairs.vectors, pairs.values, heat(5.0), high_gain=0.0)

    OUT.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(5, 3.2))
    axis.plot(range(24), pairs.values.numpy(), "o-", markersize=4)
    axis.axvline(clusters - 0.5, color="grey", linestyle=":", label=f"{clusters} clusters")
    axis.set(xlabel="index i", ylabel=r"eigenvalue $\lambda_i$", title="Low spectrum, kNN graph")
    axis.legend()
    figure.tight_layout()
    figure.savefig(OUT / "spectrum.png", dpi=120)

    figure, axis = plt.subplots(figsize=(6, 3.2))
    axis.plot(gradient.numpy(), ".", markersize=3, alpha=0.5, label="raw gradient")
    axis.plot(filtered.numpy(), "-", linewidth=1.5, label="heat-filtered (t = 5, k = 24)")
    axis.plot(smooth.numpy(), "--", color="black", linewidth=1, label="smooth part")
    axis.set(xlabel="node (row of the weight)", ylabel="gradient entry")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(OUT / "filter.png", dpi=120)
    print(f"wrote {OUT / 'spectrum.png'} and {OUT / 'filter.png'}; method {pairs.method}")
    print(f"wrote {minilm_spectrum()}")


def minilm_spectrum() -> Path:
    """``SpectralMethod.plot`` on all-MiniLM-L6-v2's attention and FFN matrices."""
    from transformers import AutoModel

    import graphopt
    from graphopt.finetune.model import default_model_path

    model = AutoModel.from_pretrained(default_model_path(), local_files_only=True)
    targets = r".*\.(query|key|value|attention\.output\.dense|intermediate\.dense|output\.dense)"
    graphopt.apply(model, "spectral", target_modules=targets)
    (path,) = graphopt.methods_of(model)[0].plot(model, OUT)
    return path


if __name__ == "__main__":
    main()
