"""Train seed650 with one or more recipes over several seeds: saved-model test accuracy and minutes.

Each (recipe, seed) runs as its own `layerlab train` process (so every run pays the imports, the
data loading and the teacher, as a user would), and the tables are read from each run's run.json.
The saved epoch is chosen on the validation images (the test set never chooses); "saved (test)"
is that model's test accuracy. Time to 98.0% counts from the start of `train()` to the end of the
first epoch whose test accuracy reaches 98.0% (reported, never used to choose). With `--jobs 2`
the recipes of one seed run at the same time, each process on one thread (OMP_NUM_THREADS=1),
so both see the same machine: compare their minutes with each other, not with a solo run.

    python benchmarks/train_seed650.py --recipes fast fast-v1 --seeds 1 2 3 4 5 6 7 8 --jobs 2 --data-dir ../shared/data/mnist
    python benchmarks/train_seed650.py --table runs/bench      # print the tables of finished runs
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


def command(seed: int, out: Path, epochs: int | None, batch_size: int | None, data_dir: str | None, recipe: str) -> list[str]:
    """The `layerlab train` command line of one (recipe, seed)."""
    cmd = [sys.executable, "-m", "layerlab", "train", "--recipe", recipe, "--seed", str(seed), "--out", str(out), "--quiet", "--force"]
    if epochs:
        cmd += ["--epochs", str(epochs)]
    if batch_size:
        cmd += ["--batch-size", str(batch_size)]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    return cmd


def run_together(commands: list[list[str]], threads: int | None) -> list[float]:
    """Run the commands at the same time (each on ``threads`` threads, None: torch's default);
    return each process's wall time in seconds."""
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    began = time.perf_counter()
    procs = [subprocess.Popen(cmd, env=env) for cmd in commands]
    seconds = [0.0] * len(procs)
    pending = set(range(len(procs)))
    while pending:
        for i in list(pending):
            if procs[i].poll() is not None:
                seconds[i] = time.perf_counter() - began
                pending.discard(i)
        time.sleep(0.5)
    failed = [" ".join(commands[i]) for i, p in enumerate(procs) if p.returncode]
    if failed:
        raise SystemExit(f"train_seed650: these runs failed: {failed}")
    return seconds


def row_of(folder: Path, process_seconds: float | None) -> dict:
    run = json.loads((folder / "run.json").read_text())
    seconds = run.get(f"seconds_to_{TARGET:.3f}")
    to_target = None if seconds is None else (run["data_seconds"] + seconds) / 60
    return {
        "seed": run["seeds"][0],  # the run's seed (run["seed"] is the kept start's)
        "epochs": run["epochs_done"],
        "first_epoch": run.get(f"first_epoch_{TARGET:.3f}"),
        "minutes_to_target": to_target,
        "final": run["final_test_accuracy"],
        # the saved epoch's test accuracy (chosen on validation since validation splits; older runs: the max)
        "best": run.get("test_accuracy", run.get("best_test_accuracy")),
        "minutes_total": (run["data_seconds"] + run["wall_seconds"]) / 60,
        "process_minutes": process_seconds / 60 if process_seconds else None,
        "load": run.get("load_average_before"),
        "starts": run.get("starts", []),
        "kept_start": run.get("kept_start"),
    }


def starts_table(rows: list[dict]) -> str:
    """Every start of a recipe with several: its validation and test accuracy, which was kept, and
    whether validation kept the start that was better on the test set (a report: test chose nothing)."""
    lines = ["| seed | start (seed) | saved epoch | validation | test | kept |", "|---|---|---|---|---|---|"]
    agreed = 0
    for r in rows:
        for s in r["starts"]:
            lines.append(f"| {r['seed']} | {s['start']} ({s['seed']}) | {s['saved_epoch']} | {s['val_accuracy']:.4f} | "
                         f"{s['test_accuracy']:.4f} | {'kept' if s['start'] == r['kept_start'] else ''} |")
        best_test = max(s["test_accuracy"] for s in r["starts"])
        agreed += next(s["test_accuracy"] for s in r["starts"] if s["start"] == r["kept_start"]) == best_test
    tests = [s["test_accuracy"] for r in rows for s in r["starts"]]
    lines.append(f"\n{len(tests)} starts: test accuracy min {min(tests):.4f}, median {statistics.median(tests):.4f}, "
                 f"max {max(tests):.4f}, standard deviation {statistics.pstdev(tests):.4f}; validation kept the start that "
                 f"was better on test in {agreed} of {len(rows)} seeds")
    return "\n".join(lines)


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


def spread(recipe: str, rows: list[dict]) -> str:
    """One line of the comparison table: the saved models' test accuracies over the seeds, and minutes."""
    saved = [r["best"] for r in rows]
    reached = sum(v >= TARGET for v in saved)
    to_target = [r["minutes_to_target"] if r["minutes_to_target"] is not None else float("inf") for r in rows]
    median_to = statistics.median(to_target)
    return (f"| {recipe} | {len(rows)} | {min(saved):.4f} | {statistics.median(saved):.4f} | {max(saved):.4f} | "
            f"{reached} of {len(rows)} | {f'{median_to:.1f}' if median_to != float('inf') else 'not reached'} | "
            f"{statistics.median(r['minutes_total'] for r in rows):.1f} | {max(r['minutes_total'] for r in rows):.1f} |")


SPREAD_HEADER = (f"| recipe | seeds | saved (test): min | median | max | seeds >= {TARGET:.1%} | median minutes to {TARGET:.1%} "
                 "| median minutes (run) | max minutes (run) |\n|---|---|---|---|---|---|---|---|---|")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, help="default: the recipe's")
    parser.add_argument("--batch-size", type=int, help="default: the recipe's")
    parser.add_argument("--recipes", nargs="+", default=["fast"], help="recipes to compare (e.g. fast fast-v1)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="processes at a time: 2 runs the recipes of one seed side by side, one thread each")
    parser.add_argument("--out", default="runs/bench", help="one sub-folder per recipe and seed")
    parser.add_argument("--data-dir")
    parser.add_argument("--table", metavar="DIR", help="only print the tables of the runs already in DIR")
    args = parser.parse_args(argv)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"jobs {args.jobs}" + (" (one thread each)" if args.jobs > 1 else ""))
    root = Path(args.table or args.out)
    rows: dict[str, list[dict]] = {}
    if args.table:
        for folder in sorted(root.glob("*/seed-*"), key=lambda p: (p.parent.name, int(p.name.split("-")[1]))):
            if (folder / "run.json").is_file():
                rows.setdefault(folder.parent.name, []).append(row_of(folder, None))
    else:
        jobs = [(recipe, seed) for seed in args.seeds for recipe in args.recipes]  # a seed's recipes together
        for start in range(0, len(jobs), args.jobs):
            batch = jobs[start:start + args.jobs]
            folders = [root / recipe / f"seed-{seed}" for recipe, seed in batch]
            seconds = run_together([command(seed, folder, args.epochs, args.batch_size, args.data_dir, recipe)
                                    for (recipe, seed), folder in zip(batch, folders, strict=True)], 1 if args.jobs > 1 else None)
            for (recipe, _), folder, wall in zip(batch, folders, seconds, strict=True):
                rows.setdefault(recipe, []).append(row_of(folder, wall))
                print(f"{recipe}: " + table(rows[recipe][-1:]).splitlines()[-2], flush=True)
    for recipe, recipe_rows in rows.items():
        first = root / recipe / f"seed-{recipe_rows[0]['seed']}" / "run.json"
        print(f"\nrecipe {recipe}: " + json.dumps(json.loads(first.read_text())["recipe"]))
        print(table(recipe_rows))
        if all(r["starts"] for r in recipe_rows):
            print("\n" + starts_table(recipe_rows))
    print("\n" + SPREAD_HEADER)
    for recipe, recipe_rows in rows.items():
        print(spread(recipe, recipe_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
