"""Training on MNIST: recipes, the epoch loop, checkpoints, plots and the report folder.

    from layerlab.train import train
    result = train("seed650", "fast", out="runs/seed650")   # writes model.keras, model.h5, ...
    result.summary["best_test_accuracy"]

Modules: ``recipes`` (hyper-parameters, the 'seed' and 'fast' recipes), ``fold`` (input
standardisation folded into the first layer, numpy only), ``loop`` (one seed's epochs),
``checkpoints`` (atomic checkpoint and model files), ``report`` (history.csv, plots, run.json),
``runner`` (K seeds, the report folder, --resume), ``torch_train`` (the torch trainer),
``sampling`` (importance sampling of training images, numpy only), ``distill`` (the teacher).
Keras is imported only when training starts.
"""

from __future__ import annotations

from layerlab.train.fold import fold_standardization, foldable
from layerlab.train.recipes import FAST, MNIST_MEAN, MNIST_STD, RECIPES, SEED, Recipe, get_recipe
from layerlab.train.runner import TrainResult, resolve_spec, resume, train

__all__ = [
    "FAST",
    "MNIST_MEAN",
    "MNIST_STD",
    "RECIPES",
    "SEED",
    "Recipe",
    "TrainResult",
    "fold_standardization",
    "foldable",
    "get_recipe",
    "resolve_spec",
    "resume",
    "train",
]
