"""Output sizes and per-side padding of windowed layers (conv and pooling), in pure ints.

Every part of layerlab (spec validation, engine, probe, exporters) calls this module; nobody
re-derives padding. It imports neither numpy nor keras.

Rules, per spatial axis of length ``n``, window ``kernel``, ``stride``, ``dilation``:

* The dilated window spans ``(kernel - 1) * dilation + 1`` input cells.
* ``padding='valid'``: no padding; ``out = (n - span) // stride + 1``, and 0 when the window
  does not fit (``span > n``): an impossible layer.
* ``padding='same'`` (Keras / TensorFlow): ``out = ceil(n / stride)``;
  ``total = max((out - 1) * stride + span - n, 0)``; ``before = total // 2`` and the odd cell
  goes AFTER (bottom/right): ``after = total - before``.
  # extra pad goes after, as tensorflow/lite/kernels/padding.h and
  # keras/src/ops/operation_utils.py (compute_conv_output_shape) do.
* ``padding='causal'`` (Conv1D only): ``before = span - 1``, ``after = 0``, then 'valid', so
  ``out = ceil(n / stride)`` and output ``t`` reads inputs up to ``t * stride`` only (Keras'
  ``Conv1D`` pads the left side of the sequence by ``dilation_rate * (kernel_size - 1)``).
* What fills the padding is the layer's business, not geometry's: Conv2D pads zeros;
  MaxPooling2D pads cells that can never win (as -inf); AveragePooling2D leaves padded cells out
  of the count it divides by.
"""

from __future__ import annotations

from dataclasses import dataclass

VALID = "valid"
SAME = "same"
CAUSAL = "causal"
PADDINGS = (VALID, SAME)  # 2-D layers and pooling; Conv1D also takes CAUSAL


def dilated_span(kernel: int, dilation: int = 1) -> int:
    """Number of input cells one window covers along an axis: ``(kernel - 1) * dilation + 1``."""
    return (kernel - 1) * dilation + 1


def output_length(n: int, kernel: int, stride: int, padding: str, dilation: int = 1) -> int:
    """Output length along one axis of a conv or pooling layer, as Keras computes it.

    Args:
        n: input length (>= 0).
        kernel: window size (>= 1).
        stride: step between windows (>= 1).
        padding: ``'valid'`` or ``'same'``.
        dilation: dilation rate (>= 1); pooling layers use 1.

    Returns:
        The output length; 0 for a ``'valid'`` window that does not fit.
    """
    _check_axis(n, kernel, stride, dilation)
    if padding in (SAME, CAUSAL):
        return -(-n // stride)  # ceil(n / stride)
    if padding == VALID:
        span = dilated_span(kernel, dilation)
        return 0 if span > n else (n - span) // stride + 1
    raise ValueError(f"padding must be one of {PADDINGS + (CAUSAL,)}, received {padding!r}")


def same_padding(n: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """Padding ``(before, after)`` that Keras 'same' adds along one axis.

    The odd cell goes after (bottom or right). Example: n=5, kernel=2, stride=2 -> out=3,
    total=max(2*2+2-5, 0)=1 -> (0, 1).
    """
    _check_axis(n, kernel, stride, dilation)
    out = -(-n // stride)
    total = max((out - 1) * stride + dilated_span(kernel, dilation) - n, 0)
    return total // 2, total - total // 2


def axis_padding(n: int, kernel: int, stride: int, padding: str, dilation: int = 1) -> tuple[int, int]:
    """Padding ``(before, after)`` along one axis for ``'valid'`` (always (0, 0)), ``'same'`` or ``'causal'``."""
    if padding == VALID:
        _check_axis(n, kernel, stride, dilation)
        return 0, 0
    if padding == SAME:
        return same_padding(n, kernel, stride, dilation)
    if padding == CAUSAL:
        _check_axis(n, kernel, stride, dilation)
        return dilated_span(kernel, dilation) - 1, 0
    raise ValueError(f"padding must be one of {PADDINGS + (CAUSAL,)}, received {padding!r}")


@dataclass(frozen=True)
class Window2D:
    """The full geometry of one 2-D windowed layer on one input size.

    Attributes:
        in_h, in_w: input height and width.
        out_h, out_w: output height and width.
        pad_top, pad_bottom, pad_left, pad_right: cells added on each side.
        kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w: the layer's arguments.
    """

    in_h: int
    in_w: int
    out_h: int
    out_w: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    dilation_h: int = 1
    dilation_w: int = 1

    def window(self, out_y: int, out_x: int) -> list[tuple[int, int]]:
        """Input cells ``(in_y, in_x)`` that output cell ``(out_y, out_x)`` reads, in tap order.

        Coordinates are in the unpadded input: a padded cell has ``in_y`` or ``in_x`` outside
        ``[0, in_h)`` / ``[0, in_w)`` (negative before, >= size after).
        """
        cells = []
        for filter_y in range(self.kernel_h):
            in_y = out_y * self.stride_h - self.pad_top + filter_y * self.dilation_h
            for filter_x in range(self.kernel_w):
                in_x = out_x * self.stride_w - self.pad_left + filter_x * self.dilation_w
                cells.append((in_y, in_x))
        return cells

    def is_padding(self, in_y: int, in_x: int) -> bool:
        """True when ``(in_y, in_x)`` (unpadded coordinates) lies in the padding."""
        return not (0 <= in_y < self.in_h and 0 <= in_x < self.in_w)


def window_2d(
    in_hw: tuple[int, int],
    kernel_size: tuple[int, int],
    strides: tuple[int, int],
    padding: str,
    dilation_rate: tuple[int, int] = (1, 1),
) -> Window2D:
    """Geometry of a 2-D conv or pooling layer on an input of size ``in_hw = (height, width)``."""
    in_h, in_w = in_hw
    kernel_h, kernel_w = kernel_size
    stride_h, stride_w = strides
    dilation_h, dilation_w = dilation_rate
    pad_top, pad_bottom = axis_padding(in_h, kernel_h, stride_h, padding, dilation_h)
    pad_left, pad_right = axis_padding(in_w, kernel_w, stride_w, padding, dilation_w)
    return Window2D(
        in_h=in_h,
        in_w=in_w,
        out_h=output_length(in_h, kernel_h, stride_h, padding, dilation_h),
        out_w=output_length(in_w, kernel_w, stride_w, padding, dilation_w),
        pad_top=pad_top,
        pad_bottom=pad_bottom,
        pad_left=pad_left,
        pad_right=pad_right,
        kernel_h=kernel_h,
        kernel_w=kernel_w,
        stride_h=stride_h,
        stride_w=stride_w,
        dilation_h=dilation_h,
        dilation_w=dilation_w,
    )


def _check_axis(n: int, kernel: int, stride: int, dilation: int) -> None:
    for label, value, low in (("input length", n, 0), ("kernel", kernel, 1), ("stride", stride, 1), ("dilation", dilation, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{label} must be an int >= {low}, received {value!r}")
