"""Cost of one training step of a network, per image: layerlab's torch trainer against Keras' fit.

Both train the same network with the same recipe (optimizer, schedule, EMA, loss) on the same
batches; the table prints wall and CPU microseconds per image and step, for each trainer in this
one process, so that both see the same machine and load. Keras' fit runs on the backend
KERAS_BACKEND names (default: torch when installed).

    python benchmarks/train_step.py [--spec seed650] [--batch-size 256] [--steps 120] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np


def _measure(fit_epoch, x, y, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``fit_epoch(x, y)`` over ``repeats`` (after one warm-up)."""
    fit_epoch(x[: len(x) // 4], y[: len(y) // 4])
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fit_epoch(x, y)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="seed650")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=120, help="steps per measured pass")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `layerlab train` does
    from layerlab.keras_build import build_keras, import_keras, keras_weights, training_backend

    os.environ.setdefault("KERAS_BACKEND", training_backend())
    keras = import_keras()
    import torch

    from layerlab.train.loop import KerasTrainer
    from layerlab.train.recipes import FAST
    from layerlab.train.runner import resolve_spec
    from layerlab.train.torch_train import TorchTrainer

    spec = resolve_spec(args.spec)
    recipe = FAST.replace(batch_size=args.batch_size, distill_epochs=0, sample_fraction=None)  # every image once (no sampling)
    rng = np.random.default_rng(0)
    n = args.steps * args.batch_size
    x = rng.random((n, *spec.input_shape), dtype=np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, n)]
    start = keras_weights(build_keras(spec, seed=1), spec)
    total = 100 * args.steps

    keras_trainer = KerasTrainer(keras, build_keras(spec, weights=start), spec, recipe, total, 1, verbose=0)
    torch_trainer = TorchTrainer(spec, start, recipe, total)
    rows = [
        (f"Keras {keras.__version__} fit ({keras.backend.backend()} backend)",
         _measure(lambda a, b: keras_trainer.fit_epoch(a, b, seed=0, epoch=0), x, y, args.repeats)),
        (f"layerlab torch trainer (torch {torch.__version__})",
         _measure(lambda a, b: torch_trainer.fit_epoch(a, b, seed=0), x, y, args.repeats)),
    ]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"load average {[round(v, 2) for v in os.getloadavg()]}")
    print(f"network {spec.name}, recipe fast (Adam, warm-up + cosine, EMA), batch {args.batch_size}, "
          f"{args.steps} steps per pass, median of {args.repeats}")
    print("| trainer | wall us / image / step | CPU us / image / step | 60000-image epoch, s |")
    print("|---|---|---|---|")
    for name, (wall, cpu) in rows:
        print(f"| {name} | {wall / n * 1e6:.0f} | {cpu / n * 1e6:.0f} | {wall / n * 60000:.1f} |")
    keras_wall, torch_wall = rows[0][1][0], rows[1][1][0]
    print(f"torch trainer / Keras fit: {keras_wall / torch_wall:.2f}x faster")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
