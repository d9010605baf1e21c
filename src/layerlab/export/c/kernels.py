"""Render each lowered step as C: one function per step, float32 or int8, from the templates.

``Kernels(unit, qplan)`` renders into a ``Unit`` (the pieces of one .c file); ``qplan`` is None
for float32 code. Each ``render`` call returns the step's function name; the caller writes the
calls in ``*_predict``.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from layerlab.errors import ExportError
from layerlab.export.c import plan as P
from layerlab.export.c.emit import FLOAT, INT8, Unit, float_literal, render, shape_text, tap_range, window_range
from layerlab.export.c.names import c_comment, c_identifier
from layerlab.export.c.quantize import QPlan, QStep, Stage

_COMMENT = re.compile(r"/\*.*?\*/", re.S)

# One C statement per Keras activation, on the float ``x`` (layerlab.engine.activations' forms).
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946
_HARD_SILU = "{ float h = x + 3.0f; h = h > 0.0f ? (h < 6.0f ? h : 6.0f) : 0.0f; x = x * (h / 6.0f); }"
ACTIVATION_C = {
    "linear": "",
    "relu": "x = x > 0.0f ? x : 0.0f;",
    "relu6": "x = x > 0.0f ? (x < 6.0f ? x : 6.0f) : 0.0f;",
    "leaky_relu": "x = x >= 0.0f ? x : 0.2f * x;",
    "tanh": "x = ll_tanh(x);",
    "sigmoid": "x = ll_sigmoid(x);",
    "hard_sigmoid": "x = x + 3.0f; x = (x > 0.0f ? (x < 6.0f ? x : 6.0f) : 0.0f) / 6.0f;",
    "hard_silu": _HARD_SILU,
    "hard_swish": _HARD_SILU,
    "softsign": "x = x / (1.0f + fabsf(x));",
    "softplus": "x = (x > 0.0f ? x : 0.0f) + log1pf(expf(-fabsf(x)));",
    "elu": "x = x > 0.0f ? x : expm1f(x);",
    "selu": f"x = {float_literal(_SELU_SCALE)} * (x > 0.0f ? x : {float_literal(_SELU_ALPHA)} * expm1f(x));",
    "silu": "x = x * ll_sigmoid(x);",
    "swish": "x = x * ll_sigmoid(x);",
    "gelu": "x = 0.5f * x * (1.0f + erff(x * 0.707106781f));",
    "exponential": "x = expf(x);",
}
# Conv outputs are computed BLOCK neighbours along x at a time, BLOCK_GROUP filters per pass
# over the taps: BLOCK * BLOCK_GROUP independent accumulators, few enough to stay in registers
# (16 on x86-64 SSE, 32 on a Cortex-M4F) and enough to keep the floating-point units busy. A
# lone position (borders, the rest of a row) takes ONE_GROUP filters per pass.
BLOCK = 4
BLOCK_GROUP = 6  # float, the block's inputs contiguous (one SIMD load): 24 accumulators
# int8 convolutions of at least this many MACs take the SMLAD kernel (conv_dot); smaller ones the
# compact scalar one, which keeps a tiny network's flash small (seed650: 4.0 KB, not 4.4).
DOT_MIN_MACS = 20000
BLOCK_GROUP_STRIDED = 3  # otherwise (strided inputs, int8: scalar code): 12 accumulators
ONE_GROUP = 8
_NO_MATH = {"linear", "relu", "relu6", "leaky_relu", "hard_sigmoid", "hard_silu", "hard_swish", "tanh"}


def _loop(buffer: str, source: str, size, statement: str, pad: str) -> str:
    """``buffer[i] = f(source[i])`` for i < size, the statement working on ``x``.

    With a constant size the loop is split at the last multiple of 4, so that GCC's -O2 (cost
    model 'very-cheap': no scalar epilogue) can vectorize the first part.
    """
    body = f"{pad}        const float v = {source}[i];\n{pad}        float x = v;\n{pad}        {statement}\n{pad}        {buffer}[i] = x;\n"
    body = body.replace(f"{pad}        const float v = {source}[i];\n{pad}        float x = v;\n", f"{pad}        float x = {source}[i];\n")
    if isinstance(size, int) and size % 4 and size > 4:
        return (f"{pad}    for (i = 0; i < {size - size % 4}; ++i) {{\n{body}{pad}    }}\n"
                f"{pad}    for (; i < {size}; ++i) {{\n{body}{pad}    }}\n")
    return f"{pad}    for (i = 0; i < {size}; ++i) {{\n{body}{pad}    }}\n"


class Kernels:
    """Renders steps into ``unit``; int8 when ``qplan`` is given."""

    def __init__(self, unit: Unit, qplan: QPlan | None = None) -> None:
        self.unit = unit
        self.qplan = qplan
        self.types = INT8 if qplan else FLOAT
        self._bodies: dict[tuple[str, ...], str] = {}  # a step's functions, names blanked -> the step function to call

    # -- small pieces ---------------------------------------------------------------------------
    def ops_function(self, fn: str, ops: tuple[P.Op, ...]) -> str | None:
        """``static float fn(float x)`` applying ``ops`` to one value; None when they are all linear."""
        lines = [line for op in ops for line in self.op_statements(op)]
        if not lines:
            return None
        body = "\n".join(f"    {line}" for line in lines)
        names = ", ".join(op.describe() for op in ops)
        self.unit.functions.append(f"/* {c_comment(names, 200)} */\nstatic float {fn}(float x)\n{{\n{body}\n    return x;\n}}\n")
        return fn

    def ops_pass(self, source: str, buffer: str, size, ops: tuple[P.Op, ...], indent: int = 4) -> str:
        """A C block applying ``ops`` to ``source[0 .. size)`` into ``buffer`` (may be the same),
        one loop per op, so that each loop is simple enough to vectorize; '' when all are linear.

        tanh runs as two loops, a clamp to [-9, 9] and the rational form without branches:
        clamping inside the same loop is control flow that keeps GCC from vectorizing it.
        """
        pad = " " * indent
        loops = []
        for op in ops:
            if op.activation == "tanh" and not op.is_rescale:
                self.unit.helper("tanh_clamped")
                statements = ["x = x > 9.0f ? 9.0f : (x < -9.0f ? -9.0f : x);", "x = ll_tanh_clamped(x);"]
            else:
                statements = self.op_statements(op)
            for statement in statements:
                loops.append(_loop(buffer, source, size, statement, pad))
                source = buffer
        if not loops:
            return "" if source == buffer else _loop(buffer, source, size, "", pad)
        return f"\n{pad}{{\n{pad}    int i;\n" + "".join(loops) + f"{pad}}}"

    def op_statements(self, op: P.Op) -> list[str]:
        """The C statements (on float ``x``) of one op; [] for linear."""
        if op.is_rescale:
            return [f"x = x * {float_literal(op.scale)} + {float_literal(op.offset)};"]
        if op.activation not in ACTIVATION_C:
            raise ExportError(f"C export: activation {op.activation!r} (layer {op.layer!r}) has no C form")
        if op.activation not in _NO_MATH:
            self.unit.math = True
        if op.activation in ("sigmoid", "silu", "swish"):
            self.unit.helper("sigmoid")
        if op.activation == "tanh":
            self.unit.helper("tanh_clamped", "tanh")
        return [ACTIVATION_C[op.activation]] if ACTIVATION_C[op.activation] else []

    def stage_function(self, k: int, fn: str, stage: Stage | None) -> str | None:
        """``static int32_t fn(int32_t value, int channel)`` for an int8 stage; None for the identity."""
        if stage is None:
            return None
        lines = []
        unit = self.unit
        if stage.kind in ("requant", "lut"):
            index = "value"
            if stage.source == "int32":
                mult = unit.array(k, "int32_t", f"{fn}_multiplier", stage.multiplier, f"{fn}: Q31 requantization multiplier per channel")
                # a table's input is symmetric (zero 0); a requantized output has the tensor's zero point
                zero = stage.out_zero if stage.kind == "requant" else 0
                low = str(zero) if stage.relu and stage.kind == "requant" else "-128"
                if int(np.min(stage.shift)) >= 33:  # every scale below 1/2: the high word alone, no branch
                    unit.helper("inline", "requantize_high")
                    high_shift = np.asarray(stage.shift, np.int64) - 32
                    shift = unit.array(k, "uint8_t", f"{fn}_shift", high_shift, f"{fn}: right shift of the product's high word per channel")
                    index = f"ll_requantize_high(value, {mult}[channel], {shift}[channel], {zero}, {low})"
                else:
                    unit.helper("inline", "requantize")
                    shift = unit.array(k, "uint8_t", f"{fn}_shift", stage.shift, f"{fn}: requantization right shift per channel")
                    index = f"ll_requantize(value, {mult}[channel], {shift}[channel], {zero}, {low})"
            else:
                lines.append("(void)channel;")
            if stage.kind == "lut":
                lut = unit.array(k, "int8_t", f"{fn}_table", stage.lut,
                                 f"{fn}: table of {', '.join(op.describe() for op in stage.ops) or 'the layer functions'}, entry q + 128 for int8 input q")
                lines.append(f"return {lut}[{index} + 128];")
            else:
                lines.append(f"return {index};")
        else:  # 'float': exact float at the boundary
            unit.helper("quantize")
            apply = self.ops_function(f"{fn}_float", stage.ops) or ""
            scales = unit.array(k, "float", f"{fn}_in_scale", np.asarray(stage.in_scale, np.float32), f"{fn}: real value of one input unit per channel")
            index = f"{scales}[channel]" if len(stage.in_scale) > 1 else f"{scales}[0]"
            if len(stage.in_scale) == 1:
                lines.append("(void)channel;")
            real = f"(float)(value - {stage.in_zero}) * {index}" if stage.in_zero else f"(float)value * {index}"
            lines.append(f"return ll_quantize({apply}({real}) * {float_literal(1.0 / stage.out_scale)}, {stage.out_zero});" if apply else
                         f"return ll_quantize({real} * {float_literal(1.0 / stage.out_scale)}, {stage.out_zero});")
        body = "\n".join(f"    {line}" for line in lines)
        self.unit.helper("inline")
        self.unit.functions.append(f"static int32_t {fn}(int32_t value, int channel)\n{{\n{body}\n}}\n")
        return fn

    def name(self, k: int, step: P.Step) -> str:
        first = step.layers[0][0] if step.layers else step.kind
        return f"step{k}_{c_identifier(first, fallback=step.kind, max_len=20)}"

    def title(self, k: int, step: P.Step) -> str:
        return c_comment(f"step {k}: {step.describe() or step.kind}", max_len=200)

    # -- steps ------------------------------------------------------------------------------------
    def render(self, k: int, step: P.Step) -> str:
        """Write step ``k``'s functions; return the name to call. A step whose functions are
        another step's but for their names (a copy, a remap, a merge of the same shapes; their
        comments aside) calls that step's instead: less flash, and no two identical functions,
        which GCC folds into one (-fipa-icf). A function several steps call is kept from
        interprocedural constant propagation (``LL_NOIPA``): GCC 12.2 at -O2 dropped every call
        of one whose calls all passed the same buffers (MobileNetV3's squeeze-and-excite remaps;
        the export's self-check caught it)."""
        fn = self.name(k, step)
        start = len(self.unit.functions)
        getattr(self, f"_{step.kind}")(k, fn, step, self.qplan.steps[k] if self.qplan else None)
        own = re.compile(rf"\b{re.escape(fn)}(\w*)(?=\s*\()")  # this step's functions, defined or called
        key = tuple(own.sub(r"@\1", _COMMENT.sub("", text)) for text in self.unit.functions[start:])
        if key in self._bodies:
            del self.unit.functions[start:]
            return self._share(self._bodies[key])
        self._bodies[key] = fn
        return fn

    def _share(self, fn: str) -> str:
        """Mark step function ``fn``, now called by several steps, ``LL_NOIPA`` (see helpers.c)."""
        definition = re.compile(rf"^((?:LL_\w+ )*)static void {re.escape(fn)}\(", re.M)
        for i, text in enumerate(self.unit.functions):
            if "LL_NOIPA" not in text.split("{", 1)[0] and definition.search(text):
                self.unit.functions[i] = definition.sub(rf"LL_NOIPA \1static void {fn}(", text, count=1)
                self.unit.helper("noipa")
        return fn

    def _conv(self, k: int, fn: str, step: P.ConvStep, q: QStep | None) -> None:
        unit, win = self.unit, step.window
        image = step.input.image(step.data_format)
        kernel_h, kernel_w, in_channels, filters = step.kernel_hwio.shape
        macs = win.out_h * win.out_w * filters * kernel_h * kernel_w * in_channels
        if q and step.pool is None and image.stride_c == 1 and macs >= DOT_MIN_MACS:
            self._conv_dot(k, fn, step, q)
            return
        layout = "layout HWIO (filter_y, filter_x, in_channel, out_channel), as Keras"
        folded = " with the BatchNormalization folded in" if any(t == "BatchNormalization" for _, t in step.layers) else ""
        if q:
            kernel = unit.array(k, "int8_t", f"{fn}_kernel", q.kernel_q, f"{fn} kernel{folded}, int8 per-channel, shape {step.kernel_hwio.shape}, {layout}")
            bias = unit.array(k, "int32_t", f"{fn}_bias", q.bias_q, f"{fn} bias in accumulator units") if q.bias_q is not None else None
            stage1 = self.stage_function(k, f"{fn}_stage1", q.stage1)
            store = lambda v, c: f"(int8_t){stage1}({v}, {c})"  # noqa: E731
            zero = "0"
        else:
            kernel = unit.array(k, "float", f"{fn}_kernel", step.kernel_hwio, f"{fn} kernel{folded}, shape {step.kernel_hwio.shape}, {layout}")
            bias = unit.array(k, "float", f"{fn}_bias", step.bias, f"{fn} bias{folded}, shape ({filters},)") if step.bias is not None else None
            store = lambda v, c: v  # noqa: E731  (float: element-wise ops run as passes afterwards)
            zero = "0.0f"
        title = self.title(k, step)
        conv_h, conv_w = win.out_h, win.out_w
        if step.pool is None:
            out = step.output.image(step.data_format)
            out_sx, out_sc = out.stride_x, out.stride_c
        else:
            out_sx, out_sc = 1, conv_w  # conv_rows: [row][filter][conv_x]
        minus_zero = f" - {q.in_zero}" if q and q.in_zero else ""  # int8: each input less its zero point
        geometry = dict(kernel=kernel, kernel_w=kernel_w, tap_size=in_channels * filters, in_channels=in_channels, filters=filters,
                        minus_zero=minus_zero,
                        dilation_h=win.dilation_h, dilation_w=win.dilation_w, in_stride_y=image.stride_y, in_stride_x=image.stride_x,
                        in_stride_c=image.stride_c, **self.types)

        def groups(template: str, size: int, positions: int) -> str:
            blocks = []
            step_x = win.stride_w * image.stride_x  # input distance between neighbouring positions
            for first in range(0, filters, size):
                count = min(size, filters - first)
                accs = [[f"acc{first + j}_{p}" if positions > 1 else f"acc{first + j}" for p in range(positions)] for j in range(count)]
                init = [f"{bias}[{first + j}]" if bias else zero for j in range(count)]
                value = [f"x{p}" for p in range(positions)] if positions > 1 else ["value"]
                blocks.append(render(
                    template, first=first, last=first + count - 1,
                    declare="\n".join(f"        {self.types['acc_type']} " + ", ".join(f"{a} = {init[j]}" for a in accs[j]) + ";" for j in range(count)),
                    loads="                    const " + self.types["acc_type"] + " " + ", ".join(f"x{p} = x[{p * step_x}]{minus_zero}" for p in range(positions)) + ";",
                    macs="\n".join(f"                    {accs[j][p]} += {value[p]} * w[{j}];" for j in range(count) for p in range(positions)),
                    stores="\n".join(f"        out[{p * out_sx + (first + j) * out_sc}] = {store(accs[j][p], first + j)};"
                                      for j in range(count) for p in range(positions)), **geometry))
            return "".join(blocks)

        block_group = BLOCK_GROUP if win.stride_w * image.stride_x == 1 and not q else BLOCK_GROUP_STRIDED
        fx = tap_range("in_x0", win.pad_left, win.pad_right, image.w, kernel_w, win.dilation_w, unit)
        unit.helper("noinline")
        unit.functions.append(render("conv_block.c.tmpl", title=title, fn=fn, block=BLOCK, block_last=BLOCK - 1, stride_w=win.stride_w,
                                     pad_left=win.pad_left, groups=groups("conv_block_group.c.tmpl", block_group, BLOCK), **self.types))
        # Positions whose taps all lie inside the input along x: [interior_begin, interior_end).
        span_w = (kernel_w - 1) * win.dilation_w
        interior_begin = min(conv_w, -(-win.pad_left // win.stride_w))
        last_start = image.w - 1 - span_w + win.pad_left  # largest in_x0 + pad_left with every tap inside
        interior_end = max(interior_begin, min(conv_w, last_start // win.stride_w + 1) if last_start >= 0 else 0)
        left = ""
        if interior_begin > 0:
            left = (f"    for (; conv_x < {interior_begin}; ++conv_x) {{\n"
                    f"        {fn}_one(input, in_y0, filter_y_begin, filter_y_end, conv_x, out + conv_x * {out_sx});\n    }}\n")
        tail = ""
        if (interior_end - interior_begin) % BLOCK and interior_end - interior_begin > BLOCK:
            # The rest of the interior as one more block that overlaps the previous one: the
            # overlapped outputs are computed twice and written twice with the same values.
            tail = (f"    {fn}_block(input, in_y0, filter_y_begin, filter_y_end, {interior_end - BLOCK}, "
                    f"out + {(interior_end - BLOCK) * out_sx});\n    conv_x = {interior_end};\n")
        fy = tap_range("in_y0", win.pad_top, win.pad_bottom, image.h, kernel_h, win.dilation_h, unit)
        # Where the block loop (and the overlapping tail block) leave conv_x: the rest go one by one.
        # No loop when nothing is left: GCC warns (-Waggressive-loop-optimizations) on the dead loop.
        blocks_end = interior_begin + (interior_end - interior_begin) // BLOCK * BLOCK
        after = interior_end if tail else max(blocks_end, interior_begin)
        right = ""
        if after < conv_w:
            right = (f"    for (; conv_x < {conv_w}; ++conv_x) {{\n"
                     f"        {fn}_one(input, in_y0, filter_y_begin, filter_y_end, conv_x, out + conv_x * {out_sx});\n    }}\n")
        if left or right:  # positions whose taps reach into the padding, or the rest after the blocks
            unit.functions.append(render("conv_one.c.tmpl", title=title, fn=fn, filters=filters, stride_w=win.stride_w,
                                         pad_left=win.pad_left, filter_x_begin=fx[0], filter_x_end=fx[1],
                                         groups=groups("conv_one_group.c.tmpl", ONE_GROUP, 1), **self.types))
        unit.functions.append(render("conv_row.c.tmpl", title=title, fn=fn, conv_w=conv_w, filters=filters, out_stride_x=out_sx,
                                     out_stride_c=out_sc, stride_h=win.stride_h, pad_top=win.pad_top, filter_y_begin=fy[0],
                                     filter_y_end=fy[1], left_border=left, tail_block=tail, right_border=right, block=BLOCK,
                                     interior_end=interior_end, ctype=self.types["ctype"]))
        common = dict(title=title, fn=fn, filters=filters, in_shape=shape_text(step.input.dims), out_shape=shape_text(step.output.dims),
                      ctype=self.types["ctype"])
        if step.pool is None:
            post = "" if q else self.ops_pass("output", "output", step.output.size, step.pre)
            unit.functions.append(render("conv.c.tmpl", out_h=conv_h, out_stride_y=out.stride_y, post_pass=post, **common))
            return
        pw = step.pool.window
        out = step.output.image(step.data_format)
        cy = window_range("conv_y0", pw.pad_top, pw.pad_bottom, pw.in_h, pw.kernel_h)
        cx = window_range("conv_x0", pw.pad_left, pw.pad_right, pw.in_w, pw.kernel_w)
        padding = "same" if pw.pad_top + pw.pad_bottom + pw.pad_left + pw.pad_right else "valid"
        geometry_values = dict(conv_shape=f"({conv_h}, {conv_w}) x {filters} filters", pool_padding=padding, out_h=out.h, out_w=out.w,
                               pool_stride_h=pw.stride_h, pool_stride_w=pw.stride_w, pool_pad_top=pw.pad_top, pool_pad_left=pw.pad_left,
                               conv_y_begin=cy[0], conv_y_end=cy[1], conv_w=conv_w, out_stride_y=out.stride_y,
                               out_stride_x=out.stride_x, out_stride_c=out.stride_c, **common)
        stage2 = self.stage_function(k, f"{fn}_stage2", q.stage2) if q else None
        post_pass = "" if q else self.ops_pass("output", "output", step.output.size, step.post)
        if step.pool.kind == "max":
            # Max pooling merges each conv row into the output as it comes: one row of scratch.
            unit.scratch = max(unit.scratch, filters * conv_w)
            pre_pass = "" if q else self.ops_pass("conv_rows", "conv_rows", filters * conv_w, step.pre, indent=12)
            finish_row = ""
            if stage2:
                finish_row = (f"\n        for (out_channel = 0; out_channel < {filters}; ++out_channel) {{\n"
                              f"            {self.types['ctype']} *cells = output + out_y * {out.stride_y} + out_channel * {out.stride_c};\n"
                              f"            for (out_x = 0; out_x < {out.w}; ++out_x) {{\n"
                              f"                cells[out_x * {out.stride_x}] = (int8_t){stage2}(cells[out_x * {out.stride_x}], out_channel);\n"
                              f"            }}\n        }}")
            unit.functions.append(render("conv_maxpool.c.tmpl", conv_x_begin=cx[0], conv_x_end=cx[1], pre_pass=pre_pass,
                                         finish_row=finish_row, post_pass=post_pass, **geometry_values))
            return
        # Average pooling sums whole windows: the rows of one window in scratch.
        unit.scratch = max(unit.scratch, pw.kernel_h * filters * conv_w)
        count = "rows * (conv_x_end - conv_x_begin)"
        if q:
            unit.helper("divide_round")
            init, result = "int32_t sum = 0;", f"(int8_t)ll_divide_round(sum, {count})"
            finish = (lambda v: f"(int8_t){stage2}({v}, out_channel)") if stage2 else (lambda v: v)
            pre_pass = ""
        else:
            init, result = "float sum = 0.0f;", f"sum / (float)({count})"
            finish = lambda v: v  # noqa: E731
            pre_pass = self.ops_pass("conv_rows", "conv_rows", f"rows * {filters * conv_w}", step.pre, indent=8)
        # Windows whose columns all lie inside the conv output: [x_interior_begin, x_interior_end).
        x_begin = min(out.w, -(-pw.pad_left // pw.stride_w))
        last = pw.in_w - pw.kernel_w + pw.pad_left
        x_end = max(x_begin, min(out.w, last // pw.stride_w + 1) if last >= 0 else 0)
        clipped = finish(f"{fn}_window(plane, rows, {cx[0]}, {cx[1]})")
        left = ""
        if x_begin > 0:
            left = (f"            for (; out_x < {x_begin}; ++out_x) {{\n"
                    f"                const int conv_x0 = out_x * {pw.stride_w} - {pw.pad_left};\n"
                    f"                cells[out_x * {out.stride_x}] = {clipped};\n            }}\n")
        unit.functions.append(render(
            "conv_pool.c.tmpl", pool_h=pw.kernel_h, pool_w=pw.kernel_w, row_size=filters * conv_w, pool_init=init,
            pool_update="sum += value;", pool_result=result, left_windows=left, x_interior_end=x_end,
            finish_interior=finish(f"{fn}_window(plane, rows, conv_x0, conv_x0 + {pw.kernel_w})"), finish_clipped=clipped,
            pre_pass=pre_pass, post_pass=post_pass, **geometry_values))

    def _depthwise(self, k: int, fn: str, step: P.DepthwiseStep, q: QStep | None) -> None:
        unit, win = self.unit, step.window
        image = step.input.image(step.data_format)
        out = step.output.image(step.data_format)
        kernel_h, kernel_w, _, out_channels = step.kernel_hwio.shape
        layout = (f"layout (filter_y, filter_x, out_channel): out_channel = in_channel * {step.multiplier} + m, "
                  "Keras' (kernel_h, kernel_w, in_channels, depth_multiplier) flattened")
        folded = " with the BatchNormalization folded in" if any(t == "BatchNormalization" for _, t in step.layers) else ""
        if q:
            kernel = unit.array(k, "int8_t", f"{fn}_kernel", q.kernel_q, f"{fn} depthwise kernel{folded}, int8 per-channel, {layout}")
            bias = unit.array(k, "int32_t", f"{fn}_bias", q.bias_q, f"{fn} bias in accumulator units") if q.bias_q is not None else None
            stage1 = self.stage_function(k, f"{fn}_stage1", q.stage1)
            store = f"(int8_t){stage1}(acc, out_channel)" if stage1 else "(int8_t)acc"
            zero, post = "0", ""
        else:
            kernel = unit.array(k, "float", f"{fn}_kernel", step.kernel_hwio, f"{fn} depthwise kernel{folded}, {layout}")
            bias = unit.array(k, "float", f"{fn}_bias", step.bias, f"{fn} bias{folded}, shape ({out_channels},)") if step.bias is not None else None
            store, zero = "acc", "0.0f"
            post = self.ops_pass("output", "output", step.output.size, step.pre)
        fy = tap_range("in_y0", win.pad_top, win.pad_bottom, image.h, kernel_h, win.dilation_h, unit)
        fx = tap_range("in_x0", win.pad_left, win.pad_right, image.w, kernel_w, win.dilation_w, unit)
        if q and step.multiplier == 1 and image.stride_c == 1 and out.stride_c == 1:  # channels side by side: four a word
            unit.helper("inline", "noinline", "hot", "dot_dsp")
            init = lambda c: f"{bias}[{c}]" if bias else "0"  # noqa: E731
            put = lambda acc, c: f"(int8_t){stage1}({acc}, {c})" if stage1 else f"(int8_t){acc}"  # noqa: E731
            unit.functions.append(render(
                "depthwise_dot.c.tmpl", title=self.title(k, step), fn=fn, in_shape=shape_text(step.input.dims),
                out_shape=shape_text(step.output.dims), channels=image.c, out_h=win.out_h, out_w=win.out_w, stride_h=win.stride_h,
                stride_w=win.stride_w, pad_top=win.pad_top, pad_left=win.pad_left, filter_y_begin=fy[0], filter_y_end=fy[1],
                filter_x_begin=fx[0], filter_x_end=fx[1], dilation_h=win.dilation_h, dilation_w=win.dilation_w,
                in_stride_y=image.stride_y, in_stride_x=image.stride_x, kernel=kernel, kernel_row=kernel_w * out_channels,
                out_stride_y=out.stride_y, out_stride_x=out.stride_x, zero=q.in_zero,
                **{f"bias_{i}": init(f"channel + {i}" if i else "channel") for i in range(4)}, bias_c=init("channel"),
                **{f"store_{i}": put(f"acc[{i}]", f"channel + {i}" if i else "channel") for i in range(4)}, store_c=put("acc", "channel")))
            return
        unit.functions.append(render(
            "depthwise.c.tmpl", title=self.title(k, step), fn=fn, in_shape=shape_text(step.input.dims), out_shape=shape_text(step.output.dims),
            multiplier=step.multiplier, channels=image.c, out_channels=out_channels, out_h=win.out_h, out_w=win.out_w,
            stride_h=win.stride_h, stride_w=win.stride_w, pad_top=win.pad_top, pad_left=win.pad_left, filter_y_begin=fy[0],
            filter_y_end=fy[1], filter_x_begin=fx[0], filter_x_end=fx[1], dilation_h=win.dilation_h, dilation_w=win.dilation_w,
            in_stride_y=image.stride_y, in_stride_x=image.stride_x, in_stride_c=image.stride_c, kernel=kernel,
            kernel_row=kernel_w * out_channels, acc_init=f"{bias}[out_channel]" if bias else zero, store=store,
            minus_zero=f" - {q.in_zero}" if q and q.in_zero else "",
            out_stride_y=out.stride_y, out_stride_x=out.stride_x, out_stride_c=out.stride_c, post_pass=post, **self.types))

    def _conv_dot(self, k: int, fn: str, step: P.ConvStep, q: QStep) -> None:
        """int8 conv over channels-inner input: per tap, a dot product of runs of channels (SMLAD)."""
        unit, win = self.unit, step.window
        image, out = step.input.image(step.data_format), step.output.image(step.data_format)
        kernel_h, kernel_w, in_channels, filters = step.kernel_hwio.shape
        folded = " with the BatchNormalization folded in" if any(t == "BatchNormalization" for _, t in step.layers) else ""
        ohwi = q.kernel_q.transpose(3, 0, 1, 2)
        if win.out_w == 1 and image.w == 1 and kernel_w == 1 and win.out_h > 1:
            # A column (a 1-D conv as Keras builds it, (steps, 1, channels)) runs as a row, so that
            # neighbouring outputs pair up: the same bytes, heights and widths swapped.
            win = dataclasses.replace(win, in_h=win.in_w, in_w=win.in_h, out_h=win.out_w, out_w=win.out_h, pad_top=win.pad_left,
                                      pad_bottom=win.pad_right, pad_left=win.pad_top, pad_right=win.pad_bottom, kernel_h=win.kernel_w,
                                      kernel_w=win.kernel_h, stride_h=win.stride_w, stride_w=win.stride_h, dilation_h=win.dilation_w,
                                      dilation_w=win.dilation_h)
            image, out = (dataclasses.replace(i, h=i.w, w=i.h, stride_y=i.stride_x, stride_x=i.stride_y) for i in (image, out))
            kernel_h, kernel_w = kernel_w, kernel_h
        kernel = unit.array(k, "int8_t", f"{fn}_kernel", ohwi,
                            f"{fn} kernel{folded}, int8 per-channel, layout OHWI (out_channel, filter_y, filter_x, in_channel): each filter's channels side by side")
        bias = unit.array(k, "int32_t", f"{fn}_bias", q.bias_q, f"{fn} bias in accumulator units") if q.bias_q is not None else None
        stage1 = self.stage_function(k, f"{fn}_stage1", q.stage1)
        store = lambda acc, c: f"(int8_t){stage1}({acc}, {c})" if stage1 else f"(int8_t){acc}"  # noqa: E731
        fy = tap_range("in_y0", win.pad_top, win.pad_bottom, image.h, kernel_h, win.dilation_h, unit)
        fx = tap_range("in_x0", win.pad_left, win.pad_right, image.w, kernel_w, win.dilation_w, unit)
        unit.helper("inline", "noinline", "hot", "dot_dsp", "dot_x2", "dot_2x2")
        # Output x positions whose taps all lie inside the input along x: [interior_begin, interior_end).
        span_w = (kernel_w - 1) * win.dilation_w
        interior_begin = min(win.out_w, -(-win.pad_left // win.stride_w))
        last_start = image.w - 1 - span_w + win.pad_left
        interior_end = max(interior_begin, min(win.out_w, last_start // win.stride_w + 1) if last_start >= 0 else 0)
        zero = q.in_zero  # the input's zero point: subtracted as each value is loaded at the borders
        interior_zero = ""
        if zero:
            # Inside the image along x every tap of a kernel row is read: sum((x - z) * w) = sum(x * w) - z * sum(w),
            # with the row sums of each filter precomputed (rows clipped at the top and bottom just sum fewer).
            sums = ohwi.astype(np.int64).sum(axis=(2, 3)).reshape(-1)  # (filters * kernel_h,)
            row_sums = unit.array(k, "int32_t", f"{fn}_row_sums", sums, f"{fn}: sum of each filter's weights per kernel row (zero-point correction)")
            pad = " " * 20
            interior_zero = (f"{pad}{{\n{pad}    int32_t fold_f = 0, fold_g = 0;\n"
                             f"{pad}    for (fy = filter_y_begin; fy < filter_y_end; ++fy) {{\n"
                             f"{pad}        fold_f += {row_sums}[f * {kernel_h} + fy];\n{pad}        fold_g += {row_sums}[g * {kernel_h} + fy];\n{pad}    }}\n"
                             f"{pad}    acc[0] -= {zero} * fold_f;\n{pad}    acc[2] -= {zero} * fold_f;\n"
                             f"{pad}    acc[1] -= {zero} * fold_g;\n{pad}    acc[3] -= {zero} * fold_g;\n{pad}}}\n")
        w_row = f"{kernel} + (f * {kernel_h} + fy) * {kernel_w * in_channels}"
        g_row = f"{kernel} + (g * {kernel_h} + fy) * {kernel_w * in_channels}"
        pad = " " * 24
        if win.dilation_w == 1 and image.stride_x == in_channels:  # a kernel row is one run: kernel_w * channels bytes
            interior = (f"{pad}ll_dot_2x2(x, x + {win.stride_w * image.stride_x}, {w_row}, {g_row}, {kernel_w * in_channels}, 0, acc);")
            border = (f"{pad}ll_dot_x2(row + (in_x0 + filter_x_begin) * {image.stride_x}, {w_row} + filter_x_begin * {in_channels},\n"
                      f"{pad}          {g_row} + filter_x_begin * {in_channels}, (filter_x_end - filter_x_begin) * {in_channels}, {zero}, &acc0, &acc1);")
        else:  # one run of channels per tap
            interior = (f"{pad}int fx;\n{pad}for (fx = 0; fx < {kernel_w}; ++fx) {{\n"
                        f"{pad}    ll_dot_2x2(x + fx * {win.dilation_w * image.stride_x}, x + fx * {win.dilation_w * image.stride_x} + "
                        f"{win.stride_w * image.stride_x}, {w_row} + fx * {in_channels}, {g_row} + fx * {in_channels}, {in_channels}, 0, acc);\n{pad}}}")
            border = (f"{pad}int fx;\n{pad}for (fx = filter_x_begin; fx < filter_x_end; ++fx) {{\n"
                      f"{pad}    ll_dot_x2(row + (in_x0 + fx * {win.dilation_w}) * {image.stride_x}, {w_row} + fx * {in_channels},\n"
                      f"{pad}              {g_row} + fx * {in_channels}, {in_channels}, {zero}, &acc0, &acc1);\n{pad}}}")
        unit.functions.append(render(
            "conv_dot.c.tmpl", title=self.title(k, step), fn=fn, in_shape=shape_text(step.input.dims), out_shape=shape_text(step.output.dims),
            in_channels=in_channels, filters=filters, out_h=out.h, out_w=out.w, stride_h=win.stride_h, stride_w=win.stride_w,
            pad_top=win.pad_top, pad_left=win.pad_left, fy_begin=fy[0], fy_end=fy[1], fx_begin=fx[0], fx_end=fx[1],
            dilation_h=win.dilation_h, in_stride_y=image.stride_y, in_stride_x=image.stride_x,
            out_stride_y=out.stride_y, out_stride_x=out.stride_x, out_stride_c=out.stride_c,
            bias_f=f"{bias}[f]" if bias else "0", bias_g=f"{bias}[g]" if bias else "0",
            interior_begin=interior_begin, interior_end=interior_end, interior_taps=interior, border_taps=border,
            interior_zero=interior_zero,
            store_f=store("acc0", "f"), store_g=store("acc1", "g"), store0_f=store("acc[0]", "f"), store1_g=store("acc[1]", "g"),
            store2_f=store("acc[2]", "f"), store3_g=store("acc[3]", "g")))

    def _dense(self, k: int, fn: str, step: P.DenseStep, q: QStep | None) -> None:
        unit = self.unit
        in_features, units = step.kernel.shape
        folded = " with the BatchNormalization folded in" if any(t == "BatchNormalization" for _, t in step.layers) else ""
        title = self.title(k, step)
        if q:
            kernel = unit.array(k, "int8_t", f"{fn}_kernel", q.kernel_q.T,
                                f"{fn} kernel{folded}, int8 per-unit, shape ({units}, {in_features}): Keras' (in, units) transposed so each unit reads one row")
            bias = unit.array(k, "int32_t", f"{fn}_bias", q.bias_q, f"{fn} bias in accumulator units") if q.bias_q is not None else None
            stage = self.stage_function(k, f"{fn}_stage1", q.stage1)
            init = lambda u: f"{bias}[{u}]" if bias else "0"  # noqa: E731
            done = lambda acc, u: f"{stage}({acc}, {u})" if stage else acc  # noqa: E731
            unit.helper("inline", "noinline", "hot", "dot_dsp", "dot_x2")
            unit.functions.append(render("dense_q.c.tmpl", title=title, fn=fn, units=units, in_features=in_features, kernel=kernel,
                                         bias_init=init("unit"), bias_init0=init("unit"), bias_init1=init("unit + 1"),
                                         finish=done("acc", "unit"), finish0=done("acc0", "unit"), finish1=done("acc1", "unit + 1")))
            return
        kernel = unit.array(k, "float", f"{fn}_kernel", step.kernel, f"{fn} kernel{folded}, shape ({in_features}, {units}), layout (in, units), as Keras")
        bias_init = unit.array(k, "float", f"{fn}_bias", step.bias, f"{fn} bias{folded}, shape ({units},)") + "[tile + u]" if step.bias is not None else "0.0f"
        finish = self.ops_pass("output", "output", units, step.pre)
        unit.functions.append(render("dense.c.tmpl", title=title, fn=fn, units=units, in_features=in_features,
                                     kernel=kernel, bias_init=bias_init, finish_loop=finish))

    def _windowed_common(self, step, win) -> dict:
        image, out = step.input.image(step.data_format), step.output.image(step.data_format)
        return dict(in_shape=shape_text(step.input.dims), out_shape=shape_text(step.output.dims), out_h=out.h, out_w=out.w,
                    in_stride_y=image.stride_y, in_stride_x=image.stride_x, in_stride_c=image.stride_c,
                    out_stride_y=out.stride_y, out_stride_x=out.stride_x, out_stride_c=out.stride_c, channels=image.c)

    def _pool(self, k: int, fn: str, step: P.PoolStep, q: QStep | None) -> None:
        win = step.pool.window
        cy = window_range("in_y0", win.pad_top, win.pad_bottom, win.in_h, win.kernel_h)
        cx = window_range("in_x0", win.pad_left, win.pad_right, win.in_w, win.kernel_w)
        padding = "same" if win.pad_top + win.pad_bottom + win.pad_left + win.pad_right else "valid"
        values = dict(title=self.title(k, step), fn=fn, padding=padding, stride_h=win.stride_h, stride_w=win.stride_w,
                      pad_top=win.pad_top, pad_left=win.pad_left, in_y_begin=cy[0], in_y_end=cy[1], in_x_begin=cx[0],
                      in_x_end=cx[1], ctype=self.types["ctype"], **self._windowed_common(step, win))
        if step.pool.kind == "max":
            self.unit.functions.append(render("pool_max.c.tmpl", **values))
        elif q:
            self.unit.helper("divide_round")
            self.unit.functions.append(render("pool_avg.c.tmpl", sum_type="int32_t", mean="(int8_t)ll_divide_round(sum, count)", **values))
        else:
            self.unit.functions.append(render("pool_avg.c.tmpl", sum_type="float", mean="sum / (float)count", **values))

    def _pad(self, k: int, fn: str, step: P.PadStep, q: QStep | None) -> None:
        (pad_top, pad_bottom), (pad_left, pad_right) = step.padding
        image = step.input.image(step.data_format)
        self.unit.functions.append(render(
            "pad.c.tmpl", title=self.title(k, step), fn=fn, ctype=self.types["ctype"], fill=str(q.out_zero) if q else "0",
            pad_top=pad_top, pad_bottom=pad_bottom,
            pad_left=pad_left, pad_right=pad_right, in_h=image.h, in_w=image.w, **self._windowed_common(step, None)))

    def _copy(self, k: int, fn: str, step: P.CopyStep, q: QStep | None) -> None:
        dims, src, dst = step.input.dims, step.input.strides, step.output.strides
        if len(dims) > 4:
            raise ExportError(f"C export: reordering a rank-{len(dims)} tensor {dims} is not supported (rank <= 4)")
        pad = 4 - len(dims)
        dims, src, dst = (1,) * pad + dims, (0,) * pad + src, (0,) * pad + dst
        values = {f"d{i}": dims[i] for i in range(4)} | {f"s{i}": src[i] for i in range(4)} | {f"o{i}": dst[i] for i in range(4)}
        self.unit.functions.append(render(
            "copy.c.tmpl", title=self.title(k, step), fn=fn, ctype=self.types["ctype"], dims=shape_text(step.input.dims),
            in_strides=shape_text(step.input.strides), out_strides=shape_text(step.output.strides), **values))

    def _merge(self, k: int, fn: str, step: P.MergeStep, q: QStep | None) -> None:
        count = len(step.sources)
        if q:
            self._merge_q(k, fn, step, q, count)
            return
        inputs = [f"in{i}[i]" for i in range(count)]
        if step.operation in ("add", "multiply", "average"):
            joined = (" * " if step.operation == "multiply" else " + ").join(inputs)
            value = f"({joined}) / {float_literal(count)}" if step.operation == "average" else joined
        elif step.operation == "subtract":
            value = f"{inputs[0]} - {inputs[1]}"
        else:  # maximum / minimum, folded left as Keras does
            self.unit.helper(step.operation)
            value = inputs[0]
            for other in inputs[1:]:
                value = f"ll_{step.operation}({value}, {other})"
        formula = {"add": " + ", "subtract": " - ", "multiply": " * "}.get(step.operation)
        formula = formula.join(f"in{i}" for i in range(count)) if formula else f"{step.operation} of in0 .. in{count - 1}"
        then = ", then " + ", ".join(op.describe() for op in step.pre) if step.pre else ""
        params = ", ".join(f"const float *in{i}" for i in range(count)) + ", float *output"
        self.unit.functions.append(render(
            "merge.c.tmpl", title=self.title(k, step), fn=fn, size=step.output.size, formula=formula, then=then, params=params,
            statement=f"output[i] = {value};", post_pass=self.ops_pass("output", "output", step.output.size, step.pre)))

    def _prelu(self, k: int, fn: str, step: P.PReLUStep, q: QStep | None) -> None:
        if q:
            raise ExportError(f"C export (int8): step {k} ({step.describe()}): PReLU has no int8 form yet. Export float32 instead")
        alpha = self.unit.array(k, "float", f"{fn}_alpha", step.alpha, f"{fn}: alpha for every value, in the tensor's memory order")
        self.unit.functions.append(
            f"/* {self.title(k, step)}\n * {step.output.size} values: x if x > 0, else alpha * x (in place when input == output). */\n"
            f"static void {fn}(const float *input, float *output)\n{{\n    int i;\n"
            f"    for (i = 0; i < {step.output.size}; ++i) {{\n        const float x = input[i];\n"
            f"        output[i] = x > 0.0f ? x : {alpha}[i] * x;\n    }}\n}}\n")

    def _remap(self, k: int, fn: str, step: P.RemapStep, q: QStep | None) -> None:
        ctype = self.types["ctype"]
        dims, src, dst = step.output.dims, step.input.strides, step.output.strides
        index = " + ".join(f"(i{a} / {u} + {o}) * {s}" if u > 1 else f"(i{a} + {o}) * {s}" if o else f"i{a} * {s}"
                           for a, (u, o, s) in enumerate(zip(step.up, step.offset, src, strict=True)))
        loops = "".join(f"{'    ' * (a + 1)}for (i{a} = 0; i{a} < {d}; ++i{a}) {{\n" for a, d in enumerate(dims))
        ends = "".join(f"{'    ' * (a + 1)}}}\n" for a in reversed(range(len(dims))))
        store = " + ".join(f"i{a} * {s}" for a, s in enumerate(dst))
        self.unit.functions.append(
            f"/* {self.title(k, step)}\n * output {shape_text(dims)}: along axis k, cell i copies input cell i / up[k] + "
            f"offset[k] (up {shape_text(step.up)}, offset {shape_text(step.offset)}). */\n"
            f"static void {fn}(const {ctype} *restrict input, {ctype} *restrict output)\n{{\n"
            f"    int {', '.join(f'i{a}' for a in range(len(dims)))};\n{loops}"
            f"{'    ' * (len(dims) + 1)}output[{store}] = input[{index}];\n{ends}}}\n")

    def _concat(self, k: int, fn: str, step: P.ConcatStep, q: QStep | None) -> None:
        """Each input copied (int8: requantized to the output's scale) into its block of the output."""
        ctype = self.types["ctype"]
        blocks, start = [], 0
        for i, layout in enumerate(step.inputs):
            dims, src = layout.dims, layout.strides
            offset = start * step.output.strides[step.axis]
            start += dims[step.axis]
            pad = 4 - len(dims)
            if pad < 0:
                raise ExportError(f"C export: Concatenate of rank-{len(dims)} tensors is not supported (rank <= 4)")
            d, s_in, s_out = (1,) * pad + dims, (0,) * pad + src, (0,) * pad + step.output.strides
            value = f"in{i}[i0 * {s_in[0]} + i1 * {s_in[1]} + i2 * {s_in[2]} + i3 * {s_in[3]}]"
            if q:
                zin = q.in_zeros[i]
                shifted = f"((int64_t){value} - {zin})" if zin else f"(int64_t){value}"
                value = (f"ll_clamp8((int32_t)((({shifted} * {q.multipliers[i]} + ((int64_t)1 << {q.shift - 1})) >> {q.shift}) + {q.out_zero}))")
                self.unit.helper("clamp8")
            blocks.append(
                f"    /* in{i}: dims {shape_text(dims)}, at {offset} of the output */\n"
                f"    for (i0 = 0; i0 < {d[0]}; ++i0) for (i1 = 0; i1 < {d[1]}; ++i1) for (i2 = 0; i2 < {d[2]}; ++i2) "
                f"for (i3 = 0; i3 < {d[3]}; ++i3) {{\n"
                f"        output[{offset} + i0 * {s_out[0]} + i1 * {s_out[1]} + i2 * {s_out[2]} + i3 * {s_out[3]}] = {value};\n    }}\n")
        params = ", ".join(f"const {ctype} *in{i}" for i in range(len(step.inputs))) + f", {ctype} *restrict output"
        self.unit.functions.append(
            f"/* {self.title(k, step)}\n * {len(step.inputs)} inputs along axis {step.axis} of {shape_text(step.output.dims)}. */\n"
            f"static void {fn}({params})\n{{\n    int i0, i1, i2, i3;\n" + "".join(blocks) + "}\n")

    def _merge_q(self, k: int, fn: str, step: P.MergeStep, q: QStep, count: int) -> None:
        """int8 merge: the inputs requantized to the output scale with one shift (see quantize)."""
        rounding = f"((int64_t)1 << {q.shift - 1})"
        m = [f"(int64_t){v}" for v in q.multipliers]
        x = [f"((int32_t)in{i}[i] - {z})" if z else f"(int32_t)in{i}[i]" for i, z in enumerate(q.in_zeros)]  # x - its zero point
        zo = f" + {q.out_zero}" if q.out_zero else ""
        if step.operation == "multiply":
            body = [f"const int64_t acc = (int64_t)({x[0]} * {x[1]}) * {m[0]};",
                    f"const int32_t value = (int32_t)((acc + {rounding}) >> {q.shift}){zo};"]
        elif step.operation in ("maximum", "minimum"):
            pick = ">" if step.operation == "maximum" else "<"
            body = [f"int32_t value = (int32_t)(((int64_t){x[0]} * {m[0]} + {rounding}) >> {q.shift}){zo};"]
            for i in range(1, count):
                body += [f"{{ const int32_t other = (int32_t)(((int64_t){x[i]} * {m[i]} + {rounding}) >> {q.shift}){zo};",
                         f"  value = other {pick} value ? other : value; }}"]
        else:  # add, subtract, average: one sum of the scaled inputs
            terms = " + ".join(f"(int64_t){x[i]} * {m[i]}" for i in range(count))
            body = [f"const int32_t value = (int32_t)(({terms} + {rounding}) >> {q.shift}){zo};"]
        body.append(f"output[i] = (int8_t)(value < {q.low} ? {q.low} : (value > {q.high} ? {q.high} : value));")
        then = ", then " + ", ".join(op.describe() for op in step.pre) if step.pre else ""
        formula = f"{step.operation} of in0 .. in{count - 1}, requantized: multipliers {', '.join(map(str, q.multipliers))} >> {q.shift}"
        params = ", ".join(f"const int8_t *in{i}" for i in range(count)) + ", int8_t *output"
        self.unit.functions.append(render(
            "merge.c.tmpl", title=self.title(k, step), fn=fn, size=step.output.size, formula=formula, then=then + f" (clamp {q.low}..{q.high})",
            params=params, statement="\n        ".join(body), post_pass=""))

    def _elementwise(self, k: int, fn: str, step: P.ElementwiseStep, q: QStep | None) -> None:
        if q:
            stage = self.stage_function(k, f"{fn}_stage1", q.stage1)
            self.unit.functions.append(render("elementwise.c.tmpl", title=self.title(k, step), fn=fn, size=step.output.size,
                                              apply=f"(int8_t){stage}(input[i], 0)"))
            return
        passes = self.ops_pass("input", "output", step.output.size, step.ops)
        self.unit.functions.append(render("elementwise_float.c.tmpl", title=self.title(k, step), fn=fn, size=step.output.size,
                                          passes=passes))

    def _affine(self, k: int, fn: str, step: P.AffineStep, q: QStep | None) -> None:
        dims = step.input.dims
        scale = self.unit.array(k, "float", f"{fn}_scale", step.scale, f"{fn}: gamma / sqrt(moving_variance + epsilon), shape ({dims[step.axis]},)")
        shift = self.unit.array(k, "float", f"{fn}_shift", step.shift, f"{fn}: beta - moving_mean * scale, shape ({dims[step.axis]},)")
        self.unit.functions.append(render("affine.c.tmpl", title=self.title(k, step), fn=fn, size=step.input.size, axis=step.axis,
                                          axis_stride=step.input.strides[step.axis], features=dims[step.axis], scale=scale, shift=shift))

    def _softmax(self, k: int, fn: str, step: P.SoftmaxStep, q: QStep | None) -> None:
        self.unit.helper("softmax")
        self.unit.functions.append(render("softmax.c.tmpl", title=self.title(k, step), fn=fn, size=step.input.size,
                                          length=step.input.dims[-1], stride=step.input.strides[-1]))
