"""The fast path's layer steps on ``(H, C, W, batch)`` arrays: convolutions as row-batched matmuls,
pooling by clipped strided views.

Arrays here are ``x (H, C, W, N)``: rows, then channels, then columns with the batch innermost.
One channel of one image row, ``(W, N)``, is a contiguous run, and so is any range of
neighbouring columns; the next channel of the same row starts ``W * N`` floats later and the next
row ``C * W * N`` floats later, so rows ``(fy, c)`` of a kernel column are evenly spaced. Hence:

* Conv2D ('views'): output row ``y`` is ``out[y] (F, out_w * N) = sum over fx of A_fx (F, kh * C)
  @ x_pad[y * stride_h : ..., :, fx * dilation_w : ...]`` where the right operand is a strided
  view ``(kh * C, out_w * N)`` of the padded input: no im2col copy, no band of zeros, and
  matrices ``out_w * N`` columns wide even for a few images. One batched matmul per kernel
  column (the batch is the output rows); the columns after the first add up in a scratch buffer.
  A width stride s first copies the input once into s blocks of every s-th column, so each
  tap column is again a contiguous range (in its block). Needs dilation_h 1. ``transposed``: the
  same views multiplied as ``view^T (out_w * N, kh * C) @ A_fx^T`` into ``(out_h, out_w, N, F)``,
  which OpenBLAS runs faster for some shapes; only pools and a Flatten read that layout.
* Conv2D ('im2col'), for a height dilation, few input values per kernel column
  (``kh * C <= _IM2COL_ROWS``, where BLAS runs a thin matrix slowly) or a strided 1-wide kernel
  (ResNet's shortcuts): one strided copy gathers ``(out_h, kw * kh * C, out_w * N)`` and one
  batched matmul computes the rows. Without a height stride or dilation the copy is only ``kw``
  shifted copies of the padded rows, which one view reads as every output row's columns.
* Conv2D ('winograd'), for a 3x3 kernel without stride or dilation on many channels in a small
  image: Winograd's F(2x2, 3x3), 16 batched ``(F, C) @ (C, tiles * N)`` products for each block
  of 2x2 outputs (16 multiply-adds where the direct conv makes 36), the input and output
  transforms as sums and differences of whole tile rows and columns (``Conv._winograd``).
* DepthwiseConv2D: per channel, an ``(out_h, H)`` matrix holding one kernel column's taps on
  its diagonals (zeros elsewhere: 'same' height padding and the height stride are in it) times
  the channel's rows ``(H, out_w * N)``, batched over the channels through strided views;
  without height padding, in row blocks each only as wide as the rows it reads. Width padding
  is a copy; a width stride is one strided copy per kernel column. Past
  ``H > _DEPTHWISE_ROWS * kh`` the zeros cost more than a loop over the taps, which adds clipped
  views instead.
* Products go through ``matmul``, which makes one larger than OpenBLAS' unpacked small-product
  kernels take in parts of its rows or columns.
* Pooling takes the maximum (or sum) of strided views, each tap clipped to the output cells whose
  input cell is real, so 'same' padding is never materialised: padded cells never win a max and
  are not counted in a mean (Keras' ``window_counts``). After a conv that wrote its output in
  column phases, window-cell blocks or transposed, the pool reads that order (``Pool``).

Steps write into buffers from ``space`` (see ``layerlab.engine.fast``): ``space.out(shape)`` for
the step's result, ``space.tmp(i, shape)`` for scratch that is dead once the step returns.
Thresholds were measured on the 2-core x86 machine of BENCHMARKS.md (OpenBLAS 0.3.31, one
thread): any choice gives the same outputs up to float32 rounding.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from layerlab import geometry
from layerlab import spec as S
from layerlab.engine import activations as A

_IM2COL_ROWS = 12  # kh * C at or below this: im2col (C=3, 3x3, 31 images: 383 us against 455 for views)
# Winograd for a 3x3 conv where the saved multiply-adds (per pixel, 20 of 36 for each channel pair)
# outweigh the transforms (per pixel, about 12 passes over C and F values), C * F / (C + F) at
# least this, and its tiles (4 H W max(C, F) floats an image) stay in cache. 16 images, one
# thread: 8x8x64 -> 64 (32) 34.5 us an image against 46.8; 16x16x64 (32): 169 / 185; 8x8x32 -> 64
# (21.3): 23.3 / 24.6; 16x16x32 (16): 46 / 49 or 51 / 49; 32x32x32: 309 / 196; 16x16x16: 23 / 15;
# and keras224's 14x14x64 -> 32 (21.3) left its whole model no faster (0.985x, 15 alternating rounds).
_WINOGRAD_CHANNELS = 24
_WINOGRAD_FLOATS = 1 << 16
_DEPTHWISE_ROWS = 16  # depthwise via diagonal matrices while H <= this * kh (H=34, 3x3: 687 / 960 us)
_ITEM = 4  # bytes per float32
_BLOCK = 1 << 16  # floats: the largest constant block kept for ReLU and ReLU6
_BATCH_BLOCK = 8  # images per copy when the batch axis is strided (4: 102 us, 8: 61, 16: 90)
_FAR_IMAGES = 8192  # bytes from one image to the next from which _copy takes a few images at a time


@functools.lru_cache(maxsize=64)
def _filled(shape: tuple[int, ...], value: float) -> np.ndarray:
    block = np.full(shape, value, np.float32)
    block.flags.writeable = False
    return block


def bound(shape: tuple[int, ...], value: float) -> np.ndarray | np.float32:
    """``value`` for a maximum or minimum with an array of ``shape``: a block of the whole shape
    where that is small, else as wide as the trailing axes where that is: NumPy's maximum and
    minimum with a scalar run 3x slower than with an array (97 us against 29 us on 229k floats),
    and with one broadcast row 2.3x slower than with a whole block (a Dense's 64 x 128 output:
    2.4 against 1.0 us)."""
    if math.prod(shape) <= _BLOCK:
        return _filled(tuple(shape), float(value))
    trailing = tuple(shape[1:])
    if len(shape) >= 2 and math.prod(trailing) <= _BLOCK:
        return _filled(trailing, float(value))
    return np.float32(value)


def relu_into(x: np.ndarray, out: np.ndarray, max_value: float | None = None) -> np.ndarray:
    """``min(max(x, 0), max_value)`` into ``out`` (which may be ``x``): Keras' ReLU and ReLU6."""
    np.maximum(x, bound(x.shape, 0.0), out=out)
    if max_value is not None:
        np.minimum(out, bound(out.shape, np.float32(max_value)), out=out)
    return out


_IN_PLACE: dict[str, Callable[..., np.ndarray]] = {"tanh": np.tanh, "relu": relu_into}
IN_PLACE_ACTIVATIONS = frozenset(_IN_PLACE)  # activate() runs these in place on a buffer the plan made


def add_channel_bias(out: np.ndarray, bias: np.ndarray, space) -> None:
    """``out (rows, C, cols) += bias (C,)``, through a ``(C, cols)`` block of the bias kept by
    ``space``: one broadcast row per channel runs NumPy's inner loop ``cols`` floats at a time,
    twice as slow (DS-CNN's 28 x 128 x 64: 75 us against 28 + 3 us)."""
    out += space.block(bias, out.shape[1:], column=True)


def activate(x: np.ndarray, name: str, owned: bool, axis: int) -> np.ndarray:
    """Activation ``name``; softmax along ``axis``; in place only on a buffer the plan made."""
    if name == "linear":
        return x
    if name == "softmax":
        return A.softmax(x, axis=axis)
    if owned and name in _IN_PLACE:
        return _IN_PLACE[name](x, out=x)
    return A.activation(x, name)


def pad_hw(x: np.ndarray, top: int, bottom: int, left: int, right: int, out: np.ndarray | None = None) -> np.ndarray:
    """``x (H, C, W, N)`` with zeros added around axes 0 and 2, into ``out`` when given."""
    h, c, w, n = x.shape
    shape = (top + h + bottom, c, left + w + right, n)
    if out is None:
        out = np.empty(shape, np.float32)
    # Zeros on the border only: filling the whole buffer first doubled what a pad writes.
    out[:top] = 0
    out[top + h :] = 0
    out[top : top + h, :, :left] = 0
    out[top : top + h, :, left + w :] = 0
    _copy(out[top : top + h, :, left : left + w], x)
    return out


def _copy(target: np.ndarray, x: np.ndarray) -> None:
    """``target[...] = x`` for ``(..., N)`` arrays with the batch innermost.

    Where x's batch axis is strided by ``_FAR_IMAGES`` bytes or more (the model input seen
    batch-last, images of 2k floats or more), a few images at a time: reading one float of each
    image in turn then touches a new memory page every time (16 images of 32 x 32 x 3: 2.5 us an
    image against 4.7 in one copy; 32 of 96 x 96: 5.4 against 18). Nearer images copy faster in
    one go (64 of 30 x 40: 0.46 against 0.96; 128 of 28 x 28: 0.40 against 0.80). Where the batch axis is contiguous but the runs of ``N`` floats do not join into
    longer ones (every stride-th column, a column block), each run is copied as one ``N * 4``
    byte item: NumPy then moves a run per element instead of looping over ``N`` floats
    (16 images, 32 x 16 x 16 columns of every other one: 26 us against 52)."""
    n, item = x.shape[-1], x.itemsize
    if abs(x.strides[-1]) >= _FAR_IMAGES and n > _BATCH_BLOCK:
        for start in range(0, n, _BATCH_BLOCK):
            target[..., start : start + _BATCH_BLOCK] = x[..., start : start + _BATCH_BLOCK]
    elif (x.dtype == target.dtype and x.strides[-1] == item and target.strides[-1] == item
          and (_short_runs(x) or _short_runs(target))):
        runs = np.dtype((np.void, n * item))
        np.copyto(target.view(runs)[..., 0], x.view(runs)[..., 0])
    else:
        target[...] = x


def _short_runs(a: np.ndarray) -> bool:
    """Whether ``a``'s contiguous runs are its last axis alone (the one before it is strided)."""
    return a.ndim >= 2 and a.shape[-2] > 1 and a.strides[-2] != a.shape[-1] * a.itemsize


def _phases(x: np.ndarray, step: int, top: int, left: int, out: np.ndarray) -> None:
    """``x (H, C, W, N)`` with ``top`` and ``left`` rows and columns of zeros before it (and as
    many after as ``out`` holds), split into ``step`` blocks of every step-th padded column
    (``out (step, Hp, C, wide, N)``): one copy from ``x``, zeros on the borders, no padded copy
    in between."""
    h, _, width, _ = x.shape
    wide = out.shape[3]
    out[:, :top] = 0
    out[:, top + h :] = 0
    for phase in range(step):
        # padded column phase + j * step is input column phase + j * step - left
        first = max(0, -(-(left - phase) // step))
        last = min(wide - 1, (width - 1 + left - phase) // step)
        rows = out[phase, top : top + h]
        rows[:, :, :first] = 0
        rows[:, :, last + 1 :] = 0
        if last >= first:
            start = phase + first * step - left
            _copy(rows[:, :, first : last + 1], x[:, :, start : start + (last - first) * step + 1 : step])


# OpenBLAS' SkylakeX kernels (chosen on CPUs with AVX-512) multiply a product of at most about a
# million multiply-adds without packing its operands first, and larger ones 15-20% slower a
# multiply-add at the sizes of a conv's products (one thread, Zen 4: (128, 129) @ (129, 64) ran
# at 47 GMAC/s whole and 56 in two halves of 64 rows). So ``matmul`` splits such a product: in
# parts of at least 64 of its rows where it has enough, else in parts of 32 columns (a Zen 5,
# keras224's 14 rows of (32, 192) @ (192, 224): 85-88 GMAC/s whole, 100 in halves of 16 rows,
# 110 in parts of 32 columns, 101-105 in parts of 64, 77-81 in parts of 16; the DS-CNN's
# (128, 129) @ (129, 64): 1.25x whole in halves, 1.22x in parts of 32 columns). A Dense's
# product (the batch's rows times the kernel) is left whole (fast._DenseWork): on a Zen 5 its
# packed form is the faster, (64, 640) @ (640, 128) at 99 GMAC/s whole and 90 in eight parts of
# 8 rows (ad01 1.08x whole, keras231's (32, 7200) @ (7200, 128) 1.13x), where on a Zen 4 the
# parts were the faster (47.5 against 52, ad01 +1.8%).
_SMALL_KERNELS = {"SkylakeX", "Cooperlake", "SapphireRapids"}
_SMALL_PRODUCT = 1_000_000
_PART_ROWS = 64  # the fewest rows of a part split by rows, unless the columns are too few to split
_PART_COLUMNS = 32


@functools.cache
def blas_libraries() -> tuple[Any, list]:
    """threadpoolctl's controller and the BLAS libraries it sees in this process (looked up
    once), or ``(None, [])`` without threadpoolctl (optional: layerlab[fast])."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None, []
    controller = ThreadpoolController()
    return controller, controller.select(user_api="blas").lib_controllers


@functools.cache
def small_product() -> int | None:
    """The most multiply-adds a product may have for ``matmul`` to leave it whole: a million with
    OpenBLAS' SkylakeX kernels (threadpoolctl names them), None (never split) otherwise or
    without threadpoolctl."""
    blas = blas_libraries()[1]
    known = [getattr(library, "architecture", None) for library in blas if library.internal_api == "openblas"]
    return _SMALL_PRODUCT if known and all(name in _SMALL_KERNELS for name in known) else None


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``np.matmul(a, b, out=out)``, in parts where a product is larger than ``small_product()``:
    of ``a``'s rows where parts of at least ``_PART_ROWS`` fit, or where ``b`` has at most
    ``_PART_COLUMNS`` columns (then parts of a multiple of 8 rows), else of ``_PART_COLUMNS`` of
    ``b``'s columns. Each output element is still one whole sum."""
    limit = small_product()
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    if limit is None or m * k * n <= limit:
        return np.matmul(a, b, out=out)
    rows = m // -(-m * k * n // limit) // 8 * 8
    if rows >= _PART_ROWS or n <= _PART_COLUMNS:
        rows = max(8, rows)
        for start in range(0, m, rows):
            np.matmul(a[..., start : start + rows, :], b, out=out[..., start : start + rows, :])
        return out
    for start in range(0, n, _PART_COLUMNS):
        np.matmul(a, b[..., start : start + _PART_COLUMNS], out=out[..., start : start + _PART_COLUMNS])
    return out


def _reshaped(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``x`` reshaped as a view, never a copy (a step writing through it must reach ``x``):
    raises AttributeError where NumPy would have to copy."""
    view = x.view()
    view.shape = shape
    return view


def _view(x: np.ndarray, offset: int, shape: tuple[int, ...], strides: tuple[int, ...]) -> np.ndarray:
    """A read-only view of C-contiguous float32 ``x``; ``offset`` and ``strides`` in floats."""
    view = np.ndarray(shape, np.float32, buffer=x, offset=offset * _ITEM, strides=tuple(s * _ITEM for s in strides))
    view.flags.writeable = False
    return view


def _padded(x: np.ndarray, top: int, bottom: int, left: int, right: int, space) -> np.ndarray:
    """``x`` padded into scratch buffer 0, or ``x`` itself when no padding is needed and it is
    C-contiguous (a view of the model input may not be)."""
    if not (top or bottom or left or right) and x.flags.c_contiguous:
        return x
    h, c, w, n = x.shape
    return pad_hw(x, top, bottom, left, right, out=space.tmp(0, (top + h + bottom, c, left + w + right, n)))


@dataclass(frozen=True)
class Conv:
    """Conv2D (+ its activation) on ``x (H, C, W, N)``; see the module docstring for the two forms."""

    layer: S.Conv2D
    win: geometry.Window2D
    channels: int
    im2col: bool
    softmax_axis: int
    add_bias: bool  # False: the max pool after it adds the bias and runs the activation (see Pool)
    extended: bool = False  # the input has a channel of ones after its last (see fast._ConvWork); no padding
    winograd: bool = False  # 3x3, stride 1: Winograd F(2x2, 3x3) (see ``_winograd``)
    phased: bool = False  # unfold form: output columns even ones first, then odd ones (for Pool.phased)
    quartered: bool = False  # phased, and the rows too: four blocks, one per 2x2 window cell (for Pool.quartered)
    transposed: bool = False  # views form: products X^T W^T, output (out_h, out_w, N, F) (see fast._transpose_tails)

    def matrices(self, kernel_hwio: np.ndarray, ones_column: np.ndarray | None = None) -> np.ndarray:
        """The kernel as this step multiplies it: ``(kw, F, kh * C)`` (views) or ``(F, kw * kh * C)``
        (im2col), rows ``(fy, c)`` as the input views hold them. For an extended input, a channel
        C whose weights are zero but for tap (0, 0), which holds ``ones_column`` (the bias: that
        channel is all ones)."""
        if self.extended:
            kh, kw, c, f = kernel_hwio.shape
            wider = np.zeros((kh, kw, c + 1, f), np.float32)
            wider[:, :, :c] = kernel_hwio
            if ones_column is not None:
                wider[0, 0, c] = ones_column
            kernel_hwio = wider
        kh, kw, c, f = kernel_hwio.shape
        if self.winograd:  # G g G^T for each (input, output) channel pair: (16, 1, F, C)
            g = np.einsum("ai,ijcf,bj->abfc", _WINOGRAD_G, kernel_hwio.astype(np.float64), _WINOGRAD_G)
            return np.ascontiguousarray(g.reshape(16, 1, f, c).astype(np.float32))
        if self.unfold:
            return np.ascontiguousarray(kernel_hwio.transpose(3, 0, 1, 2).reshape(f, kh * kw * c))
        if self.im2col:
            return np.ascontiguousarray(kernel_hwio.transpose(3, 1, 0, 2).reshape(f, kw * kh * c))
        if self.transposed:  # (kw, kh * C, F): each kernel column's W^T
            return np.ascontiguousarray(kernel_hwio.transpose(1, 0, 2, 3).reshape(kw, kh * c, f))
        return np.ascontiguousarray(kernel_hwio.transpose(1, 3, 0, 2).reshape(kw, f, kh * c))

    @property
    def unfold(self) -> bool:
        """The im2col form as ``kw`` shifted copies of the padded rows ``(Hp, kw, C, out_w, N)``,
        which a view reads as rows ``(fy, fx, c)``: a third of the copying for a 3x3 kernel
        (ResNet-8's first conv, 16 images: 14.1 against 15.7 us an image). Needs stride_h and
        dilation_h 1 (a height stride would copy rows no output reads)."""
        w = self.win
        return self.im2col and w.stride_h == 1 and w.dilation_h == 1 and w.kernel_w > 1

    def scratch_floats(self) -> int:
        """Scratch floats per image: the padded input (or its phase blocks), and the im2col matrix
        or the sum buffer."""
        w, c = self.win, self.channels
        hp, wp = w.pad_top + w.in_h + w.pad_bottom, w.pad_left + w.in_w + w.pad_right
        padded = hp * c * (-(-wp // w.stride_w) * w.stride_w)  # the padded input, or its phase blocks
        if self.winograd:  # scratch 0: phases, then products; 1: column sums, then row sums; 2: tiles, then outputs
            f, tiles = self.layer.filters, w.out_h * w.out_w // 4
            return (max(hp * c * wp, 16 * tiles * f) + max(4 * hp * c * w.out_w // 2, 8 * tiles * f)
                    + 16 * tiles * max(c, f) + w.out_h * f * w.out_w)
        if self.unfold:
            return hp * c * wp + hp * w.kernel_w * c * w.out_w
        if self.im2col:
            return hp * c * wp + w.out_h * w.kernel_h * w.kernel_w * c * w.out_w
        return padded + w.out_h * self.layer.filters * w.out_w

    def __call__(self, x: np.ndarray, matrices: np.ndarray, bias: np.ndarray | None, space,
                 into: np.ndarray | None = None) -> np.ndarray:
        """The conv of ``x``, written into ``into`` (a ``(out_h, F, out_w, N)`` view) when given."""
        w, filters = self.win, self.layer.filters
        if self.winograd:
            return self._winograd(x, matrices, bias, space, into)
        strided = not self.im2col and w.stride_w > 1
        if self.extended:  # unpadded, ones channel included
            xp = x
            hp, c, width, n = xp.shape
        elif strided:  # the phase blocks are made from x itself (no padded copy first)
            _, c, _, n = x.shape
            hp, width = w.pad_top + w.in_h + w.pad_bottom, w.pad_left + w.in_w + w.pad_right
        else:
            xp = _padded(x, w.pad_top, w.pad_bottom, w.pad_left, w.pad_right, space)
            hp, c, width, n = xp.shape
        row = c * width * n  # floats from one padded input row to the next
        cols = w.out_w * n
        if self.transposed:
            out = space.out((w.out_h, cols, filters))
        else:
            out = space.out((w.out_h, filters, cols)) if into is None else _reshaped(into, (w.out_h, filters, cols))
        if self.unfold:
            kh, kw = w.kernel_h, w.kernel_w
            shifted = space.tmp(1, (hp, kw, c, w.out_w, n))
            last = (w.out_w - 1) * w.stride_w + 1
            half = -(-w.out_w // 2)
            for fx in range(kw):
                start = fx * w.dilation_w
                if not self.phased:
                    _copy(shifted[:, fx], xp[:, :, start : start + last : w.stride_w])
                    continue
                _copy(shifted[:, fx, :, :half], xp[:, :, start : start + 2 * half - 1 : 2])  # outputs 0, 2, ...
                if w.out_w > 1:  # outputs 1, 3, ...
                    _copy(shifted[:, fx, :, half:], xp[:, :, start + 1 : start + 2 * (w.out_w // 2) : 2])
            view = _view(shifted, 0, (w.out_h, kh * kw * c, cols), (kw * c * cols, cols, 1))
            if self.quartered:
                return self._quarters(view, matrices, space)
            matmul(matrices, view, out)
        elif self.im2col:
            kh, kw = w.kernel_h, w.kernel_w
            gathered = space.tmp(1, (w.out_h, kw * kh * c, cols))
            _copy(gathered.reshape(w.out_h, kw, kh, c, w.out_w, n), _view(
                xp, 0, (w.out_h, kw, kh, c, w.out_w, n),
                (w.stride_h * row, w.dilation_w * n, w.dilation_h * row, width * n, w.stride_w * n, 1)))
            matmul(matrices, gathered, out)
        else:
            step = w.stride_w
            if strided:  # one copy: every step-th column in a block per phase, (step, Hp, C, ceil(Wp / step), N)
                width = -(-width // step)
                source = space.tmp(2, (step, hp, c, width, n))
                _phases(x, step, w.pad_top, w.pad_left, source)
                row = c * width * n
            else:
                source = xp
            shape, strides = (w.out_h, w.kernel_h * c, cols), (w.stride_h * row, width * n, 1)
            part = space.tmp(1, out.shape) if w.kernel_w > 1 else None
            for fx in range(w.kernel_w):
                column = fx * w.dilation_w  # in the padded input; in its phase block when strided
                offset = (column % step) * hp * row + (column // step) * n
                view = _view(source, offset, shape, strides)
                if self.transposed:
                    matmul(view.transpose(0, 2, 1), matrices[fx], out if fx == 0 else part)
                else:
                    matmul(matrices[fx], view, out if fx == 0 else part)
                if fx:
                    out += part
        if self.transposed:  # (out_h, out_w * N, F): the bias along the last axis
            if self.add_bias and bias is not None:
                out += space.block(bias, out.shape[1:])
            out = _reshaped(out, (w.out_h, w.out_w, n, filters))
            return activate(out, self.layer.activation, True, 3) if self.add_bias else out
        if not self.add_bias:
            return _reshaped(out, (w.out_h, filters, w.out_w, n))
        if bias is not None:
            add_channel_bias(out, bias, space)
        out = _reshaped(out, (w.out_h, filters, w.out_w, n))
        return activate(out, self.layer.activation, True, self.softmax_axis)

    def _quarters(self, view: np.ndarray, matrices: np.ndarray, space) -> np.ndarray:
        """The products of a quartered conv: ``view`` is the unfold's ``(out_h, K, cols)``, its
        columns in two phases. Output rows of each parity and columns of each phase go to a block
        of their own, ``(2, ceil(out_h / 2), 2, F, ceil(out_w / 2) * N)`` (row parity, row,
        column phase, channel, column and image), which a 2x2 pool reads as four arrays of long
        contiguous runs (see Pool.quartered); an odd size's last row or column fills only the
        first block of its axis. No bias (the pool adds it)."""
        w, f = self.win, self.layer.filters
        n = view.shape[2] // w.out_w
        half_h, half_w = -(-w.out_h // 2), -(-w.out_w // 2)
        out = space.out((2, half_h, 2, f, half_w * n))
        for parity in range(2):
            rows = view[parity::2]
            for phase, width in enumerate((half_w * n, w.out_w // 2 * n)):
                if len(rows) and width:
                    start = phase * half_w * n
                    matmul(matrices, rows[:, :, start : start + width], out[parity, : len(rows), phase, :, :width])
        return out

    def _winograd(self, x: np.ndarray, matrices: np.ndarray, bias: np.ndarray | None, space,
                  into: np.ndarray | None) -> np.ndarray:
        """Winograd's F(2x2, 3x3): each 2x2 block of outputs from a 4x4 tile of the padded input
        (tiles two apart), ``A^T [(G g G^T) * (B^T d B)] A`` with the 16 elementwise products
        as 16 batched matmuls over the channels: 16 multiply-adds per 4 outputs and channel pair
        against 36. The transforms are sums and differences of whole tile rows and columns; the
        bias is added to the one product term every output of a tile sums once."""
        w, f = self.win, self.layer.filters
        _, c, _, n = x.shape
        hp, wp = w.out_h + 2, w.out_w + 2
        ty, tx = w.out_h // 2, w.out_w // 2
        phases = space.tmp(0, (2, hp, c, wp // 2, n))  # padded column 2t + p in phases[p, :, :, t]
        _phases(x, 2, w.pad_top, w.pad_left, phases)
        d = [phases[j % 2, :, :, j // 2 : j // 2 + tx] for j in range(4)]  # column j of every tile
        cols = space.tmp(1, (4, hp, c, tx, n))  # B^T along the columns
        np.subtract(d[0], d[2], out=cols[0])
        np.add(d[1], d[2], out=cols[1])
        np.subtract(d[2], d[1], out=cols[2])
        np.subtract(d[1], d[3], out=cols[3])
        r = [cols[:, i : i + 2 * ty - 1 : 2] for i in range(4)]  # row i of every tile
        tiles = space.tmp(2, (4, 4, ty, c, tx, n))  # then B^T along the rows: (row term, column term, ...)
        np.subtract(r[0], r[2], out=tiles[0])
        np.add(r[1], r[2], out=tiles[1])
        np.subtract(r[2], r[1], out=tiles[2])
        np.subtract(r[1], r[3], out=tiles[3])
        products = space.tmp(0, (4, 4, ty, f, tx * n))
        matmul(matrices, _reshaped(tiles, (16, ty, c, tx * n)), _reshaped(products, (16, ty, f, tx * n)))
        if self.add_bias and bias is not None:  # term (1, 1) counts once in each of the 4 outputs
            add_channel_bias(products[1, 1], bias, space)
        m = _reshaped(products, (4, 4, ty, f, tx, n))
        rows = space.tmp(1, (2, 4, ty, f, tx, n))  # A^T along the rows
        np.add(m[0], m[1], out=rows[0])
        rows[0] += m[2]
        np.subtract(m[1], m[2], out=rows[1])
        rows[1] -= m[3]
        done = space.tmp(2, (2, 2, ty, f, tx, n))  # then along the columns: (column j, row i, ...)
        np.add(rows[:, 0], rows[:, 1], out=done[0])
        done[0] += rows[:, 2]
        np.subtract(rows[:, 1], rows[:, 2], out=done[1])
        done[1] -= rows[:, 3]
        out = space.out((w.out_h, f, w.out_w, n)) if into is None else into
        blocks = _reshaped(out, (ty, 2, f, tx, 2, n))
        for i in range(2):  # output (2 * tile_y + i, 2 * tile_x + j)
            for j in range(2):
                _copy(blocks[:, i, :, :, j], done[j, i])
        return activate(out, self.layer.activation, True, self.softmax_axis) if self.add_bias else out


# Winograd's F(2x2, 3x3) kernel transform (Lavin and Gray, 2016); the input and output transforms
# are the sums and differences written out in Conv._winograd.
_WINOGRAD_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def winograd_fits(win: geometry.Window2D) -> bool:
    """Whether Conv's Winograd form computes this window: 3x3, stride and dilation 1, an even
    output (2x2 blocks) and the 'same' or 'valid' padding of a 3x3 kernel (one or none a side)."""
    return ((win.kernel_h, win.kernel_w, win.stride_h, win.stride_w, win.dilation_h, win.dilation_w) == (3, 3, 1, 1, 1, 1)
            and win.out_h % 2 == 0 and win.out_w % 2 == 0
            and win.pad_top + win.in_h + win.pad_bottom == win.out_h + 2
            and win.pad_left + win.in_w + win.pad_right == win.out_w + 2)


def plan_conv(layer: S.Conv2D, shape_hwc: tuple[int, int, int], softmax_axis: int, add_bias: bool = True) -> Conv:
    """The conv step for ``layer`` on inputs of shape ``shape_hwc`` (no batch axis).

    Args:
        layer: the Conv2D spec.
        shape_hwc: ``(height, width, channels)`` of its input.
        softmax_axis: the internal axis a softmax activation runs over (the spec's last axis).
        add_bias: False when the following max pooling step adds the bias and runs the
            activation instead.
    """
    h, w, c = shape_hwc
    win = geometry.window_2d((h, w), layer.kernel_size, layer.strides, layer.padding, layer.dilation_rate)
    # A single kernel column with a width stride reads 1 / stride of the columns: gathering
    # them is cheaper than splitting the whole input into phases.
    im2col = win.dilation_h > 1 or win.kernel_h * c <= _IM2COL_ROWS or (win.stride_w > 1 and win.kernel_w == 1)
    f = layer.filters
    winograd = (not im2col and winograd_fits(win) and c * f >= _WINOGRAD_CHANNELS * (c + f)
                and 4 * win.out_h * win.out_w * max(c, f) <= _WINOGRAD_FLOATS)
    return Conv(layer, win, c, im2col, softmax_axis, add_bias, winograd=winograd)


def _axis_tap(out_n: int, n: int, stride: int, pad: int, tap: int) -> tuple[slice, slice] | None:
    """Along one axis, for one tap: the outputs whose input is real and those inputs (slices),
    or None when the tap only reads padding."""
    first = max(0, -(-(pad - tap) // stride))  # smallest output whose input is >= 0
    last = min(out_n - 1, (n - 1 + pad - tap) // stride)  # largest output whose input is < n
    if last < first:
        return None
    start = first * stride - pad + tap
    return slice(first, last + 1), slice(start, start + (last - first) * stride + 1, stride)


def _tap_ranges(win: geometry.Window2D, filter_y: int, filter_x: int):
    """For one tap: the output cells whose input cell is real, and those input cells.

    Returns ``(out_rows, out_cols, in_rows, in_cols)`` slices, or None when the tap only ever
    reads padding. Output ``out_y`` reads input ``out_y * stride_h - pad_top + filter_y``.
    """

    ys = _axis_tap(win.out_h, win.in_h, win.stride_h, win.pad_top, filter_y)
    xs = _axis_tap(win.out_w, win.in_w, win.stride_w, win.pad_left, filter_x)
    if ys is None or xs is None:
        return None
    return ys[0], xs[0], ys[1], xs[1]


@dataclass(frozen=True)
class Depthwise:
    """DepthwiseConv2D (+ folded BN, + activation) on ``x (H, C, W, N)``; see the module docstring."""

    layer: S.DepthwiseConv2D
    win: geometry.Window2D
    channels: int
    softmax_axis: int

    @property
    def diagonal(self) -> bool:
        """Per-channel diagonal matrices (True) or a loop over the taps (False)."""
        return self.win.in_h <= _DEPTHWISE_ROWS * self.win.kernel_h

    @functools.cached_property
    def blocks(self) -> int:
        """Row blocks of the diagonal matrices: output rows in ``blocks`` equal runs, each run's
        matrix only as wide as the input rows it reads, so fewer zeros are multiplied; each block
        is a product of its own. Without height padding only (then every run's rows start
        ``rows * stride_h`` apart). The count minimises zeros + 64 per block: a product costs
        about as much as 64 multiply-adds a column (DS-CNN's 5x1 layer on 28 rows, 64 images:
        1.06 us an image in 3 blocks against 1.76 in one; its 3x1 on 30 rows: 0.32 in 4 against
        0.66)."""
        w = self.win
        if w.pad_top or w.pad_bottom:
            return 1
        return min((n for n in range(1, w.out_h + 1) if w.out_h % n == 0),
                   key=lambda n: n * (w.out_h // n) * self._block_rows(n) + 64 * n)

    def _block_rows(self, blocks: int) -> int:
        """Input rows one block of ``out_h / blocks`` output rows reads."""
        w = self.win
        return (w.out_h // blocks - 1) * w.stride_h + (w.kernel_h - 1) * w.dilation_h + 1

    def matrices(self, kernel: np.ndarray) -> np.ndarray:
        """``(kw, C, M, blocks, rows, reads)`` diagonal matrices from ``kernel (kh, kw, C, M)``:
        block b maps input rows ``b * rows * stride_h ...`` to its ``rows`` output rows (taps on
        padded rows left out); or the kernel itself for the tap loop."""
        if not self.diagonal:
            return kernel
        w, blocks = self.win, self.blocks
        kh, kw, c, m = kernel.shape
        rows = w.out_h // blocks
        reads = self._block_rows(blocks) if blocks > 1 else w.in_h
        matrix = np.zeros((kw, c, m, blocks, rows, reads), np.float32)
        for fy in range(kh):
            for y in range(w.out_h):
                block, first = divmod(y, rows)
                iy = y * w.stride_h - w.pad_top + fy * w.dilation_h
                if 0 <= iy < w.in_h:
                    matrix[:, :, :, block, first, iy - block * rows * w.stride_h] = kernel[fy]
        return matrix

    def scratch_floats(self) -> int:
        w, c = self.win, self.channels
        return w.in_h * c * (w.pad_left + w.in_w + w.pad_right) + w.out_h * c * self.layer.depth_multiplier * w.out_w

    def __call__(self, x: np.ndarray, matrices: np.ndarray, bias: np.ndarray | None, space,
                 into: np.ndarray | None = None) -> np.ndarray:
        """The depthwise conv of ``x``, written into ``into`` (a ``(out_h, C * M, out_w, N)`` view)
        when given."""
        w, c, m = self.win, self.channels, self.layer.depth_multiplier
        n = x.shape[-1]
        out = space.out((w.out_h, c * m, w.out_w, n)) if into is None else into
        if self.diagonal:
            xp = _padded(x, 0, 0, w.pad_left, w.pad_right, space)  # the height padding is in the matrices
            width = xp.shape[2]
            cols = w.out_w * n
            blocks, reads = matrices.shape[3], matrices.shape[5]
            rows = w.out_h // blocks
            # (C, M, blocks, rows, out_w * N)
            target = _reshaped(out, (blocks, rows, c, m, cols)).transpose(2, 3, 0, 1, 4)
            part = space.tmp(1, (c, m, blocks, rows, cols)) if w.kernel_w > 1 else None
            for fx in range(w.kernel_w):
                if w.stride_w == 1:
                    source, offset, row = xp, fx * w.dilation_w * n, c * width * n
                    channel = width * n
                else:  # every stride_w-th column from this tap's first: one copy
                    source = space.tmp(2, (w.in_h, c, w.out_w, n))
                    start = fx * w.dilation_w
                    _copy(source, xp[:, :, start : start + (w.out_w - 1) * w.stride_w + 1 : w.stride_w])
                    offset, row, channel = 0, c * cols, cols
                inputs = _view(source, offset, (c, 1, blocks, reads, cols), (channel, 0, rows * w.stride_h * row, row, 1))
                if fx == 0:
                    np.matmul(matrices[0], inputs, out=target)
                else:
                    np.matmul(matrices[fx], inputs, out=part)
                    target += part
        else:
            out.fill(0)
            view = _reshaped(out, (w.out_h, c, m, w.out_w, n))
            for fy in range(w.kernel_h):
                for fx in range(w.kernel_w):
                    tap = _tap_ranges(w, fy * w.dilation_h, fx * w.dilation_w)
                    if tap is not None:
                        target = view[tap[0], :, :, tap[1]]
                        target += x[tap[2], :, tap[3]][:, :, None] * matrices[fy, fx][:, :, None, None]
        if bias is not None:
            add_channel_bias(_reshaped(out, (w.out_h, c * m, w.out_w * n)), bias, space)
        return activate(out, self.layer.activation, True, self.softmax_axis)


class Pool:
    """MaxPooling2D / AveragePooling2D on ``x (H, C, W, N)`` by clipped strided views (no padded copy).

    A Conv2D right before a max pool may leave its bias and its ReLUs to the pool, which adds the
    bias and runs them after taking the maximum: exact, since float addition and ReLU are
    monotonic (``max(relu(a_i + b)) == relu(max(a_i) + b)`` bit for bit), and they touch the
    pooled cells only (a 2x2 pool: a quarter of them).
    """

    def __init__(self, win: geometry.Window2D, average: bool):
        self.win = win
        self.average = average
        taps = [_tap_ranges(win, fy, fx) for fy in range(win.kernel_h) for fx in range(win.kernel_w)]
        self.taps = [t for t in taps if t is not None]
        count = np.zeros((win.out_h, 1, win.out_w, 1), np.float32)
        for out_y, out_x, _, _ in self.taps:
            count[out_y, :, out_x] += 1  # real cells only: Keras' window_counts
        self.count = count
        # The first tap usually reads a real cell for every output (no padding before): copy it
        # instead of starting from -inf (max: every window holds a real cell) or 0 (sum).
        first = self.taps[0]
        self.first_covers_all = (first[0] == slice(0, win.out_h) and first[1] == slice(0, win.out_w))
        # Many taps and few outputs, windows side by side on real cells only (ResNet-8's 8x8
        # average of an 8x8 map): two reductions over a window view instead of one ufunc call a
        # tap (16 images of 8 x 64 x 8: 25 us against 117; with 16 outputs and 16 taps the two
        # ways are even, with more outputs the taps win).
        tiled = (not (win.pad_top or win.pad_left) and (win.stride_h, win.stride_w) == (win.kernel_h, win.kernel_w)
                 and len(self.taps) == win.kernel_h * win.kernel_w)
        self.reduce = tiled and win.out_h * win.out_w <= 16 <= win.kernel_h * win.kernel_w
        # A 2x2 pool two apart, no padding, may read an input whose columns are in two phases
        # (even ones, then odd ones: a phased conv wrote it): its four taps are then contiguous
        # runs of out_w images, not runs of one image every other column, which NumPy loops over
        # far more slowly (keras224's 28 x 28 x 64 pool, 16 images: 8 against 27 us an image).
        self.phased_fits = ((win.kernel_h, win.kernel_w, win.stride_h, win.stride_w) == (2, 2, 2, 2)
                            and not (win.pad_top or win.pad_bottom or win.pad_left or win.pad_right))
        self.phased = False
        # The conv may go further and write the four cells of each window to four blocks (see
        # Conv._quarters): the pool is then three maxima of whole blocks, runs of C out_w N floats
        # (keras224's 28 x 28 x 64 conv and pool, K = 9, 20 images: 9.5 against 13.2 us an image).
        self.quartered = False
        # Or read a transposed conv's output, (H, W, N, C), and write its own so (see
        # fast._transpose_tails): seen as (H, 1, W, N * C), the same taps, each a slice of whole
        # (N, C) cells.
        self.transposed = False

    def _reduced(self, x: np.ndarray, out: np.ndarray, space) -> None:
        """The pooling of C-contiguous ``x`` into ``out`` by reductions over each window's rows,
        then its columns."""
        w = self.win
        _, c, width, n = x.shape
        kh, kw = w.kernel_h, w.kernel_w
        windows = _view(x, 0, (w.out_h, kh, c, w.out_w, kw, n),
                        (kh * c * width * n, c * width * n, width * n, kw * n, n, 1))
        combine = np.add if self.average else np.maximum
        rows = combine.reduce(windows, axis=1, out=space.tmp(0, (w.out_h, c, w.out_w, kw, n)))
        combine.reduce(rows, axis=3, out=out)

    def __call__(self, x: np.ndarray, space, bias: np.ndarray | None = None, activations: tuple[str, ...] = ()) -> np.ndarray:
        """The pooling; then ``bias`` added and ``activations`` run (a max pool's conv's, see the
        class)."""
        if self.transposed:  # the bias then goes along the last axis
            h, width, n, c = x.shape
            out = _reshaped(self._pool(_reshaped(x, (h, 1, width, n * c)), space), (self.win.out_h, self.win.out_w, n, c))
            if bias is not None:
                cells = _reshaped(out, (self.win.out_h, self.win.out_w * n, c))
                cells += space.block(bias, cells.shape[1:])
            for name in activations:
                activate(out, name, True, 3)
            return out
        return self._pool(x, space, bias, activations)

    def _pool(self, x: np.ndarray, space, bias: np.ndarray | None = None, activations: tuple[str, ...] = ()) -> np.ndarray:
        w = self.win
        combine = np.add if self.average else np.maximum
        taps = self.taps
        if self.quartered:
            c, n = x.shape[3], x.shape[4] // -(-w.in_w // 2)
        else:
            c, n = x.shape[1], x.shape[3]
        out = space.out((w.out_h, c, w.out_w, n))
        if self.quartered:  # x: (2, rows, 2, C, cols) blocks, one per window cell
            blocks = [x[r, : w.out_h, p, :, : w.out_w * n] for r in range(2) for p in range(2)]
            flat = _reshaped(out, (w.out_h, c, w.out_w * n))
            combine(blocks[0], blocks[1], out=flat)
            combine(flat, blocks[2], out=flat)
            combine(flat, blocks[3], out=flat)
            taps = []
        elif self.phased:  # x's columns: the even ones, then the odd ones
            first = -(-x.shape[2] // 2)
            views = [x[i : i + 2 * w.out_h - 1 : 2, :, j * first : j * first + w.out_w] for i in range(2) for j in range(2)]
            _copy(out, views[0])
            for view in views[1:]:
                combine(out, view, out=out)
            taps = []
        elif self.reduce and x.flags.c_contiguous:
            self._reduced(x, out, space)
            taps = []
        elif self.first_covers_all:
            _copy(out, x[taps[0][2], :, taps[0][3]])
            taps = taps[1:]
        else:
            out.fill(0.0 if self.average else -np.inf)
        for out_y, out_x, in_y, in_x in taps:
            target = out[out_y, :, out_x]
            combine(target, x[in_y, :, in_x], out=target)
        if self.average:
            out /= self.count
        if bias is not None:
            add_channel_bias(out.reshape(w.out_h, out.shape[1], -1), bias, space)
        for name in activations:
            activate(out, name, True, 1)
        return out
