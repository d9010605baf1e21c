"""The torch trainer (layerlab.train.torch_train) against Keras, the oracle.

* forward pass: a TorchNetwork built from a spec returns what Keras' predict returns for the
  same weights, for every supported layer type and argument that changes the geometry;
* schedule: ``learning_rate_at`` equals the Keras schedule ``make_optimizer`` builds, step by step;
* training: a few steps of the torch trainer (Adam, warm-up + cosine, EMA, label smoothing,
  standardised input) end at the weights Keras' own fit reaches from the same start, batches
  and targets;
* which trainer runs, and a checkpoint from one trainer refused by the other.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import random_weights, require_module
from layerlab import spec as S
from layerlab.errors import ModelFileError, SpecError
from layerlab.presets import seed650
from layerlab.train import FAST, SEED
from layerlab.train.checkpoints import save_checkpoint
from layerlab.train.loop import Dataset, choose_trainer, run_one
from layerlab.train.recipes import learning_rate_at, make_optimizer

CF, CL = S.CHANNELS_FIRST, S.CHANNELS_LAST


@pytest.fixture(scope="module")
def torch_train():
    require_module("torch")
    from layerlab.train import torch_train

    return torch_train


def _chain(input_shape, *layers) -> S.Model:
    return S.Model(name="t", input_shape=input_shape, layers=tuple(layers))


def _windowed(fmt: str) -> list[S.Model]:
    """Chains whose windows pad on one side, both sides, or not at all, in ``fmt``."""
    shape = (1, 9, 8) if fmt == CF else (9, 8, 1)
    conv = dict(data_format=fmt, kernel_initializer="glorot_uniform", bias_initializer="zeros")
    pool = dict(data_format=fmt)
    flat = S.Flatten(name="flat", data_format=fmt)
    return [
        _chain(shape, S.Conv2D(name="c", filters=3, kernel_size=(3, 3), strides=(2, 2), padding="same", **conv), flat),
        _chain(shape, S.Conv2D(name="c", filters=2, kernel_size=(2, 3), dilation_rate=(2, 1), padding="same", activation="relu", **conv), flat),
        _chain(shape, S.Conv2D(name="c", filters=2, kernel_size=(4, 4), strides=(3, 2), use_bias=False, **conv), flat),
        _chain(shape, S.Conv2D(name="c", filters=2, kernel_size=(3, 3), **conv),
               S.MaxPooling2D(name="p", pool_size=(3, 3), strides=(1, 1), padding="same", **pool), flat),  # pads before too
        _chain(shape, S.Conv2D(name="c", filters=2, kernel_size=(2, 2), **conv),
               S.MaxPooling2D(name="p", pool_size=(2, 2), padding="same", **pool), flat),  # after only: ceil_mode
        _chain(shape, S.Conv2D(name="c", filters=2, kernel_size=(2, 2), **conv),
               S.MaxPooling2D(name="p", pool_size=(3, 3), strides=(2, 2), padding="same", **pool), flat),
        _chain(shape, S.Conv2D(name="c", filters=2, kernel_size=(2, 2), **conv),
               S.AveragePooling2D(name="p", pool_size=(3, 3), strides=(2, 2), padding="same", **pool), flat),
        _chain(shape, S.AveragePooling2D(name="p", pool_size=(2, 3), padding="valid", **pool), flat),
        _chain(shape, S.ZeroPadding2D(name="z", padding=((1, 0), (2, 1)), data_format=fmt),
               S.Conv2D(name="c", filters=2, kernel_size=(3, 3), activation="tanh", **conv), flat),
    ]


def _activations() -> list[S.Model]:
    dense = dict(kernel_initializer="glorot_uniform", bias_initializer="zeros")
    return [
        _chain((12,), S.Dense(name="d", units=7, **dense), S.Activation(name="a", activation=name))
        for name in S.ACTIVATIONS
    ] + [
        _chain((12,), S.Rescaling(name="r", scale=0.5, offset=-1.0), S.Dropout(name="drop", rate=0.3),
               S.Dense(name="d", units=6, activation="softmax", **dense)),
        _chain((12,), S.Reshape(name="r", target_shape=(3, -1)), S.Flatten(name="f"), S.Dense(name="d", units=4, **dense)),
    ]


def _check_forward(keras, torch_train, model: S.Model, seed: int) -> None:
    import torch

    from layerlab.keras_build import build_keras

    weights = random_weights(model, seed)
    x = np.random.default_rng(seed).normal(0, 1, (5, *model.input_shape)).astype(np.float32)
    expected = np.asarray(build_keras(model, weights=weights).predict(x, verbose=0))
    net = torch_train.TorchNetwork(model, weights).eval()
    with torch.no_grad():
        got = net(torch.from_numpy(x)).numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=str([l.to_dict() for l in model.layers]))


@pytest.mark.keras
@pytest.mark.parametrize("fmt", [CF, CL])
def test_forward_equals_keras_for_windowed_layers(keras, torch_train, fmt):
    for index, model in enumerate(_windowed(fmt)):
        _check_forward(keras, torch_train, model, index)


@pytest.mark.keras
@pytest.mark.parametrize("fmt", [CF, CL])
def test_forward_equals_keras_for_seed650(keras, torch_train, fmt):
    _check_forward(keras, torch_train, seed650(data_format=fmt), 3)


@pytest.mark.keras
def test_forward_equals_keras_for_every_activation_and_the_plain_layers(keras, torch_train):
    for index, model in enumerate(_activations()):
        _check_forward(keras, torch_train, model, 10 + index)


@pytest.mark.keras
def test_activations_equal_keras_far_from_zero(keras, torch_train):
    """Large inputs too: an activation that overflows where Keras does not would be silently wrong."""
    import torch

    x = np.linspace(-100, 100, 401, dtype=np.float32).reshape(1, -1)
    for name, fn in torch_train.ACTIVATIONS.items():
        if name == "hard_sigmoid_keras2":
            continue  # Keras 2's, not in Keras 3: checked against tf_keras below
        expected = np.asarray(keras.activations.get(name)(x))
        got = fn(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.tfkeras
def test_hard_sigmoid_keras2_equals_tf_keras(torch_train):
    require_module("tf_keras")
    import tensorflow as tf
    import tf_keras
    import torch

    x = np.linspace(-5, 5, 201, dtype=np.float32)
    expected = tf_keras.activations.hard_sigmoid(tf.constant(x)).numpy()
    got = torch_train.ACTIVATIONS["hard_sigmoid_keras2"](torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_layers_without_a_torch_form_are_named(torch_train):
    bn = _chain((4,), S.BatchNormalization(name="bn"), S.Dense(name="d", units=2))
    assert torch_train.unsupported(bn) == "layer 'bn' is a BatchNormalization"
    graph = _chain((4,), S.Dense(name="a", units=4), S.Dense(name="b", units=4),
                   S.Add(name="sum", inputs=("a", "b")))
    assert torch_train.unsupported(graph) == "layer 'sum' reads named inputs ['a', 'b'] (a graph, not a chain)"
    assert torch_train.unsupported(seed650()) is None
    with pytest.raises(ValueError, match="layer 'bn' is a BatchNormalization; train it with Keras' fit"):
        torch_train.TorchNetwork(bn, {})


def test_choose_trainer(torch_train, monkeypatch):
    monkeypatch.delenv("LAYERLAB_TRAINER", raising=False)
    assert choose_trainer(seed650()) == ("torch", "every layer has a torch form")
    bn = _chain((4,), S.BatchNormalization(name="bn"), S.Dense(name="d", units=2))
    assert choose_trainer(bn) == ("keras", "layer 'bn' is a BatchNormalization")
    monkeypatch.setenv("LAYERLAB_TRAINER", "keras")
    assert choose_trainer(seed650())[0] == "keras"
    monkeypatch.setenv("LAYERLAB_TRAINER", "torch")
    with pytest.raises(SpecError, match="LAYERLAB_TRAINER=torch: cannot train with torch here: layer 'bn' is a BatchNormalization"):
        choose_trainer(bn)
    monkeypatch.setenv("LAYERLAB_TRAINER", "tensorflow")
    with pytest.raises(SpecError, match="LAYERLAB_TRAINER='tensorflow' is not known"):
        choose_trainer(seed650())


@pytest.mark.keras
@pytest.mark.parametrize("recipe", [FAST, FAST.replace(warmup_fraction=0.0, final_learning_rate=1e-4), SEED])
def test_learning_rate_at_equals_the_keras_schedule(keras, recipe):
    total = 937
    optimizer = make_optimizer(keras, recipe, total_steps=total)
    schedule = optimizer._learning_rate
    for step in (0, 1, 50, 93, 94, 400, 936, 937):
        expected = float(schedule(step)) if callable(schedule) else float(np.asarray(schedule))
        assert learning_rate_at(recipe, step, total) == pytest.approx(expected, rel=1e-5, abs=1e-9), step


@pytest.mark.keras
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_a_few_torch_steps_reach_the_weights_keras_fit_reaches(keras, torch_train, label_smoothing):
    """Same start, batches and soft targets: torch's trainer and Keras' fit end at the same weights."""
    from layerlab.keras_build import build_keras, keras_weights
    from layerlab.train.loop import KerasTrainer

    spec = seed650()
    recipe = FAST.replace(label_smoothing=label_smoothing, distill_epochs=0, sample_fraction=None)  # every image, as fit
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, (512, 1, 28, 28)).astype(np.float32)
    targets = rng.dirichlet(np.ones(10), 512).astype(np.float32)  # soft targets, as with distillation
    total_steps = 2 * 512 // recipe.batch_size * 3  # the schedule as if the run were longer
    start = keras_weights(build_keras(spec, seed=1), spec)

    theirs = KerasTrainer(keras, build_keras(spec, weights=start), spec, recipe, total_steps, 2, verbose=0)
    ours = torch_train.TorchTrainer(spec, start, recipe, total_steps)
    for epoch in range(2):
        theirs.fit_epoch(x, targets, seed=epoch, epoch=epoch)
        ours.fit_epoch(x, targets, seed=epoch, epoch=epoch)
    assert ours.learning_rate == pytest.approx(theirs.learning_rate, rel=1e-5)
    expected, got = theirs.eval_weights(), ours.eval_weights()  # the EMA averages
    moved = 0.0
    for layer in expected:
        for name in expected[layer]:
            np.testing.assert_allclose(got[layer][name], expected[layer][name], rtol=1e-4, atol=1e-5, err_msg=f"{layer}/{name}")
            moved = max(moved, float(np.abs(expected[layer][name] - start[layer][name]).max()))
    assert moved > 1e-2  # the weights did change: the comparison means something
    np.testing.assert_allclose(ours.predict(x[:64]), theirs.predict(x[:64]), atol=1e-5)


@pytest.mark.keras
def test_importance_sampled_epochs_equal_keras_fit_with_sample_weights(keras, torch_train):
    """A sampled epoch is Keras' fit on the drawn images with sample_weight = (kept share) / p.

    Keras averages ``sample_weight * loss`` over the batch, as the torch trainer does with its
    importance weights, so the same draw must reach the same weights.
    """
    from layerlab.keras_build import build_keras, keras_weights
    from layerlab.train.loop import KerasTrainer

    spec = seed650()
    # Batch 128: a sampled epoch's ~205 images are 2 steps, its nominal share of the schedule (run_steps), so
    # the torch trainer's schedule, which follows that share, and Keras' step counter agree.
    recipe = FAST.replace(distill_epochs=0, sample_fraction=0.4, sample_floor=0.05, batch_size=128)
    rng = np.random.default_rng(6)
    x = rng.normal(0, 1, (512, 1, 28, 28)).astype(np.float32)
    targets = rng.dirichlet(np.ones(10), 512).astype(np.float32)
    total_steps = 40
    start = keras_weights(build_keras(spec, seed=2), spec)
    theirs = KerasTrainer(keras, build_keras(spec, weights=start), spec, recipe.replace(sample_fraction=None), total_steps, 3,
                          verbose=0)
    ours = torch_train.TorchTrainer(spec, start, recipe, total_steps)
    order = rng.permutation(512)
    ours.fit_epoch(x, targets, order=order, seed=0, epoch=0)  # every image: none is scored yet
    theirs.fit_epoch(x, targets, order=order, seed=0, epoch=0)
    for epoch in (1, 2):
        order = rng.permutation(512)
        keep, weights = ours.sampler.draw(order, np.random.default_rng([epoch, 4099]))  # the draw fit_epoch makes
        assert 0.2 < keep.mean() < 0.6 and weights.max() > 1.5  # a real subset, really re-weighted
        ours.fit_epoch(x, targets, order=order, seed=epoch, epoch=epoch)
        theirs.kmodel.fit(x[order][keep], targets[order][keep], sample_weight=weights * keep.mean(), batch_size=128,
                          epochs=epoch + 1, initial_epoch=epoch, shuffle=False, verbose=0)
    assert ours.step == int(theirs.optimizer.iterations.numpy()) == 4 + 2 + 2  # sampled epochs: 2 steps, not 4
    assert ours.learning_rate == pytest.approx(theirs.learning_rate, rel=1e-5)
    expected, got = theirs.eval_weights(), ours.eval_weights()
    for layer in expected:
        for name in expected[layer]:
            np.testing.assert_allclose(got[layer][name], expected[layer][name], rtol=1e-4, atol=1e-5, err_msg=f"{layer}/{name}")
            assert np.abs(expected[layer][name] - start[layer][name]).max() > 1e-3, f"{layer}/{name} did not train"


def test_a_sampled_run_resumed_from_its_state_matches_the_straight_run(torch_train):
    """state() / load_state() carry the sampler's scores: the resumed epoch draws and trains as the straight one."""
    spec = seed650()
    recipe = FAST.replace(distill_epochs=0, sample_fraction=0.4, batch_size=32)
    rng = np.random.default_rng(11)
    x = rng.normal(0, 1, (256, 1, 28, 28)).astype(np.float32)
    targets = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 256)]
    start = random_weights(spec, 5)
    total = 8 + 2 * 4  # run_steps: 256 images, then 102 sampled ones per epoch, batch 32

    def epoch(trainer, index):
        order = np.random.default_rng([1, index]).permutation(256)
        return trainer.fit_epoch(x, targets, order=order, seed=100 + index, epoch=index)

    straight = torch_train.TorchTrainer(spec, start, recipe, total)
    logs = [epoch(straight, i) for i in range(3)]
    first = torch_train.TorchTrainer(spec, start, recipe, total)
    epoch(first, 0)
    model, optimizer = first.state()
    assert len(optimizer) == 1 + 2 * 8 + 1 and np.isfinite(optimizer[-1]).all()  # every image scored
    resumed = torch_train.TorchTrainer(spec, start, recipe, total)
    resumed.load_state(model, optimizer, "checkpoint.npz")
    assert [epoch(resumed, i) for i in (1, 2)] == logs[1:]
    assert logs[1]["images"] < 200 and logs[0]["images"] == 256
    assert straight.learning_rate == resumed.learning_rate == pytest.approx(0.0, abs=1e-12)  # the schedule ran to its end
    for layer, arrays in straight.eval_weights().items():
        for name, value in arrays.items():
            np.testing.assert_array_equal(resumed.eval_weights()[layer][name], value)
    with pytest.raises(ModelFileError, match=r"expected .* and 17 for this network and recipe \(sample_fraction=None\)"):
        torch_train.TorchTrainer(spec, start, recipe.replace(sample_fraction=None), total).load_state(model, optimizer, "c.npz")


@pytest.mark.keras
def test_keras_fit_refuses_a_sampling_recipe(keras):
    from layerlab.keras_build import build_keras
    from layerlab.train.loop import KerasTrainer, trained_recipe

    spec, recipe = seed650(), FAST.replace(sample_fraction=0.4)
    with pytest.raises(ValueError, match="Keras' fit trains on every image: pass trained_recipe"):
        KerasTrainer(keras, build_keras(spec), spec, recipe, 10, 1, verbose=0)
    assert trained_recipe(recipe, _chain((4,), S.BatchNormalization(name="bn"), S.Dense(name="d", units=2))).sample_fraction is None
    assert trained_recipe(recipe, spec).sample_fraction == (0.4 if choose_trainer(spec)[0] == "torch" else None)


@pytest.mark.keras
def test_importance_scores_are_the_output_errors(keras, torch_train):
    """With a learning rate too small to move the weights, an epoch's scores are |Keras predict - target|."""
    from layerlab.keras_build import build_keras, keras_weights

    spec = seed650()
    recipe = FAST.replace(distill_epochs=0, sample_fraction=0.5, schedule="constant", learning_rate=1e-12, ema_momentum=None)
    rng = np.random.default_rng(8)
    x = rng.normal(0, 1, (300, 1, 28, 28)).astype(np.float32)
    targets = rng.dirichlet(np.ones(10), 300).astype(np.float32)
    kmodel = build_keras(spec, seed=3)
    ours = torch_train.TorchTrainer(spec, keras_weights(kmodel, spec), recipe, 10)
    order = rng.permutation(300)
    ours.fit_epoch(x, targets, order=order, seed=0, epoch=0)
    expected = np.linalg.norm(np.asarray(kmodel.predict(x, verbose=0)) - targets, axis=1)
    np.testing.assert_allclose(ours.sampler.scores, expected, rtol=1e-4, atol=1e-6)
    assert expected.std() > 1e-3  # the images differ: a mix-up of their order would show


@pytest.mark.keras
def test_a_checkpoint_of_one_trainer_is_refused_by_the_other(keras, torch_train, tmp_path, monkeypatch):
    spec = seed650()
    x = np.zeros((8, 1, 28, 28), np.float32)
    y = np.eye(10, dtype=np.float32)[np.arange(8)]
    data = Dataset(x, y, x, y, False, x)
    save_checkpoint(tmp_path / "checkpoint.npz", {"epoch": 1, "epochs": 2, "seed": 1, "elapsed": 1.0, "history": [], "trainer": "torch"},
                    [], [], None)
    monkeypatch.setenv("LAYERLAB_TRAINER", "keras")
    with pytest.raises(ModelFileError, match="written by the torch trainer, this run uses the keras trainer"):
        run_one(train_spec=spec, recipe=SEED, epochs=2, seed=1, data=data, folder=tmp_path, resume=True, verbose=0)
