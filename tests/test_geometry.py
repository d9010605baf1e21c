"""Geometry: pure-int tables, then Keras' own shape math and computations as the oracle."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from layerlab import geometry

# (n, kernel, stride, dilation, padding, expected out, expected (before, after))
TABLE = [
    (28, 4, 1, 1, "valid", 25, (0, 0)),
    (25, 2, 2, 1, "same", 13, (0, 1)),   # seed650 maxpool1: the odd pixel goes after
    (11, 2, 2, 1, "same", 6, (0, 1)),    # seed650 maxpool2
    (8, 3, 2, 1, "same", 4, (0, 1)),     # STYLE.md: (k-1)/2 each side would be wrong here
    (7, 3, 2, 1, "same", 4, (1, 1)),
    (9, 4, 2, 1, "same", 5, (1, 2)),
    (5, 3, 1, 1, "same", 5, (1, 1)),     # pool 3 stride 1: total padding 2
    (5, 2, 2, 1, "same", 3, (0, 1)),
    (3, 2, 2, 1, "valid", 1, (0, 0)),    # the last row is dropped
    (7, 3, 1, 2, "valid", 3, (0, 0)),    # dilated span 5
    (7, 3, 1, 2, "same", 7, (2, 2)),
    (4, 5, 1, 1, "valid", 0, (0, 0)),    # does not fit
    (1, 1, 1, 1, "same", 1, (0, 0)),
]


@pytest.mark.parametrize("n, kernel, stride, dilation, padding, out, pads", TABLE)
def test_table(n, kernel, stride, dilation, padding, out, pads):
    assert geometry.output_length(n, kernel, stride, padding, dilation) == out
    assert geometry.axis_padding(n, kernel, stride, padding, dilation) == pads


def test_window_cells_and_padding_flags():
    win = geometry.window_2d((3, 5), (2, 2), (2, 2), "same")
    assert (win.out_h, win.out_w) == (2, 3)
    assert (win.pad_top, win.pad_bottom, win.pad_left, win.pad_right) == (0, 1, 0, 1)
    assert win.window(1, 2) == [(2, 4), (2, 5), (3, 4), (3, 5)]
    assert [win.is_padding(*c) for c in win.window(1, 2)] == [False, True, True, True]


@pytest.mark.parametrize("bad", [dict(n=-1), dict(kernel=0), dict(stride=0), dict(dilation=0), dict(stride=1.5)])
def test_bad_arguments(bad):
    args = dict(n=5, kernel=2, stride=1, dilation=1) | bad
    with pytest.raises(ValueError, match="must be an int"):
        geometry.output_length(args["n"], args["kernel"], args["stride"], "same", args["dilation"])


def test_unknown_padding():
    with pytest.raises(ValueError, match="padding must be one of"):
        geometry.output_length(5, 2, 1, "full")


# --- Keras as the oracle ------------------------------------------------------------------

GRID = [
    (n, k, s, d, p)
    for n, k, s, d, p in itertools.product(range(1, 11), range(1, 6), range(1, 4), (1, 2), geometry.PADDINGS)
    if not (s > 1 and d > 1)
]


@pytest.mark.keras
def test_output_lengths_match_keras_compute_output_shape(keras):
    for n, k, s, d, p in GRID:
        conv = keras.layers.Conv2D(1, (k, 1), strides=(s, 1), padding=p, dilation_rate=(d, 1))
        got = geometry.output_length(n, k, s, p, d)
        try:
            expected = conv.compute_output_shape((None, n, 3, 1))[1]
        except ValueError as exc:  # Keras refuses a window that does not fit; so must we (0)
            assert "zero or negative" in str(exc) and got == 0, (n, k, s, d, p)
            continue
        assert got == expected, (n, k, s, d, p)
        if d == 1:
            pool = keras.layers.MaxPooling2D((k, 1), strides=(s, 1), padding=p)
            if n >= k or p == "same":
                assert geometry.output_length(n, k, s, p) == pool.compute_output_shape((None, n, 3, 1))[1], (n, k, s, p)


PAD_CASES = [(8, 3, 2, 1), (7, 3, 2, 1), (9, 4, 2, 1), (5, 3, 1, 1), (6, 2, 2, 1), (7, 3, 1, 2), (10, 5, 3, 1), (4, 4, 1, 1)]


@pytest.mark.keras
@pytest.mark.parametrize("n, k, s, d", PAD_CASES)
def test_same_padding_sides_match_keras_conv(keras, n, k, s, d):
    """Keras 'same' conv equals explicit zero padding (our per-side split) + 'valid' conv."""
    ops = keras.ops
    rng = np.random.default_rng(n * 100 + k * 10 + s)
    x = rng.normal(size=(1, n, n + 1, 2)).astype(np.float32)
    kernel = rng.normal(size=(k, k, 2, 3)).astype(np.float32)
    same = ops.conv(x, kernel, strides=s, padding="same", dilation_rate=d)
    top, bottom = geometry.same_padding(n, k, s, d)
    left, right = geometry.same_padding(n + 1, k, s, d)
    padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    valid = ops.conv(padded, kernel, strides=s, padding="valid", dilation_rate=d)
    np.testing.assert_allclose(np.asarray(same), np.asarray(valid), rtol=1e-5, atol=1e-5)


@pytest.mark.keras
@pytest.mark.parametrize("n, k, s", [(5, 2, 2), (8, 3, 2), (7, 3, 2), (5, 3, 1), (9, 4, 2)])
def test_same_padding_sides_match_keras_max_pool(keras, n, k, s):
    """Keras 'same' max pooling equals -inf padding (our per-side split) + 'valid' pooling."""
    ops = keras.ops
    x = np.random.default_rng(n + k + s).normal(size=(1, n, n, 1)).astype(np.float32) - 5.0
    same = ops.max_pool(x, k, strides=s, padding="same")
    top, bottom = geometry.same_padding(n, k, s)
    padded = np.pad(x, ((0, 0), (top, bottom), (top, bottom), (0, 0)), constant_values=-np.inf)
    valid = ops.max_pool(padded, k, strides=s, padding="valid")
    np.testing.assert_array_equal(np.asarray(same), np.asarray(valid))
