"""The engine's faster path: a plan per spec, run in chunks of images on worker threads.

The plain functions of ``layerlab.engine.layers`` loop over kernel taps; a plan computes the same
layers with fewer, larger NumPy calls (``layerlab.engine.banded``). It is tested against the
plain functions and against Keras.

* Inside a plan the batch axis is LAST: an image is ``x_hwcn (H, W, C, batch)``, a vector
  ``(features, batch)``. A channels_first model is converted once at the start; Flatten then
  reads H-W-C order, which is what Keras' Flatten does for channels_first too (it moves
  channels last first).
* A batch runs in chunks (``Plan.chunk`` images). Each BLAS call is kept under OpenBLAS'
  threading threshold (m * n * k <= 65536 * 4) by the chunk size, so calls stay single-threaded:
  on a busy machine OpenBLAS threads wait for each other and a call can run ten times slower.
  Chunks run on ``threads()`` worker threads instead (NumPy and BLAS release the GIL); an image's
  result does not depend on the thread count.

Specs a plan does not cover (named inputs such as Add / Concatenate, Reshape, mixed data
formats, a BatchNormalization over a non-channel axis) make ``plan_for`` return None;
``engine.run`` then uses the plain path.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from layerlab import geometry
from layerlab import spec as S
from layerlab.engine.banded import BandConv, Pool, activate, pad_hw, plan_conv
from layerlab.layers import LAYER_TYPES
from layerlab.layers.normalization import layer_scale_shift
from layerlab.registry import ENGINE_FAST

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

Weights = Mapping[str, Mapping[str, np.ndarray]]
Step = Callable[[np.ndarray, Weights], np.ndarray]

# OpenBLAS runs a gemm on one thread when m * n * k is at most this (interface/gemm.c).
_BLAS_SINGLE_THREAD = 65536 * 4
CHUNK = 128  # images per plan call at most; fewer where a BLAS call would pass the threshold


class Unsupported(Exception):
    """The fast plan does not cover this spec; use the plain path."""


# The layer types a plan covers (in chains); every other type runs on the plain path.
ENGINE_FAST.register((
    S.Conv2D, S.MaxPooling2D, S.AveragePooling2D, S.ZeroPadding2D, S.Activation, S.Dense, S.Flatten, S.Dropout,
    S.Rescaling, S.BatchNormalization,
), note="in chains of one data_format")
ENGINE_FAST.decline(tuple(cls for cls in LAYER_TYPES.values() if cls not in ENGINE_FAST.handlers),
                    "the engine runs it on its plain path (same results, per-layer NumPy calls)")


def _dense_step(layer: S.Dense) -> Step:
    def dense(x_fn: np.ndarray, weights: Weights) -> np.ndarray:
        params = weights[layer.name]
        out = params["kernel"].T @ x_fn  # (units, in) @ (in, N) -> (units, N)
        if layer.use_bias:
            out += params["bias"][:, None]
        return activate(out, layer.activation, True, 0)

    return dense


def _batchnorm_step(layer: S.BatchNormalization, shape: tuple[int, ...], channels_first_image: bool) -> Step:
    rank = len(shape) + 1
    axis = layer.axis if layer.axis >= 0 else rank + layer.axis
    if axis != (1 if channels_first_image else rank - 1):
        raise Unsupported("BatchNormalization over a non-channel axis")

    def batchnorm(x: np.ndarray, weights: Weights) -> np.ndarray:
        inv, shift = layer_scale_shift(layer, weights[layer.name])
        return x * inv[:, None] + shift[:, None]  # channels are the axis before the batch

    return batchnorm


@dataclass(frozen=True)
class Plan:
    """Steps that map a batch-first ``(n, *input_shape)`` float32 array to the model output."""

    steps: tuple[Step, ...]
    chunk: int  # images per call at most (see chunk_size)
    parallel: bool  # chunks may run on several worker threads (see chunk_size)

    def __call__(self, x: np.ndarray, weights: Weights) -> np.ndarray:
        for step in self.steps:
            x = step(x, weights)
        return x


def _transpose(x: np.ndarray, weights: Weights, *, axes: tuple[int, ...]) -> np.ndarray:
    return x.transpose(axes)  # a view


def _to_batch_first(x: np.ndarray, weights: Weights, *, axes: tuple[int, ...]) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(axes))


def _flatten(x: np.ndarray, weights: Weights, *, size: int, axes: tuple[int, ...] | None) -> np.ndarray:
    if axes is not None:
        x = np.ascontiguousarray(x.transpose(axes))
    return x.reshape(size, -1)  # (features, N)


def _zero_pad(x: np.ndarray, weights: Weights, *, pads: tuple[int, int, int, int]) -> np.ndarray:
    return pad_hw(x, *pads)


def _activation(x: np.ndarray, weights: Weights, *, name: str, owned: bool, axis: int) -> np.ndarray:
    return activate(x, name, owned, axis)


def _rescale(x: np.ndarray, weights: Weights, *, scale: np.float32, offset: np.float32) -> np.ndarray:
    return x * scale + offset


def _hwc(shape: tuple[int, ...]) -> tuple[int, int, int]:
    height, width, channels = shape
    return height, width, channels


def _plan_for(spec: S.Model) -> Plan:
    """Build the steps of ``spec``, or raise Unsupported."""
    formats = {l.data_format for l in spec.layers if isinstance(l, (S.Windowed, S.ZeroPadding2D))}
    if len(formats) > 1:
        raise Unsupported("mixed data formats")
    channels_first = formats == {S.CHANNELS_FIRST}
    shape: tuple[int, ...] = tuple(spec.input_shape)  # internal shape without the batch: (H, W, C) or (F,)
    order: tuple[int, ...]
    if len(shape) == 3:
        order = (2, 3, 1, 0) if channels_first else (1, 2, 3, 0)  # (N, C, H, W) / (N, H, W, C) -> HWCN
        shape = (shape[1], shape[2], shape[0]) if channels_first else shape
    elif len(shape) == 1:
        order = (1, 0)  # (N, F) -> (F, N)
    else:
        raise Unsupported(f"rank-{len(shape)} input")
    steps: list[Step] = [partial(_transpose, axes=order)]
    owned = False  # does the current array belong to the plan (safe to overwrite)?

    pending_bias = None  # a conv whose bias the next (max pooling) step adds
    for index, layer in enumerate(spec.layers):
        if layer.inputs:
            raise Unsupported("named inputs (graph)")
        if not ENGINE_FAST.supports(type(layer)):
            raise Unsupported(layer.type)
        image = len(shape) == 3
        softmax_axis = 0 if not image else (1 if channels_first else 2)  # the spec's last axis
        if isinstance(layer, S.Conv2D):
            following = spec.layers[index + 1] if index + 1 < len(spec.layers) else None
            bias_later = (layer.use_bias and layer.activation == "linear" and isinstance(following, S.MaxPooling2D)
                          and not following.inputs)
            h, w, c = _hwc(shape)
            conv = plan_conv(layer, (h, w, c), softmax_axis, add_bias=layer.use_bias and not bias_later)
            steps.append(conv)
            shape = (conv.win.out_h, conv.win.out_w, layer.filters)
            pending_bias = layer.name if bias_later else None
            owned = True
            continue
        elif isinstance(layer, (S.MaxPooling2D, S.AveragePooling2D)):
            h, w, c = _hwc(shape)
            win = geometry.window_2d((h, w), layer.pool_size, layer.strides or layer.pool_size, layer.padding)
            steps.append(Pool(win, isinstance(layer, S.AveragePooling2D), pending_bias))
            shape = (win.out_h, win.out_w, c)
        elif isinstance(layer, S.ZeroPadding2D):
            h, w, c = _hwc(shape)
            (top, bottom), (left, right) = layer.padding
            steps.append(partial(_zero_pad, pads=(top, bottom, left, right)))
            shape = (h + top + bottom, w + left + right, c)
        elif isinstance(layer, S.Activation):
            steps.append(partial(_activation, name=layer.activation, owned=owned, axis=softmax_axis))
            owned = owned or layer.activation != "linear"
            continue
        elif isinstance(layer, S.Dense):
            steps.append(_dense_step(layer))
            shape = (layer.units,)
        elif isinstance(layer, S.Flatten):
            size = int(np.prod(shape))
            # Keras flattens the spec's layout, after moving axis 1 last for channels_first.
            # Internal axes are (H, W, C) = 0, 1, 2; the spec's are (C, H, W) for a
            # channels_first model: so the usual case, a channels_first Flatten in a
            # channels_first model, reads H-W-C, the internal order, and copies nothing.
            axes = (2, 0, 1) if channels_first else (0, 1, 2)
            if layer.data_format == S.CHANNELS_FIRST:
                axes = axes[1:] + axes[:1]
            shape = (size,)
            if not image or axes == (0, 1, 2):
                steps.append(partial(_flatten, size=size, axes=None))
                continue  # a view of the same buffer: ownership unchanged
            steps.append(partial(_flatten, size=size, axes=(*axes, 3)))
        elif isinstance(layer, S.Dropout):
            continue
        elif isinstance(layer, S.Rescaling):
            steps.append(partial(_rescale, scale=np.float32(layer.scale), offset=np.float32(layer.offset)))
        elif isinstance(layer, S.BatchNormalization):
            steps.append(_batchnorm_step(layer, shape, image and channels_first))
        else:
            raise Unsupported(layer.type)
        owned = True
        pending_bias = None

    back = ((3, 2, 0, 1) if channels_first else (3, 0, 1, 2)) if len(shape) == 3 else (1, 0)
    steps.append(partial(_to_batch_first, axes=back))  # HWCN / (F, N) -> the model's batch-first layout
    blas_mk = [step.block * step.layer.filters * step.k for step in steps if isinstance(step, BandConv)]
    blas_mk += [layer.units * info.input_shapes[0][0] for layer, info in zip(spec.layers, spec.infos, strict=True)
                if isinstance(layer, S.Dense)]
    return Plan(tuple(steps), *chunk_size(blas_mk))


def chunk_size(blas_mk: list[int]) -> tuple[int, bool]:
    """Images per plan call, and whether chunks may run on several worker threads.

    ``blas_mk`` holds ``m * k`` of every matmul the plan makes per image column (a banded conv's
    ``(B * filters, K) @ (K, n)``, a Dense's ``(units, in) @ (in, n)``). When every call stays
    under OpenBLAS' single-thread threshold with ``n >= 8``, the chunk is the largest such ``n``
    (at most ``CHUNK``) and chunks run in parallel. Otherwise some call is large enough for
    OpenBLAS to split it over threads itself: chunks of ``CHUNK`` run one after another, so the
    two kinds of threads do not compete for the same cores.
    """
    largest = max(blas_mk, default=1)
    if largest * 8 <= _BLAS_SINGLE_THREAD:
        return min(CHUNK, _BLAS_SINGLE_THREAD // largest), True
    return CHUNK, False


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
    chunk = chunk or plan.chunk
    parts = [x[start : start + chunk] for start in range(0, len(x), chunk)]
    workers = min(threads(), len(parts)) if plan.parallel else 1
    if workers > 1:
        outs = list(_executor(workers).map(lambda part: plan(part, weights), parts))
    else:
        outs = [plan(part, weights) for part in parts]
    return outs[0] if len(outs) == 1 else np.concatenate(outs)
