"""One training run (one seed): the epoch loop, evaluation, checkpoints, Ctrl-C.

Two trainers run the epochs: ``layerlab.train.torch_train`` (torch installed and every layer has
a torch form: about twice as fast as Keras' fit, and tested step for step against it) and
``KerasTrainer`` (Keras' own ``fit``, any layer, any backend). Each epoch trains on a
permutation drawn from (seed, epoch), so a run resumed from its last epoch checkpoint sees the
same batches as a straight run. After every epoch the validation and test accuracies are
measured (with the averaged weights when the recipe keeps an EMA), the best weights so far are kept (folded, as the
saved model takes them), and the checkpoint is replaced atomically. The saved epoch is chosen on
the validation images held out from the training set (``split_validation``); the test set is
measured every epoch for the report and never chooses. KeyboardInterrupt (Ctrl-C)
ends the run after the last complete epoch.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from layerlab import spec as S
from layerlab.errors import ModelFileError, SpecError
from layerlab.train import report
from layerlab.train.checkpoints import CHECKPOINT, load_checkpoint, save_checkpoint
from layerlab.train.fold import fold_standardization
from layerlab.train.recipes import MNIST_MEAN, MNIST_STD, Recipe, make_optimizer, run_steps

BAR = 2  # verbose level that adds the live progress bar to the per-epoch lines
# Keras draws initial weights from one global generator (keras.utils.set_random_seed): runs
# started side by side in threads build their models one at a time, so each gets its own seed's.
_BUILD_LOCK = threading.Lock()


@dataclass
class Dataset:
    """Network-ready arrays: x (N, *input_shape) float32, y (N, 10) one-hot float32.

    ``x_val`` / ``y_val`` are held out from the training images (``split_validation``): they
    choose the saved epoch; the test set is only reported. ``x_train``, ``x_val`` and ``x_test``
    are standardised when ``standardized``; ``x_test_pixels`` is always pixels/255, the input
    of the saved model. ``selection`` says what chooses: 'validation', 'test' (a run from before
    validation splits, resumed) or 'last' (``--val-size 0``: the last epoch is saved).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    standardized: bool
    x_test_pixels: np.ndarray
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    selection: str = "validation"


def selection_key(selection: str) -> str | None:
    """The history column that chooses the saved epoch, or None for the last epoch."""
    return {"validation": "val_accuracy", "test": "test_accuracy"}.get(selection)


def split_validation(labels: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation) with ``size`` validation images, stratified: each class keeps
    its share (largest remainders get the rounding), drawn with ``seed``.

    Raises:
        SpecError: ``size`` leaves no training image, or is negative.
    """
    n = len(labels)
    if not 0 <= size < n:
        raise SpecError(f"--val-size {size}: must be at least 0 and below the {n} training images. "
                        f"Fix: --val-size {max(n // 12, 0)} (a twelfth of them, as 5000 is of 60000)")
    if size == 0:
        return np.arange(n), np.zeros(0, np.int64)
    rng = np.random.default_rng([seed, 4099])
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * size / n
    take = np.floor(exact).astype(int)
    for k in np.argsort(-(exact - take), kind="stable")[: size - int(take.sum())]:
        take[k] += 1
    val = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:t] for c, t in zip(classes, take, strict=True)])
    val.sort()
    keep = np.ones(n, bool)
    keep[val] = False
    return np.flatnonzero(keep), val


@dataclass
class RunResult:
    """What one seed's run produced. ``best_weights`` are folded: they take pixels/255."""

    seed: int
    folder: Path
    history: list[dict]
    best_weights: dict[str, dict[str, np.ndarray]] | None
    elapsed: float
    interrupted: bool = False
    resumed_from_epoch: int | None = None
    trainer: str = ""
    stats: dict = field(default_factory=dict)
    starts: list[dict] = field(default_factory=list)  # the recipe's starts (when more than one): seed, folder, stats


def accuracy_and_loss(probabilities: np.ndarray, y_onehot: np.ndarray) -> tuple[float, float]:
    """Top-1 accuracy and mean categorical cross-entropy (probabilities clipped at 1e-7, as Keras)."""
    labels = y_onehot.argmax(axis=1)
    picked = probabilities[np.arange(len(labels)), labels]  # (N,)
    accuracy = float(np.mean(probabilities.argmax(axis=1) == labels))
    return accuracy, float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))


def _progbar(keras, total_epochs: int):
    """Keras' progress bar, told the run's total epochs (each fit call trains one epoch)."""

    class EpochProgbar(keras.callbacks.ProgbarLogger):
        def set_params(self, params):
            super().set_params(params)
            self.epochs = total_epochs

    return EpochProgbar()


@contextlib.contextmanager
def _averaged(kmodel, optimizer):
    """Inside the block the model holds the EMA weights (when the optimizer keeps them)."""
    # Keras keeps the averages in the optimizer, aligned with model.trainable_variables.
    averages = getattr(optimizer, "_model_variables_moving_average", None) if optimizer.use_ema else None
    if averages is None:
        yield
        return
    raw = [np.array(v.numpy()) for v in kmodel.trainable_variables]
    for variable, average in zip(kmodel.trainable_variables, averages, strict=True):
        variable.assign(np.array(average.numpy()))
    try:
        yield
    finally:
        for variable, value in zip(kmodel.trainable_variables, raw, strict=True):
            variable.assign(value)


class KerasTrainer:
    """Epochs of one recipe with Keras' own ``fit`` (any layer, any backend)."""

    name = "keras"

    def __init__(self, keras, kmodel, train_spec: S.Model, recipe: Recipe, total_steps: int, total_epochs: int, verbose: int,
                 *, from_logits: bool = False):
        if recipe.sample_fraction is not None:
            raise ValueError("Keras' fit trains on every image: pass trained_recipe(recipe, spec), which turns importance sampling off")
        self.keras, self.kmodel, self.train_spec, self.recipe = keras, kmodel, train_spec, recipe
        self.optimizer = make_optimizer(keras, recipe, total_steps)
        loss = keras.losses.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=recipe.label_smoothing)
        kmodel.compile(optimizer=self.optimizer, loss=loss, metrics=["accuracy"], steps_per_execution=_steps_per_execution(keras, recipe))
        self.optimizer.build(kmodel.trainable_variables)
        self.progbar = [_progbar(keras, total_epochs)] if verbose >= BAR else []
        self.verbose = 1 if verbose >= BAR else 0  # Keras' fit: its bar, or nothing

    @property
    def learning_rate(self) -> float:
        return float(np.asarray(self.optimizer.learning_rate))

    def fit_epoch(self, x, y, *, seed: int, epoch: int, order=None, callbacks=(), progress=None) -> dict:
        """One ``fit`` epoch on ``x[order], y[order]``, every image (``trained_recipe`` turned
        importance sampling off); ``progress`` is unused (Keras' own progress bar shows at verbose 2)."""
        self.keras.utils.set_random_seed(seed)  # dropout etc., reproducible on resume
        if order is not None:
            x, y = x[order], y[order]
        fitted = self.kmodel.fit(
            x, y, batch_size=self.recipe.batch_size, epochs=epoch + 1, initial_epoch=epoch, shuffle=False,
            verbose=self.verbose, callbacks=[*self.progbar, *callbacks],
        )
        return {"loss": float(fitted.history["loss"][-1]), "accuracy": float(fitted.history["accuracy"][-1]), "images": len(x)}

    def predict(self, x) -> np.ndarray:
        with _averaged(self.kmodel, self.optimizer):
            return np.asarray(self.kmodel.predict(x, batch_size=2000, verbose=0))

    def eval_weights(self) -> dict[str, dict[str, np.ndarray]]:
        from layerlab.keras_build import keras_weights

        with _averaged(self.kmodel, self.optimizer):
            return keras_weights(self.kmodel, self.train_spec)

    def state(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        return [np.asarray(v.numpy()) for v in self.kmodel.variables], [np.asarray(v.numpy()) for v in self.optimizer.variables]

    def load_state(self, model_values, optimizer_values, path: Path) -> None:
        _assign(self.kmodel.variables, model_values, "model", path)
        _assign(self.optimizer.variables, optimizer_values, "optimizer", path)


class _TorchProgress:
    """Keras' progress bar for the torch trainer: 'Epoch e/E', then one bar over the epoch's steps."""

    def __init__(self, keras, epoch: int, epochs: int):
        print(f"Epoch {epoch + 1}/{epochs}", flush=True)
        self.keras, self.bar = keras, None

    def __call__(self, step: int, logs: dict, steps: int) -> None:
        if self.bar is None:  # the number of steps is known once the epoch has drawn its images
            self.bar = self.keras.utils.Progbar(steps, stateful_metrics=["loss", "accuracy"])
        if step % max(1, steps // 50) == 0 or step == steps:
            self.bar.update(step, values=list(logs.items()))


def make_trainer(keras, kmodel, train_spec: S.Model, recipe: Recipe, total_steps: int, total_epochs: int, verbose: int,
                 *, from_logits: bool = False):
    """The trainer ``choose_trainer`` picks, starting from ``kmodel``'s weights; returns (trainer, why).

    ``recipe`` should be ``trained_recipe(recipe, train_spec)`` (what the chosen trainer runs).
    """
    kind, why = choose_trainer(train_spec)
    if kind == "torch":
        from layerlab.keras_build import keras_weights
        from layerlab.train.torch_train import TorchTrainer

        return TorchTrainer(train_spec, keras_weights(kmodel, train_spec), recipe, total_steps, from_logits=from_logits), why
    return KerasTrainer(keras, kmodel, train_spec, recipe, total_steps, total_epochs, verbose, from_logits=from_logits), why


def trained_recipe(recipe: Recipe, train_spec: S.Model) -> Recipe:
    """The recipe the chosen trainer runs: Keras' fit trains on every image (no importance sampling)."""
    if recipe.sample_fraction is not None and choose_trainer(train_spec)[0] != "torch":
        return recipe.replace(sample_fraction=None, sample_floor=Recipe.sample_floor)
    return recipe


def choose_trainer(train_spec: S.Model) -> tuple[str, str]:
    """('torch' or 'keras', why): torch when it is installed and every layer has a torch form.

    The torch trainer needs torch only; Keras (on any backend) still builds the initial weights
    and saves the model.

    ``LAYERLAB_TRAINER=keras`` forces Keras' fit (``torch`` asks for the torch trainer and says
    why not when it cannot be used).
    """
    import importlib.util
    import os

    asked = os.environ.get("LAYERLAB_TRAINER", "").strip().lower()
    if asked and asked not in ("keras", "torch"):
        raise SpecError(f"LAYERLAB_TRAINER={asked!r} is not known, expected 'keras' or 'torch'. Fix: unset it.")
    if asked == "keras":
        return "keras", "LAYERLAB_TRAINER=keras"
    if importlib.util.find_spec("torch") is None:
        why = "torch is not installed"
    else:
        from layerlab.train.torch_forms import unsupported

        why = unsupported(train_spec)
        if why is None:
            return "torch", "every layer has a torch form"
    if asked == "torch":
        raise SpecError(f"LAYERLAB_TRAINER=torch: cannot train with torch here: {why}. Fix: unset LAYERLAB_TRAINER.")
    return "keras", why


def run_one(
    *,
    train_spec: S.Model,
    recipe: Recipe,
    epochs: int,
    seed: int,
    data: Dataset,
    folder: Path,
    resume: bool = False,
    verbose: int = 1,
    callbacks: tuple = (),
    log=print,
    setup_seconds: float = 0.0,
    stop: threading.Event | None = None,
) -> RunResult:
    """Train one seed for ``epochs`` epochs, writing ``folder/checkpoint.npz`` after each epoch.

    Args:
        train_spec: the network with the initializers used for training.
        recipe: optimizer, schedule, batch size, EMA, standardisation.
        epochs: total epochs of the run (the schedule spans them).
        seed: initial weights (``keras.utils.set_random_seed``) and shuffles.
        data: the arrays, already standardised when ``data.standardized``.
        folder: where the checkpoint goes.
        resume: continue from ``folder/checkpoint.npz`` instead of starting afresh.
        verbose: 0 silent; 1 one line per epoch (what a log file wants); 2 also a live progress
            bar during each epoch (a terminal).
        callbacks: extra Keras callbacks passed to every ``fit`` call (the torch trainer calls their
            on_epoch_begin, on_train_batch_end and on_epoch_end hooks only).
        log: prints one line per epoch.
        setup_seconds: time already spent for this run (a teacher), added to its elapsed time.
        stop: when set (Ctrl-C in the thread that started this one), the run ends after its
            current epoch, as KeyboardInterrupt ends a run in the main thread.

    Returns:
        RunResult; ``interrupted`` is True when KeyboardInterrupt stopped it.
    """
    from layerlab.keras_build import build_keras, import_keras

    began_setup = time.perf_counter()
    keras = import_keras()
    recipe = trained_recipe(recipe, train_spec)
    total_steps = run_steps(recipe, len(data.x_train), epochs)
    with _BUILD_LOCK:
        kmodel = build_keras(train_spec, seed=seed)  # the spec's initializers, seeded
        trainer, why = make_trainer(keras, kmodel, train_spec, recipe, total_steps, epochs, verbose)

    history: list[dict] = []
    best_weights = None
    best_accuracy = -1.0
    key = selection_key(data.selection)  # what chooses the saved epoch (never the test set, but for old runs)
    # Building the model (and a teacher, if any) counts towards the run's time.
    elapsed = setup_seconds + time.perf_counter() - began_setup
    start_epoch = 0
    checkpoint = folder / CHECKPOINT
    if resume and not checkpoint.is_file():
        log(f"note: {folder} has no checkpoint yet (the run stopped before its first epoch ended): starting at epoch 1")
    if resume and checkpoint.is_file():
        meta, model_values, optimizer_values, best_weights = load_checkpoint(checkpoint)
        if meta.get("trainer", "keras") != trainer.name:
            raise ModelFileError(
                f"{checkpoint}: written by the {meta.get('trainer', 'keras')} trainer, this run uses the {trainer.name} trainer "
                f"({why}). Fix: resume where it was started (LAYERLAB_TRAINER={meta.get('trainer', 'keras')}), or start afresh."
            )
        trainer.load_state(model_values, optimizer_values, checkpoint)
        history, elapsed, start_epoch = meta["history"], meta["elapsed"], meta["epoch"]
        best_accuracy = max((row[key] for row in history if row.get(key) is not None), default=-1.0) if key else -1.0
        best_weights = best_weights or None
    result = RunResult(seed, folder, history, best_weights, elapsed, resumed_from_epoch=start_epoch if resume else None,
                       trainer=f"{trainer.name} ({why})")

    try:
        for epoch in range(start_epoch, epochs):
            began = time.perf_counter()
            order = np.random.default_rng([seed, epoch]).permutation(len(data.x_train))
            epoch_seed = (seed * 100_003 + epoch) % 2**32  # what numpy and Keras accept as a seed
            progress = _TorchProgress(keras, epoch, epochs) if verbose >= BAR and trainer.name == "torch" else None
            fitted = trainer.fit_epoch(data.x_train, data.y_train, order=order, seed=epoch_seed, epoch=epoch,
                                       progress=progress, callbacks=callbacks)
            val_accuracy = val_loss = None
            if data.x_val is not None and len(data.x_val):
                val_accuracy, val_loss = accuracy_and_loss(trainer.predict(data.x_val), data.y_val)
            test_accuracy, test_loss = accuracy_and_loss(trainer.predict(data.x_test), data.y_test)  # reported, never chooses
            seconds = time.perf_counter() - began
            elapsed += seconds
            row = {
                "epoch": epoch + 1,
                "loss": fitted["loss"],
                "accuracy": fitted["accuracy"],
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
                "test_loss": test_loss,
                "test_accuracy": test_accuracy,
                "lr": trainer.learning_rate,
                "images": fitted["images"],
                "seconds": seconds,
                "elapsed": elapsed,
            }
            history.append(row)
            score = row[key] if key else None
            if key is None or score > best_accuracy:  # no selection: every epoch replaces the last
                best_accuracy = score if key else best_accuracy
                weights = trainer.eval_weights()
                best_weights = fold_standardization(train_spec, weights, MNIST_MEAN, MNIST_STD) if data.standardized else weights
            result.best_weights, result.elapsed = best_weights, elapsed
            model_values, optimizer_values = trainer.state()
            save_checkpoint(
                checkpoint,
                {"epoch": epoch + 1, "epochs": epochs, "seed": seed, "elapsed": elapsed, "history": history, "trainer": trainer.name},
                model_values, optimizer_values, best_weights,
            )
            report.write_history(folder, history)
            if verbose:
                log(epoch_line(row, history, key, epochs))
            if stop is not None and stop.is_set() and epoch + 1 < epochs:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        result.interrupted = True
        log(f"interrupted: keeping the best model of {len(history)} complete epoch(s)")  # the runner says what resumes
    result.stats = report.run_stats(history, elapsed, data.selection)
    return result


def epoch_line(row: dict, history: list[dict], key: str | None, epochs: int) -> str:
    """One line per epoch, the same on a terminal and in a log file."""
    val = f"val_accuracy {row['val_accuracy']:.4f} " if row.get("val_accuracy") is not None else ""
    saved = ""
    if key:
        best = max((r for r in history if r.get(key) is not None), key=lambda r: r[key])
        saved = f" (saved: epoch {best['epoch']}, {key} {best[key]:.4f})"
    return (f"epoch {row['epoch']}/{epochs}: loss {row['loss']:.4f} accuracy {row['accuracy']:.4f} {val}"
            f"test_accuracy {row['test_accuracy']:.4f}{saved} lr {row['lr']:.3g} {row['seconds']:.1f} s")


def _steps_per_execution(keras, recipe) -> int:
    # Keras' torch backend runs one step per call (it refuses more); JAX compiles several.
    return 1 if keras.backend.backend() == "torch" else recipe.steps_per_execution


def _assign(variables, values: list[np.ndarray], what: str, path: Path) -> None:
    from layerlab.errors import ModelFileError

    shapes = [tuple(v.shape) for v in variables]
    if shapes != [tuple(v.shape) for v in values]:
        raise ModelFileError(
            f"{path}: the checkpoint's {what} variables have shapes {[tuple(v.shape) for v in values]}, "
            f"expected {shapes} for this network and recipe. Fix: resume with the same spec and recipe, or start afresh."
        )
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)
