"""One plain, readable NumPy function per Keras layer: the engine's reference path.

Conventions for every function here:

* ``x`` is float32 with the batch axis first, in the layer's own ``data_format``:
  ``channels_last`` = ``(batch, height, width, channels)``, ``channels_first`` =
  ``(batch, channels, height, width)``. Windowed layers convert to channels_last at the edges
  (``x_nhwc``), compute there, and convert back.
* Hyper-parameters are keyword-only and carry Keras' names.
* Padding always comes from ``layerlab.geometry.window_2d``; what fills it is the layer's business:
  Conv2D pads zeros, MaxPooling2D pads cells that can never win (``-inf``), AveragePooling2D
  leaves padded cells out of the count it divides by.
* Windowed layers loop over the kernel taps (``filter_y, filter_x``) and vectorise over batch,
  output positions and channels, as TensorFlow Lite Micro's reference kernels index them.

The faster path in ``layerlab.engine.fast`` is tested against these functions and against Keras.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from layerlab import geometry
from layerlab.errors import ShapeError
from layerlab.layers.normalization import normalization_spread, scale_shift

CHANNELS_FIRST = "channels_first"


def _to_nhwc(x: np.ndarray, data_format: str) -> np.ndarray:
    return x.transpose(0, 2, 3, 1) if data_format == CHANNELS_FIRST else x  # NCHW -> NHWC


def _from_nhwc(x_nhwc: np.ndarray, data_format: str) -> np.ndarray:
    return x_nhwc.transpose(0, 3, 1, 2) if data_format == CHANNELS_FIRST else x_nhwc  # NHWC -> NCHW


def _check_rank4(x: np.ndarray, where: str) -> None:
    if x.ndim != 4:
        raise ShapeError(f"{where}: input shape {tuple(x.shape)} is not 4-D, expected (batch, height, width, channels) "
                         "or (batch, channels, height, width). Add a Reshape layer or fix the input")


def _window(x_nhwc: np.ndarray, size, strides, padding, dilation_rate, where: str) -> geometry.Window2D:
    """Geometry of a windowed layer on ``x_nhwc``; ShapeError when the window does not fit."""
    win = geometry.window_2d(x_nhwc.shape[1:3], tuple(size), tuple(strides), padding, tuple(dilation_rate))
    if win.out_h < 1 or win.out_w < 1:
        raise ShapeError(
            f"{where}: window {tuple(size)} (dilation {tuple(dilation_rate)}) does not fit input "
            f"{tuple(x_nhwc.shape[1:3])} with padding={padding!r} (output would be {win.out_h}x{win.out_w}). "
            "Use padding='same' or a larger input"
        )
    return win


def _taps(x_pad: np.ndarray, win: geometry.Window2D, filter_y: int, filter_x: int) -> np.ndarray:
    """The input cells that kernel tap ``(filter_y, filter_x)`` reads for every output position.

    ``x_pad`` is NHWC already padded by ``win``; the result is ``(batch, out_h, out_w, channels)``
    (a strided view: row ``out_y`` reads padded row ``out_y * stride_h + filter_y * dilation_h``).
    """
    in_y = filter_y * win.dilation_h
    in_x = filter_x * win.dilation_w
    return x_pad[
        :,
        in_y : in_y + (win.out_h - 1) * win.stride_h + 1 : win.stride_h,
        in_x : in_x + (win.out_w - 1) * win.stride_w + 1 : win.stride_w,
        :,
    ]


def _pad(x_nhwc: np.ndarray, win: geometry.Window2D, value: float) -> np.ndarray:
    return np.pad(
        x_nhwc,
        ((0, 0), (win.pad_top, win.pad_bottom), (win.pad_left, win.pad_right), (0, 0)),
        constant_values=value,
    )


def conv_input(x: np.ndarray, kernel_shape: tuple[int, ...], strides, padding: str, data_format: str, dilation_rate,
               where: str) -> tuple[np.ndarray, geometry.Window2D]:
    """What every convolution does first: ``x`` as NHWC, checked against the kernel's
    ``(kernel_h, kernel_w, in_channels, ...)``, padded with zeros as geometry's window says.

    Returns:
        ``(x_pad, window)``: x_pad ``(batch, H + pads, W + pads, C)``.
    """
    _check_rank4(x, where)
    x_nhwc = _to_nhwc(x, data_format)
    kernel_h, kernel_w, in_channels = kernel_shape[:3]
    if x_nhwc.shape[3] != in_channels:
        raise ShapeError(f"{where}: input has {x_nhwc.shape[3]} channels, the kernel expects {in_channels}. "
                         "Check data_format and the input layout")
    win = _window(x_nhwc, (kernel_h, kernel_w), strides, padding, dilation_rate, where)
    return _pad(x_nhwc, win, 0.0), win  # convolutions pad zeros


def conv2d(
    x: np.ndarray,
    kernel_hwio: np.ndarray,
    bias: np.ndarray | None,
    *,
    strides: tuple[int, int] = (1, 1),
    padding: str = "valid",
    data_format: str = "channels_last",
    dilation_rate: tuple[int, int] = (1, 1),
) -> np.ndarray:
    """Keras Conv2D without its activation: a cross-correlation plus bias.

    ``out[n, out_y, out_x, f] = bias[f] + sum_{filter_y, filter_x, c}
    x_pad[n, out_y*stride_h + filter_y*dilation_h, out_x*stride_w + filter_x*dilation_w, c]
    * kernel_hwio[filter_y, filter_x, c, f]``, where ``x_pad`` is ``x`` with zeros added as
    geometry's 'same' padding says (the odd cell after: bottom/right).

    Args:
        x: ``(batch, H, W, C)`` or, for channels_first, ``(batch, C, H, W)``; float32.
        kernel_hwio: ``(kernel_h, kernel_w, C, filters)``, Keras' layout.
        bias: ``(filters,)`` or None (``use_bias=False``).
        strides, padding, data_format, dilation_rate: as Keras.

    Returns:
        ``(batch, out_h, out_w, filters)`` or ``(batch, filters, out_h, out_w)``; float32.
    """
    kernel_h, kernel_w, _, filters = kernel_hwio.shape
    x_pad, win = conv_input(x, kernel_hwio.shape, strides, padding, data_format, dilation_rate,
                            f"Conv2D (kernel {tuple(kernel_hwio.shape)} HWIO)")
    out = np.zeros((x.shape[0], win.out_h, win.out_w, filters), dtype=np.float32)  # (N, out_h, out_w, F)
    for filter_y in range(kernel_h):
        for filter_x in range(kernel_w):
            # (N, out_h, out_w, C) @ (C, F) -> (N, out_h, out_w, F)
            out += _taps(x_pad, win, filter_y, filter_x) @ kernel_hwio[filter_y, filter_x]
    if bias is not None:
        out += bias
    return _from_nhwc(out, data_format)


def max_pooling2d(
    x: np.ndarray,
    *,
    pool_size: tuple[int, int] = (2, 2),
    strides: tuple[int, int] | None = None,
    padding: str = "valid",
    data_format: str = "channels_last",
) -> np.ndarray:
    """Keras MaxPooling2D: the maximum of each window, per channel.

    'same' padding cells can never win: they are filled with ``-inf``. Every window holds at
    least one real cell (geometry's padding before is at most ``(pool - 1) // 2``), so no output
    is ``-inf``. ``strides=None`` means ``strides=pool_size``, as in Keras.

    Args:
        x: ``(batch, H, W, C)`` or ``(batch, C, H, W)``; float32.

    Returns:
        ``(batch, out_h, out_w, C)`` or ``(batch, C, out_h, out_w)``; float32.
    """
    strides = pool_size if strides is None else strides
    where = f"MaxPooling2D (pool_size {tuple(pool_size)})"
    _check_rank4(x, where)
    x_nhwc = _to_nhwc(x, data_format)
    win = _window(x_nhwc, pool_size, strides, padding, (1, 1), where)
    x_pad = _pad(x_nhwc, win, -np.inf)  # padded cells never win
    out = np.full((x.shape[0], win.out_h, win.out_w, x_nhwc.shape[3]), -np.inf, dtype=np.float32)
    for filter_y in range(win.kernel_h):
        for filter_x in range(win.kernel_w):
            np.maximum(out, _taps(x_pad, win, filter_y, filter_x), out=out)
    return _from_nhwc(out, data_format)


def average_pooling2d(
    x: np.ndarray,
    *,
    pool_size: tuple[int, int] = (2, 2),
    strides: tuple[int, int] | None = None,
    padding: str = "valid",
    data_format: str = "channels_last",
) -> np.ndarray:
    """Keras AveragePooling2D: the mean of the real cells of each window.

    'same' padding cells are left out of the count: an output at a border divides the sum of its
    real cells by how many real cells its window holds (Keras' ``window_counts``), never by
    ``pool_h * pool_w``.

    Args:
        x: ``(batch, H, W, C)`` or ``(batch, C, H, W)``; float32.

    Returns:
        ``(batch, out_h, out_w, C)`` or ``(batch, C, out_h, out_w)``; float32.
    """
    strides = pool_size if strides is None else strides
    where = f"AveragePooling2D (pool_size {tuple(pool_size)})"
    _check_rank4(x, where)
    x_nhwc = _to_nhwc(x, data_format)
    win = _window(x_nhwc, pool_size, strides, padding, (1, 1), where)
    x_pad = _pad(x_nhwc, win, 0.0)  # zeros add nothing to the sum...
    real = _pad(np.ones((1, win.in_h, win.in_w, 1), np.float32), win, 0.0)  # ...and 0 to the count
    total = np.zeros((x.shape[0], win.out_h, win.out_w, x_nhwc.shape[3]), dtype=np.float32)
    count = np.zeros((1, win.out_h, win.out_w, 1), dtype=np.float32)
    for filter_y in range(win.kernel_h):
        for filter_x in range(win.kernel_w):
            total += _taps(x_pad, win, filter_y, filter_x)
            count += _taps(real, win, filter_y, filter_x)
    return _from_nhwc(total / count, data_format)


def zero_padding2d(
    x: np.ndarray,
    *,
    padding: tuple[tuple[int, int], tuple[int, int]] = ((1, 1), (1, 1)),
    data_format: str = "channels_last",
) -> np.ndarray:
    """Keras ZeroPadding2D: add ``((pad_top, pad_bottom), (pad_left, pad_right))`` rows/columns of 0.

    Returns:
        ``(batch, H + pad_top + pad_bottom, W + pad_left + pad_right, C)`` (or channels_first).
    """
    _check_rank4(x, "ZeroPadding2D")
    (pad_top, pad_bottom), (pad_left, pad_right) = padding
    x_nhwc = _to_nhwc(x, data_format)
    out = np.pad(x_nhwc, ((0, 0), (pad_top, pad_bottom), (pad_left, pad_right), (0, 0)))
    return _from_nhwc(out, data_format)


def flatten(x: np.ndarray, *, data_format: str = "channels_last") -> np.ndarray:
    """Keras Flatten: ``(batch, ...) -> (batch, prod(...))``.

    Keras quirk (2 and 3): with ``data_format='channels_first'`` and an input of rank >= 3 it
    first moves axis 1 to the end, so a ``(batch, C, H, W)`` input flattens in H-W-C order, the
    same order as the channels_last model, not C-H-W.
    """
    if data_format == CHANNELS_FIRST and x.ndim > 2:
        x = np.moveaxis(x, 1, -1)  # (N, C, H, W) -> (N, H, W, C)
    return x.reshape(x.shape[0], -1)  # (N, H*W*C)


def dense(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """Keras Dense without its activation: ``x @ kernel + bias``.

    Args:
        x: ``(batch, in_features)``; float32.
        kernel: ``(in_features, units)``, Keras' layout.
        bias: ``(units,)`` or None.

    Returns:
        ``(batch, units)``; float32.
    """
    if x.ndim != 2 or x.shape[1] != kernel.shape[0]:
        raise ShapeError(f"Dense (kernel {tuple(kernel.shape)}): input shape {tuple(x.shape)} does not fit, "
                         f"expected (batch, {kernel.shape[0]}). Add a Flatten layer or fix the input")
    out = x @ kernel  # (N, in) @ (in, units) -> (N, units)
    if bias is not None:
        out += bias
    return out


def batch_normalization(
    x: np.ndarray,
    *,
    moving_mean: np.ndarray,
    moving_variance: np.ndarray,
    gamma: np.ndarray | None = None,
    beta: np.ndarray | None = None,
    axis: int = -1,
    epsilon: float = 1e-3,
) -> np.ndarray:
    """Keras BatchNormalization at inference, in Keras' own operation order.

    ``inv = gamma / sqrt(moving_variance + epsilon)``; ``y = x * inv + (beta - moving_mean * inv)``
    along ``axis`` (counted with the batch axis, as Keras does). ``gamma``/``beta`` are None for
    ``scale=False`` / ``center=False``.

    Returns:
        float32 array of ``x``'s shape.
    """
    axis = axis if axis >= 0 else x.ndim + axis
    if not 1 <= axis < x.ndim or x.shape[axis] != moving_mean.shape[0]:
        raise ShapeError(f"BatchNormalization (axis={axis}, {moving_mean.shape[0]} features): input shape "
                         f"{tuple(x.shape)} does not fit. Check axis and data_format")
    shape = [1] * x.ndim
    shape[axis] = -1
    inv, shift = scale_shift(moving_mean, moving_variance, gamma, beta, epsilon=epsilon)
    return x * inv.reshape(shape) + shift.reshape(shape)


def normalization(x: np.ndarray, *, mean: np.ndarray, variance: np.ndarray, axis: int = -1,
                  invert: bool = False) -> np.ndarray:
    """Keras Normalization along ``axis`` (counted with the batch axis), as Keras computes it in
    float32: ``(x - mean) / max(sqrt(variance), 1e-7)``; with ``invert``,
    ``mean + x * max(sqrt(variance), 1e-7)``.

    Returns:
        float32 array of ``x``'s shape.
    """
    axis = axis if axis >= 0 else x.ndim + axis
    if not 1 <= axis < x.ndim or x.shape[axis] != mean.shape[0]:
        raise ShapeError(f"Normalization (axis={axis}, {mean.shape[0]} features): input shape {tuple(x.shape)} "
                         "does not fit. Check axis and data_format")
    shape = [1] * x.ndim
    shape[axis] = -1
    mean = np.asarray(mean, np.float32).reshape(shape)
    spread = normalization_spread(variance).reshape(shape)
    return mean + x * spread if invert else (x - mean) / spread


def reshape(x: np.ndarray, *, target_shape: Sequence[int]) -> np.ndarray:
    """Keras Reshape: ``(batch, ...) -> (batch, *target_shape)`` in C order (one -1 allowed)."""
    try:
        return x.reshape(x.shape[0], *target_shape)
    except ValueError:
        raise ShapeError(f"Reshape (target_shape {tuple(target_shape)}): input shape {tuple(x.shape)} "
                         "holds a different number of values. Fix target_shape") from None


def rescaling(x: np.ndarray, *, scale: float = 1.0, offset: float = 0.0) -> np.ndarray:
    """Keras Rescaling: ``x * scale + offset`` in float32."""
    return x * np.float32(scale) + np.float32(offset)


def dropout(x: np.ndarray) -> np.ndarray:
    """Keras Dropout at inference: the identity."""
    return x


def add(inputs: Sequence[np.ndarray]) -> np.ndarray:
    """Keras Add: the element-wise sum of inputs of one shape."""
    shapes = {tuple(a.shape) for a in inputs}
    if len(inputs) < 2 or len(shapes) != 1:
        raise ShapeError(f"Add: needs two or more inputs of one shape, received shapes {[tuple(a.shape) for a in inputs]}")
    out = inputs[0].copy()
    for other in inputs[1:]:
        out += other
    return out


def concatenate(inputs: Sequence[np.ndarray], *, axis: int = -1) -> np.ndarray:
    """Keras Concatenate along ``axis`` (counted with the batch axis, as Keras does)."""
    try:
        return np.concatenate(inputs, axis=axis)
    except ValueError as exc:
        raise ShapeError(f"Concatenate (axis={axis}): input shapes {[tuple(a.shape) for a in inputs]} do not fit ({exc})") from None
