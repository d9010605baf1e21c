"""Plain-text explanations: what one probed layer computed, and the padding plan of a model.

``explain_probe(result)`` turns a ``ProbeResult`` into text: the input, the output-size formula
with the numbers filled in, the padding per side and why the odd cell goes after (bottom/right),
what fills the padding for this layer type, and for every output cell the input cells it read.
``explain_model(model)`` lists, layer by layer, which layers pad and where, and where Neural
Network Console's MaxPooling with IgnoreBorder=False, Padding 0 would differ from Keras 'same'.

All sizes and paddings come from ``layerlab.geometry``; all numbers from the probe's engine run.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np

from layerlab import geometry
from layerlab import spec as S

FILL = {
    "Conv2D": "Conv2D pads with zeros: a padded cell adds 0 * weight = 0 to the sum.",
    "DepthwiseConv2D": "DepthwiseConv2D pads with zeros, and each window reads ONE input channel: output channel "
    "c * depth_multiplier + m is input channel c convolved with kernel[:, :, c, m] (Conv2D sums over every channel).",
    "MaxPooling2D": "MaxPooling2D pads with -inf: a padded cell is never selected, so a border window "
    "returns the max of its real cells only (this is not zero padding).",
    "AveragePooling2D": "AveragePooling2D leaves padded cells out: a border window divides the sum of its "
    "real cells by how many real cells it holds, not by the pool area.",
}


def fmt(value: float, precision: int = 6) -> str:
    """One number: integers without a point, others with ``precision`` significant digits."""
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.{precision}g}"


def wrap(line: str, width: int = 100) -> str:
    """Wrap one prose line at ``width``, continuing with its own indent plus four spaces."""
    indent = " " * (len(line) - len(line.lstrip(" ")))
    return textwrap.fill(line, width, subsequent_indent=indent + "    ", break_long_words=False, break_on_hyphens=False)


def _paren(text: str) -> str:
    return f"({text})" if text.startswith("-") else text


def format_grid(rows: list[list[str]], indent: str = "") -> str:
    """A 2-D grid of strings as a nested list with right-aligned columns (pasteable as --input)."""
    width = max((len(s) for row in rows for s in row), default=1)
    lines = []
    for i, row in enumerate(rows):
        opener = "[[" if i == 0 else " ["
        closer = "]]" if i == len(rows) - 1 else "],"
        lines.append(indent + opener + ", ".join(s.rjust(width) for s in row) + closer)
    return "\n".join(lines)


def format_vector(values, precision: int = 6, indent: str = "", per_line: int = 16) -> str:
    texts = [fmt(v, precision) for v in values]
    chunks = [", ".join(texts[i : i + per_line]) for i in range(0, len(texts), per_line)]
    return indent + "[" + (",\n" + indent + " ").join(chunks) + "]"


def channel_grids(x: np.ndarray, data_format: str) -> list[np.ndarray]:
    """Per channel (H, W) grids of a batched 4-D array."""
    x_hwc = x[0].transpose(1, 2, 0) if data_format == S.CHANNELS_FIRST else x[0]  # (H, W, C)
    return [x_hwc[:, :, c] for c in range(x_hwc.shape[2])]


def _axes(data_format: str) -> str:
    return "(batch, channels, height, width)" if data_format == S.CHANNELS_FIRST else "(batch, height, width, channels)"


def _grids_text(x: np.ndarray, data_format: str, precision: int, word: str = "channel") -> str:
    grids = channel_grids(x, data_format)
    blocks = []
    for c, grid in enumerate(grids):
        text = format_grid([[fmt(v, precision) for v in row] for row in grid], "  ")
        blocks.append(text if len(grids) == 1 else f"  {word} {c}:\n{text}")
    return "\n".join(blocks)


def describe(layer: S.Layer) -> str:
    """``Type 'name': arg=value, ...`` with the arguments that shape the computation."""
    args = {
        S.Conv2D: ("filters", "kernel_size", "strides", "padding", "dilation_rate", "data_format", "use_bias", "activation"),
        S.DepthwiseConv2D: ("kernel_size", "depth_multiplier", "strides", "padding", "dilation_rate", "data_format",
                            "use_bias", "activation"),
        S.MaxPooling2D: ("pool_size", "strides", "padding", "data_format"),
        S.AveragePooling2D: ("pool_size", "strides", "padding", "data_format"),
        S.ZeroPadding2D: ("padding", "data_format"),
        S.Flatten: ("data_format",),
        S.Dense: ("units", "use_bias", "activation"),
    }.get(type(layer), ())
    return f"{layer.type} '{layer.name}': " + ", ".join(f"{a}={getattr(layer, a)!r}" for a in args)


# --- one probed layer ---------------------------------------------------------------------------

def explain_probe(result, precision: int = 6, max_windows: int = 64) -> str:
    """The full explanation of a ``ProbeResult`` (see the module docstring)."""
    layer = result.layer
    parts = [describe(layer), ""]
    if isinstance(layer, S.Dense):
        parts += [f"input: shape {tuple(result.input.shape)} = (batch, features)", format_vector(result.input[0], precision, "  ")]
    else:
        channels = len(channel_grids(result.input, layer.data_format))
        parts += [
            f"input: shape {tuple(result.input.shape)} = {_axes(layer.data_format)}, {channels} channel{'s' * (channels != 1)}",
            _grids_text(result.input, layer.data_format, precision),
        ]
    for name, value in result.weights.items():
        parts += ["", _weight_text(layer, name, value, precision)]
    parts.append("")
    if result.geometry is not None:
        parts += _windowed(result, precision, max_windows)
    elif isinstance(layer, S.ZeroPadding2D):
        parts += _zero_padding(result)
    elif isinstance(layer, S.Flatten):
        parts += _flatten(result, precision, max_windows)
    else:
        parts += _dense(result, precision, max_windows)
    parts.append("")
    if isinstance(layer, (S.Flatten, S.Dense)):
        parts += [f"output: shape {tuple(result.output.shape)} = (batch, {'units' if isinstance(layer, S.Dense) else 'features'})",
                  format_vector(result.output[0], precision, "  ")]
    else:
        parts += [f"output: shape {tuple(result.output.shape)} = {_axes(layer.data_format)}",
                  _grids_text(result.output, layer.data_format, precision, "filter" if isinstance(layer, S.Conv2D) else "channel")]
    return "\n".join(parts) + "\n"


def _weight_text(layer, name: str, value: np.ndarray, precision: int) -> str:
    if isinstance(layer, S.Conv2D) and name == "kernel":
        head = f"kernel: shape {value.shape} = (kernel_h, kernel_w, in_channels, filters), HWIO as Keras"
        blocks = [head]
        for f in range(value.shape[3]):
            for c in range(value.shape[2]):
                grid = format_grid([[fmt(v, precision) for v in row] for row in value[:, :, c, f]], "  ")
                blocks.append(grid if value.shape[2] * value.shape[3] == 1 else f"  filter {f}, input channel {c}:\n{grid}")
        return "\n".join(blocks)
    if isinstance(layer, S.DepthwiseConv2D) and name == "kernel":
        head = f"kernel: shape {value.shape} = (kernel_h, kernel_w, in_channels, depth_multiplier), as Keras"
        blocks = [head]
        for c in range(value.shape[2]):
            for m in range(value.shape[3]):
                grid = format_grid([[fmt(v, precision) for v in row] for row in value[:, :, c, m]], "  ")
                blocks.append(f"  input channel {c} -> output channel {c * value.shape[3] + m}:\n{grid}")
        return "\n".join(blocks)
    if name == "kernel":  # Dense (in, units)
        return f"kernel: shape {value.shape} = (in_features, units)\n" + format_grid([[fmt(v, precision) for v in row] for row in value], "  ")
    return f"{name}: shape {value.shape}\n" + format_vector(value, precision, "  ")


def size_lines(win: geometry.Window2D, padding: str) -> list[str]:
    """The output-size formula per axis with the numbers filled in."""
    lines = []
    for axis, n, k, s, d, out in (("h", win.in_h, win.kernel_h, win.stride_h, win.dilation_h, win.out_h),
                                  ("w", win.in_w, win.kernel_w, win.stride_w, win.dilation_w, win.out_w)):
        span = geometry.dilated_span(k, d)
        if d != 1:
            lines.append(f"  dilated window {axis}: k = (kernel - 1) * dilation + 1 = ({k} - 1) * {d} + 1 = {span}")
        if padding == geometry.SAME:
            lines.append(f"  out_{axis} = ceil({n} / {s}) = {out}")
        else:
            lines.append(f"  out_{axis} = floor(({n} - {span}) / {s}) + 1 = {out}")
    head = "output size, padding='same': out = ceil(n / s)" if padding == geometry.SAME else \
        "output size, padding='valid': out = floor((n - k) / s) + 1"
    return [head, *lines]


def padding_lines(win: geometry.Window2D, padding: str) -> list[str]:
    """Padding per side, the formula with numbers, and why the odd cell goes after."""
    if padding == geometry.VALID:
        return ["padding='valid': no padding (pad_top = pad_bottom = pad_left = pad_right = 0)."]
    lines = ["padding per side: total = max((out - 1) * s + k - n, 0); before = total // 2; after = total - before"]
    for label, n, k, s, d, out, before, after, names in (
        ("rows:   ", win.in_h, win.kernel_h, win.stride_h, win.dilation_h, win.out_h, win.pad_top, win.pad_bottom, ("pad_top", "pad_bottom")),
        ("columns:", win.in_w, win.kernel_w, win.stride_w, win.dilation_w, win.out_w, win.pad_left, win.pad_right, ("pad_left", "pad_right")),
    ):
        span = geometry.dilated_span(k, d)
        total = before + after
        lines.append(f"  {label} total = max(({out} - 1) * {s} + {span} - {n}, 0) = {total}"
                     f" -> {names[0]} = {before}, {names[1]} = {after}")
    if (win.pad_bottom - win.pad_top) + (win.pad_right - win.pad_left) > 0:
        lines.append(wrap("  before = total // 2 rounds down, so the odd cell goes after (bottom/right), as TensorFlow "
                          "and Keras do (tensorflow/lite/kernels/padding.h)."))
    elif win.pad_top + win.pad_left > 0:
        lines.append(wrap("  total is even on both axes, so both sides get total / 2; an odd total would put its extra cell "
                          "after (bottom/right), as TensorFlow and Keras do."))
    return lines


def unread(win: geometry.Window2D) -> tuple[list[int], list[int]]:
    """Input rows and columns that no window reads (e.g. the border that 'valid' drops)."""
    rows = set(range(win.in_h)) - {in_y for out_y in range(win.out_h) for in_y, _ in win.window(out_y, 0)}
    cols = set(range(win.in_w)) - {in_x for out_x in range(win.out_w) for _, in_x in win.window(0, out_x)}
    return sorted(rows), sorted(cols)


def unread_lines(win: geometry.Window2D, most: int | None = None) -> list[str]:
    """``unread`` as text ('rows 26, 27'); with ``most``, longer lists are cut to their first ``most``."""
    lines = []
    for word, values, size in zip(("rows", "columns"), unread(win), (win.in_h, win.in_w), strict=True):
        if values:
            shown = values if most is None or len(values) <= most else values[:most]
            tail = "" if len(shown) == len(values) else f", ... ({len(values)} of {size})"
            lines.append(f"{word} {', '.join(map(str, shown))}{tail}")
    return lines


def _windowed(result, precision: int, max_windows: int) -> list[str]:
    layer, win = result.layer, result.geometry
    lines = size_lines(win, layer.padding) + [""] + padding_lines(win, layer.padding)
    unread = unread_lines(win)
    if unread:
        lines.append(f"  never read by any window (dropped): {' and '.join(unread)} of the input.")
    if any(result.padding):
        lines.append(wrap("  fill: " + FILL[layer.type]))
        lines += _zero_fill_contrast(result, precision)
        lines += ["", f"padded input ({win.in_h + win.pad_top + win.pad_bottom} x {win.in_w + win.pad_left + win.pad_right}, 'pad' = padding):"]
        lines += _padded_grids(result, precision)
    lines += ["", "windows: each output cell and the input cells x[row, column] it read (pad = padding)"]
    grids = channel_grids(result.input, layer.data_format)
    pre = channel_grids(result.pre_activation, layer.data_format)
    post = channel_grids(result.output, layer.data_format)
    for w in result.windows[:max_windows]:
        lines += _window_lines(result, w, grids, pre, post, precision)
    if len(result.windows) > max_windows:
        lines.append(f"  ... {len(result.windows) - max_windows} more windows (ProbeResult.windows has them all)")
    return lines


def _zero_fill_contrast(result, precision: int) -> list[str]:
    """For pooling: which outputs zero padding (or dividing by the pool area) would have changed."""
    layer = result.layer
    if not isinstance(layer, (S.MaxPooling2D, S.AveragePooling2D)):
        return []
    grids = channel_grids(result.input, layer.data_format)
    post = channel_grids(result.output, layer.data_format)
    changed = []
    for c, grid in enumerate(grids):
        for w in result.windows:
            if not any(cell.padding for cell in w.cells):
                continue
            real = [float(grid[cell.index]) for cell in w.cells if not cell.padding]
            value = float(post[c][w.out])
            other = max(max(real), 0.0) if isinstance(layer, S.MaxPooling2D) else float(np.float32(sum(real)) / np.float32(len(w.cells)))
            if other != value:
                where = f"out[{w.out[0]}, {w.out[1]}]" + (f" channel {c}" if len(grids) > 1 else "")
                changed.append(f"{where} = {fmt(other, precision)}, not {fmt(value, precision)}")
    what = "Zero padding" if isinstance(layer, S.MaxPooling2D) else "Dividing by the pool area"
    if not changed:
        return [wrap(f"  ({what} would give the same outputs on this input.)")]
    more = f"; and {len(changed) - 6} more" if len(changed) > 6 else ""
    return [wrap(f"  {what} instead would give: " + "; ".join(changed[:6]) + more + ".")]


def _padded_grids(result, precision: int) -> list[str]:
    win = result.geometry
    lines = []
    grids = channel_grids(result.input, result.layer.data_format)
    for c, grid in enumerate(grids):
        rows = []
        for in_y in range(-win.pad_top, win.in_h + win.pad_bottom):
            rows.append(["pad" if win.is_padding(in_y, in_x) else fmt(grid[in_y, in_x], precision)
                         for in_x in range(-win.pad_left, win.in_w + win.pad_right)])
        text = format_grid(rows, "  ")
        lines.append(text if len(grids) == 1 else f"  channel {c}:\n{text}")
    return lines


def _cell_name(cell) -> str:
    return f"x[{cell.index[0]},{cell.index[1]}]"


def _value(grid: np.ndarray, cell, precision: int) -> str:
    return "pad" if cell.padding else fmt(grid[cell.index], precision)


def _sum_text(terms: list[str], products: int, bias: str | None) -> str:
    """``a*b + c*d + bias`` spelled out, or 'sum of N products' when it would be too long."""
    if products + (bias is not None) <= 18:
        return " + ".join(terms + ([f"{_paren(bias)} (bias)"] if bias is not None else []))
    return f"sum of {products} products" + (" + bias" if bias is not None else "")


def _activated(value: float, after: float, activation: str, precision: int) -> str:
    return f" = {fmt(value, precision)}" + (f" -> {activation} -> {fmt(after, precision)}" if activation != "linear" else "")


def _window_lines(result, w, grids, pre, post, precision: int) -> list[str]:
    layer = result.layer
    head = f"  out[{w.out[0]}, {w.out[1]}]"
    reads = head + " reads " + ", ".join(_cell_name(c) + (" (pad)" if c.padding else "") for c in w.cells)
    if isinstance(layer, S.Conv2D):
        kernel = result.weights["kernel"]
        taps = kernel.reshape(-1, *kernel.shape[2:])  # (kh * kw, C, F): row-major taps, the order of w.cells
        bias = result.weights.get("bias")
        lines = [reads]
        for f in range(kernel.shape[3]):
            terms = [f"{_paren(fmt(taps[t, c, f], precision))}*" + ("0[pad]" if cell.padding else _paren(fmt(grid[cell.index], precision)))
                     for t, cell in enumerate(w.cells) for c, grid in enumerate(grids)]
            body = _sum_text(terms, len(terms), None if bias is None else fmt(bias[f], precision))
            label = "" if kernel.shape[3] == 1 else f"filter {f}: "
            lines.append(f"      {label}{body}{_activated(pre[f][w.out], post[f][w.out], layer.activation, precision)}")
        return lines
    if isinstance(layer, S.DepthwiseConv2D):
        kernel = result.weights["kernel"]  # (kh, kw, C, M)
        taps = kernel.reshape(-1, *kernel.shape[2:])  # (kh * kw, C, M)
        bias = result.weights.get("bias")
        multiplier = kernel.shape[3]
        lines = [reads]
        for c, grid in enumerate(grids):
            for m in range(multiplier):
                o = c * multiplier + m
                terms = [f"{_paren(fmt(taps[t, c, m], precision))}*" + ("0[pad]" if cell.padding else _paren(fmt(grid[cell.index], precision)))
                         for t, cell in enumerate(w.cells)]
                body = _sum_text(terms, len(terms), None if bias is None else fmt(bias[o], precision))
                lines.append(f"      channel {o} (reads input channel {c} only): {body}"
                             f"{_activated(pre[o][w.out], post[o][w.out], layer.activation, precision)}")
        return lines
    single = len(grids) == 1
    lines = [] if single else [reads]
    for c, grid in enumerate(grids):
        cells = w.cells if isinstance(layer, S.MaxPooling2D) else [cell for cell in w.cells if not cell.padding]
        args = ", ".join((f"{_cell_name(cell)}=" if single else "") + _value(grid, cell, precision) for cell in cells)
        if isinstance(layer, S.MaxPooling2D):
            expr = f"max({args}) = {fmt(post[c][w.out], precision)}"
        else:
            total = fmt(np.sum([grid[cell.index] for cell in cells], dtype=np.float32), precision)
            expr = f"mean({args}) = {total} / {len(cells)} = {fmt(post[c][w.out], precision)}"
            skipped = len(w.cells) - len(cells)
            expr += f"   ({skipped} pad cell{'s' * (skipped != 1)} left out of the count)" if skipped else ""
        lines.append(f"{head} = {expr}" if single else f"      channel {c}: {expr}")
    return lines


def _zero_padding(result) -> list[str]:
    layer = result.layer
    (pad_top, pad_bottom), (pad_left, pad_right) = layer.padding
    grids = channel_grids(result.input, layer.data_format)
    in_h, in_w = grids[0].shape
    lines = [
        f"padding per side (given explicitly): pad_top = {pad_top}, pad_bottom = {pad_bottom}, pad_left = {pad_left}, pad_right = {pad_right}",
        "output size: out = n + before + after",
        f"  out_h = {in_h} + {pad_top} + {pad_bottom} = {in_h + pad_top + pad_bottom}",
        f"  out_w = {in_w} + {pad_left} + {pad_right} = {in_w + pad_left + pad_right}",
        "  fill: ZeroPadding2D adds real zeros: a following MaxPooling2D can select them (its own 'same' padding never wins).",
        "",
        f"windows: each output cell copies one input cell: out[row, column] = x[row - {pad_top}, column - {pad_left}], or 0 where that lies in the padding",
    ]
    return lines


def _flatten(result, precision: int, max_windows: int) -> list[str]:
    layer = result.layer
    x = result.input
    names = "x[channel, row, column]" if layer.data_format == S.CHANNELS_FIRST else "x[row, column, channel]"
    if layer.data_format == S.CHANNELS_FIRST and x.ndim > 2:
        moved = (x.shape[0], *x.shape[2:], x.shape[1])
        lines = [f"order: data_format='channels_first': Keras first moves the channel axis (axis 1) to the end, "
                 f"{tuple(x.shape)} -> {moved}, then reads in C order (channel fastest).",
                 "  So the order is row, column, channel - the same as a channels_last model - not channel, row, column."]
        chw = x[0].reshape(-1)
        if not np.array_equal(chw, result.output[0]):
            lines.append("  A C-H-W reading (NNC's Affine, or numpy's reshape of the channels_first array) would give instead:")
            lines.append(format_vector(chw, precision, "    "))
    else:
        lines = [f"order: data_format='channels_last': read in C order, last axis fastest: {tuple(x.shape)} -> {(x.shape[0], int(np.prod(x.shape[1:])))}."]
    lines += ["", f"windows: each output element and the input cell {names} it copies"]
    for w in result.windows[:max_windows]:
        index = w.cells[0].index
        lines.append(f"  out[{w.out[0]}] = x[{','.join(map(str, index))}] = {fmt(x[(0, *index)], precision)}")
    if len(result.windows) > max_windows:
        lines.append(f"  ... {len(result.windows) - max_windows} more (ProbeResult.windows has them all)")
    return lines


def _dense(result, precision: int, max_windows: int) -> list[str]:
    x, kernel, bias = result.input[0], result.weights["kernel"], result.weights.get("bias")
    activation = result.layer.activation
    lines = ["out[j] = sum_i x[i] * kernel[i, j]" + (" + bias[j]" if bias is not None else "")
             + ("" if activation == "linear" else f", then {activation}")]
    for w in result.windows[:max_windows]:
        j = w.out[0]
        terms = [f"{_paren(fmt(x[i], precision))}*{_paren(fmt(kernel[i, j], precision))}" for i in range(len(x))]
        body = _sum_text(terms, len(x), None if bias is None else fmt(bias[j], precision))
        lines.append(f"  out[{j}] = {body}{_activated(result.pre_activation[0, j], result.output[0, j], activation, precision)}")
    if len(result.windows) > max_windows:
        lines.append(f"  ... {len(result.windows) - max_windows} more")
    return lines


# --- a whole model ------------------------------------------------------------------------------
