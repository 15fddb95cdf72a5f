"""The job (``graphopt finetune``) against a plain PEFT + Trainer script doing the same
LoRA fine-tune: step time and peak memory, as ratios from the same run.

Both sides: all-MiniLM-L6-v2 (the packaged wheel) with a fresh 5-class head, LoRA
r = 8, alpha = 16, dropout 0.05 on every attention and feed-forward matrix, the
head trained, the BBC News training split, batch 16, max_length 128, float32,
AdamW, ``STEPS`` optimizer steps, then the dev and test splits evaluated at batch 64
(the job's default). Each side runs in its own fresh process (so peak RSS is its
own), the two alternate for ``--repeats`` rounds; a step's time is the Trainer's
``on_step_begin`` -> ``on_step_end`` (the job's ``median_step_time_s``; the peer
times the same two events); reported: the median over rounds of each run's median
step time and peak RSS, and graphopt / peer ratios.

The peer, benchmarks/peers/peft_trainer_lora.py, imports no graphopt: PEFT's
``get_peft_model`` with ``modules_to_save=["classifier"]`` and
``transformers.Trainer``.

Run: ``.venv/bin/python benchmarks/trainer_vs_peft.py [--repeats 3] [--steps 30]``
(results: ``benchmarks/results/trainer_vs_peft.{md,json}``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
TARGETS = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]

PEER = Path(__file__).parent / "peers" / "peft_trainer_lora.py"


def run_peer(steps: int, folder: Path) -> dict:
    done = subprocess.run(
        [sys.executable, str(PEER), str(steps), str(folder), *TARGETS],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_graphopt(steps: int, folder: Path) -> dict:
    targets = r".*\.(" + "|".join(t.replace(".", r"\.") for t in TARGETS) + ")"
    command = [
        sys.executable, "-m", "graphopt.cli", "finetune",
        "--method", "lora:r=8,alpha=16,dropout=0.05", "--target-regex", targets,
        "--max-steps", str(steps), "--batch-size", "16",
        "--max-length", "128", "--device", "cpu", "--no-progress", "--output-dir", str(folder),
        "--checkpoint-every", str(10 * steps), "--log-every", "1",
    ]  # fmt: skip
    subprocess.run(command, capture_output=True, text=True, check=True)
    results = json.loads((folder / "results.json").read_text())
    return {"step_s": results["median_step_time_s"], "peak_rss_mb": results["peak_memory_mb"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    sides: dict[str, list[dict]] = {"graphopt": [], "peft": []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeats):
            order = ["graphopt", "peft"] if round_ % 2 == 0 else ["peft", "graphopt"]
            for side in order:
                folder = Path(tmp) / f"{side}-{round_}"
                run = run_graphopt if side == "graphopt" else run_peer
                sides[side].append(run(args.steps, folder))
                print(side, round_, sides[side][-1], flush=True)
    summary = {
        side: {
            "median_step_s": statistics.median(r["step_s"] for r in runs),
            "median_peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
        }
        for side, runs in sides.items()
    }
    ratio = {
        "step_time": summary["graphopt"]["median_step_s"] / summary["peft"]["median_step_s"],
        "peak_memory": summary["graphopt"]["median_peak_rss_mb"]
        / summary["peft"]["median_peak_rss_mb"],
    }
    record = {
        "setup": {"steps": args.steps, "repeats": args.repeats,
                  "machine": f"{platform.machine()}, 2 cores, shared with other jobs"},
        "summary": summary, "ratio": ratio, "runs": sides,
    }  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "trainer_vs_peft.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        "# The job vs a plain PEFT + Trainer script (same LoRA fine-tune)",
        "",
        f"`python benchmarks/trainer_vs_peft.py --repeats {args.repeats} --steps {args.steps}`"
        " (the setup: the script's docstring).",
        "",
        "| | graphopt finetune | PEFT + Trainer | ratio (goal <= 1.05) |",
        "|---|---|---|---|",
        f"| median step time (s) | {summary['graphopt']['median_step_s']:.3f} | "
        f"{summary['peft']['median_step_s']:.3f} | {ratio['step_time']:.3f} |",
        f"| peak RSS (MB) | {summary['graphopt']['median_peak_rss_mb']:.0f} | "
        f"{summary['peft']['median_peak_rss_mb']:.0f} | {ratio['peak_memory']:.3f} |",
        "",
        f"Machine: {record['setup']['machine']}; each side in its own process, alternating.",
    ]
    (RESULTS / "trainer_vs_peft.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
