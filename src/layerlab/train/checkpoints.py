"""Epoch checkpoints and model files, every one written atomically (temp file + rename).

A checkpoint is ONE .npz file (no pickle) so that it is replaced in one rename:

    meta                 uint8 bytes of a JSON object: epoch, history, best, seed, elapsed, ...
    model/<i>            the training model's variables, in ``model.weights`` order
    optimizer/<i>        the optimizer's variables (step counter, Adam moments, EMA averages; the torch
                         trainer's last one the importance sampler's per-image scores when sampling)
    best/<layer>/<name>  the best weights so far, folded, as the saved model takes them

The learning-rate schedule reads the optimizer's step counter (or, sampling, the epoch), and each
epoch's shuffle, draw and seed derive from (seed, epoch), so weights + optimizer + epoch restore the
whole state.
"""

from __future__ import annotations

import json
import logging
import zipfile
import zlib
from pathlib import Path

import numpy as np

from layerlab.errors import ModelFileError
from layerlab.io import atomic_path

CHECKPOINT = "checkpoint.npz"
FORMAT = "layerlab-train-checkpoint-1"


def save_checkpoint(
    path: str | Path,
    meta: dict,
    model_values: list[np.ndarray],
    optimizer_values: list[np.ndarray],
    best_weights: dict[str, dict[str, np.ndarray]] | None,
) -> None:
    """Write a checkpoint file atomically; a failed write leaves the previous one intact."""
    arrays: dict[str, np.ndarray] = {"meta": np.frombuffer(json.dumps({"format": FORMAT, **meta}).encode("utf-8"), np.uint8)}
    arrays.update({f"model/{i}": np.asarray(v) for i, v in enumerate(model_values)})
    arrays.update({f"optimizer/{i}": np.asarray(v) for i, v in enumerate(optimizer_values)})
    for layer, values in (best_weights or {}).items():
        arrays.update({f"best/{layer}/{name}": np.asarray(v) for name, v in values.items()})
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def load_checkpoint(path: str | Path) -> tuple[dict, list[np.ndarray], list[np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """Read a checkpoint written by ``save_checkpoint``.

    Returns:
        (meta, model_values, optimizer_values, best_weights).

    Raises:
        ModelFileError: the file is missing, truncated or not a layerlab checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no checkpoint there. Fix: --resume the --out folder of an earlier `layerlab train`.")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ModelFileError(f"{path}: not a readable layerlab checkpoint ({exc}). Fix: start a new run without --resume.") from None
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: checkpoint format {meta.get('format')!r}, expected {FORMAT!r}. Fix: start a new run.")

    def indexed(prefix: str) -> list[np.ndarray]:
        keys = sorted((k for k in arrays if k.startswith(prefix)), key=lambda k: int(k[len(prefix):]))
        return [arrays[k] for k in keys]

    best: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        if key.startswith("best/"):
            _, layer, name = key.split("/", 2)
            best.setdefault(layer, {})[name] = value
    return meta, indexed("model/"), indexed("optimizer/"), best


def save_keras_model(kmodel, path: str | Path) -> None:
    """``kmodel.save(path)`` through a temp file with the same suffix (Keras picks the format
    from it: .keras zip or legacy .h5), renamed over ``path`` only when the save succeeded."""
    # Keras warns on every .h5 save that the format is legacy (through absl's logger): layerlab
    # writes .h5 on purpose, beside model.keras, for Keras 2 readers; keep that line out of the log.
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        with atomic_path(path) as tmp:
            kmodel.save(tmp)
    finally:
        absl.setLevel(level)
