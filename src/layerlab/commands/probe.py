"""`layerlab probe LAYER ...` (run one layer on a small array and explain it) and
`layerlab explain MODEL_OR_SPEC` (the padding plan of every layer)."""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import numpy as np

from layerlab import spec as S
from layerlab.commands import non_negative_int, positive_int
from layerlab.errors import DataError, ShapeError, SpecError

SEED_INPUT = "[[-1,-2,3,-4,-5],[-6,-7,-8,-9,-10],[-11,-12,13,-14,-15]]"
LAYERS = {
    "conv2d": S.Conv2D, "maxpool2d": S.MaxPooling2D, "avgpool2d": S.AveragePooling2D,
    "zeropadding2d": S.ZeroPadding2D, "flatten": S.Flatten, "dense": S.Dense,
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "probe", help="run one layer on a small array and explain what it computed",
        description="Run one layer with layerlab's engine on a small array and explain it: output size, padding per "
        "side and why, what fills the padding, and the input cells each output read.",
    )
    p.add_argument("layer", choices=sorted(LAYERS), help="layer type")
    p.add_argument("--input", default=SEED_INPUT, help="nested list (2-D: one channel (H, W); 3-D: (H, W, C) or (C, H, W) "
                   "by --data-format; 4-D with a batch of 1), a .npy file, or random:HxWxC (seeded normals); "
                   "default: the 3x5 example of SEED_NETWORK.md")
    p.add_argument("--data-format", default="channels_last", choices=S.DATA_FORMATS)
    p.add_argument("--padding", default=None, help="valid|same (default valid) for conv/pooling; for zeropadding2d "
                   "N, [H, W] or [[top, bottom], [left, right]] (default 1)")
    p.add_argument("--pool-size", default="2", help="N or H,W (default 2)")
    p.add_argument("--strides", default=None, help="N or H,W (default 1 for conv2d, pool size for pooling)")
    p.add_argument("--kernel-size", default=None, help="N or H,W (default: from a literal --kernel, else 2)")
    p.add_argument("--dilation-rate", default="1", help="N or H,W (conv2d)")
    p.add_argument("--filters", type=positive_int, default=None, help="conv2d filters (default: from a literal --kernel, else 1)")
    p.add_argument("--units", type=positive_int, default=None, help="dense units (default: from a literal --kernel, else 1)")
    p.add_argument("--kernel", default="ones", help="ones | zeros | random | a nested list | a .npy file. conv2d: "
                   "(kh, kw) used for every channel and filter, or (kh, kw, in, filters) HWIO; dense: (in, units)")
    p.add_argument("--use-bias", action="store_true", help="add a bias (zeros unless --bias)")
    p.add_argument("--bias", default=None, help="bias: a number (every filter/unit) or a list; implies --use-bias")
    p.add_argument("--activation", default="linear", help="conv2d/dense activation (default linear)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed for random inputs and kernels")
    p.add_argument("--precision", type=positive_int, default=6, help="significant digits of non-integer values")
    p.add_argument("--figure", default=None, metavar="PATH", help="draw the padded grid, windows and output (.png or .svg)")
    p.add_argument("--force", action="store_true", help="replace an existing --figure file")
    p.add_argument("--check-keras", action="store_true", help="also run the real Keras layer and print the max abs difference")
    p.set_defaults(func=_probe)

    e = subparsers.add_parser(
        "explain", help="padding plan of every layer of a model or spec",
        description="Print, layer by layer, the output-size formula, which layers pad and where, and where Neural "
        "Network Console's MaxPooling IgnoreBorder=False would differ from Keras 'same'.",
    )
    e.add_argument("source", metavar="MODEL_OR_SPEC", help="built-in spec name (seed650), spec file (.json/.yaml) or model file (.h5/.keras)")
    from layerlab.commands.spec import add_architecture

    add_architecture(e)
    e.set_defaults(func=_explain)


def _probe(args: argparse.Namespace) -> int:
    from layerlab.probing import probe

    if args.figure:
        from layerlab.figures import figure_format

        figure_format(args.figure)  # a bad suffix fails before anything runs
    rng = np.random.default_rng(args.seed)
    x = parse_array(args.input, "--input", rng)
    layer, weights = build_layer(args, x, rng)
    result = probe(layer, x, weights)
    sys.stdout.write(result.explain(precision=args.precision))
    if args.figure:
        result.figure(args.figure, force=args.force)
        print(f"\nfigure: wrote {args.figure}")
    if args.check_keras:
        check = result.check_keras()
        if check.ok:
            print(f"\nKeras check: agrees with keras.layers.{result.layer.type} (max abs diff {check.max_abs_diff:.3g})")
        else:
            print(f"\nKeras check: DIFFERS from keras.layers.{result.layer.type}: max abs diff {check.max_abs_diff:.6g}; "
                  f"Keras output shape {check.keras_output.shape}:\n{np.array2string(check.keras_output, precision=args.precision)}")
            return 1
    return 0


def _explain(args: argparse.Namespace) -> int:
    from layerlab.commands.spec import load_model_or_spec
    from layerlab.padding_plan import explain_model

    sys.stdout.write(explain_model(load_model_or_spec(args.source, args.architecture)))
    return 0


def parse_array(text: str, where: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """A nested list literal, a .npy file, or ``random:HxWxC`` as a float32 array.

    Raises:
        ShapeError: not a list of numbers, ragged, or a bad random shape.
        DataError: a .npy file that cannot be read.
    """
    from layerlab.probing import to_array

    text = text.strip()
    if text.lower().endswith(".npy"):
        path = Path(text)
        if not path.is_file():
            raise DataError(f"{where}: no such file {text!r}. Give a nested list or an existing .npy file")
        try:
            return to_array(np.load(path, allow_pickle=False), f"{where} {text}")
        except (ValueError, OSError) as exc:
            raise DataError(f"{where}: cannot read {text} as a numeric .npy array ({exc}). Save it with np.save, no objects") from None
    match = re.fullmatch(r"random:(\d+(?:x\d+)*)", text)
    if match:
        shape = tuple(int(v) for v in match.group(1).split("x"))
        if min(shape) < 1:
            raise ShapeError(f"{where}: random shape {shape} has a zero. Use e.g. random:5x5x2")
        return (rng or np.random.default_rng(0)).standard_normal(shape).astype(np.float32)
    try:
        value = ast.literal_eval(text)  # literals only: never evaluates code
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise ShapeError(f"{where}: {_short(text)} is not a nested list of numbers, e.g. [[1, 2], [3, 4]]. Fix the text") from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return np.float32(value).reshape(())
    return to_array(value, where)


def _short(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _pair(text: str, where: str) -> tuple[int, int]:
    parts = [p.strip() for p in re.split(r"[,x]", text.strip().strip("()[]"))]
    if not 1 <= len(parts) <= 2 or not all(re.fullmatch(r"-?\d+", p) for p in parts):
        raise SpecError(f"{where}={text!r} is not an int or a pair of ints. Write e.g. 2 or 2,3")
    values = tuple(int(p) for p in parts)
    return (values[0], values[0]) if len(values) == 1 else values  # type: ignore[return-value]


def _weight_array(text: str, where: str, rng: np.random.Generator) -> np.ndarray | str:
    if text in ("ones", "zeros", "random"):
        return text
    return parse_array(text, where, rng)


def _filled(kind: np.ndarray | str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if isinstance(kind, np.ndarray):
        return kind
    if kind == "random":
        return rng.standard_normal(shape).astype(np.float32)
    return (np.ones if kind == "ones" else np.zeros)(shape, np.float32)


def build_layer(args: argparse.Namespace, x: np.ndarray, rng: np.random.Generator):
    """The spec layer and its weights from the command-line arguments (and the input for shapes)."""
    kind = args.layer
    name = kind
    data_format = args.data_format
    if kind in ("maxpool2d", "avgpool2d"):
        cls = LAYERS[kind]
        padding = args.padding or "valid"
        strides = None if args.strides is None else _pair(args.strides, "--strides")
        return cls(name=name, pool_size=_pair(args.pool_size, "--pool-size"), strides=strides, padding=padding, data_format=data_format), None
    if kind == "zeropadding2d":
        padding = 1 if args.padding is None else _padding_literal(args.padding)
        return S.ZeroPadding2D(name=name, padding=padding, data_format=data_format), None
    if kind == "flatten":
        return S.Flatten(name=name, data_format=data_format), None
    kernel = _weight_array(args.kernel, "--kernel", rng)
    use_bias = args.use_bias or args.bias is not None
    if kind == "dense":
        units = args.units or (kernel.shape[-1] if isinstance(kernel, np.ndarray) and kernel.ndim == 2 else 1)
        layer = S.Dense(name=name, units=units, use_bias=use_bias, activation=args.activation)
        n_in = int(x.size)
        weights = {"kernel": _filled(kernel, (n_in, units), rng)}
        if use_bias:
            weights["bias"] = _bias(args.bias, units, rng)
        return layer, weights
    # conv2d
    if isinstance(kernel, np.ndarray) and kernel.ndim not in (2, 4):
        raise ShapeError(f"--kernel: shape {kernel.shape} is neither (kh, kw) nor (kh, kw, in_channels, filters)")
    literal_size = tuple(kernel.shape[:2]) if isinstance(kernel, np.ndarray) else None
    kernel_size = _pair(args.kernel_size, "--kernel-size") if args.kernel_size else (literal_size or (2, 2))
    if literal_size and literal_size != kernel_size:
        raise ShapeError(f"--kernel has shape {kernel.shape} but --kernel-size is {kernel_size}. Drop --kernel-size or fix the kernel")
    filters = args.filters or (kernel.shape[3] if isinstance(kernel, np.ndarray) and kernel.ndim == 4 else 1)
    strides = _pair(args.strides, "--strides") if args.strides else (1, 1)
    layer = S.Conv2D(name=name, filters=filters, kernel_size=kernel_size, strides=strides, padding=args.padding or "valid",
                     data_format=data_format, dilation_rate=_pair(args.dilation_rate, "--dilation-rate"),
                     activation=args.activation, use_bias=use_bias)
    channels = _channels(x, data_format)
    if isinstance(kernel, np.ndarray) and kernel.ndim == 2:
        kernel = np.broadcast_to(kernel[:, :, None, None], (*kernel.shape, channels, filters)).astype(np.float32)
    weights = {"kernel": _filled(kernel, (*kernel_size, channels, filters), rng)}
    if use_bias:
        weights["bias"] = _bias(args.bias, filters, rng)
    return layer, weights


def _channels(x: np.ndarray, data_format: str) -> int:
    if x.ndim == 2:
        return 1
    image = x[0] if x.ndim == 4 else x
    if image.ndim != 3:
        raise ShapeError(f"--input: shape {x.shape} is not (H, W), (H, W, C) or (C, H, W). Give a 2-D or 3-D list")
    return image.shape[0] if data_format == S.CHANNELS_FIRST else image.shape[2]


def _bias(text: str | None, n: int, rng: np.random.Generator) -> np.ndarray:
    if text is None:
        return np.zeros(n, np.float32)
    if text == "random":
        return rng.standard_normal(n).astype(np.float32)
    value = parse_array(text, "--bias", rng)
    if value.ndim == 0:
        return np.full(n, value, np.float32)
    if value.shape != (n,):
        raise ShapeError(f"--bias: shape {value.shape}, expected one number or {n} (one per filter/unit)")
    return value


def _padding_literal(text: str):
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise SpecError(f"--padding={text!r} is not N, [H, W] or [[top, bottom], [left, right]] for zeropadding2d") from None
    if isinstance(value, list):
        value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value
