"""``train()``: K seeds of one recipe, the report folder, and ``--resume``.

Folder layout (``out``, default runs/seed650):

    train_config.json     the settings, so that --resume needs nothing else
    model.keras model.h5  the best model (best epoch of the best run), taking pixels/255
    history.csv accuracy.png loss.png summary.txt run.json
    checkpoint.npz        one run: its last complete epoch
    teacher.npz           recipes with distillation: the teacher's soft targets (reused by --resume)
    run-1/ ... run-K/     K > 1 runs: each run's own report and checkpoint
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from layerlab import spec as S
from layerlab.errors import OutputError, SpecError
from layerlab.io import atomic_path, atomic_write_text
from layerlab.keras_build import without_tensorflow
from layerlab.text import printable
from layerlab.train import report
from layerlab.train.checkpoints import save_keras_model
from layerlab.train.fold import foldable
from layerlab.train.loop import (
    Dataset,
    RunResult,
    accuracy_and_loss,
    choose_trainer,
    run_one,
    split_validation,
    trained_recipe,
)
from layerlab.train.recipes import (
    MNIST_MEAN,
    MNIST_STD,
    Recipe,
    effective_ema_momentum,
    get_recipe,
    run_steps,
    start_seed,
)

CONFIG = "train_config.json"
TEACHER = "teacher.npz"
INITS = ("keras", "nnc")


@dataclass
class TrainResult:
    """All runs of one ``train`` call; ``best`` is the run whose model was saved."""

    out: Path
    runs: list[RunResult]
    best: RunResult | None
    interrupted: bool
    summary: dict


def resolve_spec(spec: str | S.Model = "seed650", data_format: str | None = None, init: str | None = None) -> S.Model:
    """The network to train: a preset name or spec file, in ``data_format``, with ``init``.

    Args:
        spec: 'seed650' (or another preset), a .json/.yaml spec file, or a ``Model``.
        data_format: rebuild a preset in this layout; a file or Model must already use it.
        init: None or 'keras' keep the spec's initializers; 'nnc' uses NNC's defaults
            (untruncated Glorot normal kernels, zero biases) for every Conv2D and Dense.
    """
    from layerlab.presets import PRESETS
    from layerlab.specfile import load_spec

    if isinstance(spec, str) and spec in PRESETS and data_format:
        model = PRESETS[spec](data_format=data_format)
    else:
        model = spec if isinstance(spec, S.Model) else load_spec(spec)
        formats = {l.data_format for l in model.layers if getattr(l, "data_format", None)}
        if data_format and formats and formats != {data_format}:
            raise SpecError(
                f"spec '{model.name}': its layers use data_format {sorted(formats)}, --data-format {data_format} asked. "
                f"Fix: edit the spec file, or drop --data-format."
            )
    if init not in (None, *INITS):
        raise SpecError(f"--init {init!r} is not known, expected one of {INITS}.")
    if init == "nnc":
        model = with_initializers(model, "nnc_glorot_normal", "zeros")
    return model


def with_initializers(model: S.Model, kernel: str | None, bias: str | None) -> S.Model:
    """``model`` with the kernel / bias initializers of every Conv2D and Dense replaced (None keeps)."""
    changes = {k: v for k, v in (("kernel_initializer", kernel), ("bias_initializer", bias)) if v is not None}
    if not changes:
        return model
    layers = tuple(dataclasses.replace(l, **changes) if isinstance(l, (S.Conv2D, S.Dense)) else l for l in model.layers)
    return S.Model(name=model.name, input_shape=model.input_shape, layers=layers)


VAL_SIZE = 5000  # training images held out to choose the saved epoch
SPLIT_SEED = 650  # the split is the same for every seed of a run, so runs compare on one validation set


def load_data(spec: S.Model, standardize: bool, data_dir=None, train_limit=None, test_limit=None,
              val_size: int | None = VAL_SIZE) -> Dataset:
    """MNIST as the network's input: pixels/255 in the spec's layout (standardised on request).

    ``val_size`` training images (stratified, ``SPLIT_SEED``) are held out as the validation set
    that chooses the saved epoch; None is a run from before validation splits (it chose on the
    test set, and a resumed one still does), 0 saves the last epoch.
    """
    from layerlab.data import load_mnist, one_hot

    mnist = load_mnist(data_dir)

    def prepare(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float32) / np.float32(255.0)  # (N, 28, 28)
        if standardize:
            x = (x - np.float32(MNIST_MEAN)) / np.float32(MNIST_STD)
        return x.reshape((len(x), *spec.input_shape))  # (N, *input_shape); one channel either way

    x_train, y_train = mnist.x_train[:train_limit], mnist.y_train[:train_limit]
    x_test, y_test = mnist.x_test[:test_limit], mnist.y_test[:test_limit]
    x_test_pixels = (x_test.astype(np.float32) / np.float32(255.0)).reshape((len(x_test), *spec.input_shape))
    keep, val = split_validation(y_train, val_size or 0, SPLIT_SEED)
    selection = "test" if val_size is None else ("validation" if val_size else "last")
    return Dataset(prepare(x_train[keep]), one_hot(y_train[keep]), prepare(x_test), one_hot(y_test), standardize, x_test_pixels,
                   x_val=prepare(x_train[val]), y_val=one_hot(y_train[val]), selection=selection)


def train(
    spec: str | S.Model = "seed650",
    recipe: str | Recipe = "seed",
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    runs: int = 1,
    seed: int = 1,
    data_dir: str | Path | None = None,
    out: str | Path = "runs/seed650",
    data_format: str | None = None,
    init: str | None = None,
    train_limit: int | None = None,
    test_limit: int | None = None,
    val_size: int = VAL_SIZE,
    verbose: int = 1,
    callbacks: tuple = (),
    log=print,
    force: bool = False,
) -> TrainResult:
    """Train ``runs`` seeds (seed, seed+1, ...) of a network on MNIST and write the report folder.

    Args:
        spec, data_format, init: the network (see ``resolve_spec``).
        recipe: 'seed', 'fast' or a ``Recipe``; ``epochs`` and ``batch_size`` override it.
        runs: number of seeds; the best run's best epoch becomes the saved model.
        seed: the first seed.
        data_dir: a folder with the four MNIST files (else $LAYERLAB_DATA, the cache, download).
        out: the report folder.
        train_limit, test_limit: use only the first N training / test images (quick trials).
        val_size: training images held out (stratified) to choose the saved epoch; 0 saves the
            last epoch. The test set never chooses.
        verbose: 0 only the final lines; 1 one line per epoch; 2 also a live progress bar.
        callbacks: extra Keras callbacks for every fit call.
        log: where lines go.
        force: replace an earlier run in ``out`` (without it, training into one refuses).

    Returns:
        TrainResult; ``interrupted`` is True after Ctrl-C (the report holds the best so far).
    """
    _quiet_thread_waits()
    network = resolve_spec(spec, data_format, init)
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    recipe = recipe.replace(**{k: v for k, v in (("epochs", epochs), ("batch_size", batch_size)) if v is not None})
    if not (isinstance(runs, int) and runs >= 1):
        raise SpecError(f"--runs {runs!r}: expected a positive number of seeds. Fix: --runs 3.")
    config = {
        "spec": network.to_dict(), "recipe": recipe.to_dict(), "runs": runs, "seed": seed, "init": init,
        "data_dir": str(data_dir) if data_dir else None, "train_limit": train_limit, "test_limit": test_limit,
        "val_size": val_size,
    }
    out = Path(out)
    _check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    with run_lock(out):
        _claim(out, force)
        atomic_write_text(out / CONFIG, json.dumps(config, indent=2) + "\n")
        with without_tensorflow():  # called from Python too, not only by `layerlab train`
            return _run(out, config, resume=False, verbose=verbose, callbacks=callbacks, log=log)


# What one training writes into its --out folder (and into run-N/ for several seeds).
RUN_FILES = (CONFIG, TEACHER, "run.json", "history.csv", "summary.txt", "model.keras", "checkpoint.npz",
             "model.h5", "accuracy.png", "loss.png")


def run_lock(out: Path):
    """One training at a time in a run folder: a second refuses at once (its run takes minutes)."""
    from layerlab.publish import FOLDER_LOCK, locked

    return locked(out / FOLDER_LOCK, out, wait=0)


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {printable(str(out))} is a file; a training run writes a folder. Choose a folder name")


def _claim(out: Path, force: bool) -> None:
    """Refuse to train into a folder that holds an earlier run, unless ``force``: then that
    run's files (and only those) are removed first, so nothing of it mixes with the new one."""
    def run_folders(root: Path) -> list[Path]:  # a run's extra starts, or several runs (each with its starts)
        return [p for pattern in ("start-*", "run-*") for p in sorted(root.glob(pattern))
                if (p / "run.json").is_file() or (p / "checkpoint.npz").is_file() or any(p.glob("start-*/checkpoint.npz"))]

    earlier = [out / name for name in RUN_FILES if (out / name).exists()]
    earlier += [q for p in run_folders(out) for q in (*run_folders(p), p)]  # starts inside a run first
    if not earlier:
        return
    if not force:
        done = _finished(out) if (out / "run.json").is_file() else None
        accuracy = done.get("test_accuracy", done.get("best_test_accuracy")) if done else None
        state = f"a finished run ({accuracy:.4f} test accuracy)" if accuracy is not None else "an earlier or unfinished run"
        raise OutputError(f"--out {printable(str(out))} holds {state}; layerlab does not replace it unasked. "
                          f"Continue it with --resume {printable(str(out))}, replace it with --force, or choose another --out")
    for path in earlier:
        if path.is_dir():
            for name in RUN_FILES:
                with contextlib.suppress(FileNotFoundError):
                    (path / name).unlink()
            with contextlib.suppress(OSError):
                path.rmdir()
        else:
            path.unlink()


def resume(out: str | Path, *, epochs: int | None = None, verbose: int = 1, callbacks: tuple = (), log=print) -> TrainResult:
    """Continue the runs in ``out`` from their last epoch checkpoints, with their saved settings.

    Args:
        out: a report folder written by ``train``.
        epochs: a new total for a constant-rate recipe (e.g. 'seed'); a scheduled recipe keeps
            its total, as its schedule spans it.
    """
    _quiet_thread_waits()
    out = Path(out)
    path = out / CONFIG
    if not path.is_file():
        raise SpecError(f"--resume {out}: no {CONFIG} there. Fix: give the --out folder of an earlier `layerlab train`.")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        S.Model.from_dict(config["spec"]), Recipe.from_dict(config["recipe"])
        config["runs"], config["seed"], config["init"], config["data_dir"], config["train_limit"], config["test_limit"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise SpecError(f"--resume {out}: {CONFIG} is damaged ({type(exc).__name__}: {exc}); the run cannot continue. "
                        "Start it again with `layerlab train ... --force`") from None
    if epochs is not None and epochs != config["recipe"]["epochs"]:
        if config["recipe"]["schedule"] != "constant":
            raise SpecError(
                f"--resume {out} --epochs {epochs}: recipe '{config['recipe']['name']}' has a {config['recipe']['schedule']} "
                f"schedule spanning {config['recipe']['epochs']} epochs. Fix: drop --epochs."
            )
        config["recipe"]["epochs"] = epochs
    with run_lock(out):
        if epochs is not None and epochs != config["recipe"]["epochs"]:
            config["recipe"]["epochs"] = epochs
            atomic_write_text(path, json.dumps(config, indent=2) + "\n")
        with without_tensorflow():
            return _run(out, config, resume=True, verbose=verbose, callbacks=callbacks, log=log)


def _quiet_thread_waits() -> None:
    """Let idle OpenMP threads sleep instead of spin (before torch is imported; no-op after).

    torch's CPU kernels run on 2 OpenMP threads here. On a busy machine spinning threads fight
    the other processes for the cores: measured at load 6, one step of seed650 cost 2200-2900 us
    of CPU per image with the default policy and 290 us with OMP_WAIT_POLICY=PASSIVE (wall
    4000-7000 vs 560-720 us). A user's own setting wins.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _run(out: Path, config: dict, *, resume: bool, verbose: int, callbacks: tuple, log) -> TrainResult:
    network = S.Model.from_dict(config["spec"])
    recipe = Recipe.from_dict(config["recipe"])
    standardize = recipe.standardize and foldable(network) is None
    if recipe.standardize and not standardize:
        log(f"note: training on pixels/255 without standardisation: {foldable(network)}")
    if recipe.sample_fraction is not None and trained_recipe(recipe, network).sample_fraction is None:
        same = 1 + round((recipe.epochs - 1) * recipe.sample_fraction)
        log(f"note: importance sampling needs the torch trainer ({choose_trainer(network)[1]}); every epoch trains on "
            f"every image, {1 / recipe.sample_fraction:.1f}x the time per epoch (--epochs {same} trains as many images)")
    train_spec = network if config["init"] else with_initializers(network, recipe.kernel_initializer, recipe.bias_initializer)
    began = time.perf_counter()
    data = load_data(network, standardize, config["data_dir"], config["train_limit"], config["test_limit"],
                     config.get("val_size"))  # absent: a run from before validation splits
    if data.selection == "test":
        log(f"note: {out} is a run from before validation splits: its saved epoch is still chosen on the test set")
    data_seconds = time.perf_counter() - began
    load_before = _load_average()
    teacher = _distill(out, network, recipe, data, config["seed"], resume, log) if recipe.distill_epochs else {}
    results: list[RunResult] = []
    for index in range(config["runs"]):
        seed = config["seed"] + index
        folder = out if config["runs"] == 1 else out / f"run-{index + 1}"
        done = _finished(folder)
        if resume and done is not None and done.get("epochs_done") == recipe.epochs:
            results.append(_reload(folder, seed, done, data.selection))
            continue
        if verbose and config["runs"] > 1:
            log(f"run {index + 1}/{config['runs']} (seed {seed})")
        result = _train_run(
            train_spec=train_spec, recipe=recipe, seed=seed, data=data, folder=folder,
            resume=resume, verbose=verbose, callbacks=callbacks, log=log,
            # The teacher is trained once for all runs; its time counts towards the first.
            setup_seconds=teacher.get("teacher_seconds", 0.0) if index == 0 else 0.0,
        )
        results.append(result)
        if config["runs"] > 1:
            _write_run_report(folder, network, recipe, config, result, data)
        if result.interrupted:
            break
    best = _best_on_validation(results)
    interrupted = any(r.interrupted for r in results)
    if interrupted:  # the folder to resume is the report folder, whichever run or start was stopped
        log(f"`--resume {out}` continues")
    machine = {**teacher, "data_seconds": round(data_seconds, 3), "cpu_count": os.cpu_count(), "load_average_before": load_before,
               "load_average_after": _load_average()}
    summary = _write_run_report(out, network, recipe, config, best, data, results=results, interrupted=interrupted,
                                wall=time.perf_counter() - began, extra=machine)
    log(_final_line(summary, out))
    return TrainResult(out, results, best, interrupted, summary)


def _best_on_validation(results: list[RunResult]) -> RunResult | None:
    """The run (or start) whose saved epoch scored best on validation (never test, but for old runs); None: no epoch."""
    scored = [r for r in results if r.history]
    return max(scored, key=lambda r: r.stats["selected_score"]) if scored else None


def start_folder(folder: Path, start: int) -> Path:
    """Where start ``start`` (0-based) of a run keeps its checkpoint: the run's folder for the
    first (a one-start run looks as it always did), ``start-2/``... for the others."""
    return folder if start == 0 else folder / f"start-{start + 1}"


def _train_run(*, train_spec: S.Model, recipe: Recipe, seed: int, data: Dataset, folder: Path, resume: bool, verbose: int,
               callbacks: tuple, log, setup_seconds: float) -> RunResult:
    """One run: the recipe's starts (side by side in threads when they can), the best on validation.

    Threads share torch's CPU threads out between the starts (``set_num_threads``), so each
    start runs on its own core(s) as a one-start run would on all of them. They need the torch
    trainer (Keras' fit keeps global state) and no Dropout (torch draws its masks from one
    generator); otherwise the starts train one after the other. Ctrl-C stops every start after its
    current epoch.
    """
    count = recipe.starts
    if count > 1 and data.selection != "validation":
        log(f"note: recipe '{recipe.name}' has {count} starts, but without validation images (--val-size 0) nothing can "
            "choose between them: one start is trained")
        count = 1
    kwargs = dict(train_spec=train_spec, recipe=recipe, epochs=recipe.epochs, data=data, resume=resume, callbacks=callbacks,
                  setup_seconds=setup_seconds)
    if count == 1:
        return run_one(seed=seed, folder=folder, verbose=verbose, log=log, **kwargs)
    seeds = [start_seed(seed, i) for i in range(count)]
    folders = [start_folder(folder, i) for i in range(count)]
    for path in folders[1:]:
        path.mkdir(parents=True, exist_ok=True)
    parallel, why = _side_by_side(train_spec)
    if verbose:
        log(f"{count} starts (seeds {', '.join(map(str, seeds))}) {'side by side' if parallel else 'one after the other'}"
            f"{'' if parallel else f' ({why})'}; the best on validation is kept")

    def prefixed(i: int):
        return lambda line: log(f"[start {i + 1}/{count}] {line}")

    if parallel:
        def one_start(i: int, stop) -> RunResult:
            result = run_one(seed=seeds[i], folder=folders[i], verbose=min(verbose, 1), log=prefixed(i), stop=stop, **kwargs)
            if result.interrupted:
                stop.set()  # a start interrupted (by a callback): the others stop too, so the run resumes as one
            return result

        results = _in_threads(count, one_start)
    else:
        results = []
        for i in range(count):
            results.append(run_one(seed=seeds[i], folder=folders[i], verbose=verbose, log=prefixed(i), **kwargs))
            if results[-1].interrupted:
                break
    best = _best_on_validation(results) or results[0]
    # Side by side, the run took as long as its slowest start; one after the other, all of them.
    elapsed = max(r.elapsed for r in results) if parallel else sum(r.elapsed for r in results) - setup_seconds * (len(results) - 1)
    starts = [{"start": i + 1, "seed": r.seed, "folder": r.folder.relative_to(folder).as_posix(), **r.stats}
              for i, r in enumerate(results)]
    best.stats = report.run_stats(best.history, elapsed, data.selection)
    best.elapsed, best.interrupted, best.starts = elapsed, any(r.interrupted for r in results), starts
    best.folder = folder  # the run's folder (its report); the kept start's checkpoint stays in its own
    if verbose:
        log(f"start {results.index(best) + 1} of {count} kept (validation " + ", ".join(
            f"{r.stats.get('val_accuracy') or 0:.4f}" for r in results) + ")")
    return best


def _side_by_side(train_spec: S.Model) -> tuple[bool, str]:
    """(whether starts can train in threads, why not)."""
    kind, why = choose_trainer(train_spec)
    if kind != "torch":
        return False, f"the Keras trainer: {why}"
    if any(isinstance(layer, S.Dropout) for layer in train_spec.layers):
        return False, "Dropout draws its masks from torch's one generator"
    return True, ""


def _in_threads(count: int, work) -> list[RunResult]:
    """``work(i, stop)`` for i in range(count) in threads, torch's CPU threads shared out; Ctrl-C sets ``stop``."""
    import concurrent.futures
    import threading

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // count))
    stop = threading.Event()
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=count, thread_name_prefix="layerlab-start") as pool:
            futures = [pool.submit(work, i, stop) for i in range(count)]
            while True:
                try:
                    done, _ = concurrent.futures.wait(futures, timeout=0.5)
                except KeyboardInterrupt:
                    stop.set()  # every start ends after its current epoch
                    continue
                if len(done) == count:
                    break
            return [f.result() for f in futures]
    finally:
        torch.set_num_threads(threads)


def _distill(out: Path, network: S.Model, recipe: Recipe, data: Dataset, seed: int, resume: bool, log) -> dict:
    """Replace ``data.y_train`` by the teacher's soft targets, cached in ``out/teacher.npz``."""
    from layerlab.keras_build import import_keras
    from layerlab.train.distill import soft_targets

    path = out / TEACHER
    if resume and path.is_file():
        with np.load(path, allow_pickle=False) as cached:
            data.y_train = cached["targets"]
            return json.loads(cached["info"].tobytes().decode("utf-8"))
    began = time.perf_counter()
    formats = {l.data_format for l in network.layers if getattr(l, "data_format", None)}
    targets, info = soft_targets(
        import_keras(), data.x_train, data.y_train, data.x_test, data.y_test, data_format=formats.pop() if len(formats) == 1 else None,
        epochs=recipe.distill_epochs, temperature=recipe.distill_temperature, weight=recipe.distill_weight, seed=seed + 1_000_003,
        learning_rate=recipe.distill_learning_rate, schedule=recipe.distill_schedule,
    )
    info["teacher_seconds"] = round(time.perf_counter() - began, 3)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, targets=targets, info=np.frombuffer(json.dumps(info).encode("utf-8"), np.uint8))
    log(f"teacher: {info['teacher_test_accuracy']:.4f} test accuracy after {recipe.distill_epochs} epochs, {info['teacher_seconds']:.0f} s")
    data.y_train = targets
    return info


def _finished(folder: Path) -> dict | None:
    path = folder / "run.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # damaged: not a finished run (resume trains it again from its checkpoint)
    return data if isinstance(data, dict) and not data.get("interrupted") else None


def _reload(folder: Path, seed: int, done: dict, selection: str) -> RunResult:
    """A run finished before ``--resume``: its best weights come from its checkpoint."""
    from layerlab.train.checkpoints import CHECKPOINT, load_checkpoint

    kept = folder / done.get("kept_folder", ".")  # a run of several starts: the start it kept
    meta, _, _, best_weights = load_checkpoint(kept / CHECKPOINT)
    return RunResult(done.get("seed", seed), folder, meta["history"], best_weights, meta["elapsed"],
                     stats={**report.run_stats(meta["history"], meta["elapsed"], selection),
                            "wall_seconds": done.get("wall_seconds", meta["elapsed"])},
                     starts=done.get("starts", []))


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (other processes slow a run down on a shared machine)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _write_run_report(folder, network, recipe, config, result, data, *, results=None, interrupted=None, wall=None, extra=None) -> dict:
    """Model files, history, plots, summary and run.json for one run (or the best of several)."""
    from layerlab.keras_build import build_keras

    trained = trained_recipe(recipe, network)  # what the chosen trainer runs
    summary: dict = {
        "spec": network.name, "recipe": recipe.to_dict(), "init": config["init"] or "recipe/spec",
        "standardized": data.standardized, "seeds": [config["seed"] + i for i in range(config["runs"])],
        "train_images": len(data.x_train), "test_images": len(data.x_test),
        "validation_images": 0 if data.x_val is None else len(data.x_val),
        "saved_epoch_chosen_on": {"validation": f"validation accuracy ({len(data.x_val)} training images held out, "
                                                f"stratified, seed {SPLIT_SEED}); the test set never chooses",
                                  "test": "test accuracy (a run from before validation splits)",
                                  "last": "nothing: the last epoch is saved (--val-size 0)"}[data.selection],
        "versions": report.versions(),
        "ema_momentum_used": effective_ema_momentum(
            recipe, run_steps(trained, len(data.x_train), recipe.epochs)),
        "sample_fraction_used": trained.sample_fraction,
        "interrupted": bool(result.interrupted if interrupted is None else interrupted),
    }
    if result is not None and result.best_weights:
        kmodel = build_keras(network, weights=result.best_weights)
        for name in ("model.keras", "model.h5"):
            save_keras_model(kmodel, folder / name)
        # The saved model on pixels/255 (standardisation folded in): the number a user will see.
        probabilities = kmodel.predict(data.x_test_pixels, batch_size=2000, verbose=0)
        summary["saved_model_test_accuracy"] = accuracy_and_loss(probabilities, data.y_test)[0]
        report.write_history(folder, result.history)
        report.write_plots(folder, result.history, f"{network.name}, recipe {recipe.name}, seed {result.seed}")
        summary.update(seed=result.seed, saved="last epoch" if data.selection == "last" else "best epoch", trainer=result.trainer,
                       **result.stats)
    report.write_summary(folder, network)
    if result is not None and result.starts:
        summary["starts"] = result.starts  # every start's seed, folder and accuracies; the saved model is the best on validation
        kept = next(s for s in result.starts if s["seed"] == result.seed)
        summary["kept_start"], summary["kept_folder"] = kept["start"], kept["folder"]
    if results is not None and len(results) > 1:
        summary["runs"] = [{"seed": r.seed, "folder": r.folder.name, **r.stats} for r in results]
        summary["best_run_seed"] = result.seed if result else None  # the run whose saved epoch scored best on validation
        for key in ("test_accuracy", "final_test_accuracy"):  # the saved epochs' and the last epochs' test accuracy
            values = [r.stats[key] for r in results if r.history]
            summary[f"{key}_mean"] = statistics.fmean(values) if values else None
            summary[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
            summary[f"{key}_min"] = min(values) if values else None
            summary[f"{key}_median"] = statistics.median(values) if values else None
            summary[f"{key}_max"] = max(values) if values else None
    if wall is not None:
        summary["wall_seconds_total"] = round(wall, 3)
    summary.update(extra or {})
    report.write_run_json(folder, summary)
    return summary


def _final_line(summary: dict, out: Path) -> str:
    if "test_accuracy" not in summary:
        return f"no complete epoch; nothing saved in {out}"
    if summary.get("val_accuracy") is not None and summary.get("saved") == "best epoch" and "validation" in summary.get("saved_epoch_chosen_on", ""):
        chosen = f"epoch {summary['saved_epoch']} chosen on validation ({summary['val_accuracy']:.4f})"
    elif summary.get("saved") == "last epoch":
        chosen = f"the last epoch ({summary['saved_epoch']})"
    else:
        chosen = f"epoch {summary['saved_epoch']} chosen on the test set (an old run)"
    line = (f"saved model test accuracy {summary['test_accuracy']:.4f} ({chosen}, seed {summary['seed']}), "
            f"final epoch {summary['final_test_accuracy']:.4f}")
    if "runs" in summary:
        line += (f"; {len(summary['runs'])} runs, saved models' test accuracy min / median / max "
                 f"{summary['test_accuracy_min']:.4f} / {summary['test_accuracy_median']:.4f} / {summary['test_accuracy_max']:.4f} "
                 f"(mean {summary['test_accuracy_mean']:.4f} +- {summary['test_accuracy_std']:.4f}; the best on validation saved)")
    return line + f"; saved {out / 'model.keras'} and model.h5"
