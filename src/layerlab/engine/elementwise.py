"""Plain NumPy forms of the engine's element-wise, merge, global-pooling and data-movement layers.

Batch first, the layer's own data_format; float32 in and out. Formulas follow Keras' own code
(``keras/src/activations/activations.py`` for relu, ``layers/merging`` for the merges).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from layerlab.errors import ShapeError

CHANNELS_FIRST = "channels_first"


def relu(x: np.ndarray, *, max_value: float | None = None, negative_slope: float = 0.0, threshold: float = 0.0) -> np.ndarray:
    """Keras ReLU in Keras' order of operations.

    ``positive = x * (x > threshold)`` (``relu(x)`` for threshold 0), clipped to
    ``[0, max_value]`` when max_value is set; ``y = positive - negative_slope * relu(threshold - x)``.
    """
    zero = np.float32(0)
    if threshold != 0:
        positive = x * (x > np.float32(threshold)).astype(np.float32)
    else:
        positive = np.maximum(x, zero)
    if max_value is not None:
        positive = np.clip(positive, zero, np.float32(max_value))
    if negative_slope != 0:
        positive = positive - np.float32(negative_slope) * np.maximum(np.float32(threshold) - x, zero)
    return positive.astype(np.float32, copy=False)


def prelu(x: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Keras PReLU: ``relu(x) - alpha * relu(-x)``; ``alpha`` broadcasts over the shared axes."""
    if alpha.shape != x.shape[1:] and alpha.ndim != x.ndim - 1:
        raise ShapeError(f"PReLU (alpha {tuple(alpha.shape)}): input shape {tuple(x.shape)} does not fit")
    zero = np.float32(0)
    return np.maximum(x, zero) - alpha[None] * np.maximum(-x, zero)


MERGES = ("add", "subtract", "multiply", "average", "maximum", "minimum")


def merge(inputs: Sequence[np.ndarray], *, operation: str) -> np.ndarray:
    """Keras' element-wise merges, left to right as Keras folds them, an input of size 1 on an
    axis broadcast along it (same rank: Keras' rule for inputs of one rank).

    add: ``x0 + x1 + ...``; subtract: ``x0 - x1`` (two inputs); multiply: ``x0 * x1 * ...``;
    average: ``(x0 + x1 + ...) / n``; maximum / minimum: element-wise.
    """
    shapes = [tuple(a.shape) for a in inputs]
    try:
        if len(inputs) < 2 or len({len(s) for s in shapes}) != 1:
            raise ValueError
        shape = np.broadcast_shapes(*shapes)
    except ValueError:
        raise ShapeError(f"{operation}: needs two or more inputs of one rank whose sizes agree or are 1 on each axis, "
                         f"received shapes {shapes}") from None
    if operation == "subtract":
        if len(inputs) != 2:
            raise ShapeError(f"subtract: needs exactly 2 inputs, received {len(inputs)}")
        return inputs[0] - inputs[1]
    fold = {"add": np.add, "average": np.add, "multiply": np.multiply, "maximum": np.maximum, "minimum": np.minimum}[operation]
    out = np.array(np.broadcast_to(inputs[0], shape))
    for other in inputs[1:]:
        fold(out, other, out=out)
    if operation == "average":
        out /= np.float32(len(inputs))
    return out


def global_pooling(x: np.ndarray, *, reduce: str, axes: tuple[int, ...], keepdims: bool = False) -> np.ndarray:
    """Keras Global{Average,Max}Pooling1D/2D: the mean or maximum over ``axes`` (batch axis counted)."""
    if max(axes) >= x.ndim:
        raise ShapeError(f"global pooling over axes {axes}: input shape {tuple(x.shape)} has too few axes")
    if reduce == "max":
        return np.max(x, axis=axes, keepdims=keepdims)
    return np.mean(x, axis=axes, keepdims=keepdims, dtype=np.float32)


def _spatial_axes(data_format: str) -> tuple[int, int]:
    return (2, 3) if data_format == CHANNELS_FIRST else (1, 2)


def up_sampling2d(x: np.ndarray, *, size: tuple[int, int], data_format: str = "channels_last") -> np.ndarray:
    """Keras UpSampling2D(interpolation='nearest'): every row repeated size[0] times, every column size[1] times."""
    axis_h, axis_w = _spatial_axes(data_format)
    return np.repeat(np.repeat(x, size[0], axis=axis_h), size[1], axis=axis_w)


def cropping2d(x: np.ndarray, *, cropping: tuple[tuple[int, int], tuple[int, int]], data_format: str = "channels_last") -> np.ndarray:
    """Keras Cropping2D: drop ``((top, bottom), (left, right))`` rows and columns."""
    (top, bottom), (left, right) = cropping
    axis_h, _ = _spatial_axes(data_format)
    h, w = x.shape[axis_h], x.shape[axis_h + 1]
    index = [slice(None)] * x.ndim
    index[axis_h] = slice(top, h - bottom)
    index[axis_h + 1] = slice(left, w - right)
    return np.ascontiguousarray(x[tuple(index)])


def zero_padding1d(x: np.ndarray, *, padding: tuple[int, int], data_format: str = "channels_last") -> np.ndarray:
    """Keras ZeroPadding1D: ``(left, right)`` zero steps around the sequence."""
    pads = [(0, 0)] * x.ndim
    pads[2 if data_format == CHANNELS_FIRST else 1] = tuple(padding)
    return np.pad(x, pads)


def permute(x: np.ndarray, *, dims: tuple[int, ...]) -> np.ndarray:
    """Keras Permute: axes reordered by ``dims`` (1-based, the batch axis stays first)."""
    if x.ndim != len(dims) + 1:
        raise ShapeError(f"Permute (dims {dims}): input shape {tuple(x.shape)} has rank {x.ndim - 1}, expected {len(dims)}")
    return np.ascontiguousarray(x.transpose(0, *dims))
