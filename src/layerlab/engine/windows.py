"""Plain NumPy forms of the windowed layers added to the engine: depthwise and separable
convolutions, and the 1-D layers (as 2-D layers of height 1).

Same conventions as ``layerlab.engine.layers``: batch first, the layer's own data_format at the
edges, NHWC inside, padding from ``layerlab.geometry``, a loop over kernel taps vectorised over
batch, positions and channels.
"""

from __future__ import annotations

import numpy as np

from layerlab.engine import layers as L
from layerlab.errors import ShapeError

CHANNELS_FIRST = "channels_first"


def depthwise_conv2d(
    x: np.ndarray,
    kernel: np.ndarray,
    bias: np.ndarray | None,
    *,
    strides: tuple[int, int] = (1, 1),
    padding: str = "valid",
    data_format: str = "channels_last",
    dilation_rate: tuple[int, int] = (1, 1),
) -> np.ndarray:
    """Keras DepthwiseConv2D without its activation.

    ``out[n, out_y, out_x, c * M + m] = bias[c * M + m] + sum_{filter_y, filter_x}
    x_pad[n, out_y*stride_h + filter_y*dilation_h, out_x*stride_w + filter_x*dilation_w, c]
    * kernel[filter_y, filter_x, c, m]``: every window reads ONE input channel ``c``.

    Args:
        x: ``(batch, H, W, C)`` or ``(batch, C, H, W)``; float32.
        kernel: ``(kernel_h, kernel_w, C, depth_multiplier)``, Keras' layout.
        bias: ``(C * depth_multiplier,)`` or None.

    Returns:
        ``(batch, out_h, out_w, C * M)`` or ``(batch, C * M, out_h, out_w)``; float32.
    """
    kernel_h, kernel_w, channels, multiplier = kernel.shape
    x_pad, win = L.conv_input(x, kernel.shape, strides, padding, data_format, dilation_rate,
                              f"DepthwiseConv2D (kernel {tuple(kernel.shape)})")
    out = np.zeros((x.shape[0], win.out_h, win.out_w, channels, multiplier), np.float32)  # (N, oh, ow, C, M)
    for filter_y in range(kernel_h):
        for filter_x in range(kernel_w):
            out += L._taps(x_pad, win, filter_y, filter_x)[..., None] * kernel[filter_y, filter_x]
    out = out.reshape(x.shape[0], win.out_h, win.out_w, channels * multiplier)  # channel c * M + m
    if bias is not None:
        out += bias
    return L._from_nhwc(out, data_format)


def separable_conv2d(
    x: np.ndarray,
    depthwise_kernel: np.ndarray,
    pointwise_kernel: np.ndarray,
    bias: np.ndarray | None,
    *,
    strides: tuple[int, int] = (1, 1),
    padding: str = "valid",
    data_format: str = "channels_last",
    dilation_rate: tuple[int, int] = (1, 1),
) -> np.ndarray:
    """Keras SeparableConv2D without its activation: a depthwise conv (no bias), then a 1x1 conv plus bias.

    Args:
        depthwise_kernel: ``(kernel_h, kernel_w, C, M)``; pointwise_kernel: ``(1, 1, C * M, filters)``.

    Returns:
        ``(batch, out_h, out_w, filters)`` (or channels_first); float32.
    """
    middle = depthwise_conv2d(x, depthwise_kernel, None, strides=strides, padding=padding,
                              data_format=data_format, dilation_rate=dilation_rate)
    return L.conv2d(middle, pointwise_kernel, bias, data_format=data_format)


def _as_image(x: np.ndarray, data_format: str, where: str) -> np.ndarray:
    """A sequence ``(N, steps, C)`` / ``(N, C, steps)`` as an image of height 1 (a view)."""
    if x.ndim != 3:
        raise ShapeError(f"{where}: input shape {tuple(x.shape)} is not 3-D, expected (batch, steps, channels) "
                         "or (batch, channels, steps). Add a Reshape layer or fix the input")
    return x[:, :, None, :] if data_format == CHANNELS_FIRST else x[:, None, :, :]


def _as_sequence(x: np.ndarray, data_format: str) -> np.ndarray:
    return x[:, :, 0, :] if data_format == CHANNELS_FIRST else x[:, 0, :, :]


def conv1d(
    x: np.ndarray,
    kernel: np.ndarray,
    bias: np.ndarray | None,
    *,
    strides: tuple[int] = (1,),
    padding: str = "valid",
    data_format: str = "channels_last",
    dilation_rate: tuple[int] = (1,),
) -> np.ndarray:
    """Keras Conv1D without its activation: Conv2D on an image of height 1.

    ``padding='causal'`` adds ``dilation_rate * (kernel_size - 1)`` zeros before the sequence
    and none after (geometry's causal rule), so output step ``t`` reads steps up to ``t * stride``.

    Args:
        x: ``(batch, steps, C)`` or ``(batch, C, steps)``; kernel ``(kernel_size, C, filters)``.

    Returns:
        ``(batch, out_steps, filters)`` or ``(batch, filters, out_steps)``; float32.
    """
    image = _as_image(x, data_format, f"Conv1D (kernel {tuple(kernel.shape)})")
    out = L.conv2d(image, kernel[None], bias, strides=(1, *strides), padding=padding, data_format=data_format,
                   dilation_rate=(1, *dilation_rate))
    return _as_sequence(out, data_format)


def pooling1d(
    x: np.ndarray, *, reduce: str, pool_size: tuple[int], strides: tuple[int] | None = None, padding: str = "valid",
    data_format: str = "channels_last",
) -> np.ndarray:
    """Keras MaxPooling1D (``reduce='max'``) / AveragePooling1D (``'average'``): the 2-D pooling of height 1."""
    strides = pool_size if strides is None else strides
    image = _as_image(x, data_format, f"{'Max' if reduce == 'max' else 'Average'}Pooling1D")
    pool = L.max_pooling2d if reduce == "max" else L.average_pooling2d
    out = pool(image, pool_size=(1, *pool_size), strides=(1, *strides), padding=padding, data_format=data_format)
    return _as_sequence(out, data_format)
