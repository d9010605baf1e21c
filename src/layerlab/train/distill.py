"""Soft targets from a throwaway teacher network (knowledge distillation).

A 650-parameter network underfits MNIST: its training accuracy stays close to its test accuracy.
Training it on a mixture of the one-hot labels and a larger teacher's softened probabilities
gives every image a richer target (which wrong digits are close) and, measured in
benchmarks/TRAINING_LOG.md, a better network for the same number of epochs. The teacher is
trained first, in the same run, on the same training images only; it is not saved, and the
trained network keeps its own layers and parameters.

    target = (1 - distill_weight) * one_hot + distill_weight * softmax(teacher_logits / T)
"""

from __future__ import annotations

import numpy as np

from layerlab import spec as S


def teacher_spec(input_shape: tuple[int, ...], data_format: str = S.CHANNELS_LAST) -> S.Model:
    """The teacher: a small LeNet-like CNN on images in ``data_format``, a one-hidden-layer MLP otherwise.

    Both end in 10 logits (no softmax). The CNN reaches about 98.8% on MNIST after 2 epochs.
    """
    if len(input_shape) == 3:
        conv = dict(kernel_size=(5, 5), activation="relu", data_format=data_format)
        pool = dict(pool_size=(2, 2), strides=(2, 2), data_format=data_format)
        layers = (
            S.Conv2D(name="teacher_conv1", filters=16, **conv),
            S.MaxPooling2D(name="teacher_pool1", **pool),
            S.Conv2D(name="teacher_conv2", filters=32, **conv),
            S.MaxPooling2D(name="teacher_pool2", **pool),
            S.Flatten(name="teacher_flat", data_format=data_format),
            S.Dense(name="teacher_logits", units=10),
        )
    else:
        layers = (
            S.Flatten(name="teacher_flat"),
            S.Dense(name="teacher_hidden", units=256, activation="relu"),
            S.Dense(name="teacher_logits", units=10),
        )
    return S.Model(name="teacher", input_shape=tuple(input_shape), layers=layers)


def softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``, (N, 10) -> (N, 10) float32."""
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def soft_targets(
    keras, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, *,
    data_format: str | None, epochs: int, temperature: float, weight: float, seed: int,
    learning_rate: float = 2e-3, schedule: str = "constant",
) -> tuple[np.ndarray, dict]:
    """Train the teacher and mix its softened probabilities into the one-hot targets.

    Args:
        keras: the keras module.
        x_train, x_test: network inputs (N, *input_shape) float32; y_train, y_test one-hot (N, 10).
        data_format: of the student's input; the teacher uses it too.
        epochs: teacher epochs (Adam, batch 128).
        learning_rate, schedule: Adam's rate, 'constant' or 'warmup_cosine' (from a tenth of it over
            5% of the steps, then cosine to 0).
        temperature: softening of the teacher's logits.
        weight: share of the teacher's probabilities in the target.
        seed: the teacher's initial weights.

    Returns:
        (targets (N, 10) float32, info dict with the teacher's test accuracy).
    """
    from layerlab.keras_build import build_keras
    from layerlab.train.loop import make_trainer
    from layerlab.train.recipes import Recipe, run_steps

    spec = teacher_spec(x_train.shape[1:], data_format or S.CHANNELS_LAST)
    recipe = Recipe(name="teacher", description=f"Adam {learning_rate:g} {schedule}, batch 128", learning_rate=learning_rate,
                    schedule=schedule, initial_learning_rate=learning_rate / 10, warmup_fraction=0.05 if schedule != "constant" else 0.0,
                    batch_size=128, epochs=epochs)
    total_steps = run_steps(recipe, len(x_train), epochs)
    trainer, _ = make_trainer(keras, build_keras(spec, seed=seed), spec, recipe, total_steps, epochs, 0, from_logits=True)
    order = np.random.default_rng([seed, 7919]).permutation(len(x_train))
    for epoch in range(epochs):
        trainer.fit_epoch(x_train, y_train, order=order, seed=seed + epoch, epoch=epoch)
        order = np.random.default_rng([seed, 7919, epoch + 1]).permutation(len(x_train))
    logits = trainer.predict(x_train)  # (N, 10)
    test_accuracy = float(np.mean(trainer.predict(x_test).argmax(1) == y_test.argmax(1)))
    targets = (1.0 - weight) * y_train + weight * softmax(logits, temperature)  # (N, 10), rows sum to 1
    return targets.astype(np.float32), {"teacher_test_accuracy": test_accuracy, "teacher_epochs": epochs, "teacher_parameters": spec.param_count}
