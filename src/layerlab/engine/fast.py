"""The engine's faster path: a plan per spec, run in chunks of images on worker threads.

The plain functions of ``layerlab.engine.layers`` loop over kernel taps; a plan computes the same
layers with fewer, larger NumPy calls (``layerlab.engine.banded``). It is tested against the
plain functions and against Keras.

* Inside a plan the batch axis is LAST: an image is ``x_hwcn (H, W, C, batch)``, a vector
  ``(features, batch)``. A channels_first model is converted once at the start; Flatten then
  reads H-W-C order, which is what Keras' Flatten does for channels_first too (it moves
  channels last first).
* A plan is a graph: each node reads named values (layer outputs, ``'input'``) and makes one.
  A value is overwritten in place (ReLU, the bias, a merge) only when the plan made it and
  nothing reads it later; a value nothing reads any more is dropped.
* A BatchNormalization read only from a linear Conv2D / DepthwiseConv2D / Dense that nothing
  else reads is folded into that layer's weights (scale and shift in float64, rounded once).
* DepthwiseConv2D on a small image is one batched matmul per channel with the dense matrix
  from every input cell to every output cell ((C, out_cells, in_cells), zeros included): BLAS
  beats a loop over the taps by far there. On a larger image it adds clipped tap views.
* Weights are prepared (bands, folded kernels) once per set of weights: ``Plan.prepare``
  remembers the last set by its bytes.
* A batch runs in chunks (``Plan.chunk`` images). Each BLAS call is kept under OpenBLAS'
  threading threshold (m * n * k <= 65536 * 4) by the chunk size, so calls stay single-threaded:
  on a busy machine OpenBLAS threads wait for each other and a call can run ten times slower.
  Chunks run on ``threads()`` worker threads instead (NumPy and BLAS release the GIL); an image's
  result does not depend on the thread count.

Specs a plan does not cover (Reshape, 1-D layers, mixed data formats, a BatchNormalization over
a non-channel axis, ...) make ``plan_for`` return None; ``engine.run`` then uses the plain path.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from layerlab import geometry
from layerlab import spec as S
from layerlab.engine import elementwise as E
from layerlab.engine.banded import BandConv, Pool, _tap_ranges, activate, pad_hw, plan_conv
from layerlab.layers import LAYER_TYPES
from layerlab.layers.merge import ELEMENTWISE as ELEMENTWISE_MERGES
from layerlab.layers.normalization import layer_scale_shift
from layerlab.registry import ENGINE_FAST

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

Weights = Mapping[str, Mapping[str, np.ndarray]]
Prepared = Mapping[str, Any]

# OpenBLAS runs a gemm on one thread when m * n * k is at most this (interface/gemm.c).
_BLAS_SINGLE_THREAD = 65536 * 4
CHUNK = 128  # images per plan call at most; fewer where a BLAS call would pass the threshold
# A depthwise conv runs as per-channel dense matrices when out_cells * in_cells is at most this.
_DEPTHWISE_DENSE = 4096
_COMMUTATIVE = ("add", "multiply", "maximum", "minimum", "average")


class Unsupported(Exception):
    """The fast plan does not cover this spec; use the plain path."""


ENGINE_FAST.register((
    S.Conv2D, S.DepthwiseConv2D, S.MaxPooling2D, S.AveragePooling2D, S.GlobalAveragePooling2D, S.GlobalMaxPooling2D,
    S.ZeroPadding2D, S.Activation, S.ReLU, S.Dense, S.Flatten, S.Dropout, S.Rescaling, S.BatchNormalization,
    S.Concatenate, *ELEMENTWISE_MERGES,
), note="images or vectors of one data_format, graphs too")
ENGINE_FAST.decline(tuple(cls for cls in LAYER_TYPES.values() if cls not in ENGINE_FAST.handlers),
                    "the engine runs it on its plain path (same results, per-layer NumPy calls)")


@dataclass
class _Node:
    """One plan step: ``run(inputs, prepared, overwrite)`` on the values named ``inputs``.

    ``alias``: the output is the first input itself (a view). ``in_place``: the input the step
    writes its result into when ``overwrite`` allows it. ``prepare(weights)``: this step's
    weights in the form it computes with (kept under ``key``); ``arrays(weights)``: the weight
    arrays that prepared form depends on.
    """

    run: Callable[..., np.ndarray]
    inputs: tuple[str, ...]
    output: str
    alias: bool = False
    in_place: int | None = None
    prepare: Callable[[Weights], Any] | None = None
    arrays: Callable[[Weights], list[np.ndarray]] | None = None
    blas_mk: int = 0  # m * k of the node's largest matmul per image column (see chunk_size)
    floats: int = 0  # floats the node touches per image (inputs, output, copies): see chunk_size
    fresh: bool = False  # the output is a buffer the plan made (never a view of the model input)
    activation: tuple[str, int] | None = None  # an Activation node: (name, softmax axis), for fusing
    key: str = ""  # where prepare() keeps this node's weights (its layer's output name)
    overwrite: tuple[bool, ...] = ()
    last_reads: tuple[str, ...] = ()  # values this node reads for the last time (dropped after it)


@dataclass
class Plan:
    """Nodes that map a batch-first ``(n, *input_shape)`` float32 array to the model output."""

    nodes: tuple[_Node, ...]
    output: str
    chunk: int  # images per call at most (see chunk_size)
    parallel: bool  # chunks may run on several worker threads (see chunk_size)
    solo_chunk: int = CHUNK  # images per call on one worker thread (the cache rule alone)
    _cache: list = field(default_factory=list, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def prepare(self, weights: Weights) -> dict[str, Any]:
        """Every node's prepared weights, recomputed only when the weight bytes change (an array
        edited in place is caught too)."""
        arrays = [a for node in self.nodes if node.arrays for a in node.arrays(weights)]
        digest = b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)
        with self._lock:
            if self._cache and self._cache[0] == digest:
                return self._cache[1]
        prepared = {node.key or node.output: node.prepare(weights) for node in self.nodes if node.prepare}
        with self._lock:
            self._cache[:] = [digest, prepared]
        return prepared

    def __call__(self, x: np.ndarray, weights: Weights, prepared: Prepared | None = None) -> np.ndarray:
        prepared = self.prepare(weights) if prepared is None else prepared
        values = {"input": x}
        for node in self.nodes:
            values[node.output] = node.run([values[name] for name in node.inputs], prepared, node.overwrite)
            for name in node.last_reads:
                values.pop(name, None)
        return values[self.output]


def _fuse_activations(nodes: list[_Node]) -> list[_Node]:
    """An Activation read from a node that made its own buffer, and read by nothing else, runs
    inside that node (in place, while the output is still in the cache)."""
    readers: dict[str, int] = {}
    for node in nodes:
        for name in node.inputs:
            readers[name] = readers.get(name, 0) + 1
    out: list[_Node] = []
    for node in nodes:
        before = out[-1] if out else None
        if (node.activation is not None and before is not None and before.fresh and node.inputs == (before.output,)
                and readers[before.output] == 1):
            name, axis = node.activation
            run = before.run
            before.run = lambda inputs, prepared, overwrite, run=run, name=name, axis=axis: activate(
                run(inputs, prepared, overwrite), name, True, axis)
            before.key = before.key or before.output
            before.output = node.output
            continue
        out.append(node)
    return out


def _liveness(nodes: list[_Node]) -> None:
    """Set each node's ``overwrite`` flags and ``last_reads``.

    Values share a buffer when one is an alias of the other or was computed in place into it.
    An input may be overwritten when the plan made its buffer, no later node reads that buffer
    under any name, and the node does not read it twice.
    """
    root = {"input": "input"}
    made = {"input": False}
    last_read: dict[str, int] = {}
    for index, node in enumerate(nodes):
        for name in node.inputs:
            last_read[name] = index
    for index, node in enumerate(nodes):
        flags = []
        for name in node.inputs:
            buffer = root[name]
            later = any(last_read.get(other, -1) > index for other, r in root.items() if r == buffer)
            twice = sum(root[other] == buffer for other in node.inputs) > 1
            flags.append(made[buffer] and not later and not twice)
        node.overwrite = tuple(flags)
        node.last_reads = tuple(name for name in dict.fromkeys(node.inputs) if last_read[name] == index)
        if node.alias:
            root[node.output] = root[node.inputs[0]]
        elif node.in_place is not None and flags[node.in_place]:
            root[node.output] = root[node.inputs[node.in_place]]
        else:
            root[node.output] = node.output
            made[node.output] = True


# -- steps ---------------------------------------------------------------------------------------

def _folded(layer, bn: S.BatchNormalization | None, weights: Weights, kernel_key: str, out_axis: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(kernel, bias) of ``layer`` with ``bn`` folded in: kernel * scale along ``out_axis``, bias * scale + shift."""
    params = weights[layer.name]
    kernel = np.asarray(params[kernel_key], np.float32)
    bias = np.asarray(params["bias"], np.float32) if layer.use_bias else None
    if bn is None:
        return kernel, bias
    scale, shift = layer_scale_shift(bn, weights[bn.name], dtype=np.float64)
    shape = [1] * kernel.ndim
    shape[out_axis] = -1
    folded = (kernel.astype(np.float64) * scale.reshape(shape)).astype(np.float32)
    base = bias.astype(np.float64) if bias is not None else 0.0
    return folded, (base * scale + shift).astype(np.float32)


def _arrays_of(*layers) -> Callable[[Weights], list[np.ndarray]]:
    names = [layer.name for layer in layers if layer is not None]
    return lambda weights: [a for name in names for _, a in sorted(weights.get(name, {}).items())]


def _conv_node(conv: BandConv, bn, source: str, output: str) -> _Node:
    layer = conv.layer

    def prepare(weights):
        kernel, bias = _folded(layer, bn, weights, "kernel", 3)
        return conv.band(kernel), bias

    def run(inputs, prepared, overwrite):
        band, bias = prepared[output]
        return conv(inputs[0], band, bias)

    return _Node(run, (source,), output, prepare=prepare, arrays=_arrays_of(layer, bn),
                 blas_mk=conv.block * layer.filters * conv.k)


@dataclass(frozen=True)
class _Depthwise:
    """DepthwiseConv2D (+ folded BN, + activation) on ``x_hwcn``; see the module docstring."""

    layer: S.DepthwiseConv2D
    bn: S.BatchNormalization | None
    win: geometry.Window2D
    channels: int
    softmax_axis: int

    @property
    def dense(self) -> bool:
        w = self.win
        return w.out_h * w.out_w * w.in_h * w.in_w <= _DEPTHWISE_DENSE

    def prepare(self, weights: Weights):
        """(weights, bias): the per-channel dense matrices (C, M, out_cells, in_cells), or the kernel
        (kh, kw, C, M) for the tap loop; the BN scale folded in per output channel c * M + m."""
        params = weights[self.layer.name]
        kernel = np.asarray(params["kernel"], np.float32)
        bias = np.asarray(params["bias"], np.float32) if self.layer.use_bias else None
        if self.bn is not None:
            scale, shift = layer_scale_shift(self.bn, weights[self.bn.name], dtype=np.float64)
            kernel = (kernel.astype(np.float64) * scale.reshape(kernel.shape[2:])).astype(np.float32)
            bias = ((bias.astype(np.float64) if bias is not None else 0.0) * scale + shift).astype(np.float32)
        if not self.dense:
            return kernel, bias
        w, c, m = self.win, self.channels, self.layer.depth_multiplier
        matrix = np.zeros((c, m, w.out_h, w.out_w, w.in_h, w.in_w), np.float32)
        for fy in range(w.kernel_h):
            for fx in range(w.kernel_w):
                tap = _tap_ranges(w, fy * w.dilation_h, fx * w.dilation_w)
                if tap is None:
                    continue
                out_y, out_x, in_y, in_x = (range(w.out_h)[tap[0]], range(w.out_w)[tap[1]],
                                            range(w.in_h)[tap[2]], range(w.in_w)[tap[3]])
                for oy, iy in zip(out_y, in_y, strict=True):
                    for ox, ix in zip(out_x, in_x, strict=True):
                        matrix[:, :, oy, ox, iy, ix] = kernel[fy, fx]
        return matrix.reshape(c, m, w.out_h * w.out_w, w.in_h * w.in_w), bias

    def __call__(self, inputs, prepared, overwrite, output: str) -> np.ndarray:
        weights, bias = prepared[output]
        x = inputs[0]
        w, c, m = self.win, self.channels, self.layer.depth_multiplier
        n = x.shape[-1]
        if self.dense:
            # (C, M, out_cells, in_cells) @ (C, 1, in_cells, N) into (C, M, out_cells, N) views of
            # the HWCN input and output: no transposing copies (BLAS takes the strides).
            cells = np.ascontiguousarray(x).reshape(w.in_h * w.in_w, c, n).transpose(1, 0, 2)[:, None]
            out = np.empty((w.out_h, w.out_w, c, m, n), np.float32)
            np.matmul(weights, cells, out=out.reshape(w.out_h * w.out_w, c, m, n).transpose(1, 2, 0, 3))
            out = out.reshape(w.out_h, w.out_w, c * m, n)
        else:
            out = np.zeros((w.out_h, w.out_w, c, m, n), np.float32)
            for fy in range(w.kernel_h):
                for fx in range(w.kernel_w):
                    tap = _tap_ranges(w, fy * w.dilation_h, fx * w.dilation_w)
                    if tap is not None:
                        target = out[tap[0], tap[1]]
                        target += x[tap[2], tap[3]][:, :, :, None, :] * weights[fy, fx][:, :, None]
            out = out.reshape(w.out_h, w.out_w, c * m, n)
        if bias is not None:
            out += bias[:, None]
        return activate(out, self.layer.activation, True, self.softmax_axis)


def _dense_node(layer: S.Dense, bn, source: str, output: str, batch_first: bool = False) -> _Node:
    """Dense (+ folded BN) on ``(in, N)``; ``batch_first``: the model's last layer, which writes
    ``(N, units)`` straight away (no transposing copy at the end)."""
    def prepare(weights):
        kernel, bias = _folded(layer, bn, weights, "kernel", 1)
        return (kernel if batch_first else np.ascontiguousarray(kernel.T)), bias  # (in, units) / (units, in)

    def run(inputs, prepared, overwrite):
        kernel, bias = prepared[output]
        if batch_first:
            out = inputs[0].T @ kernel  # (N, in) @ (in, units): BLAS reads the transposed view
            if bias is not None:
                out += bias
            return activate(out, layer.activation, True, 1)
        out = kernel @ inputs[0]  # (units, in) @ (in, N) -> (units, N)
        if bias is not None:
            out += bias[:, None]
        return activate(out, layer.activation, True, 0)

    return _Node(run, (source,), output, prepare=prepare, arrays=_arrays_of(layer, bn))


def _batchnorm_node(layer: S.BatchNormalization, source: str) -> _Node:
    def prepare(weights):
        scale, shift = layer_scale_shift(layer, weights[layer.name])
        return scale[:, None], shift[:, None]  # channels are the axis before the batch

    def run(inputs, prepared, overwrite):
        scale, shift = prepared[layer.name]
        x = inputs[0]
        if overwrite[0]:
            np.multiply(x, scale, out=x)
            x += shift
            return x
        return x * scale + shift

    return _Node(run, (source,), layer.name, in_place=0, prepare=prepare, arrays=_arrays_of(layer))


def _merge_node(layer, sources: tuple[str, ...]) -> _Node:
    operation = layer.operation
    fold = {"add": np.add, "average": np.add, "multiply": np.multiply, "maximum": np.maximum, "minimum": np.minimum,
            "subtract": np.subtract}[operation]

    def run(inputs, prepared, overwrite):
        if operation == "subtract":
            return np.subtract(inputs[0], inputs[1], out=inputs[0] if overwrite[0] else None)
        # Keras folds left to right; addition and the others are commutative, so any input may
        # hold the running result: x0 + x1 == x1 + x0 bit for bit (three inputs keep the order).
        if overwrite[0] or len(inputs) > 2 or not overwrite[1]:
            out = inputs[0] if overwrite[0] else inputs[0].copy()
            rest = inputs[1:]
        else:
            out, rest = inputs[1], inputs[:1]
        for other in rest:
            fold(out, other, out=out)
        if operation == "average":
            out /= np.float32(len(inputs))
        return out

    return _Node(run, sources, layer.name, in_place=0)


def _simple(fn: Callable[[np.ndarray], np.ndarray], source: str, output: str, alias: bool = False) -> _Node:
    return _Node(lambda inputs, prepared, overwrite: fn(inputs[0]), (source,), output, alias=alias)


def _activation_node(name: str, source: str, output: str, axis: int) -> _Node:
    return _Node(lambda inputs, prepared, overwrite: activate(inputs[0], name, overwrite[0], axis), (source,), output,
                 alias=name == "linear", in_place=0, activation=None if name == "linear" else (name, axis))


# -- building a plan -----------------------------------------------------------------------------

def _internal(shape: tuple[int, ...], channels_first: bool) -> tuple[int, ...]:
    """The spec shape (no batch) as the plan's: (H, W, C) for images, (F,) for vectors."""
    if len(shape) == 3:
        return (shape[1], shape[2], shape[0]) if channels_first else tuple(shape)
    if len(shape) == 1:
        return tuple(shape)
    raise Unsupported(f"rank-{len(shape)} tensor")


def _concat_axis(layer: S.Concatenate, rank: int, channels_first: bool) -> int:
    axis = layer.axis if layer.axis >= 0 else rank + 1 + layer.axis
    if rank == 1:
        return 0
    if channels_first:
        return {1: 2, 2: 0, 3: 1}[axis]
    return {1: 0, 2: 1, 3: 2}[axis]


def _readers(spec: S.Model) -> dict[str, list[int]]:
    readers: dict[str, list[int]] = {}
    for index, layer in enumerate(spec.layers):
        for source in layer.inputs or ((spec.layers[index - 1].name,) if index else ("input",)):
            readers.setdefault(source, []).append(index)
    return readers


def _plan_for(spec: S.Model) -> Plan:
    """Build the plan of ``spec``, or raise Unsupported."""
    formats = {l.data_format for l in spec.layers if isinstance(l, (S.Windowed, S.ZeroPadding2D, S.GlobalAveragePooling2D, S.GlobalMaxPooling2D))}
    if len(formats) > 1:
        raise Unsupported("mixed data formats")
    channels_first = formats == {S.CHANNELS_FIRST}
    rank = len(spec.input_shape)
    if rank == 3:
        order = (2, 3, 1, 0) if channels_first else (1, 2, 3, 0)  # (N, C, H, W) / (N, H, W, C) -> HWCN
    elif rank == 1:
        order = (1, 0)  # (N, F) -> (F, N)
    else:
        raise Unsupported(f"rank-{rank} input")
    nodes = [_Node(lambda inputs, prepared, overwrite: inputs[0].transpose(order), ("input",), "<in>", alias=True)]
    names = {"input": "<in>"}  # spec value -> plan value
    shapes = {"input": _internal(tuple(spec.input_shape), channels_first)}
    readers = _readers(spec)
    folded: dict[str, S.BatchNormalization] = {}  # conv / dense name -> the BN folded into it
    bias_left: set[str] = set()  # convs whose bias the max pooling after them adds
    dense_last = False
    for index, layer in enumerate(spec.layers):
        if not ENGINE_FAST.supports(type(layer)):
            raise Unsupported(layer.type)
        sources = layer.inputs or ((spec.layers[index - 1].name,) if index else ("input",))
        if isinstance(layer, S.BatchNormalization) and sources[0] in folded and folded[sources[0]] is layer:
            names[layer.name] = names[sources[0]]
            shapes[layer.name] = shapes[sources[0]]
            continue
        inputs = tuple(names[s] for s in sources)
        shape = shapes[sources[0]]
        image = len(shape) == 3
        softmax_axis = 0 if not image else (1 if channels_first else 2)  # the spec's last axis
        bn = _foldable_bn(spec, index, readers, shape, channels_first)
        out_name = bn.name if bn is not None else layer.name
        if bn is not None:
            folded[layer.name] = bn
        if isinstance(layer, S.Conv2D):
            h, w, c = shape
            following = spec.layers[index + 1] if index + 1 < len(spec.layers) else None
            bias_later = (layer.use_bias and bn is None and layer.activation == "linear" and isinstance(following, S.MaxPooling2D)
                          and readers.get(layer.name) == [index + 1])
            if bias_later:
                bias_left.add(layer.name)
            conv = plan_conv(layer, (h, w, c), softmax_axis, add_bias=not bias_later)
            node = _conv_node(conv, bn, inputs[0], out_name)
            out_shape = (conv.win.out_h, conv.win.out_w, layer.filters)
        elif isinstance(layer, S.DepthwiseConv2D):
            h, w, c = shape
            win = geometry.window_2d((h, w), layer.kernel_size, layer.strides, layer.padding, layer.dilation_rate)
            step = _Depthwise(layer, bn, win, c, softmax_axis)
            node = _Node(lambda inputs, prepared, overwrite, step=step, out=out_name: step(inputs, prepared, overwrite, out),
                         inputs, out_name, prepare=step.prepare, arrays=_arrays_of(layer, bn),
                         blas_mk=layer.depth_multiplier * win.out_h * win.out_w * win.in_h * win.in_w if step.dense else 0)
            out_shape = (win.out_h, win.out_w, c * layer.depth_multiplier)
        elif isinstance(layer, S.Dense):
            if image:
                raise Unsupported("Dense on an image")
            final = spec.layers[-1] in (layer, bn)  # the model's output: written batch first
            node = _dense_node(layer, bn, inputs[0], out_name, batch_first=final)
            dense_last = final
            node.blas_mk = layer.units * shape[0]
            out_shape = (layer.units,)
        elif isinstance(layer, (S.MaxPooling2D, S.AveragePooling2D)):
            h, w, c = shape
            win = geometry.window_2d((h, w), layer.pool_size, layer.strides or layer.pool_size, layer.padding)
            pool = Pool(win, layer.reduce == "average")
            bias_of = sources[0] if sources[0] in bias_left else None  # that conv left its bias to this max pool
            node = _Node(lambda inputs, prepared, overwrite, pool=pool, b=bias_of: pool(inputs[0], prepared[b][1] if b else None),
                         inputs, layer.name)
            out_shape = (win.out_h, win.out_w, c)
        elif isinstance(layer, (S.GlobalAveragePooling2D, S.GlobalMaxPooling2D)):
            reduce, keep = layer.reduce, layer.keepdims
            node = _simple(lambda x, r=reduce, k=keep: E.global_pooling(x, reduce=r, axes=(0, 1), keepdims=k), inputs[0], layer.name)
            out_shape = (1, 1, shape[2]) if keep else (shape[2],)
        elif isinstance(layer, S.ZeroPadding2D):
            h, w, c = shape
            (top, bottom), (left, right) = layer.padding
            node = _simple(lambda x, p=(top, bottom, left, right): pad_hw(x, *p), inputs[0], layer.name)
            out_shape = (h + top + bottom, w + left + right, c)
        elif isinstance(layer, S.Activation):
            node = _activation_node(layer.activation, inputs[0], layer.name, softmax_axis)
            out_shape = shape
        elif isinstance(layer, S.ReLU):
            node = _simple(lambda x, l=layer: E.relu(x, max_value=l.max_value, negative_slope=l.negative_slope, threshold=l.threshold),
                           inputs[0], layer.name)
            out_shape = shape
        elif isinstance(layer, S.Flatten):
            size = int(np.prod(shape))
            # Keras flattens the spec's layout, after moving axis 1 last for channels_first.
            # Internal axes are (H, W, C) = 0, 1, 2; the spec's are (C, H, W) for a
            # channels_first model: so the usual case, a channels_first Flatten in a
            # channels_first model, reads H-W-C, the internal order, and copies nothing.
            axes = (2, 0, 1) if channels_first else (0, 1, 2)
            if layer.data_format == S.CHANNELS_FIRST:
                axes = axes[1:] + axes[:1]
            if not image or axes == (0, 1, 2):
                node = _simple(lambda x, s=size: x.reshape(s, -1), inputs[0], layer.name, alias=True)
            else:
                node = _simple(lambda x, s=size, a=(*axes, 3): np.ascontiguousarray(x.transpose(a)).reshape(s, -1), inputs[0], layer.name)
            out_shape = (size,)
        elif isinstance(layer, S.Dropout):
            node = _simple(lambda x: x, inputs[0], layer.name, alias=True)
            out_shape = shape
        elif isinstance(layer, S.Rescaling):
            scale, offset = np.float32(layer.scale), np.float32(layer.offset)
            node = _simple(lambda x, s=scale, o=offset: x * s + o, inputs[0], layer.name)
            out_shape = shape
        elif isinstance(layer, S.BatchNormalization):
            _check_channel_axis(layer, shape, channels_first)
            node = _batchnorm_node(layer, inputs[0])
            out_shape = shape
        elif isinstance(layer, S.Concatenate):
            axis = _concat_axis(layer, len(shape), channels_first)
            node = _Node(lambda arrays, prepared, overwrite, a=axis: np.concatenate(arrays, axis=a), inputs, layer.name)
            parts = [shapes[s] for s in sources]
            out_shape = tuple(sum(p[axis] for p in parts) if i == axis else shape[i] for i in range(len(shape)))
        elif type(layer) in ELEMENTWISE_MERGES:
            node = _merge_node(layer, inputs)
            out_shape = shape
        else:
            raise Unsupported(layer.type)
        node.fresh = not node.alias and not isinstance(layer, (S.Activation, S.ReLU, S.Flatten, S.Dropout))
        node.floats = sum(int(np.prod(shapes[src])) for src in sources) + int(np.prod(out_shape))
        if isinstance(layer, S.Conv2D):
            node.floats += conv.win.out_h * conv.blocks * conv.k  # the patches it gathers
        nodes.append(node)
        names[layer.name] = node.output
        shapes[layer.name] = out_shape
        if bn is not None:
            names[bn.name] = node.output
            shapes[bn.name] = out_shape
    last = spec.layers[-1].name
    back = ((3, 2, 0, 1) if channels_first else (3, 0, 1, 2)) if len(shapes[last]) == 3 else (1, 0)
    if dense_last:  # the last Dense made (N, units) already
        nodes[-1].key, nodes[-1].output = nodes[-1].output, "<out>"
    else:
        nodes.append(_simple(lambda x: np.ascontiguousarray(x.transpose(back)), names[last], "<out>"))
    nodes = _fuse_activations(nodes)
    _liveness(nodes)
    largest = max(node.floats for node in nodes)
    return Plan(tuple(nodes), "<out>", *chunk_size([node.blas_mk for node in nodes if node.blas_mk], largest),
                solo_chunk=cache_chunk(largest))


def _check_channel_axis(layer: S.BatchNormalization, shape: tuple[int, ...], channels_first: bool) -> None:
    rank = len(shape) + 1
    axis = layer.axis if layer.axis >= 0 else rank + layer.axis
    if axis != (1 if channels_first and len(shape) == 3 else rank - 1):
        raise Unsupported("BatchNormalization over a non-channel axis")


def _foldable_bn(spec: S.Model, index: int, readers, shape, channels_first: bool) -> S.BatchNormalization | None:
    """The BatchNormalization to fold into layer ``index`` (a linear conv / Dense read only by it)."""
    layer = spec.layers[index]
    if not isinstance(layer, (S.Conv2D, S.DepthwiseConv2D, S.Dense)) or layer.activation != "linear":
        return None
    reading = readers.get(layer.name, [])
    if len(reading) != 1:
        return None
    bn = spec.layers[reading[0]]
    if not isinstance(bn, S.BatchNormalization):
        return None
    out_shape = spec.infos[index].output_shape
    internal = _internal(tuple(out_shape), channels_first)
    try:
        _check_channel_axis(bn, internal, channels_first)
    except Unsupported:
        return None
    return bn


# Bytes one chunk's largest step may touch: past this the chunk falls out of the caches and a
# 32x32 ResNet conv ran 1.4x slower (64 images against 16, one thread; BENCHMARKS.md).
_CHUNK_BYTES = 8 << 20


def cache_chunk(floats_per_image: int) -> int:
    """The most images (8 to ``CHUNK``) whose largest step stays within ``_CHUNK_BYTES``."""
    return max(8, min(CHUNK, _CHUNK_BYTES // max(4 * floats_per_image, 1)))


def chunk_size(blas_mk: list[int], floats_per_image: int = 0) -> tuple[int, bool]:
    """Images per plan call, and whether chunks may run on several worker threads.

    ``blas_mk`` holds ``m * k`` of every matmul the plan makes per image column (a banded conv's
    ``(B * filters, K) @ (K, n)``, a Dense's ``(units, in) @ (in, n)``). When every call stays
    under OpenBLAS' single-thread threshold with ``n >= 8``, the chunk is the largest such ``n``
    (at most ``CHUNK``) and chunks run in parallel. Otherwise some call is large enough for
    OpenBLAS to split it over threads itself: chunks run one after another, so the two kinds of
    threads do not compete for the same cores. Either way a chunk's largest step stays within
    ``_CHUNK_BYTES`` (``floats_per_image`` floats each image); on one worker thread only that
    rule sets the chunk (``Plan.solo_chunk``).
    """
    largest = max(blas_mk, default=1)
    cap = cache_chunk(floats_per_image)
    if largest * 8 <= _BLAS_SINGLE_THREAD:
        return min(cap, _BLAS_SINGLE_THREAD // largest), True
    return cap, False


_PLANS: dict[int, tuple[weakref.ref, Plan | None]] = {}


def plan_for(spec: S.Model) -> Plan | None:
    """The cached plan of ``spec``, or None when the plan does not cover it."""
    cached = _PLANS.get(id(spec))
    if cached is not None and cached[0]() is spec:
        return cached[1]
    try:
        plan: Plan | None = _plan_for(spec)
    except Unsupported:
        plan = None
    key = id(spec)

    def forget(_ref: weakref.ref) -> None:  # the spec is gone: its id may be reused
        _PLANS.pop(key, None)

    _PLANS[key] = (weakref.ref(spec, forget), plan)
    return plan


def threads() -> int:
    """Worker threads for a batch of several chunks: ``$LAYERLAB_THREADS``, else the CPU count (at
    most 4). NumPy and BLAS release the GIL, so chunks run in parallel; results do not depend on it."""
    value = os.environ.get("LAYERLAB_THREADS", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    return max(1, min(os.cpu_count() or 1, 4))


_EXECUTOR: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, workers, pool)
_EXECUTOR_LOCK = threading.Lock()


def _executor(workers: int) -> ThreadPoolExecutor:
    """The shared worker pool; a new one after a fork (a forked child has none of the threads)."""
    from concurrent.futures import ThreadPoolExecutor  # here: keeps `import layerlab` fast

    global _EXECUTOR
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None or _EXECUTOR[:2] != (os.getpid(), workers):
            if _EXECUTOR is not None and _EXECUTOR[0] == os.getpid():
                _EXECUTOR[2].shutdown(wait=False)  # the thread count changed: let the old workers go
            _EXECUTOR = (os.getpid(), workers, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="layerlab-engine"))
        return _EXECUTOR[2]


def run_fast(spec: S.Model, weights: Weights, x: np.ndarray, chunk: int | None = None) -> np.ndarray:
    """Run ``spec`` with its plan on checked float32 ``x`` (batch first), ``chunk`` images a call.

    Chunks run on ``threads()`` worker threads where the plan allows it (see ``chunk_size``);
    each image's result is the same either way.

    Raises:
        Unsupported: the plan does not cover ``spec`` (or ``x`` is empty).
    """
    plan = plan_for(spec)
    if plan is None or len(x) == 0:
        raise Unsupported(spec.name)
    prepared = plan.prepare(weights)
    solo = threads() == 1
    chunk = chunk or (plan.solo_chunk if solo else plan.chunk)
    parts = [x[start : start + chunk] for start in range(0, len(x), chunk)]
    workers = min(threads(), len(parts)) if plan.parallel and not solo else 1
    if workers > 1:
        outs = list(_executor(workers).map(lambda part: plan(part, weights, prepared), parts))
    else:
        outs = [plan(part, weights, prepared) for part in parts]
    return outs[0] if len(outs) == 1 else np.concatenate(outs)
