"""The fast path's layer steps on batch-last arrays: banded-matmul Conv2D and clipped-view pooling.

Arrays here are ``x_hwcn (H, W, C, batch)``: the batch axis LAST, so pooling views, biases and
activations run over long contiguous runs of ``C * batch`` floats instead of NumPy's slow inner
loops over a few channels.

* Conv2D is a banded ("Toeplitz") matrix product. Output row ``out_y`` reads ``kernel_h`` input
  rows; a block of ``B`` neighbouring output columns reads ``span_w = (B - 1) * stride_w +
  (kernel_w - 1) * dilation_w + 1`` neighbouring input columns, one contiguous run in HWCN memory.
  One strided copy gathers those slabs into ``patches (out_h * blocks, K, batch)`` and one batched
  matmul with the banded matrix ``(B * filters, K)`` built from the kernel computes every output.
  ``B = 1`` is im2col; a larger ``B`` multiplies some zeros but gives BLAS wider matrices. ``B``
  is chosen per layer by a cost rule measured on a 2-core x86 machine: any ``B`` gives the same
  outputs up to float32 rounding. Zero padding ('same') is explicit, from ``layerlab.geometry``.
* Pooling takes the maximum (or sum) of strided views, each tap clipped to the output cells whose
  input cell is real, so 'same' padding is never materialised: padded cells never win a max and
  are not counted in a mean (Keras' ``window_counts``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from layerlab import geometry
from layerlab import spec as S
from layerlab.engine import activations as A

# Block size rule, fitted on the 2-core machine of BENCHMARKS.md (OpenBLAS 0.3.31, Haswell
# kernels) over seven conv shapes: the time of a banded conv is close to its multiply-accumulates
# (zeros and filler columns included) with every matrix row counted NARROW columns wider, since
# BLAS runs narrow matrices at a fraction of its speed. It picks within 2% of the best B measured.
NARROW = 24
_IN_PLACE: dict[str, Callable[..., np.ndarray]] = {
    "tanh": np.tanh,
    "relu": lambda x, out: np.maximum(x, np.float32(0), out=out),
}


def activate(x: np.ndarray, name: str, owned: bool, axis: int) -> np.ndarray:
    """Activation ``name``; softmax along ``axis``; in place only on a buffer the plan made."""
    if name == "linear":
        return x
    if name == "softmax":
        return A.softmax(x, axis=axis)
    if owned and name in _IN_PLACE:
        return _IN_PLACE[name](x, out=x)
    return A.activation(x, name)


def pad_hw(x_hwcn: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """Zeros around the two spatial axes (``np.pad`` without its per-call Python overhead)."""
    h, w = x_hwcn.shape[:2]
    out = np.zeros((top + h + bottom, left + w + right, *x_hwcn.shape[2:]), np.float32)
    out[top : top + h, left : left + w] = x_hwcn
    return out


def _strided(x: np.ndarray, shape: tuple[int, ...], strides: tuple[int, ...]) -> np.ndarray:
    """A read-only strided view of C-contiguous ``x`` (``as_strided`` without its overhead)."""
    view = np.ndarray(shape, x.dtype, buffer=x, strides=strides)
    view.flags.writeable = False
    return view


@dataclass(frozen=True)
class BandConv:
    """Conv2D (+ its activation) on ``x_hwcn`` as one batched banded matmul (module docstring)."""

    layer: S.Conv2D
    win: geometry.Window2D
    channels: int
    block: int  # B: output columns per matrix row
    blocks: int  # ceil(out_w / B)
    span_w: int  # input columns one block reads
    pad_right: int  # geometry's pad_right plus the columns that fill the last block
    softmax_axis: int
    add_bias: bool  # False when the following max pool adds it (see Pool)

    @property
    def k(self) -> int:
        """Patch length: ``kernel_h * span_w * channels``."""
        return self.win.kernel_h * self.span_w * self.channels

    def band(self, kernel_hwio: np.ndarray) -> np.ndarray:
        """``(B * filters, kernel_h * span_w * C)``: ``kernel[fy, fx, c, f]`` at row ``(j, f)`` and
        column ``(fy, j * stride_w + fx * dilation_w, c)`` for block column ``j``."""
        w, block = self.win, self.block
        kernel_h, kernel_w, channels, filters = kernel_hwio.shape
        band = np.zeros((block, filters, kernel_h, self.span_w, channels), np.float32)
        j, fx = np.divmod(np.arange(block * kernel_w), kernel_w)
        # (j, column) pairs are distinct; the advanced indices come first: (B*kw, F, kh, C).
        band[j, :, :, j * w.stride_w + fx * w.dilation_w, :] = kernel_hwio[:, fx].transpose(1, 3, 0, 2)
        return band.reshape(block * filters, -1)

    def __call__(self, x_hwcn: np.ndarray, band: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
        """The conv of ``x_hwcn`` with a band of ``band()`` and ``bias (filters,)`` (None: none)."""
        w, layer = self.win, self.layer
        if w.pad_top or w.pad_bottom or w.pad_left or self.pad_right:
            # Conv2D pads zeros; the extra right columns only feed outputs that are cut off below.
            x_hwcn = pad_hw(x_hwcn, w.pad_top, w.pad_bottom, w.pad_left, self.pad_right)
        else:
            x_hwcn = np.ascontiguousarray(x_hwcn)
        _, width, channels, n = x_hwcn.shape
        item = x_hwcn.itemsize
        row = width * channels * n * item
        k = w.kernel_h * self.span_w * channels
        rows = w.out_h * self.blocks
        if self.blocks == 1 and self.span_w == width and w.dilation_h == 1 and n > 1:
            # Each output row's slab is already one matrix (kernel_h whole rows): no copy.
            patches = _strided(x_hwcn, (w.out_h, k, n), (w.stride_h * row, n * item, item))
        else:
            slabs = _strided(  # (out_h, blocks, kernel_h, span_w * C * N): a view
                x_hwcn,
                (w.out_h, self.blocks, w.kernel_h, self.span_w * channels * n),
                (w.stride_h * row, self.block * w.stride_w * channels * n * item, w.dilation_h * row, item),
            )
            patches = np.ascontiguousarray(slabs).reshape(rows, k, n)  # (M, K, N)
        if n == 1:
            out = patches.reshape(rows, k) @ band.T  # (M, K) @ (K, B*F): one BLAS call for one image
        else:
            out = band @ patches  # (B*F, K) @ (M, K, N) -> (M, B*F, N)
        out = out.reshape(w.out_h, self.blocks * self.block, layer.filters, n)  # (out_h, out_w', F, N)
        if self.blocks * self.block != w.out_w:
            out = out[:, : w.out_w]  # (out_h, out_w, F, N): a view without the filler columns
        if self.add_bias and bias is not None:
            out += bias[:, None]
        return activate(out, layer.activation, True, self.softmax_axis)


def _conv_cost(win: geometry.Window2D, channels: int, filters: int, block: int) -> int:
    """Relative cost of a banded conv with ``B = block``: ``rows * K * (B * filters + NARROW)``."""
    blocks = -(-win.out_w // block)
    span_w = (block - 1) * win.stride_w + (win.kernel_w - 1) * win.dilation_w + 1
    rows, k = win.out_h * blocks, win.kernel_h * span_w * channels
    return rows * k * (block * filters + NARROW)


def plan_conv(layer: S.Conv2D, shape_hwc: tuple[int, int, int], softmax_axis: int, add_bias: bool = True) -> BandConv:
    """The banded conv step for ``layer`` on inputs of shape ``shape_hwc`` (no batch axis).

    Args:
        layer: the Conv2D spec.
        shape_hwc: ``(height, width, channels)`` of its input.
        softmax_axis: the internal axis a softmax activation runs over (the spec's last axis).
        add_bias: False when the following max pooling step adds the bias instead.
    """
    h, w, c = shape_hwc
    win = geometry.window_2d((h, w), layer.kernel_size, layer.strides, layer.padding, layer.dilation_rate)
    padded_w = win.pad_left + w + win.pad_right
    block = min(range(1, win.out_w + 1), key=lambda b: (_conv_cost(win, c, layer.filters, b), b))
    blocks = -(-win.out_w // block)
    span_w = (block - 1) * win.stride_w + (win.kernel_w - 1) * win.dilation_w + 1
    needed = (blocks - 1) * block * win.stride_w + span_w  # padded width the last block reads
    pad_right = win.pad_right + max(needed - padded_w, 0)
    return BandConv(layer, win, c, block, blocks, span_w, pad_right, softmax_axis, add_bias)


def _tap_ranges(win: geometry.Window2D, filter_y: int, filter_x: int):
    """For one pooling tap: the output cells whose input cell is real, and those input cells.

    Returns ``(out_rows, out_cols, in_rows, in_cols)`` slices, or None when the tap only ever
    reads padding. Output ``out_y`` reads input ``out_y * stride_h - pad_top + filter_y``.
    """

    def axis(out_n, n, stride, pad, tap):
        first = max(0, -(-(pad - tap) // stride))  # smallest output whose input is >= 0
        last = min(out_n - 1, (n - 1 + pad - tap) // stride)  # largest output whose input is < n
        if last < first:
            return None
        start = first * stride - pad + tap
        return slice(first, last + 1), slice(start, start + (last - first) * stride + 1, stride)

    ys = axis(win.out_h, win.in_h, win.stride_h, win.pad_top, filter_y)
    xs = axis(win.out_w, win.in_w, win.stride_w, win.pad_left, filter_x)
    if ys is None or xs is None:
        return None
    return ys[0], xs[0], ys[1], xs[1]


class Pool:
    """MaxPooling2D / AveragePooling2D on ``x_hwcn`` by clipped strided views (no padded copy).

    A Conv2D right before a max pool may leave its bias to the pool, which adds it after taking the
    maximum: exact, since float addition is monotonic (``max(a_i) + b == max(a_i + b)`` bit for
    bit), and it touches the pooled cells only.
    """

    def __init__(self, win: geometry.Window2D, average: bool):
        self.win = win
        self.average = average
        taps = [_tap_ranges(win, fy, fx) for fy in range(win.kernel_h) for fx in range(win.kernel_w)]
        self.taps = [t for t in taps if t is not None]
        count = np.zeros((win.out_h, win.out_w, 1, 1), np.float32)
        for out_y, out_x, _, _ in self.taps:
            count[out_y, out_x] += 1  # real cells only: Keras' window_counts
        self.count = count
        # The first tap usually reads a real cell for every output (no padding before): copy it
        # instead of starting from -inf (max: every window holds a real cell) or 0 (sum).
        first = self.taps[0]
        self.first_covers_all = (first[0] == slice(0, win.out_h) and first[1] == slice(0, win.out_w))

    def __call__(self, x_hwcn: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        """The pooling; ``bias`` (a max pool's conv bias, see the class) added to the result."""
        w = self.win
        combine = np.add if self.average else np.maximum
        taps = self.taps
        if self.first_covers_all:
            out = np.array(x_hwcn[taps[0][2], taps[0][3]], dtype=np.float32)  # (out_h, out_w, C, N)
            taps = taps[1:]
        else:
            out = np.full((w.out_h, w.out_w, *x_hwcn.shape[2:]), 0.0 if self.average else -np.inf, np.float32)
        for out_y, out_x, in_y, in_x in taps:
            target = out[out_y, out_x]
            combine(target, x_hwcn[in_y, in_x], out=target)
        if self.average:
            out /= self.count
        if bias is not None:
            out += bias[:, None]
        return out
