"""Engine throughput on the real models (MLPerf Tiny and old Keras 2 files) against tf_keras and onnxruntime, in one run.

    .venv/bin/python benchmarks/engine_mlperf.py [--repeats 5] [--calls 3] [--batch 64] [--threads 1] [--pause 0.05]
        [--openblas-core auto]

For each model file in ../shared/models (the three MLPerf Tiny reference models, and the two
MNIST CNNs saved by Keras 2.2.4 and 2.3.1): images per second at batch ``--batch`` for the
layerlab engine (``Network.predict``), tf_keras ``predict_on_batch`` (the oracle for Keras 2
files; none for the channels_first model, which TensorFlow cannot run on a CPU) and onnxruntime
running a tf2onnx export of the same tf_keras model, with ``--threads`` intra-op threads for
onnxruntime and TensorFlow, and the same number of BLAS threads for NumPy (threadpoolctl). Each
runner runs in a process of its own (started fresh: the engine's imports no TensorFlow), so no
runner's libraries or pool threads share a process with another's, and the other runners'
processes are stopped while one is timed. The machine is shared and
its speed drifts, so the runners take turns: ``--repeats`` rounds, each runner timed once per
round (best of ``--calls`` calls, after ``--pause`` seconds with every runner idle); the table
gives the best and median round, the ratio of the bests, and the median of the per-round ratios. Inputs are seeded
uniform random in each model's input range; the max relative difference to tf_keras (else to
onnxruntime) is printed beside each row. The header names the kernels NumPy's OpenBLAS runs in
the runners: OpenBLAS picks them for the CPU unless OPENBLAS_CORETYPE names them, and some
machines set it (this project's set Haswell: AVX2 kernels on an AVX-512 CPU, about half as
fast); ``--openblas-core auto`` unsets it for the runners, any other value sets it. Needs the
``bench`` extra (onnxruntime, tf2onnx, threadpoolctl); a missing peer prints why. No
assertions: a table.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import signal
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
    import layerlab

    return layerlab.load(path, architecture=architecture), _tf_keras_model(path, architecture)


def _serve(kind: str, path: str, architecture: str | None, onnx_path: str | None, x_path: str, threads: int, conn) -> None:
    """One runner in its own process: loads ``kind`` ('engine', 'tf_keras' or 'onnxruntime'),
    sends its output on the input at ``x_path``, then times ``calls`` calls each time it is
    asked (the best, in seconds) until told to stop."""
    os.environ["LAYERLAB_THREADS"] = str(threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)  # NumPy's BLAS: after numpy is imported (above), one thread per engine worker
    x = np.load(x_path)
    if kind == "engine":
        import layerlab

        run = layerlab.load(Path(path), architecture=Path(architecture) if architecture else None).predict
    elif kind == "tf_keras":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        run = _tf_keras_model(Path(path), Path(architecture) if architecture else None).predict_on_batch
    else:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0].name
        run = lambda v: session.run(None, {feed: v})[0]  # noqa: E731
    conn.send(np.asarray(run(x)))  # the warm-up, and the output to compare
    while (calls := conn.recv()) is not None:
        best = float("inf")
        for _ in range(calls):
            start = time.perf_counter()
            run(x)
            best = min(best, time.perf_counter() - start)
        conn.send(best)


def _tf_keras_model(path: Path, architecture: Path | None):
    import tf_keras

    if architecture is None:
        return tf_keras.models.load_model(path, compile=False)
    kmodel = tf_keras.models.model_from_json(architecture.read_text())
    kmodel.load_weights(path)
    return kmodel


def rounds(kinds: dict[str, str], args, path: Path, architecture: Path | None, onnx_path: Path | None,
           x_path: Path, n: int) -> dict[str, tuple[list[float], np.ndarray]]:
    """Images/s of every runner (label -> kind, each in a process of its own) in each of
    ``args.repeats`` rounds, runners taking turns within a round (each timed as the best of
    ``args.calls`` back-to-back calls, after ``args.pause`` seconds idle), so that a slow spell
    of the shared machine falls on all of them alike; and each runner's output. While one runner
    is timed the others are stopped (SIGSTOP), and the pause before lets the last runner's pool
    threads stop spinning (onnxruntime's and TensorFlow's wait for work by spinning a while), so
    no other runner's thread takes a core from it."""
    context = multiprocessing.get_context("spawn")  # fresh interpreters: nothing of this one's imports
    workers = {}
    try:
        for label, kind in kinds.items():
            mine, theirs = context.Pipe()
            process = context.Process(target=_serve, args=(kind, str(path), str(architecture) if architecture else None,
                                                            str(onnx_path) if onnx_path else None, str(x_path), args.threads, theirs),
                                      daemon=True)
            process.start()
            workers[label] = (process, mine)
        outs = {label: conn.recv() for label, (_, conn) in workers.items()}
        speeds: dict[str, list[float]] = {label: [] for label in kinds}
        for _ in range(args.repeats):
            for label, (_, conn) in workers.items():
                others = [process.pid for other, (process, _) in workers.items() if other != label]
                for pid in others:  # stopped while this runner is timed: none of their threads can wake
                    os.kill(pid, signal.SIGSTOP)
                try:
                    time.sleep(args.pause)
                    conn.send(args.calls)
                    speeds[label].append(n / conn.recv())
                finally:
                    for pid in others:
                        os.kill(pid, signal.SIGCONT)
        return {label: (speeds[label], outs[label]) for label in kinds}
    finally:
        for process, conn in workers.values():
            try:
                conn.send(None)
            except OSError:
                pass
            process.join(timeout=30)
            if process.is_alive():
                process.kill()


def _runner_blas() -> str:
    """NumPy's BLAS and the kernels it chose, as a fresh interpreter with this environment (a
    runner's) loads it: OpenBLAS picks them when NumPy loads it, unless OPENBLAS_CORETYPE names
    them (some machines set it: an AVX-512 CPU then runs AVX2 kernels, half as fast)."""
    import subprocess

    probe = ("import numpy, threadpoolctl; b = [i for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas'];"
             "print(f\"{b[0]['internal_api']} {b[0]['version']}, {b[0].get('architecture')} kernels\" if b else 'none found')")
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60).stdout.strip()
    forced = os.environ.get("OPENBLAS_CORETYPE")
    return f"{found or 'unknown'} ({f'OPENBLAS_CORETYPE={forced}' if forced else 'chosen by OpenBLAS for this CPU'})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds, every runner timed once in each")
    parser.add_argument("--calls", type=int, default=3, help="back-to-back calls per timing (the best counts)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pause", type=float, default=0.05,
                        help="seconds idle before each runner's turn (the last one's spinning threads go quiet)")
    parser.add_argument("--models", default=str(REPO.parent / "shared" / "models"))
    parser.add_argument("--openblas-core", metavar="NAME",
                        help="OPENBLAS_CORETYPE for the runners: 'auto' unsets it (OpenBLAS picks its kernels for "
                             "the CPU, as on a machine without the variable); default: the environment's")
    args = parser.parse_args()
    if args.openblas_core == "auto":
        os.environ.pop("OPENBLAS_CORETYPE", None)
    elif args.openblas_core:
        os.environ["OPENBLAS_CORETYPE"] = args.openblas_core
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf  # here only to export each model to ONNX; nothing is timed in this process

    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    print(f"machine: {cpu}, {os.cpu_count()} cores, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, tensorflow {tf.__version__}; batch {args.batch}, "
          f"{args.threads} thread(s) each, {args.repeats} rounds of best-of-{args.calls}, each runner in its own process")
    print(f"NumPy's BLAS in the runners: {_runner_blas()}")
    try:
        import onnxruntime  # noqa: F401
        import tf2onnx
    except ImportError as exc:
        tf2onnx = None
        print(f"onnxruntime row skipped: {exc} (pip install 'layerlab[bench]')")
    print()
    print("| model | engine | images/s best | median | vs onnxruntime (best) | (median of rounds) | max rel. diff to tf_keras |")
    print("|---|---|---|---|---|---|---|")
    notes = []
    for relative, (low, high, architecture) in MODELS.items():
        path, name = Path(args.models) / relative, Path(relative).name
        arch = Path(args.models) / architecture if architecture else None
        net, kmodel = load_both(path, arch)
        x = np.random.default_rng(0).uniform(low, high, (args.batch, *net.spec.input_shape)).astype(np.float32)
        kinds = {"layerlab engine": "engine"}
        if "channels_first" in {getattr(layer, "data_format", None) for layer in net.spec.layers}:
            notes.append(f"{name}: no tf_keras row (TensorFlow on CPU cannot run a channels_first Conv2D); "
                         "its diff column is against onnxruntime")
        else:
            kinds["tf_keras predict_on_batch"] = "tf_keras"
        with tempfile.TemporaryDirectory() as tmp:
            x_path, onnx_path = Path(tmp) / "x.npy", None
            np.save(x_path, x)
            if tf2onnx is not None:
                spec = (tf.TensorSpec((None, *net.spec.input_shape), tf.float32, name="x"),)
                onnx_path = Path(tmp) / "m.onnx"
                tf2onnx.convert.from_keras(kmodel, input_signature=spec, output_path=str(onnx_path))
                kinds["onnxruntime (tf2onnx)"] = "onnxruntime"
            rows = rounds(kinds, args, path, arch, onnx_path, x_path, len(x))
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
