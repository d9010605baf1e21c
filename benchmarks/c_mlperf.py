"""The C export on the MLPerf Tiny reference models, beside TensorFlow Lite Micro, in one run.

    .venv/bin/python benchmarks/c_mlperf.py [--passes 5] [--models DIR]

For each .h5 in ../shared/models/mlperf_tiny: layerlab's float32 and int8 C (int8 calibrated on
2000 seeded uniform inputs in the model's input range, checked on the 500 held out): the export's
own verification line, Cortex-M4 flash and RAM (arm-none-eabi-size of the object; RAM = static
buffers + the deepest stack from GCC's call graph), host CPU time per inference (the export's
harness, ``--bench``, best of ``--passes``), and instructions executed per inference on an
emulated Cortex-M4 (``layerlab.export.c.emulate``: the ``-cm4.elf`` in ``unicorn``, mean of 3
inputs; int8 counts ``predict_q``, the int8 network alone), per MAC, and whether the emulated
float outputs equal the host build's (bit for bit, or within 1e-6 where a float softmax uses
newlib's expf on one side and glibc's on the other). Beside it, TFLite Micro (PyPI ``tflite-micro``) on the
reference int8 .tflite: the arena its RecordingMicroAllocator reports (what a TFLM user must
reserve, besides stack) and its host time per ``invoke``; and the TFLite interpreter's agreement
of that int8 file with the float model on the same 500 held-out inputs (classifiers only: the
ad01 .tflite files are of another model, see their README). Then MLPerf Tiny's fourth model, the
visual wake words MobileNetV1 0.25 at 96x96, as tf_keras builds it (seeded random weights; no
file of it is reachable here). A missing tool prints why. No assertions: a table.
"""

from __future__ import annotations

import argparse
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODELS = {  # file: (input range, the int8 .tflite of the same network)
    "pretrainedResnet.h5": ((0.0, 255.0), "pretrainedResnet_quant.tflite"),
    "str_ww_ref_model.h5": ((0.0, 0.94), "str_ww_ref_model.tflite"),
    "ad01.h5": ((-85.0, 15.0), "ad01_int8.tflite"),
}
TFLM_PROBE = """
import sys, time, numpy as np
from tflite_micro.python.tflite_micro import runtime
it = runtime.Interpreter.from_file(sys.argv[1])
d = it.get_input_details(0)
x = np.zeros(d["shape"], d["dtype"])
it.set_input(x, 0); it.invoke()
best = min((lambda t: (it.set_input(x, 0), it.invoke(), time.perf_counter() - t)[-1])(time.perf_counter()) for _ in range(int(sys.argv[2])))
print(f"invoke_us {best * 1e6:.1f}", flush=True)
it.print_allocations()
"""


def _grab(pattern: str, text: str, default: str = "?") -> str:
    found = re.search(pattern, text)
    return found.group(1) if found else default


def layerlab_rows(path: Path, x_range, passes: int, work: Path, tflite: Path | None, inputs: int = 2500) -> list[list[str]]:
    import layerlab
    from layerlab.export.c import export_c

    network = layerlab.load(path)
    rng = np.random.default_rng(650)
    x = rng.uniform(*x_range, (inputs, *network.spec.input_shape)).astype(np.float32)
    calibration = inputs * 4 // 5  # the rest is held out
    np.save(work / "x.npy", x)
    rng.uniform(*x_range, (50, *network.spec.input_shape)).astype(np.float32).tofile(work / "images.bin")
    rows = []
    for int8 in (False, True):
        kind = "int8" if int8 else "float32"
        out = work / f"{path.stem}-{kind}"
        try:
            report = export_c(network, out, int8=int8, calibration_data=work / "x.npy", calibration=calibration,
                              verify_images=inputs - calibration).read_text()
        except Exception as exc:  # a table row, not a traceback
            rows.append([path.name, f"layerlab {kind}", "-", "-", "-", "-", "-", "-", f"not exported: {str(exc).splitlines()[0][:120]}"])
            continue
        flash = _grab(r"flash \(code \+ weights\) (\d+) B", report)
        ram = _grab(r"static RAM (\d+) B\n", report)
        stack = _grab(r"stack (\d+) B on the deepest call chain from \w+: RAM with stack", report)
        check = _grab(r"(int8 on [^\n]*|float32 on [^\n]*)", report).replace("|", "/")
        subprocess.run(["make", "--no-print-directory", "-s"], cwd=out, check=True, capture_output=True)
        exe = next(p for p in out.iterdir() if p.name.endswith("_test"))
        bench = subprocess.run([str(exe), "--bench", str(passes), str(work / "images.bin")], capture_output=True, text=True, check=True)
        host = min(float(v) for v in re.findall(r"^predict ([\d.]+)", bench.stdout, re.M)) / 1000.0
        total = int(ram) + int(stack) if ram.isdigit() and stack.isdigit() else "?"
        instructions, per_mac, same = emulated(out, exe, network, work / "images.bin", int8)
        rows.append([path.name, f"layerlab {kind}", flash, f"{total} ({ram} static + {stack} stack)", f"{host:.1f}",
                     instructions, per_mac, same, check[:150]])
    if tflite is not None and tflite.is_file():
        rows.append([path.name, "TFLite int8 (interpreter)", "-", "-", "-", "-", "-", "-", tflite_agreement(network, tflite, x[calibration:])])
    return rows


def emulated(out: Path, exe: Path, network, images: Path, int8: bool, samples: int = 3) -> tuple[str, str, str]:
    """Instructions per inference on the emulated Cortex-M4 (unicorn, mean of ``samples`` inputs),
    per MAC, and whether the emulated outputs equal the host build's bit for bit."""
    try:
        from layerlab.export.c.emulate import count
    except ImportError as exc:
        return "-", "-", f"not counted ({exc})"
    prefix = exe.name[: -len("_test")]
    try:
        subprocess.run(["make", "--no-print-directory", "-s", f"{prefix}-cm4.elf"], cwd=out, check=True, capture_output=True)
        size = int(np.prod(network.spec.input_shape))
        x = np.fromfile(images, np.float32)[: samples * size].reshape(samples, size)
        x.tofile(out / "emulated-in.bin")
        subprocess.run([str(exe), str(out / "emulated-in.bin"), str(out / "emulated-out.bin")], check=True, capture_output=True)
        host = np.fromfile(out / "emulated-out.bin", np.float32).reshape(samples, -1)
        counts = [count(out / f"{prefix}-cm4.elf", prefix, x[i], int8=int8, input_size=size, output_size=host.shape[1])
                  for i in range(samples)]
    except Exception as exc:  # a table cell, not a traceback
        return "-", "-", f"not counted: {str(exc).splitlines()[0][:80]}"
    mean = sum(c.instructions for c in counts) / samples
    exact = all(np.array_equal(c.output, host[i]) for i, c in enumerate(counts))
    # a float softmax at the end uses newlib's expf on the Cortex-M, glibc's on the host
    close = all(np.allclose(c.output, host[i], rtol=0, atol=1e-6 * max(1.0, float(np.max(np.abs(host[i])))))
                for i, c in enumerate(counts))
    return f"{mean:,.0f}", f"{mean / network.spec.macs:.2f}", "bit for bit" if exact else "within 1e-6" if close else "NO"


def tflite_agreement(network, tflite: Path, x: np.ndarray) -> str:
    """The int8 .tflite's class agreement with the float model (layerlab's engine) on ``x``."""
    try:
        import tensorflow as tf
    except ImportError as exc:
        return f"TFLite interpreter not available ({exc})"
    interpreter = tf.lite.Interpreter(model_path=str(tflite))
    interpreter.allocate_tensors()
    detail, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = detail["quantization"]
    classes = []
    for sample in x:
        q = np.clip(np.round(sample / scale) + zero, -128, 127).astype(detail["dtype"])
        interpreter.set_tensor(detail["index"], q[None].reshape(detail["shape"]))
        interpreter.invoke()
        classes.append(int(np.argmax(interpreter.get_tensor(out["index"]))))
    agree = float(np.mean(np.asarray(classes) == network.predict(x).reshape(len(x), -1).argmax(axis=1)))
    return f"TFLite int8 and float predict the same class on {100 * agree:.2f}% of the same {len(x)} held-out inputs"


def tflm_row(model: str, tflite: Path, passes: int) -> list[str]:
    if not tflite.is_file():
        return [model, "TFLite Micro int8", "-", "-", "-", "-", "-", "-", f"{tflite.name} not found"]
    try:
        proc = subprocess.run([sys.executable, "-c", TFLM_PROBE, str(tflite), str(max(passes, 20))], capture_output=True, text=True,
                              timeout=300)
    except subprocess.TimeoutExpired:
        return [model, "TFLite Micro int8", "-", "-", "-", "-", "-", "-", "timed out"]
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        return [model, "TFLite Micro int8", "-", "-", "-", "-", "-", "-", f"not run: {text.strip().splitlines()[-1][:120] if text.strip() else proc.returncode} "
                "(pip install tflite-micro)"]
    arena = _grab(r"Arena allocation total (\d+) bytes", text)
    return [model, f"TFLite Micro int8 ({tflite.name})", f"{tflite.stat().st_size} (.tflite)", f"{arena} (arena, + stack)",
            _grab(r"invoke_us ([\d.]+)", text), "-", "-", "-", "reference interpreter (x86 build of the TFLM kernels)"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--models", default=str(REPO.parent / "shared" / "models" / "mlperf_tiny"))
    parser.add_argument("--only", default=None, help="one model file name, or 'mobilenet'")
    args = parser.parse_args()
    folder = Path(args.models)
    print(f"machine: {platform.machine()} {platform.processor() or ''}, Python {platform.python_version()}; "
          f"{time.strftime('%Y-%m-%d')}")
    print("| model | engine | flash B | RAM B | host us / inference | Cortex-M4 instructions / inference | per MAC "
          "| emulated = host | check |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="layerlab-c-bench-") as tmp:
        for model, (x_range, tflite) in MODELS.items():
            if args.only and args.only != model:
                continue
            path = folder / model
            if not path.is_file():
                print(f"| {model} | - | - | - | - | - | - | - | not found in {folder} |")
                continue
            work = Path(tmp) / path.stem
            work.mkdir()
            classifier = model != "ad01.h5"  # the ad01 .tflite files are of another model (their README)
            rows = layerlab_rows(path, x_range, args.passes, work, folder / tflite if classifier else None)
            for row in [*rows, tflm_row(model, folder / tflite, args.passes)]:
                print("| " + " | ".join(str(c) for c in row) + " |", flush=True)
        mobilenet = visual_wake_words_like(Path(tmp)) if args.only in (None, "mobilenet") else None
        if mobilenet is not None:
            work = Path(tmp) / "mobilenet"
            work.mkdir()
            for row in layerlab_rows(mobilenet, (-1.0, 1.0), args.passes, work, None, inputs=500):  # 96x96x3: 500 fit the limits
                print("| " + " | ".join(str(c) for c in row) + " |", flush=True)
    return 0


def visual_wake_words_like(folder: Path) -> Path | None:
    """MLPerf Tiny's fourth model, the visual wake words MobileNetV1 (alpha 0.25, 96x96x3), as
    tf_keras builds it (no file of it is reachable here): seeded random weights and batch-norm
    statistics, 2 classes. A network not in the repository, saved by Keras itself."""
    try:
        import tf_keras as keras
    except ImportError:
        print("| mobilenet_v1_0.25_96 | - | - | - | - | - | - | - | tf_keras not installed |")
        return None
    keras.utils.set_random_seed(650)
    model = keras.applications.MobileNet(input_shape=(96, 96, 3), alpha=0.25, weights=None, classes=2)
    rng = np.random.default_rng(650)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape), rng.normal(0, 0.1, mean.shape),
                               rng.uniform(0.5, 1.5, var.shape)])
    path = folder / "mobilenet_v1_0.25_96.h5"
    model.save(path)
    return path


if __name__ == "__main__":
    sys.exit(main())
