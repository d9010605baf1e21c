"""Spec -> Keras model with every argument explicit, and Keras model -> spec.

Keras is imported only here (and only when called). layerlab uses Keras 3 with the JAX backend:
TensorFlow refuses channels_first Conv2D on a CPU ("only supports the NHWC tensor format"), and
with ``jit_compile=True`` Keras 3.15's TF backend adds a conv bias along the wrong axis whenever
the last dimension equals the number of filters. JAX runs both layouts correctly on a CPU.
"""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np

from layerlab import spec as S
from layerlab.errors import SpecError, require
from layerlab.registry import KERAS

BACKEND = "jax"


def training_backend() -> str:
    """The Keras backend to train with: KERAS_BACKEND if set, else torch when installed, else JAX.

    Both run channels_first on a CPU. For seed650 on 2 CPU cores, one training step costs about
    120 us per image on torch (2 threads) against about 240 us on JAX (XLA's CPU convolutions are
    slow for 1-5 channels; benchmarks/TRAINING_LOG.md), so torch trains about twice as fast.
    """
    import importlib.util

    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    return "torch" if importlib.util.find_spec("torch") is not None else BACKEND


@contextlib.contextmanager
def without_tensorflow():
    """Keep TensorFlow out of this process while Keras runs on the JAX or torch backend.

    Keras imports TensorFlow whenever it is installed (``keras.utils.set_random_seed`` seeds it
    too), and TensorFlow 2.21 then prints absl start-up lines ("oneDNN custom operations are
    on", "Could not find cuda drivers") that no environment variable silences, at the top of
    every log. layerlab never needs it there: ``sys.modules[name] = None`` makes ``import tensorflow``
    fail, so Keras sees it as absent. Undone afterwards; a no-op when it is already imported.
    """
    blocked = "tensorflow" not in sys.modules and os.environ.get("KERAS_BACKEND") != "tensorflow"
    if blocked:
        sys.modules["tensorflow"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if blocked and sys.modules.get("tensorflow", 0) is None:
            del sys.modules["tensorflow"]


def import_keras():
    """Import Keras 3, choosing the JAX backend unless KERAS_BACKEND is already set.

    Returns:
        The ``keras`` module.

    Raises:
        MissingExtraError: Keras or JAX is not installed.
    """
    os.environ.setdefault("KERAS_BACKEND", BACKEND)
    # Keras imports TensorFlow when it is installed (for tf.data); keep its C++ logs quiet.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
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


def _init(keras, layer, attr: str, default: str):
    return _initializer(keras, getattr(layer, attr), default)


def _conv_args(keras, layer) -> dict:
    return dict(
        kernel_size=layer.kernel_size, strides=layer.strides, padding=layer.padding, data_format=layer.data_format,
        dilation_rate=layer.dilation_rate, activation=_activation(keras, layer.activation), use_bias=layer.use_bias,
        bias_initializer=_init(keras, layer, "bias_initializer", "zeros"), name=layer.name,
    )


@KERAS.handles(S.Conv2D, S.Conv1D)
def _conv(keras, layer):
    cls = keras.layers.Conv2D if isinstance(layer, S.Conv2D) else keras.layers.Conv1D
    return cls(filters=layer.filters, kernel_initializer=_init(keras, layer, "kernel_initializer", "glorot_uniform"),
               **_conv_args(keras, layer))


@KERAS.handles(S.DepthwiseConv2D)
def _depthwise(keras, layer):
    return keras.layers.DepthwiseConv2D(
        depth_multiplier=layer.depth_multiplier,
        depthwise_initializer=_init(keras, layer, "depthwise_initializer", "glorot_uniform"), **_conv_args(keras, layer),
    )


@KERAS.handles(S.SeparableConv2D)
def _separable(keras, layer):
    return keras.layers.SeparableConv2D(
        filters=layer.filters, depth_multiplier=layer.depth_multiplier,
        depthwise_initializer=_init(keras, layer, "depthwise_initializer", "glorot_uniform"),
        pointwise_initializer=_init(keras, layer, "pointwise_initializer", "glorot_uniform"), **_conv_args(keras, layer),
    )


@KERAS.handles(S.MaxPooling2D, S.AveragePooling2D, S.MaxPooling1D, S.AveragePooling1D)
def _pooling(keras, layer):
    cls = getattr(keras.layers, layer.type)
    return cls(pool_size=layer.pool_size, strides=layer.strides, padding=layer.padding, data_format=layer.data_format,
               name=layer.name)


@KERAS.handles(S.GlobalAveragePooling2D, S.GlobalMaxPooling2D, S.GlobalAveragePooling1D, S.GlobalMaxPooling1D)
def _global_pooling(keras, layer):
    return getattr(keras.layers, layer.type)(data_format=layer.data_format, keepdims=layer.keepdims, name=layer.name)


@KERAS.handles(S.ZeroPadding2D, S.ZeroPadding1D)
def _zero_padding(keras, layer):
    if isinstance(layer, S.ZeroPadding1D):
        return keras.layers.ZeroPadding1D(padding=layer.padding, data_format=layer.data_format, name=layer.name)
    return keras.layers.ZeroPadding2D(padding=layer.padding, data_format=layer.data_format, name=layer.name)


@KERAS.handles(S.Cropping2D)
def _cropping(keras, layer):
    return keras.layers.Cropping2D(cropping=layer.cropping, data_format=layer.data_format, name=layer.name)


@KERAS.handles(S.UpSampling2D)
def _up_sampling(keras, layer):
    return keras.layers.UpSampling2D(size=layer.size, data_format=layer.data_format, interpolation=layer.interpolation,
                                     name=layer.name)


@KERAS.handles(S.Permute)
def _permute(keras, layer):
    return keras.layers.Permute(dims=layer.dims, name=layer.name)


@KERAS.handles(S.Activation)
def _activation_layer(keras, layer):
    return keras.layers.Activation(_activation(keras, layer.activation), name=layer.name)


@KERAS.handles(S.ReLU)
def _relu(keras, layer):
    return keras.layers.ReLU(max_value=layer.max_value, negative_slope=layer.negative_slope, threshold=layer.threshold,
                             name=layer.name)


@KERAS.handles(S.PReLU)
def _prelu(keras, layer):
    return keras.layers.PReLU(alpha_initializer=_init(keras, layer, "alpha_initializer", "zeros"),
                              shared_axes=list(layer.shared_axes) or None, name=layer.name)


@KERAS.handles(S.Flatten)
def _flatten(keras, layer):
    return keras.layers.Flatten(data_format=layer.data_format, name=layer.name)


@KERAS.handles(S.Dense)
def _dense(keras, layer):
    return keras.layers.Dense(
        units=layer.units, activation=_activation(keras, layer.activation), use_bias=layer.use_bias,
        kernel_initializer=_init(keras, layer, "kernel_initializer", "glorot_uniform"),
        bias_initializer=_init(keras, layer, "bias_initializer", "zeros"), name=layer.name,
    )


@KERAS.handles(S.Dropout)
def _dropout(keras, layer):
    return keras.layers.Dropout(rate=layer.rate, name=layer.name)


@KERAS.handles(S.BatchNormalization)
def _batch_normalization(keras, layer):
    return keras.layers.BatchNormalization(axis=layer.axis, momentum=layer.momentum, epsilon=layer.epsilon,
                                           center=layer.center, scale=layer.scale, name=layer.name)


@KERAS.handles(S.Normalization)
def _normalization(keras, layer):
    stats = {} if layer.mean is None else {"mean": list(layer.mean), "variance": list(layer.variance)}
    return keras.layers.Normalization(axis=layer.axis, invert=layer.invert, name=layer.name, **stats)


@KERAS.handles(S.Reshape)
def _reshape(keras, layer):
    return keras.layers.Reshape(target_shape=layer.target_shape, name=layer.name)


@KERAS.handles(S.Rescaling)
def _rescaling(keras, layer):
    return keras.layers.Rescaling(scale=layer.scale, offset=layer.offset, name=layer.name)


@KERAS.handles(S.Add, S.Subtract, S.Multiply, S.Average, S.Maximum, S.Minimum)
def _merge(keras, layer):
    return getattr(keras.layers, layer.type)(name=layer.name)


@KERAS.handles(S.Concatenate)
def _concatenate(keras, layer):
    return keras.layers.Concatenate(axis=layer.axis, name=layer.name)


def keras_layer(layer: S.Layer, keras=None):
    """The Keras layer for one spec layer, every argument written out (the KERAS table's handler)."""
    handler = KERAS.lookup(layer)
    return handler(keras or import_keras(), layer)


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
    klayers = [keras_layer(l, keras) for l in model.layers]
    # With weights given, build with zeros and restore the initializers afterwards: on JAX every
    # random initializer compiles once per weight shape (seconds each), only to be overwritten.
    saved = _swap_initializers(keras, klayers) if weights else []
    if not any(layer.inputs for layer in model.layers):
        kmodel = keras.Sequential([keras.Input(shape=model.input_shape, name="input"), *klayers], name=_keras_name(model.name))
    else:
        inputs = keras.Input(shape=model.input_shape, name="input")
        tensors = {"input": inputs}
        previous = inputs
        for layer, klayer in zip(model.layers, klayers, strict=True):
            args = [tensors[n] for n in layer.inputs] if layer.inputs else [previous]
            previous = klayer(args if layer.merge else args[0])
            tensors[layer.name] = previous
        kmodel = keras.Model(inputs, previous, name=_keras_name(model.name))
    for klayer, attr, initializer in saved:
        setattr(klayer, attr, initializer)
    if weights:
        set_keras_weights(kmodel, model, weights)
    return kmodel


def _swap_initializers(keras, klayers) -> list[tuple[object, str, object]]:
    saved = []
    for klayer in klayers:
        for attr in ("kernel_initializer", "bias_initializer", "depthwise_initializer", "pointwise_initializer",
                     "alpha_initializer"):
            if getattr(klayer, attr, None) is not None:
                saved.append((klayer, attr, getattr(klayer, attr)))
                setattr(klayer, attr, keras.initializers.Zeros())
    return saved


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
        klayer = kmodel.get_layer(info.layer.name)
        klayer.set_weights([np.asarray(given[n], np.float32) for n in expected])
        finalize_statistics(klayer)


def finalize_statistics(klayer) -> None:
    """A Keras Normalization computes with statistics it derives from its weights when it is built
    or loaded (``finalize_state``), not from the weights themselves: after ``set_weights`` it must
    derive them again."""
    if hasattr(klayer, "finalize_state") and type(klayer).__name__ == "Normalization":
        klayer.finalize_state()


def keras_weights(kmodel, model: S.Model | None = None) -> dict[str, dict[str, np.ndarray]]:
    """A Keras model's weights as a layerlab weights dict (layer name -> weight name -> array)."""
    model = model or spec_from_keras(kmodel)
    out: dict[str, dict[str, np.ndarray]] = {}
    for info in model.infos:
        expected = info.layer.weight_shapes(info.input_shapes[0])
        if expected:
            values = kmodel.get_layer(info.layer.name).get_weights()
            out[info.layer.name] = {n: np.asarray(v, np.float32) for n, v in zip(expected, values, strict=True)}
    return out


def spec_layer_from_keras(klayer, data_format: str | None = None) -> S.Layer:
    """The spec of one live Keras layer, through the same config mapping the file loader uses."""
    from layerlab.modelfile.layers import Context, convert

    cls = type(klayer).__name__
    if data_format is None:
        data_format = import_keras().config.image_data_format()
    ctx = Context(name=klayer.name, where=f"Keras layer '{klayer.name}' ({cls})", generation=3, data_format=data_format)
    try:
        return convert(cls, klayer.get_config(), ctx)
    except SpecError as exc:
        raise SpecError(f"{ctx.where}: {exc}") from None


def spec_from_keras(kmodel) -> S.Model:
    """The layerlab spec of a built Keras 3 model (Sequential or functional)."""
    import dataclasses

    data_format = import_keras().config.image_data_format()
    layers: list[S.Layer] = []
    for klayer in kmodel.layers:
        if type(klayer).__name__ == "InputLayer":
            continue
        layer = spec_layer_from_keras(klayer, data_format)
        if layer.merge:
            layer = dataclasses.replace(layer, inputs=tuple(_source_name(kmodel, t) for t in _node_inputs(klayer)))
        layers.append(layer)
    shape = tuple(int(d) for d in kmodel.inputs[0].shape[1:])
    if any(l.merge for l in layers):
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
