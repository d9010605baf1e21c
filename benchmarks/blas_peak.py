"""How fast NumPy's BLAS multiplies matrices of ResNet-8's conv shapes on one thread.

    .venv/bin/python benchmarks/blas_peak.py [--repeats 7]

For each im2col shape of ResNet-8 (MLPerf Tiny) at 16 images, ``(rows, K) @ (K, filters)``:
billions of multiply-accumulates per second, best of ``--repeats``, with NumPy's BLAS limited to
one thread (threadpoolctl). The ceiling a NumPy engine works under, to read beside
onnxruntime's whole-network rate in ``benchmarks/engine_mlperf.py``. No assertions: a table.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

# (output cells per image, K = kh * kw * in_channels, filters) of ResNet-8's convolutions
SHAPES = ((1024, 27, 16), (1024, 144, 16), (256, 144, 32), (256, 288, 32), (256, 16, 32), (64, 288, 64),
          (64, 576, 64), (64, 32, 64))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--images", type=int, default=16)
    args = parser.parse_args()
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(1)
    blas = next((i for i in threadpool_info() if i["user_api"] == "blas"), {})
    print(f"numpy {np.__version__}, {blas.get('internal_api')} {blas.get('version')} ({blas.get('architecture')} kernels), "
          f"1 thread; {platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.2f}")
    print("| (rows, K) @ (K, N) | GMAC/s best |")
    print("|---|---|")
    rng = np.random.default_rng(0)
    for cells, k, n in SHAPES:
        a = rng.standard_normal((cells * args.images, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        out = np.empty((a.shape[0], n), np.float32)
        np.matmul(a, b, out=out)
        best = min(_time(a, b, out) for _ in range(args.repeats))
        print(f"| ({a.shape[0]}, {k}) @ ({k}, {n}) | {a.shape[0] * k * n / best / 1e9:.1f} |")
    return 0


def _time(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> float:
    start = time.perf_counter()
    np.matmul(a, b, out=out)
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
