"""Export a network to C99 for microcontrollers, float32 or int8, verified against the engine.

    from layerlab.export.c import export_c
    report = export_c(network, "out/seed650", name="seed650", int8=False)   # -> out/seed650/report.txt

The pipeline, one module each: ``plan`` (lower the spec: fold BatchNormalization, fuse conv +
pool + activation, choose layouts and ping-pong buffers), ``quantize`` (int8: calibration,
per-channel weights, requantization, tables), ``kernels`` / ``codegen`` (the C, from the
templates in ``templates/``), ``verify`` (compile, run, compare), ``report`` (report.txt).
``names`` keeps names from the model file out of the C unsanitised.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from layerlab.errors import ExportError
from layerlab.export.c.codegen import generate
from layerlab.export.c.names import c_identifier
from layerlab.export.c.plan import lower
from layerlab.export.c.quantize import quantize
from layerlab.export.c.report import render_report
from layerlab.export.c.verify import Inputs
from layerlab.export.c.verify import verify as verify_export
from layerlab.publish import publish_folder

__all__ = ["export_c"]


def export_c(network, out_dir, *, name="model", int8=False, calibration=1000, verify=True, verify_images=1000, data_dir=None,
             force=False, inputs=()) -> Path:
    """Write a C99 library for ``network`` into ``out_dir`` and check it; return the report's path.

    Writes ``NAME.h``, ``NAME.c``, ``main.c``, ``Makefile``, ``cortex-m/`` and ``report.txt``.
    With a C compiler present (and ``verify``), compiles them with ``cc -std=c99 -O2 -Wall
    -Wextra -Werror`` and compares with the NumPy engine: float32 on ``verify_images`` MNIST test
    images (max abs diff <= 1e-5, same classes), int8 on all 10,000 (accuracy within 0.3 points).
    Everything is staged first and published only when the export (and its verification)
    succeeded, by ``layerlab.publish.publish_folder``: the user's own files in ``out_dir`` are kept.

    Args:
        network: a ``layerlab.network.Network`` (Sequential; weights in Keras layouts).
        out_dir: the output folder: new, or one that may hold other files and an earlier export
            (whose files are replaced; see ``publish_folder``).
        name: library and function prefix (sanitised to a C identifier).
        int8: generate int8 code (symmetric per-channel weights, per-tensor activations).
        calibration: training images to calibrate int8 scales on.
        verify: compile and compare when a C compiler is present.
        verify_images: MNIST test images for the float32 comparison.
        data_dir: folder with the MNIST files (else $LAYERLAB_DATA, the cache, a download).
        force: replace files in ``out_dir`` that layerlab did not write, or that were edited.
        inputs: the paths the network came from; ``out_dir`` may not write over them.

    Returns:
        Path of ``out_dir/report.txt``.

    Raises:
        ExportError: an unsupported layer (named), a bad argument, a compile error or a failed check.
        DataError: MNIST is needed (int8 calibration, verification) but cannot be found.
    """
    return _export(network, out_dir, name=name, int8=int8, calibration=calibration, verify=verify,
                   verify_images=verify_images, data_dir=data_dir, force=force, inputs=inputs)


def _export(network, out_dir, *, name, int8, calibration, verify, verify_images, data_dir, int8_activation="lut",
            force=False, inputs=()) -> Path:
    """``export_c`` with the int8 element-wise mode selectable ('lut' or 'float'), for benchmarks."""
    for arg, value in (("calibration", calibration), ("verify_images", verify_images)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ExportError(f"C export: {arg}={value!r} must be a positive number of images, e.g. {arg}=1000")
    prefix = c_identifier(name)
    if re.match(r"step\d", prefix):  # the step functions are called step<k>_<layer>
        prefix = f"m_{prefix}"
    network.refuse_nonfinite("C export")
    spec = network.spec
    plan = lower(spec, network.weights)
    data = _Data(spec, data_dir)
    inputs_ = data.inputs(verify_images, need_labels=int8) if verify else None
    qplan = None
    if int8:
        qplan = quantize(plan, network.weights, data.calibration(calibration), activation=int8_activation)
    input_note = _input_note(spec)
    generated = generate(plan, qplan, prefix=prefix, model_name=spec.name, input_format=input_note)
    out_dir = Path(out_dir)
    with publish_folder(out_dir, inputs=inputs, force=force, kind="c") as staging:
        for rel, text in generated.files.items():
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        verification = verify_export(staging, prefix, network, inputs_, int8=int8) if verify else None
        report = render_report(model_name=spec.name, prefix=prefix, plan=plan, qplan=qplan, generated=generated,
                               verification=verification, input_note=input_note)
        (staging / "report.txt").write_text(report, encoding="utf-8")
        if verification is not None and not verification.passed:
            raise ExportError(f"C export of {spec.name!r}: verification failed, nothing written. {_failure(verification)}")
    return out_dir / "report.txt"


def _failure(v) -> str:
    if v.float_check and not v.float_check.passed:
        c = v.float_check
        return (f"float32: max |C - engine| = {c.max_abs_diff:.3g} (limit 1e-05), same class on {c.same_class}/{c.images} images. "
                "Please report this with the model file")
    c = v.int8_check
    return (f"int8 accuracy {100 * c.accuracy_int8:.2f}% vs float {100 * c.accuracy_float:.2f}% ({c.diff_points:+.2f} points, limit -0.3). "
            "Try more --calibration images, or export float32")


def _is_mnist_shaped(spec) -> bool:
    return int(np.prod(spec.input_shape)) == 28 * 28


def _input_note(spec) -> str:
    fmt = next((getattr(l, "data_format", None) for l in spec.layers if getattr(l, "data_format", None)), None)
    scale = "pixels / 255" if _is_mnist_shaped(spec) else "model inputs"
    return f"{scale}, {fmt}" if fmt else scale


class _Data:
    """Inputs for calibration and checks, loaded once: real MNIST when the model takes a 28x28
    grey image (pixels / 255), otherwise seeded random normals."""

    def __init__(self, spec, data_dir) -> None:
        self.spec = spec
        self.data_dir = data_dir
        self._mnist = None

    def mnist(self):
        if self._mnist is None:
            from layerlab.data import load_mnist

            self._mnist = load_mnist(self.data_dir)
        return self._mnist

    def _scaled(self, pixels: np.ndarray) -> np.ndarray:
        from layerlab.data import input_for_model

        return input_for_model(pixels, self.spec, scale=255.0)

    def inputs(self, count: int, need_labels: bool) -> Inputs:
        if _is_mnist_shaped(self.spec):
            data = self.mnist()
            x_test = self._scaled(data.x_test) if need_labels else None
            return Inputs(self._scaled(data.x_test[:count]), "MNIST test images", x_test,
                          data.y_test.astype(np.int64) if need_labels else None)
        rng = np.random.default_rng(650)
        return Inputs(rng.standard_normal((count, *self.spec.input_shape)).astype(np.float32), "seeded random-normal inputs", None, None)

    def calibration(self, count: int) -> np.ndarray:
        """``count`` training images spread evenly over the file (deterministic)."""
        if _is_mnist_shaped(self.spec):
            x_train = self.mnist().x_train
            index = np.linspace(0, len(x_train) - 1, min(count, len(x_train))).astype(np.int64)
            return self._scaled(x_train[index])
        rng = np.random.default_rng(651)
        return rng.standard_normal((count, *self.spec.input_shape)).astype(np.float32)
