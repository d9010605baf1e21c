"""The engine under load: images/s with NumPy's BLAS free to thread and held to one thread.

    .venv/bin/python benchmarks/engine_load.py [--rounds 7] [--seconds 0.3] [--hogs 2]

For the MNIST CNN of ../shared/models/keras2 and the MLPerf Tiny ResNet-8 and ad01, at batch 1
and 64, on the engine's default worker threads: images per second (median of ``--rounds``
rounds, each as many calls as fit in ``--seconds``) on the idle machine, and again while
``--hogs`` other processes spin on the cores (pure Python loops, as a busy shared machine
has). "BLAS free" is the engine as it runs without threadpoolctl (OpenBLAS splits large calls
over its own threads); "BLAS one thread" is the engine with it (``layerlab[fast]``), where the
plan's worker threads are the only parallelism. The two modes take turns within each round.
Needs threadpoolctl. No assertions: a table.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "models"
MODELS = {"keras224_sequential_mnist.h5": ("keras2", 0.0, 1.0), "pretrainedResnet.h5": ("mlperf_tiny", 0.0, 255.0),
          "ad01.h5": ("mlperf_tiny", -85.0, 15.0)}


def _spin(stop) -> None:
    while not stop.is_set():
        sum(range(10000))


def _rate(net, x, seconds: float) -> float:
    calls, start = 0, time.perf_counter()
    while True:
        net.predict(x)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls * len(x) / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.3)
    parser.add_argument("--hogs", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    import layerlab
    from layerlab.engine import fast

    limiter = fast.ONE_BLAS_THREAD
    if not limiter.found():
        print("threadpoolctl is missing (pip install 'layerlab[fast]'): nothing to compare")
        return 1
    from threadpoolctl import threadpool_info

    blas = next((i for i in threadpool_info() if i["user_api"] == "blas"), {})
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; "
          f"numpy {np.__version__}, {blas.get('internal_api')} {blas.get('version')} with {blas.get('num_threads')} threads; "
          f"engine worker threads {fast.threads()}; {args.hogs} spinning processes when loaded")
    print()
    print("| model | batch | BLAS | idle images/s | loaded images/s | loaded / idle |")
    print("|---|---|---|---|---|---|")
    for name, (folder, low, high) in MODELS.items():
        net = layerlab.load(SHARED / folder / name)
        for batch in (1, 64):
            x = np.random.default_rng(0).uniform(low, high, (batch, *net.spec.input_shape)).astype(np.float32)
            rates: dict[tuple[str, bool], list[float]] = {}
            for loaded in (False, True):
                stop = multiprocessing.Event()
                hogs = [multiprocessing.Process(target=_spin, args=(stop,)) for _ in range(args.hogs if loaded else 0)]
                for hog in hogs:
                    hog.start()
                try:
                    for _ in range(args.rounds):
                        for mode, available in (("free", False), ("one thread", True)):
                            limiter.available = available
                            net.predict(x)
                            rates.setdefault((mode, loaded), []).append(_rate(net, x, args.seconds))
                finally:
                    stop.set()
                    for hog in hogs:
                        hog.join()
                    limiter.available = True
            for mode in ("free", "one thread"):
                idle, busy = statistics.median(rates[(mode, False)]), statistics.median(rates[(mode, True)])
                print(f"| {name} | {batch} | {mode} | {idle:,.0f} | {busy:,.0f} | {busy / idle:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
