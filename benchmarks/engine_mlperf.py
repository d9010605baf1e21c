"""Engine throughput on the MLPerf Tiny reference models against tf_keras and onnxruntime, in one run.

    .venv/bin/python benchmarks/engine_mlperf.py [--repeats 5] [--batch 64] [--threads 1]

For each .h5 in ../shared/models/mlperf_tiny: images per second at batch ``--batch`` for the
layerlab engine (``Network.predict``), tf_keras ``predict_on_batch`` (the oracle that wrote the
files) and onnxruntime running a tf2onnx export of the same tf_keras model, with
``--threads`` intra-op threads for onnxruntime and TensorFlow, and the same number of BLAS threads
for NumPy (threadpoolctl). Best and median of ``--repeats`` timed runs after one warm-up, since
the machine is shared. Inputs are seeded uniform random in each model's input range; the max
relative difference to tf_keras is printed beside each row. Needs the ``bench`` extra
(onnxruntime, tf2onnx, threadpoolctl); a missing peer prints why. No assertions: a table.
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
MODELS = {"pretrainedResnet.h5": (0.0, 255.0), "str_ww_ref_model.h5": (0.0, 0.94), "ad01.h5": (-85.0, 15.0)}


def timed(fn, x, repeats: int) -> tuple[float, float, np.ndarray]:
    out = fn(x)  # warm-up (and the output to compare)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return len(x) / min(times), len(x) / statistics.median(times), np.asarray(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default=str(REPO.parent / "shared" / "models" / "mlperf_tiny"))
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ["LAYERLAB_THREADS"] = str(args.threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)  # NumPy's BLAS: one thread per engine worker, no oversubscription
    import tensorflow as tf
    import tf_keras

    import layerlab

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    print(f"machine: {cpu}, {os.cpu_count()} cores, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, tensorflow {tf.__version__}; batch {args.batch}, "
          f"{args.threads} thread(s) each, best / median of {args.repeats}")
    try:
        import onnxruntime as ort
        import tf2onnx
    except ImportError as exc:
        ort = None
        print(f"onnxruntime row skipped: {exc} (pip install 'layerlab[bench]')")
    print()
    print("| model | engine | images/s best | median | vs onnxruntime | max rel. diff to tf_keras |")
    print("|---|---|---|---|---|---|")
    for name, (low, high) in MODELS.items():
        path = Path(args.models) / name
        net = layerlab.load(path)
        kmodel = tf_keras.models.load_model(path, compile=False)
        x = np.random.default_rng(0).uniform(low, high, (args.batch, *net.spec.input_shape)).astype(np.float32)
        rows = {
            "layerlab engine": timed(net.predict, x, args.repeats),
            "tf_keras predict_on_batch": timed(lambda v, m=kmodel: m.predict_on_batch(v), x, args.repeats),
        }
        if ort is not None:
            with tempfile.TemporaryDirectory() as tmp:
                spec = (tf.TensorSpec((None, *net.spec.input_shape), tf.float32, name="x"),)
                onnx_path = Path(tmp) / "m.onnx"
                tf2onnx.convert.from_keras(kmodel, input_signature=spec, output_path=str(onnx_path))
                options = ort.SessionOptions()
                options.intra_op_num_threads = args.threads
                options.inter_op_num_threads = 1
                session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
                feed = session.get_inputs()[0].name
                rows["onnxruntime (tf2onnx)"] = timed(lambda v, s=session, f=feed: s.run(None, {f: v})[0], x, args.repeats)
        ref = rows["tf_keras predict_on_batch"][2]
        base = rows.get("onnxruntime (tf2onnx)", (None,))[0]
        for engine, (best, median, out) in rows.items():
            ratio = f"{best / base:.2f}x" if base else "n/a"
            diff = float(np.max(np.abs(out - ref)) / max(float(np.max(np.abs(ref))), 1e-30))
            print(f"| {name} | {engine} | {best:,.0f} | {median:,.0f} | {ratio} | {diff:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
