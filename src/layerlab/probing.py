"""Run one layer on a small array and record what it computed, cell by cell.

``probe(layer, array)`` runs ``layer`` (a layerlab spec layer or a real Keras layer object) on
``array`` through layerlab's NumPy engine and returns a ``ProbeResult``: the output, the padding
per side, and for every output cell the input cells it read (padded ones flagged). The windows and
the padding come from ``layerlab.geometry``; the numbers come from ``layerlab.engine``; Keras is the
oracle (``ProbeResult.check_keras()``). Text lives in ``layerlab.explain``, pictures in
``layerlab.figures``.

Input shapes (the batch axis is added): a 2-D array is one channel ``(height, width)``; a 3-D
array is ``(height, width, channels)`` for channels_last or ``(channels, height, width)`` for
channels_first; a 4-D array must already have a batch axis of 1. Dense takes a vector.

This module imports numpy and layerlab core modules only; matplotlib and Keras load lazily.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from layerlab import geometry
from layerlab import spec as S
from layerlab.engine import run_layer
from layerlab.errors import ShapeError, SpecError, UnsupportedLayerError
from layerlab.registry import PROBE

SUPPORTED = (S.Conv2D, S.DepthwiseConv2D, S.MaxPooling2D, S.AveragePooling2D, S.ZeroPadding2D, S.Flatten, S.Dense)
PROBE.register(SUPPORTED)
PROBE.decline((S.Conv1D, S.MaxPooling1D, S.AveragePooling1D, S.ZeroPadding1D), "probe draws 2-D windows only; "
              "a 1-D layer is its 2-D form of height 1 (probe that)")
PROBE.decline(S.SeparableConv2D, "it is two layers: probe its DepthwiseConv2D and its 1x1 Conv2D one at a time")
PROBE.decline((S.GlobalAveragePooling2D, S.GlobalMaxPooling2D, S.GlobalAveragePooling1D, S.GlobalMaxPooling1D),
              "every output reads a whole channel; there is no window to show")
PROBE.decline((S.Add, S.Subtract, S.Multiply, S.Average, S.Maximum, S.Minimum, S.Concatenate),
              "probe runs one layer on one input; a merge reads several")
PROBE.decline((S.Activation, S.ReLU, S.PReLU, S.Rescaling, S.Dropout, S.BatchNormalization, S.Normalization),
              "it is element-wise: each output reads the one input cell at its own index")
PROBE.decline((S.Reshape, S.Permute, S.Cropping2D, S.UpSampling2D), "no window explanation is written for it yet")


class Padding(NamedTuple):
    """Cells added on each side of the input (all 0 for layers that do not pad)."""

    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int


@dataclass(frozen=True)
class Cell:
    """One input cell that an output cell read.

    Attributes:
        index: coordinates in the unpadded input without the batch axis: ``(in_y, in_x)`` for
            2-D layers (every channel, or the output's own channel for pooling), the full index
            for Flatten and Dense. A padded cell lies outside the input (-1 is above/left).
        padding: True when the cell is padding, not input.
    """

    index: tuple[int, ...]
    padding: bool = False


@dataclass(frozen=True)
class Window:
    """The input cells one output cell read: ``out`` is ``(out_y, out_x)`` or ``(i,)``."""

    out: tuple[int, ...]
    cells: tuple[Cell, ...]


@dataclass(frozen=True, eq=False)
class ProbeResult:
    """What one layer computed on one input.

    Attributes:
        layer: the spec layer that ran.
        input: the input as the layer saw it, batch axis first, float32.
        weights: weight name -> float32 array (Keras layouts: kernel HWIO, Dense kernel (in, units)).
        output: the engine's output, batch axis first, float32 (what Keras returns).
        pre_activation: the output before the layer's activation (same as output when linear).
        geometry: the ``geometry.Window2D`` of a conv or pooling layer, else None.
        padding: pad_top, pad_bottom, pad_left, pad_right.
        windows: per output cell, the input cells it read, in row-major output order.
    """

    layer: S.Layer
    input: np.ndarray
    weights: dict[str, np.ndarray]
    output: np.ndarray
    pre_activation: np.ndarray
    geometry: geometry.Window2D | None
    padding: Padding
    windows: tuple[Window, ...]

    def explain(self, precision: int = 6, max_windows: int = 64) -> str:
        """Plain-text explanation: sizes, padding and why, fill, windows, output."""
        from layerlab.explain import explain_probe

        return explain_probe(self, precision=precision, max_windows=max_windows)

    def figure(self, path=None, *, force: bool = False):
        """A matplotlib Figure of this probe; saved to ``path`` (.png or .svg) when given (an
        existing file is replaced only with ``force``)."""
        from layerlab.figures import probe_figure, save_figure

        fig = probe_figure(self)
        if path is not None:
            save_figure(fig, path, force=force)
        return fig

    def check_keras(self) -> KerasCheck:
        """Run the real Keras layer on the same input and weights; see ``check_keras``."""
        return check_keras(self)

    def _repr_svg_(self) -> str | None:
        try:
            from layerlab.figures import probe_svg

            return probe_svg(self)
        except ImportError:  # no matplotlib: notebooks fall back to HTML / text
            return None

    def _repr_html_(self) -> str:
        import html

        svg = self._repr_svg_() or ""
        return f"<div>{svg}<pre>{html.escape(self.explain())}</pre></div>"

    def __repr__(self) -> str:
        return f"<ProbeResult {self.layer.type} input {tuple(self.input.shape)} -> output {tuple(self.output.shape)}, padding {tuple(self.padding)}>"


@dataclass(frozen=True)
class KerasCheck:
    """Engine vs Keras on one probe: ``max_abs_diff`` is ``max |engine - keras|`` (inf on a shape mismatch)."""

    keras_output: np.ndarray
    max_abs_diff: float

    @property
    def ok(self) -> bool:
        """Agreement within 1e-6, scaled by the output's magnitude when that exceeds 1 (float32 rounding)."""
        scale = max(1.0, float(np.max(np.abs(self.keras_output)))) if self.keras_output.size else 1.0
        return self.max_abs_diff <= 1e-6 * scale


def probe(layer: Any, array: Any, weights: dict[str, Any] | None = None, *, seed: int = 0) -> ProbeResult:
    """Run one layer on a small array with layerlab's engine and record what it read and computed.

    Args:
        layer: a layerlab spec layer (Conv2D, MaxPooling2D, AveragePooling2D, ZeroPadding2D,
            Flatten, Dense) or a Keras layer object of one of those types.
        array: nested lists or an array: ``(H, W)`` one channel, ``(H, W, C)`` / ``(C, H, W)`` by
            the layer's data_format, or ``(1, ...)`` with the batch axis; a vector for Dense.
        weights: weight name -> array in Keras layout (``kernel`` HWIO for Conv2D, ``(in, units)``
            for Dense; ``bias``). None: a Keras layer's own weights; for a spec layer, the
            initializer when it is 'ones' or 'zeros', else seeded random normals.
        seed: seed of those random weights.

    Returns:
        A ``ProbeResult``; ``.output`` has the batch axis, as Keras returns it.

    Raises:
        ShapeError: the array is ragged, not numeric, or of a rank the layer cannot take.
        SpecError: the layer does not fit the input (e.g. a 'valid' kernel bigger than it).
        UnsupportedLayerError: a layer type probe does not explain.
    """
    klayer = None
    if not isinstance(layer, S.Layer):
        klayer, layer = layer, spec_from_keras_layer(layer)
    PROBE.lookup(layer)
    x = as_input(array, layer)  # (1, ...) float32
    try:  # validates the layer against the input: a 'valid' kernel bigger than the input fails here
        info = S.Model(name="probe", input_shape=x.shape[1:], layers=(layer,)).infos[0]
    except SpecError as exc:
        raise SpecError(f"probe: {exc}") from None
    expected = info.layer.weight_shapes(info.input_shapes[0])
    if weights is None and klayer is not None:
        weights = _keras_object_weights(klayer, x, expected)
    weights = default_weights(layer, expected, seed) if weights is None else _checked_weights(layer, expected, weights)
    output = _run_engine(layer, x, weights)
    pre = output
    if getattr(layer, "activation", "linear") != "linear":
        pre = _run_engine(dataclasses.replace(layer, activation="linear"), x, weights)
    win, padding, windows = _geometry(layer, x, output)
    return ProbeResult(layer, x, weights, output, pre, win, padding, windows)


def as_input(array: Any, layer: S.Layer) -> np.ndarray:
    """``array`` as the layer's float32 input with a batch axis of 1 (see the module docstring)."""
    x = to_array(array)
    if isinstance(layer, S.Dense):
        if x.ndim == 2 and x.shape[0] == 1:
            x = x[0]
        if x.ndim != 1:
            raise ShapeError(
                f"probe: Dense '{layer.name}' takes a vector, received shape {x.shape}. Give a 1-D list, or probe Flatten first"
            )
        return x[None]  # (1, features)
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ShapeError(f"probe: input shape {x.shape} has a batch of {x.shape[0]}, expected 1. Probe one image at a time")
        return x
    if x.ndim == 2:  # one channel (H, W)
        x = x[None] if layer.data_format == S.CHANNELS_FIRST else x[..., None]
    if x.ndim != 3:
        raise ShapeError(
            f"probe: {layer.type} '{layer.name}' needs (H, W), (H, W, C) or (C, H, W) by data_format, "
            f"received shape {x.shape}. Give a 2-D or 3-D nested list"
        )
    return x[None]  # (1, H, W, C) or (1, C, H, W)


def to_array(value: Any, where: str = "probe input") -> np.ndarray:
    """Nested lists of numbers (or an array) as float32; ShapeError when ragged, empty or not numeric."""
    if isinstance(value, np.ndarray):
        if not (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_) or np.issubdtype(value.dtype, np.complexfloating):
            raise ShapeError(f"{where}: array dtype {value.dtype} is not a real number type. Give numbers")
        x = value.astype(np.float32)
    else:
        shape = _nested_shape(value, where, ())
        x = np.array(value, dtype=np.float32).reshape(shape)
    if x.size == 0 or x.ndim == 0:
        raise ShapeError(f"{where}: expected a non-empty nested list of numbers, received shape {x.shape}. Give e.g. [[1, 2], [3, 4]]")
    return x


def _nested_shape(value: Any, where: str, at: tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(value, bool) or not isinstance(value, (int, float, list, tuple)):
        raise ShapeError(f"{where}: item {list(at)} is {value!r}, expected a number or a list. Give numbers only")
    if isinstance(value, (int, float)):
        return ()
    shapes = [_nested_shape(v, where, (*at, i)) for i, v in enumerate(value)]
    for i, s in enumerate(shapes[1:], 1):
        if s != shapes[0]:
            raise ShapeError(
                f"{where}: ragged nested list: item {list((*at, i))} has shape {s}, item {list((*at, 0))} has "
                f"{shapes[0]}; expected every row the same length. Fix the list"
            )
    return (len(value), *(shapes[0] if shapes else ()))


def default_weights(layer: S.Layer, expected: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    """Weights from the layer's initializer when it is 'ones' or 'zeros', else seeded random normals."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in expected.items():
        init = getattr(layer, f"{name}_initializer", None)
        if init == "ones":
            out[name] = np.ones(shape, np.float32)
        elif init == "zeros":
            out[name] = np.zeros(shape, np.float32)
        else:
            out[name] = rng.standard_normal(shape).astype(np.float32)
    return out


def _checked_weights(layer: S.Layer, expected: dict[str, tuple[int, ...]], weights: dict[str, Any]) -> dict[str, np.ndarray]:
    unknown = sorted(set(weights) - set(expected))
    if unknown:
        raise ShapeError(f"probe: {layer.type} '{layer.name}' has no weight(s) {unknown}; expected {list(expected)}")
    out = {}
    for name, shape in expected.items():
        if name not in weights:
            raise ShapeError(f"probe: {layer.type} '{layer.name}' needs weight '{name}' of shape {shape}, none given")
        array = to_array(weights[name], f"probe: weight '{name}'")
        if array.shape != shape:
            layout = " (kernel_h, kernel_w, in_channels, filters)" if isinstance(layer, S.Conv2D) and name == "kernel" else ""
            raise ShapeError(f"probe: {layer.type} '{layer.name}' weight '{name}' has shape {array.shape}, expected {shape}{layout}")
        out[name] = array
    return out


def _run_engine(layer: S.Layer, x: np.ndarray, weights: dict[str, np.ndarray]) -> np.ndarray:
    return np.asarray(run_layer(layer, [x], weights), dtype=np.float32)


def _geometry(layer: S.Layer, x: np.ndarray, output: np.ndarray):
    """(Window2D or None, Padding, windows) of ``layer`` on ``x``; windows from geometry.window."""
    if isinstance(layer, (S.Conv2D, S.DepthwiseConv2D, S.MaxPooling2D, S.AveragePooling2D)):
        win = layer.window(x.shape[1:])
        windows = tuple(
            Window((out_y, out_x), tuple(Cell(c, win.is_padding(*c)) for c in win.window(out_y, out_x)))
            for out_y in range(win.out_h)
            for out_x in range(win.out_w)
        )
        return win, Padding(win.pad_top, win.pad_bottom, win.pad_left, win.pad_right), windows
    if isinstance(layer, S.ZeroPadding2D):
        (pad_top, pad_bottom), (pad_left, pad_right) = layer.padding
        in_h, in_w = spatial_shape(x, layer.data_format)
        windows = []
        for out_y in range(in_h + pad_top + pad_bottom):
            for out_x in range(in_w + pad_left + pad_right):
                in_y, in_x = out_y - pad_top, out_x - pad_left
                windows.append(Window((out_y, out_x), (Cell((in_y, in_x), not (0 <= in_y < in_h and 0 <= in_x < in_w)),)))
        return None, Padding(pad_top, pad_bottom, pad_left, pad_right), tuple(windows)
    if isinstance(layer, S.Flatten):
        # Which input cell lands where, as the engine orders it: flatten the cells' own indices.
        index = np.arange(x.size, dtype=np.float32).reshape(x.shape)
        order = _run_engine(layer, index, {})[0].astype(np.int64)
        cells = [np.unravel_index(int(i), x.shape[1:]) for i in order]
        return None, Padding(0, 0, 0, 0), tuple(Window((i,), (Cell(tuple(int(v) for v in c)),)) for i, c in enumerate(cells))
    # Dense: every output reads every input.
    reads = tuple(Cell((i,)) for i in range(x.shape[1]))
    return None, Padding(0, 0, 0, 0), tuple(Window((j,), reads) for j in range(output.shape[1]))


def spatial_shape(x: np.ndarray, data_format: str) -> tuple[int, int]:
    """(height, width) of a batched 4-D array in ``data_format``."""
    return (x.shape[2], x.shape[3]) if data_format == S.CHANNELS_FIRST else (x.shape[1], x.shape[2])


# --- Keras --------------------------------------------------------------------------------------

def spec_from_keras_layer(klayer: Any) -> S.Layer:
    """The layerlab spec of one Keras layer object (the file loader's config mapping)."""
    if not hasattr(klayer, "get_config") or not hasattr(klayer, "get_weights"):
        raise UnsupportedLayerError(f"probe: expected a layerlab spec layer or a Keras layer, received {type(klayer).__name__}")
    from layerlab.keras_build import spec_layer_from_keras

    layer = spec_layer_from_keras(klayer)
    PROBE.lookup(layer, what="Keras layer")
    return layer


def _keras_object_weights(klayer: Any, x: np.ndarray, expected: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """A Keras layer object's weights by name, building it on ``x`` first if needed."""
    if not expected:
        return {}
    if not klayer.built:
        klayer.build(x.shape)  # Keras' own initializers pick the weights
    values = klayer.get_weights()
    if len(values) != len(expected):
        raise UnsupportedLayerError(f"probe: Keras layer '{klayer.name}' has {len(values)} weights, expected {list(expected)}")
    return {name: np.asarray(v, np.float32) for name, v in zip(expected, values, strict=True)}


def check_keras(result: ProbeResult) -> KerasCheck:
    """Run the real Keras layer (``keras_build.keras_layer``) on the probe's input and weights.

    Returns:
        A ``KerasCheck`` with Keras' output and ``max |engine - keras|``.
    """
    from layerlab.keras_build import import_keras, keras_layer

    keras = import_keras()
    klayer = keras_layer(result.layer, keras)
    klayer.build(result.input.shape)
    if result.weights:
        shapes = result.layer.weight_shapes(result.input.shape[1:])
        klayer.set_weights([result.weights[name] for name in shapes])
    keras_output = np.asarray(keras.ops.convert_to_numpy(klayer(result.input)), dtype=np.float32)
    if keras_output.shape != result.output.shape:
        return KerasCheck(keras_output, float("inf"))
    return KerasCheck(keras_output, float(np.max(np.abs(keras_output - result.output))) if keras_output.size else 0.0)
