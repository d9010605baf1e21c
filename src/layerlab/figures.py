"""Pictures of a probed layer: the padded input grid with each window outlined, padded cells
hatched and labelled, values in the cells, and the output grid beside it.

matplotlib is imported lazily through ``layerlab.errors.require`` (the ``plot`` extra), and only
its object-oriented API is used (no pyplot, no global state). Layout is computed in inches, so a
figure's pixel size is ``fig.get_size_inches() * dpi`` exactly (tests rely on it).
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from layerlab import spec as S
from layerlab.errors import ExportError, require
from layerlab.explain import channel_grids, describe, fmt

MAX_CHANNELS = 4  # channels drawn per side; the text explanation has them all
PAD_FACE, PAD_EDGE, PAD_TEXT = "#e4e4e4", "#9a9a9a", "#6b6b6b"
PAD_LABEL = {"Conv2D": "pad\n0", "DepthwiseConv2D": "pad\n0", "MaxPooling2D": "pad\n-inf", "AveragePooling2D": "pad\nskip", "ZeroPadding2D": "pad\n0"}
DPI = 120
FOOTNOTE = {
    "Conv2D": "hatched = padding: Conv2D pads zeros",
    "DepthwiseConv2D": "hatched = padding (zeros); each output channel c*M+m reads input channel c ONLY",
    "MaxPooling2D": "hatched = padding: MaxPooling2D pads -inf, never selected;  bold = the value each window selected",
    "AveragePooling2D": "hatched = padding: AveragePooling2D leaves it out of the count it divides by",
    "ZeroPadding2D": "hatched = padding: real zeros",
}


@dataclass
class Panel:
    """One grid to draw: texts (H, W), optional face colours, hatched cells and window outlines."""

    title: str
    texts: list[list[str]]
    faces: list[list[object]] | None = None
    padded: np.ndarray | None = None  # (H, W) bool
    row_labels: list[int] | None = None
    col_labels: list[int] | None = None
    outlines: list[tuple[int, int, int, int, object, float]] = field(default_factory=list)  # y0, x0, y1, x1, colour, inset
    dots: list[tuple[int, int, object]] = field(default_factory=list)  # dilated taps: y, x, colour
    corner: list[list[str]] | None = None  # small text in each cell's corner
    bold: set[tuple[int, int]] = field(default_factory=set)  # cells whose text is bold (max pooling winners)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.texts), len(self.texts[0])


def _colors(n: int) -> list:
    cmap = require("matplotlib", "plot", "probe figures").colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _windowed_panels(result) -> tuple[list[Panel], list[Panel], str]:
    layer, win = result.layer, result.geometry
    shown = _shown_windows(win)
    palette = _colors(len(shown))
    colors = {i: palette[k] for k, i in enumerate(shown)}
    rows = list(range(-win.pad_top, win.in_h + win.pad_bottom))
    cols = list(range(-win.pad_left, win.in_w + win.pad_right))
    padded = np.array([[win.is_padding(y, x) for x in cols] for y in rows])
    label = PAD_LABEL[layer.type]
    inputs = []
    grids = channel_grids(result.input, layer.data_format)
    for c, grid in enumerate(grids[:MAX_CHANNELS]):
        texts = [[label if win.is_padding(y, x) else fmt(grid[y, x], 4) for x in cols] for y in rows]
        panel = Panel(f"input channel {c}" + (", padded" if padded.any() else ""), texts, padded=padded, row_labels=rows, col_labels=cols)
        for i in shown:
            w = result.windows[i]
            ys = [cell.index[0] + win.pad_top for cell in w.cells]
            xs = [cell.index[1] + win.pad_left for cell in w.cells]
            panel.outlines.append((min(ys), min(xs), max(ys), max(xs), colors[i], 0.06 + 0.07 * ((w.out[0] + w.out[1]) % 3)))
            if win.dilation_h > 1 or win.dilation_w > 1:
                panel.dots += [(y, x, colors[i]) for y, x in zip(ys, xs, strict=True)]
        if isinstance(layer, S.MaxPooling2D):
            out_grid = channel_grids(result.output, layer.data_format)[c]
            for w in result.windows:
                winner = next(cell for cell in w.cells if not cell.padding and grid[cell.index] == out_grid[w.out])
                panel.bold.add((winner.index[0] + win.pad_top, winner.index[1] + win.pad_left))
        inputs.append(panel)
    outputs = []
    word = "filter" if isinstance(layer, S.Conv2D) else "channel"
    faces = [[_tint(colors[i]) if (i := out_y * win.out_w + out_x) in colors else "white" for out_x in range(win.out_w)]
             for out_y in range(win.out_h)]
    for c, grid in enumerate(channel_grids(result.output, layer.data_format)[:MAX_CHANNELS]):
        texts = [[fmt(v, 4) for v in row] for row in grid]
        panel = Panel(f"output {word} {c}", texts, faces=faces, row_labels=list(range(win.out_h)), col_labels=list(range(win.out_w)))
        panel.outlines = [(i // win.out_w, i % win.out_w, i // win.out_w, i % win.out_w, colors[i], 0.06) for i in shown]
        outputs.append(panel)
    pads = f"pad_top={win.pad_top}  pad_bottom={win.pad_bottom}  pad_left={win.pad_left}  pad_right={win.pad_right}"
    sizes = (f"out = ceil(n / s): {win.in_h}x{win.in_w} -> {win.out_h}x{win.out_w}" if layer.padding == "same"
             else f"out = floor((n - k) / s) + 1: {win.in_h}x{win.in_w} -> {win.out_h}x{win.out_w}")
    if len(shown) < len(result.windows):
        pads += f"\noutlined: {len(shown)} of {len(result.windows)} overlapping windows (corners and centre)"
    return inputs, outputs, f"{sizes}    {pads}"


def _shown_windows(win) -> list[int]:
    """Indices of the windows to outline: all, unless many overlap (then the corners and the centre)."""
    overlap = win.stride_h < (win.kernel_h - 1) * win.dilation_h + 1 or win.stride_w < (win.kernel_w - 1) * win.dilation_w + 1
    total = win.out_h * win.out_w
    if total <= 12 or not overlap:
        return list(range(total))
    picks = [(0, 0), (0, win.out_w - 1), (win.out_h // 2, win.out_w // 2), (win.out_h - 1, 0), (win.out_h - 1, win.out_w - 1)]
    return sorted({out_y * win.out_w + out_x for out_y, out_x in picks})


def _zero_padding_panels(result) -> tuple[list[Panel], list[Panel], str]:
    layer = result.layer
    (top, bottom), (left, right) = layer.padding
    inputs, outputs = [], []
    for c, grid in enumerate(channel_grids(result.input, layer.data_format)[:MAX_CHANNELS]):
        inputs.append(Panel(f"input channel {c}", [[fmt(v, 4) for v in row] for row in grid], faces=[["#dbe9f6"] * grid.shape[1]] * grid.shape[0]))
    for c, grid in enumerate(channel_grids(result.output, layer.data_format)[:MAX_CHANNELS]):
        h, w = grid.shape
        padded = np.ones((h, w), bool)
        padded[top : h - bottom, left : w - right] = False
        texts = [["pad\n0" if padded[y, x] else fmt(grid[y, x], 4) for x in range(w)] for y in range(h)]
        faces = [[None if padded[y, x] else "#dbe9f6" for x in range(w)] for y in range(h)]
        outputs.append(Panel(f"output channel {c}", texts, faces=faces, padded=padded))
    return inputs, outputs, f"pad_top={top}  pad_bottom={bottom}  pad_left={left}  pad_right={right}  (real zeros)"


def _flatten_panels(result) -> tuple[list[Panel], list[Panel], str]:
    layer = result.layer
    x = result.input
    n = result.output.shape[1]
    cmap = require("matplotlib", "plot", "probe figures").colormaps["viridis"]
    shade = [_tint(cmap(i / max(n - 1, 1)), 0.45) for i in range(n)]
    where = {w.cells[0].index: w.out[0] for w in result.windows}
    inputs = []
    if x.ndim == 4:
        for c, grid in enumerate(channel_grids(x, layer.data_format)[:MAX_CHANNELS]):
            def index(y, xx, c=c):
                return (c, y, xx) if layer.data_format == S.CHANNELS_FIRST else (y, xx, c)
            h, w = grid.shape
            inputs.append(Panel(
                f"input channel {c}", [[fmt(grid[y, xx], 4) for xx in range(w)] for y in range(h)],
                faces=[[shade[where[index(y, xx)]] for xx in range(w)] for y in range(h)],
                corner=[[f"->{where[index(y, xx)]}" for xx in range(w)] for y in range(h)],
            ))
    per_row = 12
    out = result.output[0]
    rows = [list(range(i, min(i + per_row, n))) for i in range(0, n, per_row)]
    texts = [[fmt(out[i], 4) for i in r] + [""] * (per_row - len(r)) for r in rows] if n > per_row else [[fmt(v, 4) for v in out]]
    faces = [[shade[i] for i in r] + [None] * (per_row - len(r)) for r in rows] if n > per_row else [shade]
    corner = [[str(i) for i in r] + [""] * (per_row - len(r)) for r in rows] if n > per_row else [[str(i) for i in range(n)]]
    outputs = [Panel("output (index in the corner)", texts, faces=faces, corner=corner)]
    order = "row, column, channel (Keras moves channels last first)" if layer.data_format == S.CHANNELS_FIRST else "row, column, channel"
    return inputs, outputs, f"order: {order};  '->i' = position in the output"


def _dense_panels(result) -> tuple[list[Panel], list[Panel], str]:
    x = result.input[0]
    kernel = result.weights["kernel"]
    inputs = [Panel("input x", [[fmt(v, 4)] for v in x], faces=[["#dbe9f6"]] * len(x)),
              Panel("kernel (in, units)", [[fmt(v, 4) for v in row] for row in kernel], faces=[["#f3e3c3"] * kernel.shape[1]] * kernel.shape[0])]
    outputs = [Panel("output", [[fmt(v, 4) for v in result.output[0]]], faces=[["#d5ecd4"] * result.output.shape[1]])]
    if "bias" in result.weights:
        bias = result.weights["bias"]
        outputs.append(Panel("bias", [[fmt(v, 4) for v in bias]], faces=[["#f3e3c3"] * len(bias)]))
    formula = "sum_i x[i] * kernel[i, j]" + (" + bias[j]" if "bias" in result.weights else "")
    activation = result.layer.activation
    return inputs, outputs, f"out[j] = {formula if activation == 'linear' else f'{activation}({formula})'}"


def _tint(color, amount: float = 0.3):
    r, g, b = color[:3]
    return (1 - amount + amount * r, 1 - amount + amount * g, 1 - amount + amount * b)


def probe_figure(result):
    """A matplotlib ``Figure`` of a ``ProbeResult`` (input and windows left, output right)."""
    figure_mod = require("matplotlib.figure", "plot", "probe figures")
    patches = require("matplotlib.patches", "plot", "probe figures")
    layer = result.layer
    if result.geometry is not None:
        left, right, note = _windowed_panels(result)
    elif isinstance(layer, S.ZeroPadding2D):
        left, right, note = _zero_padding_panels(result)
    elif isinstance(layer, S.Flatten):
        left, right, note = _flatten_panels(result)
    else:
        left, right, note = _dense_panels(result)
    if isinstance(layer, S.Dense):
        columns = [[left[0]], [left[1]], right]
    else:
        columns = [left, right] if left else [right]
    cells_w = sum(max(p.shape[1] for p in col) for col in columns)
    cells_h = max(sum(p.shape[0] for p in col) for col in columns)
    longest = max(len(line) for col in columns for p in col for row in p.texts for t in row for line in t.split("\n"))
    cell = float(np.clip(min(0.5 + 0.07 * max(longest - 3, 0), 12.0 / max(cells_w, 1), 9.0 / max(cells_h, 1)), 0.25, 0.85))
    gap_x, gap_y, margin, bottom = 0.9, 0.55, 0.55, 0.55
    col_w = [max(p.shape[1] for p in col) * cell for col in columns]
    col_h = [sum(p.shape[0] for p in col) * cell + gap_y * (len(col) - 1) for col in columns]
    fig_w = max(2 * margin + sum(col_w) + gap_x * (len(columns) - 1), 6.0)
    title = "\n".join(textwrap.wrap(describe(layer), int(fig_w * 11)))
    top = 1.15 + 0.22 * title.count("\n") + 0.18 * note.count("\n")
    fig_h = top + max(col_h) + bottom
    fig_w, fig_h = round(fig_w * DPI) / DPI, round(fig_h * DPI) / DPI  # whole pixels: the PNG is exactly size * DPI
    fig = figure_mod.Figure(figsize=(fig_w, fig_h), dpi=DPI)
    fig.text(0.5, 1 - 0.12 / fig_h, title, ha="center", va="top", fontsize=11, weight="bold")
    fig.text(0.5, 1 - (0.45 + 0.22 * title.count("\n")) / fig_h, note, ha="center", va="top", fontsize=9, color="#333333")
    x0 = (fig_w - sum(col_w) - gap_x * (len(columns) - 1)) / 2
    font = float(np.clip(cell * 72 * 1.45 / max(longest, 2.5), 5.0, 12.0))
    legend = FOOTNOTE.get(layer.type)
    if legend:
        fig.text(0.5, 0.18 / fig_h, legend, ha="center", va="bottom", fontsize=8.5, color=PAD_TEXT, style="italic")
    for i, col in enumerate(columns):
        y = fig_h - top
        for panel in col:
            h, w = panel.shape
            ax = fig.add_axes([x0 / fig_w, (y - h * cell) / fig_h, w * cell / fig_w, h * cell / fig_h])
            _draw_panel(ax, panel, patches, font)
            y -= h * cell + gap_y
        if i < len(columns) - 1:
            fig.text((x0 + col_w[i] + gap_x / 2) / fig_w, (fig_h - top - col_h[i] / 2) / fig_h, "\u2192", ha="center", va="center", fontsize=22, color="#555555")
        x0 += col_w[i] + gap_x
    return fig


def _draw_panel(ax, panel: Panel, patches, font: float) -> None:
    h, w = panel.shape
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_title(panel.title, fontsize=9, pad=12 if panel.col_labels else 4)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if panel.col_labels:
        ax.set_xticks(range(w), [str(v) for v in panel.col_labels], fontsize=6.5, color="#777777")
        ax.set_yticks(range(h), [str(v) for v in panel.row_labels], fontsize=6.5, color="#777777")
        ax.xaxis.tick_top()
        ax.tick_params(length=0, pad=2)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    for y in range(h):
        for x in range(w):
            pad = panel.padded is not None and bool(panel.padded[y, x])
            if not panel.texts[y][x] and not pad:
                continue
            face = PAD_FACE if pad else (panel.faces[y][x] if panel.faces and panel.faces[y][x] is not None else "white")
            ax.add_patch(patches.Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor=face, edgecolor=PAD_EDGE if pad else "#b0b0b0",
                                           hatch="///" if pad else None, linewidth=0.6, clip_on=False))
            ax.text(x, y, panel.texts[y][x], ha="center", va="center", fontsize=font * (0.75 if pad else 1),
                    color=PAD_TEXT if pad else "black", linespacing=0.9, weight="bold" if (y, x) in panel.bold else "normal",
                    bbox=dict(facecolor=PAD_FACE, edgecolor="none", pad=0.5) if pad else None)
            if panel.corner and panel.corner[y][x]:
                ax.text(x + 0.45, y + 0.45, panel.corner[y][x], ha="right", va="bottom", fontsize=font * 0.6, color="#444444")
    for y0, x0, y1, x1, color, inset in panel.outlines:
        ax.add_patch(patches.Rectangle((x0 - 0.5 + inset, y0 - 0.5 + inset), x1 - x0 + 1 - 2 * inset, y1 - y0 + 1 - 2 * inset,
                                       fill=False, edgecolor=color, linewidth=2.0, clip_on=False))
    for y, x, color in panel.dots:
        ax.plot([x - 0.32], [y - 0.32], marker="o", markersize=4, color=color)


def figure_format(path) -> str:
    """'png' or 'svg' from the suffix of ``path``; ExportError otherwise."""
    fmt_name = Path(path).suffix.lower().lstrip(".")
    if fmt_name not in ("png", "svg"):
        raise ExportError(f"--figure {str(path)!r}: unsupported suffix '.{fmt_name}', expected .png or .svg. Rename the file")
    return fmt_name


def save_figure(fig, path, *, force: bool = False) -> Path:
    """Save ``fig`` as .png or .svg (by suffix), atomically; returns the path.

    An existing file is replaced only with ``force`` (``layerlab.publish.publish_file``).
    """
    from layerlab.publish import publish_file

    path = Path(path)
    fmt_name = figure_format(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt_name, dpi=DPI)
    with publish_file(path, force=force, flag="--figure") as tmp:
        tmp.write_bytes(buffer.getvalue())
    return path


def probe_svg(result) -> str:
    """The probe figure as an SVG document (for notebooks)."""
    buffer = io.StringIO()
    probe_figure(result).savefig(buffer, format="svg")
    return buffer.getvalue()
