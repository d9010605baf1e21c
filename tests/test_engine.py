"""The NumPy engine against Keras 3 (JAX backend) as the oracle, and the fast path against the plain one.

Each Keras case runs Keras on a fixed batch of 3 seeded random-normal images: one eager Keras
layer (``keras_build.keras_layer``) for a one-layer spec, else ``build_keras(spec)(x)``; never
``predict``. Specs use zeros initializers (weights are set afterwards), so JAX compiles little
and the file stays well under a minute of CPU.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import random_weights, require_module
from layerlab import engine
from layerlab import spec as S
from layerlab.engine import fast, steps
from layerlab.errors import ShapeError, SpecError
from layerlab.network import Network
from layerlab.presets import seed650

CF, CL = S.CHANNELS_FIRST, S.CHANNELS_LAST
BATCH = 3
# The weights are always set after building: zeros initializers keep JAX from compiling a random
# number kernel for every weight shape (most of the Keras time otherwise).
ZEROS = dict(kernel_initializer="zeros", bias_initializer="zeros")


def random_input(spec: S.Model, seed: int = 1, batch: int = BATCH) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, *spec.input_shape)).astype(np.float32)


def one_layer(layer: S.Layer, input_shape) -> S.Model:
    return S.Model(name="case", input_shape=tuple(input_shape), layers=(layer,))


def image_shape(hw, channels, data_format):
    return (channels, *hw) if data_format == CF else (*hw, channels)


def assert_close(out, ref, atol=1e-5):
    """Shape first, then max |engine - keras| <= atol (outputs here are of order 1)."""
    assert out.dtype == np.float32
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=0, atol=atol)


def keras_output(spec: S.Model, weights, x) -> np.ndarray:
    """Keras' output: one eager Keras layer for a one-layer spec (cheap), else ``build_keras``."""
    from layerlab.keras_build import build_keras, finalize_statistics, keras_layer

    if len(spec.layers) == 1:
        layer = spec.layers[0]
        klayer = keras_layer(layer)
        klayer.build((None, *spec.input_shape))
        shapes = layer.weight_shapes(spec.input_shape)
        klayer.set_weights([weights[layer.name][n] for n in shapes])
        finalize_statistics(klayer)
        return np.asarray(klayer(x, training=False))
    return np.asarray(build_keras(spec, weights)(x, training=False))


def check_against_keras(spec: S.Model, seed: int = 0):
    """Engine (fast path, plain path, run_layer) vs Keras for ``spec``."""
    weights = random_weights(spec, seed)
    x = random_input(spec, seed + 1)
    ref = keras_output(spec, weights, x)
    assert_close(engine.run(spec, weights, x), ref)
    assert_close(engine.run(spec, weights, x[:1]), ref[:1])  # the fast path's one-image branch
    assert_close(engine.run(spec, weights, x, reference=True), ref)
    if len(spec.layers) == 1:
        layer = spec.layers[0]
        assert_close(engine.run_layer(layer, [x], weights.get(layer.name, {})), ref)


# --- per-layer grids against Keras -------------------------------------------------------------

CONV_CASES = {
    # id: (input hw, in channels, filters, kernel_size, strides, padding, dilation_rate, use_bias)
    "8-3-2-same": ((8, 8), 2, 3, (3, 3), (2, 2), "same", (1, 1), True),
    "7-3-2-same": ((7, 7), 2, 3, (3, 3), (2, 2), "same", (1, 1), True),
    "9-4-2-same": ((9, 9), 1, 2, (4, 4), (2, 2), "same", (1, 1), True),
    "9-4-2-valid": ((9, 9), 2, 2, (4, 4), (2, 2), "valid", (1, 1), True),
    "nonsquare-kernel-strides": ((9, 7), 3, 4, (3, 2), (2, 1), "same", (1, 1), True),
    "nonsquare-valid": ((10, 6), 2, 3, (2, 3), (3, 2), "valid", (1, 1), True),
    "dilation2-same": ((9, 8), 2, 3, (3, 3), (1, 1), "same", (2, 2), True),
    "dilation-2x1-valid": ((9, 8), 2, 3, (3, 2), (1, 1), "valid", (2, 1), True),
    "1x1-output": ((4, 4), 3, 2, (4, 4), (1, 1), "valid", (1, 1), True),
    "1x1-output-same": ((1, 1), 2, 3, (3, 3), (2, 2), "same", (1, 1), True),
    "no-bias-even": ((6, 6), 2, 3, (2, 2), (1, 1), "same", (1, 1), False),
    "kernel-1x1": ((5, 5), 4, 3, (1, 1), (1, 1), "valid", (1, 1), True),
    "wide-filters": ((6, 6), 8, 16, (3, 3), (1, 1), "same", (1, 1), True),
    # enough channels for the plan's Winograd form (see test_winograd_cases_take_the_winograd_form)
    "winograd-same": ((8, 6), 48, 48, (3, 3), (1, 1), "same", (1, 1), True),
    "winograd-valid-no-bias": ((6, 4), 48, 56, (3, 3), (1, 1), "valid", (1, 1), False),
}


# Every case channels_last; a representative subset channels_first too (keeps the suite short).
CONV_GRID = [(case, CL) for case in CONV_CASES] + [
    (case, CF) for case in ("8-3-2-same", "7-3-2-same", "9-4-2-same", "nonsquare-kernel-strides", "dilation2-same",
                            "1x1-output", "no-bias-even", "winograd-same", "winograd-valid-no-bias")
]


def test_winograd_cases_take_the_winograd_form():
    """The Keras grid's Winograd cases do run in that form (and a conv with few channels does not),
    so test_conv2d_matches_keras checks it against Keras."""
    for case, expected in (("winograd-same", True), ("winograd-valid-no-bias", True), ("wide-filters", False)):
        hw, channels, filters, kernel_size, strides, padding, dilation, use_bias = CONV_CASES[case]
        layer = S.Conv2D(name="conv", filters=filters, kernel_size=kernel_size, strides=strides, padding=padding,
                         dilation_rate=dilation, use_bias=use_bias)
        assert steps.plan_conv(layer, (*hw, channels), 0).winograd is expected, case


@pytest.mark.keras
@pytest.mark.parametrize("case,data_format", CONV_GRID)
def test_conv2d_matches_keras(keras, case, data_format):
    hw, channels, filters, kernel_size, strides, padding, dilation, use_bias = CONV_CASES[case]
    layer = S.Conv2D(name="conv", filters=filters, kernel_size=kernel_size, strides=strides, padding=padding,
                     data_format=data_format, dilation_rate=dilation, use_bias=use_bias, **ZEROS)
    check_against_keras(one_layer(layer, image_shape(hw, channels, data_format)))


POOL_CASES = {
    # id: (input hw, channels, pool_size, strides, padding)
    "pool3-stride1-same": ((7, 6), 2, (3, 3), (1, 1), "same"),
    "pool2-stride2-same-odd": ((7, 5), 3, (2, 2), (2, 2), "same"),
    "pool2-stride2-same-even": ((8, 8), 2, (2, 2), (2, 2), "same"),
    "pool3-stride2-same": ((8, 7), 2, (3, 3), (2, 2), "same"),
    "nonsquare": ((9, 8), 2, (2, 3), (1, 2), "same"),
    "nonsquare-valid": ((9, 8), 2, (3, 2), (2, 3), "valid"),
    "1x1-output": ((3, 3), 2, (3, 3), (1, 1), "valid"),
    "stride-bigger-than-pool": ((7, 7), 2, (2, 2), (3, 3), "same"),
}


POOL_GRID = [(case, CL) for case in POOL_CASES] + [
    (case, CF) for case in ("pool3-stride1-same", "pool2-stride2-same-odd", "nonsquare")
]


@pytest.mark.keras
@pytest.mark.parametrize("kind", ["max", "average"])
@pytest.mark.parametrize("case,data_format", POOL_GRID)
def test_pooling_matches_keras(keras, case, data_format, kind):
    hw, channels, pool_size, strides, padding = POOL_CASES[case]
    cls = S.MaxPooling2D if kind == "max" else S.AveragePooling2D
    layer = cls(name="pool", pool_size=pool_size, strides=strides, padding=padding, data_format=data_format)
    check_against_keras(one_layer(layer, image_shape(hw, channels, data_format)))


@pytest.mark.keras
@pytest.mark.parametrize("data_format", [CL, CF])
def test_zero_padding_and_flatten_match_keras(keras, data_format):
    shape = image_shape((3, 4), 2, data_format)
    check_against_keras(one_layer(S.ZeroPadding2D(name="pad", padding=((1, 2), (0, 3)), data_format=data_format), shape))
    # Flatten: channels_first moves channels last first (H-W-C order), exactly as Keras.
    check_against_keras(one_layer(S.Flatten(name="flat", data_format=data_format), shape))


@pytest.mark.keras
@pytest.mark.parametrize("axis,shape", [(-1, (4, 5, 3)), (1, (3, 4, 5)), (-1, (6,))], ids=["nhwc", "nchw", "vector"])
@pytest.mark.parametrize("center_scale", [True, False])
def test_batchnorm_with_random_statistics_matches_keras(keras, axis, shape, center_scale):
    layer = S.BatchNormalization(name="bn", axis=axis, epsilon=1e-3, center=center_scale, scale=center_scale)
    check_against_keras(one_layer(layer, shape))


@pytest.mark.keras
@pytest.mark.parametrize("axis,shape", [(-1, (4, 5, 3)), (1, (3, 4, 5)), (-1, (6,))], ids=["nhwc", "nchw", "vector"])
@pytest.mark.parametrize("invert", [False, True])
def test_normalization_matches_keras(keras, axis, shape, invert):
    """Keras' Normalization with statistics as weights (adapted), on the fast and the plain path,
    as the first layer and after a conv; and with its statistics in the config, one variance 0
    (Keras divides by max(sqrt(variance), 1e-7) there)."""
    check_against_keras(one_layer(S.Normalization(name="norm", axis=axis, invert=invert), shape))
    df = CF if axis == 1 else CL
    if len(shape) == 3:
        check_against_keras(S.Model(name="m", input_shape=shape, layers=(
            S.Normalization(name="given", axis=axis, mean=(0.5, -1.0, 0.25), variance=(4.0, 0.0, 0.25), invert=invert),
            S.Activation(name="squash", activation="tanh"),
            S.Conv2D(name="c", filters=2, kernel_size=3, data_format=df),
            S.Normalization(name="adapted", axis=axis, invert=invert))))


def test_normalization_arguments_are_checked():
    with pytest.raises(SpecError, match="mean and variance must be given together"):
        S.Normalization(name="n", mean=(1.0,))
    with pytest.raises(SpecError, match=r"mean \(2 values\) and variance \(1\) must be as long, the variances not negative"):
        S.Normalization(name="n", mean=(1.0, 2.0), variance=(1.0,))
    with pytest.raises(SpecError, match=r"variance=\('a',\) must be a list of finite numbers"):
        S.Normalization(name="n", mean=(1.0,), variance=("a",))
    with pytest.raises(SpecError, match=r"mean and variance hold 2 values but axis -1 of \(4, 3\) has 3"):
        S.Model(name="m", input_shape=(4, 3), layers=(S.Normalization(name="n", mean=(0.0, 1.0), variance=(1.0, 1.0)),))


# Keras 3 names; 'hard_sigmoid_keras2' (Keras 2's definition) is checked against tf_keras below.
ACTIVATION_NAMES = [a for a in S.ACTIVATIONS if a != "hard_sigmoid_keras2"]


@pytest.mark.keras
@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_every_activation_matches_keras(keras, name):
    # Spread over [-6, 6] so hard_sigmoid, relu6 and the saturating tails are all exercised.
    x = (np.random.default_rng(7).standard_normal((4, 50)) * 3).astype(np.float32)
    ref = np.asarray(keras.layers.Activation(name)(x))
    out = engine.activation(x, name)
    assert out.dtype == np.float32 and out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    # The same through a Dense layer's activation= argument, on the fast and the plain path.
    check_against_keras(S.Model(name="d", input_shape=(6,), layers=(S.Dense(name="dense", units=5, activation=name, **ZEROS),)))


@pytest.mark.tfkeras
def test_hard_sigmoid_keras2_matches_tf_keras():
    require_module("tf_keras")
    import tensorflow as tf
    import tf_keras

    x = (np.random.default_rng(3).standard_normal(200) * 3).astype(np.float32)
    ref = tf_keras.activations.hard_sigmoid(tf.constant(x)).numpy()
    np.testing.assert_allclose(engine.activation(x, "hard_sigmoid_keras2"), ref, rtol=1e-6, atol=1e-7)
    # ... and it is not Keras 3's hard_sigmoid: a loader must pick by the file's Keras version.
    assert np.abs(engine.activation(x, "hard_sigmoid") - ref).max() > 0.05


# --- whole models against Keras ----------------------------------------------------------------

@pytest.mark.keras
@pytest.mark.parametrize("data_format", [CF, CL])
def test_seed650_matches_keras_and_traces_every_layer(keras, data_format):
    spec = seed650(data_format, kernel_initializer="zeros", bias_initializer="zeros")
    weights = random_weights(spec, 5)
    x = random_input(spec, 6, batch=5)
    ref = keras_output(spec, weights, x)
    assert_close(engine.run(spec, weights, x), ref)
    trace = Network(spec, weights).trace(x)
    assert list(trace) == [layer.name for layer in spec.layers]
    assert [v.shape[1:] for v in trace.values()] == [info.output_shape for info in spec.infos]
    assert_close(trace["softmax"], ref)
    # The trace is the plain path, layer by layer: each entry is run_layer on the previous one.
    previous = x
    for layer in spec.layers:
        np.testing.assert_array_equal(trace[layer.name], engine.run_layer(layer, [previous], weights.get(layer.name, {})))
        previous = trace[layer.name]


@pytest.mark.keras
def test_functional_graph_with_add_and_concatenate_matches_keras(keras):
    spec = S.Model(name="graph", input_shape=(7, 7, 2), layers=(
        S.Conv2D(name="a", filters=3, kernel_size=3, strides=2, padding="same", activation="relu", **ZEROS),
        S.Conv2D(name="b", filters=3, kernel_size=1, strides=2, padding="valid", inputs=("input",), **ZEROS),
        S.Add(name="sum", inputs=("a", "b")),
        S.Concatenate(name="cat", axis=-1, inputs=("sum", "a")),
        S.MaxPooling2D(name="pool", pool_size=2, padding="same"),
        S.Flatten(name="flat"),
        S.Dense(name="out", units=4, activation="softmax", **ZEROS),
    ))
    assert fast.plan_for(spec) is not None  # graphs run on the fast plan
    check_against_keras(spec)
    weights, x = random_weights(spec), random_input(spec)
    trace = engine.run(spec, weights, x, trace=True)
    assert list(trace) == ["a", "b", "sum", "cat", "pool", "flat", "out"]
    assert trace["cat"].shape == (BATCH, 4, 4, 6)


@pytest.mark.keras
def test_mixed_chain_matches_keras(keras):
    """Rescaling, ZeroPadding2D, BatchNormalization, Dropout, Reshape, AveragePooling2D in one chain."""
    spec = S.Model(name="mixed", input_shape=(2, 9, 8), layers=(
        S.Rescaling(name="scale", scale=0.5, offset=-0.25),
        S.ZeroPadding2D(name="pad", padding=((1, 0), (2, 1)), data_format=CF),
        S.Conv2D(name="conv", filters=4, kernel_size=(3, 2), strides=(2, 1), padding="same", data_format=CF,
                 activation="elu", **ZEROS),
        S.BatchNormalization(name="bn", axis=1),
        S.AveragePooling2D(name="avg", pool_size=3, strides=1, padding="same", data_format=CF),
        S.Dropout(name="drop", rate=0.5),
        S.Activation(name="softmax_w", activation="softmax"),  # channels_first: over the width axis
        S.Flatten(name="flat", data_format=CF),
        S.Dense(name="dense", units=3, activation="tanh", **ZEROS),
    ))
    check_against_keras(spec)
    reshaped = S.Model(name="reshape", input_shape=(12,), layers=(
        S.Reshape(name="r", target_shape=(2, 3, 2)),
        S.Conv2D(name="c", filters=2, kernel_size=2, padding="same", **ZEROS),
        S.Flatten(name="f"),
    ))
    check_against_keras(reshaped)


# --- the fast path against the plain path (no Keras needed) -----------------------------------

def test_fast_path_equals_plain_path_across_chunks():
    spec = seed650()
    weights = random_weights(spec, 2)
    plan = fast.plan_for(spec)
    assert plan is not None
    x = np.random.default_rng(3).random((2 * plan.chunk + 5, 1, 28, 28), dtype=np.float32)  # pixels / 255
    out = engine.run(spec, weights, x)
    ref = engine.run(spec, weights, x, reference=True)
    assert_close(out, ref, atol=1e-6)
    # One image alone (the batch-1 branch) equals that image inside a batch.
    assert_close(engine.run(spec, weights, x[7:8]), out[7:8], atol=1e-6)


def test_thread_count_does_not_change_results(monkeypatch):
    spec = seed650(CL)
    weights = random_weights(spec, 8)
    x = np.random.default_rng(9).random((3 * fast.plan_for(spec).chunk + 1, 28, 28, 1), dtype=np.float32)
    monkeypatch.setenv("LAYERLAB_THREADS", "1")
    one = engine.run(spec, weights, x)
    monkeypatch.setenv("LAYERLAB_THREADS", "3")
    assert fast.threads() == 3
    np.testing.assert_array_equal(engine.run(spec, weights, x), one)


def test_blas_is_held_to_one_thread_while_plans_run_and_given_back(monkeypatch):
    """With threadpoolctl (layerlab[fast]) the engine runs BLAS on one thread, restores the
    user's setting when the last of overlapping runs ends, and computes the same either way."""
    require_module("threadpoolctl")
    import threadpoolctl
    limiter = fast.ONE_BLAS_THREAD
    assert limiter.found()

    # The BLAS libraries the engine looked up (NumPy's, when it first ran): one loaded later, as
    # SciPy's is when JAX is imported by an earlier test, is no library the engine calls.
    held_libraries = {library.filepath for library in steps.blas_libraries()[1]}

    def blas_threads():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info()
                if i["user_api"] == "blas" and i["filepath"] in held_libraries]

    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = blas_threads()
        seen = []
        spec = seed650()
        plan = fast.plan_for(spec)
        original = type(plan).__call__
        monkeypatch.setattr(type(plan), "__call__", lambda self, *a, **k: seen.append(blas_threads()) or original(self, *a, **k))
        weights = random_weights(spec, 5)
        x = np.random.default_rng(2).random((40, 1, 28, 28), dtype=np.float32)
        monkeypatch.setenv("LAYERLAB_THREADS", "2")
        held = engine.run(spec, weights, x)
        assert seen and all(set(threads) == {1} for threads in seen)
        assert blas_threads() == before
        with limiter:
            with limiter:
                assert set(blas_threads()) == {1}
            assert set(blas_threads()) == {1}  # an inner run ending does not end the outer one's limit
        assert blas_threads() == before
        monkeypatch.setattr(limiter, "available", False)  # as without threadpoolctl
        seen.clear()
        free = engine.run(spec, weights, x)
        assert seen and all(threads == before for threads in seen)
    # 20-image chunks on two threads against one chunk of 40: BLAS may sum in another order.
    assert_close(held, free, atol=1e-6)
    monkeypatch.setattr(limiter, "available", True)
    with threadpoolctl.threadpool_limits(1, user_api="blas"):  # already one thread: left as it is
        with limiter:
            assert limiter._limiter is None and set(blas_threads()) == {1}
        assert set(blas_threads()) == {1}


def test_the_switch_interval_is_short_while_plans_run_and_given_back(monkeypatch):
    """While a plan runs the interpreter switches threads every SWITCH_INTERVAL (a busy Python
    thread would otherwise hold the GIL 5 ms each time a NumPy call lets go of it); the previous
    interval comes back when the last of overlapping runs ends, a shorter one the process has is
    left alone, and one changed meanwhile is not overwritten."""
    import sys

    switch = fast.SHORT_SWITCH
    spec = seed650()
    plan = fast.plan_for(spec)
    seen = []
    original = type(plan).__call__
    monkeypatch.setattr(type(plan), "__call__", lambda self, *a, **k: seen.append(sys.getswitchinterval()) or original(self, *a, **k))
    weights = random_weights(spec, 5)
    x = np.random.default_rng(2).random((10, 1, 28, 28), dtype=np.float32)
    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.004)
        engine.run(spec, weights, x)
        assert seen and all(abs(value - fast.SWITCH_INTERVAL) < 1e-6 for value in seen)
        assert sys.getswitchinterval() == pytest.approx(0.004)
        with switch:
            with switch:
                pass
            assert sys.getswitchinterval() == pytest.approx(fast.SWITCH_INTERVAL)  # the outer run goes on
        assert sys.getswitchinterval() == pytest.approx(0.004)
        sys.setswitchinterval(1e-5)  # shorter already: left as it is
        with switch:
            assert sys.getswitchinterval() == pytest.approx(1e-5)
        assert sys.getswitchinterval() == pytest.approx(1e-5)
        sys.setswitchinterval(0.004)
        with switch:
            sys.setswitchinterval(0.002)  # someone else's change while it runs
        assert sys.getswitchinterval() == pytest.approx(0.002)
    finally:
        sys.setswitchinterval(before)


def test_chunks_keep_blas_calls_single_threaded():
    # seed650: its largest call (conv2, B=4: m*k = 12*90) allows the full chunk, in parallel.
    plan = fast.plan_for(seed650())
    assert (plan.chunk, plan.parallel) == (128, True)
    assert fast.chunk_size([32 * 576]) == (14, True)  # 14 * 18432 <= 65536 * 4 < 15 * 18432
    # A call too big even for 8 images: OpenBLAS threads it, so the chunks run one at a time.
    assert fast.chunk_size([128 * 7200]) == (128, False)
    # ResNet-8's 32x32x16 convs read 34 * 16 * 34 floats of padded input an image: 17 images a chunk.
    assert fast.cache_chunk(1000, 34 * 16 * 34) == 17
    assert fast.cache_chunk(1000) == 128


def test_batches_split_into_equal_chunks(monkeypatch):
    """64 images at most 17 a chunk run as 4 x 16 (not 17 + 17 + 17 + 13), and the results are
    those of the plain path."""
    assert [fast.even_chunk(n, most) for n, most in ((64, 17), (64, 128), (100, 31), (5, 8), (1, 17))] == [16, 64, 25, 5, 1]
    monkeypatch.setenv("LAYERLAB_THREADS", "1")
    spec = _graph_spec(CL)
    plan = fast.plan_for(spec)
    monkeypatch.setattr(plan, "solo_chunk", 7)
    sizes = []
    call = fast.Plan.__call__
    monkeypatch.setattr(fast.Plan, "__call__", lambda self, x, *rest: sizes.append(len(x)) or call(self, x, *rest))
    weights = random_weights(spec, 2)
    x = random_input(spec, 2, batch=15)
    out = fast.run_fast(spec, weights, x)
    assert sizes == [5, 5, 5]
    assert_close(out, engine.run(spec, weights, x, reference=True), atol=1e-5)


def test_fast_path_covers_conv_layouts_and_never_writes_its_input():
    spec = S.Model(name="fast", input_shape=(3, 11, 10), layers=(
        S.Activation(name="first", activation="tanh"),
        S.Conv2D(name="c1", filters=5, kernel_size=(3, 2), strides=(2, 1), padding="same", data_format=CF),
        S.MaxPooling2D(name="p1", pool_size=3, strides=1, padding="same", data_format=CF),
        S.Conv2D(name="c2", filters=4, kernel_size=3, dilation_rate=2, padding="same", data_format=CF,
                 activation="relu", use_bias=False),
        S.AveragePooling2D(name="p2", pool_size=2, padding="same", data_format=CF),
        S.Flatten(name="flat", data_format=CL),  # C-H-W order on a channels_first tensor
        S.Dense(name="d", units=6, activation="softmax"),
    ))
    weights = random_weights(spec, 4)
    x = random_input(spec, 5, batch=9)
    before = x.copy()
    assert fast.plan_for(spec) is not None
    assert_close(engine.run(spec, weights, x), engine.run(spec, weights, x, reference=True), atol=2e-6)
    np.testing.assert_array_equal(x, before)


def _graph_spec(df: str) -> S.Model:
    """What the graph plan covers: a conv -> BN (folded) -> ReLU (fused), a residual Add, depthwise
    convs on a small image (per-channel dense matrices: multiplier 2, stride 2 'same') and on a
    larger one (tap views: dilation 2), every element-wise merge, Concatenate, both global poolings,
    Dense -> BN (folded) and the last Dense."""
    axis = 1 if df == CF else -1
    return S.Model(name=f"graph_{df}", input_shape=image_shape((20, 19), 3, df), layers=(
        S.Conv2D(name="stem", filters=6, kernel_size=3, padding="same", data_format=df),
        S.BatchNormalization(name="stem_bn", axis=axis),
        S.Activation(name="stem_relu", activation="relu"),
        S.DepthwiseConv2D(name="dw_big", kernel_size=3, dilation_rate=2, padding="same", data_format=df),
        S.BatchNormalization(name="dw_big_bn", axis=axis),
        S.Add(name="res", inputs=("stem_relu", "dw_big_bn")),
        S.ReLU(name="res_relu6", max_value=6.0),
        S.MaxPooling2D(name="pool", pool_size=3, strides=3, padding="same", data_format=df),
        S.DepthwiseConv2D(name="dw", kernel_size=3, strides=2, padding="same", depth_multiplier=2, data_format=df),
        S.Conv2D(name="pw", filters=12, kernel_size=1, data_format=df, activation="tanh"),
        S.Subtract(name="sub", inputs=("dw", "pw")),
        S.Multiply(name="mul", inputs=("sub", "dw")),
        S.Maximum(name="max", inputs=("mul", "pw", "sub")),
        S.Minimum(name="min", inputs=("max", "dw")),
        S.Average(name="avg", inputs=("min", "pw")),
        S.Concatenate(name="cat", inputs=("avg", "dw"), axis=axis),
        S.GlobalAveragePooling2D(name="gap", data_format=df),
        S.GlobalMaxPooling2D(name="gmp", inputs=("cat",), data_format=df, keepdims=True),
        S.Flatten(name="gmp_flat", data_format=df),
        S.Add(name="pooled", inputs=("gap", "gmp_flat")),
        S.Dense(name="fc", units=8),
        S.BatchNormalization(name="fc_bn"),
        S.Activation(name="fc_relu", activation="relu"),
        S.Dense(name="out", units=5, activation="softmax"),
    ))


def _broadcast_spec(df: str) -> S.Model:
    """A squeeze-and-excite gate (a global pooling with keepdims, 1x1 convs, hard sigmoid)
    multiplying its map, and each element-wise merge broadcasting a size-1 axis: the small input
    first or second, one channel against four, one row against six, three inputs."""
    axis = -1 if df == CL else 1
    return S.Model(name=f"broadcast_{df}", input_shape=image_shape((6, 5), 3, df), layers=(
        S.Conv2D(name="c", filters=4, kernel_size=3, padding="same", activation="relu", data_format=df),
        S.GlobalAveragePooling2D(name="gap", data_format=df, keepdims=True),
        S.Conv2D(name="g", filters=4, kernel_size=1, activation="hard_sigmoid", data_format=df),
        S.Multiply(name="se", inputs=("c", "g")),
        S.Multiply(name="se2", inputs=("g", "se")),
        S.Conv2D(name="one", filters=1, kernel_size=1, activation="hard_silu", data_format=df),
        S.Add(name="a", inputs=("one", "se2")),
        S.Subtract(name="s1", inputs=("g", "a")),
        S.Subtract(name="s2", inputs=("a", "one")),
        S.Maximum(name="mx", inputs=("s1", "s2", "g")),
        S.AveragePooling2D(name="rows", pool_size=(6, 1), data_format=df, inputs=("c",)),
        S.Minimum(name="mn", inputs=("rows", "mx")),
        S.Average(name="av", inputs=("g", "mn", "one")),
        S.BatchNormalization(name="bn", axis=axis),
        S.Flatten(name="flat", data_format=df),
        S.Dense(name="out", units=3),
    ))


@pytest.mark.keras
@pytest.mark.parametrize("df", [CL, CF])
def test_reshape_runs_in_the_plan_as_keras_reshapes(keras, df):
    """Reshape in the fast plan, in the spec's layout: an image to a vector and back (an
    EfficientNet-style squeeze-and-excite gate, GlobalAveragePooling2D -> Dense ->
    Reshape((1, 1, C)) -> Multiply), an image to another image, a vector to an image."""
    gate = (1, 1, 4) if df == CL else (4, 1, 1)
    spec = S.Model(name=f"reshape_{df}", input_shape=image_shape((6, 4), 2, df), layers=(
        S.Conv2D(name="c", filters=4, kernel_size=3, padding="same", activation="relu", data_format=df),
        S.GlobalAveragePooling2D(name="gap", data_format=df),
        S.Dense(name="squeeze", units=4, activation="sigmoid"),
        S.Reshape(name="to_gate", target_shape=gate),
        S.Multiply(name="excite", inputs=("c", "to_gate")),
        S.Reshape(name="regrid", target_shape=(4, 6, 4) if df == CL else (4, 4, 6)),
        S.Conv2D(name="d", filters=3, kernel_size=2, data_format=df),
        S.Flatten(name="flat", data_format=df),
        S.Dense(name="e", units=12),
        S.Reshape(name="to_image", target_shape=(2, 3, 2)),
        S.Conv2D(name="f", filters=2, kernel_size=2, padding="same", data_format=df),
        S.Reshape(name="to_vector", target_shape=(12,)),
    ))
    assert fast.plan_for(spec) is not None
    check_against_keras(spec)


@pytest.mark.keras
@pytest.mark.parametrize("df", [CL, CF])
def test_merges_broadcast_a_size_one_axis_as_keras_does(keras, df):
    spec = _broadcast_spec(df)
    shapes = {i.layer.name: i.input_shapes for i in spec.infos}
    assert len(set(shapes["se"])) == len(set(shapes["rows"] + shapes["mn"])) == 2
    assert spec.infos[-3].output_shape == image_shape((6, 5), 4, df)
    check_against_keras(spec)


def test_a_broadcasting_merge_never_writes_into_its_smaller_input():
    """The plan writes a merge's result into an input it may overwrite only where that input has
    the whole shape: the gate, read again after the merge, keeps its values."""
    spec = S.Model(name="gate", input_shape=(4, 3, 2), layers=(
        S.GlobalAveragePooling2D(name="gap", keepdims=True),
        S.Activation(name="g", activation="sigmoid"),
        S.Multiply(name="m", inputs=("g", "input")),
        S.Add(name="again", inputs=("m", "g")),
    ))
    x = np.random.default_rng(2).standard_normal((5, 4, 3, 2)).astype(np.float32)
    gate = 1 / (1 + np.exp(-x.mean(axis=(1, 2), keepdims=True)))
    np.testing.assert_allclose(engine.run(spec, {}, x), x * gate + gate, rtol=1e-6, atol=1e-6)
    assert_close(engine.run(spec, {}, x), engine.run(spec, {}, x, reference=True), atol=1e-7)


@pytest.mark.parametrize("df", [CF, CL])
def test_graph_plan_equals_plain_path_and_follows_weight_edits(df):
    """The fast plan of a graph (folded BNs, fused activations, in-place merges) computes what
    the plain layer functions compute, leaves its input alone, and sees a weight edited in place."""
    spec = _graph_spec(df)
    plan = fast.plan_for(spec)
    assert plan is not None
    outputs = [node.output for node in plan.nodes]
    assert "stem_bn" not in outputs and "stem_relu" in outputs  # conv + BN + ReLU: one node
    weights = random_weights(spec, 6)
    x = random_input(spec, 2, batch=2 * plan.chunk + 3)
    before = x.copy()
    assert_close(engine.run(spec, weights, x), engine.run(spec, weights, x, reference=True), atol=2e-6)
    np.testing.assert_array_equal(x, before)
    weights["dw"]["kernel"][0, 0, 1, 0] += 0.5  # in place: the prepared weights must follow
    weights["fc_bn"]["moving_mean"][:] -= 0.25
    assert_close(engine.run(spec, weights, x), engine.run(spec, weights, x, reference=True), atol=2e-6)


def test_dense_kernels_are_used_as_stored_and_every_edit_is_seen():
    """A Dense multiplies by the kernel array itself (no copy to check before each call), a BN
    after it scales its output; an edit in place, a new array, and a float64 kernel (which the
    plan converts, so compares by bytes) all reach the next call."""
    spec = S.Model(name="mlp", input_shape=(6,), layers=(
        S.Dense(name="a", units=5), S.BatchNormalization(name="a_bn"), S.Activation(name="a_relu", activation="relu"),
        S.Dense(name="b", units=3, activation="softmax"),
    ))
    weights = random_weights(spec, 7)
    x = random_input(spec, 3, batch=4)
    plan = fast.plan_for(spec)

    def check():
        assert_close(engine.run(spec, weights, x), engine.run(spec, weights, x, reference=True), atol=1e-6)

    check()
    prepared = plan.prepare(weights)
    assert any(value[0] is weights["a"]["kernel"] for value in prepared.values())  # the array itself
    weights["a"]["kernel"][2, 1] += 1.5  # in place
    check()
    weights["b"]["kernel"] = weights["b"]["kernel"] * 2  # a new array
    check()
    weights["a"]["kernel"] = weights["a"]["kernel"].astype(np.float64)
    check()
    weights["a"]["kernel"][0, 0] -= 2.0  # in place in the float64 array: its bytes are compared
    check()
    weights["a_bn"]["gamma"][:] *= 0.5
    check()
    weights["b"]["bias"][1] += 3.0  # a bias in place, with no BN after it: the rows kept of it follow
    check()
    weights["b"]["bias"] = [float(v) for v in weights["b"]["bias"]]  # a list, converted on each call
    check()
    weights["b"]["bias"][0] -= 1.0  # edited in place: the same list object, other values
    check()


def test_dense_steps_keep_their_blocks_per_batch_size_and_run_every_fused_activation():
    """A Dense keeps its output buffer and constant blocks for the last batch size: other batch
    sizes, a BN edited in place and a worker thread each get their own, the activations fused
    into it all run in order (a ReLU first as one bound, or after its own tanh), and what the
    plan returns is a new array each call."""
    spec = S.Model(name="mlp", input_shape=(7,), layers=(
        S.Dense(name="a", units=6), S.BatchNormalization(name="a_bn"), S.Activation(name="a_relu", activation="relu"),
        S.Activation(name="a_tanh", activation="tanh"),
        S.Dense(name="b", units=5, activation="tanh"), S.Activation(name="b_relu", activation="relu"),
        S.Dense(name="c", units=4, activation="relu", use_bias=False),
        S.Dense(name="d", units=3, activation="relu"), S.Activation(name="d_soft", activation="softmax"),
    ))
    plan = fast.plan_for(spec)
    works = {node.layer: node.work for node in plan.nodes if node.work is not None}
    assert [name for name, _ in works["a"].fused] == ["relu", "tanh"] and [name for name, _ in works["b"].fused] == ["relu"]
    weights = random_weights(spec, 11)
    inputs = {batch: random_input(spec, batch, batch=batch) for batch in (4, 9)}

    def check(batch):
        out = engine.run(spec, weights, inputs[batch])
        assert_close(out, engine.run(spec, weights, inputs[batch], reference=True), atol=1e-6)
        return out

    first = check(4)
    check(9)
    again = check(4)
    assert not np.shares_memory(first, again)
    weights["a_bn"]["beta"][:] += 0.75  # in place: the shift block kept is not reused
    check(4)
    with ThreadPoolExecutor(2) as pool:
        for out, batch in zip(pool.map(lambda b: engine.run(spec, weights, inputs[b]), (9, 4, 9, 4)), (9, 4, 9, 4), strict=True):
            assert_close(out, engine.run(spec, weights, inputs[batch], reference=True), atol=1e-6)


def _random_graph(rng: np.random.Generator, df: str) -> S.Model:
    """A seeded random graph: convs, depthwise convs, BNs, activations, ReLU6 and merges of two
    or three earlier values, so values are read twice, overwritten in place and handed on."""
    channels, axis = 4, (-1 if df == CL else 1)
    names, layers = ["input"], []
    merges = (S.Add, S.Multiply, S.Maximum, S.Minimum, S.Average, S.Subtract)
    for i in range(int(rng.integers(3, 9))):
        source, name, kind = names[int(rng.integers(max(0, len(names) - 3), len(names)))], f"l{i}", int(rng.integers(0, 7))
        if kind == 0:
            layers.append(S.Conv2D(name=name, filters=channels, kernel_size=int(rng.integers(1, 4)), padding="same",
                                   data_format=df, activation=str(rng.choice(["linear", "relu"])), inputs=(source,)))
        elif kind == 1:
            layers.append(S.DepthwiseConv2D(name=name, kernel_size=3, padding="same", data_format=df, inputs=(source,)))
        elif kind == 2 and len(names) > 1:
            layers.append(merges[int(rng.integers(0, 6))](name=name, inputs=(source, names[int(rng.integers(0, len(names)))])))
        elif kind == 3:
            layers.append(S.Activation(name=name, activation=str(rng.choice(["relu", "tanh", "sigmoid"])), inputs=(source,)))
        elif kind == 4:
            layers.append(S.BatchNormalization(name=name, axis=axis, inputs=(source,)))
        elif kind == 5 and len(names) > 2:
            layers.append(S.Add(name=name, inputs=(source, *(names[int(rng.integers(0, len(names)))] for _ in range(2)))))
        else:
            layers.append(S.ReLU(name=name, max_value=6.0, inputs=(source,)))
        names.append(name)
    return S.Model(name="random_graph", input_shape=image_shape((9, 8), channels, df), layers=tuple(layers))


@pytest.mark.parametrize("df", [CL, CF])
def test_convs_hand_over_through_an_extended_input(df):
    """A conv read only by an unpadded conv writes into that conv's input with a channel of ones
    after its own, and the reader multiplies that channel by its bias (and by the writer's, when
    the writer is linear): the plan still computes what the plain path computes, also after the
    writer's bias is edited in place (the reader's bias column is made again). Readers with more
    than 12 input values a kernel column (fewer: im2col, which takes no extended input)."""
    axis = -1 if df == CL else 1
    spec = S.Model(name="chain", input_shape=image_shape((9, 8), 4, df), layers=(
        S.DepthwiseConv2D(name="d1", kernel_size=3, depth_multiplier=4, padding="valid", data_format=df),
        S.Conv2D(name="p1", filters=14, kernel_size=1, data_format=df),  # d1's bias goes in here
        S.BatchNormalization(name="bn", axis=axis),
        S.Activation(name="act", activation="relu"),
        S.Conv2D(name="c2", filters=13, kernel_size=(3, 2), padding="valid", activation="relu", data_format=df),
        S.Conv2D(name="c3", filters=16, kernel_size=1, use_bias=False, data_format=df),
        S.Conv2D(name="c4", filters=4, kernel_size=1, activation="sigmoid", data_format=df),
        S.Flatten(name="flat"),
    ))
    plan = fast.plan_for(spec)
    works = {node.layer: node.work for node in plan.nodes if node.work is not None}
    convs = {layer: work for layer, work in works.items() if isinstance(work, fast._ConvWork)}
    assert [layer for layer, work in convs.items() if work.ones] == ["d1", "p1", "c2", "c3"]
    assert [layer for layer, work in convs.items() if work.deferred] == ["d1", "c3"]
    weights = random_weights(spec, 5)
    x = random_input(spec, 6, batch=11)
    assert_close(engine.run(spec, weights, x), engine.run(spec, weights, x, reference=True), atol=2e-5)
    weights["d1"]["bias"] += 0.5  # in place: the snapshot sees it, p1's bias column follows
    assert_close(engine.run(spec, weights, x), engine.run(spec, weights, x, reference=True), atol=2e-5)


def test_activations_in_a_row_all_run_inside_the_conv():
    """Two Activations after a conv both fuse into it and both run, in order (the second is not
    dropped for the first), on a conv that writes an extended input and on one that does not;
    a conv bias edited in place reaches the next call."""
    spec = S.Model(name="acts", input_shape=(6, 5, 14), layers=(
        S.Conv2D(name="c", filters=13, kernel_size=3, padding="same", activation="elu"),
        S.Activation(name="s", activation="sigmoid"),
        S.Activation(name="t", activation="tanh"),
        S.Conv2D(name="w", filters=14, kernel_size=1),
        S.Activation(name="r", activation="relu"),
        S.Activation(name="t2", activation="tanh"),
        S.Conv2D(name="p", filters=3, kernel_size=1),
    ))
    plan = fast.plan_for(spec)
    works = {node.layer: node.work for node in plan.nodes if node.work is not None}
    assert [name for name, _ in works["c"].fused] == ["sigmoid", "tanh"] and not works["c"].ones  # elu: a new array
    assert [name for name, _ in works["w"].fused] == ["relu", "tanh"] and works["w"].ones
    weights = random_weights(spec, 8)
    x = random_input(spec, 9, batch=4)
    assert_close(engine.run(spec, weights, x), engine.run(spec, weights, x, reference=True), atol=2e-5)
    weights["c"]["bias"] += 0.25  # in place: the bias block kept from the last call is not reused
    assert_close(engine.run(spec, weights, x), engine.run(spec, weights, x, reference=True), atol=2e-5)


@pytest.mark.parametrize("df", [CL, CF])
def test_a_max_pool_adds_the_conv_bias_and_runs_its_relus(df):
    """A conv read only by a max pool, with ReLUs alone after its products (its own activation,
    Activations fused into it), leaves its bias and the ReLUs to the pool, exactly; a tanh, an
    average pool keeps them in the conv (max commutes with + b and ReLU, not with tanh; a mean
    with neither). The plan computes what the plain path computes, also after an in-place bias
    edit."""
    spec = S.Model(name="pools", input_shape=image_shape((12, 10), 3, df), layers=(
        S.Conv2D(name="c1", filters=6, kernel_size=3, padding="same", data_format=df),
        S.Activation(name="r1", activation="relu"),
        S.MaxPooling2D(name="p1", pool_size=2, padding="same", data_format=df),  # 6 x 5
        S.Conv2D(name="c2", filters=5, kernel_size=2, activation="relu", data_format=df),
        S.MaxPooling2D(name="p2", pool_size=2, strides=1, data_format=df),  # 4 x 3
        S.Conv2D(name="c3", filters=4, kernel_size=1, activation="tanh", data_format=df),
        S.MaxPooling2D(name="p3", pool_size=(1, 2), data_format=df),
        S.Conv2D(name="c4", filters=4, kernel_size=1, activation="relu", data_format=df),
        S.AveragePooling2D(name="p4", pool_size=(2, 1), data_format=df),
        S.Flatten(name="flat", data_format=df),
    ))
    plan = fast.plan_for(spec)
    works = {node.layer: node.work for node in plan.nodes if node.work is not None}
    finished = [name for name, work in works.items() if isinstance(work, fast._ConvWork) and not work.step.add_bias]
    assert finished == ["c1", "c2"]
    assert [works[p].activations for p in ("p1", "p2", "p3", "p4")] == [("relu",), ("relu",), (), ()]
    weights = random_weights(spec, 7)
    x = random_input(spec, 8, batch=9)
    for _ in range(2):
        np.testing.assert_allclose(engine.run(spec, weights, x), engine.run(spec, weights, x, reference=True),
                                   rtol=1e-6, atol=1e-6)
        weights["c1"]["bias"] += 0.25  # in place: the pool adds the new bias


@pytest.mark.parametrize("df", [CL, CF])
@pytest.mark.parametrize("width", [11, 10])
def test_a_conv_hands_a_2x2_pool_its_columns_in_two_phases(df, width):
    """A conv in the unfold form read only by a 2x2 pool two apart writes its even output columns,
    then its odd ones; the pool reads them so (max with the conv's bias and ReLU, or a mean
    after a tanh); an odd width's last column, which no window reads, included. A conv of at
    most 32 terms an output whose bias a max pool adds writes its rows in two phases too (four
    blocks), its odd height's last row included. The plan computes what the plain path
    computes; a conv in the views form keeps its column order."""
    spec = S.Model(name="phases", input_shape=image_shape((9, width), 1, df), layers=(
        S.Conv2D(name="c1", filters=5, kernel_size=3, padding="same", activation="relu", data_format=df),  # 9 terms
        S.MaxPooling2D(name="p1", pool_size=2, data_format=df),
        S.Conv2D(name="c2", filters=6, kernel_size=(2, 3), padding="same", activation="tanh", data_format=df),
        S.AveragePooling2D(name="p2", pool_size=2, data_format=df),
        S.Conv2D(name="c3", filters=3, kernel_size=3, padding="same", data_format=df),  # 18 rows a column: views
        S.MaxPooling2D(name="p3", pool_size=2, padding="same", data_format=df),
        S.Flatten(name="flat", data_format=df),
    ))
    many = S.Model(name="terms", input_shape=image_shape((7, width), 4, df), layers=(
        S.Conv2D(name="c4", filters=5, kernel_size=3, padding="same", activation="relu", data_format=df),  # 36 terms
        S.MaxPooling2D(name="p4", pool_size=2, data_format=df),
        S.Flatten(name="flat", data_format=df),
    ))
    plan = fast.plan_for(spec)
    works = {node.layer: node.work for node in (*plan.nodes, *fast.plan_for(many).nodes) if node.work is not None}
    convs, pools = ("c1", "c2", "c3", "c4"), ("p1", "p2", "p3", "p4")
    assert [name for name in convs if works[name].step.phased] == ["c1", "c2", "c4"]
    assert [name for name in pools if works[name].pool.phased] == ["p1", "p2", "p4"]
    assert [name for name in convs if works[name].step.quartered] == ["c1"]
    assert [name for name in pools if works[name].pool.quartered] == ["p1"]
    for model, seed in ((spec, 9), (many, 11)):
        weights = random_weights(model, seed)
        x = random_input(model, seed + 1, batch=7)
        np.testing.assert_allclose(engine.run(model, weights, x), engine.run(model, weights, x, reference=True),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("df", [CL, CF])
@pytest.mark.parametrize("strides, dilation", [(1, 1), (2, 1), (1, (1, 2))])
def test_a_conv_whose_output_pools_read_on_the_way_to_a_flatten_computes_it_transposed(df, strides, dilation):
    """A views-form conv on 32 or more channels into 32 to 64 filters (strided or dilated too),
    whose output only pools and Dropouts read before a Flatten, makes its products transposed
    and hands that layout on: a max pool adding its bias and ReLU, an average pool with padding
    (its counts), a strided max pool, an average pool by reductions over its windows, and the
    Flatten in Keras' order for either data format. Convs read by a conv, of 16 filters, or with
    a softmax keep the usual layout. The plan computes what the plain path computes, also after
    the bias is edited in place."""
    spec = S.Model(name="tails", input_shape=image_shape((9, 11), 32, df), layers=(
        S.Conv2D(name="c1", filters=40, kernel_size=3, strides=strides, dilation_rate=dilation, padding="same",
                 activation="relu", data_format=df),
        S.MaxPooling2D(name="p1", pool_size=2, data_format=df),  # 4 x 5 (2 x 3): adds c1's bias and ReLU
        S.Dropout(name="drop", rate=0.5),
        S.AveragePooling2D(name="p2", pool_size=2, strides=1, padding="same", data_format=df),
        S.MaxPooling2D(name="p3", pool_size=(1, 2), strides=(1, 2), padding="same", data_format=df),  # 4 x 3
        S.Flatten(name="flat", data_format=df),
        S.Dense(name="out", units=3),
    ))
    kept = S.Model(name="kept", input_shape=image_shape((6, 7), 32, df), layers=(
        S.Conv2D(name="k1", filters=32, kernel_size=3, padding="same", use_bias=False, data_format=df),
        S.MaxPooling2D(name="q1", pool_size=2, data_format=df),
        S.Conv2D(name="k2", filters=32, kernel_size=2, activation="tanh", data_format=df),  # read by a conv: k1 keeps
        S.Conv2D(name="k3", filters=16, kernel_size=2, data_format=df),  # 16 filters
        S.Flatten(name="flat2", data_format=df),
    ))
    soft = S.Model(name="soft", input_shape=image_shape((5, 4), 32, df), layers=(
        S.Conv2D(name="s1", filters=32, kernel_size=3, activation="softmax", data_format=df),
        S.Flatten(name="flat3", data_format=df),
    ))
    tiled = S.Model(name="tiled", input_shape=image_shape((8, 8), 32, df), layers=(
        S.Conv2D(name="t1", filters=32, kernel_size=3, padding="same", activation="relu", data_format=df),
        S.AveragePooling2D(name="a1", pool_size=4, data_format=df),  # 2 x 2 outputs of 16 taps: reductions
        S.Flatten(name="flat4", data_format=df),
    ))
    plans = [fast.plan_for(model) for model in (spec, kept, soft, tiled)]
    works = {node.layer: node.work for plan in plans for node in plan.nodes if node.work is not None}
    assert [name for name in ("c1", "k1", "k2", "k3", "s1", "t1") if works[name].step.transposed] == ["c1", "t1"]
    assert [name for name in ("p1", "p2", "p3", "q1", "a1") if works[name].pool.transposed] == ["p1", "p2", "p3", "a1"]
    assert [name for name in ("flat", "flat2", "flat3", "flat4") if works[name].transposed] == ["flat", "flat4"]
    assert not works["c1"].step.add_bias and works["p1"].activations == ("relu",) and works["a1"].pool.reduce
    for model, seed in ((spec, 21), (kept, 23), (soft, 25), (tiled, 27)):
        weights = random_weights(model, seed)
        x = random_input(model, seed + 1, batch=5)
        for _ in range(2):
            np.testing.assert_allclose(engine.run(model, weights, x), engine.run(model, weights, x, reference=True),
                                       rtol=1e-5, atol=1e-5)
            weights[model.layers[0].name].get("bias", np.zeros(1))[...] += 0.25  # in place


def test_an_add_of_two_convs_adds_both_biases_in_one_pass():
    """A ResNet block's Add of two linear convs that only it reads: one conv adds both biases
    (its own, with its BN folded in, and the other's), the other none; the plan computes what
    the plain path computes, also after the deferred bias is edited in place. A conv read
    elsewhere too keeps its own bias."""
    spec = S.Model(name="block", input_shape=(6, 7, 5), layers=(
        S.Conv2D(name="a", filters=4, kernel_size=3, padding="same"),
        S.BatchNormalization(name="a_bn", inputs=("a",)),
        S.Conv2D(name="b", filters=4, kernel_size=1, inputs=("input",)),
        S.Add(name="sum", inputs=("a_bn", "b")),
        S.Activation(name="relu", activation="relu", inputs=("sum",)),
        S.Conv2D(name="c", filters=4, kernel_size=1, use_bias=False, inputs=("relu",)),
        S.Conv2D(name="d", filters=4, kernel_size=1, inputs=("relu",)),
        S.Add(name="sum2", inputs=("c", "d")),
        S.Conv2D(name="e", filters=4, kernel_size=1, inputs=("sum2",)),
        S.Add(name="sum3", inputs=("e", "sum2")),  # sum2 is read twice: no deferral
    ))
    plan = fast.plan_for(spec)
    works = {node.layer: node.work for node in plan.nodes if node.work is not None}
    assert [layer for layer, work in works.items() if work.deferred] == ["a", "c"]
    assert {layer: work.addend.key for layer, work in works.items() if work.addend} == {"b": "a_bn", "d": "c"}
    weights = random_weights(spec, 3)
    x = random_input(spec, 4, batch=6)
    assert_close(engine.run(spec, weights, x), engine.run(spec, weights, x, reference=True), atol=2e-5)
    weights["a"]["bias"] += 0.75  # in place: b's summed bias follows
    assert_close(engine.run(spec, weights, x), engine.run(spec, weights, x, reference=True), atol=2e-5)


def test_random_graphs_run_on_the_plan_as_on_the_plain_path():
    """40 seeded random graphs: the plan (buffers handed on, merges in place) computes what the
    plain path computes, gives the same bits twice, and leaves its input alone."""
    rng = np.random.default_rng(7)
    planned = 0
    for trial in range(40):
        spec = _random_graph(rng, CL if trial % 2 else CF)
        planned += fast.plan_for(spec) is not None  # None: no conv says the data format of a BN on axis 1
        weights = random_weights(spec, trial)
        x = rng.standard_normal((int(rng.integers(1, 20)), *spec.input_shape)).astype(np.float32)
        before = x.copy()
        out = engine.run(spec, weights, x)
        np.testing.assert_array_equal(engine.run(spec, weights, x), out)
        np.testing.assert_array_equal(x, before)
        ref = engine.run(spec, weights, x, reference=True)
        assert_close(out, ref, atol=1e-5 * max(1.0, float(np.abs(ref).max())))
    assert planned >= 35


@pytest.mark.keras
def test_graph_plan_matches_keras(keras):
    check_against_keras(_graph_spec(CL))


_CONV_CASES = {
    "3x3": ((3, 3), (1, 1), (1, 1), "same"), "stride2-odd": ((3, 2), (2, 2), (1, 1), "same"),
    "wstride3": ((2, 3), (1, 3), (1, 1), "valid"), "wdilated": ((3, 3), (1, 1), (1, 2), "same"),
    "hdilated": ((3, 3), (1, 1), (2, 1), "same"), "1x1-stride2": ((1, 1), (2, 2), (1, 1), "valid"),
    "stride2-padded": ((3, 3), (2, 2), (1, 1), "same"),  # one padded row and column on each side
}


@pytest.mark.parametrize("case,im2col", [(c, form) for c in _CONV_CASES for form in (False, True)
                                         if form or c != "hdilated"])  # a height dilation is always im2col
def test_conv_step_forms_equal_the_plain_conv(case, im2col):
    """Both ways the plan runs a Conv2D (tap-column views of the padded input, with column
    phases for a width stride made from the unpadded input; or im2col, as shifted copies of the
    padded rows where there is no height stride or dilation) compute what the plain conv2d
    computes, from a contiguous input and from the model input seen batch-last (11 images,
    near each other: copied in one go; far apart: a few at a time)."""
    kernel, strides, dilation, padding = _CONV_CASES[case]
    layer = S.Conv2D(name="c", filters=4, kernel_size=kernel, strides=strides, dilation_rate=dilation, padding=padding)
    conv = steps.plan_conv(layer, (9, 11, 5), 1)
    conv = steps.Conv(conv.layer, conv.win, conv.channels, im2col, 1, True)
    rng = np.random.default_rng(0)
    kernel_hwio = rng.standard_normal((*kernel, 5, 4)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    x = rng.standard_normal((11, 9, 11, 5)).astype(np.float32)  # (N, H, W, C)
    ref = engine.layers.conv2d(x, kernel_hwio, bias, strides=strides, padding=padding, dilation_rate=dilation)
    far = np.full((11, 5, 9, 11, 5), np.nan, np.float32)[:, 2]  # each image 5 x 495 floats from the next
    far[...] = x
    assert abs(far.strides[0]) >= steps._FAR_IMAGES > abs(x.strides[0])
    for inside in (np.ascontiguousarray(x.transpose(1, 3, 2, 0)), x.transpose(1, 3, 2, 0), far.transpose(1, 3, 2, 0)):
        space = fast._Space()  # inside: (H, C, W, N)
        for index in range(3):  # scratch left dirty by another step: every border is written
            space.tmp(index, (100_000,)).fill(np.nan)
        out = conv(inside, conv.matrices(kernel_hwio), bias, space)
        assert_close(out.transpose(3, 0, 2, 1), ref, atol=2e-5)


@pytest.mark.parametrize("hw,padding", [((8, 6), "same"), ((6, 10), "valid"), ((2, 2), "same"), ((4, 4), "valid")])
@pytest.mark.parametrize("add_bias", [True, False])
def test_winograd_form_equals_the_plain_conv(hw, padding, add_bias):
    """Conv's Winograd form (forced here with few channels; the plan takes it for many) computes
    the plain conv2d, 'same' and 'valid', from a contiguous input and from the model input seen
    batch-last, into a buffer of its own or into the first channels of a wider one (a writer
    with a channel of ones after its own, which stays as it was), with dirty scratch; without
    its bias and its ReLU when a following max pool runs them."""
    layer = S.Conv2D(name="c", filters=3, kernel_size=3, padding=padding, activation="relu")
    conv = dataclasses.replace(steps.plan_conv(layer, (*hw, 5), 1), add_bias=add_bias, winograd=True)
    assert steps.winograd_fits(conv.win)
    rng = np.random.default_rng(1)
    kernel_hwio = rng.standard_normal((3, 3, 5, 3)).astype(np.float32)
    bias = rng.standard_normal(3).astype(np.float32)
    x = rng.standard_normal((11, *hw, 5)).astype(np.float32)  # (N, H, W, C)
    ref = engine.layers.conv2d(x, kernel_hwio, bias if add_bias else None, strides=(1, 1), padding=padding,
                               dilation_rate=(1, 1))
    ref = np.maximum(ref, 0) if add_bias else ref
    w = conv.win
    for inside in (np.ascontiguousarray(x.transpose(1, 3, 2, 0)), x.transpose(1, 3, 2, 0)):  # (H, C, W, N)
        for wider in (False, True):
            space = fast._Space()
            for index in range(3):
                space.tmp(index, (100_000,)).fill(np.nan)
            whole = np.full((w.out_h, 4, w.out_w, 11), 7.0, np.float32)
            out = conv(inside, conv.matrices(kernel_hwio), bias, space, into=whole[:, :3] if wider else None)
            assert_close(out.transpose(3, 0, 2, 1), ref, atol=2e-5)
            if wider:
                assert np.shares_memory(out, whole) and (whole[:, 3] == 7).all()


@pytest.mark.parametrize("average", [True, False])
@pytest.mark.parametrize("size,pool,stride,padding", [(8, 8, 8, "valid"), (17, 4, 4, "valid"), (4, 4, 4, "valid"),
                                                      (9, 3, 3, "valid"), (9, 3, 2, "same"), (10, 2, 2, "same"),
                                                      (7, 3, 1, "same")])
@pytest.mark.parametrize("batch", [5, 70])
def test_pool_step_matches_the_plain_pooling(size, pool, stride, padding, average, batch):
    """The plan's pooling, by one reduction per window axis (few outputs, many taps: 8 of an 8x8
    map, 4 of a 17x17 one, whose last row and column no window reads) or one ufunc call per tap
    clipped to the real cells ('same' padding), gives what the plain pooling gives, for a short
    and a long batch and with dirty scratch; so does a view of the model input, which the
    reductions leave to the taps."""
    from layerlab import geometry

    win = geometry.window_2d((size, size), (pool, pool), (stride, stride), padding)
    step = steps.Pool(win, average)
    assert step.reduce == (pool == stride and pool * pool >= 16)
    x = np.random.default_rng(size).standard_normal((batch, size, size, 3)).astype(np.float32)  # (N, H, W, C)
    plain = engine.layers.average_pooling2d if average else engine.layers.max_pooling2d
    ref = plain(x, pool_size=(pool, pool), strides=(stride, stride), padding=padding)
    for inside in (np.ascontiguousarray(x.transpose(1, 3, 2, 0)), x.transpose(1, 3, 2, 0)):
        space = fast._Space()
        for index in range(2):  # scratch left dirty by another step
            space.tmp(index, (100_000,)).fill(np.nan)
        out = step(inside, space)
        assert_close(out.transpose(3, 0, 2, 1), ref, atol=1e-6)


@pytest.mark.parametrize("case", [
    ((5, 1), (1, 1), (1, 1), "valid", 1, (28, 1)),  # the DS-CNN's 5x1 on 28 rows: 3 blocks
    ((3, 3), (2, 1), (1, 1), "valid", 2, (33, 6)),  # a height stride, multiplier 2
    ((3, 2), (1, 1), (2, 1), "valid", 1, (22, 7)),  # a height dilation
    ((3, 3), (1, 2), (1, 1), "valid", 1, (26, 9)),  # a width stride
    ((3, 3), (1, 1), (1, 1), "same", 1, (12, 5)),  # height padding: one block
])
def test_depthwise_step_in_row_blocks_matches_the_plain_conv(case):
    """The depthwise step's diagonal matrices, split into row blocks where there is no height
    padding (each block only as wide as the rows it reads), compute what the plain depthwise
    conv computes, from a contiguous input and from the model input seen batch-last."""
    from layerlab import geometry
    from layerlab.engine import windows

    kernel, strides, dilation, padding, multiplier, (h, w) = case
    layer = S.DepthwiseConv2D(name="d", kernel_size=kernel, strides=strides, dilation_rate=dilation, padding=padding,
                              depth_multiplier=multiplier)
    win = geometry.window_2d((h, w), kernel, strides, padding, dilation)
    step = steps.Depthwise(layer, win, 3, 1)
    assert step.diagonal and (step.blocks > 1) == (padding == "valid")
    rng = np.random.default_rng(h)
    kernel_hwcm = rng.standard_normal((*kernel, 3, multiplier)).astype(np.float32)
    bias = rng.standard_normal(3 * multiplier).astype(np.float32)
    x = rng.standard_normal((10, h, w, 3)).astype(np.float32)
    ref = windows.depthwise_conv2d(x, kernel_hwcm, bias, strides=strides, padding=padding, dilation_rate=dilation)
    for inside in (np.ascontiguousarray(x.transpose(1, 3, 2, 0)), x.transpose(1, 3, 2, 0)):
        out = step(inside, step.matrices(kernel_hwcm), bias, fast._Space())
        assert_close(out.transpose(3, 0, 2, 1), ref, atol=2e-5)


@pytest.mark.parametrize("shapes", [((40, 9), (9, 30)), ((20, 9), (5, 9, 300)), ((3, 64, 9), (3, 9, 2)), ((3, 20, 9), (3, 9, 64)),
                                    ((8, 9), (9, 200)), ((48, 9), (9, 8))])
def test_matmul_in_parts_is_the_whole_product(monkeypatch, shapes):
    """Products over the size OpenBLAS multiplies without packing are made in parts of the rows
    (64 rows in two, 48 in six parts of 8, when the columns are too few to split) or of 32
    columns, batched or not: every output element is the same whole sum as one product's."""
    monkeypatch.setattr(steps, "small_product", lambda: 1000)
    rng = np.random.default_rng(len(shapes[1]))
    a, b = (rng.standard_normal(shape).astype(np.float32) for shape in shapes)
    whole = np.matmul(a, b)
    calls = []
    real = np.matmul
    monkeypatch.setattr(steps.np, "matmul", lambda *args, **kw: calls.append(1) or real(*args, **kw))
    out = steps.matmul(a, b, np.full(whole.shape, np.nan, np.float32))
    monkeypatch.setattr(steps.np, "matmul", real)
    assert len(calls) > 1
    np.testing.assert_allclose(out, whole, rtol=1e-6, atol=1e-5)


def test_plan_with_products_in_parts_matches_the_plain_path(monkeypatch):
    """The whole plan with every product split (a tiny limit) computes what the plain path does."""
    monkeypatch.setattr(steps, "small_product", lambda: 500)
    spec = _graph_spec(CL)
    weights = random_weights(spec, 4)
    x = random_input(spec, 5, batch=9)
    assert_close(engine.run(spec, weights, x), engine.run(spec, weights, x, reference=True), atol=2e-5)


def test_plan_keeps_its_buffers_and_never_returns_one():
    """A second call allocates no new buffers, values share buffers only when one is dead, and
    what the plan returns is a new array each call (the next call does not overwrite it)."""
    spec = _graph_spec(CL)
    plan = fast.plan_for(spec)
    weights = random_weights(spec, 3)
    x = random_input(spec, 4, batch=5)
    first = plan(x, weights)
    kept = first.copy()
    buffers = {key: id(a) for key, a in plan._local.space.store.items()}
    second = plan(x[::-1].copy(), weights)
    assert {key: id(a) for key, a in plan._local.space.store.items()} == buffers
    np.testing.assert_array_equal(first, kept)
    assert not np.shares_memory(first, second)
    slots = [node.slot for node in plan.nodes if node.slot is not None]
    assert len(set(slots)) < len(slots)  # buffers are handed on


# --- errors ----------------------------------------------------------------------------------

def test_wrong_input_shape_is_one_clear_error():
    spec = seed650()
    weights = random_weights(spec)
    with pytest.raises(ShapeError, match=r"model 'seed650': input shape \(2, 28, 28, 1\) does not fit, expected \(batch, 1, 28, 28\)"):
        engine.run(spec, weights, np.zeros((2, 28, 28, 1), np.float32))
    with pytest.raises(ShapeError, match=r"missing batch axis"):
        engine.run(spec, weights, np.zeros((1, 28, 28), np.float32))
    with pytest.raises(ShapeError, match=r"not numeric"):
        engine.run(spec, weights, np.full((1, 1, 28, 28), "a"))
    with pytest.raises(ShapeError, match=r"model 'seed650': input shape \(3, 1, 27, 28\)"):
        Network(spec, weights).predict(np.zeros((3, 1, 27, 28), np.float32))


def test_run_layer_shape_errors_name_the_layer():
    conv = S.Conv2D(name="conv_b", filters=2, kernel_size=5)
    kernel = np.zeros((5, 5, 1, 2), np.float32)
    with pytest.raises(ShapeError, match=r"layer 'conv_b' \(Conv2D\): input shape \(1, 4, 4, 1\) does not fit: .*kernel_size=\(5, 5\)"):
        engine.run_layer(conv, [np.zeros((1, 4, 4, 1), np.float32)], {"kernel": kernel, "bias": np.zeros(2, np.float32)})
    with pytest.raises(ShapeError, match=r"layer 'conv_b'.*input has 3 channels, the kernel expects 1"):
        engine.run_layer(conv, [np.zeros((1, 6, 6, 3), np.float32)], {"kernel": kernel, "bias": np.zeros(2, np.float32)})
    with pytest.raises(ShapeError, match=r"no batch axis"):
        engine.run_layer(conv, [np.zeros(6, np.float32)], {"kernel": kernel})
    dense = S.Dense(name="d", units=2)
    with pytest.raises(ShapeError, match=r"layer 'd' \(Dense\): input shape \(1, 2, 3\) does not fit"):
        engine.run_layer(dense, [np.zeros((1, 2, 3), np.float32)], {"kernel": np.zeros((6, 2), np.float32)})


def test_unknown_activation_and_missing_weight_are_clear_errors():
    with pytest.raises(SpecError, match=r"activation 'mish' is not supported. Use one of linear, relu"):
        engine.activation(np.zeros(3, np.float32), "mish")
    dense = S.Dense(name="d", units=2)
    with pytest.raises(Exception, match=r"layer 'd' \(Dense\): weight 'bias' is missing, received \['kernel'\]"):
        engine.run_layer(dense, [np.zeros((1, 3), np.float32)], {"kernel": np.zeros((3, 2), np.float32)})
    model = S.Model(name="m", input_shape=(3,), layers=(dense,))  # the fast path too: not a bare KeyError
    with pytest.raises(Exception, match=r"layer 'd' \(Dense\): weight 'bias' is missing, received \['kernel'\]"):
        engine.run(model, {"d": {"kernel": np.zeros((3, 2), np.float32)}}, np.zeros((2, 3), np.float32))


def test_predict_never_hands_back_the_input_array():
    """A model that passes its input through (Dropout only) still returns a new array from
    Network.predict, in one batch or several."""
    net = Network(S.Model(name="through", input_shape=(4,), layers=(S.Dropout(name="dr", rate=0.5),)), {})
    x = np.ones((3, 4), np.float32)
    for batch_size in (1024, 2):
        out = net.predict(x, batch_size=batch_size)
        np.testing.assert_array_equal(out, x)
        assert not np.shares_memory(out, x)
