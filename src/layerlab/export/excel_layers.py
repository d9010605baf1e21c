"""One layer of the live-formula workbook: its sheet of formulas and its weights sheet.

``LayerWriter.write_layer`` dispatches on the layer's type (never its name) and returns the
``Block`` of the layer's output, which the next layer reads. Every windowed layer takes its
geometry from ``layerlab.geometry`` (through ``Layer.window``) and visits the window's taps in the
unpadded input: taps in the padding are left out (zero padding of Conv2D adds nothing; padded
cells of MaxPooling2D never win; AveragePooling2D divides by the real cells only).
"""

from __future__ import annotations

import numpy as np

from layerlab import spec as S
from layerlab.export import excel_common as X
from layerlab.export import excel_ops as ops
from layerlab.export.excel_layout import Block, a1, call, cells_ref, check_fits, check_formula, rect_ref
from layerlab.registry import EXCEL_FORMULAS

VALUE_FORMAT = "0.00"
WEIGHT_FORMAT = "0.0000"
COLUMN_WIDTH = 6.5


def weights_title(layer_name: str) -> str:
    """The (unsanitised) title of a layer's weights sheet; ``sheet_title`` makes it legal."""
    return f"{layer_name[:23]} weights"


def _axis(data_format: str) -> int:
    return 0 if data_format == S.CHANNELS_FIRST else 2


def _tensor_index(data_format: str, y: int, x: int, c: int) -> tuple[int, int, int]:
    return (c, y, x) if data_format == S.CHANNELS_FIRST else (y, x, c)


def _hwc(shape: tuple[int, ...], data_format: str) -> tuple[int, int, int]:
    """(height, width, channels) of a rank-3 shape, or (y, x, c) of a rank-3 index."""
    return (shape[1], shape[2], shape[0]) if data_format == S.CHANNELS_FIRST else (shape[0], shape[1], shape[2])


def _taps(win, out_y: int, out_x: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Real (filter_y, in_y) and (filter_x, in_x) taps of one window; padding taps left out."""
    cells = win.window(out_y, out_x)
    ys = [(fy, cells[fy * win.kernel_w][0]) for fy in range(win.kernel_h)]
    xs = [(fx, cells[fx][1]) for fx in range(win.kernel_w)]
    return [t for t in ys if 0 <= t[1] < win.in_h], [t for t in xs if 0 <= t[1] < win.in_w]


class LayerWriter:
    """Writes blocks of values and formulas onto one sheet, top to bottom."""

    def __init__(self, ws, weight_ws=None, weights=None) -> None:
        self.ws = ws
        self.title = ws.title
        self.row = 3  # rows 1-2: the layer's title and what its formulas compute
        self.weight_ws = weight_ws
        self.weights = weights or {}
        self.where = ws.title

    # --- placing values ----------------------------------------------------------------------

    def alloc(self, shape, label: str, channel_axis: int | None = None) -> Block:
        """A new block under the previous one, with its label and channel labels."""
        shape = tuple(int(v) for v in shape)
        X.set_text(self.ws.cell(self.row, 1), f"{label} {shape}")
        X.bold(self.ws.cell(self.row, 1))
        block = Block(self.title, shape, self.row + 2, 2, channel_axis if len(shape) == 3 else None)
        check_fits(block, self.where)
        if len(shape) == 3:
            for c, (row, _, _, _) in enumerate(block.rects()):
                X.set_text(self.ws.cell(row - 1, 1), f"channel {c}")
        else:
            for i in range(shape[0]):
                self.ws.cell(block.top + i, 1, i)
        self.row = block.bottom + 3
        return block

    def put(self, block: Block, index, formula: str) -> None:
        cell = self.ws.cell(*block.cell(index))
        cell.value = "=" + check_formula(formula, self.where)
        cell.number_format = VALUE_FORMAT

    def put_value(self, block: Block, index, value: float) -> None:
        cell = self.ws.cell(*block.cell(index), float(value))
        cell.number_format = VALUE_FORMAT

    def format(self, block: Block, rule) -> None:
        """One colour scale per channel grid, so every feature map uses its own range."""
        for row, col, height, width in block.rects():
            self.ws.conditional_formatting.add(rect_ref(self.title, row, col, height, width, self.title), rule())

    def widths(self) -> None:
        for col in range(2, self.ws.max_column + 1):
            self.ws.column_dimensions[X.openpyxl().utils.get_column_letter(col)].width = COLUMN_WIDTH
        self.ws.column_dimensions["A"].width = 14

    def _describe(self, info, text: str) -> None:
        layer = info.layer
        X.set_text(self.ws.cell(1, 1), f"layer {info.index}: {layer.name} ({layer.type}), output {tuple(info.output_shape)}")
        X.bold(self.ws.cell(1, 1))
        X.set_text(self.ws.cell(2, 1), text)

    # --- layers ------------------------------------------------------------------------------

    def write_layer(self, info, src: Block, out_axis: int) -> Block:
        """Write ``info.layer`` reading ``src``; return the block of its output."""
        layer = info.layer
        self.where = f"layer {info.index} '{layer.name}' ({layer.type})"
        out = getattr(self, EXCEL_FORMULAS.lookup(layer))(info, src, out_axis)
        self.widths()
        return out

    def _emit(self, shape, axis, exprs: dict, activation: str, label: str) -> Block:
        """Write pre-activation formulas ``exprs`` (index -> formula) and then the activation."""
        if activation == "linear":
            out = self.alloc(shape, label, axis)
            for index, expr in exprs.items():
                self.put(out, index, expr)
        else:
            out = self.alloc(shape, f"{label}, after {activation}", axis)
            pre = self.alloc(shape, f"{label}, before {activation}", axis)
            for index, expr in exprs.items():
                self.put(pre, index, expr)
            self._apply(activation, pre, out)
            self.format(pre, X.heat_rule)
        self.format(out, X.heat_rule)
        return out

    def _apply(self, activation: str, src: Block, out: Block) -> None:
        if activation == ops.SOFTMAX:
            self._softmax(src, out)
            return
        for index in np.ndindex(src.shape):
            self.put(out, index, ops.elementwise(activation, src.ref(index, self.title)))

    def _softmax(self, src: Block, out: Block) -> None:
        # As Keras: exp(x - max) / sum(exp(x - max)) along the last axis.
        groups = src.shape[:-1] or (1,)
        top = self.alloc(groups, "max along the last axis", out.channel_axis)
        exps = self.alloc(src.shape, "exp(x - max)", out.channel_axis)
        sums = self.alloc(groups, "sum of exp", out.channel_axis)
        for group in np.ndindex(src.shape[:-1]):
            g = group or (0,)
            members = [(*group, k) for k in range(src.shape[-1])]
            self.put(top, g, call("MAX", cells_ref(src.sheet, [src.cell(m) for m in members], self.title)))
            for m in members:
                self.put(exps, m, f"EXP({src.ref(m, self.title)}-{top.ref(g, self.title)})")
            self.put(sums, g, call("SUM", cells_ref(exps.sheet, [exps.cell(m) for m in members], self.title)))
            for m in members:
                self.put(out, m, f"{exps.ref(m, self.title)}/{sums.ref(g, self.title)}")

    def _conv2d(self, info, src: Block, out_axis: int) -> Block:
        layer: S.Conv2D = info.layer
        fmt = layer.data_format
        win = layer.window(info.input_shapes[0])
        _, _, channels = _hwc(info.input_shapes[0], fmt)
        kernel, bias = self.weights["kernel"], self.weights.get("bias")
        k_origin, bias_cell = self._kernel_sheet(kernel, bias)
        wt = self.weight_ws.title
        # One SUMPRODUCT per input channel when the taps form a rectangle on both sheets.
        rectangles = src.channel_axis == _axis(fmt) and layer.dilation_rate == (1, 1)
        exprs = {}
        for f in range(layer.filters):
            for out_y in range(win.out_h):
                for out_x in range(win.out_w):
                    ys, xs = _taps(win, out_y, out_x)
                    terms = []
                    for c in range(channels):
                        kr, kc = k_origin(c, f)
                        if not ys or not xs:
                            continue
                        if rectangles:
                            (fy0, y0), (fx0, x0) = ys[0], xs[0]
                            r, col = src.grid_cell(c, y0, x0)
                            window = rect_ref(src.sheet, r, col, len(ys), len(xs), self.title)
                            taps = rect_ref(wt, kr + fy0, kc + fx0, len(ys), len(xs), self.title)
                            terms.append(f"SUMPRODUCT({window},{taps})")
                        else:
                            terms += [
                                f"{src.ref(_tensor_index(fmt, y, x, c), self.title)}*{X.sheet_ref(wt)}!{a1((kr + fy, kc + fx))}"
                                for fy, y in ys for fx, x in xs
                            ]
                    if bias is not None:
                        terms.append(f"{X.sheet_ref(wt)}!{a1(bias_cell(f))}")
                    exprs[_tensor_index(fmt, out_y, out_x, f)] = "+".join(terms) or "0"
        self._describe(info, f"each value = SUMPRODUCT(window of '{src.sheet}', kernel on '{wt}') summed over the "
                       f"{channels} input channel(s){' + bias' if bias is not None else ''}; kernel_size={layer.kernel_size}, "
                       f"strides={layer.strides}, padding='{layer.padding}' (taps in the zero padding left out), "
                       f"dilation_rate={layer.dilation_rate}")
        return self._emit(info.output_shape, _axis(fmt), exprs, layer.activation, "output")

    def _kernel_sheet(self, kernel: np.ndarray, bias):
        """Draw an HWIO kernel as (in_channel, filter) grids and the bias below them.

        Returns:
            ``origin(c, f)``: the (row, col) of grid (in_channel c, filter f)'s first tap, and
            ``bias_cell(f)``: the (row, col) of filter f's bias.
        """
        ws = self.weight_ws
        kernel_h, kernel_w, channels, filters = kernel.shape
        X.set_text(ws.cell(1, 1), f"{self.where}: kernel HWIO {kernel.shape}, one grid per (in_channel, filter)")
        X.bold(ws.cell(1, 1))
        origin = lambda c, f: (4 + c * (kernel_h + 1), 2 + f * (kernel_w + 1))
        for f in range(filters):
            X.set_text(ws.cell(3, origin(0, f)[1]), f"filter {f}")
        for c in range(channels):
            X.set_text(ws.cell(origin(c, 0)[0], 1), f"in_channel {c}")
            for f in range(filters):
                r, col = origin(c, f)
                for fy in range(kernel_h):
                    for fx in range(kernel_w):
                        ws.cell(r + fy, col + fx, float(kernel[fy, fx, c, f])).number_format = WEIGHT_FORMAT
        bias_cell = lambda f: (4 + channels * (kernel_h + 1), origin(0, f)[1])  # after one blank row
        if bias is not None:
            X.set_text(ws.cell(bias_cell(0)[0], 1), "bias")
            for f in range(filters):
                ws.cell(*bias_cell(f), float(bias[f])).number_format = WEIGHT_FORMAT
        last = origin(channels - 1, filters - 1)
        ws.conditional_formatting.add(f"B4:{a1((last[0] + kernel_h - 1, last[1] + kernel_w - 1))}", X.diverging_rule())
        return origin, bias_cell

    def _pooling(self, info, src: Block, out_axis: int) -> Block:
        layer = info.layer
        fmt = layer.data_format
        win = layer.window(info.input_shapes[0])
        _, _, channels = _hwc(info.input_shapes[0], fmt)
        function = "MAX" if isinstance(layer, S.MaxPooling2D) else "AVERAGE"
        rectangles = src.channel_axis == _axis(fmt)
        out = self.alloc(info.output_shape, "output", _axis(fmt))
        for c in range(channels):
            for out_y in range(win.out_h):
                for out_x in range(win.out_w):
                    ys, xs = _taps(win, out_y, out_x)
                    if rectangles:
                        r, col = src.grid_cell(c, ys[0][1], xs[0][1])
                        args = [rect_ref(src.sheet, r, col, len(ys), len(xs), self.title)]
                    else:
                        args = [src.ref(_tensor_index(fmt, y, x, c), self.title) for _, y in ys for _, x in xs]
                    # AVERAGE is not nested by call(): it stays one call even past 255 arguments.
                    formula = call(function, args) if function == "MAX" else f"AVERAGE({','.join(args)})"
                    self.put(out, _tensor_index(fmt, out_y, out_x, c), formula)
        never = "padded cells are not in the range, so they never win" if function == "MAX" else "divided by the real cells only"
        self._describe(info, f"each value = {function} over a {layer.pool_size} window of '{src.sheet}', "
                       f"strides={layer.strides}, padding='{layer.padding}' ({never})")
        self.format(out, X.heat_rule)
        return out

    def _zero_padding(self, info, src: Block, out_axis: int) -> Block:
        layer: S.ZeroPadding2D = info.layer
        fmt = layer.data_format
        (top, _), (left, _) = layer.padding
        in_h, in_w, _ = _hwc(info.input_shapes[0], fmt)
        out = self.alloc(info.output_shape, "output", _axis(fmt))
        for index in np.ndindex(info.output_shape):
            y, x, c = _hwc(index, fmt)
            if 0 <= y - top < in_h and 0 <= x - left < in_w:
                self.put(out, index, src.ref(_tensor_index(fmt, y - top, x - left, c), self.title))
            else:
                self.put_value(out, index, 0.0)
        self._describe(info, f"'{src.sheet}' with zeros around it: padding={layer.padding}")
        self.format(out, X.heat_rule)
        return out

    def _activation(self, info, src: Block, out_axis: int) -> Block:
        activation = info.layer.as_activation()  # Activation, or a ReLU equal to relu / relu6
        out = self.alloc(info.output_shape, "output", src.channel_axis)
        self._apply(activation, src, out)
        how = "EXP(x - MAX(x)) / SUM(EXP(x - MAX(x))) along the last axis, as Keras" if activation == ops.SOFTMAX else ops.elementwise(activation, "x")
        self._describe(info, f"{activation} of each value of '{src.sheet}': {how}")
        self.format(out, X.heat_rule)
        return out

    def _flatten(self, info, src: Block, out_axis: int) -> Block:
        layer: S.Flatten = info.layer
        in_shape = tuple(info.input_shapes[0])
        out = self.alloc(info.output_shape, "output")
        if layer.data_format == S.CHANNELS_FIRST and len(in_shape) >= 2:
            # Keras moves axis 1 (channels) to the end first: the order is H-W-C.
            moved = (*in_shape[1:], in_shape[0])
            order = [(idx[-1], *idx[:-1]) for idx in np.ndindex(moved)]
            how = "channels_first: Keras moves the channels last first, so the order is H, W, C"
        else:
            order = list(np.ndindex(in_shape))
            how = "in C order of the input"
        for i, index in enumerate(order):
            self.put(out, (i,), src.ref(index, self.title))
        self._describe(info, f"the values of '{src.sheet}' in one column, {how}")
        return out

    def _reshape(self, info, src: Block, out_axis: int) -> Block:
        out = self.alloc(info.output_shape, "output", out_axis)
        for source, index in zip(np.ndindex(src.shape), np.ndindex(info.output_shape), strict=True):
            self.put(out, index, src.ref(source, self.title))
        self._describe(info, f"the values of '{src.sheet}' in C order, reshaped to {tuple(info.output_shape)}")
        return out

    def _identity(self, info, src: Block, out_axis: int) -> Block:
        out = self.alloc(info.output_shape, "output", src.channel_axis)
        for index in np.ndindex(src.shape):
            self.put(out, index, src.ref(index, self.title))
        self._describe(info, f"the values of '{src.sheet}' (Dropout does nothing at inference)")
        return out

    def _rescaling(self, info, src: Block, out_axis: int) -> Block:
        layer: S.Rescaling = info.layer
        # Keras casts scale and offset to float32 before it multiplies.
        scale, offset = ops.number(float(np.float32(layer.scale))), ops.number(float(np.float32(layer.offset)))
        out = self.alloc(info.output_shape, "output", src.channel_axis)
        for index in np.ndindex(src.shape):
            self.put(out, index, f"{src.ref(index, self.title)}*{scale}+{offset}")
        self._describe(info, f"each value of '{src.sheet}' times {scale} plus {offset}")
        self.format(out, X.heat_rule)
        return out

    def _dense(self, info, src: Block, out_axis: int) -> Block:
        layer: S.Dense = info.layer
        kernel, bias = self.weights["kernel"], self.weights.get("bias")
        ws, wt = self.weight_ws, self.weight_ws.title
        n_in, units = kernel.shape
        X.set_text(ws.cell(1, 1), f"{self.where}: kernel {kernel.shape} (in_features, units)")
        X.bold(ws.cell(1, 1))
        for j in range(units):
            X.set_text(ws.cell(3, 2 + j), f"unit {j}")
        for i in range(n_in):
            ws.cell(4 + i, 1, i)
            for j in range(units):
                ws.cell(4 + i, 2 + j, float(kernel[i, j])).number_format = WEIGHT_FORMAT
        ws.conditional_formatting.add(f"B4:{a1((3 + n_in, 1 + units))}", X.diverging_rule())
        bias_row = 4 + n_in + 1
        if bias is not None:
            X.set_text(ws.cell(bias_row, 1), "bias")
            for j in range(units):
                ws.cell(bias_row, 2 + j, float(bias[j])).number_format = WEIGHT_FORMAT
        column = rect_ref(src.sheet, src.top, src.left, n_in, 1, self.title)
        exprs = {}
        for j in range(units):
            expr = f"SUMPRODUCT({column},{rect_ref(wt, 4, 2 + j, n_in, 1, self.title)})"
            if bias is not None:
                expr += f"+{X.sheet_ref(wt)}!{a1((bias_row, 2 + j))}"
            exprs[(j,)] = expr
        self._describe(info, f"each value = SUMPRODUCT(column of '{src.sheet}', kernel column on '{wt}')"
                       f"{' + bias' if bias is not None else ''}")
        return self._emit(info.output_shape, None, exprs, layer.activation, "output")

    def _batch_norm(self, info, src: Block, out_axis: int) -> Block:
        layer: S.BatchNormalization = info.layer
        ws, wt = self.weight_ws, self.weight_ws.title
        axis = layer.feature_axis(tuple(info.input_shapes[0]))
        names = list(self.weights)
        X.set_text(ws.cell(1, 1), f"{self.where}: one row per feature (axis {layer.axis})")
        X.bold(ws.cell(1, 1))
        for j, name in enumerate(names):
            X.set_text(ws.cell(3, 2 + j), name)
            for i, value in enumerate(self.weights[name].tolist()):
                ws.cell(4 + i, 1, i)
                ws.cell(4 + i, 2 + j, float(value)).number_format = WEIGHT_FORMAT
        ref = lambda name, i: f"{X.sheet_ref(wt)}!{a1((4 + i, 2 + names.index(name)))}"
        eps = ops.number(float(np.float32(layer.epsilon)))
        out = self.alloc(info.output_shape, "output", src.channel_axis)
        for index in np.ndindex(src.shape):
            i = index[axis]
            expr = f"({src.ref(index, self.title)}-{ref('moving_mean', i)})/SQRT({ref('moving_variance', i)}+{eps})"
            if layer.scale:
                expr += f"*{ref('gamma', i)}"
            if layer.center:
                expr += f"+{ref('beta', i)}"
            self.put(out, index, expr)
        self._describe(info, f"(x - moving_mean) / SQRT(moving_variance + {eps}) * gamma + beta, per feature, "
                       f"weights on '{wt}'")
        self.format(out, X.heat_rule)
        return out


# What a workbook of live formulas computes: spec class -> LayerWriter method.
for _cls, _method in {
    S.Conv2D: "_conv2d", S.MaxPooling2D: "_pooling", S.AveragePooling2D: "_pooling", S.ZeroPadding2D: "_zero_padding",
    S.Activation: "_activation", S.Flatten: "_flatten", S.Dense: "_dense", S.Dropout: "_identity",
    S.BatchNormalization: "_batch_norm", S.Reshape: "_reshape", S.Rescaling: "_rescaling",
}.items():
    EXCEL_FORMULAS.register(_cls, _method)
EXCEL_FORMULAS.register(S.ReLU, "_activation", note="ReLU() and ReLU(max_value=6) only")
EXCEL_FORMULAS.decline((S.Conv1D, S.MaxPooling1D, S.AveragePooling1D, S.GlobalAveragePooling1D, S.GlobalMaxPooling1D,
                        S.ZeroPadding1D), "1-D layers have no sheet layout yet")
EXCEL_FORMULAS.decline((S.DepthwiseConv2D, S.SeparableConv2D), "depthwise convolutions have no formula writer yet")
EXCEL_FORMULAS.decline((S.GlobalAveragePooling2D, S.GlobalMaxPooling2D), "global pooling has no formula writer yet")
EXCEL_FORMULAS.decline((S.Add, S.Subtract, S.Multiply, S.Average, S.Maximum, S.Minimum, S.Concatenate),
                       "a workbook of formulas holds a chain of layers, not a graph")
EXCEL_FORMULAS.decline((S.PReLU, S.Cropping2D, S.UpSampling2D, S.Permute, S.Normalization),
                       "this layer has no formula writer yet")
