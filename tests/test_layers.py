"""The layer types of the registry issue, engine against Keras 3 (JAX backend) as the oracle.

Every case builds the layer from a spec, runs Keras on seeded random-normal inputs and compares
the engine's plain path (and ``run_layer``) with it: shape first, then values. The cases follow
STYLE.md: stride 2 'same' on odd and even sizes, dilation, channels_first, 1x1 output,
use_bias=False, depth_multiplier 2; plus causal Conv1D, keepdims, ReLU's three arguments and
every merge in a two-branch graph.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import random_weights
from layerlab import engine
from layerlab import spec as S
from layerlab.errors import SpecError
from test_engine import ZEROS, assert_close, check_against_keras, image_shape, keras_output, one_layer, random_input

CF, CL = S.CHANNELS_FIRST, S.CHANNELS_LAST
pytestmark = pytest.mark.keras

DW_ZEROS = dict(depthwise_initializer="zeros", bias_initializer="zeros")

DEPTHWISE_CASES = {
    # id: (input hw, channels, kernel_size, strides, padding, dilation, depth_multiplier, use_bias, data_format)
    "8-3-2-same": ((8, 8), 3, (3, 3), (2, 2), "same", (1, 1), 1, True, CL),
    "7-3-2-same-m2": ((7, 7), 2, (3, 3), (2, 2), "same", (1, 1), 2, True, CL),
    "7-3-2-same-cf": ((7, 7), 2, (3, 3), (2, 2), "same", (1, 1), 2, True, CF),
    "dilated": ((9, 8), 2, (3, 2), (1, 1), "same", (2, 2), 1, True, CL),
    "dilated-cf-valid": ((9, 8), 3, (3, 3), (1, 1), "valid", (2, 1), 1, False, CF),
    "1x1-output": ((4, 3), 2, (4, 3), (1, 1), "valid", (1, 1), 2, True, CL),
    "no-bias": ((6, 5), 4, (2, 2), (1, 2), "valid", (1, 1), 1, False, CL),
    "ds-cnn-k10x1": ((30, 1), 3, (10, 1), (1, 1), "valid", (1, 1), 1, True, CL),
}


@pytest.mark.parametrize("case", list(DEPTHWISE_CASES), ids=list(DEPTHWISE_CASES))
def test_depthwise_conv2d_matches_keras(keras, case):
    hw, channels, kernel, strides, padding, dilation, multiplier, bias, fmt = DEPTHWISE_CASES[case]
    layer = S.DepthwiseConv2D(name="dw", kernel_size=kernel, strides=strides, padding=padding, dilation_rate=dilation,
                              depth_multiplier=multiplier, use_bias=bias, data_format=fmt, activation="relu", **DW_ZEROS)
    check_against_keras(one_layer(layer, image_shape(hw, channels, fmt)))


SEPARABLE_CASES = {
    "7-3-2-same-m2": ((7, 7), 2, 4, (3, 3), (2, 2), "same", (1, 1), 2, True, CL),
    "8-3-2-same-cf": ((8, 8), 3, 2, (3, 3), (2, 2), "same", (1, 1), 1, True, CF),
    "dilated-no-bias": ((9, 9), 2, 3, (3, 3), (1, 1), "valid", (2, 2), 1, False, CL),
}


@pytest.mark.parametrize("case", list(SEPARABLE_CASES), ids=list(SEPARABLE_CASES))
def test_separable_conv2d_matches_keras(keras, case):
    hw, channels, filters, kernel, strides, padding, dilation, multiplier, bias, fmt = SEPARABLE_CASES[case]
    layer = S.SeparableConv2D(name="sep", filters=filters, kernel_size=kernel, strides=strides, padding=padding,
                              dilation_rate=dilation, depth_multiplier=multiplier, use_bias=bias, data_format=fmt,
                              activation="tanh", pointwise_initializer="zeros", **DW_ZEROS)
    check_against_keras(one_layer(layer, image_shape(hw, channels, fmt)))


CONV1D_CASES = {
    # id: (steps, channels, filters, kernel, strides, padding, dilation, use_bias, data_format)
    "valid": (12, 3, 4, 3, 1, "valid", 1, True, CL),
    "same-s2-odd": (11, 2, 3, 3, 2, "same", 1, True, CL),
    "same-s2-even": (12, 2, 3, 4, 2, "same", 1, False, CL),
    "causal-dilated": (10, 2, 3, 3, 1, "causal", 2, True, CL),
    "causal-cf": (9, 3, 2, 2, 1, "causal", 1, True, CF),
    "same-cf-dilated": (13, 2, 2, 3, 1, "same", 3, True, CF),
    "1-output": (5, 2, 2, 5, 1, "valid", 1, True, CL),
}


@pytest.mark.parametrize("case", list(CONV1D_CASES), ids=list(CONV1D_CASES))
def test_conv1d_matches_keras(keras, case):
    steps, channels, filters, kernel, strides, padding, dilation, bias, fmt = CONV1D_CASES[case]
    layer = S.Conv1D(name="c1", filters=filters, kernel_size=kernel, strides=strides, padding=padding,
                     dilation_rate=dilation, use_bias=bias, data_format=fmt, activation="linear", **ZEROS)
    shape = (channels, steps) if fmt == CF else (steps, channels)
    check_against_keras(one_layer(layer, shape))


POOL1D_CASES = {
    "max-3-1-same": (S.MaxPooling1D, 10, 3, 1, "same", CL),
    "avg-3-1-same": (S.AveragePooling1D, 10, 3, 1, "same", CL),
    "max-2-2-same-odd": (S.MaxPooling1D, 9, 2, 2, "same", CL),
    "avg-2-2-same-odd-cf": (S.AveragePooling1D, 9, 2, 2, "same", CF),
    "max-3-2-valid-cf": (S.MaxPooling1D, 10, 3, 2, "valid", CF),
}


@pytest.mark.parametrize("case", list(POOL1D_CASES), ids=list(POOL1D_CASES))
def test_pooling1d_matches_keras(keras, case):
    cls, steps, pool, strides, padding, fmt = POOL1D_CASES[case]
    layer = cls(name="p", pool_size=pool, strides=strides, padding=padding, data_format=fmt)
    check_against_keras(one_layer(layer, (3, steps) if fmt == CF else (steps, 3)))


GLOBAL_CASES = [
    (cls, fmt, keepdims)
    for cls in (S.GlobalAveragePooling2D, S.GlobalMaxPooling2D, S.GlobalAveragePooling1D, S.GlobalMaxPooling1D)
    for fmt in (CL, CF) for keepdims in (False, True)
]


@pytest.mark.parametrize("cls, fmt, keepdims", GLOBAL_CASES, ids=[f"{c.type}-{f}-{k}" for c, f, k in GLOBAL_CASES])
def test_global_pooling_matches_keras(keras, cls, fmt, keepdims):
    shape = ((3, 5, 4) if fmt == CF else (5, 4, 3)) if cls.rank == 2 else ((3, 7) if fmt == CF else (7, 3))
    check_against_keras(one_layer(cls(name="g", data_format=fmt, keepdims=keepdims), shape))


RELU_CASES = {
    "relu6": dict(max_value=6.0),
    "leaky-0.1": dict(negative_slope=0.1),
    "threshold": dict(threshold=0.5),
    "all-three": dict(max_value=1.5, negative_slope=0.2, threshold=0.3),
}


@pytest.mark.parametrize("case", list(RELU_CASES), ids=list(RELU_CASES))
def test_relu_matches_keras(keras, case):
    spec = one_layer(S.ReLU(name="r", **RELU_CASES[case]), (4, 5, 3))
    x = random_input(spec, 3) * 4  # reaches max_value and well below the threshold
    ref = keras_output(spec, {}, x)
    assert_close(engine.run(spec, {}, x), ref)
    assert np.any(ref == 0) or RELU_CASES[case].get("negative_slope")  # the clip is exercised


@pytest.mark.parametrize("shared_axes", [(), (1, 2), (3,)])
def test_prelu_matches_keras(keras, shared_axes):
    check_against_keras(one_layer(S.PReLU(name="pr", shared_axes=shared_axes), (4, 5, 3)))


@pytest.mark.parametrize("layer, shape", [
    (S.UpSampling2D(name="up", size=(2, 3)), (3, 4, 2)),
    (S.UpSampling2D(name="up", size=(2, 2), data_format=CF), (2, 3, 4)),
    (S.Cropping2D(name="crop", cropping=((1, 0), (2, 1))), (5, 6, 2)),
    (S.Cropping2D(name="crop", cropping=((0, 2), (1, 1)), data_format=CF), (2, 5, 6)),
    (S.Permute(name="perm", dims=(2, 1, 3)), (3, 4, 2)),
    (S.Permute(name="perm", dims=(2, 1)), (5, 3)),
    (S.ZeroPadding1D(name="zp", padding=(1, 2)), (5, 3)),
], ids=["up-2x3", "up-cf", "crop", "crop-cf", "permute-3d", "permute-2d", "zeropad1d"])
def test_data_movement_layers_match_keras(keras, layer, shape):
    check_against_keras(one_layer(layer, shape))


MERGES = [S.Add, S.Subtract, S.Multiply, S.Average, S.Maximum, S.Minimum, S.Concatenate]


@pytest.mark.parametrize("cls", MERGES, ids=[c.type for c in MERGES])
def test_merges_in_a_graph_match_keras(keras, cls):
    """Two branches of one input, merged: the engine walks named inputs as Keras' functional graph."""
    spec = S.Model(name="graph", input_shape=(6, 6, 2), layers=(
        S.Conv2D(name="a", filters=3, kernel_size=3, padding="same", **ZEROS),
        S.DepthwiseConv2D(name="b0", kernel_size=3, padding="same", inputs=("input",), **DW_ZEROS),
        S.Conv2D(name="b", filters=3, kernel_size=1, **ZEROS),
        cls(name="m", inputs=("a", "b")),
        S.GlobalAveragePooling2D(name="gap"),
        S.Dense(name="d", units=4, **ZEROS),
    ))
    weights = random_weights(spec, 5)
    x = random_input(spec, 6)
    ref = keras_output(spec, weights, x)
    assert_close(engine.run(spec, weights, x), ref)


def test_three_input_average_and_shape_errors():
    spec = S.Model(name="avg3", input_shape=(4,), layers=(
        S.Dense(name="a", units=3), S.Dense(name="b", units=3, inputs=("input",)),
        S.Dense(name="c", units=3, inputs=("input",)), S.Average(name="m", inputs=("a", "b", "c")),
    ))
    w = random_weights(spec, 1)
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    outs = engine.run(spec, w, x, trace=True)
    np.testing.assert_allclose(outs["m"], (outs["a"] + outs["b"] + outs["c"]) / 3, rtol=1e-6)
    with pytest.raises(SpecError, match=r"Subtract needs exactly 2 inputs, received 3"):
        S.Model(name="bad", input_shape=(4,), layers=(
            S.Dense(name="a", units=3), S.Dense(name="b", units=3, inputs=("input",)),
            S.Dense(name="c", units=3, inputs=("input",)), S.Subtract(name="m", inputs=("a", "b", "c"))))
    with pytest.raises(SpecError, match=r"Multiply needs inputs whose sizes agree or are 1 on each axis, "
                                        r"received shapes \[\(3,\), \(2,\)\]"):
        S.Model(name="bad", input_shape=(4,), layers=(
            S.Dense(name="a", units=3), S.Dense(name="b", units=2, inputs=("input",)), S.Multiply(name="m", inputs=("a", "b"))))
    broadcast = S.Model(name="gate", input_shape=(4,), layers=(
        S.Dense(name="a", units=3), S.Dense(name="b", units=1, inputs=("input",)), S.Multiply(name="m", inputs=("b", "a"))))
    assert broadcast.infos[-1].output_shape == (3,)
    with pytest.raises(SpecError, match=r"Add needs inputs of one rank, received shapes \[\(4, 4, 2\), \(2,\)\]"):
        S.Model(name="bad", input_shape=(4, 4, 2), layers=(
            S.GlobalAveragePooling2D(name="g"), S.Add(name="s", inputs=("input", "g"))))


def test_params_and_macs_equal_keras(keras):
    """summary's parameter count equals Keras' count_params; MACs follow the standard count."""
    from layerlab.keras_build import build_keras

    spec = S.Model(name="mix", input_shape=(16, 16, 3), layers=(
        S.DepthwiseConv2D(name="dw", kernel_size=3, depth_multiplier=2, padding="same", **DW_ZEROS),
        S.SeparableConv2D(name="sep", filters=8, kernel_size=3, strides=2, padding="same", **DW_ZEROS),
        S.PReLU(name="pr", shared_axes=(1, 2)),
        S.GlobalMaxPooling2D(name="g", keepdims=True),
        S.Reshape(name="r", target_shape=(8,)),
        S.Dense(name="d", units=5, **ZEROS),
    ))
    assert spec.param_count == build_keras(spec).count_params()
    # depthwise: 16*16 outputs x 6 channels x 9 taps; separable: 8*8 x 6 x (9 + 8); dense 8 x 5
    assert spec.macs == 16 * 16 * 6 * 9 + 8 * 8 * 6 * (9 + 8) + 8 * 5


@pytest.mark.parametrize("layer, message", [
    (dict(type="DepthwiseConv2D", name="d", kernel_size=3, depth_multiplier=0), r"depth_multiplier=0 must be a positive int"),
    (dict(type="Conv1D", name="c", filters=2, kernel_size=(3, 3)), r"kernel_size=\(3, 3\) is not an int"),
    (dict(type="Conv2D", name="c", filters=2, kernel_size=3, padding="causal"), r"padding='causal' is not supported. Use one of valid, same"),
    (dict(type="UpSampling2D", name="u", interpolation="bilinear"), r"interpolation='bilinear' is not supported"),
    (dict(type="ReLU", name="r", max_value=-1), r"max_value=-1 must be >= 0.0"),
    (dict(type="Permute", name="p", dims=[1, 3]), r"dims=\(1, 3\) is not a permutation of 1..2"),
    (dict(type="Cropping2D", name="c", cropping=-1), r"cropping=-1 is not"),
    (dict(type="ReLU", name="r", threshold=-0.5), r"threshold=-0.5 must be >= 0.0"),
], ids=["multiplier", "conv1d-kernel", "conv2d-causal", "bilinear", "relu-max", "permute", "crop", "relu-threshold"])
def test_new_layer_errors_name_what_and_fix(layer, message):
    with pytest.raises(SpecError, match=message):
        S.Model.from_dict({"name": "m", "input_shape": [8, 8, 2], "layers": [layer]})


def test_valid_window_that_does_not_fit_says_so():
    with pytest.raises(SpecError, match=r"kernel_size=\(6,\) does not fit input \(5,\) with padding='valid'"):
        S.Model(name="m", input_shape=(5, 2), layers=(S.Conv1D(name="c", filters=1, kernel_size=6),))
    with pytest.raises(SpecError, match=r"cropping=\(\(2, 2\), \(0, 0\)\) removes all of input \(4, 4\)"):
        S.Model(name="m", input_shape=(4, 4, 1), layers=(S.Cropping2D(name="c", cropping=((2, 2), (0, 0))),))


def test_every_new_type_round_trips_through_a_spec_document():
    layers = (
        S.Conv1D(name="c", filters=2, kernel_size=3, padding="causal"), S.ZeroPadding1D(name="z", padding=2),
        S.MaxPooling1D(name="mp"), S.AveragePooling1D(name="ap", pool_size=2, strides=1, padding="same"),
        S.GlobalMaxPooling1D(name="g", keepdims=True), S.Permute(name="p", dims=(2, 1)), S.Flatten(name="f"),
        S.ReLU(name="r", max_value=6.0, negative_slope=0.1), S.PReLU(name="pr"),
    )
    spec = S.Model(name="seq", input_shape=(12, 3), layers=layers)
    assert S.Model.from_dict(spec.to_dict()) == spec
