"""``layerlab train``: train a network on MNIST and write a report folder."""

from __future__ import annotations

import argparse
import os
import sys

from layerlab.commands import non_negative_int, positive_int
from layerlab.spec import CHANNELS_FIRST, CHANNELS_LAST


def register(subparsers: argparse._SubParsersAction) -> None:
    from layerlab.train.recipes import RECIPES

    recipes = "; ".join(f"'{r.name}': {r.description} ({r.epochs} epochs by default)" for r in RECIPES.values())
    parser = subparsers.add_parser(
        "train",
        help="train a network (seed650 by default) on MNIST and write a report folder",
        description=(
            "Train on MNIST with Keras 3 (torch backend when installed, else JAX: both run channels_first on a CPU). Writes model.keras, "
            "model.h5 (the best epoch), history.csv, accuracy.png, loss.png, summary.txt and run.json to --out, "
            "and checkpoint.npz after every epoch. Ctrl-C stops after the last complete epoch and keeps the best "
            f"model; --resume DIR continues. Recipes: {recipes}."
        ),
    )
    parser.add_argument("--spec", default="seed650", metavar="seed650|FILE", help="built-in spec name or a .json/.yaml spec file")
    parser.add_argument("--recipe", default="seed", choices=sorted(RECIPES), help="training recipe (default: seed)")
    parser.add_argument("--epochs", type=positive_int, metavar="N", help="epochs (default: the recipe's)")
    parser.add_argument("--batch-size", type=positive_int, metavar="N", help="batch size (default: the recipe's)")
    parser.add_argument("--runs", type=positive_int, default=1, metavar="K", help="train K seeds; report mean, std and best; keep the best model")
    parser.add_argument("--seed", type=non_negative_int, default=1, metavar="S", help="first seed (runs use S, S+1, ...)")
    parser.add_argument("--data-dir", metavar="DIR", help="folder with the four MNIST files (else $LAYERLAB_DATA, the cache, download)")
    parser.add_argument("--out", default="runs/seed650", metavar="DIR", help="report folder (default: runs/seed650)")
    parser.add_argument("--data-format", choices=(CHANNELS_FIRST, CHANNELS_LAST), help="layout of a built-in spec (default: as written)")
    parser.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR with its saved settings")
    parser.add_argument(
        "--init", choices=("keras", "nnc"),
        help="initializers: 'keras' = the spec's as written; 'nnc' = NNC's (untruncated Glorot normal, zero bias); "
        "default: the recipe's (fast uses zero biases)",
    )
    parser.add_argument("--train-limit", type=positive_int, metavar="N", help="use only the first N training images (quick trials)")
    parser.add_argument("--val-size", type=non_negative_int, default=5000, metavar="N",
                        help="training images held out (stratified) to choose the saved epoch; the test set never "
                             "chooses (default 5000; 0 saves the last epoch)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    parser.add_argument("--log-format", choices=("auto", "bar", "plain"), default="auto",
                        help="bar: a live progress bar and one line per epoch; plain: only the lines (what a log file "
                             "wants); auto (default): bar on a terminal, plain otherwise")
    parser.add_argument("--force", action="store_true", help="replace an earlier run in --out (its files only) instead of refusing")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from layerlab.keras_build import training_backend, without_tensorflow

    # Chosen before Keras is imported: torch when installed (about 2x faster here), else JAX.
    os.environ["KERAS_BACKEND"] = training_backend()
    with without_tensorflow():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from layerlab.train import resume, train

    bar = args.log_format == "bar" or (args.log_format == "auto" and sys.stdout.isatty())
    verbose = 0 if args.quiet else (2 if bar else 1)
    if args.resume:
        given = [
            flag for flag, value, default in (
                ("--spec", args.spec, "seed650"), ("--recipe", args.recipe, "seed"), ("--batch-size", args.batch_size, None),
                ("--runs", args.runs, 1), ("--seed", args.seed, 1), ("--data-dir", args.data_dir, None),
                ("--out", args.out, "runs/seed650"), ("--data-format", args.data_format, None), ("--init", args.init, None),
                ("--train-limit", args.train_limit, None), ("--force", args.force, False), ("--val-size", args.val_size, 5000),
            ) if value != default
        ]
        if given:
            from layerlab.errors import SpecError

            raise SpecError(
                f"--resume {args.resume} takes its settings from {args.resume}/train_config.json, but {', '.join(given)} "
                f"given. Fix: drop them (only --epochs may change, for a constant-rate recipe)."
            )
        result = resume(args.resume, epochs=args.epochs, verbose=verbose)
    else:
        result = train(
            args.spec, args.recipe, epochs=args.epochs, batch_size=args.batch_size, runs=args.runs, seed=args.seed,
            data_dir=args.data_dir, out=args.out, data_format=args.data_format, init=args.init,
            train_limit=args.train_limit, val_size=args.val_size, verbose=verbose, force=args.force,
        )
    return 130 if result.interrupted else 0
