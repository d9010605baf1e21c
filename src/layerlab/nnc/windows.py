"""NNC (nnabla) window semantics and their exact Keras equivalents, in pure ints.

Keras' side (output sizes, 'same' padding) comes from ``layerlab.geometry``; this module holds
only what nnabla does differently, per spatial axis of length ``n``, window ``kernel``,
``stride`` and symmetric ``pad`` (checked against nnabla 1.39.0 by tests/test_nnc.py):

* Convolution: zeros on both sides; ``out = (n + 2*pad - span) // stride + 1``.
* Pooling window ``i`` starts at ``i*stride - pad`` and covers ``kernel`` cells.
  ``ignore_border=True``: ``out = (n + 2*pad - kernel) // stride + 1`` (windows inside the
  padded extent). ``ignore_border=False``: ``out = (n + pad - 1) // stride + 1``: every window
  that starts on a real cell is kept and clipped at the border.
* MaxPooling: padded cells never win (as -inf).
* AveragePooling divides by the window clipped to ``[-pad, n + pad)`` when ``including_pad``
  (pad cells count as zeros), else by the number of real cells in it.

Keras pads 'same' with the odd cell after (see geometry), fills max-pooling padding with -inf and
leaves 'same' padding out of the average; ZeroPadding2D adds real zeros. A plan picks the Keras
layers that compute exactly what nnabla computes, or says why none does.
"""

from __future__ import annotations

from dataclasses import dataclass

from layerlab import geometry

VALID = geometry.VALID
SAME = geometry.SAME


def conv_length(n: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    """nnabla Convolution output length (0 when the window does not fit)."""
    span = geometry.dilated_span(kernel, dilation)
    return max((n + 2 * pad - span) // stride + 1, 0) if n + 2 * pad >= span else 0


def pool_length(n: int, kernel: int, stride: int, pad: int, ignore_border: bool) -> int:
    """nnabla MaxPooling / AveragePooling output length (0 when the window does not fit)."""
    if ignore_border:
        return (n + 2 * pad - kernel) // stride + 1 if n + 2 * pad >= kernel else 0
    return (n + pad - 1) // stride + 1


@dataclass(frozen=True)
class KerasWindow:
    """Keras layers that compute one NNC windowed function exactly.

    Attributes:
        padding: the Keras layer's padding, 'valid' or 'same'.
        zero_pad: ``((pad_top, pad_bottom), (pad_left, pad_right))`` for a ZeroPadding2D layer
            before it, or None.
        caveat: why this mapping is exact when that is not obvious, else ''.
    """

    padding: str
    zero_pad: tuple[tuple[int, int], tuple[int, int]] | None = None
    caveat: str = ""


class NoExactMapping(ValueError):
    """No Keras layers compute this NNC configuration exactly; the message says why."""


def _zero_pad_after(n: int, kernel: int, stride: int, pad: int, out: int) -> int | None:
    """Zeros after the input so that a 'valid' window after ``pad`` zeros before gives ``out``."""
    after = max(0, (out - 1) * stride + kernel - n - pad)
    return after if (n + pad + after - kernel) // stride + 1 == out else None


def conv_plan(in_hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
              pad: tuple[int, int], dilation: tuple[int, int]) -> KerasWindow:
    """Keras equivalent of an nnabla Convolution with symmetric zero ``pad``.

    'valid' without padding; Keras 'same' where it pads exactly ``pad`` before (then the output
    sizes agree and the zeros after are the same zeros); otherwise ZeroPadding2D + 'valid'.
    """
    if pad == (0, 0):
        return KerasWindow(VALID)
    win = geometry.window_2d(in_hw, kernel, stride, SAME, dilation)
    outs = tuple(conv_length(n, k, s, p, d) for n, k, s, p, d in zip(in_hw, kernel, stride, pad, dilation, strict=True))
    if (win.pad_top, win.pad_left) == pad and (win.out_h, win.out_w) == outs:
        return KerasWindow(SAME)
    return KerasWindow(VALID, ((pad[0], pad[0]), (pad[1], pad[1])),
                       f"Keras 'same' would pad ({win.pad_top}, {win.pad_bottom}), ({win.pad_left}, {win.pad_right}); NNC pads {pad} each side")


def _axis_options(kind: str, n: int, kernel: int, stride: int, pad: int, ignore_border: bool,
                  including_pad: bool) -> tuple[bool, tuple[int, int] | None, bool]:
    """Per axis: (Keras 'same' is exact, explicit (before, after) padding for 'valid' or None,
    whether that explicit padding is exact when filled with zeros)."""
    out = pool_length(n, kernel, stride, pad, ignore_border)
    before, _ = geometry.same_padding(n, kernel, stride)
    same_ok = geometry.output_length(n, kernel, stride, SAME) == out and before == pad
    if kind == "average" and including_pad and pad > 0:
        same_ok = False  # Keras 'same' leaves the padding out of the count; NNC counts it.
    after = _zero_pad_after(n, kernel, stride, pad, out)
    explicit = None if after is None else (pad, after)
    if kind == "average":
        # Keras divides a 'valid' window by kernel: NNC must divide by kernel in every window.
        # including_pad: NNC's divisor is the window clipped to [-pad, n + pad); otherwise the
        # real cells only, which is the full kernel only without padding.
        last_end = (out - 1) * stride - pad + kernel
        zeros_exact = last_end <= n + pad if including_pad else (pad == 0 and last_end <= n)
    else:
        zeros_exact = explicit == (0, 0)
    return same_ok, explicit, zeros_exact


def pool_plan(kind: str, in_hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
              pad: tuple[int, int], ignore_border: bool, including_pad: bool = True,
              nonnegative_input: bool = False) -> KerasWindow:
    """Keras equivalent of an nnabla MaxPooling (``kind='max'``) or AveragePooling ('average').

    Args:
        in_hw: input (height, width).
        kernel, stride, pad: the NNC arguments (pad is symmetric, per axis).
        ignore_border: NNC's ignore_border.
        including_pad: NNC's including_pad (average pooling only).
        nonnegative_input: the input is known to be >= 0 (after ReLU, Sigmoid, Softmax): then
            zero padding can never win a max either, so ZeroPadding2D + 'valid' is exact.

    Raises:
        NoExactMapping: no Keras layers compute it exactly (the message says why).
    """
    if any(p >= k for p, k in zip(pad, kernel, strict=True)):
        raise NoExactMapping(f"pad {pad} >= kernel {kernel}: some windows would hold padding only")
    outs = tuple(pool_length(n, k, s, p, ignore_border) for n, k, s, p in zip(in_hw, kernel, stride, pad, strict=True))
    if min(outs) < 1:
        raise NoExactMapping(f"kernel {kernel} does not fit input {in_hw} with pad {pad}")
    axes = [_axis_options(kind, n, k, s, p, ignore_border, including_pad) for n, k, s, p in zip(in_hw, kernel, stride, pad, strict=True)]
    explicit = [a[1] for a in axes]
    if explicit == [(0, 0), (0, 0)] and all(a[2] for a in axes):
        return KerasWindow(VALID)
    if all(a[0] for a in axes):
        return KerasWindow(SAME)
    if None not in explicit:
        zero_pad = (explicit[0], explicit[1])
        if all(a[2] for a in axes):
            return KerasWindow(VALID, zero_pad, "zero padding is exact: NNC counts the padding (including_pad) and divides by the full kernel")
        if kind == "max" and nonnegative_input:
            return KerasWindow(VALID, zero_pad, "zero padding is exact because the input is >= 0, so a padded 0 never beats a real value")
    win = geometry.window_2d(in_hw, kernel, stride, SAME)
    needs = "-inf padding that never wins" if kind == "max" else (
        "padding counted as zeros in the divisor" if including_pad else "padding left out of the divisor")
    raise NoExactMapping(
        f"NNC output {outs} needs {needs} of {explicit} (before, after) per axis; Keras 'same' pads "
        f"({win.pad_top}, {win.pad_bottom}), ({win.pad_left}, {win.pad_right}) with output {(win.out_h, win.out_w)}"
    )


def max_pool_edge_padding(in_hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int], pad: tuple[int, int],
                          ignore_border: bool) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """For an NNC MaxPooling no single Keras layer computes: the ``(before, after)`` cells per axis
    that, filled with copies of the border cell next to them, make a Keras 'valid' max pooling give
    exactly NNC's output; None when no padding does.

    Exact because every NNC window holds at least one real cell per axis (pad < kernel, and a
    window starts at or before the last real cell), so a window that reaches into the padding also
    holds the border cell the padding repeats: a copy can tie the max but never beat it, as -inf.
    """
    if any(p >= k for p, k in zip(pad, kernel, strict=True)):
        return None
    sides = []
    for n, k, s, p in zip(in_hw, kernel, stride, pad, strict=True):
        out = pool_length(n, k, s, p, ignore_border)
        after = _zero_pad_after(n, k, s, p, out) if out >= 1 else None
        if after is None or (out - 1) * s - p > n - 1:
            return None
        sides.append((p, after))
    return sides[0], sides[1]


@dataclass(frozen=True)
class NNCPooling:
    """NNC pooling arguments equivalent to a Keras pooling layer (see ``keras_pool_to_nnc``)."""

    ignore_border: bool
    pad: tuple[int, int]
    including_pad: bool


def keras_pool_to_nnc(kind: str, in_hw: tuple[int, int], pool_size: tuple[int, int],
                      strides: tuple[int, int], padding: str) -> NNCPooling:
    """NNC MaxPooling / AveragePooling arguments that compute a Keras pooling layer exactly.

    Keras 'valid' is ignore_border=True, pad 0. Keras 'same' needs NNC windows starting at
    ``i*stride - pad_top``: pad = Keras' pad before, with ignore_border chosen so the output size
    agrees; average pooling then excludes the padding (including_pad=False), as Keras does.

    Raises:
        NoExactMapping: Keras pads one more cell after than before on an axis and neither
            ignore_border setting gives Keras' output size (e.g. pool 4, stride 1).
    """
    if padding == VALID:
        return NNCPooling(True, (0, 0), True)
    win = geometry.window_2d(in_hw, pool_size, strides, SAME)
    pad = (win.pad_top, win.pad_left)
    want = (win.out_h, win.out_w)
    for ignore_border in (True, False):
        got = tuple(pool_length(n, k, s, p, ignore_border) for n, k, s, p in zip(in_hw, pool_size, strides, pad, strict=True))
        if got == want and all(p < k for p, k in zip(pad, pool_size, strict=True)):
            return NNCPooling(ignore_border, pad, kind == "max")
    raise NoExactMapping(
        f"Keras 'same' pads ({win.pad_top}, {win.pad_bottom}), ({win.pad_left}, {win.pad_right}) for output {want}; "
        f"NNC pads symmetrically and neither ignore_border setting gives that output"
    )
