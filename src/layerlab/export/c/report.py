"""report.txt: what was generated, the RAM and flash each step needs, and what verification found."""

from __future__ import annotations

from layerlab import __version__
from layerlab.export.c import toolchain as T
from layerlab.export.c.codegen import Generated
from layerlab.export.c.emit import shape_text
from layerlab.export.c.plan import Plan
from layerlab.export.c.quantize import QPlan, Stage
from layerlab.export.c.verify import (
    FLOAT_TOLERANCE,
    INT8_AGREEMENT,
    INT8_RANGE_ERROR,
    Verification,
)

_BYTES = {"float": 4, "int8_t": 1, "int32_t": 4}


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip() for r in rows]


def _stage_text(stage: Stage | None) -> str:
    if stage is None:
        return "-"
    ops = ", ".join(op.describe() for op in stage.ops if op.is_rescale or op.activation != "linear") or "identity"
    if stage.kind == "requant":
        return f"requantize{' + relu' if stage.relu else ''} -> scale {stage.out_scale:.6g}"
    if stage.kind == "lut":
        src = f"requantize to {stage.lut_in_scale:.6g}, " if stage.lut_in_scale else ""
        return f"{src}table [{ops}] -> scale {stage.out_scale:.6g}"
    return f"float [{ops}] -> scale {stage.out_scale:.6g}"


def render_report(*, model_name: str, prefix: str, plan: Plan, qplan: QPlan | None, generated: Generated,
                  verification: Verification | None, input_note: str) -> str:
    """The text of report.txt (deterministic: no times, no paths)."""
    kind = "int8" if qplan else "float32"
    elem = 1 if qplan else 4
    lines = [f"layerlab {__version__} C export of model {model_name!r} ({kind})", ""]
    lines += [
        f"Files: {prefix}.h, {prefix}.c (the library), main.c (test harness), Makefile (host build, cortex-m4,",
        "qemu), cortex-m/startup.c and cortex-m/mps2-an386.ld (emulated Cortex-M4 board). C99; no malloc, no",
        "recursion; every buffer is static and sized at generation time.",
        "",
        f"Input  {shape_text(plan.input.dims)} = {plan.input.size} floats ({input_note}); output {shape_text(plan.output.dims)} = "
        f"{plan.output.size} floats, C order.",
        f"Entry points: void {prefix}_predict(const float *in, float *out)" + (
            f"; void {prefix}_predict_q(const int8_t *in, int8_t *out); void {prefix}_quantize_input(const float *in, int8_t *in_q)"
            if qplan else ""),
        "",
        "Per step (one C function each; the layers listed are fused into it)",
    ]
    arena = generated.arena
    names = {"input": "input"} | {step.target: (step.layers[-1][0] if step.layers else step.kind) for _, step in generated.steps}
    rows = [["step", "function", "layers", "output", "reads", "writes", "flash B"]]
    for k, (fn, step) in enumerate(generated.steps):
        writes = "in place" if step.in_place else ("out (caller)" if step.dst == "out" else step.dst)
        rows.append([str(k), fn, step.describe() or step.kind, shape_text(step.output.dims), ", ".join(step.srcs), writes,
                     str(generated.flash.get(k, 0))])
    lines += _table(rows, right={0, 6})
    lines += ["  reads / writes: the caller's in and out, or an offset (elements) into the arena; flash B: the step's",
              "  weights and tables (a table two steps share counts at the first). Code size: for the whole file, below.", ""]
    lines.append(f"Arena: one static array of {arena.size} x {'int8_t' if qplan else 'float'} = {arena.size * elem} B; "
                 "each slot holds the values listed, one after another")
    srows = [["offset", "elements", "bytes", "steps", "values (the layer whose output it is)"]]
    for slot in arena.slots:
        srows.append([str(slot.offset), str(slot.size), str(slot.size * elem), f"{slot.first}..{slot.last}",
                      ", ".join(names.get(v, v) for v in slot.values)])
    if arena.slots:
        lines += _table(srows, right={0, 1, 2})
        live = sum(slot.size for slot in arena.slots if any(v in arena.peak_values for v in slot.values))
        lines.append(f"  peak: {live * elem} B live at step {arena.peak_step}: "
                     + (", ".join(names.get(v, v) for v in arena.peak_values) or "nothing in the arena"))
    else:
        lines.append("  (empty: every step reads the caller's in or writes its out)")
    lines.append("")
    total_ram = sum(size * _BYTES[t] for size, t in generated.buffers.values())
    total_flash = sum(generated.flash.values())
    lines.append("Static RAM (all buffers, bytes)")
    brows = [[name, f"{size} x {t}", str(size * _BYTES[t])] for name, (size, t) in generated.buffers.items()]
    brows.append(["total", "", str(total_ram)])
    lines += _table(brows, right={2})
    if "conv_rows" in generated.buffers:
        lines.append("  conv_rows holds conv output rows of a fused conv + pool step (one row for max pooling, the rows")
        lines.append("  of one window for average pooling).")
    lines += ["", f"Flash: weights and tables {total_flash} B, plus code (measured below).", ""]
    if qplan:
        lines += _int8_section(plan, qplan, generated)
    lines += _verification_section(verification, prefix)
    lines += [
        "",
        "Using it",
        f"  make && ./{prefix}_test images.bin outputs.bin   ({plan.input.size} float32 per image in, {plan.output.size} out,",
        "                                                 native byte order; stdin/stdout without file names)",
        f"  ./{prefix}_test --bench 20 images.bin           CPU time per image, per pass",
        "  make cortex-m4                                   Cortex-M4F object and its text/data/bss",
        "  make qemu QEMU_IN=images.bin QEMU_OUT=outputs.bin  the harness on QEMU's mps2-an386 (Cortex-M4)",
    ]
    return "\n".join(lines) + "\n"


def _int8_section(plan: Plan, qplan: QPlan, generated: Generated) -> list[str]:
    lines = [
        "int8 quantization",
        f"  Calibrated on {qplan.calibration_images} images: each tensor is x = s * (q - z) with s = (max - min) / 255 over",
        "  its values (the range widened to hold 0) and zero point z = round(-128 - min / s): real 0 is exactly z.",
        "  Weights: symmetric per output channel, w_q = round(w / s_w[c]) in [-127, 127], s_w[c] = max|w[..., c]| / 127.",
        "  Accumulators: int32, acc = bias_q[c] + sum((x_q - z_in) * w_q), real value acc * s_in * s_w[c] (a Dense",
        "  layer folds -z_in * sum(w_q) into bias_q).",
        "  Requantization: q = clamp(round(acc * M) + z_out) with M = s_in * s_w[c] / s_out held as a Q31 multiplier",
        "  and a right shift, (acc * multiplier + 2^(shift-1)) >> shift (halves round up); a ReLU clamps at z_out.",
        "  Element-wise functions: " + ("a 256-entry table per step, from the int8 input to the int8 output, computed with the"
                                        " engine's float functions; a table after an accumulator takes it requantized to the"
                                        " table's input scale, capped where the output saturates."
                                        if qplan.activation == "lut" else
                                        "exact float at the boundary: q = round(f(v * s_in) / s_out) with C float functions."),
        f"  Input scale {qplan.input_scale:.9g}, zero point {qplan.input_zero} (q = round(x / scale) + zero); output scale "
        f"{qplan.output_scale:.9g}, zero point {qplan.output_zero}.",
    ]
    if qplan.final_softmax is not None:
        lines.append("  The final softmax runs in float in *_predict; *_predict_q writes the int8 values before it (same argmax).")
    rows = [["step", "in scale", "in zero", "weight scales", "stage 1", "stage 2", "out scale", "out zero"]]
    for k, q in enumerate(qplan.steps):
        weights = f"{q.weight_scale.min():.3g}..{q.weight_scale.max():.3g}" if q.weight_scale is not None else "-"
        rows.append([str(k), f"{q.in_scale:.6g}", str(q.in_zero), weights, _stage_text(q.stage1), _stage_text(q.stage2),
                     f"{q.out_scale:.6g}", str(q.out_zero)])
    lines += _table(rows, right={0})
    return lines + [""]


def _verification_section(v: Verification | None, prefix: str) -> list[str]:
    lines = ["Verification"]
    if v is None:
        return lines + ["  skipped (--no-verify): not compiled, not compared with the engine."]
    if v.skipped:
        return lines + [f"  skipped: {v.skipped}."]
    lines.append(f"  compiler: {v.compiler}; {' '.join(T.HOST_CFLAGS)}: compiled without warnings")
    if v.float_check:
        c = v.float_check
        same = (f"; same predicted class {c.same_class}/{c.images}" if c.classifier
                else "; no class check (the output is not a softmax)")
        lines.append(f"  float32 on {c.images} {c.source}: max |C - engine| = {c.max_abs_diff:.3g} (limit {c.limit:.3g}: "
                     f"{FLOAT_TOLERANCE:g} of the largest |output| {c.peak:.4g}){same}: {'PASS' if c.passed else 'FAIL'}")
    if v.int8_check:
        c = v.int8_check
        verdict = "PASS" if c.passed else "FAIL"
        if c.wrong_inputs:
            lines.append(f"  the float model is right on only {100 * c.accuracy_float:.2f}% of these inputs ({v.input_note}): "
                         "they are not what it takes (raw pixels need --scale 1): FAIL")
        if c.rule == "accuracy":
            lines.append(f"  int8 on {c.images} {c.source}: accuracy {100 * c.accuracy_int8:.2f}% vs float {100 * c.accuracy_float:.2f}% "
                         f"(engine), difference {c.diff_points:+.2f} points (limit -{c.tolerance:.3g}): {verdict}")
        elif c.rule == "agreement":
            lines.append(f"  int8 on {c.images} {c.source} (no labels): int8 and float predict the same class on "
                         f"{100 * c.agreement:.2f}% (limit {100 * INT8_AGREEMENT:g}%): {verdict}")
        else:
            lines.append(f"  int8 on {c.images} {c.source} (not a classifier): RMS |int8 - float| = {100 * c.range_error:.3g}% "
                         f"of the float outputs' range (limit {100 * INT8_RANGE_ERROR:g}%): {verdict}")
        if c.classifier:
            lines.append(f"  int8 and float predict the same class on {100 * c.agreement:.2f}% of the inputs; "
                         f"max |int8 - float| output = {c.max_abs_diff:.3g}")
        else:
            lines.append(f"  max |int8 - float| output = {c.max_abs_diff:.3g}")
    lines.append("")
    lines.append("Measured sizes (bytes; text = code + const weights and tables)")
    if v.host_object:
        s = v.host_object
        lines.append(f"  host {prefix}.o (cc -O2): text {s.text}, data {s.data}, bss {s.bss}")
    if v.host_stack is not None:
        lines.append(f"  host stack: {v.host_stack} B on the deepest call chain from {prefix}_predict (gcc -fcallgraph-info=su)")
    if v.arm_object:
        s = v.arm_object
        lines.append(f"  Cortex-M4F {prefix}-cm4.o ({v.arm_compiler}; {' '.join(T.ARM_CFLAGS + T.ARM_FLOAT)}):")
        lines.append(f"    text {s.text}, data {s.data}, bss {s.bss}: flash (code + weights) {s.flash} B, static RAM {s.ram} B")
        if v.arm_stack is not None:
            lines.append(f"    stack {v.arm_stack} B on the deepest call chain from {prefix}_predict: RAM with stack {s.ram + v.arm_stack} B")
        lines.append("    (libm functions it calls, such as expf, are linked from newlib and counted in neither)")
    elif v.arm_note:
        lines.append(f"  Cortex-M4: {v.arm_note}")
    return lines
