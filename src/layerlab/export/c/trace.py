"""Every step's values of a compiled C export, for one input: what ``layerlab view`` shows beside
the engine's numbers when its int8 toggle is on.

``CTrace(network, folder, int8=True, ...)`` generates the export exactly as ``layerlab export --to c``
does (same lowering, calibration and code), compiles it with ``-DLAYERLAB_TRACE`` and a small
program whose ``layerlab_trace`` writes each step's output buffer to stdout, and ``run(x)`` returns,
per layer that a step ends with, that buffer read through the step's layout and dequantized with
its scale: the C's own numbers, in the layer's Keras layout. A layer fused into the next step (a
conv's batch norm and ReLU, say) has no buffer of its own and is absent.

The trace is not verified against the engine here (``layerlab export`` does that); the page shows
both and their difference.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from layerlab.errors import ExportError
from layerlab.export.c import toolchain as T

HARNESS = r"""/* layerlab view: run the export on float inputs from stdin; write every step's buffer to stdout. */
#include <stdio.h>
#include <stdlib.h>
#include "${prefix}.h"

static int element_bytes = ${element};

void layerlab_trace(int step, const void *values, int count)
{
    fwrite(&step, sizeof step, 1, stdout);
    fwrite(&count, sizeof count, 1, stdout);
    fwrite(values, (size_t)element_bytes, (size_t)count, stdout);
}

int main(void)
{
    static float in[${PREFIX}_INPUT_SIZE], out[${PREFIX}_OUTPUT_SIZE];
    int last = -1, size = ${PREFIX}_OUTPUT_SIZE;
    while (fread(in, sizeof(float), ${PREFIX}_INPUT_SIZE, stdin) == ${PREFIX}_INPUT_SIZE) {
        ${prefix}_predict(in, out);
        fwrite(&last, sizeof last, 1, stdout);  /* the float output of ${prefix}_predict, last */
        fwrite(&size, sizeof size, 1, stdout);
        fwrite(out, sizeof(float), (size_t)size, stdout);
    }
    return 0;
}
"""


class CTrace:
    """A compiled, tracing build of a network's C export (see the module docstring).

    Raises (on construction):
        ExportError: a layer the C export (or its int8 form) does not support, no calibration
            data, no C compiler, or a compile error.
        DataError: MNIST is needed to calibrate and cannot be found.
    """

    def __init__(self, network, folder: str | Path, *, int8: bool = True, calibration: int = 1000, data_dir=None,
                 scale=None, calibration_data=None) -> None:
        from string import Template

        from layerlab.export.c import _Data, _input_note
        from layerlab.export.c.codegen import generate
        from layerlab.export.c.plan import lower
        from layerlab.export.c.quantize import check_int8, quantize

        network.refuse_nonfinite("C export")
        self.network, self.int8 = network, int8
        spec = network.spec
        plan = lower(spec, network.weights, int8=int8)
        qplan = None
        if int8:
            check_int8(plan)
            data = _Data(spec, data_dir, scale, calibration_data)
            qplan = quantize(plan, network.weights, data.calibration(calibration))
        generated = generate(plan, qplan, prefix="model", model_name=spec.name, input_format=_input_note(spec, _Data(spec, data_dir, scale)))
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for rel, text in generated.files.items():
            if rel.endswith((".c", ".h")) and "/" not in rel and rel != "main.c":
                (folder / rel).write_text(text, encoding="utf-8")
        harness = Template(HARNESS).substitute(prefix="model", PREFIX="MODEL", element=1 if int8 else 4)
        (folder / "trace.c").write_text(harness, encoding="utf-8")
        cc = T.host_compiler()
        if cc is None:
            raise ExportError("C trace: no C compiler (cc) found; install gcc, or set CC")
        proc = T.run([cc, *T.HOST_CFLAGS, "-DLAYERLAB_TRACE", "-o", "trace", "model.c", "trace.c", "-lm"], cwd=folder)
        if proc.returncode != 0:
            raise ExportError(f"C trace: the compiler refused the export: {proc.stderr.decode(errors='replace').strip()[:400]}")
        self.program = folder / "trace"
        # A step of no layer (the copy into the caller's output, a merge input put in the other's
        # order) holds values some layer's step has already shown: it has no name here.
        self.steps = [(step.layers[-1][0] if step.layers else None, step.output,
                       qplan.steps[k].out_scale if qplan else 1.0, qplan.steps[k].out_zero if qplan else 0)
                      for k, (_, step) in enumerate(generated.steps)]
        self.final = spec.layers[-1].name
        self.layer_names = {layer.name for layer in spec.layers}

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Layer name -> the C's values for one input ``x`` (batch of 1), in the layer's Keras layout."""
        x = self.network.check_input(x)[:1]
        proc = T.run([str(self.program)], cwd=self.program.parent, timeout=60, stdin=np.ascontiguousarray(x, "<f4").tobytes())
        if proc.returncode != 0:
            raise ExportError(f"C trace: the traced program failed (exit {proc.returncode})")
        data, at, out = proc.stdout, 0, {}
        element = np.int8 if self.int8 else np.float32
        while at < len(data):
            step, count = struct.unpack_from("<ii", data, at)
            at += 8
            if step < 0:
                out[self.final] = np.frombuffer(data, "<f4", count, at).reshape(self.network.spec.output_shape).copy()
                at += 4 * count
                continue
            size = np.dtype(element).itemsize
            buffer = np.frombuffer(data, element, count, at)
            at += size * count
            name, layout, scale, zero = self.steps[step]
            if name not in self.layer_names or name == self.final:
                continue  # a desugared part of a layer, or no layer's; the final layer comes as the float output
            item = buffer.itemsize
            values = np.lib.stride_tricks.as_strided(buffer, layout.dims, tuple(s * item for s in layout.strides))
            out[name] = (values.astype(np.float32) - np.float32(zero)) * np.float32(scale)
        return out
