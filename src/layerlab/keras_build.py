"""Spec -> Keras model with every argument explicit, and Keras model -> spec.

Keras is imported only here (and only when called). layerlab uses Keras 3 with the JAX backend:
TensorFlow refuses channels_first Conv2D on a CPU ("only supports the NHWC tensor format"), and
with ``jit_compile=True`` Keras 3.15's TF backend adds a conv bias along the wrong axis whenever
the last dimension equals the number of filters. JAX runs both layouts correctly on a CPU.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from layerlab import spec as S
from layerlab.errors import SpecError, UnsupportedLayerError, require

BACKEND = "jax"


def import_keras():
    """Import Keras 3, choosing the JAX backend unless KERAS_BACKEND is already set.

    Returns:
        The ``keras`` module.

    Raises:
        MissingExtraError: Keras or JAX is not installed.
    """
    os.environ.setdefault("KERAS_BACKEND", BACKEND)
    keras = require("keras", "keras", "Building or training a Keras model")
    if not keras.__version__.startswith("3."):
        raise SpecError(f"layerlab needs Keras 3, found keras {keras.__version__}. Install it with: pip install 'layerlab[keras]'")
    return keras


def _initializer(keras, name: str | None, default: str):
    if name is None:
        return default
    if name == "nnc_glorot_normal":
        # NNC's NormalConvolutionGlorot / NormalAffineGlorot: an untruncated normal with the
        # Glorot variance 2 / (fan_in + fan_out), receptive field folded into both fans.
        return keras.initializers.VarianceScaling(scale=1.0, mode="fan_avg", distribution="untruncated_normal")
    return name


def _activation(keras, name: str):
    if name == "hard_sigmoid_keras2":
        # Keras 2's definition, kept for files written by Keras 2.
        return lambda x: keras.ops.clip(0.2 * x + 0.5, 0.0, 1.0)
    return name


def keras_layer(layer: S.Layer, keras=None):
    """The Keras layer for one spec layer, every argument written out."""
    keras = keras or import_keras()
    L = keras.layers
    if isinstance(layer, S.Conv2D):
        return L.Conv2D(
            filters=layer.filters, kernel_size=layer.kernel_size, strides=layer.strides,
            padding=layer.padding, data_format=layer.data_format, dilation_rate=layer.dilation_rate,
            activation=_activation(keras, layer.activation), use_bias=layer.use_bias,
            kernel_initializer=_initializer(keras, layer.kernel_initializer, "glorot_uniform"),
            bias_initializer=_initializer(keras, layer.bias_initializer, "zeros"), name=layer.name,
        )
    if isinstance(layer, S.MaxPooling2D):
        return L.MaxPooling2D(pool_size=layer.pool_size, strides=layer.strides, padding=layer.padding, data_format=layer.data_format, name=layer.name)
    if isinstance(layer, S.AveragePooling2D):
        return L.AveragePooling2D(pool_size=layer.pool_size, strides=layer.strides, padding=layer.padding, data_format=layer.data_format, name=layer.name)
    if isinstance(layer, S.ZeroPadding2D):
        return L.ZeroPadding2D(padding=layer.padding, data_format=layer.data_format, name=layer.name)
    if isinstance(layer, S.Activation):
        return L.Activation(_activation(keras, layer.activation), name=layer.name)
    if isinstance(layer, S.Flatten):
        return L.Flatten(data_format=layer.data_format, name=layer.name)
    if isinstance(layer, S.Dense):
        return L.Dense(
            units=layer.units, activation=_activation(keras, layer.activation), use_bias=layer.use_bias,
            kernel_initializer=_initializer(keras, layer.kernel_initializer, "glorot_uniform"),
            bias_initializer=_initializer(keras, layer.bias_initializer, "zeros"), name=layer.name,
        )
    if isinstance(layer, S.Dropout):
        return L.Dropout(rate=layer.rate, name=layer.name)
    if isinstance(layer, S.BatchNormalization):
        return L.BatchNormalization(axis=layer.axis, momentum=layer.momentum, epsilon=layer.epsilon, center=layer.center, scale=layer.scale, name=layer.name)
    if isinstance(layer, S.Reshape):
        return L.Reshape(target_shape=layer.target_shape, name=layer.name)
    if isinstance(layer, S.Rescaling):
        return L.Rescaling(scale=layer.scale, offset=layer.offset, name=layer.name)
    if isinstance(layer, S.Add):
        return L.Add(name=layer.name)
    if isinstance(layer, S.Concatenate):
        return L.Concatenate(axis=layer.axis, name=layer.name)
    raise SpecError(f"layer '{layer.name}' ({layer.type}) has no Keras mapping")


def build_keras(model: S.Model, weights: dict[str, dict[str, np.ndarray]] | None = None, seed: int | None = None):
    """Build a Keras model from a spec; a chain becomes ``keras.Sequential``, a graph functional.

    Args:
        model: the spec.
        weights: optional layer name -> weight name -> array (Keras layouts) to set.
        seed: optional seed for the initializers (``keras.utils.set_random_seed``).

    Returns:
        A built ``keras.Model`` whose layers carry the spec's names.
    """
    keras = import_keras()
    if seed is not None:
        keras.utils.set_random_seed(seed)
    if not any(layer.inputs for layer in model.layers):
        kmodel = keras.Sequential(
            [keras.Input(shape=model.input_shape, name="input")] + [keras_layer(l, keras) for l in model.layers],
            name=_keras_name(model.name),
        )
    else:
        inputs = keras.Input(shape=model.input_shape, name="input")
        tensors = {"input": inputs}
        previous = inputs
        for layer in model.layers:
            args = [tensors[n] for n in layer.inputs] if layer.inputs else [previous]
            previous = keras_layer(layer, keras)(args if isinstance(layer, (S.Add, S.Concatenate)) else args[0])
            tensors[layer.name] = previous
        kmodel = keras.Model(inputs, previous, name=_keras_name(model.name))
    if weights:
        set_keras_weights(kmodel, model, weights)
    return kmodel


def _keras_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name) or "model"


def set_keras_weights(kmodel, model: S.Model, weights: dict[str, dict[str, np.ndarray]]) -> None:
    """Set a Keras model's weights from a layerlab weights dict (checked by name and shape)."""
    for info in model.infos:
        expected = info.layer.weight_shapes(info.input_shapes[0])
        if not expected:
            continue
        given = weights.get(info.layer.name)
        if given is None:
            raise SpecError(f"layer '{info.layer.name}' ({info.layer.type}): no weights given; expected {list(expected)}")
        kmodel.get_layer(info.layer.name).set_weights([np.asarray(given[n], np.float32) for n in expected])


def keras_weights(kmodel, model: S.Model | None = None) -> dict[str, dict[str, np.ndarray]]:
    """A Keras model's weights as a layerlab weights dict (layer name -> weight name -> array)."""
    model = model or spec_from_keras(kmodel)
    out: dict[str, dict[str, np.ndarray]] = {}
    for info in model.infos:
        expected = info.layer.weight_shapes(info.input_shapes[0])
        if expected:
            values = kmodel.get_layer(info.layer.name).get_weights()
            out[info.layer.name] = {n: np.asarray(v, np.float32) for n, v in zip(expected, values)}
    return out


def _activation_name(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):  # a serialized function reference
        return str(value.get("config", value).get("name", value.get("class_name", "")) if isinstance(value.get("config"), dict) else value.get("config", ""))
    return getattr(value, "__name__", str(value))


def _init_name(value: Any) -> str | None:
    if isinstance(value, str):
        return value if value in S.INITIALIZERS else None
    if isinstance(value, dict):
        cls = value.get("class_name", "")
        cfg = value.get("config", {}) or {}
        if cls == "VarianceScaling" and cfg.get("scale") == 1.0 and cfg.get("mode") == "fan_avg" and cfg.get("distribution") == "untruncated_normal":
            return "nnc_glorot_normal"
        snake = "".join("_" + c.lower() if c.isupper() else c for c in cls).lstrip("_")
        return snake if snake in S.INITIALIZERS else None
    return None


def spec_from_keras(kmodel) -> S.Model:
    """The layerlab spec of a built Keras 3 model (Sequential or functional)."""
    keras = import_keras()
    default_format = keras.config.image_data_format()
    layers: list[S.Layer] = []
    input_names: dict[int, str] = {}
    for klayer in kmodel.layers:
        cls = type(klayer).__name__
        if cls == "InputLayer":
            continue
        cfg = klayer.get_config()
        name = klayer.name
        data_format = cfg.get("data_format") or default_format
        common: dict[str, Any] = {"name": name}
        if cls == "Conv2D":
            if cfg.get("groups", 1) != 1:
                raise UnsupportedLayerError(f"layer '{name}' (Conv2D): groups={cfg['groups']} is not supported")
            layer: S.Layer = S.Conv2D(
                filters=cfg["filters"], kernel_size=tuple(cfg["kernel_size"]), strides=tuple(cfg["strides"]),
                padding=cfg["padding"], data_format=data_format, dilation_rate=tuple(cfg["dilation_rate"]),
                activation=_activation_name(cfg["activation"]), use_bias=cfg["use_bias"],
                kernel_initializer=_init_name(cfg.get("kernel_initializer")),
                bias_initializer=_init_name(cfg.get("bias_initializer")), **common,
            )
        elif cls in ("MaxPooling2D", "AveragePooling2D"):
            kind = S.MaxPooling2D if cls == "MaxPooling2D" else S.AveragePooling2D
            layer = kind(pool_size=tuple(cfg["pool_size"]), strides=tuple(cfg["strides"] or cfg["pool_size"]), padding=cfg["padding"], data_format=data_format, **common)
        elif cls == "ZeroPadding2D":
            layer = S.ZeroPadding2D(padding=tuple(tuple(p) for p in cfg["padding"]), data_format=data_format, **common)
        elif cls == "Activation":
            layer = S.Activation(activation=_activation_name(cfg["activation"]), **common)
        elif cls == "Flatten":
            layer = S.Flatten(data_format=data_format, **common)
        elif cls == "Dense":
            layer = S.Dense(
                units=cfg["units"], activation=_activation_name(cfg["activation"]), use_bias=cfg["use_bias"],
                kernel_initializer=_init_name(cfg.get("kernel_initializer")),
                bias_initializer=_init_name(cfg.get("bias_initializer")), **common,
            )
        elif cls == "Dropout":
            layer = S.Dropout(rate=float(cfg["rate"]), **common)
        elif cls == "BatchNormalization":
            layer = S.BatchNormalization(axis=int(cfg["axis"]), epsilon=float(cfg["epsilon"]), momentum=float(cfg["momentum"]), center=cfg["center"], scale=cfg["scale"], **common)
        elif cls == "Reshape":
            layer = S.Reshape(target_shape=tuple(cfg["target_shape"]), **common)
        elif cls == "Rescaling":
            layer = S.Rescaling(scale=float(cfg["scale"]), offset=float(cfg["offset"]), **common)
        elif cls in ("Add", "Concatenate"):
            sources = [_source_name(kmodel, t) for t in _node_inputs(klayer)]
            layer = S.Add(inputs=tuple(sources), **common) if cls == "Add" else S.Concatenate(axis=int(cfg["axis"]), inputs=tuple(sources), **common)
        else:
            raise UnsupportedLayerError(f"layer '{name}' ({cls}) is not supported. Supported: {', '.join(S.LAYER_TYPES)}")
        layers.append(layer)
        input_names[id(klayer)] = name
    shape = tuple(int(d) for d in kmodel.inputs[0].shape[1:])
    if any(isinstance(l, (S.Add, S.Concatenate)) for l in layers):
        layers = _with_explicit_inputs(kmodel, layers)
    return S.Model(name=kmodel.name, input_shape=shape, layers=tuple(layers))


def _node_inputs(klayer):
    node = klayer._inbound_nodes[0]
    return list(node.input_tensors)


def _source_name(kmodel, tensor) -> str:
    history = tensor._keras_history
    layer = history.operation if hasattr(history, "operation") else history[0]
    return "input" if type(layer).__name__ == "InputLayer" else layer.name


def _with_explicit_inputs(kmodel, layers: list[S.Layer]) -> list[S.Layer]:
    """In a functional graph, give every layer whose input is not the previous layer its source."""
    import dataclasses

    out = []
    previous = "input"
    for layer in layers:
        if not layer.inputs:
            source = _source_name(kmodel, _node_inputs(kmodel.get_layer(layer.name))[0])
            if source != previous:
                layer = dataclasses.replace(layer, inputs=(source,))
        out.append(layer)
        previous = layer.name
    return out
