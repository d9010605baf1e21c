"""Spec -> Keras -> spec, with Keras' own shapes and parameter counts as the oracle."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import random_weights
from layerlab import spec as S
from layerlab.keras_build import build_keras, keras_weights, spec_from_keras
from layerlab.presets import seed650

pytestmark = pytest.mark.keras


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_seed650_keras_shapes_and_params(keras, data_format):
    spec = seed650(data_format)
    model = build_keras(spec, seed=3)
    assert model.count_params() == 650
    keras_shapes = [tuple(layer.output.shape[1:]) for layer in model.layers]
    assert keras_shapes == [info.output_shape for info in spec.infos]
    assert spec_from_keras(model) == spec
    conv1 = model.get_layer("conv1").get_config()
    assert conv1["padding"] == "valid" and conv1["data_format"] == data_format
    assert conv1["kernel_initializer"]["class_name"] == "GlorotNormal"
    assert conv1["bias_initializer"]["class_name"] == "Ones"


def test_weights_round_trip(keras):
    spec = seed650()
    weights = random_weights(spec, 0)
    model = build_keras(spec, weights)
    back = keras_weights(model, spec)
    for layer, arrays in weights.items():
        for name, array in arrays.items():
            np.testing.assert_array_equal(back[layer][name], array)


def test_nnc_glorot_is_untruncated_variance_scaling(keras):
    spec = seed650(kernel_initializer="nnc_glorot_normal", bias_initializer="zeros")
    model = build_keras(spec, seed=0)
    config = model.get_layer("conv1").get_config()["kernel_initializer"]
    assert config["class_name"] == "VarianceScaling"
    assert config["config"]["distribution"] == "untruncated_normal" and config["config"]["mode"] == "fan_avg"
    assert spec_from_keras(model).layers[0].kernel_initializer == "nnc_glorot_normal"


def test_graph_round_trip(keras):
    spec = S.Model(name="g", input_shape=(8, 8, 2), layers=(
        S.Conv2D(name="a", filters=2, kernel_size=3, padding="same"),
        S.Conv2D(name="b", filters=2, kernel_size=1, inputs=("input",)),
        S.Add(name="sum", inputs=("a", "b")),
        S.Concatenate(name="cat", inputs=("sum", "a")),
        S.Flatten(name="f"),
        S.Dense(name="d", units=3),
    ))
    model = build_keras(spec, seed=0)
    assert spec_from_keras(model) == spec
    assert tuple(model.output.shape[1:]) == spec.output_shape


def test_built_with_weights_keeps_initializers_in_config(keras):
    spec = seed650()
    weights = random_weights(spec, 1)
    model = build_keras(spec, weights)
    assert model.get_layer("conv1").get_config()["kernel_initializer"]["class_name"] == "GlorotNormal"
    assert spec_from_keras(model) == spec
    np.testing.assert_array_equal(model.get_layer("dense1").get_weights()[0], weights["dense1"]["kernel"])
