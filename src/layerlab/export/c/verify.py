"""Compile the generated C, run it on real inputs and compare it with the NumPy engine.

float32: ``max |C - engine|`` within ``FLOAT_TOLERANCE`` of the output's largest magnitude (at
least ``FLOAT_FLOOR``), and for classifiers (a softmax last) the same class on every input; class
means nothing for a regressor or an autoencoder. int8, by the kind of model: with labels, top-1
accuracy at most ``INT8_TOLERANCE_POINTS`` below float's; a classifier without labels, the same
class as float on ``INT8_AGREEMENT`` of the inputs; anything else, RMS error at most
``INT8_RANGE_ERROR`` of the float outputs' range. Sizes come from the real tools: ``size`` on the host object,
``arm-none-eabi-size`` on a Cortex-M4 object, stack from ``gcc -fstack-usage``.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from layerlab.errors import ExportError
from layerlab.export.c import toolchain as T

FLOAT_TOLERANCE = 1e-5  # of the output's largest magnitude
FLOAT_FLOOR = 1e-7  # absolute: outputs that are all (nearly) zero
INT8_TOLERANCE_POINTS = 0.3  # accuracy points int8 may lose against float (labelled inputs)
INT8_AGREEMENT = 0.90  # classifiers without labels: share of inputs where int8 and float agree
INT8_RANGE_ERROR = 0.02  # regressors: RMS |int8 - float| over the float outputs' range
FLOAT_SANE_ACCURACY = 0.5  # float accuracy below this on labelled inputs: they are not what the model takes


@dataclass
class FloatCheck:
    """float32 C against the engine: within ``limit`` everywhere, and the same class for classifiers."""

    images: int
    source: str
    max_abs_diff: float
    same_class: int
    peak: float = 1.0  # the largest |output| of the engine
    classifier: bool = True

    @property
    def limit(self) -> float:
        return max(FLOAT_TOLERANCE * self.peak, FLOAT_FLOOR)

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.limit and (not self.classifier or self.same_class == self.images)


@dataclass
class Int8Check:
    """int8 C against float. The rule depends on the model (``rule``): accuracy where labels exist,
    agreement of classes for classifiers without labels, error over the output range otherwise."""

    images: int
    source: str
    accuracy_int8: float | None  # fraction; None without labels
    accuracy_float: float | None
    agreement: float  # fraction of images where int8 and float predict the same class
    max_abs_diff: float  # of the float outputs (after dequantizing / softmax)
    classifier: bool = True
    range_error: float = 0.0  # RMS |int8 - float| / (max - min of the float outputs)

    @property
    def diff_points(self) -> float | None:
        if self.accuracy_int8 is None or self.accuracy_float is None:
            return None
        return 100.0 * (self.accuracy_int8 - self.accuracy_float)

    @property
    def tolerance(self) -> float:
        """Accuracy points int8 may lose: INT8_TOLERANCE_POINTS, and never less than one input's
        worth (on 80 held-out inputs one flipped class is 1.25 points, not a broken export)."""
        return max(INT8_TOLERANCE_POINTS, 100.0 / self.images) if self.images else INT8_TOLERANCE_POINTS

    @property
    def wrong_inputs(self) -> bool:
        """The float model itself fails on these inputs: calibrating on them means nothing."""
        return self.accuracy_float is not None and self.accuracy_float < FLOAT_SANE_ACCURACY

    @property
    def rule(self) -> str:
        if self.diff_points is not None:
            return "accuracy"
        return "agreement" if self.classifier else "range error"

    @property
    def passed(self) -> bool:
        # The tolerance bounds a loss: int8 that happens to score better than float passes.
        if self.diff_points is not None:
            return self.diff_points >= -self.tolerance - 1e-9 and not self.wrong_inputs
        if self.classifier:
            return self.agreement >= INT8_AGREEMENT
        return self.range_error <= INT8_RANGE_ERROR


def is_classifier(spec) -> bool:
    """A model whose output is a class distribution: a softmax last (its argmax is the class)."""
    last = spec.layers[-1]
    return getattr(last, "activation", None) == "softmax" and len(spec.output_shape) == 1


@dataclass
class Verification:
    """What the self-check found; ``skipped`` says why nothing ran."""

    skipped: str = ""
    compiler: str = ""
    host_object: T.Sizes | None = None
    host_stack: int | None = None
    float_check: FloatCheck | None = None
    int8_check: Int8Check | None = None
    arm_compiler: str = ""
    arm_object: T.Sizes | None = None
    arm_stack: int | None = None
    arm_note: str = ""
    input_note: str = ""  # how the inputs were scaled, for messages

    @property
    def passed(self) -> bool:
        return all(c is None or c.passed for c in (self.float_check, self.int8_check))


def _fail(what: str, proc) -> ExportError:
    text = (proc.stderr or b"").decode(errors="replace").strip().splitlines()
    head = " | ".join(text[:6]) if text else f"exit status {proc.returncode}"
    return ExportError(f"C export verification: {what} failed: {head}")


def build_host(src: Path, build: Path, prefix: str, cc: str) -> Path:
    """Compile ``prefix.c`` and the harness with the verification flags and link; return the executable."""
    for name in (f"{prefix}.c", f"{prefix}.h", "main.c"):
        shutil.copy2(src / name, build / name)
    flags = list(T.HOST_CFLAGS)
    proc = T.run([cc, *flags, "-c", f"{prefix}.c", "-o", f"{prefix}.o"], build)
    if proc.returncode != 0:
        raise _fail(f"compiling {prefix}.c with {' '.join([Path(cc).name, *flags])}", proc)
    proc = T.run([cc, *flags, "-c", "main.c", "-o", "main.o"], build)
    if proc.returncode != 0:
        raise _fail(f"compiling main.c with {' '.join([Path(cc).name, *flags])}", proc)
    exe = build / f"{prefix}_test"
    proc = T.run([cc, "-o", exe.name, "main.o", f"{prefix}.o", "-lm"], build)
    if proc.returncode != 0:
        raise _fail("linking the harness", proc)
    return exe


def deepest_stack(cc: str, flags: list[str], build: Path, prefix: str) -> tuple[int, str] | None:
    """Stack bytes of the deepest call chain from ``prefix_predict``, from GCC's call graph.

    Compiles ``prefix.c`` once more with ``-fstack-usage -fcallgraph-info=su`` (GCC >= 10) and
    walks the graph; None when the compiler lacks the options. Library functions (expf) have no
    size in the graph and count 0.
    """
    obj = build / f"{prefix}-stack.o"
    proc = T.run([cc, *flags, "-fstack-usage", "-fcallgraph-info=su", "-c", f"{prefix}.c", "-o", obj.name], build)
    ci = build / f"{prefix}-stack.ci"
    if proc.returncode != 0 or not ci.exists():
        return None
    frames: dict[str, int] = {}
    calls: dict[str, set[str]] = {}
    for line in ci.read_text(errors="replace").splitlines():
        node = re.match(r'node: \{ title: "([^"]+)" label: "[^"]*?(\d+) bytes', line)
        if node:
            frames[node.group(1)] = int(node.group(2))
        edge = re.match(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"', line)
        if edge:
            calls.setdefault(edge.group(1), set()).add(edge.group(2))

    def depth(fn: str, seen: frozenset) -> int:  # no recursion in generated code; `seen` guards anyway
        return frames.get(fn, 0) + max((depth(c, seen | {fn}) for c in calls.get(fn, ()) if c not in seen), default=0)

    root = next((n for n in frames if n.rsplit(":", 1)[-1] == f"{prefix}_predict"), None)
    return (depth(root, frozenset()), root.rsplit(":", 1)[-1]) if root else None


def run_harness(exe: Path, x: np.ndarray, output_size: int) -> np.ndarray:
    """Run the harness on ``x`` (N, ...) float32; return (N, output_size) float32."""
    build = exe.parent
    inputs, outputs = build / "inputs.bin", build / "outputs.bin"
    np.ascontiguousarray(x, dtype=np.float32).tofile(inputs)
    proc = T.run([str(exe), inputs.name, outputs.name], build, timeout=600)
    if proc.returncode != 0:
        raise _fail("running the harness", proc)
    y = np.fromfile(outputs, dtype=np.float32)
    if y.size != len(x) * output_size:
        raise ExportError(f"C export verification: the harness wrote {y.size} values for {len(x)} inputs, expected {len(x) * output_size}")
    return y.reshape(len(x), output_size)


def build_arm_object(src: Path, build: Path, prefix: str) -> tuple[str, T.Sizes | None, int | None, str]:
    """Compile ``prefix.c`` for a Cortex-M4F; return (compiler version, sizes, deepest stack, note)."""
    cc = shutil.which(T.ARM_CC)
    if cc is None:
        return "", None, None, f"{T.ARM_CC} not found: Cortex-M4 size not measured (apt-get install gcc-arm-none-eabi)"
    arm = build / "cortex-m4"
    arm.mkdir(exist_ok=True)
    for name in (f"{prefix}.c", f"{prefix}.h"):
        shutil.copy2(src / name, arm / name)
    proc = T.run([cc, *T.ARM_CFLAGS, *T.ARM_FLOAT, "-c", f"{prefix}.c", "-o", f"{prefix}-cm4.o"], arm)
    if proc.returncode != 0:
        raise _fail(f"compiling {prefix}.c for Cortex-M4", proc)
    stack = deepest_stack(cc, [*T.ARM_CFLAGS, *T.ARM_FLOAT], arm, prefix)
    return T.version(cc), T.size_of(T.ARM_SIZE, arm / f"{prefix}-cm4.o"), stack[0] if stack else None, ""


@dataclass
class Inputs:
    """Inputs for calibration and checks: real MNIST when the model takes a 28x28 grey image."""

    x_check: np.ndarray
    check_source: str
    x_test: np.ndarray | None  # all labelled test images (int8 accuracy), or None
    y_test: np.ndarray | None
    test_source: str = "MNIST test images"


def verify(src: Path, prefix: str, network, inputs: Inputs, *, int8: bool) -> Verification:
    """Compile and run the export in ``src`` and compare it with ``network`` (the engine)."""
    cc = T.host_compiler()
    if cc is None:
        return Verification(skipped="no host C compiler found ($CC or cc): not compiled, not verified")
    result = Verification(compiler=T.version(cc))
    output_size = int(np.prod(network.spec.output_shape))
    with tempfile.TemporaryDirectory(prefix="layerlab-c-") as tmp:
        build = Path(tmp)
        exe = build_host(src, build, prefix, cc)
        stack = deepest_stack(cc, list(T.HOST_CFLAGS), build, prefix)
        result.host_stack = stack[0] if stack else None
        result.host_object = T.size_of("size", build / f"{prefix}.o")
        classifier = is_classifier(network.spec)
        if not int8:
            x = inputs.x_check
            ours = run_harness(exe, x, output_size)
            ref = network.predict(x).reshape(len(x), output_size)
            result.float_check = FloatCheck(
                images=len(x), source=inputs.check_source, max_abs_diff=float(np.max(np.abs(ours - ref))) if len(x) else 0.0,
                same_class=int(np.sum(np.argmax(ours, axis=1) == np.argmax(ref, axis=1))),
                peak=float(np.max(np.abs(ref))) if len(x) else 0.0, classifier=classifier)
        else:
            labelled = inputs.x_test is not None
            x = inputs.x_test if labelled else inputs.x_check
            ours = run_harness(exe, x, output_size)
            ref = network.predict(x).reshape(len(x), output_size)
            c_class, f_class = np.argmax(ours, axis=1), np.argmax(ref, axis=1)
            spread = float(np.max(ref) - np.min(ref)) if len(x) else 0.0
            rms = float(np.sqrt(np.mean((ours.astype(np.float64) - ref) ** 2))) if len(x) else 0.0
            result.int8_check = Int8Check(
                images=len(x), source=inputs.test_source if labelled else inputs.check_source,
                accuracy_int8=float(np.mean(c_class == inputs.y_test)) if labelled else None,
                accuracy_float=float(np.mean(f_class == inputs.y_test)) if labelled else None,
                agreement=float(np.mean(c_class == f_class)), max_abs_diff=float(np.max(np.abs(ours - ref))),
                classifier=classifier, range_error=rms / spread if spread > 0 else rms)
        result.arm_compiler, result.arm_object, result.arm_stack, result.arm_note = build_arm_object(src, build, prefix)
    return result
