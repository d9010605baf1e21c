"""Export a network to C99 for microcontrollers, float32 or int8, verified against the engine.

    from layerlab.export.c import export_c
    report = export_c(network, "out/seed650", name="seed650", int8=False)   # -> out/seed650/report.txt

The pipeline, one module each: ``plan`` (lower the spec: fold BatchNormalization, fuse conv +
pool + activation, choose layouts, place values in one arena by liveness), ``quantize`` (int8: calibration,
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
from layerlab.export.c.quantize import check_int8, quantize
from layerlab.export.c.report import render_report
from layerlab.export.c.verify import INT8_AGREEMENT, INT8_RANGE_ERROR, Inputs
from layerlab.export.c.verify import verify as verify_export
from layerlab.inputs import pixel_scale
from layerlab.publish import publish_folder

__all__ = ["export_c"]


def export_c(network, out_dir, *, name="model", int8=False, calibration=1000, verify=True, verify_images=1000, data_dir=None,
             force=False, inputs=(), scale=None, calibration_data=None) -> Path:
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
        scale: what MNIST pixels (or ``calibration_data``) are divided by; default: 255 for
            MNIST (1 when the model starts with Rescaling(1/255)), 1 for an array file.
        calibration_data: a .npy/.npz/image file of the model's real inputs (``--calibration-data``):
            int8 calibrates on its first 80% and is checked on the rest; float32 is checked on it.
        inputs: the paths the network came from; ``out_dir`` may not write over them.

    Returns:
        Path of ``out_dir/report.txt``.

    Raises:
        ExportError: an unsupported layer (named), a bad argument, a compile error or a failed check.
        DataError: MNIST is needed (int8 calibration, verification) but cannot be found.
    """
    return _export(network, out_dir, name=name, int8=int8, calibration=calibration, verify=verify,
                   verify_images=verify_images, data_dir=data_dir, force=force, inputs=inputs, scale=scale,
                   calibration_data=calibration_data)


def _export(network, out_dir, *, name, int8, calibration, verify, verify_images, data_dir, int8_activation="lut",
            force=False, inputs=(), scale=None, calibration_data=None) -> Path:
    """``export_c`` with the int8 element-wise mode selectable ('lut' or 'float'), for benchmarks."""
    for arg, value in (("calibration", calibration), ("verify_images", verify_images)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ExportError(f"C export: {arg}={value!r} must be a positive number of images, e.g. {arg}=1000")
    prefix = c_identifier(name)
    if re.match(r"step\d", prefix):  # the step functions are called step<k>_<layer>
        prefix = f"m_{prefix}"
    network.refuse_nonfinite("C export")
    spec = network.spec
    plan = lower(spec, network.weights, int8=int8)
    data = _Data(spec, data_dir, scale, calibration_data)
    inputs_ = data.inputs(verify_images, need_labels=int8) if verify else None
    qplan = None
    if int8:
        check_int8(plan)  # a step with no int8 form is said before any calibration data is needed
        qplan = quantize(plan, network.weights, data.calibration(calibration), activation=int8_activation)
    input_note = _input_note(spec, data)
    generated = generate(plan, qplan, prefix=prefix, model_name=spec.name, input_format=input_note)
    out_dir = Path(out_dir)
    with publish_folder(out_dir, inputs=inputs, force=force, kind="c") as staging:
        for rel, text in generated.files.items():
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        verification = verify_export(staging, prefix, network, inputs_, int8=int8) if verify else None
        if verification is not None:
            verification.input_note = input_note
        report = render_report(model_name=spec.name, prefix=prefix, plan=plan, qplan=qplan, generated=generated,
                               verification=verification, input_note=input_note)
        (staging / "report.txt").write_text(report, encoding="utf-8")
        if verification is not None and not verification.passed:
            raise ExportError(f"C export of {spec.name!r}: verification failed, nothing written. {_failure(verification)}")
    return out_dir / "report.txt"


def _failure(v) -> str:
    if v.float_check and not v.float_check.passed:
        c = v.float_check
        same = f", same class on {c.same_class}/{c.images} inputs" if c.classifier else ""
        return (f"float32: max |C - engine| = {c.max_abs_diff:.3g} (limit {c.limit:.3g}){same}. "
                "Please report this with the model file")
    c = v.int8_check
    if c.wrong_inputs:
        return (f"the float model is right on only {100 * c.accuracy_float:.2f}% of the {c.source} as fed ({v.input_note}): "
                "these are not the inputs it takes, so int8 calibrated on them means nothing. A model trained on raw "
                "pixels needs --scale 1; otherwise pass its real inputs with --calibration-data")
    if c.rule == "accuracy":
        what = (f"int8 accuracy {100 * c.accuracy_int8:.2f}% vs float {100 * c.accuracy_float:.2f}% "
                f"({c.diff_points:+.2f} points, limit -{c.tolerance:.3g})")
    elif c.rule == "agreement":
        what = f"int8 and float agree on {100 * c.agreement:.2f}% of {c.images} inputs (limit {100 * INT8_AGREEMENT:g}%)"
    else:
        what = f"int8 RMS error {100 * c.range_error:.3g}% of the output range (limit {100 * INT8_RANGE_ERROR:g}%)"
    return f"{what}. Try more --calibration inputs, real ones with --calibration-data, or export float32"


def _is_mnist_shaped(spec) -> bool:
    return int(np.prod(spec.input_shape)) == 28 * 28


def _input_note(spec, data) -> str:
    fmt = next((getattr(l, "data_format", None) for l in spec.layers if getattr(l, "data_format", None)), None)
    return f"{data.describe()}, {fmt}" if fmt else data.describe()


class _Data:
    """Inputs for calibration and checks, loaded once, in the model's real input scale.

    From ``calibration_data`` (a .npy/.npz/image file of real inputs) when given: int8 calibrates
    on its first 80% and is checked on the rest (held out). Otherwise real MNIST when the model
    takes a 28x28 grey image (pixels divided by ``pixel_scale``); otherwise seeded random
    normals, which check float32 arithmetic but cannot calibrate int8 (refused).
    """

    def __init__(self, spec, data_dir, scale: float | None = None, calibration_data=None) -> None:
        self.spec = spec
        self.data_dir = data_dir
        self.scale = scale
        self.path = calibration_data
        self._mnist = None
        self._file = None

    def describe(self) -> str:
        if self.path is not None:
            return f"inputs as in {Path(self.path).name}" + (f" / {self.scale:g}" if self.scale not in (None, 1) else "")
        if _is_mnist_shaped(self.spec):
            scale = pixel_scale(self.spec, self.scale)
            return "raw pixels 0..255" if scale == 1 else f"pixels / {scale:g}"
        return "model inputs"

    def mnist(self):
        if self._mnist is None:
            from layerlab.data import load_mnist

            self._mnist = load_mnist(self.data_dir)
        return self._mnist

    def file(self) -> tuple[np.ndarray, np.ndarray | None]:
        if self._file is None:
            from layerlab.inputs import read_input

            x, y = read_input(self.path, self.spec, self.scale)
            if len(x) < 2:
                raise ExportError(f"--calibration-data {self.path}: holds {len(x)} input; int8 needs at least 2 "
                                  "(most to calibrate, the rest held out to check). Pass a few hundred")
            self._file = (x, None if y is None else y.astype(np.int64))
        return self._file

    def _split(self) -> int:
        return max(1, int(round(0.8 * len(self.file()[0]))))

    def _scaled(self, pixels: np.ndarray) -> np.ndarray:
        from layerlab.data import input_for_model

        return input_for_model(pixels, self.spec, scale=pixel_scale(self.spec, self.scale))

    def inputs(self, count: int, need_labels: bool) -> Inputs:
        if self.path is not None:
            x, y = self.file()
            name = Path(self.path).name
            if need_labels:  # int8: the held-out part, with its labels when the file has them
                held_x, held_y = x[self._split():], None if y is None else y[self._split():]
                source = f"held-out inputs of {name}"
                return Inputs(held_x, source, held_x if held_y is not None else None, held_y, test_source=source)
            return Inputs(x[:count], f"inputs of {name}", None, None)
        if _is_mnist_shaped(self.spec):
            data = self.mnist()
            x_test = self._scaled(data.x_test) if need_labels else None
            return Inputs(self._scaled(data.x_test[:count]), "MNIST test images", x_test,
                          data.y_test.astype(np.int64) if need_labels else None)
        rng = np.random.default_rng(650)
        return Inputs(rng.standard_normal((count, *self.spec.input_shape)).astype(np.float32), "seeded random-normal inputs", None, None)

    def calibration(self, count: int) -> np.ndarray:
        """``count`` real inputs spread evenly over the source (deterministic)."""
        if self.path is not None:
            x = self.file()[0][: self._split()]
            return x[np.linspace(0, len(x) - 1, min(count, len(x))).astype(np.int64)]
        if _is_mnist_shaped(self.spec):
            x_train = self.mnist().x_train
            index = np.linspace(0, len(x_train) - 1, min(count, len(x_train))).astype(np.int64)
            return self._scaled(x_train[index])
        raise ExportError(
            f"C export --int8: model '{self.spec.name}' takes input {self.spec.input_shape}, not a 28x28 MNIST image, so "
            "there is nothing to calibrate on. Pass --calibration-data FILE: a .npy/.npz (x, and y for an accuracy check) "
            "of a few hundred of the model's real inputs, in the scale the model takes")
