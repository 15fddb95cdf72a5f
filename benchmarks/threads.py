"""CPU threads: 1 against all cores, on an idle and on a loaded machine.

Workloads (each timed in a fresh process whose thread count is set by
``graphopt.threads.set_threads`` before torch is imported, one warm-up run,
then the median of ``--repeats`` runs):

* ``ggm``: ``graphopt.ggm.solve`` on a p = 30 covariance (lam 0.1, admm);
* ``eigen``: ``smallest_eigenpairs`` (the default choice, arpack_flipped) on
  the 10-NN Laplacian of 3,000 Gaussian points in 32 dimensions, k = 16;
* ``dense_eigh``: the ``dense`` eigensolver on an n = 600 kNN Laplacian;
* ``minilm``: one forward + backward pass of all-MiniLM-L6-v2 (the packaged
  model) on a batch of 8 sequences of 32 tokens.

"Loaded" means one extra process per core spinning in a busy loop for the
whole measurement (started and stopped by this script). Configurations run
in interleaved rounds. Run::

    .venv/bin/python benchmarks/threads.py [--repeats 7] [--rounds 2]

Writes ``benchmarks/results/threads.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
WORKLOADS = ("ggm", "eigen", "dense_eigh", "minilm")
MACHINE = "2-core shared machine with other agents' jobs running (timings are noisy)"


def workload(name: str):
    """A no-argument callable running one timed unit of ``name`` (built untimed)."""
    import numpy as np
    import torch

    if name == "ggm":
        from graphopt.ggm import solve

        x = np.random.default_rng(0).standard_normal((120, 30))
        s = np.cov(x, rowvar=False, bias=True)
        return lambda: solve(s, lam=0.1)
    if name in ("eigen", "dense_eigh"):
        from graphopt.eigen import smallest_eigenpairs
        from graphopt.solvers.graphs import knn_cosine, to_scipy
        from graphopt.solvers.laplacian import laplacian

        n = 3000 if name == "eigen" else 600
        points = torch.randn(n, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        L = laplacian(to_scipy(knn_cosine(points, k=10)))
        method = None if name == "eigen" else "dense"
        return lambda: smallest_eigenpairs(L, 16, method=method)
    if name == "minilm":
        from transformers import AutoModel

        from graphopt.finetune.model import default_model_path

        model = AutoModel.from_pretrained(default_model_path())
        model.train()
        ids = torch.randint(1000, 20000, (8, 32), generator=torch.Generator().manual_seed(0))
        mask = torch.ones_like(ids)

        def step() -> None:
            model.zero_grad(set_to_none=True)
            model(input_ids=ids, attention_mask=mask).last_hidden_state.pow(2).mean().backward()

        return step
    raise ValueError(f"unknown workload {name!r}; choices: {', '.join(WORKLOADS)}")


def worker(name: str, threads: int, repeats: int) -> None:
    """Time ``name`` with ``threads`` threads; print the seconds as JSON."""
    from graphopt.threads import set_threads

    set_threads(threads)  # before torch/numpy are imported
    import torch

    run = workload(name)
    run()  # warm-up
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    print(json.dumps({"times": times, "torch_threads": torch.get_num_threads()}))


def spinners(count: int) -> list[subprocess.Popen]:
    """``count`` processes each spinning one core."""
    code = "while True: pass"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(count)]


def measure(name: str, threads: int, repeats: int) -> dict:
    command = [sys.executable, __file__, "--worker", name, "--threads", str(threads)]
    command += ["--repeats", str(repeats)]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", choices=WORKLOADS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--render", action="store_true", help="rewrite the .md from the .json")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.threads, args.repeats)
        return
    if args.render:
        saved = json.loads((RESULTS / "threads.json").read_text())
        counts = sorted({row["threads"] for row in saved["rows"]})
        (RESULTS / "threads.md").write_text(table(saved["rows"], saved["meta"], counts))
        return
    cores = os.cpu_count() or 1
    counts = sorted({1, cores})
    load_before = os.getloadavg()[0]
    samples: dict[tuple[str, str, int], list[float]] = {}
    for round_ in range(args.rounds):
        for load in ("idle", "loaded"):
            spinning = spinners(cores) if load == "loaded" else []
            try:
                time.sleep(0.5 if spinning else 0.0)
                order = counts if round_ % 2 == 0 else counts[::-1]
                for name in args.workloads:
                    for threads in order:
                        result = measure(name, threads, args.repeats)
                        samples.setdefault((name, load, threads), []).extend(result["times"])
                        print(name, load, threads, f"{statistics.median(result['times']):.4f}")
            finally:
                for process in spinning:
                    process.kill()
                    process.wait()
    rows = [
        {
            "workload": name,
            "load": load,
            "threads": threads,
            "median_s": statistics.median(times),
            "runs": len(times),
        }
        for (name, load, threads), times in sorted(samples.items())
    ]
    meta = {
        "machine": MACHINE,
        "cores": cores,
        "python": platform.python_version(),
        "command": "python benchmarks/threads.py " + " ".join(sys.argv[1:]),
        "repeats_per_process": args.repeats,
        "rounds": args.rounds,
        "load_average_at_start": round(load_before, 2),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "threads.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (RESULTS / "threads.md").write_text(table(rows, meta, counts))


def table(rows: list[dict], meta: dict, counts: list[int]) -> str:
    """The markdown table: median seconds per workload and load, and the ratio."""
    by = {(r["workload"], r["load"], r["threads"]): r["median_s"] for r in rows}
    few, many = counts[0], counts[-1]
    lines = [
        "# CPU threads: 1 against all cores",
        "",
        f"{meta['machine']}; {meta['cores']} cores. Median seconds over "
        f"{meta['rounds']} rounds x {meta['repeats_per_process']} runs per process; "
        "loaded = one busy-loop process per core running alongside.",
        "",
        f"Reproduce: `{meta['command']}`",
        "",
        f"| workload | load | {few} thread | {many} threads | {many} / {few} |",
        "|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["workload"] for r in rows):
        for load in ("idle", "loaded"):
            one, all_ = by.get((name, load, few)), by.get((name, load, many))
            if one is None or all_ is None:
                continue
            lines.append(f"| {name} | {load} | {one:.4f} | {all_:.4f} | {all_ / one:.2f}x |")
    pairs = [(by[(n, lo, few)], by[(n, lo, many)]) for (n, lo, t) in by if t == few]
    faster = sum(one < all_ for one, all_ in pairs)
    lines += [
        "",
        f"{few} thread was faster in {faster} of {len(pairs)} rows. OpenMP threads that find "
        "their core taken spin-wait for it, so on a small shared machine one thread per "
        "process wins; graphopt's default (`graphopt.threads.DEFAULT_THREADS`) is 1 thread "
        "unless `--threads`, `GRAPHOPT_THREADS` or `OMP_NUM_THREADS` says otherwise.",
    ]
    if "load_average_at_start" in meta:
        lines.append(f"Load average when the run started: {meta['load_average_at_start']}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
