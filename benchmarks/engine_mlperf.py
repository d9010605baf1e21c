"""Engine throughput on the real models (MLPerf Tiny and old Keras 2 files) against tf_keras and onnxruntime, in one run.

    .venv/bin/python benchmarks/engine_mlperf.py [--repeats 5] [--calls 3] [--batch 64] [--threads 1]

For each model file in ../shared/models (the three MLPerf Tiny reference models, and the two
MNIST CNNs saved by Keras 2.2.4 and 2.3.1): images per second at batch ``--batch`` for the
layerlab engine (``Network.predict``), tf_keras ``predict_on_batch`` (the oracle for Keras 2
files; none for the channels_first model, which TensorFlow cannot run on a CPU) and onnxruntime
running a tf2onnx export of the same tf_keras model, with ``--threads`` intra-op threads for
onnxruntime and TensorFlow, and the same number of BLAS threads for NumPy (threadpoolctl). The
machine is shared and its speed drifts, so the runners take turns: ``--repeats`` rounds, each
runner timed once per round (best of ``--calls`` calls); the table gives the best and median
round, the ratio of the bests, and the median of the per-round ratios. Inputs are seeded
uniform random in each model's input range; the max relative difference to tf_keras (else to
onnxruntime) is printed beside each row. Needs the ``bench`` extra (onnxruntime, tf2onnx,
threadpoolctl); a missing peer prints why. No assertions: a table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# Every real model file in ../shared/models: its input range, and its architecture file when the
# .h5 holds weights only.
MODELS = {
    "mlperf_tiny/pretrainedResnet.h5": (0.0, 255.0, None),
    "mlperf_tiny/str_ww_ref_model.h5": (0.0, 0.94, None),
    "mlperf_tiny/ad01.h5": (-85.0, 15.0, None),
    "keras2/keras224_sequential_mnist.h5": (0.0, 255.0, None),
    "keras2/keras231_channels_first_mnist_weights.h5": (0.0, 1.0, "keras2/keras231_channels_first_mnist_model.json"),
}


def load_both(path: Path, architecture: Path | None):
    """The model file as a layerlab Network and as a tf_keras model (weights-only files with
    their JSON architecture)."""
    import tf_keras

    import layerlab

    net = layerlab.load(path, architecture=architecture)
    if architecture is None:
        return net, tf_keras.models.load_model(path, compile=False)
    kmodel = tf_keras.models.model_from_json(architecture.read_text())
    kmodel.load_weights(path)
    return net, kmodel


def rounds(runners: dict, x, repeats: int, calls: int) -> dict[str, tuple[list[float], np.ndarray]]:
    """Images/s of every runner in each of ``repeats`` rounds, runners taking turns within a round
    (each timed as the best of ``calls`` back-to-back calls), so that a slow spell of the shared
    machine falls on all of them alike; and each runner's output on ``x``."""
    outs = {name: np.asarray(fn(x)) for name, fn in runners.items()}  # warm-up, and the output to compare
    speeds: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, fn in runners.items():
            best = float("inf")
            for _ in range(calls):
                start = time.perf_counter()
                fn(x)
                best = min(best, time.perf_counter() - start)
            speeds[name].append(len(x) / best)
    return {name: (speeds[name], outs[name]) for name in runners}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds, every runner timed once in each")
    parser.add_argument("--calls", type=int, default=3, help="back-to-back calls per timing (the best counts)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default=str(REPO.parent / "shared" / "models"))
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ["LAYERLAB_THREADS"] = str(args.threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)  # NumPy's BLAS: one thread per engine worker, no oversubscription
    import tensorflow as tf


    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    print(f"machine: {cpu}, {os.cpu_count()} cores, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, tensorflow {tf.__version__}; batch {args.batch}, "
          f"{args.threads} thread(s) each, {args.repeats} rounds of best-of-{args.calls}")
    try:
        import onnxruntime as ort
        import tf2onnx
    except ImportError as exc:
        ort = None
        print(f"onnxruntime row skipped: {exc} (pip install 'layerlab[bench]')")
    print()
    print("| model | engine | images/s best | median | vs onnxruntime (best) | (median of rounds) | max rel. diff to tf_keras |")
    print("|---|---|---|---|---|---|---|")
    notes = []
    for relative, (low, high, architecture) in MODELS.items():
        path, name = Path(args.models) / relative, Path(relative).name
        net, kmodel = load_both(path, Path(args.models) / architecture if architecture else None)
        x = np.random.default_rng(0).uniform(low, high, (args.batch, *net.spec.input_shape)).astype(np.float32)
        runners = {"layerlab engine": net.predict}
        if "channels_first" in {getattr(layer, "data_format", None) for layer in net.spec.layers}:
            notes.append(f"{name}: no tf_keras row (TensorFlow on CPU cannot run a channels_first Conv2D); "
                         "its diff column is against onnxruntime")
        else:
            runners["tf_keras predict_on_batch"] = lambda v, m=kmodel: m.predict_on_batch(v)
        with tempfile.TemporaryDirectory() as tmp:
            if ort is not None:
                spec = (tf.TensorSpec((None, *net.spec.input_shape), tf.float32, name="x"),)
                onnx_path = Path(tmp) / "m.onnx"
                tf2onnx.convert.from_keras(kmodel, input_signature=spec, output_path=str(onnx_path))
                options = ort.SessionOptions()
                options.intra_op_num_threads = args.threads
                options.inter_op_num_threads = 1
                session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
                feed = session.get_inputs()[0].name
                runners["onnxruntime (tf2onnx)"] = lambda v, s=session, f=feed: s.run(None, {f: v})[0]
            rows = rounds(runners, x, args.repeats, args.calls)
        ref = rows.get("tf_keras predict_on_batch", rows.get("onnxruntime (tf2onnx)", (None, None)))[1]
        base = rows.get("onnxruntime (tf2onnx)", (None,))[0]
        for engine, (speeds, out) in rows.items():
            best, median = max(speeds), statistics.median(speeds)
            ratio = f"{best / max(base):.2f}x" if base else "n/a"
            paired = f"{statistics.median(s / b for s, b in zip(speeds, base, strict=True)):.2f}x" if base else "n/a"
            diff = "n/a" if ref is None else f"{float(np.max(np.abs(out - ref)) / max(float(np.max(np.abs(ref))), 1e-30)):.1e}"
            print(f"| {name} | {engine} | {best:,.0f} | {median:,.0f} | {ratio} | {paired} | {diff} |")
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
