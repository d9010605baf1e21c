"""The report folder of a run: history.csv, accuracy.png, loss.png, summary.txt, run.json.

Every file is written atomically. Plots use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import io
import json
import platform
from pathlib import Path

from layerlab.errors import require
from layerlab.io import atomic_write_bytes, atomic_write_text

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy", "lr", "images", "seconds")
TARGET_ACCURACY = 0.98


def history_csv(history: list[dict]) -> str:
    """One line per epoch: epoch, train loss and accuracy, validation loss and accuracy (what
    chooses the saved epoch; empty without a validation set), test loss and accuracy (reported
    only), learning rate at the end of the epoch, the images trained on (fewer with importance
    sampling; empty for epochs of checkpoints written before this column) and the epoch's
    wall-clock seconds (training + evaluation)."""
    lines = [",".join(HISTORY_COLUMNS)]
    for row in history:
        numbers = ("" if row.get(c) is None else f"{row[c]:.6g}" for c in HISTORY_COLUMNS[1:-2])
        lines.append(",".join([str(row["epoch"]), *numbers, str(row.get("images", "")), f"{row['seconds']:.6g}"]))
    return "\n".join(lines) + "\n"


def write_history(folder: Path, history: list[dict]) -> None:
    atomic_write_text(folder / "history.csv", history_csv(history))


def write_plots(folder: Path, history: list[dict], title: str) -> None:
    """accuracy.png and loss.png: train, validation (what chooses the saved epoch) and test
    (reported only) curves per epoch."""
    matplotlib = require("matplotlib", "plot", "Training plots")
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    epochs = [row["epoch"] for row in history]
    for key, label in (("accuracy", "accuracy"), ("loss", "loss")):
        fig = Figure(figsize=(6.4, 4.0), dpi=100)
        ax = fig.add_subplot()
        ax.plot(epochs, [row[key] for row in history], label=f"train {label}")
        if any(row.get(f"val_{key}") is not None for row in history):
            ax.plot(epochs, [row.get(f"val_{key}") for row in history], label=f"validation {label} (chooses the saved epoch)")
        ax.plot(epochs, [row[f"test_{key}"] for row in history], label=f"test {label} (reported only)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(f"{title}: {label}")
        ax.grid(True, alpha=0.3)
        ax.legend()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        atomic_write_bytes(folder / f"{label}.png", buffer.getvalue())


def write_summary(folder: Path, spec) -> None:
    from layerlab.summary import summary_text

    atomic_write_text(folder / "summary.txt", summary_text(spec) + "\n")


def write_run_json(folder: Path, data: dict) -> None:
    atomic_write_text(folder / "run.json", json.dumps(data, indent=2) + "\n")


def first_reaching(history: list[dict], target: float = TARGET_ACCURACY) -> dict | None:
    """The first epoch's row whose test accuracy reaches ``target``, else None."""
    return next((row for row in history if row["test_accuracy"] >= target), None)


def run_stats(history: list[dict], elapsed: float, selection: str = "validation", target: float = TARGET_ACCURACY) -> dict:
    """The saved epoch (chosen on ``selection``'s column: validation accuracy; 'test' for runs
    from before validation splits; 'last' for none) and its accuracies, the last epoch's, and
    when the test accuracy first reached ``target`` (a report, not a choice)."""
    if not history:
        return {"epochs_done": 0, "wall_seconds": round(elapsed, 3)}
    key = {"validation": "val_accuracy", "test": "test_accuracy"}.get(selection)
    scored = [row for row in history if key and row.get(key) is not None]
    saved = max(scored, key=lambda row: row[key]) if scored else history[-1]
    first = first_reaching(history, target)
    return {
        "epochs_done": history[-1]["epoch"],
        "saved_epoch": saved["epoch"],
        "best_epoch": saved["epoch"],  # the name runs before validation splits used
        "val_accuracy": saved.get("val_accuracy"),
        "test_accuracy": saved["test_accuracy"],
        "final_test_accuracy": history[-1]["test_accuracy"],
        "max_test_accuracy": max(row["test_accuracy"] for row in history),  # for reference only: it chose nothing
        "selected_score": saved[key] if scored else 0.0,  # what picks the best of several runs (never test, but for old runs)
        f"first_epoch_{target:.3f}": first["epoch"] if first else None,
        f"seconds_to_{target:.3f}": round(first["elapsed"], 3) if first else None,
        "wall_seconds": round(elapsed, 3),
    }


def versions() -> dict:
    """Versions of the libraries a run depends on."""
    import numpy

    import layerlab

    out = {"python": platform.python_version(), "layerlab": layerlab.__version__, "numpy": numpy.__version__}
    from importlib import metadata

    for name in ("keras", "jax", "jaxlib", "torch", "matplotlib", "h5py"):
        try:
            out[name] = metadata.version(name)  # without importing it
        except metadata.PackageNotFoundError:
            out[name] = None
    import sys

    keras = sys.modules.get("keras")
    out["keras_backend"] = keras.backend.backend() if keras else None
    out["machine"] = f"{platform.system()} {platform.machine()}"
    return out
