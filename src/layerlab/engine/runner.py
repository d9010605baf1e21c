"""Run a spec with its weights: one layer (``run_layer``) or a whole model (``run``).

Layers run in the spec's order. A layer with an empty ``inputs`` reads the previous layer's
output (the first reads the model input); otherwise ``inputs`` names earlier layers, ``'input'``
being the model input. Dispatch is on the layer's type, never on its name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from layerlab import spec as S
from layerlab.engine import elementwise as E
from layerlab.engine import layers as L
from layerlab.engine import windows as W
from layerlab.engine.activations import activation
from layerlab.errors import ModelFileError, ShapeError, SpecError
from layerlab.layers.merge import ELEMENTWISE as ELEMENTWISE_MERGES
from layerlab.registry import ENGINE

MODEL_INPUT = "input"


def _weight(layer: S.Layer, weights: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    try:
        return np.asarray(weights[name], dtype=np.float32)
    except KeyError:
        raise ModelFileError(
            f"layer '{layer.name}' ({layer.type}): weight '{name}' is missing, received {sorted(weights)}"
        ) from None


def _bias(layer, weights: Mapping[str, np.ndarray]) -> np.ndarray | None:
    return _weight(layer, weights, "bias") if layer.use_bias else None


def _act(layer, out: np.ndarray) -> np.ndarray:
    return activation(out, layer.activation)


@ENGINE.handles(S.Conv2D)
def _conv2d(layer: S.Conv2D, inputs, weights):
    return _act(layer, L.conv2d(inputs[0], _weight(layer, weights, "kernel"), _bias(layer, weights), strides=layer.strides,
                                padding=layer.padding, data_format=layer.data_format, dilation_rate=layer.dilation_rate))


@ENGINE.handles(S.Conv1D)
def _conv1d(layer: S.Conv1D, inputs, weights):
    return _act(layer, W.conv1d(inputs[0], _weight(layer, weights, "kernel"), _bias(layer, weights), strides=layer.strides,
                                padding=layer.padding, data_format=layer.data_format, dilation_rate=layer.dilation_rate))


@ENGINE.handles(S.DepthwiseConv2D)
def _depthwise(layer: S.DepthwiseConv2D, inputs, weights):
    out = W.depthwise_conv2d(inputs[0], _weight(layer, weights, "kernel"), _bias(layer, weights), strides=layer.strides,
                             padding=layer.padding, data_format=layer.data_format, dilation_rate=layer.dilation_rate)
    return _act(layer, out)


@ENGINE.handles(S.SeparableConv2D)
def _separable(layer: S.SeparableConv2D, inputs, weights):
    out = W.separable_conv2d(
        inputs[0], _weight(layer, weights, "depthwise_kernel"), _weight(layer, weights, "pointwise_kernel"),
        _bias(layer, weights), strides=layer.strides, padding=layer.padding, data_format=layer.data_format,
        dilation_rate=layer.dilation_rate,
    )
    return _act(layer, out)


@ENGINE.handles(S.MaxPooling2D, S.AveragePooling2D)
def _pooling2d(layer, inputs, weights):
    pool = L.max_pooling2d if layer.reduce == "max" else L.average_pooling2d
    return pool(inputs[0], pool_size=layer.pool_size, strides=layer.strides, padding=layer.padding, data_format=layer.data_format)


@ENGINE.handles(S.MaxPooling1D, S.AveragePooling1D)
def _pooling1d(layer, inputs, weights):
    return W.pooling1d(inputs[0], reduce=layer.reduce, pool_size=layer.pool_size, strides=layer.strides,
                       padding=layer.padding, data_format=layer.data_format)


@ENGINE.handles(S.GlobalAveragePooling2D, S.GlobalMaxPooling2D, S.GlobalAveragePooling1D, S.GlobalMaxPooling1D)
def _global_pooling(layer, inputs, weights):
    return E.global_pooling(inputs[0], reduce=layer.reduce, axes=layer.spatial_axes(), keepdims=layer.keepdims)


@ENGINE.handles(S.ZeroPadding2D)
def _zero_padding2d(layer, inputs, weights):
    return L.zero_padding2d(inputs[0], padding=layer.padding, data_format=layer.data_format)


@ENGINE.handles(S.ZeroPadding1D)
def _zero_padding1d(layer, inputs, weights):
    return E.zero_padding1d(inputs[0], padding=layer.padding, data_format=layer.data_format)


@ENGINE.handles(S.Cropping2D)
def _cropping2d(layer, inputs, weights):
    return E.cropping2d(inputs[0], cropping=layer.cropping, data_format=layer.data_format)


@ENGINE.handles(S.UpSampling2D)
def _up_sampling2d(layer, inputs, weights):
    return E.up_sampling2d(inputs[0], size=layer.size, data_format=layer.data_format)


@ENGINE.handles(S.Permute)
def _permute(layer, inputs, weights):
    return E.permute(inputs[0], dims=layer.dims)


@ENGINE.handles(S.Activation)
def _activation(layer, inputs, weights):
    return activation(inputs[0], layer.activation)


@ENGINE.handles(S.ReLU)
def _relu(layer, inputs, weights):
    return E.relu(inputs[0], max_value=layer.max_value, negative_slope=layer.negative_slope, threshold=layer.threshold)


@ENGINE.handles(S.PReLU)
def _prelu(layer, inputs, weights):
    return E.prelu(inputs[0], _weight(layer, weights, "alpha"))


@ENGINE.handles(S.Flatten)
def _flatten(layer, inputs, weights):
    return L.flatten(inputs[0], data_format=layer.data_format)


@ENGINE.handles(S.Dense)
def _dense(layer, inputs, weights):
    return _act(layer, L.dense(inputs[0], _weight(layer, weights, "kernel"), _bias(layer, weights)))


@ENGINE.handles(S.Dropout)
def _dropout(layer, inputs, weights):
    return L.dropout(inputs[0])


@ENGINE.handles(S.BatchNormalization)
def _batch_normalization(layer, inputs, weights):
    return L.batch_normalization(
        inputs[0],
        moving_mean=_weight(layer, weights, "moving_mean"),
        moving_variance=_weight(layer, weights, "moving_variance"),
        gamma=_weight(layer, weights, "gamma") if layer.scale else None,
        beta=_weight(layer, weights, "beta") if layer.center else None,
        axis=layer.axis,
        epsilon=layer.epsilon,
    )


@ENGINE.handles(S.Normalization)
def _normalization(layer, inputs, weights):
    try:
        mean, variance = layer.statistics(weights)
    except KeyError as exc:
        raise ModelFileError(f"layer '{layer.name}' (Normalization): weight {exc} is missing, received {sorted(weights)}") from None
    return L.normalization(inputs[0], mean=mean, variance=variance, axis=layer.axis, invert=layer.invert)


@ENGINE.handles(S.Reshape)
def _reshape(layer, inputs, weights):
    return L.reshape(inputs[0], target_shape=layer.target_shape)


@ENGINE.handles(S.Rescaling)
def _rescaling(layer, inputs, weights):
    return L.rescaling(inputs[0], scale=layer.scale, offset=layer.offset)


@ENGINE.handles(*ELEMENTWISE_MERGES)
def _merge(layer, inputs, weights):
    return E.merge(inputs, operation=layer.operation)


@ENGINE.handles(S.Concatenate)
def _concatenate(layer, inputs, weights):
    return L.concatenate(inputs, axis=layer.axis)


def run_layer(layer: S.Layer, inputs: Sequence[np.ndarray], weights: Mapping[str, np.ndarray]) -> np.ndarray:
    """Run one layer on batch-first arrays with the plain reference functions.

    Args:
        layer: a spec layer (``layerlab.spec.Conv2D`` ...).
        inputs: one array per input of the layer (one, except for merges: Add, Concatenate, ...), each
            ``(batch, *shape)`` in the layer's data_format; converted to float32.
        weights: this layer's weights by Keras name (``{'kernel': ..., 'bias': ...}``), Keras
            layouts; empty for layers without weights.

    Returns:
        The layer's output, float32, ``(batch, *layer.output_shape(shape))``.

    Raises:
        ShapeError: an input does not fit the layer (rank, size, channels).
        ModelFileError: a weight the layer needs is missing.
    """
    arrays = [np.asarray(a, dtype=np.float32) for a in inputs]
    if not arrays:
        raise ShapeError(f"layer '{layer.name}' ({layer.type}): received no input arrays")
    if any(a.ndim < 2 for a in arrays):
        raise ShapeError(f"layer '{layer.name}' ({layer.type}): input shapes {[a.shape for a in arrays]} have no "
                         "batch axis. Add one: x[None]")
    forward = ENGINE.lookup(layer)  # the layer's forward pass; an unsupported type says so before anything runs
    if not layer.merge:
        if len(arrays) != 1:
            raise ShapeError(f"layer '{layer.name}' ({layer.type}) takes one input, received {len(arrays)}")
        try:
            expected = layer.output_shape(tuple(arrays[0].shape[1:]))
        except SpecError as exc:
            raise ShapeError(f"layer '{layer.name}' ({layer.type}): input shape {tuple(arrays[0].shape)} does not "
                             f"fit: {exc}") from None
    else:
        expected = None
    try:
        out = forward(layer, arrays, weights)
    except ShapeError as exc:
        raise ShapeError(f"layer '{layer.name}': {exc}") from None
    if expected is not None and tuple(out.shape[1:]) != tuple(expected):
        # The spec's shape rules and the engine disagree: a bug, not a user error.
        raise AssertionError(f"layer '{layer.name}': engine output {out.shape[1:]} != spec {expected}")
    return out.astype(np.float32, copy=False)


def check_model_input(spec: S.Model, x: np.ndarray) -> np.ndarray:
    """``x`` as float32 after checking it is ``(batch, *spec.input_shape)``.

    Raises:
        ShapeError: wrong rank or size, naming the expected shape.
    """
    x = np.asarray(x)
    expected = tuple(spec.input_shape)
    if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected:
        hint = " (missing batch axis? use x[None])" if tuple(x.shape) == expected else ""
        raise ShapeError(
            f"model '{spec.name}': input shape {tuple(x.shape)} does not fit, expected "
            f"(batch, {', '.join(map(str, expected))}){hint}. Reshape the input to the model's data_format"
        )
    if not np.issubdtype(x.dtype, np.number):
        raise ShapeError(f"model '{spec.name}': input dtype {x.dtype} is not numeric. Pass a float32 array")
    return x.astype(np.float32, copy=False)


def run_reference(
    spec: S.Model, weights: Mapping[str, Mapping[str, np.ndarray]], x: np.ndarray, *, trace: bool = False
) -> np.ndarray | dict[str, np.ndarray]:
    """Run ``spec`` layer by layer with the plain functions (see ``layerlab.engine.run``)."""
    x = check_model_input(spec, x)
    outputs: dict[str, np.ndarray] = {}
    previous = x
    for layer in spec.layers:
        if layer.inputs:
            inputs = [x if name == MODEL_INPUT else outputs[name] for name in layer.inputs]
        else:
            inputs = [previous]
        previous = run_layer(layer, inputs, weights.get(layer.name, {}))
        outputs[layer.name] = previous
    return outputs if trace else previous
