"""The engine's faster path: a plan per spec, run in chunks of images on worker threads.

The plain functions of ``layerlab.engine.layers`` loop over kernel taps; a plan computes the same
layers with fewer, larger NumPy calls (``layerlab.engine.steps``). It is tested against the
plain functions and against Keras.

* Inside a plan an image is ``(H, C, W, batch)``, the batch axis LAST (why: see
  ``layerlab.engine.steps``); a vector stays ``(batch, features)``, so a Dense is one
  ``(N, in) @ (in, units)`` with the kernel as Keras stores it. Either data format is converted
  once at the start and back at the end; Flatten copies into the order Keras flattens in.
  Two pairs of steps hand each other another order that only they read: a conv read only by a
  2x2 max pool may write its columns in two phases, or its window cells as four blocks
  (``_phase_for_pools``), and a conv read only by pools and Dropouts on the way to a Flatten
  may write ``(H, W, batch, C)``, its products transposed (``_transpose_tails``).
* A plan is a graph: each node reads named values (layer outputs, ``'input'``) and makes one.
  A value is overwritten in place (ReLU, the bias, a merge) only when the plan made it and
  nothing reads it later; a value nothing reads any more is dropped.
* A BatchNormalization read only from a linear Conv2D / DepthwiseConv2D / Dense that nothing
  else reads is folded into that layer's weights (scale and shift in float64, rounded once).
* A conv read only by an unpadded conv hands its output on with a channel of ones after it: the
  reader's bias, and a linear writer's, is a column of the reader's matrix instead of a pass over
  the output (``_ConvWork``).
* Every value the plan makes lives in a buffer of the plan's own (one set per worker thread,
  kept between calls): a value's buffer is handed to a later value once nothing reads it any
  more. Fresh arrays for every step cost page faults that took up to two thirds of a small
  model's call (ad01, batch 64: 1.5 ms a call against 0.44 ms with glibc's malloc told to keep
  the memory it frees).
  What a call returns is always a new array.
* Weights are prepared (kernel matrices, folded BNs) once per set of weights: ``Plan.prepare``
  keeps a copy of the bytes it prepared from and compares (an array edited in place is caught).
  A Dense uses its float32 kernel as it is (a BN after it is a scale and shift of its output),
  so the largest arrays of a dense network need no copy and no comparison: a 640-128-...-640
  autoencoder spent a fifth of its batch-64 call comparing 1 MB of kernels.
* A batch runs in chunks on ``threads()`` worker threads (NumPy and BLAS release the GIL).
  BLAS calls stay on one thread: held there with threadpoolctl while a plan runs when it is
  installed (``layerlab[fast]``), else kept under OpenBLAS' threading threshold
  (m * n * k <= 65536 * 4) by the chunk size where the plan allows it. On a busy machine
  OpenBLAS threads wait for each other and a call can run five times slower.

Specs a plan does not cover (Reshape, 1-D layers, mixed data formats, a BatchNormalization over
a non-channel axis, ...) make ``plan_for`` return None; ``engine.run`` then uses the plain path.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import os
import sys
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from layerlab import geometry
from layerlab import spec as S
from layerlab.engine import elementwise as E
from layerlab.engine.steps import (
    IN_PLACE_ACTIVATIONS,
    Conv,
    Depthwise,
    Pool,
    activate,
    blas_libraries,
    bound,
    pad_hw,
    plan_conv,
    relu_into,
)
from layerlab.layers import LAYER_TYPES
from layerlab.layers.merge import ELEMENTWISE as ELEMENTWISE_MERGES
from layerlab.layers.normalization import layer_scale_shift, normalization_spread
from layerlab.registry import ENGINE_FAST

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

Weights = Mapping[str, Mapping[str, np.ndarray]]
Prepared = Mapping[str, Any]

# OpenBLAS runs a gemm on one thread when m * n * k is at most this (interface/gemm.c).
_BLAS_SINGLE_THREAD = 65536 * 4
CHUNK = 128  # images per plan call at most; fewer where a BLAS call would pass the threshold


class Unsupported(Exception):
    """The fast plan does not cover this spec; use the plain path."""


ENGINE_FAST.register((
    S.Conv2D, S.DepthwiseConv2D, S.MaxPooling2D, S.AveragePooling2D, S.GlobalAveragePooling2D, S.GlobalMaxPooling2D,
    S.ZeroPadding2D, S.Activation, S.ReLU, S.Dense, S.Flatten, S.Dropout, S.Rescaling, S.BatchNormalization, S.Normalization,
    S.Concatenate, S.Reshape, *ELEMENTWISE_MERGES,
), note="images or vectors of one data_format, graphs too")
ENGINE_FAST.decline(tuple(cls for cls in LAYER_TYPES.values() if cls not in ENGINE_FAST.handlers),
                    "the engine runs it on its plain path (same results, per-layer NumPy calls)")


@dataclass
class _Node:
    """One plan step: ``run(inputs, prepared, overwrite, space)`` on the values named ``inputs``.

    ``alias``: the output is the first input itself (a view). ``in_place``: the inputs the step may
    write its result into, in order of preference; ``overwrite`` marks the one it is given (at
    most one). ``prepare(weights)``: this step's weights in the form it computes with (kept under
    ``key``); ``arrays(weights)``: the weight arrays that prepared form depends on. ``space``:
    the buffers of the calling thread (``_Space``), set to this node's slot.
    """

    run: Callable[..., np.ndarray]
    inputs: tuple[str, ...]
    output: str
    alias: bool = False
    in_place: tuple[int, ...] = ()
    prepare: Callable[[Weights], Any] | None = None
    arrays: tuple[tuple[str, str], ...] = ()  # (layer, weight) names prepare() reads
    live: tuple[tuple[str, str], ...] = ()  # of those, the ones it keeps as they are when float32
    blas_mk: int = 0  # m * k of the node's largest matmul per image column (see chunk_size)
    floats: int = 0  # floats the node touches per image (inputs, output, scratch): see chunk_size
    view_floats: int = 0  # a views-form conv: floats of padded input its products read per image
    fresh: bool = False  # the output is a buffer the plan made (never a view of the model input)
    activation: tuple[str, int] | None = None  # an Activation node: (name, softmax axis), for fusing
    key: str = ""  # where prepare() keeps this node's weights (its layer's output name)
    overwrite: tuple[bool, ...] = ()
    last_reads: tuple[str, ...] = ()  # values this node reads for the last time (dropped after it)
    slot: int | None = None  # the buffer its output goes into (None: a new array)
    layer: str = ""  # the spec layer it runs (an activation fused in or a BN folded in aside)
    work: Any = None  # a conv's _ConvWork (see _extend_inputs)
    merge: str = ""  # a merge node's operation ('add', ...)


class _Space:
    """One thread's buffers for one plan: ``out`` for the running node's slot, ``tmp`` for scratch.

    Buffers are flat float32 arrays grown to the largest value they held, so after the first call
    a plan allocates nothing big.
    """

    def __init__(self) -> None:
        self.store: dict[Any, np.ndarray] = {}
        self.slot: int | None = None
        self.blocks: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self.kept: dict[Any, tuple] = {}  # a step's own buffers and blocks for the last batch size (_DenseWork)

    def _take(self, key: Any, shape: tuple[int, ...]) -> np.ndarray:
        size = math.prod(shape)
        buffer = self.store.get(key)
        if buffer is None or buffer.size < size:
            buffer = self.store[key] = np.empty(size, np.float32)
        return buffer[:size].reshape(shape)

    def out(self, shape: tuple[int, ...]) -> np.ndarray:
        """The running node's output buffer, ``shape`` float32 (uninitialised)."""
        return np.empty(shape, np.float32) if self.slot is None else self._take(self.slot, shape)

    def tmp(self, index: int, shape: tuple[int, ...]) -> np.ndarray:
        """Scratch buffer ``index``: valid until the running node returns."""
        return self._take(("tmp", index), shape)

    def block(self, values: np.ndarray, shape: tuple[int, ...], column: bool = False) -> np.ndarray:
        """``values (k,)`` repeated into a read-only ``shape`` array: along the last axis (``(n, k)``)
        or, with ``column``, along the second (``(k, m)``). Made once per array and shape and kept
        while ``values`` is that very array. So ``values`` must be an array ``prepare`` made, never
        one of the caller's weights (edited in place, it would still be the same array); prepare
        makes new ones whenever the weights change. NumPy adds and multiplies a whole block 1.8x
        faster than it broadcasts a short row (64 x 128 floats: 2.0 us against 3.7)."""
        key = (id(values), shape, column)
        kept = self.blocks.get(key)
        if kept is not None and kept[0] is values:
            return kept[1]
        if len(self.blocks) >= 256:  # blocks of weights gone since
            self.blocks.clear()
        block = np.empty(shape, np.float32)
        np.copyto(block, values[:, None] if column else values)
        block.flags.writeable = False
        self.blocks[key] = (values, block)
        return block


class _Snapshot:
    """What a set of weights was prepared from: the ``arrays`` (a copy of their bytes, compared in
    one pass: no hash) and the ``live`` arrays (kept by identity: they are used as they are), and
    the objects ``Plan.prepare`` fetched to find them (``fetched``)."""

    def __init__(self, arrays: list[np.ndarray], live: list[np.ndarray], fetched: list):
        self.arrays, self.live, self.fetched = arrays, live, fetched
        # Only arrays are themselves what prepare() read: a list, say, is converted anew each call.
        self.by_identity = all(type(a) is np.ndarray for a in fetched)
        self.shapes = [a.shape for a in arrays]
        self.layout = [(a.dtype.str, a.shape) for a in arrays]
        size = sum(a.nbytes for a in arrays)
        self.copy = np.zeros(-(-size // 8), np.uint64)  # whole words: compared 8 bytes at a time
        self.scratch = np.zeros_like(self.copy)
        self.equal = np.empty(self.copy.shape, bool)  # array_equal without its new arrays: 5.6 against 10.7 us for 190 KB
        # Flat float32 views of the very arrays: an edit in place shows through them.
        plain = all(a.dtype == np.float32 and a.flags.c_contiguous for a in arrays)
        self.views = [a.reshape(-1) for a in arrays] if plain and arrays else None
        self.floats = sum(a.size for a in arrays)
        self._gather(arrays, self.copy)

    def _gather(self, arrays: list[np.ndarray], into: np.ndarray) -> None:
        if self.views is not None and arrays is self.arrays:
            np.concatenate(self.views, out=into.view(np.float32)[: self.floats])
            return
        flat, start = into.view(np.uint8), 0
        for a in arrays:
            flat[start : start + a.nbytes] = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
            start += a.nbytes

    def same_objects(self, fetched: list) -> bool:
        """Whether weights that ``fetched`` these objects are the ones of the snapshot because
        they are the very arrays, with their shapes and bytes unchanged (the usual case: checked
        before anything else is looked at)."""
        if not (self.by_identity and _all_is(fetched, self.fetched)):
            return False
        if list(map(_SHAPE, self.arrays)) != self.shapes:  # reshaped in place
            return False
        self._gather(self.arrays, self.scratch)
        return self._unchanged()

    def same_values(self, arrays: list[np.ndarray], live: list[np.ndarray]) -> bool:
        """Whether weights with ``arrays`` to compare and ``live`` to keep (other objects than the
        snapshot's) are the snapshot's: the same live arrays, and arrays of the same dtypes,
        shapes and bytes."""
        if not _all_is(live, self.live) or [(a.dtype.str, a.shape) for a in arrays] != self.layout:
            return False
        self._gather(arrays, self.scratch)
        return self._unchanged()

    def _unchanged(self) -> bool:
        """Whether the scratch gathered holds the snapshot's bytes."""
        return bool(np.equal(self.scratch, self.copy, out=self.equal).all())


_SHAPE = operator.attrgetter("shape")


def _all_is(these: list, those: list) -> bool:
    """Whether two lists hold the very same objects, in order."""
    return len(these) == len(those) and all(map(operator.is_, these, those))


@dataclass
class Plan:
    """Nodes that map a batch-first ``(n, *input_shape)`` float32 array to the model output."""

    nodes: tuple[_Node, ...]
    output: str
    chunk: int  # images per call at most (see chunk_size)
    parallel: bool  # chunks may run on several worker threads (see chunk_size)
    solo_chunk: int = CHUNK  # images per call on one worker thread (the cache rule alone)
    macs: int = 0  # multiply-accumulates per image (the spec's count)
    _cache: list = field(default_factory=list, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _local: threading.local = field(default_factory=threading.local, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.live = tuple(key for node in self.nodes for key in node.live)
        self.fixed = tuple(key for node in self.nodes for key in node.arrays if key not in node.live)
        self.keys = self.live + self.fixed

    def prepare(self, weights: Weights) -> dict[str, Any]:
        """Every node's prepared weights, recomputed only when the weight bytes change (an array
        edited in place is caught too)."""
        try:
            fetched = [weights[layer][name] for layer, name in self.keys]
        except KeyError:  # prepare() below says what is missing, and where
            fetched = []
        with self._lock:
            if self._cache and self._cache[0].same_objects(fetched):
                return self._cache[1]
        held, arrays = fetched[: len(self.live)], fetched[len(self.live) :]
        live = [a for a in held if type(a) is np.ndarray and a.dtype == np.float32]
        if len(live) != len(held):  # converted to float32 by prepare(): a copy, compared by bytes
            arrays += [a for a in held if not (type(a) is np.ndarray and a.dtype == np.float32)]
        arrays = [a if type(a) is np.ndarray else np.asarray(a) for a in arrays]
        with self._lock:
            if self._cache and self._cache[0].same_values(arrays, live):
                return self._cache[1]
        prepared = {node.key or node.output: node.prepare(weights) for node in self.nodes if node.prepare}
        snapshot = _Snapshot(arrays, live, fetched)
        with self._lock:
            self._cache[:] = [snapshot, prepared]
        return prepared

    def __call__(self, x: np.ndarray, weights: Weights, prepared: Prepared | None = None) -> np.ndarray:
        prepared = self.prepare(weights) if prepared is None else prepared
        space = getattr(self._local, "space", None)
        if space is None:
            space = self._local.space = _Space()
        values = {"input": x}
        for node in self.nodes:
            space.slot = node.slot
            values[node.output] = node.run([values[name] for name in node.inputs], prepared, node.overwrite, space)
            for name in node.last_reads:
                values.pop(name, None)
        return values[self.output]


def _read_counts(nodes: list[_Node]) -> dict[str, int]:
    """How many times the nodes read each value."""
    readers: dict[str, int] = {}
    for node in nodes:
        for name in node.inputs:
            readers[name] = readers.get(name, 0) + 1
    return readers


def _fuse_activations(nodes: list[_Node]) -> list[_Node]:
    """An Activation read from a node that made its own buffer, and read by nothing else, runs
    inside that node (in place, while the output is still in the cache)."""
    readers = _read_counts(nodes)
    out: list[_Node] = []
    for node in nodes:
        before = out[-1] if out else None
        if (node.activation is not None and before is not None and before.fresh and node.inputs == (before.output,)
                and readers[before.output] == 1):
            name, axis = node.activation
            run = before.run
            if isinstance(before.work, (_ConvWork, _DenseWork)):  # the step runs it (a conv on its output's interior)
                before.work.fused.append((name, axis))
            else:
                before.run = lambda inputs, prepared, overwrite, space, run=run, name=name, axis=axis: activate(
                    run(inputs, prepared, overwrite, space), name, True, axis)
            before.key = before.key or before.output
            before.output = node.output
            continue
        out.append(node)
    return out


def _liveness(nodes: list[_Node]) -> None:
    """Set each node's ``overwrite`` flags, ``last_reads`` and ``slot``.

    Values share a buffer when one is an alias of the other or was computed in place into it.
    An input may be overwritten when the plan made its buffer, no later node reads that buffer
    under any name, and the node does not read it twice. A node that makes a new buffer gets a
    slot no live value holds; a slot is free again once nothing reads its buffer. The last node's
    output gets none (what the plan returns is never one of its buffers).
    """
    root = {"input": "input"}
    made = {"input": False}
    last_read: dict[str, int] = {}
    for index, node in enumerate(nodes):
        for name in node.inputs:
            last_read[name] = index
    slot_of: dict[str, int] = {}  # buffer (root name) -> slot
    free: list[int] = []
    slots = 0
    for index, node in enumerate(nodes):
        flags = []
        for name in node.inputs:
            buffer = root[name]
            later = any(last_read.get(other, -1) > index for other, r in root.items() if r == buffer)
            twice = sum(root[other] == buffer for other in node.inputs) > 1
            flags.append(made[buffer] and not later and not twice)
        target = next((i for i in node.in_place if flags[i]), None)
        node.overwrite = tuple(i == target for i in range(len(node.inputs)))
        node.last_reads = tuple(name for name in dict.fromkeys(node.inputs) if last_read[name] == index)
        if node.alias:
            root[node.output] = root[node.inputs[0]]
        elif target is not None:
            root[node.output] = root[node.inputs[target]]
        else:
            root[node.output] = node.output
            made[node.output] = True
            if index < len(nodes) - 1:
                if not free:
                    free.append(slots)
                    slots += 1
                node.slot = slot_of[node.output] = free.pop()
        for buffer, slot in list(slot_of.items()):
            if all(last_read.get(name, -1) <= index for name, r in root.items() if r == buffer):
                del slot_of[buffer]
                free.append(slot)


# -- steps ---------------------------------------------------------------------------------------

def _folded(layer, bn: S.BatchNormalization | None, weights: Weights, kernel_key: str,
            out_axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray | None]:
    """(kernel, bias) of ``layer`` with ``bn`` folded in: kernel * scale along ``out_axes`` (the
    output channel, in C order over them), bias * scale + shift."""
    params = weights[layer.name]
    kernel = np.asarray(params[kernel_key], np.float32)
    bias = np.array(params["bias"], np.float32) if layer.use_bias else None  # a copy: see _Space.block
    if bn is None:
        return kernel, bias
    scale, shift = layer_scale_shift(bn, weights[bn.name], dtype=np.float64)
    shape = [kernel.shape[a] if a in out_axes else 1 for a in range(kernel.ndim)]
    folded = (kernel.astype(np.float64) * scale.reshape(shape)).astype(np.float32)
    base = bias.astype(np.float64) if bias is not None else 0.0
    return folded, (base * scale + shift).astype(np.float32)


def _weight_names(*layers) -> tuple[tuple[str, str], ...]:
    """(layer, weight) names prepare() reads from Conv2D / DepthwiseConv2D / Dense / BN layers."""
    names = []
    for layer in layers:
        if isinstance(layer, S.BatchNormalization):
            own = ["moving_mean", "moving_variance"] + (["gamma"] if layer.scale else []) + (["beta"] if layer.center else [])
        elif layer is not None:
            own = ["kernel"] + (["bias"] if layer.use_bias else [])
        else:
            own = []
        names += [(layer.name, name) for name in own]
    return tuple(names)


class _ConvWork:
    """A Conv2D or DepthwiseConv2D node's work (+ folded BN, + a fused activation) by its step
    (``layerlab.engine.steps``).

    A conv whose output only an unpadded conv reads writes it with one more channel after its
    own, all ones (``_extend_inputs``); the reader multiplies that channel by its bias, so it
    makes no bias pass. When the writer is linear, its bias goes into that column too
    (``feeder``): ``K (x + b) = K x + K b``, summed once in float64, so the writer makes none
    either (the DS-CNN's depthwise-pointwise pairs: 4% faster). Two linear convs read only by
    one Add (a ResNet block and its shortcut) add both biases in one pass (``addend``).
    """

    def __init__(self, step, bn: S.BatchNormalization | None, key: str):
        self.step, self.bn, self.key = step, bn, key
        self.fused: list[tuple[str, int]] = []  # Activations run on the output, in order: (name, softmax axis)
        self.ones = False  # writes its output with a channel of ones after it
        self.deferred = False  # the reader adds this conv's bias
        self.feeder: _ConvWork | None = None  # the conv whose bias this one adds
        self.addend: _ConvWork | None = None  # the conv beside it in an Add, whose bias this one adds

    def folded(self, weights: Weights) -> tuple[np.ndarray, np.ndarray | None]:
        layer = self.step.layer
        depthwise = isinstance(layer, S.DepthwiseConv2D)  # kernel (kh, kw, C, M): output channel c * M + m
        return _folded(layer, self.bn, weights, "kernel", (2, 3) if depthwise else (3,))

    @property
    def extended(self) -> bool:
        """Its input comes with a channel of ones, which carries its bias."""
        return getattr(self.step, "extended", False)  # a Conv step's field; depthwise never

    def prepare(self, weights: Weights):
        kernel, bias = self.folded(weights)
        if self.extended:
            column = bias.astype(np.float64) if bias is not None else np.zeros(kernel.shape[3])
            fed = self.feeder.folded(weights)[1] if self.feeder is not None else None
            if fed is not None:  # the same bias under every tap (no padding reads a zero instead)
                column = column + np.einsum("hwcf,c->f", kernel.astype(np.float64), fed.astype(np.float64))
            return self.step.matrices(kernel, column.astype(np.float32)), None
        if self.deferred:
            return self.step.matrices(kernel), None
        summed = self.addend.folded(weights)[1] if self.addend is not None else None
        if summed is not None:  # the other input of an Add: both biases in one pass
            bias = (summed.astype(np.float64) + (bias if bias is not None else 0.0)).astype(np.float32)
        return self.step.matrices(kernel), bias

    def out_hwc(self) -> tuple[int, int, int]:
        win, layer = self.step.win, self.step.layer
        channels = layer.filters if isinstance(layer, S.Conv2D) else self.step.channels * layer.depth_multiplier
        return win.out_h, win.out_w, channels

    def run(self, inputs, prepared, overwrite, space):
        matrices, bias = prepared[self.key]
        if not self.ones:
            out = self.step(inputs[0], matrices, bias, space)
            for name, axis in self.fused:
                out = activate(out, name, True, axis)
            return out
        h, w, c = self.out_hwc()
        whole = space.out((h, c + 1, w, inputs[0].shape[-1]))
        whole[:, c] = 1
        out = self.step(inputs[0], matrices, bias, space, into=whole[:, :c])
        for name, axis in self.fused:  # in place (see _extend_inputs)
            activate(out, name, True, axis)
        return whole


def _conv_node(conv, bn, source: str, output: str) -> _Node:
    """Conv2D or DepthwiseConv2D (+ folded BN) by its step ``conv`` (``layerlab.engine.steps``)."""
    work = _ConvWork(conv, bn, output)
    return _Node(work.run, (source,), output, prepare=work.prepare, arrays=_weight_names(conv.layer, bn), work=work)


_WRITES_IN_PLACE = {"linear", *IN_PLACE_ACTIVATIONS}


class _PoolWork:
    """A pooling node's work: its step, and the bias and activations of the conv before it that
    it runs on the pooled cells (``_pool_finishes_convs``)."""

    def __init__(self, pool: Pool):
        self.pool = pool
        self.bias_of = ""  # the prepared key of the conv whose bias it adds
        self.activations: tuple[str, ...] = ()

    def run(self, inputs, prepared, overwrite, space):
        bias = prepared[self.bias_of][1] if self.bias_of else None
        return self.pool(inputs[0], space, bias, self.activations)


_MAX_COMMUTES = {"linear", "relu"}  # max(f(a_i)) == f(max(a_i)) bit for bit


def _pool_finishes_convs(nodes: list[_Node]) -> None:
    """A Conv2D whose output only a max pool reads, with no activation but ReLUs (its own and
    Activations fused into it), leaves its bias and those ReLUs to the pool (see steps.Pool):
    keras224's 28 x 28 x 64 conv then makes no full-size pass after its products."""
    readers = _read_counts(nodes)
    read_by = {name: node for node in nodes for name in node.inputs}
    for node in nodes:
        work, step = node.work, getattr(node.work, "step", None)
        if not isinstance(step, Conv) or not step.add_bias or readers.get(node.output) != 1:
            continue
        pool = read_by[node.output].work
        names = (step.layer.activation, *(name for name, _ in work.fused))
        if not isinstance(pool, _PoolWork) or pool.pool.average or not set(names) <= _MAX_COMMUTES:
            continue
        work.step = dataclasses.replace(step, add_bias=False)
        work.fused = []
        pool.bias_of = node.key or node.output
        pool.activations = tuple(name for name in names if name != "linear")


# A conv whose products make at most this many multiply-adds an output writes an output that is
# mostly memory traffic: in quarters (steps.Conv._quarters), a 2x2 max pool's maxima run on long
# runs, and the four products (each a quarter of the columns) cost little more than one. keras224's
# first conv (9 terms): 9.5 against 13.2 us an image with its pool; its second (576 terms): 50.3
# against 48.7 (the products alone 4-5% slower in quarters).
_QUARTER_TERMS = 32


def _phase_for_pools(nodes: list[_Node]) -> None:
    """A conv in the unfold form (no width stride) read only by a 2x2 pool two apart writes its
    output columns in two phases, even ones then odd ones, which that pool reads as contiguous
    runs (see steps.Pool): the same values, in another order only this pair sees. A conv of few
    terms whose bias the pool adds writes its rows in two phases too (``_QUARTER_TERMS``)."""
    readers = _read_counts(nodes)
    read_by = {name: node for node in nodes for name in node.inputs}
    for node in nodes:
        step = getattr(node.work, "step", None)
        if not isinstance(step, Conv) or not step.unfold or step.win.stride_w != 1 or readers.get(node.output) != 1:
            continue
        pool = read_by[node.output].work
        if isinstance(pool, _PoolWork) and pool.pool.phased_fits:
            win = step.win
            # Few multiply-adds an output and the pool adding the bias: its rows in two phases too
            quartered = not step.add_bias and win.kernel_h * win.kernel_w * step.channels <= _QUARTER_TERMS
            node.work.step = dataclasses.replace(step, phased=True, quartered=quartered)
            pool.pool.phased, pool.pool.quartered = True, quartered


# A conv in the views form on at least 32 channels into 32 to 64 filters multiplies each kernel
# column as X^T W^T faster than as W X (OpenBLAS' SkylakeX kernels on a Zen 5, 16 images, one
# thread: 0.75-0.78x the time on 14 x 14 maps, 0.70-0.98x from 8 x 8 to 32 x 32 with 32 to 128
# channels; fewer channels or filters, or 128 filters, 0.9-1.4x), but writes its output as
# (rows, columns, images, channels), which pools and a Flatten read as cheaply and the other
# steps do not: copied back, the transpose cost more than the products saved.
_TRANSPOSED_CHANNELS = 32
_TRANSPOSED_FILTERS = (32, 64)


def _transpose_tails(nodes: list[_Node], layers: dict[str, Any]) -> None:
    """A conv of ``_TRANSPOSED_CHANNELS`` and ``_TRANSPOSED_FILTERS`` in the views form, with no
    activation but ones that run in place, whose output only pools (none phased) and Dropouts
    read on the way to a Flatten (keras224's second conv, max pool, Flatten), computes its
    products transposed (steps.Conv.transposed) and hands that layout down the chain."""
    readers = _read_counts(nodes)
    read_by = {name: node for node in nodes for name in node.inputs}
    for node in nodes:
        work, step = node.work, getattr(node.work, "step", None)
        if not isinstance(step, Conv) or step.im2col or step.winograd or step.phased:
            continue
        low, high = _TRANSPOSED_FILTERS
        if step.channels < _TRANSPOSED_CHANNELS or not low <= step.layer.filters <= high:
            continue
        if not {step.layer.activation, *(name for name, _ in work.fused)} <= _WRITES_IN_PLACE:
            continue
        chain, value = [], node.output
        while readers.get(value) == 1:
            reader = read_by[value]
            pool = isinstance(reader.work, _PoolWork) and not reader.work.pool.phased
            if not (pool or isinstance(reader.work, _FlattenWork) or isinstance(layers.get(reader.layer), S.Dropout)):
                break
            chain.append(reader)
            if isinstance(reader.work, _FlattenWork):
                break
            value = reader.output
        if not chain or not isinstance(chain[-1].work, _FlattenWork):
            continue
        work.step = dataclasses.replace(step, transposed=True)
        for reader in chain:
            if isinstance(reader.work, _PoolWork):
                reader.work.pool.transposed = True
            elif isinstance(reader.work, _FlattenWork):
                reader.work.transposed = True


def _add_biases_once(nodes: list[_Node]) -> None:
    """For an Add of two linear convs that only it reads, the second conv adds both biases (the
    first makes no bias pass): ``(A x + a) + (B y + b) = A x + (B y + (a + b))``."""
    readers = _read_counts(nodes)
    made_by = {node.output: node for node in nodes}
    for node in nodes:
        if node.merge != "add" or len(node.inputs) != 2:
            continue
        works = [getattr(made_by.get(name), "work", None) for name in node.inputs]
        if not all(isinstance(w, _ConvWork) and readers[name] == 1 for w, name in zip(works, node.inputs, strict=True)):
            continue
        # Read by this Add alone, neither writes ones nor has a pool add its bias; an extended
        # conv's bias is in its matrix, where the other's could not be added.
        if any(w.fused or w.step.layer.activation != "linear" or w.extended for w in works):
            continue
        first, second = works
        first.deferred, second.addend = True, first


def _extend_inputs(nodes: list[_Node]) -> None:
    """Let each conv whose output only a conv reads write it with a channel of ones for that
    conv's bias (see ``_ConvWork``). The reader: tap-column views (not im2col), no padding, no
    width stride, its own bias; the writer: activations that run in place."""
    readers = _read_counts(nodes)
    made_by = {node.output: node for node in nodes}
    for node in nodes:
        work, step = node.work, getattr(node.work, "step", None)
        if not isinstance(step, Conv) or step.im2col or step.winograd or step.win.stride_w > 1 or not step.add_bias:
            continue
        win = step.win
        if win.pad_top or win.pad_bottom or win.pad_left or win.pad_right:
            # Writing into the interior of the reader's padded input would save its padded copy
            # too, but NumPy runs a ufunc there 3-6x slower than on a contiguous array (32 x 16 x
            # 512 floats: 92 us against 14-29): the writer's bias and ReLU cost more than the copy.
            continue
        producer = made_by.get(node.inputs[0])
        writer = producer.work if producer is not None else None
        if not isinstance(writer, _ConvWork) or readers[node.inputs[0]] != 1 or writer.ones:
            continue
        if isinstance(writer.step, Conv) and not writer.step.add_bias:
            continue
        activations = {writer.step.layer.activation, *(name for name, _ in writer.fused)}
        if not activations <= _WRITES_IN_PLACE:  # a softmax, say, returns a new array
            continue
        writer.ones = True
        work.step = dataclasses.replace(step, extended=True)
        if not writer.fused and writer.step.layer.activation == "linear":
            writer.deferred, work.feeder = True, writer


class _DenseKept(NamedTuple):
    """What a Dense step keeps for one batch size in one thread's buffer slot (``_DenseWork``)."""

    prepared: tuple  # the prepared weights it was made for: (kernel, scale or None, shift or None)
    n: int  # the batch size
    slot: int | None  # the buffer slot
    out: np.ndarray | None  # the output buffer (None: the model's output, a new array each call)
    scale: np.ndarray | None  # a (n, units) block of the BN scale
    shift: np.ndarray | None  # a (n, units) block of the bias and BN shift
    relu: np.ndarray | None  # the bound of a first activation that is a ReLU, as a block
    rest: list  # the activations after that: (name, softmax axis)


class _DenseWork:
    """Dense (+ BN, + a fused activation) on ``(N, in)``: ``(N, in) @ (in, units)`` into the
    node's buffer with the kernel as the weights hold it; a BN after it scales and shifts the
    output. Each thread keeps, per batch size, the output buffer and the constant blocks it adds,
    multiplies and bounds with (``_Space.kept``), so a call is its product and its passes: ad01's
    128-wide layers spent 4 of 8 us beside the product finding them."""

    def __init__(self, layer: S.Dense, bn, output: str):
        self.layer, self.bn, self.key = layer, bn, output
        self.fused: list[tuple[str, int]] = []  # activations after it (see _fuse_activations)

    def prepare(self, weights):
        layer, bn = self.layer, self.bn
        kernel = np.asarray(weights[layer.name]["kernel"], np.float32)  # the array itself when it is float32
        bias = np.array(weights[layer.name]["bias"], np.float32) if layer.use_bias else None  # a copy: see _Space.block
        if bn is None:
            return kernel, None, bias
        scale, shift = layer_scale_shift(bn, weights[bn.name], dtype=np.float64)
        base = bias.astype(np.float64) if bias is not None else 0.0
        return kernel, scale.astype(np.float32), (base * scale + shift).astype(np.float32)

    def run(self, inputs, prepared, overwrite, space):
        mine = prepared[self.key]
        x = inputs[0]
        n = x.shape[0]
        kept = space.kept.get(self)
        if kept is None or kept[0] is not mine or kept[1] != n or kept[2] != space.slot:
            kept = self._keep(mine, n, space)
        _, _, _, out, scale, shift, relu, rest = kept
        if out is None:  # the model's output: a new array each call
            out = np.empty((n, mine[0].shape[1]), np.float32)
        np.matmul(x, mine[0], out=out)  # whole: see steps._SMALL_PRODUCT
        if scale is not None:
            np.multiply(out, scale, out=out)
        if shift is not None:
            np.add(out, shift, out=out)
        if relu is not None:
            np.maximum(out, relu, out=out)
        for name, axis in rest:
            out = activate(out, name, True, axis)
        return out

    def _keep(self, mine, n: int, space) -> _DenseKept:
        """What ``run`` keeps for batch size ``n`` in this thread's buffer slot (``_DenseKept``)."""
        kernel, scale, shift = mine
        shape = (n, kernel.shape[1])
        out = None if space.slot is None else space.out(shape)
        blocks = [space.block(v, shape) if v is not None else None for v in (scale, shift)]
        acts = [(name, axis) for name, axis in [(self.layer.activation, 1), *self.fused] if name != "linear"]
        relu = bound(shape, 0.0) if acts[:1] and acts[0][0] == "relu" else None
        kept = _DenseKept(mine, n, space.slot, out, *blocks, relu, acts[1:] if relu is not None else acts)
        space.kept[self] = kept
        return kept


def _dense_node(layer: S.Dense, bn, source: str, output: str) -> _Node:
    """Dense (+ BN) on ``(N, in)`` by a ``_DenseWork``."""
    work = _DenseWork(layer, bn, output)
    return _Node(work.run, (source,), output, prepare=work.prepare, arrays=_weight_names(layer, bn),
                 live=((layer.name, "kernel"),), work=work)


def _batchnorm_node(layer: S.BatchNormalization, source: str, image: bool) -> _Node:
    def prepare(weights):
        scale, shift = layer_scale_shift(layer, weights[layer.name])
        if image:  # (H, C, W, N): channels are axis 1
            return scale[:, None, None], shift[:, None, None]
        return scale, shift  # (N, F)

    def run(inputs, prepared, overwrite, space):
        scale, shift = prepared[layer.name]
        x = inputs[0]
        out = x if overwrite[0] else space.out(x.shape)
        np.multiply(x, scale, out=out)
        out += shift
        return out

    return _Node(run, (source,), layer.name, in_place=(0,), prepare=prepare, arrays=_weight_names(layer))


def _normalization_node(layer: S.Normalization, source: str, image: bool) -> _Node:
    """Normalization as Keras computes it, ``(x - mean) / spread`` (or ``mean + x * spread``),
    in place when the plan may overwrite its input; the statistics shaped for the layout."""
    def prepare(weights):
        mean, variance = layer.statistics(weights.get(layer.name, {}))
        spread = normalization_spread(variance)
        return (mean[:, None, None], spread[:, None, None]) if image else (mean, spread)  # (H, C, W, N) or (N, F)

    def run(inputs, prepared, overwrite, space):
        mean, spread = prepared[layer.name]
        x = inputs[0]
        out = x if overwrite[0] else space.out(x.shape)
        if layer.invert:
            np.multiply(x, spread, out=out)
            return np.add(mean, out, out=out)
        np.subtract(x, mean, out=out)
        return np.divide(out, spread, out=out)

    arrays = () if layer.mean is not None else ((layer.name, "mean"), (layer.name, "variance"))
    return _Node(run, (source,), layer.name, in_place=(0,), prepare=prepare, arrays=arrays)


def _merge_node(layer, sources: tuple[str, ...], whole: tuple[bool, ...] | None = None) -> _Node:
    """An element-wise merge, in place in an input the plan may overwrite. ``whole``: where the
    inputs' shapes differ (a size 1 on some axis, e.g. a squeeze-and-excite gate), which inputs
    have the result's shape: only those may hold it (``in_place``), else it goes to a new buffer."""
    broadcast = whole is not None
    operation = layer.operation
    fold = {"add": np.add, "average": np.add, "multiply": np.multiply, "maximum": np.maximum, "minimum": np.minimum,
            "subtract": np.subtract}[operation]

    def fresh(inputs, space) -> np.ndarray:
        return space.out(np.broadcast_shapes(*(a.shape for a in inputs)) if broadcast else inputs[0].shape)

    def run(inputs, prepared, overwrite, space):
        if operation == "subtract":
            return np.subtract(inputs[0], inputs[1], out=inputs[0] if overwrite[0] else fresh(inputs, space))
        # Keras folds left to right; addition and the others are commutative, so either of two
        # inputs may hold the running result: x0 + x1 == x1 + x0 bit for bit.
        if len(inputs) == 2 and overwrite[1]:
            out = fold(inputs[1], inputs[0], out=inputs[1])
        else:
            out = fold(inputs[0], inputs[1], out=inputs[0] if overwrite[0] else fresh(inputs, space))
        for other in inputs[2:]:
            fold(out, other, out=out)
        if operation == "average":
            out /= np.float32(len(inputs))
        return out

    two_way = len(sources) == 2 and operation != "subtract"
    in_place = (0, 1) if two_way else (0,)
    if broadcast:
        in_place = tuple(i for i in in_place if whole[i])
    return _Node(run, sources, layer.name, in_place=in_place, merge=operation)


def _relu_node(layer: S.ReLU, source: str) -> _Node:
    """ReLU with max_value (ReLU6) or without, in place when the plan may overwrite its input:
    ``min(max(x, 0), max_value)``, what Keras' ``clip(relu(x), 0, max_value)`` is."""
    def run(inputs, prepared, overwrite, space):
        x = inputs[0]
        out = x if overwrite[0] else space.out(x.shape)
        relu_into(x, out, layer.max_value)
        return out

    return _Node(run, (source,), layer.name, in_place=(0,))


def _simple(fn: Callable[[np.ndarray], np.ndarray], source: str, output: str, alias: bool = False) -> _Node:
    return _Node(lambda inputs, prepared, overwrite, space: fn(inputs[0]), (source,), output, alias=alias)


def _activation_node(name: str, source: str, output: str, axis: int) -> _Node:
    return _Node(lambda inputs, prepared, overwrite, space: activate(inputs[0], name, overwrite[0], axis), (source,), output,
                 alias=name == "linear", in_place=(0,), activation=None if name == "linear" else (name, axis))


def _flatten(x: np.ndarray, order: tuple[int, ...], space) -> np.ndarray:
    """``x (H, C, W, N)`` as ``(N, features)``, features in ``order``'s axes after the batch."""
    view = x.transpose(order)
    out = space.out(view.shape)
    np.copyto(out, view)
    return out.reshape(view.shape[0], -1)


def _reshape_node(image_in: bool, image_out: bool, target: tuple[int, ...], channels_first: bool,
                  source: str, output: str) -> _Node:
    """Keras Reshape, which reshapes the spec's batch-first layout: the input seen in that layout,
    reshaped, and copied back into the plan's (a squeeze-and-excite gate's (N, C) -> (1, 1, C) is a
    few floats an image)."""
    to_spec = ((3, 1, 0, 2) if channels_first else (3, 0, 2, 1)) if image_in else (0, 1)  # HCWN -> N...
    back = ((2, 1, 3, 0) if channels_first else (1, 3, 2, 0)) if image_out else (0, 1)  # N... -> HCWN

    def run(inputs, prepared, overwrite, space):
        x = inputs[0]
        n = x.shape[-1] if image_in else x.shape[0]
        view = np.ascontiguousarray(x.transpose(to_spec)).reshape(n, *target).transpose(back)
        out = space.out(view.shape)
        np.copyto(out, view)
        return out

    return _Node(run, (source,), output)


class _FlattenWork:
    """A Flatten of an image: ``axes`` are the spec's (H, W, C) axes in the order Keras flattens
    them; the input is ``(H, C, W, N)``, or ``(H, W, N, C)`` once ``transposed`` (a transposed
    conv's, see ``_transpose_tails``)."""

    def __init__(self, axes: tuple[int, ...]):
        self.transposed = False
        self.orders = {False: (3, *(_ARRAY_AXIS[a] for a in axes)), True: (2, *(_TRANSPOSED_AXIS[a] for a in axes))}

    def run(self, inputs, prepared, overwrite, space):
        return _flatten(inputs[0], self.orders[self.transposed], space)


# -- building a plan -----------------------------------------------------------------------------

def _internal(shape: tuple[int, ...], channels_first: bool) -> tuple[int, ...]:
    """The spec shape (no batch) as the plan's: (H, W, C) for images, (F,) for vectors."""
    if len(shape) == 3:
        return (shape[1], shape[2], shape[0]) if channels_first else tuple(shape)
    if len(shape) == 1:
        return tuple(shape)
    raise Unsupported(f"rank-{len(shape)} tensor")


def _concat_axis(layer: S.Concatenate, rank: int, channels_first: bool) -> int:
    """The concatenation axis in the plan's (H, W, C) shapes (0 for vectors)."""
    axis = layer.axis if layer.axis >= 0 else rank + 1 + layer.axis
    if rank == 1:
        return 0
    if channels_first:
        return {1: 2, 2: 0, 3: 1}[axis]
    return {1: 0, 2: 1, 3: 2}[axis]


# (H, W, C) shape axis -> axis of the plan's (H, C, W, N) arrays
_ARRAY_AXIS = (0, 2, 1)
_TRANSPOSED_AXIS = (0, 1, 3)  # the same in a transposed conv's (H, W, N, C)


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
        order = (2, 1, 3, 0) if channels_first else (1, 3, 2, 0)  # (N, C, H, W) / (N, H, W, C) -> HCWN
    elif rank == 1:
        order = (0, 1)  # vectors stay (N, F)
    else:
        raise Unsupported(f"rank-{rank} input")
    nodes = [_Node(lambda inputs, prepared, overwrite, space, o=order: inputs[0].transpose(o), ("input",), "<in>", alias=True)]
    names = {"input": "<in>"}  # spec value -> plan value
    shapes = {"input": _internal(tuple(spec.input_shape), channels_first)}  # (H, W, C) or (F,)
    readers = _readers(spec)
    folded: dict[str, S.BatchNormalization] = {}  # conv / dense name -> the BN folded into it
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
        softmax_axis = 1 if not image else (2 if channels_first else 1)  # the spec's last axis: F / W / C
        bn = _foldable_bn(spec, index, readers, shape, channels_first)
        out_name = bn.name if bn is not None else layer.name
        if bn is not None:
            folded[layer.name] = bn
        scratch = 0
        if isinstance(layer, S.Conv2D):
            h, w, c = shape
            conv = plan_conv(layer, (h, w, c), softmax_axis)
            node = _conv_node(conv, bn, inputs[0], out_name)
            win = conv.win
            if conv.winograd:  # 16 x out_h / 2 of (F, C) @ (C, out_w / 2 * n)
                node.blas_mk = layer.filters * c * (win.out_w // 2)
            else:  # (F, rows) @ (rows, out_w * n) per output row
                node.blas_mk = layer.filters * win.kernel_h * c * (win.kernel_w if conv.im2col else 1) * win.out_w
            scratch = conv.scratch_floats()
            if not (conv.im2col or conv.winograd) and win.kernel_w > 1:  # read again for each kernel column
                node.view_floats = (win.pad_top + h + win.pad_bottom) * c * (win.pad_left + w + win.pad_right)
            out_shape = (win.out_h, win.out_w, layer.filters)
        elif isinstance(layer, S.DepthwiseConv2D):
            h, w, c = shape
            win = geometry.window_2d((h, w), layer.kernel_size, layer.strides, layer.padding, layer.dilation_rate)
            step = Depthwise(layer, win, c, softmax_axis)
            node = _conv_node(step, bn, inputs[0], out_name)
            node.blas_mk = win.out_h * win.in_h * win.out_w if step.diagonal else 0  # (out_h, H) @ (H, out_w * n)
            scratch = step.scratch_floats()
            out_shape = (win.out_h, win.out_w, c * layer.depth_multiplier)
        elif isinstance(layer, S.Dense):
            if image:
                raise Unsupported("Dense on an image")
            final = spec.layers[-1] in (layer, bn)  # the model's output: written batch first
            node = _dense_node(layer, bn, inputs[0], out_name)
            dense_last = final
            node.blas_mk = layer.units * shape[0]
            out_shape = (layer.units,)
        elif isinstance(layer, (S.MaxPooling2D, S.AveragePooling2D)):
            h, w, c = shape
            win = geometry.window_2d((h, w), layer.pool_size, layer.strides or layer.pool_size, layer.padding)
            work = _PoolWork(Pool(win, layer.reduce == "average"))
            node = _Node(work.run, inputs, layer.name, work=work)
            out_shape = (win.out_h, win.out_w, c)
        elif isinstance(layer, (S.GlobalAveragePooling2D, S.GlobalMaxPooling2D)):
            reduce, keep = layer.reduce, layer.keepdims
            node = _simple(lambda x, r=reduce, k=keep: E.global_pooling(x, reduce=r, axes=(0, 2), keepdims=k) if k
                           else E.global_pooling(x, reduce=r, axes=(0, 2)).T.copy(), inputs[0], layer.name)  # (N, C)
            out_shape = (1, 1, shape[2]) if keep else (shape[2],)
        elif isinstance(layer, S.ZeroPadding2D):
            h, w, c = shape
            (top, bottom), (left, right) = layer.padding
            node = _simple(lambda x, p=(top, bottom, left, right): pad_hw(x, *p), inputs[0], layer.name)
            out_shape = (h + top + bottom, w + left + right, c)
        elif isinstance(layer, S.Activation):
            node = _activation_node(layer.activation, inputs[0], layer.name, softmax_axis)
            out_shape = shape
        elif isinstance(layer, S.ReLU) and layer.threshold == 0 and layer.negative_slope == 0:
            node = _relu_node(layer, inputs[0])  # ReLU and ReLU6: in place
            out_shape = shape
        elif isinstance(layer, S.ReLU):
            node = _simple(lambda x, l=layer: E.relu(x, max_value=l.max_value, negative_slope=l.negative_slope, threshold=l.threshold),
                           inputs[0], layer.name)
            out_shape = shape
        elif isinstance(layer, S.Flatten):
            size = int(np.prod(shape))
            # Keras flattens the spec's layout, after moving axis 1 last for a channels_first
            # Flatten. In (H, W, C) terms: H-W-C for a Flatten of the model's own data format,
            # C-H-W for a channels_last Flatten in a channels_first model, W-C-H the other way.
            axes = (2, 0, 1) if channels_first else (0, 1, 2)
            if layer.data_format == S.CHANNELS_FIRST:
                axes = axes[1:] + axes[:1]
            if not image:
                node = _simple(lambda x: x, inputs[0], layer.name, alias=True)
            else:
                work = _FlattenWork(axes)  # (H, C, W, N) -> (N, ...) in Keras' order
                node = _Node(work.run, inputs, layer.name, work=work)
            out_shape = (size,)
        elif isinstance(layer, S.Reshape):
            info = spec.infos[index]
            out_shape = _internal(tuple(info.output_shape), channels_first)
            node = _reshape_node(len(shape) == 3, len(out_shape) == 3, tuple(info.output_shape), channels_first,
                                 inputs[0], layer.name)
        elif isinstance(layer, S.Dropout):
            node = _simple(lambda x: x, inputs[0], layer.name, alias=True)
            out_shape = shape
        elif isinstance(layer, S.Rescaling):
            scale, offset = np.float32(layer.scale), np.float32(layer.offset)
            node = _simple(lambda x, s=scale, o=offset: x * s + o, inputs[0], layer.name)
            out_shape = shape
        elif isinstance(layer, S.BatchNormalization):
            _check_channel_axis(layer, shape, channels_first)
            node = _batchnorm_node(layer, inputs[0], image)
            out_shape = shape
        elif isinstance(layer, S.Normalization):
            _check_channel_axis(layer, shape, channels_first)
            node = _normalization_node(layer, inputs[0], image)
            out_shape = shape
        elif isinstance(layer, S.Concatenate):
            axis = _concat_axis(layer, len(shape), channels_first)
            array_axis = _ARRAY_AXIS[axis] if image else 1
            parts = [shapes[s] for s in sources]
            out_shape = tuple(sum(p[axis] for p in parts) if i == axis else shape[i] for i in range(len(shape)))
            node = _Node(lambda arrays, prepared, overwrite, space, a=array_axis: np.concatenate(
                arrays, axis=a, out=space.out(_concat_shape(arrays, a))), inputs, layer.name)
        elif type(layer) in ELEMENTWISE_MERGES:
            parts = tuple(shapes[s] for s in sources)
            out_shape = layer.output_shape_of(parts)
            node = _merge_node(layer, inputs, tuple(p == out_shape for p in parts) if len(set(parts)) > 1 else None)
        else:
            raise Unsupported(layer.type)
        node.layer = layer.name
        node.fresh = not node.alias and not isinstance(layer, (S.Activation, S.ReLU, S.Flatten, S.Dropout))
        node.floats = sum(int(np.prod(shapes[src])) for src in sources) + int(np.prod(out_shape)) + scratch
        nodes.append(node)
        names[layer.name] = node.output
        shapes[layer.name] = out_shape
        if bn is not None:
            names[bn.name] = node.output
            shapes[bn.name] = out_shape
    last = spec.layers[-1].name
    back = ((3, 1, 0, 2) if channels_first else (3, 0, 2, 1)) if len(shapes[last]) == 3 else (0, 1)  # HCWN -> spec
    if dense_last:  # the last Dense made (N, units) already
        nodes[-1].key, nodes[-1].output = nodes[-1].output, "<out>"
    else:  # always a copy: the plan's own buffers never leave it
        nodes.append(_simple(lambda x: x.transpose(back).copy(), names[last], "<out>"))
    nodes = _fuse_activations(nodes)
    _pool_finishes_convs(nodes)
    _phase_for_pools(nodes)
    _transpose_tails(nodes, {layer.name: layer for layer in spec.layers})
    _extend_inputs(nodes)
    _add_biases_once(nodes)
    _liveness(nodes)
    largest = max(node.floats for node in nodes)
    viewed = max(node.view_floats for node in nodes)
    return Plan(tuple(nodes), "<out>", *chunk_size([node.blas_mk for node in nodes if node.blas_mk], largest, viewed),
                solo_chunk=cache_chunk(largest, viewed), macs=spec.macs)


def _concat_shape(arrays: list[np.ndarray], axis: int) -> tuple[int, ...]:
    shape = list(arrays[0].shape)
    shape[axis] = sum(a.shape[axis] for a in arrays)
    return tuple(shape)


def _check_channel_axis(layer: S.BatchNormalization | S.Normalization, shape: tuple[int, ...], channels_first: bool) -> None:
    rank = len(shape) + 1
    axis = layer.axis if layer.axis >= 0 else rank + layer.axis
    if axis != (1 if channels_first and len(shape) == 3 else rank - 1):
        raise Unsupported(f"{layer.type} over a non-channel axis")


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


# Multiply-accumulates a part of a split batch needs at least (about 0.4 ms of BLAS work).
_PART_MACS = 16_000_000

# Bytes one chunk's largest step may touch: past this the chunk falls out of the caches and a
# 32x32 ResNet conv ran 1.4x slower (64 images against 16, one thread; BENCHMARKS.md).
_CHUNK_BYTES = 8 << 20

# Bytes of padded input a convolution's products read through views (the whole of it, once per
# kernel column) in one chunk, at most, for kernels wider than 1: ResNet-8 at batch 64 ran 5% faster in chunks of 16
# images (1.2 MB for its 32x32x16 convs) than of 31 (2.3 MB), and 4% faster than of 20; seed650,
# whose convs read 4 KB an image, runs fastest in chunks of 128 (13% faster than 86). One
# thread, OpenBLAS 0.3.31, the machine of BENCHMARKS.md.
_VIEW_BYTES = 5 << 18


def cache_chunk(floats_per_image: int, view_floats: int = 0) -> int:
    """The most images (8 to ``CHUNK``) whose largest step stays within ``_CHUNK_BYTES`` and whose
    largest padded conv input (``view_floats`` an image) within ``_VIEW_BYTES``."""
    most = min(_CHUNK_BYTES // max(4 * floats_per_image, 1), _VIEW_BYTES // max(4 * view_floats, 1))
    return max(8, min(CHUNK, most))


def even_chunk(count: int, most: int) -> int:
    """Images per chunk for ``count`` images in chunks of at most ``most``: as many chunks as
    that needs, of equal size. 64 images at most 19 a chunk run as 4 x 16, not 19 + 19 + 19 + 7:
    a short last chunk spends more of its time in Python and in BLAS' start-up."""
    return -(-count // -(-count // max(most, 1))) if count > 0 else max(most, 1)


def chunk_size(blas_mk: list[int], floats_per_image: int = 0, view_floats: int = 0) -> tuple[int, bool]:
    """Images per plan call, and whether chunks may run on several worker threads.

    ``blas_mk`` holds ``m * k`` of every matmul the plan makes per image (a conv's
    ``(filters, rows) @ (rows, out_w * n)`` per output row, a Dense's ``(n, in) @ (in, units)``).
    When every call stays under OpenBLAS' single-thread threshold with ``n >= 8``, the chunk is
    the largest such ``n`` (at most ``CHUNK``) and chunks run in parallel. Otherwise some call is
    large enough for OpenBLAS to split it over threads itself: chunks run one after another, so
    the two kinds of threads do not compete for the same cores. Either way a chunk keeps to the
    cache rules of ``cache_chunk`` (``floats_per_image`` floats in the largest step, ``view_floats``
    in the largest padded conv input, each image); on one worker thread, or with BLAS held to one
    thread (``run_fast``), only those rules set the chunk (``Plan.solo_chunk``).
    """
    largest = max(blas_mk, default=1)
    cap = cache_chunk(floats_per_image, view_floats)
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
    """Worker threads for a batch of several chunks: ``$LAYERLAB_THREADS``, else the CPUs this
    process may run on (at most 4). NumPy and BLAS release the GIL, so chunks run in parallel;
    results do not depend on it."""
    value = os.environ.get("LAYERLAB_THREADS", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    return max(1, min(_cpus(), 4))


def _cpus() -> int:
    """The CPUs this process may run on (taskset, a container's cpuset): 0.6 us where the
    system says (Linux), against 7.4 us for ``os.cpu_count()``, which reads a file each call
    (1.6% of ad01's batch of 64) and counts CPUs the process may not use."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


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


class _OneBlasThread:
    """Holds NumPy's BLAS to one thread while any plan runs (threadpoolctl, when installed).

    The plan's own worker threads are the parallelism; a BLAS that also splits its calls over
    the cores makes the two kinds of threads wait for each other, and on a busy machine a
    spinning BLAS thread that lost its core stalls every call. The limit is set when the first
    run starts and the previous setting comes back when the last one ends (runs may overlap in
    a user's threads). Without threadpoolctl, ``chunk_size`` keeps each call under OpenBLAS' own
    single-thread threshold where it can.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._limiter = None
        self.available: bool | None = None  # None: not looked for yet

    def found(self) -> bool:
        """Whether threadpoolctl is installed and sees a BLAS (looked up once)."""
        if self.available is None:
            self.available = bool(blas_libraries()[1])
        return self.available

    def __enter__(self) -> bool:
        with self._lock:
            if not self.found():
                return False
            if self._users == 0:
                # Already on one thread (OMP_NUM_THREADS=1, an outer threadpool_limits): reading
                # that takes 0.6 us, setting and restoring it 5 us.
                controller, libraries = blas_libraries()
                single = all(library.num_threads == 1 for library in libraries)
                self._limiter = None if single else controller.limit(limits=1, user_api="blas")
            self._users += 1
            return True

    def __exit__(self, *exc) -> None:
        with self._lock:
            if self._users:
                self._users -= 1
                if self._users == 0 and self._limiter is not None:
                    self._limiter.restore_original_limits()
                    self._limiter = None


ONE_BLAS_THREAD = _OneBlasThread()


# The interpreter's switch interval while a plan runs. A plan makes a few hundred short NumPy
# calls, each of which lets go of the GIL and takes it back; beside a busy Python thread each
# taking-back waits for that thread's switch interval (5 ms by default), and a 1.7 ms DS-CNN
# batch took 71 ms (ResNet-8: 26 -> 1,304 ms). At 100 us it took 4.9 ms; with no other busy
# thread the setting changes nothing measurable (benchmarks/engine_gil.py). None: leave it.
SWITCH_INTERVAL: float | None = 1e-4


class _ShortSwitch:
    """Shortens the interpreter's switch interval to ``SWITCH_INTERVAL`` while any plan runs, and
    gives the previous one back when the last run ends, unless someone changed it meanwhile. A
    shorter interval the process already has is left as it is."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved: tuple[float, float] | None = None  # (the previous interval, the one set)

    def __enter__(self) -> None:
        with self._lock:
            if self._users == 0 and SWITCH_INTERVAL is not None:
                previous = sys.getswitchinterval()
                if previous > SWITCH_INTERVAL:
                    sys.setswitchinterval(SWITCH_INTERVAL)
                    self._saved = (previous, sys.getswitchinterval())
            self._users += 1

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._saved is not None:
                previous, ours = self._saved
                if sys.getswitchinterval() == ours:
                    sys.setswitchinterval(previous)
                self._saved = None


SHORT_SWITCH = _ShortSwitch()


def run_fast(spec: S.Model, weights: Weights, x: np.ndarray, chunk: int | None = None) -> np.ndarray:
    """Run ``spec`` with its plan on checked float32 ``x`` (batch first), ``chunk`` images a call.

    Chunks run on ``threads()`` worker threads. With NumPy's BLAS held to one thread
    (``_OneBlasThread``) every plan may run chunks in parallel, and a batch smaller than
    ``threads()`` full chunks is split evenly over them, in parts of at least 8 images and
    ``_PART_MACS`` multiply-accumulates (a smaller part spends more of its time in Python,
    where threads wait for each other: ad01 at batch 64 ran at 68k images/s in two parts
    against 100k+ in one); otherwise
    only plans whose calls stay single-threaded do (see ``chunk_size``). Chunks are of equal
    size (``even_chunk``). A thread count or batch size that changes the chunk size may change an
    output in its last bits (BLAS may sum a product of another width in another order); the same
    thread count and batch size give the same bits. Meanwhile the interpreter switches threads
    every ``SWITCH_INTERVAL`` seconds (``_ShortSwitch``).

    Raises:
        Unsupported: the plan does not cover ``spec`` (or ``x`` is empty).
    """
    plan = plan_for(spec)
    if plan is None or len(x) == 0:
        raise Unsupported(spec.name)
    prepared = plan.prepare(weights)
    count = threads()
    with ONE_BLAS_THREAD as limited, SHORT_SWITCH:
        if chunk is None:
            if count == 1:
                chunk = even_chunk(len(x), plan.solo_chunk)
            elif limited:  # split over the threads, in parts big enough to be worth a thread
                parts = max(1, min(count, len(x) * plan.macs // _PART_MACS))
                chunk = even_chunk(len(x), max(8, min(plan.solo_chunk, -(-len(x) // parts))))
            else:
                chunk = even_chunk(len(x), plan.chunk)
        parts = [x[start : start + chunk] for start in range(0, len(x), chunk)]
        workers = min(count, len(parts)) if (plan.parallel or limited) and count > 1 else 1
        if workers > 1:
            outs = list(_executor(workers).map(lambda part: plan(part, weights, prepared), parts))
        else:
            outs = [plan(part, weights, prepared) for part in parts]
    return outs[0] if len(outs) == 1 else np.concatenate(outs)
