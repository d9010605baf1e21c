"""Time `layerlab train --recipe fast` on seed650 for 3 seeds: how long to 98.0% test accuracy?

Each seed runs as its own `layerlab train` process, one after the other (so every run pays the
imports, the data loading and the compiles, as a user would), and the table is read from each
run's run.json. Time to 98.0% counts from the start of `train()` (data loading, model build,
compiles included) to the end of the first epoch whose test accuracy reaches 98.0%; the process
start-up (Python imports) is shown separately. The machine and its load average are printed,
as other processes on a shared machine slow a run down.

    python benchmarks/train_seed650.py [--seeds 1 2 3] [--epochs N] [--batch-size N] [--out runs/bench-fast] [--data-dir DIR]
    python benchmarks/train_seed650.py --table runs/bench-fast      # print the table of finished runs
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

TARGET = 0.98


def run_seed(seed: int, out: Path, epochs: int | None, batch_size: int | None, data_dir: str | None, recipe: str) -> float:
    """Run one seed in a fresh process; return the process wall time in seconds."""
    cmd = [sys.executable, "-m", "layerlab", "train", "--recipe", recipe, "--seed", str(seed), "--out", str(out), "--quiet"]
    if epochs:
        cmd += ["--epochs", str(epochs)]
    if batch_size:
        cmd += ["--batch-size", str(batch_size)]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    began = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - began


def row_of(folder: Path, process_seconds: float | None) -> dict:
    run = json.loads((folder / "run.json").read_text())
    seconds = run.get(f"seconds_to_{TARGET:.3f}")
    to_target = None if seconds is None else (run["data_seconds"] + seconds) / 60
    return {
        "seed": run["seed"],
        "epochs": run["epochs_done"],
        "first_epoch": run.get(f"first_epoch_{TARGET:.3f}"),
        "minutes_to_target": to_target,
        "final": run["final_test_accuracy"],
        # the saved epoch's test accuracy (chosen on validation since validation splits; older runs: the max)
        "best": run.get("test_accuracy", run.get("best_test_accuracy")),
        "minutes_total": (run["data_seconds"] + run["wall_seconds"]) / 60,
        "process_minutes": process_seconds / 60 if process_seconds else None,
        "load": run.get("load_average_before"),
    }


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[dict]) -> str:
    lines = [
        f"| seed | epochs | first epoch >= {TARGET:.1%} | minutes to {TARGET:.1%} | final | saved (test) | minutes (run) | minutes (process) | load avg before |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['epochs']} | {_fmt(r['first_epoch'], 'd')} | {_fmt(r['minutes_to_target'], '.1f')} | "
            f"{r['final']:.4f} | {r['best']:.4f} | {r['minutes_total']:.1f} | {_fmt(r['process_minutes'], '.1f')} | {r['load']} |"
        )
    # A seed that never reached the target counts as infinitely slow in the median.
    to_target = [r["minutes_to_target"] if r["minutes_to_target"] is not None else float("inf") for r in rows]
    first = [r["first_epoch"] if r["first_epoch"] is not None else float("inf") for r in rows]
    median_minutes = statistics.median(to_target)
    median_epoch = statistics.median(first)
    lines.append(
        f"| median | | {median_epoch if median_epoch != float('inf') else 'not reached'} | "
        f"{f'{median_minutes:.1f}' if median_minutes != float('inf') else 'not reached'} | "
        f"{statistics.median(r['final'] for r in rows):.4f} | {statistics.median(r['best'] for r in rows):.4f} | | | |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, help="default: the recipe's")
    parser.add_argument("--batch-size", type=int, help="default: the recipe's")
    parser.add_argument("--recipe", default="fast")
    parser.add_argument("--out", default="runs/bench-fast", help="one sub-folder per seed")
    parser.add_argument("--data-dir")
    parser.add_argument("--table", metavar="DIR", help="only print the table of the runs already in DIR")
    args = parser.parse_args(argv)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    rows = []
    if args.table:
        for folder in sorted(Path(args.table).glob("seed-*")):
            if (folder / "run.json").is_file():
                rows.append(row_of(folder, None))
    else:
        for seed in args.seeds:
            folder = Path(args.out) / f"seed-{seed}"
            seconds = run_seed(seed, folder, args.epochs, args.batch_size, args.data_dir, args.recipe)
            rows.append(row_of(folder, seconds))
            print(table(rows[-1:]).splitlines()[-2], flush=True)
    print(f"recipe {args.recipe}: " + json.dumps(json.loads((Path(args.table or args.out) / f"seed-{rows[0]['seed']}" / "run.json").read_text())["recipe"]))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
