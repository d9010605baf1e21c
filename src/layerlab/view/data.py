"""What ``layerlab view`` shows, as plain data: the graph, every layer's arguments, geometry and
weights, and every layer's values for one input.

The page (``view/static``) computes nothing itself; it draws what is here:

* windows: for every output row and column, the input rows and columns it reads, taken from
  ``layerlab.geometry`` (``Layer.window``, as probe and explain use it), padding included
  (coordinates outside the input);
* copy layers (Flatten, Reshape, Permute, padding, cropping, up-sampling, Concatenate): the source
  cell of every output cell, found by running the engine on numbered inputs, so the order is the
  engine's (and so Keras') order, channels_first Flatten included;
* values: every layer's output and, where the layer has an activation, its value before it, from
  the NumPy engine.

Arrays travel as little-endian float32 (int32 for indices) in base64, in (height, width, channels)
order whatever the model's data_format: a sequence is (1, steps, channels), a vector (1, n, 1).
Nothing here imports TensorFlow, Keras or the web server.
"""

from __future__ import annotations

import base64
import dataclasses
import math

import numpy as np

from layerlab import spec as S
from layerlab.engine import run_layer
from layerlab.errors import ShapeError
from layerlab.network import Network, output_layouts
from layerlab.registry import VIEW

# What a click on an output cell shows, per layer type (the page's ``kind``).
VIEW.register((S.Conv2D, S.Conv1D), "conv")
VIEW.register(S.DepthwiseConv2D, "depthwise")
VIEW.register((S.MaxPooling2D, S.MaxPooling1D), "max_pool")
VIEW.register((S.AveragePooling2D, S.AveragePooling1D), "avg_pool")
VIEW.register((S.GlobalMaxPooling2D, S.GlobalMaxPooling1D), "global_max")
VIEW.register((S.GlobalAveragePooling2D, S.GlobalAveragePooling1D), "global_avg")
VIEW.register(S.Dense, "dense", note="the arithmetic is shown for a Dense on a vector; on a sequence, the value only")
VIEW.register((S.Flatten, S.Reshape, S.Permute, S.ZeroPadding2D, S.ZeroPadding1D, S.Cropping2D, S.UpSampling2D,
               S.Concatenate), "copy")
VIEW.register((S.Activation, S.ReLU, S.PReLU, S.Rescaling, S.Dropout, S.BatchNormalization, S.Normalization),
              "elementwise")
VIEW.register((S.Add, S.Subtract, S.Multiply, S.Average, S.Maximum, S.Minimum), "merge")
VIEW.decline(S.SeparableConv2D, "it is a depthwise and a 1x1 convolution in one layer: a click shows its value only")

WINDOWED = ("conv", "depthwise", "max_pool", "avg_pool")
MAX_INDEX = 2**24  # float32 holds every integer up to here exactly (the numbered inputs of copy layers)


def encode(array: np.ndarray, dtype: str = "<f4") -> dict:
    """``{"shape": [...], "b64": ...}`` of ``array`` as little-endian ``dtype``."""
    array = np.ascontiguousarray(array, dtype=dtype)
    return {"shape": list(array.shape), "b64": base64.b64encode(array.tobytes()).decode("ascii")}


def decode(item: dict, dtype: str = "<f4") -> np.ndarray:
    """The array ``encode`` wrote."""
    return np.frombuffer(base64.b64decode(item["b64"]), dtype=dtype).reshape(item["shape"])


def hwc(value: np.ndarray, layout: str) -> np.ndarray:
    """One sample (no batch axis) as (height, width, channels): how the page indexes every value."""
    if value.ndim == 3:
        return value.transpose(1, 2, 0) if layout == S.CHANNELS_FIRST else value
    if value.ndim == 2:  # a sequence (steps, channels), or (channels, steps) when channels_first
        return (value.T if layout == S.CHANNELS_FIRST else value)[None]
    return value.reshape(1, -1, 1)


def _hwc_shape(shape: tuple[int, ...], layout: str) -> list[int]:
    return list(hwc(np.empty(shape, np.int8), layout).shape)


def sources(spec: S.Model) -> dict[str, list[str]]:
    """Layer name -> the names of the tensors it reads ('input' is the model input)."""
    out, previous = {}, "input"
    for layer in spec.layers:
        out[layer.name] = list(layer.inputs) or [previous]
        previous = layer.name
    return out


def input_image(spec: S.Model) -> list[int] | None:
    """(height, width, channels) of the canvas the page draws the input on, or None when the input
    is not an image: a 28x28 grey picture for any 784-value input (MNIST's, in any layout), else a
    2-D (H, W) or 3-D input of 1 or 3 channels."""
    shape, layout = tuple(spec.input_shape), output_layouts(spec)["input"]
    if math.prod(shape) == 28 * 28 and (len(shape) == 1 or 1 in shape or len(shape) == 2):
        return [28, 28, 1]
    if len(shape) == 2 and not isinstance(spec.layers[0], (S.Conv1D, S.MaxPooling1D, S.AveragePooling1D)):
        return [shape[0], shape[1], 1]
    if len(shape) == 3:
        h, w, c = _hwc_shape(shape, layout)
        return [h, w, c] if c in (1, 3) else None
    return None


def pixels_to_input(pixels: np.ndarray, spec: S.Model, scale: float) -> np.ndarray:
    """Canvas pixels (H, W, C), 0..255, as one model input (batch of 1) divided by ``scale``.

    Raises:
        ShapeError: the pixels do not fit the model's canvas.
    """
    canvas = input_image(spec)
    if canvas is None:
        raise ShapeError(f"model '{spec.name}': input {spec.input_shape} is not an image; use a random or file input")
    pixels = np.asarray(pixels, np.float32)
    if list(pixels.shape) != canvas:
        raise ShapeError(f"model '{spec.name}': pixels of shape {tuple(pixels.shape)} do not fit the input canvas "
                         f"{tuple(canvas)} (height, width, channels)")
    x = pixels / np.float32(scale) if scale != 1 else pixels
    shape, layout = tuple(spec.input_shape), output_layouts(spec)["input"]
    if math.prod(shape) == 28 * 28:
        return x.reshape(1, *shape)  # one grey channel: every layout keeps the pixel order
    if len(shape) == 2:
        return x[None, :, :, 0]
    return (x.transpose(2, 0, 1) if layout == S.CHANNELS_FIRST else x)[None]


# --- the model ------------------------------------------------------------------------------------

def describe(net: Network, *, source: str, scale: float, trained: bool) -> dict:
    """The page's model: input, layers (arguments, shapes, params, MACs, notes, windows, weights)."""
    spec = net.spec
    layouts, reads = output_layouts(spec), sources(spec)
    layers = []
    for info in spec.infos:
        layer = info.layer
        layers.append(_layer_entry(info, net.weights.get(layer.name, {}), layouts, reads[layer.name]))
    final = spec.output_shape
    return {
        "model": {
            "name": spec.name, "source": source, "trained": trained, "scale": scale,
            "input_shape": list(spec.input_shape), "input_layout": layouts["input"],
            "input_hwc": _hwc_shape(tuple(spec.input_shape), layouts["input"]),
            "canvas": input_image(spec), "mnist": math.prod(spec.input_shape) == 28 * 28,
            "params": spec.param_count, "macs": spec.macs,
            "classes": final[0] if len(final) == 1 and final[0] <= 1000 else None,
        },
        "layers": layers,
    }


def _layer_entry(info: S.LayerInfo, weights: dict[str, np.ndarray], layouts: dict[str, str], reads: list[str]) -> dict:
    layer = info.layer
    kind = VIEW.handlers.get(type(layer), "value")
    in_layouts = [layouts[name] for name in reads]
    if kind == "dense" and len(info.input_shapes[0]) != 1:
        kind = "value"
    args = {k: v for k, v in layer.to_dict().items() if k not in ("type", "name", "inputs")}
    entry = {
        "name": layer.name, "type": layer.type, "kind": kind, "args": args, "inputs": reads,
        "output_shape": list(info.output_shape), "shape": _hwc_shape(info.output_shape, layouts[layer.name]),
        "input_shapes": [_hwc_shape(s, lo) for s, lo in zip(info.input_shapes, in_layouts, strict=True)],
        "params": info.params, "macs": info.macs, "bytes": 4 * info.activation_size,
        "activation": getattr(layer, "activation", "linear"),
        "notes": _notes(layer, info, in_layouts[0]),
    }
    if type(layer) in VIEW.declined:
        entry["notes"].append(VIEW.declined[type(layer)])
    if kind in WINDOWED:
        entry["window"] = _window(layer, info)
    if kind == "copy":
        entry["source"] = _copy_sources(layer, info, in_layouts, layouts[layer.name])
    entry["weights"] = _weights(layer, info, weights, in_layouts[0])
    return entry


def _window(layer, info: S.LayerInfo) -> dict:
    """Per output row / column, the input rows / columns it reads (geometry's own windows)."""
    win = layer.window(info.input_shapes[0])
    kh, kw = win.kernel_h, win.kernel_w
    rows = [[cell[0] for cell in win.window(y, 0)[::kw]] for y in range(win.out_h)]
    cols = [[cell[1] for cell in win.window(0, x)[:kw]] for x in range(win.out_w)]
    return {"rows": rows, "cols": cols, "in": [win.in_h, win.in_w], "kernel": [kh, kw],
            "pad": [win.pad_top, win.pad_bottom, win.pad_left, win.pad_right]}


def _copy_sources(layer, info: S.LayerInfo, in_layouts: list[str], out_layout: str) -> dict | None:
    """For every output cell (in page order): which input it copies (-1: a zero it adds) and the cell.

    Found by running the engine on inputs whose values are their own numbers (1, 2, ... across all
    inputs), so the order is exactly the engine's."""
    sizes = [math.prod(s) for s in info.input_shapes]
    if sum(sizes) >= MAX_INDEX:
        return None
    starts = np.cumsum([0, *sizes])
    numbered = [(starts[k] + 1 + np.arange(n, dtype=np.float64)).astype(np.float32).reshape(1, *shape)
                for k, (n, shape) in enumerate(zip(sizes, info.input_shapes, strict=True))]
    out = np.asarray(run_layer(layer, numbered, {}))[0]
    values = np.rint(hwc(out, out_layout)).reshape(-1).astype(np.int64)
    which = np.full(values.size, -1, np.int32)
    index = np.full(values.size, -1, np.int32)
    for k, (n, shape) in enumerate(zip(sizes, info.input_shapes, strict=True)):
        own = values - starts[k] - 1
        hit = (own >= 0) & (own < n)
        page_order = hwc(np.arange(n).reshape(shape), in_layouts[k]).reshape(-1)  # own index at each page position
        position = np.empty(n, np.int64)
        position[page_order] = np.arange(n)
        which[hit] = k
        index[hit] = position[own[hit]]
    return {"input": encode(which, "<i4"), "index": encode(index, "<i4")}


def _weights(layer, info: S.LayerInfo, weights: dict[str, np.ndarray], in_layout: str) -> dict:
    """The weights a click's arithmetic shows, in page layouts (conv kernels 4-D (kh, kw, in, out))."""
    out = {}
    for name, value in weights.items():
        if name == "kernel" and value.ndim == 3:  # Conv1D (k, in, filters)
            value = value[None]
        if name == "alpha":  # PReLU: broadcast to the input, in page order
            value = hwc(np.broadcast_to(value, info.input_shapes[0]), in_layout)
        out[name] = encode(value)
    return out


def _notes(layer, info: S.LayerInfo, in_layout: str) -> list[str]:
    """What Keras does here that surprises people (shown as a marker on the layer)."""
    from layerlab.explain import unread_lines

    notes = []
    if isinstance(layer, S.Windowed):
        win = layer.window(info.input_shapes[0])
        pads = (win.pad_top, win.pad_bottom, win.pad_left, win.pad_right)
        if win.pad_bottom != win.pad_top or win.pad_right != win.pad_left:
            notes.append(f"'same' pads unevenly: top {pads[0]}, bottom {pads[1]}, left {pads[2]}, right {pads[3]}; "
                         "the odd cell goes after (bottom/right), as TensorFlow and Keras do")
        if any(pads) and isinstance(layer, (S.MaxPooling2D, S.MaxPooling1D)):
            notes.append("pads with -inf: a padded cell never wins, so a border window is the max of its real cells")
        if any(pads) and isinstance(layer, (S.AveragePooling2D, S.AveragePooling1D)):
            notes.append("a border window divides by the real cells it holds, not by the pool area")
        dropped = unread_lines(win, most=4)
        if dropped:
            notes.append(f"no window reads {' and '.join(dropped)} of the input ('valid' drops them)")
    if isinstance(layer, S.Flatten) and len(info.input_shapes[0]) > 1 and in_layout == S.CHANNELS_FIRST:
        if layer.data_format == S.CHANNELS_FIRST:
            notes.append("Flatten(data_format='channels_first') moves the channels last first: the order is row, "
                         "column, channel, as in a channels_last model")
        else:
            notes.append("Flatten(data_format='channels_last') of a channels_first tensor reads channel, row, column")
    activation = getattr(layer, "activation", None)
    if activation == "hard_sigmoid_keras2":
        notes.append("Keras 2's hard_sigmoid, clip(0.2 x + 0.5, 0, 1); Keras 3's is relu6(x + 3) / 6")
    elif activation == "hard_sigmoid":
        notes.append("Keras 3's hard_sigmoid, relu6(x + 3) / 6; Keras 2's was clip(0.2 x + 0.5, 0, 1)")
    return notes


# --- one input -------------------------------------------------------------------------------------

def run(net: Network, x: np.ndarray, label: str = "", c_trace=None) -> dict:
    """Every layer's values for one input ``x`` (batch of 1, model layout): output, and ``pre``
    (before the activation) for layers that have one; with ``c_trace`` (an
    ``export.c.trace.CTrace``), also the C export's values of every layer a C step ends with, and
    their largest difference from the engine's."""
    x = net.check_input(x)[:1]
    spec = net.spec
    layouts, reads = output_layouts(spec), sources(spec)
    values = {"input": x, **net.trace(x)}
    layers = {}
    for layer in spec.layers:
        item = {"out": encode(hwc(values[layer.name][0], layouts[layer.name]))}
        if getattr(layer, "activation", "linear") != "linear":
            inputs = [values[name] for name in reads[layer.name]]
            pre = run_layer(dataclasses.replace(layer, activation="linear"), inputs, net.weights.get(layer.name, {}))
            item["pre"] = encode(hwc(np.asarray(pre, np.float32)[0], layouts[layer.name]))
        layers[layer.name] = item
    final = values[spec.layers[-1].name][0]
    result = {"label": label, "input": encode(hwc(x[0], layouts["input"])), "layers": layers,
              "finite": bool(np.isfinite(final).all())}
    if c_trace is not None:
        result["c"] = {}
        for name, value in c_trace.run(x).items():
            engine = values[name][0]
            result["c"][name] = {"out": encode(hwc(value, layouts[name])),
                                 "max_diff": float(np.max(np.abs(value - engine))) if value.size else 0.0,
                                 "range": float(np.max(engine) - np.min(engine)) if engine.size else 0.0}
        result["c_kind"] = "int8" if c_trace.int8 else "float32"
    return result


def seeded_weights(spec: S.Model, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Untrained weights for a spec without a file: Glorot-uniform kernels, zero biases, batch-norm
    statistics of the identity (seeded, so a page shows the same numbers every time)."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, np.ndarray]] = {}
    for info in spec.infos:
        shapes = info.layer.weight_shapes(info.input_shapes[0])
        arrays = {}
        for name, shape in shapes.items():
            if name in ("gamma", "moving_variance"):
                arrays[name] = np.ones(shape, np.float32)
            elif name in ("bias", "beta", "moving_mean"):
                arrays[name] = np.zeros(shape, np.float32)
            else:
                receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
                fan_in = receptive * (shape[-2] if len(shape) >= 2 else 1)
                fan_out = receptive * shape[-1]
                limit = math.sqrt(6.0 / max(fan_in + fan_out, 1))
                arrays[name] = rng.uniform(-limit, limit, shape).astype(np.float32)
        if arrays:
            out[info.layer.name] = arrays
    return out
