"""Run a spec with its weights: one layer (``run_layer``) or a whole model (``run``).

Layers run in the spec's order. A layer with an empty ``inputs`` reads the previous layer's
output (the first reads the model input); otherwise ``inputs`` names earlier layers, ``'input'``
being the model input. Dispatch is on the layer's type, never on its name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from layerlab import spec as S
from layerlab.engine import layers as L
from layerlab.engine.activations import activation
from layerlab.errors import ModelFileError, ShapeError, SpecError

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


def _apply(layer: S.Layer, inputs: list[np.ndarray], weights: Mapping[str, np.ndarray]) -> np.ndarray:
    """The layer's forward pass on already-checked float32 inputs."""
    x = inputs[0]
    if isinstance(layer, S.Conv2D):
        out = L.conv2d(
            x, _weight(layer, weights, "kernel"), _bias(layer, weights), strides=layer.strides,
            padding=layer.padding, data_format=layer.data_format, dilation_rate=layer.dilation_rate,
        )
        return activation(out, layer.activation)
    if isinstance(layer, S.MaxPooling2D):
        return L.max_pooling2d(x, pool_size=layer.pool_size, strides=layer.strides, padding=layer.padding,
                               data_format=layer.data_format)
    if isinstance(layer, S.AveragePooling2D):
        return L.average_pooling2d(x, pool_size=layer.pool_size, strides=layer.strides, padding=layer.padding,
                                   data_format=layer.data_format)
    if isinstance(layer, S.ZeroPadding2D):
        return L.zero_padding2d(x, padding=layer.padding, data_format=layer.data_format)
    if isinstance(layer, S.Activation):
        return activation(x, layer.activation)
    if isinstance(layer, S.Flatten):
        return L.flatten(x, data_format=layer.data_format)
    if isinstance(layer, S.Dense):
        out = L.dense(x, _weight(layer, weights, "kernel"), _bias(layer, weights))
        return activation(out, layer.activation)
    if isinstance(layer, S.Dropout):
        return L.dropout(x)
    if isinstance(layer, S.BatchNormalization):
        return L.batch_normalization(
            x,
            moving_mean=_weight(layer, weights, "moving_mean"),
            moving_variance=_weight(layer, weights, "moving_variance"),
            gamma=_weight(layer, weights, "gamma") if layer.scale else None,
            beta=_weight(layer, weights, "beta") if layer.center else None,
            axis=layer.axis,
            epsilon=layer.epsilon,
        )
    if isinstance(layer, S.Reshape):
        return L.reshape(x, target_shape=layer.target_shape)
    if isinstance(layer, S.Rescaling):
        return L.rescaling(x, scale=layer.scale, offset=layer.offset)
    if isinstance(layer, S.Add):
        return L.add(inputs)
    if isinstance(layer, S.Concatenate):
        return L.concatenate(inputs, axis=layer.axis)
    raise SpecError(
        f"layer '{layer.name}': type {type(layer).__name__} is not supported by the engine. "
        f"Supported: {', '.join(S.LAYER_TYPES)}"
    )


def run_layer(layer: S.Layer, inputs: Sequence[np.ndarray], weights: Mapping[str, np.ndarray]) -> np.ndarray:
    """Run one layer on batch-first arrays with the plain reference functions.

    Args:
        layer: a spec layer (``layerlab.spec.Conv2D`` ...).
        inputs: one array per input of the layer (one, except for Add / Concatenate), each
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
    if not isinstance(layer, (S.Add, S.Concatenate)):
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
        out = _apply(layer, arrays, weights)
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
