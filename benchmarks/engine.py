"""Engine speed against Keras and onnxruntime on the 10,000 MNIST test images, in one run.

    .venv/bin/python benchmarks/engine.py [--model runs/seed650/model.h5] [--repeats 5]

Rows: the layerlab engine (fast path, and the plain reference path), Keras 3 ``predict`` on the
JAX backend, and onnxruntime on one thread running an ONNX export (tf2onnx) of a channels_last
twin of the network built with tf_keras (same weights: HWIO kernels, and Flatten reads H-W-C order
in both layouts). Throughput is at batch 1024 over all 10,000 images (best and median of
``--repeats`` runs, since the machine is shared); latency is the median per call at batch 1.
Cold start is ``import layerlab; layerlab.load(file); predict(one image)`` in a fresh process.
Without ``--model`` the network is seed650 with seeded random weights (say so when quoting).
Needs the ``bench`` extra (onnxruntime, tf2onnx) for the onnxruntime row; prints why it is
missing otherwise. No assertions: this prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BATCH = 1024


def machine() -> list[str]:
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    lines = [f"machine: {cpu}, {os.cpu_count()} cores, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}",
             f"python {platform.python_version()}, numpy {np.__version__}"]
    env = {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS", "OMP_", "MKL_"))}
    lines.append(f"environment: {env or 'no OPENBLAS_* / OMP_* / MKL_* variables set'}")
    try:
        from threadpoolctl import threadpool_info

        for pool in threadpool_info():
            lines.append("threadpoolctl: " + ", ".join(f"{k}={pool.get(k)}" for k in
                         ("user_api", "internal_api", "version", "architecture", "num_threads", "threading_layer")))
    except ImportError:
        lines.append("threadpoolctl: not installed")
    return lines


def random_seed650():
    """seed650 as written (channels_first) with seeded Glorot-normal kernels and bias ones."""
    from layerlab.network import Network
    from layerlab.presets import seed650

    spec = seed650()
    rng = np.random.default_rng(650)
    weights = {}
    for info in spec.infos:
        shapes = info.layer.weight_shapes(info.input_shapes[0])
        if shapes:
            kshape = shapes["kernel"]
            fan_in, fan_out = int(np.prod(kshape[:-1])), int(np.prod(kshape[:-2])) * kshape[-1]
            std = np.sqrt(2.0 / (fan_in + fan_out))
            weights[info.layer.name] = {"kernel": (rng.standard_normal(kshape) * std).astype(np.float32),
                                        "bias": np.ones(shapes["bias"], np.float32)}
    return Network(spec, weights, source="seed650 (random weights)")


def latency_us(fn, images: np.ndarray) -> float:
    fn(images[:1])  # warm
    times = []
    for i in range(len(images)):
        start = time.perf_counter()
        fn(images[i : i + 1])
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def twin_channels_last(spec):
    """The same network with every layer channels_last (weights unchanged)."""
    from layerlab import spec as S

    if any(isinstance(l, S.Flatten) and l.data_format == S.CHANNELS_LAST for l in spec.layers) and \
            any(getattr(l, "data_format", None) == S.CHANNELS_FIRST for l in spec.layers if not isinstance(l, S.Flatten)):
        raise SystemExit("twin: a channels_last Flatten after channels_first layers needs reordered Dense rows")
    layers = []
    for layer in spec.layers:
        if hasattr(layer, "data_format"):
            layer = dataclasses.replace(layer, data_format=S.CHANNELS_LAST)
        if isinstance(layer, S.BatchNormalization) and layer.axis == 1 and len(spec.input_shape) == 3:
            layer = dataclasses.replace(layer, axis=-1)
        layers.append(layer)
    shape = spec.input_shape
    if len(shape) == 3 and any(getattr(l, "data_format", None) == S.CHANNELS_FIRST for l in spec.layers):
        shape = (shape[1], shape[2], shape[0])
    return S.Model(name=spec.name, input_shape=shape, layers=tuple(layers))


def export_onnx(spec_path: str, weights_path: str, onnx_path: str) -> None:
    """(Runs in a subprocess: TensorFlow stays out of the timed process.) tf_keras twin -> ONNX."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    import tensorflow as tf
    import tf2onnx
    import tf_keras as K

    from layerlab import spec as S
    from layerlab.specfile import load_spec

    spec = load_spec(spec_path)
    stored = np.load(weights_path, allow_pickle=False)
    model = K.Sequential([K.layers.InputLayer(input_shape=spec.input_shape)])
    for layer in spec.layers:
        if isinstance(layer, S.Conv2D):
            kl = K.layers.Conv2D(layer.filters, layer.kernel_size, strides=layer.strides, padding=layer.padding,
                                 dilation_rate=layer.dilation_rate, activation=layer.activation, use_bias=layer.use_bias)
        elif isinstance(layer, (S.MaxPooling2D, S.AveragePooling2D)):
            cls = K.layers.MaxPooling2D if isinstance(layer, S.MaxPooling2D) else K.layers.AveragePooling2D
            kl = cls(layer.pool_size, layer.strides, padding=layer.padding)
        elif isinstance(layer, S.Activation):
            kl = K.layers.Activation(layer.activation)
        elif isinstance(layer, S.Flatten):
            kl = K.layers.Flatten()
        elif isinstance(layer, S.Dense):
            kl = K.layers.Dense(layer.units, activation=layer.activation, use_bias=layer.use_bias)
        elif isinstance(layer, S.Dropout):
            kl = K.layers.Dropout(layer.rate)
        elif isinstance(layer, S.ZeroPadding2D):
            kl = K.layers.ZeroPadding2D(layer.padding)
        elif isinstance(layer, S.BatchNormalization):
            kl = K.layers.BatchNormalization(epsilon=layer.epsilon, center=layer.center, scale=layer.scale)
        else:
            raise SystemExit(f"export_onnx: no tf_keras mapping for {layer.type}")
        model.add(kl)
        names = sorted(k for k in stored.files if k.startswith(layer.name + "/"))
        if names:
            expected = layer.weight_shapes(model.layers[-1].input_shape[1:])
            kl.set_weights([stored[f"{layer.name}/{n}"] for n in expected])
    signature = [tf.TensorSpec((None, *spec.input_shape), tf.float32, name="x")]
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=13)
    Path(onnx_path).write_bytes(proto.SerializeToString())


def onnx_runner(net, workdir: Path):
    """An onnxruntime session (1 thread) for ``net``'s channels_last twin, or (None, reason)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return None, f"onnxruntime not installed ({exc}); pip install 'layerlab[bench]'"
    twin = twin_channels_last(net.spec)
    twin.save(workdir / "twin.json")
    np.savez(workdir / "weights.npz", **{f"{l}/{n}": a for l, ws in net.weights.items() for n, a in ws.items()})
    onnx_path = workdir / "twin.onnx"
    done = subprocess.run([sys.executable, __file__, "--export-onnx", str(workdir / "twin.json"),
                           str(workdir / "weights.npz"), str(onnx_path)], capture_output=True, text=True)
    if done.returncode != 0:
        return None, "tf2onnx export failed: " + (done.stderr.strip().splitlines() or ["?"])[-1]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    return session, f"onnxruntime {ort.__version__}"


def cold_start(model_path: str | None, workdir: Path, net) -> str:
    """Seconds for import + load + first prediction in a fresh interpreter (min of 3)."""
    if model_path is None:
        try:
            from layerlab.keras_build import build_keras

            model_path = str(workdir / "seed650_random.h5")
            build_keras(net.spec, net.weights).save(model_path)
        except Exception as exc:  # Keras missing or failing: no file to load
            return f"cold start: not measured ({exc})"
    code = ("import time; t=time.perf_counter(); import numpy as np, layerlab; "
            f"m=layerlab.load({model_path!r}); "
            "m.predict(np.zeros((1, *m.spec.input_shape), np.float32)); print(time.perf_counter()-t)")
    inside, whole = [], []
    for _ in range(3):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        whole.append(time.perf_counter() - start)
        if done.returncode != 0:
            return f"cold start: failed ({(done.stderr.strip().splitlines() or ['?'])[-1]})"
        inside.append(float(done.stdout.strip().splitlines()[-1]))
    return (f"cold start (import layerlab + load {Path(model_path).name} + first predict): {min(inside):.3f} s "
            f"(median {statistics.median(inside):.3f} s; whole process incl. interpreter {min(whole):.3f} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a trained Keras model file (.h5 / .keras); default: random seed650")
    parser.add_argument("--data-dir", help="folder with the MNIST files (default: $LAYERLAB_DATA, cache)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--latency-images", type=int, default=500)
    parser.add_argument("--no-keras", action="store_true")
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument("--export-onnx", nargs=3, metavar=("SPEC", "WEIGHTS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.export_onnx:
        export_onnx(*args.export_onnx)
        return 0

    import layerlab
    from layerlab import engine
    from layerlab.data import input_for_model, load_mnist
    from layerlab.engine import fast

    net = layerlab.load(args.model) if args.model else random_seed650()
    data = load_mnist(args.data_dir, download=False)
    x = input_for_model(data.x_test, net.spec)  # (10000, *input_shape) float32, pixels / 255
    labels = data.y_test
    lat_x = x[: args.latency_images]
    print("\n".join(machine()))
    print(f"model: {net.source}; {net.spec.param_count} parameters, {net.spec.macs} MACs per image; "
          f"{len(x)} MNIST test images, batch {BATCH}; {args.repeats} rounds, every runner once per round")

    def engine_with(threads: str):
        def run(a, batch_size=BATCH):
            os.environ["LAYERLAB_THREADS"] = threads
            return net.predict(a, batch_size=batch_size)
        return run

    # name -> (throughput fn over all of x, batch-1 fn, its inputs, output on x)
    runners: dict[str, tuple] = {}
    many = engine_with(str(fast.threads()))
    runners[f"layerlab engine (fast path, {fast.threads()} threads)"] = (lambda: many(x), many, lat_x, many(x))
    one = engine_with("1")
    runners["layerlab engine (fast path, 1 thread)"] = (lambda: one(x), one, lat_x, None)
    ref_x = x[:2048]
    reference = lambda a: engine.run(net.spec, net.weights, a, reference=True)
    runners["layerlab engine (reference path, 2048 images)"] = (
        lambda: [reference(ref_x[i : i + BATCH]) for i in range(0, len(ref_x), BATCH)], reference, lat_x[:100], None)
    sizes = {name: len(x) for name in runners}
    sizes["layerlab engine (reference path, 2048 images)"] = len(ref_x)
    notes = [f"fast vs reference path: max|diff| {np.abs(runners[next(iter(runners))][3][:BATCH] - reference(x[:BATCH])).max():.2e} "
             f"on {BATCH} images"]

    keras_out = None
    if not args.no_keras:
        from layerlab.keras_build import build_keras, import_keras

        keras = import_keras()
        kmodel = build_keras(net.spec, net.weights)
        keras_out = np.asarray(kmodel.predict(x, batch_size=BATCH, verbose=0))
        kpredict = lambda a: kmodel.predict(a, verbose=0)
        label = f"Keras {keras.__version__} predict ({keras.backend.backend()})"
        runners[f"{label}, batch {BATCH}"] = (lambda: kmodel.predict(x, batch_size=BATCH, verbose=0), kpredict, lat_x[:100], keras_out)
        runners[f"{label}, default batch 32"] = (lambda: kmodel.predict(x, verbose=0), None, None, None)
        sizes.update({name: len(x) for name in runners if name.startswith("Keras")})
        notes.append(f"Keras direct call model(x) at batch 1: {latency_us(lambda a: kmodel(a, training=False), lat_x[:100]):.0f} us")

    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_onnx:
            session, label = onnx_runner(net, Path(tmp))
            if session is None:
                notes.append(f"onnxruntime: not measured: {label}")
            else:
                twin_shape = twin_channels_last(net.spec).input_shape
                # The twin takes (N, H, W, C): move a channels_first model's channel axis last.
                x_cl = np.ascontiguousarray(x if twin_shape == net.spec.input_shape else np.moveaxis(x, 1, -1))
                ort_run = lambda a: session.run(None, {"x": a})[0]
                ort_all = lambda: np.concatenate([ort_run(x_cl[i : i + BATCH]) for i in range(0, len(x), BATCH)])
                name = f"{label} (tf2onnx, 1 thread)"
                runners[name] = (ort_all, ort_run, x_cl[: len(lat_x)], ort_all())
                sizes[name] = len(x)
        notes.append(cold_start(args.model, Path(tmp), net))

        times: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(args.repeats):  # interleaved: each round sees about the same machine load
            for name, (everything, *_rest) in runners.items():
                start = time.perf_counter()
                everything()
                times[name].append(time.perf_counter() - start)
        latencies = {name: latency_us(fn, inputs) if fn is not None else None
                     for name, (_, fn, inputs, _out) in runners.items()}
    os.environ.pop("LAYERLAB_THREADS", None)

    keras_name = next((name for name in runners if name.startswith("Keras")), None)
    header = (f"{'runner':50} {'img/s best':>10} {'median':>8} {'vs Keras':>8} {'vs ORT':>7} "
              f"{'batch-1 us':>10} {'accuracy':>8} {'max|d| Keras':>12}")
    ort_name = next((name for name in runners if name.startswith("onnxruntime")), None)
    best = {name: sizes[name] / min(t) for name, t in times.items()}
    print(header)
    print("-" * len(header))
    for name, (_, _fn, _inputs, output) in runners.items():
        median = sizes[name] / statistics.median(times[name])
        vs_keras = f"{best[name] / best[keras_name]:.1f}x" if keras_name else "-"
        vs_ort = f"{best[name] / best[ort_name]:.2f}x" if ort_name else "-"
        lat = f"{latencies[name]:.0f}" if latencies[name] is not None else "-"
        acc = f"{(output.argmax(1) == labels).mean() * 100:.2f}%" if output is not None and output.ndim == 2 else "-"
        diff = f"{np.abs(output - keras_out).max():.1e}" if output is not None and keras_out is not None else "-"
        print(f"{name:50} {best[name]:10.0f} {median:8.0f} {vs_keras:>8} {vs_ort:>7} {lat:>10} {acc:>8} {diff:>12}")
    print(f"img/s: best and median of {args.repeats} interleaved rounds; vs Keras / vs ORT: best over best, against "
          f"Keras predict at batch {BATCH} and onnxruntime on one thread; batch-1 us: median per call")
    for note in notes:
        print(note)
    print(json.dumps({name: {"img_s_best": round(best[name]), "batch1_us": round(latencies[name] or 0)} for name in runners}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
