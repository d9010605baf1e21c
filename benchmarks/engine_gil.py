"""The engine beside a busy Python thread of the same process, against onnxruntime there.

    .venv/bin/python benchmarks/engine_gil.py [--rounds 5] [--batch 64]

For the real models of ``engine_mlperf.py`` (../shared/models): images per second at batch
``--batch`` on one thread (engine worker threads, NumPy's BLAS and onnxruntime's intra-op
threads), alone and while another thread of the process runs a pure-Python loop (a GUI, a
server or a data loader would). The engine runs as it ships (the interpreter's switch interval
shortened to ``fast.SWITCH_INTERVAL`` while a plan runs) and with that left at the interpreter's
5 ms (``SWITCH_INTERVAL = None``); onnxruntime (tf2onnx export) runs a whole call without the
GIL. Best of 3 calls a round, median of ``--rounds`` rounds. Needs the ``bench`` extra. No
assertions: a table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from engine_mlperf import MODELS, load_both

REPO = Path(__file__).resolve().parents[1]


def _busy(stop: threading.Event) -> None:
    """A pure-Python loop: holds the GIL but for the interpreter's switches."""
    while not stop.is_set():
        sum(range(1000))


def _speed(fn, x, rounds: int) -> float:
    speeds = []
    for _ in range(rounds):
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            fn(x)
            best = min(best, time.perf_counter() - start)
        speeds.append(len(x) / best)
    return statistics.median(speeds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--models", default=str(REPO.parent / "shared" / "models"))
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ["LAYERLAB_THREADS"] = "1"
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx

    from layerlab.engine import fast

    shipped = fast.SWITCH_INTERVAL
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; "
          f"python {platform.python_version()}, switch interval {sys.getswitchinterval() * 1e3:g} ms, "
          f"engine's while a plan runs {shipped * 1e6:g} us; batch {args.batch}, one thread each")
    print()
    print("| model | runner | alone images/s | beside a busy thread | beside / alone |")
    print("|---|---|---|---|---|")
    for relative, (low, high, architecture) in MODELS.items():
        path, name = Path(args.models) / relative, Path(relative).name
        net, kmodel = load_both(path, Path(args.models) / architecture if architecture else None)
        x = np.random.default_rng(0).uniform(low, high, (args.batch, *net.spec.input_shape)).astype(np.float32)
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = Path(tmp) / "m.onnx"
            tf2onnx.convert.from_keras(kmodel, input_signature=(tf.TensorSpec((None, *net.spec.input_shape), tf.float32, name="x"),),
                                       output_path=str(onnx_path))
            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        runners = {"layerlab engine": (net.predict, shipped), "layerlab engine, 5 ms switch": (net.predict, None),
                   "onnxruntime (tf2onnx)": (lambda v, s=session: s.run(None, {"x": v})[0], shipped)}
        for fn, _ in runners.values():
            fn(x)
        alone: dict[str, float] = {}
        for runner, (fn, interval) in runners.items():
            fast.SWITCH_INTERVAL = interval
            alone[runner] = _speed(fn, x, args.rounds)
        stop = threading.Event()
        thread = threading.Thread(target=_busy, args=(stop,), daemon=True)
        thread.start()
        try:
            loaded = {}
            for runner, (fn, interval) in runners.items():
                fast.SWITCH_INTERVAL = interval
                loaded[runner] = _speed(fn, x, max(1, args.rounds // 2))
        finally:
            stop.set()
            thread.join()
            fast.SWITCH_INTERVAL = shipped
        for runner in runners:
            print(f"| {name} | {runner} | {alone[runner]:,.0f} | {loaded[runner]:,.0f} | {loaded[runner] / alone[runner]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
