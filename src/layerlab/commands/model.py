"""``layerlab predict | evaluate | trace MODEL``: run a Keras model file with the NumPy engine.

    layerlab predict model.h5 --image 7                 # top-3 classes of MNIST test image 7
    layerlab predict resnet.h5 --input x.npy            # any model: inputs from .npy/.npz or an image
    layerlab evaluate model.h5 --scale 1                # MNIST test accuracy, raw 0-255 pixels
    layerlab evaluate kws.h5 --data test.npz            # accuracy on a labelled .npz (x, y)
    layerlab trace model.keras --image 0 --out trace/   # every layer: table, CSV, feature-map PNGs
    ... --compare-keras                                 # also run real Keras, max |diff| per layer

``--scale D`` divides the inputs by D: 255 by default for pixels (MNIST, image files), 1 for
.npy/.npz arrays; ``--scale 1`` feeds raw 0-255 pixels, as such a model was trained. MNIST images
are reshaped to the model's input: (1, 28, 28) channels_first, (28, 28, 1) channels_last,
(28, 28) or (784,) alike (one channel, so the pixel order is the same).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
from pathlib import Path

import numpy as np

from layerlab import spec as S
from layerlab.commands import non_negative_int, positive_int
from layerlab.errors import ShapeError
from layerlab.io import atomic_path, atomic_write_text
from layerlab.network import output_layouts
from layerlab.publish import publish_folder
from layerlab.text import csv_text, file_stem, printable

MNIST_PIXELS = 28 * 28


def register(subparsers) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("model", metavar="MODEL", help="a .keras, .h5 or .weights.h5 file")
    common.add_argument("--architecture", metavar="FILE",
                        help="architecture for a weights-only file: model.to_json() JSON, .keras, or a layerlab spec")
    common.add_argument("--data-dir", metavar="DIR", help="folder with the MNIST .gz files (default: $LAYERLAB_DATA, cache)")
    common.add_argument("--scale", type=_positive_float, default=None, metavar="D",
                        help="divide the inputs by D: default 255 for pixels (MNIST, image files), 1 for .npy/.npz. "
                        "Use what the model was trained on (--scale 1: raw pixels 0-255)")
    common.add_argument("--compare-keras", action="store_true",
                        help="also run the model in Keras 3 (JAX) and print the max abs difference per layer")

    p = subparsers.add_parser("predict", parents=[common], help="top classes (or outputs) for an MNIST image or an input file",
                              description="Run MNIST test image N, or the inputs of a .npy/.npz/image file, through the "
                              "model with the NumPy engine.")
    _source_args(p)
    p.add_argument("--top", type=non_negative_int, default=3, metavar="K", help="how many classes to show (default 3)")
    p.set_defaults(func=predict_command)

    p = subparsers.add_parser("evaluate", parents=[common], help="MNIST test accuracy with the NumPy engine",
                              description="Accuracy on the MNIST test set, computed by the NumPy engine.")
    p.add_argument("--data", metavar="FILE.npz", help="labelled inputs x, y (class indices or one-hot) instead of MNIST")
    p.add_argument("--limit", type=positive_int, metavar="N", help="only the first N test images (default: all 10000)")
    p.add_argument("--batch-size", type=positive_int, default=1000, metavar="N", help="images per engine call (default 1000)")
    p.set_defaults(func=evaluate_command)

    p = subparsers.add_parser("trace", parents=[common], help="every layer's output for one input",
                              description="Shape, min, max and mean of every layer's output (printed and written as "
                              "trace.csv) and a PNG of its feature maps, for MNIST test image N or the first input of a file.")
    _source_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="folder for trace.csv and the PNGs")
    from layerlab.commands.spec import add_force

    add_force(p)
    p.add_argument("--no-png", action="store_true", help="write only trace.csv")
    p.set_defaults(func=trace_command)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return value


def _source_args(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", type=non_negative_int, metavar="N", help="index of the MNIST test image (0-9999)")
    source.add_argument("--input", metavar="FILE", help="a .npy/.npz array of any input shape (one sample or a batch), "
                        "or an image file resized and converted to the model's input")


# Inputs -----------------------------------------------------------------------------------------------

def _load(args):
    from layerlab.modelfile import read

    return read(args.model, architecture=args.architecture)


def _mnist_test(args):
    from layerlab.data import load_mnist

    data = load_mnist(args.data_dir, log=print)
    return data.x_test, data.y_test


def mnist_input(images: np.ndarray, spec: S.Model, scale: float | None) -> np.ndarray:
    """MNIST images (N, 28, 28) uint8 -> (N, *spec.input_shape) float32, divided by ``scale`` (default 255).

    Raises:
        ShapeError: the model's input does not hold one 28x28 grey image.
    """
    if math.prod(spec.input_shape) != MNIST_PIXELS:
        raise ShapeError(
            f"model '{spec.name}': input shape {spec.input_shape} is not one 28x28 grey MNIST image "
            "(784 values, e.g. (1, 28, 28), (28, 28, 1) or (784,)). Use a model trained on MNIST"
        )
    x = images.astype(np.float32)
    scale = 255.0 if scale is None else scale
    if scale != 1:
        x /= np.float32(scale)  # as the usual x.astype('float32') / 255
    return x.reshape(len(images), *spec.input_shape)  # one channel: any layout keeps the pixel order


def _image_index(args, count: int) -> int:
    if not 0 <= args.image < count:
        raise ShapeError(f"--image {args.image}: the MNIST test set has images 0 to {count - 1}. Pick one in that range")
    return args.image


def _describe(loaded, args) -> str:
    version = f", Keras {loaded.keras_version}" if loaded.keras_version else ""
    from layerlab.inputs import ARRAY_SUFFIXES, default_scale

    from_file = getattr(args, "input", None) or getattr(args, "data", None)
    scale = (default_scale(from_file) if from_file else 255.0) if args.scale is None else args.scale
    if from_file and Path(from_file).suffix.lower() in ARRAY_SUFFIXES:
        how = f"inputs from {printable(str(from_file))} " + ("as stored" if scale == 1 else f"/ {scale:g}")
    else:  # pixels
        how = "raw pixels 0-255" if scale == 1 else f"pixels / {scale:g}"
        how = f"{how} of {printable(str(from_file))}" if from_file else how
    return f"model {printable(str(args.model))} ({loaded.kind}{version}), input {loaded.network.spec.input_shape}, {how}"


def _file_input(args, spec: S.Model):
    from layerlab.inputs import read_input

    return read_input(args.input, spec, args.scale)


# Keras comparison -----------------------------------------------------------------------------------

def compare_keras(network, x: np.ndarray, batch_size: int = 500) -> tuple[dict[str, tuple[float, float]], np.ndarray]:
    """Run ``network`` in real Keras and in the engine; the max |engine - Keras| of every layer.

    Args:
        network: a loaded ``Network``.
        x: (N, *input_shape) float32.
        batch_size: images per step (bounds the memory of every layer's outputs).

    Returns:
        (layer name -> (max |engine - Keras|, max |Keras|) over all of x, Keras' final output (N, ...)).
    """
    from layerlab.keras_build import build_keras, import_keras

    keras = import_keras()
    kmodel = build_keras(network.spec, network.weights)
    probe = keras.Model(kmodel.inputs, [kmodel.get_layer(l.name).output for l in network.spec.layers])
    diffs = {layer.name: (0.0, 0.0) for layer in network.spec.layers}
    finals = []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        ours = network.trace(batch)
        theirs = probe.predict(batch, verbose=0, batch_size=len(batch))
        theirs = theirs if isinstance(theirs, list) else [theirs]
        for layer, value in zip(network.spec.layers, theirs, strict=True):
            value = np.asarray(value)
            diff, size = diffs[layer.name]
            diffs[layer.name] = (max(diff, float(np.max(np.abs(ours[layer.name] - value)))), max(size, float(np.max(np.abs(value)))))
        finals.append(np.asarray(theirs[-1]))
    return diffs, np.concatenate(finals)


def _print_diffs(spec: S.Model, diffs: dict[str, tuple[float, float]]) -> None:
    print("\nengine vs Keras 3 (JAX), per layer: max |engine - Keras| (max |Keras output|)")
    width = max(len(l.name) for l in spec.layers)
    for layer in spec.layers:
        diff, size = diffs[layer.name]
        print(f"  {printable(layer.name):<{width}}  {layer.type:<18}  {diff:.3g}  ({size:.4g})")
    print(f"  worst: {max(d for d, _ in diffs.values()):.3g}")


# predict / evaluate ---------------------------------------------------------------------------------

def _is_softmax(spec: S.Model) -> bool:
    return getattr(spec.layers[-1], "activation", None) == "softmax"


def _print_scores(spec: S.Model, scores: np.ndarray, top: int) -> None:
    """Top-k classes of a classifier's output, or the output's shape and range otherwise."""
    if top > 0 and scores.ndim == 1 and (_is_softmax(spec) or len(scores) <= 100):
        header = "probability" if _is_softmax(spec) else "output"
        print(f"  class  {header}")
        for k in np.argsort(-scores, kind="stable")[:top]:
            print(f"  {int(k):>5}  {scores[k]:.6f}")
    else:
        print(f"  output shape {scores.shape}: min {scores.min():.6g}, max {scores.max():.6g}, mean {scores.mean():.6g}")


def predict_command(args) -> int:
    loaded = _load(args)
    net = loaded.network
    if args.input:
        x, labels = _file_input(args, net.spec)
        y = net.predict(x)
        net.require_finite(y, "prediction")
        print(_describe(loaded, args))
        shown = min(len(x), 10)
        for i in range(shown):
            label = f", label {int(labels[i])}" if labels is not None else ""
            print(f"input {i}{label}")
            _print_scores(net.spec, y[i].reshape(-1) if y[i].ndim <= 1 else y[i], max(0, args.top))
        if len(x) > shown:
            print(f"... {len(x) - shown} more inputs not shown")
        if args.compare_keras:
            _print_diffs(net.spec, compare_keras(net, x)[0])
        return 0
    x_test, y_test = _mnist_test(args)
    index = _image_index(args, len(x_test))
    x = mnist_input(x_test[index : index + 1], net.spec, args.scale)
    scores = net.predict(x)[0].reshape(-1)
    net.require_finite(scores[None], "prediction")
    print(_describe(loaded, args))
    print(f"MNIST test image {index}, label {int(y_test[index])}")
    _print_scores(net.spec, scores, max(1, args.top))
    best = int(np.argmax(scores))
    print(f"predicted {best} ({'correct' if best == int(y_test[index]) else 'wrong'})")
    if args.compare_keras:
        diffs, _ = compare_keras(net, x)
        _print_diffs(net.spec, diffs)
    return 0


def evaluate_command(args) -> int:
    loaded = _load(args)
    net = loaded.network
    if args.data:
        from layerlab.inputs import read_input

        x, y_test = read_input(args.data, net.spec, args.scale)
        if y_test is None:
            raise ShapeError(f"--data {printable(args.data)}: holds no labels 'y'. Save it with np.savez(path, x=..., y=...)")
        if args.limit is not None:
            x, y_test = x[: args.limit], y_test[: args.limit]
        what = f"inputs of {printable(args.data)}"
    else:
        x_test, y_test = _mnist_test(args)
        if args.limit is not None:
            x_test, y_test = x_test[: args.limit], y_test[: args.limit]
        x = mnist_input(x_test, net.spec, args.scale)
        what = "MNIST test images"
    outputs = net.predict(x, batch_size=args.batch_size)
    net.require_finite(outputs, "accuracy")
    predicted = outputs.reshape(len(x), -1).argmax(axis=1)
    correct = int(np.count_nonzero(predicted == y_test))
    print(_describe(loaded, args))
    print(f"accuracy {correct / max(1, len(y_test)):.4f} ({correct} of {len(y_test)} {what})")
    if args.compare_keras:
        diffs, keras_out = compare_keras(net, x)
        keras_correct = int(np.count_nonzero(keras_out.reshape(len(x), -1).argmax(axis=1) == y_test))
        _print_diffs(net.spec, diffs)
        print(f"Keras accuracy {keras_correct / max(1, len(y_test)):.4f} ({keras_correct} of {len(y_test)})")
    return 0


# trace -----------------------------------------------------------------------------------------------

def trace_command(args) -> int:
    loaded = _load(args)
    net = loaded.network
    if args.input:
        x, labels = _file_input(args, net.spec)
        x = x[:1]
        heading = f"input 0 of {printable(args.input)}" + (f", label {int(labels[0])}" if labels is not None else "")
    else:
        x_test, y_test = _mnist_test(args)
        index = _image_index(args, len(x_test))
        x = mnist_input(x_test[index : index + 1], net.spec, args.scale)
        heading = f"MNIST test image {index}, label {int(y_test[index])}"
    outputs = {"input": x, **net.trace(x)}
    types = {"input": "Input", **{l.name: l.type for l in net.spec.layers}}
    diffs = compare_keras(net, x)[0] if args.compare_keras else None
    out = Path(args.out)
    rows = []
    for position, (name, value) in enumerate(outputs.items()):
        value = value[0]
        row = {"index": position, "layer": name, "type": types[name], "shape": "x".join(map(str, value.shape)),
               "min": float(value.min()), "max": float(value.max()), "mean": float(value.mean())}
        if diffs is not None:
            row["keras_max_abs_diff"] = diffs[name][0] if name in diffs else 0.0
        rows.append(row)
    print(_describe(loaded, args))
    print(f"{heading}, predicted {int(np.argmax(outputs[net.spec.layers[-1].name]))}")
    width = max(len(printable(r["layer"])) for r in rows)
    extra = "  keras diff" if diffs is not None else ""
    print(f"  {'#':>2}  {'layer':<{width}}  {'type':<18}  {'shape':<10}  {'min':>10}  {'max':>10}  {'mean':>10}{extra}")
    for r in rows:
        tail = f"  {r['keras_max_abs_diff']:.3g}" if diffs is not None else ""
        print(f"  {r['index']:>2}  {printable(r['layer']):<{width}}  {r['type']:<18}  {r['shape']:<10}  "
              f"{r['min']:>10.4g}  {r['max']:>10.4g}  {r['mean']:>10.4g}{tail}")
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({**{k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()}, "layer": csv_text(printable(r["layer"]))})
    written = [out / "trace.csv"]
    with publish_folder(out, inputs=[args.model, args.architecture, args.input], force=args.force, kind="trace") as staging:
        atomic_write_text(staging / "trace.csv", text.getvalue())
        if not args.no_png:
            layout = output_layouts(net.spec)
            for r in rows:
                name = f"{r['index']:02d}_{file_stem(r['layer'])}.png"
                plot_feature_maps(outputs[r["layer"]][0], layout[r["layer"]], f"{printable(r['layer'])} ({r['type']}) {r['shape']}", staging / name)
                written.append(out / name)
    print(f"wrote {written[0]}" + (f" and {len(written) - 1} PNG files" if len(written) > 1 else "") + f" to {out}")
    return 0


def mosaic(maps: np.ndarray, cols: int = 8) -> np.ndarray:
    """Tile maps (C, H, W) into one (rows * (H + 1) - 1, cols * (W + 1) - 1) image, row-major,
    with NaN gaps between tiles (drawn blank)."""
    count, height, width = maps.shape
    cols = min(cols, count)
    rows = math.ceil(count / cols)
    out = np.full((rows * (height + 1) - 1, cols * (width + 1) - 1), np.nan, np.float32)
    for i in range(count):
        top, left = (i // cols) * (height + 1), (i % cols) * (width + 1)
        out[top : top + height, left : left + width] = maps[i]
    return out


def plot_feature_maps(value: np.ndarray, layout: str, title: str, path: Path, max_maps: int = 64) -> None:
    """One PNG of a layer output (no batch axis): its channels tiled 8 per row on one colour
    scale for (C, H, W) / (H, W, C), one image for (H, W), bars for a vector."""
    from layerlab.errors import require

    matplotlib = require("matplotlib", "plot", "trace feature-map pictures")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if value.ndim in (2, 3):
        maps = value[None] if value.ndim == 2 else value if layout == S.CHANNELS_FIRST else np.moveaxis(value, -1, 0)
        if len(maps) > max_maps:
            title += f", first {max_maps} of {len(maps)} channels"
        elif len(maps) > 1:
            title += f", channels 0-{len(maps) - 1}, 8 per row"
        image = mosaic(maps[:max_maps])
        height, width = image.shape
        scale = min(10.0 / width, 8.0 / height, 0.25)
        fig, ax = plt.subplots(figsize=(max(3.0, width * scale + 1.2), max(2.5, height * scale + 0.8)))
        shown = ax.imshow(np.ma.masked_invalid(image), cmap="viridis", interpolation="nearest")
        ax.axis("off")
        fig.colorbar(shown, ax=ax, fraction=0.04)
    else:
        vector = value.reshape(-1)
        fig, ax = plt.subplots(figsize=(max(4.0, min(12.0, 0.25 * len(vector))), 3))
        if len(vector) <= 256:
            ax.bar(np.arange(len(vector)), vector, color="tab:blue")
        else:  # thousands of bars take matplotlib tens of seconds; a line shows the same
            ax.plot(np.arange(len(vector)), vector, color="tab:blue", linewidth=0.6)
        ax.set_xlabel("unit")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
