"""Assemble the generated files: NAME.h, NAME.c, main.c, Makefile, cortex-m/ start-up files.

``generate`` is pure: the same plan gives the same bytes (no time stamps, no paths, no
dictionary-order surprises), so two exports of one model are byte-identical.
"""

from __future__ import annotations

from dataclasses import dataclass

from layerlab import __version__
from layerlab.export.c import plan as P
from layerlab.export.c import toolchain as T
from layerlab.export.c.emit import Unit, float_literal, render, shape_text
from layerlab.export.c.kernels import Kernels
from layerlab.export.c.names import c_comment
from layerlab.export.c.quantize import QPlan


@dataclass
class Generated:
    """The generated files and what the report needs to know about them.

    Attributes:
        files: relative path -> text.
        buffers: element count and C type of each static buffer, e.g. ``{"arena": (845, "float")}``.
        flash: const bytes (weights, tables) per step index.
        steps: the steps that became C functions, in order, with their function names.
        arena: where each value lives (for int8 it also holds the quantized input).
    """

    files: dict[str, str]
    buffers: dict[str, tuple[int, str]]
    flash: dict[int, int]
    steps: list[tuple[str, P.Step]]
    arena: P.Arena


def generate(plan: P.Plan, qplan: QPlan | None, *, prefix: str, model_name: str, input_format: str) -> Generated:
    """Render every file of the export.

    Args:
        plan: the lowered network.
        qplan: its int8 form, or None for float32 code.
        prefix: the C identifier that names the files and prefixes the functions.
        model_name: the model's own name (comments only; sanitised).
        input_format: a few words on the input layout, for the header comment.
    """
    unit = Unit()
    kernels = Kernels(unit, qplan)
    steps = plan.steps[: len(qplan.steps)] if qplan else plan.steps
    # int8: the arena also holds the quantized input (the float wrapper writes it there first)
    arena = P.place_arena(steps, input_in_arena=True) if qplan else plan.arena
    rendered = []
    calls = []
    for k, step in enumerate(steps):
        fn = kernels.render(k, step)
        rendered.append((fn, step))
        calls.append(f"    {fn}({', '.join(step.srcs)}, {step.dst});")
        calls.append(f"    LL_TRACE({k}, {step.dst}, {extent(step.output)});")
    ctype = "int8_t" if qplan else "float"
    upper = prefix.upper()
    kind_line = "float32 inference." if not qplan else (
        f"int8 inference (symmetric per-channel weights, asymmetric per-tensor activations, int32 accumulators; "
        f"element-wise functions by {'lookup table' if qplan.activation == 'lut' else 'float at the boundary'})."
    )
    values = dict(file=prefix, prefix=prefix, PREFIX=upper, version=__version__, model=c_comment(model_name), kind_line=kind_line)
    if qplan:
        entry, extra_defines, extra_prototypes = _int8_entry(plan, qplan, arena, calls, unit, values)
    else:
        entry = f"void {prefix}_predict(const float *in, float *out)\n{{\n" + "\n".join(calls) + "\n}\n"
        extra_defines = extra_prototypes = ""
    buffers = {"arena": (arena.size, ctype)} if arena.size else {}
    if unit.scratch:
        buffers["conv_rows"] = (unit.scratch, ctype)
    buffer_code = "".join(f"static {t} {name}[{size}];\n" for name, (size, t) in buffers.items())
    if qplan:
        buffer_code += f"static int8_t output_q[{plan.output.size}]; /* {prefix}_predict: int8 output before dequantizing */\n"
        buffers["output_q"] = (plan.output.size, "int8_t")
    includes = []
    if unit.math or (qplan and qplan.final_softmax):
        includes.append("#include <math.h>")
    step_lines = "\n".join(f" *   {fn}: {c_comment(step.describe() or step.kind, 150)}" for fn, step in rendered)
    c_file = render("model.c.tmpl", **values, step_lines=step_lines, includes="\n".join(includes) + ("\n" if includes else ""),
                    helpers=unit.helper_code(), arrays="\n".join(unit.arrays), buffers=buffer_code,
                    functions="\n".join(unit.functions), entry_points=entry)
    h_file = render("model.h.tmpl", **values, guard=f"{upper}_LAYERLAB_H", includes="\n#include <stdint.h>\n" if qplan else "",
                    input_size=plan.input.size, output_size=plan.output.size, input_shape=shape_text(plan.input.dims),
                    input_format=input_format, output_shape=shape_text(plan.output.dims),
                    extra_defines=extra_defines, extra_prototypes=extra_prototypes)
    files = {
        f"{prefix}.h": h_file,
        f"{prefix}.c": c_file,
        "main.c": _main(values, qplan is not None),
        "Makefile": render("Makefile.tmpl", **values, host_cflags=" ".join(T.HOST_CFLAGS), arm_float=" ".join(T.ARM_FLOAT),
                           arm_cflags=" ".join(T.ARM_CFLAGS), arm_link_flags=" ".join(T.ARM_LINK), qemu_flags=" ".join(T.QEMU_FLAGS)),
        "cortex-m/startup.c": render("cortex_m/startup.c.tmpl", **values),
        "cortex-m/mps2-an386.ld": render("cortex_m/mps2_an386.ld.tmpl", **values),
    }
    return Generated(files=files, buffers=buffers, flash=dict(unit.flash), steps=rendered, arena=arena)


def extent(layout) -> int:
    """Elements from a tensor's first value to its last in its buffer (strided layouts leave gaps)."""
    return 1 + sum((d - 1) * s for d, s in zip(layout.dims, layout.strides, strict=True))


def _int8_entry(plan, qplan: QPlan, arena: P.Arena, calls, unit: Unit, values) -> tuple[str, str, str]:
    """``*_quantize_input``, ``*_predict_q`` and the float ``*_predict`` wrapper of an int8 export."""
    prefix, upper = values["prefix"], values["PREFIX"]
    unit.helper("quantize")
    # The wrapper quantizes the input into its arena slot (free until the input's last reader).
    wrapper_buffer = f"arena + {arena.input_offset}" if arena.input_offset else "arena"
    softmax_call = ""
    if qplan.final_softmax is not None:
        fn = Kernels(unit, None).render(len(qplan.steps), qplan.final_softmax)
        softmax_call = f"    {fn}(out, out);\n"
    entry = (
        f"/* q = round(x / {upper}_INPUT_SCALE) half away from zero + {upper}_INPUT_ZERO_POINT, saturated to [-128, 127]. */\n"
        f"void {prefix}_quantize_input(const float *in, int8_t *in_q)\n{{\n    int i;\n"
        f"    for (i = 0; i < {upper}_INPUT_SIZE; ++i) {{\n"
        f"        in_q[i] = (int8_t)ll_quantize(in[i] * {float_literal(1.0 / qplan.input_scale)}, {upper}_INPUT_ZERO_POINT);\n    }}\n}}\n\n"
        f"void {prefix}_predict_q(const int8_t *in, int8_t *out)\n{{\n" + "\n".join(calls) + "\n}\n\n"
        f"void {prefix}_predict(const float *in, float *out)\n{{\n    int i;\n"
        f"    {prefix}_quantize_input(in, {wrapper_buffer});\n"
        f"    {prefix}_predict_q({wrapper_buffer}, output_q);\n"
        f"    for (i = 0; i < {upper}_OUTPUT_SIZE; ++i) {{\n"
        f"        out[i] = (float)(output_q[i] - {upper}_OUTPUT_ZERO_POINT) * {upper}_OUTPUT_SCALE;\n    }}\n{softmax_call}}}\n"
    )
    logits = qplan.final_softmax is not None
    defines = (
        f"#define {upper}_INT8 1\n"
        f"/* real input = {upper}_INPUT_SCALE * (q - {upper}_INPUT_ZERO_POINT) (calibrated on {qplan.calibration_images} images) */\n"
        f"#define {upper}_INPUT_SCALE {float_literal(qplan.input_scale)}\n"
        f"#define {upper}_INPUT_ZERO_POINT {qplan.input_zero}\n"
        f"/* real value = {upper}_OUTPUT_SCALE * (q - {upper}_OUTPUT_ZERO_POINT) for {prefix}_predict_q's output"
        + (" (the values before the final softmax: their argmax is the class)" if logits else "") + " */\n"
        f"#define {upper}_OUTPUT_SCALE {float_literal(qplan.output_scale)}\n"
        f"#define {upper}_OUTPUT_ZERO_POINT {qplan.output_zero}\n"
        f"#define {upper}_OUTPUT_IS_LOGITS {1 if logits else 0}\n"
    )
    prototypes = (
        f"/* Quantize a float input for {prefix}_predict_q. */\n"
        f"void {prefix}_quantize_input(const float *in, int8_t *in_q);\n"
        f"/* The int8 network: in[{upper}_INPUT_SIZE] -> out[{upper}_OUTPUT_SIZE], no float at all"
        + (", before the final softmax" if logits else "") + ". */\n"
        f"void {prefix}_predict_q(const int8_t *in, int8_t *out);\n"
    )
    return entry, defines, prototypes


def _main(values: dict, int8: bool) -> str:
    prefix, upper = values["prefix"], values["PREFIX"]
    if not int8:
        return render("main.c.tmpl", **values, bench_q_doc="", bench_setup="", bench_q="", bench_cleanup="")
    setup = (
        f"    int8_t *images_q = (int8_t *)malloc((size_t)count * {upper}_INPUT_SIZE);\n"
        f"    static int8_t output_q[{upper}_OUTPUT_SIZE];\n"
        f"    if (images_q == NULL) {{\n        fprintf(stderr, \"{prefix}_test: out of memory\\n\");\n"
        f"        free(images);\n        return 1;\n    }}\n"
        f"    for (i = 0; i < count; ++i) {{\n"
        f"        {prefix}_quantize_input(images + i * {upper}_INPUT_SIZE, images_q + i * {upper}_INPUT_SIZE);\n    }}\n"
    )
    timed = (
        f"        start = clock();\n        for (i = 0; i < count; ++i) {{\n"
        f"            {prefix}_predict_q(images_q + i * {upper}_INPUT_SIZE, output_q);\n"
        f"            checksum += output_q[0];\n        }}\n"
        f"        printf(\"predict_q %.1f\\n\", 1e9 * (double)(clock() - start) / CLOCKS_PER_SEC / (double)count);\n"
    )
    return render("main.c.tmpl", **values, bench_q_doc=f", then \"predict_q ...\" for {prefix}_predict_q on pre-quantized inputs",
                  bench_setup=setup, bench_q=timed, bench_cleanup="    free(images_q);\n")
