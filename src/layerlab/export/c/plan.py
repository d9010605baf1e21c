"""Lower a Sequential network to the steps that the C code runs: fold, fuse, lay out, place.

One ``Step`` is one C function. Lowering walks the spec's layers once:

* Dropout is the identity and disappears; Flatten and Reshape are views when the values are
  already in the order they need, otherwise a ``CopyStep`` reorders them.
* BatchNormalization right after a linear Conv2D / Dense is folded into its kernel and bias
  (``kernel * inv``, ``bias * inv + beta - moving_mean * inv`` with
  ``inv = gamma / sqrt(moving_variance + epsilon)``); anywhere else it is an ``AffineStep``.
* ZeroPadding2D right before a Conv2D of the same data_format becomes extra conv padding (out of
  image taps are skipped, so nothing is materialised); anywhere else a ``PadStep``.
* A Conv2D is fused with the element-wise layers after it and with a following non-overlapping
  pooling layer (strides >= pool_size: every conv output is computed once) and the element-wise
  layers after that: conv + maxpool + tanh is one loop that never stores the conv output.
* Element-wise layers (Activation except softmax, Rescaling) elsewhere form an in-place
  ``ElementwiseStep``; softmax is a ``SoftmaxStep`` along the model's last axis.

Layouts: a tensor's ``dims`` are its shape as Keras sees it (the layer's data_format); its
``strides`` say where the values sit in the C buffer. Windowed steps write one plane per channel
(CHW, whatever the data_format) unless a later Flatten, Reshape or the model output wants
another order, which they then write directly. Buffers: every step writes into one of two ping-pong buffers ``a`` / ``b``
(sized at generation time to the largest tensor each holds), the first reads the caller's
``in`` and the last writes the caller's ``out``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from layerlab import geometry
from layerlab import spec as S
from layerlab.errors import ExportError
from layerlab.export.c.steps import (  # noqa: F401  (re-exported: plan.ConvStep etc.)
    AffineStep,
    ConvStep,
    CopyStep,
    DenseStep,
    DepthwiseStep,
    ElementwiseStep,
    Image,
    Layout,
    Op,
    PadStep,
    Plan,
    Pool,
    PoolStep,
    SoftmaxStep,
    Step,
    c_order,
    ordered,
    planar_order,
)
from layerlab.layers.normalization import layer_scale_shift
from layerlab.registry import C_FLOAT, C_INT8

CHANNELS_FIRST = S.CHANNELS_FIRST
# Activations C and int8 code can apply one value at a time (softmax needs a whole axis).
ELEMENTWISE = tuple(a for a in S.ACTIVATIONS if a != "softmax")


def _unsupported(info: S.LayerInfo, why: str) -> ExportError:
    return ExportError(f"C export: layer {info.index} '{info.layer.name}' ({info.layer.type}) {why}")


# What the C export lowers (both float32 and int8): spec class -> the _Lowering method.
_HANDLERS = {
    S.Conv2D: "_conv", S.DepthwiseConv2D: "_depthwise", S.Dense: "_dense", S.MaxPooling2D: "_pool", S.AveragePooling2D: "_pool",
    S.ZeroPadding2D: "_pad", S.Flatten: "_flatten", S.Reshape: "_reshape", S.BatchNormalization: "_batchnorm",
    S.Activation: "_activation", S.Rescaling: "_activation", S.Dropout: "_dropout",
}
_NOTES = {
    S.Conv2D: "Sequential chains; strides or dilation, any padding",
    S.Activation: "every activation; softmax only as the last layer's axis",
    S.ReLU: "as Activation: ReLU() and ReLU(max_value=6) only",
    S.DepthwiseConv2D: "Sequential chains; any depth_multiplier, strides, dilation, padding",
}
_DECLINED = {
    (S.Conv1D,): "1-D convolutions have no C kernel yet",
    (S.SeparableConv2D,): "separable convolutions have no C kernel yet (a DepthwiseConv2D then a 1x1 Conv2D does)",
    (S.MaxPooling1D, S.AveragePooling1D): "1-D pooling has no C kernel yet",
    (S.GlobalAveragePooling2D, S.GlobalMaxPooling2D, S.GlobalAveragePooling1D, S.GlobalMaxPooling1D):
        "global pooling has no C kernel yet",
    (S.Add, S.Subtract, S.Multiply, S.Average, S.Maximum, S.Minimum, S.Concatenate):
        "graphs (merges, named inputs) are not lowered to C yet; only Sequential chains export",
    (S.PReLU,): "PReLU has no C kernel yet",
    (S.ZeroPadding1D, S.Cropping2D, S.UpSampling2D, S.Permute): "this data-movement layer has no C step yet",
}
for _backend in (C_FLOAT, C_INT8):
    for _cls, _method in _HANDLERS.items():
        _backend.register(_cls, _method, note=_NOTES.get(_cls, ""))
    _backend.register(S.ReLU, "_activation", note=_NOTES[S.ReLU])
    for _classes, _reason in _DECLINED.items():
        _backend.decline(_classes, _reason)


def _bn_inv(layer: S.BatchNormalization, w: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature (scale, shift) of an inference BatchNormalization, in float64 (folded into float32 weights)."""
    return layer_scale_shift(layer, w, dtype=np.float64)


class _Lowering:
    """One pass over the layers; ``self.i`` is the next layer to consume."""

    def __init__(self, spec: S.Model, weights) -> None:
        self.infos = spec.infos
        self.weights = weights
        self.i = 0
        self.layout = c_order(spec.input_shape)
        self.tap = "input"  # layer whose traced output holds the current values
        self.steps: list[Step] = []
        self.split_names = {info.layer.name: f"{info.layer.name}:activation" for info in self.infos}

    # -- look-ahead helpers -------------------------------------------------------------------
    def _skip_dropout(self, i: int) -> int:
        while i < len(self.infos) and isinstance(self.infos[i].layer, S.Dropout):
            i += 1
        return i

    def _layer(self, i: int) -> S.Layer | None:
        return self.infos[i].layer if i < len(self.infos) else None

    def _elementwise_op(self, i: int) -> Op | None:
        layer = self._layer(i)
        if isinstance(layer, (S.Activation, S.ReLU)) and layer.as_activation() in ELEMENTWISE:
            return Op(layer.name, layer.as_activation())
        if isinstance(layer, S.Rescaling):
            return Op(layer.name, scale=float(layer.scale), offset=float(layer.offset))
        return None

    def _take_elementwise(self) -> tuple[list[Op], str | None]:
        """Consume element-wise layers (and Dropouts) from ``self.i``; return them and the last name."""
        ops: list[Op] = []
        last = None
        while True:
            j = self._skip_dropout(self.i)
            op = self._elementwise_op(j)
            if op is None:
                return ops, last
            ops.append(op)
            last = op.layer
            self.i = j + 1

    def _wanted(self, i: int, dims: tuple[int, ...], data_format: str) -> Layout:
        """The layout the tensor produced before layer ``i`` should be written in."""
        while i < len(self.infos):
            layer = self.infos[i].layer
            if isinstance(layer, S.Flatten):
                return ordered(dims, _flatten_order(len(dims), layer.data_format))
            if isinstance(layer, S.Reshape):
                return c_order(dims)
            if not isinstance(layer, (S.Dropout, S.Activation, S.ReLU, S.Rescaling, S.BatchNormalization)):
                return planar_order(dims, data_format)
            i += 1
        return c_order(dims)

    # -- the pass -------------------------------------------------------------------------------
    def run(self) -> list[Step]:
        while self.i < len(self.infos):
            info = self.infos[self.i]
            layer = info.layer
            method = C_FLOAT.lookup(layer, info.index)
            if layer.inputs:
                raise _unsupported(info, "is part of a graph (named inputs); only Sequential chains export to C")
            if isinstance(layer, S.ReLU) and layer.as_activation() is None:
                raise _unsupported(info, f"is ReLU(max_value={layer.max_value}, negative_slope={layer.negative_slope}, "
                                   f"threshold={layer.threshold}); C has ReLU() and ReLU(max_value=6) only")
            getattr(self, method)(info)
        if not self.layout.same_memory(c_order(self.layout.dims)):
            self._copy(c_order(self.layout.dims), ())
        if not self.steps:  # e.g. a model of Dropout and Flatten only: the output is the input
            self._copy(self.layout, ())
        return self.steps

    def _add(self, step: Step) -> None:
        self.steps.append(step)
        self.layout = step.output
        self.tap = step.taps["out"]

    def _copy(self, out: Layout, layers) -> None:
        self._add(CopyStep(layers=tuple(layers), input=self.layout, output=out, taps={"out": self.tap}))

    def _fold_batchnorm(self, kernel: np.ndarray, bias: np.ndarray | None, axis_ok) -> tuple[np.ndarray, np.ndarray | None, list, str | None]:
        """Fold a BatchNormalization right after the current layer (Dropouts between are fine)."""
        j = self._skip_dropout(self.i)
        layer = self._layer(j)
        if not isinstance(layer, S.BatchNormalization) or not axis_ok(self.infos[j]):
            return kernel, bias, [], None
        inv, shift = _bn_inv(layer, self.weights[layer.name])
        kernel = (kernel.astype(np.float64) * inv).astype(np.float32)  # scales the last (output) axis
        base = np.zeros(inv.shape) if bias is None else bias.astype(np.float64)
        self.i = j + 1
        return kernel, (base * inv + shift).astype(np.float32), [(layer.name, layer.type)], layer.name

    def _conv(self, info: S.LayerInfo) -> None:
        layer: S.Conv2D = info.layer
        weights = self.weights[layer.name]
        image = self.layout.image(layer.data_format)
        pads = ((0, 0), (0, 0))
        names = [(layer.name, layer.type)]
        if self.steps and isinstance(self.steps[-1], _PendingPad):
            pending = self.steps.pop()
            pads = pending.padding
            names = list(pending.layers) + names
        self.i += 1
        (pad_t, pad_b), (pad_l, pad_r) = pads
        win = geometry.window_2d(
            (image.h + pad_t + pad_b, image.w + pad_l + pad_r), layer.kernel_size, layer.strides, layer.padding, layer.dilation_rate
        )
        # A folded ZeroPadding2D adds to the conv's own padding; coordinates stay unpadded.
        win = replace(win, in_h=image.h, in_w=image.w, pad_top=win.pad_top + pad_t, pad_bottom=win.pad_bottom + pad_b,
                      pad_left=win.pad_left + pad_l, pad_right=win.pad_right + pad_r)
        kernel, bias = weights["kernel"], weights.get("bias")
        taps = {"acc": layer.name}
        pre: list[Op] = []
        if layer.activation == "linear":
            kernel, bias, bn_names, bn_tap = self._fold_batchnorm(
                kernel, bias, lambda bn: bn.layer.feature_axis(bn.input_shapes[0]) == (0 if layer.data_format == CHANNELS_FIRST else 2))
            names += bn_names
            taps["acc"] = bn_tap or layer.name
        elif layer.activation in ELEMENTWISE:
            pre.append(Op(self.split_names[layer.name], layer.activation))
        softmax_act = layer.activation == "softmax"
        if not softmax_act:  # element-wise layers after a softmax stay after it
            more, _ = self._take_elementwise()
            pre += more
            names += [(op.layer, _op_type(op)) for op in more]
        pool = None
        post: list[Op] = []
        j = self._skip_dropout(self.i)
        nxt = self._layer(j)
        if (not softmax_act and isinstance(nxt, (S.MaxPooling2D, S.AveragePooling2D)) and nxt.data_format == layer.data_format
                and all(s >= p for s, p in zip(nxt.strides, nxt.pool_size, strict=True))):
            pool_win = self.infos[j].layer.window(self.infos[j].input_shapes[0])
            pool = Pool("max" if isinstance(nxt, S.MaxPooling2D) else "avg", pool_win, nxt.name)
            names.append((nxt.name, nxt.type))
            self.i = j + 1
            post, _ = self._take_elementwise()
            names += [(op.layer, _op_type(op)) for op in post]
            dims = self.infos[j].output_shape
        else:
            dims = info.output_shape
        if pre:
            taps["pre_out"] = pre[-1].layer
        if pool:
            taps["pool"] = pool.layer
        taps["out"] = (post[-1].layer if post else pool.layer) if pool else (pre[-1].layer if pre else taps["acc"])
        out = self._wanted(self.i, tuple(dims), layer.data_format)
        self._add(ConvStep(layers=tuple(names), input=self.layout, output=out, taps=taps, kernel_hwio=kernel, bias=bias,
                           window=win, data_format=layer.data_format, pre=tuple(pre), pool=pool, post=tuple(post)))
        if softmax_act:
            self._softmax_step(((self.split_names[layer.name], "softmax"),), self.split_names[layer.name])

    def _depthwise(self, info: S.LayerInfo) -> None:
        layer: S.DepthwiseConv2D = info.layer
        weights = self.weights[layer.name]
        image = self.layout.image(layer.data_format)
        self.i += 1
        win = geometry.window_2d((image.h, image.w), layer.kernel_size, layer.strides, layer.padding, layer.dilation_rate)
        kernel_h, kernel_w, channels, multiplier = weights["kernel"].shape
        # (kh, kw, C, M) -> (kh, kw, 1, C * M): output channel c * M + m, as Keras orders them
        kernel, bias = weights["kernel"].reshape(kernel_h, kernel_w, 1, channels * multiplier), weights.get("bias")
        names = [(layer.name, layer.type)]
        taps = {"acc": layer.name}
        pre: list[Op] = []
        if layer.activation == "linear":
            kernel, bias, bn_names, bn_tap = self._fold_batchnorm(
                kernel, bias, lambda bn: bn.layer.feature_axis(bn.input_shapes[0]) == (0 if layer.data_format == CHANNELS_FIRST else 2))
            names += bn_names
            taps["acc"] = bn_tap or layer.name
        elif layer.activation in ELEMENTWISE:
            pre.append(Op(self.split_names[layer.name], layer.activation))
        if layer.activation == "softmax":
            raise _unsupported(info, "has activation softmax over channels; C export has softmax only as a last Dense/Activation")
        more, _ = self._take_elementwise()
        pre += more
        names += [(op.layer, _op_type(op)) for op in more]
        taps["out"] = pre[-1].layer if pre else taps["acc"]
        if pre:
            taps["pre_out"] = pre[-1].layer
        out = self._wanted(self.i, tuple(info.output_shape), layer.data_format)
        self._add(DepthwiseStep(layers=tuple(names), input=self.layout, output=out, taps=taps, kernel_hwio=kernel, bias=bias,
                                window=win, data_format=layer.data_format, multiplier=multiplier, pre=tuple(pre)))

    def _dense(self, info: S.LayerInfo) -> None:
        layer: S.Dense = info.layer
        if len(self.layout.dims) != 1:
            raise _unsupported(info, f"reads a tensor of shape {self.layout.dims}; C export needs a Flatten before Dense")
        weights = self.weights[layer.name]
        self.i += 1
        kernel, bias = weights["kernel"], weights.get("bias")
        names = [(layer.name, layer.type)]
        taps = {"acc": layer.name}
        pre: list[Op] = []
        if layer.activation == "linear":
            kernel, bias, bn_names, bn_tap = self._fold_batchnorm(kernel, bias, lambda bn: bn.layer.feature_axis(bn.input_shapes[0]) == 0)
            names += bn_names
            taps["acc"] = bn_tap or layer.name
        elif layer.activation in ELEMENTWISE:
            pre.append(Op(self.split_names[layer.name], layer.activation))
        if layer.activation != "softmax":
            more, _ = self._take_elementwise()
            pre += more
            names += [(op.layer, _op_type(op)) for op in more]
        taps["out"] = pre[-1].layer if pre else taps["acc"]
        if pre:
            taps["pre_out"] = pre[-1].layer
        self._add(DenseStep(layers=tuple(names), input=self.layout, output=c_order(info.output_shape), taps=taps,
                            kernel=kernel, bias=bias, pre=tuple(pre)))
        if layer.activation == "softmax":
            self._softmax_step(((self.split_names[layer.name], "softmax"),), self.split_names[layer.name])

    def _softmax_step(self, layers, tap: str) -> None:
        self._add(SoftmaxStep(layers=tuple(layers), input=self.layout, output=self.layout, taps={"in": self.tap, "out": tap}))

    def _pool(self, info: S.LayerInfo) -> None:
        layer = info.layer
        self.i += 1
        pool = Pool("max" if isinstance(layer, S.MaxPooling2D) else "avg", layer.window(info.input_shapes[0]), layer.name)
        out = self._wanted(self.i, tuple(info.output_shape), layer.data_format)
        self._add(PoolStep(layers=((layer.name, layer.type),), input=self.layout, output=out, taps={"out": layer.name},
                           pool=pool, data_format=layer.data_format))

    def _pad(self, info: S.LayerInfo) -> None:
        layer: S.ZeroPadding2D = info.layer
        self.i += 1
        nxt = self._layer(self.i)
        if isinstance(nxt, S.Conv2D) and nxt.data_format == layer.data_format:
            # Folded into the conv (see _conv): out-of-image taps are skipped, nothing is stored.
            self.steps.append(_PendingPad(layers=((layer.name, layer.type),), input=self.layout, output=self.layout,
                                          padding=layer.padding, data_format=layer.data_format))
            return
        out = self._wanted(self.i, tuple(info.output_shape), layer.data_format)
        self._add(PadStep(layers=((layer.name, layer.type),), input=self.layout, output=out, taps={"out": layer.name},
                          padding=layer.padding, data_format=layer.data_format))

    def _flatten(self, info: S.LayerInfo) -> None:
        layer: S.Flatten = info.layer
        self.i += 1
        want = ordered(self.layout.dims, _flatten_order(len(self.layout.dims), layer.data_format))
        if not self.layout.same_memory(want):
            self._copy(want, ((layer.name, layer.type),))
        self.layout = c_order(info.output_shape)  # a view: the values are in flatten order now
        self.tap = layer.name

    def _reshape(self, info: S.LayerInfo) -> None:
        layer = info.layer
        self.i += 1
        if not self.layout.same_memory(c_order(self.layout.dims)):
            self._copy(c_order(self.layout.dims), ((layer.name, layer.type),))
        self.layout = c_order(info.output_shape)
        self.tap = layer.name

    def _batchnorm(self, info: S.LayerInfo) -> None:
        layer: S.BatchNormalization = info.layer
        self.i += 1
        scale, shift = _bn_inv(layer, self.weights[layer.name])
        self._add(AffineStep(layers=((layer.name, layer.type),), input=self.layout, output=self.layout,
                             taps={"in": self.tap, "out": layer.name}, scale=scale.astype(np.float32),
                             shift=shift.astype(np.float32), axis=layer.feature_axis(info.input_shapes[0])))

    def _dropout(self, info: S.LayerInfo) -> None:
        self.i += 1  # the identity at inference

    def _activation(self, info: S.LayerInfo) -> None:
        layer = info.layer
        if isinstance(layer, S.Activation) and layer.activation == "softmax":
            self.i += 1
            self._softmax_step(((layer.name, "softmax"),), layer.name)
            return
        tap_in = self.tap
        ops, last = self._take_elementwise()
        self._add(ElementwiseStep(layers=tuple((op.layer, _op_type(op)) for op in ops),
                                  input=self.layout, output=self.layout, taps={"in": tap_in, "out": last}, ops=tuple(ops)))


@dataclass
class _PendingPad(Step):
    """A ZeroPadding2D waiting for the Conv2D right after it (never reaches code)."""

    kind: ClassVar[str] = "pending-pad"
    padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))
    data_format: str = "channels_last"


def _op_type(op: Op) -> str:
    return "Rescaling" if op.is_rescale else "Activation"


def _flatten_order(rank: int, data_format: str) -> tuple[int, ...]:
    # Keras (2 and 3) Flatten(channels_first) moves axis 1 to the end before flattening.
    if data_format == CHANNELS_FIRST and rank >= 2:
        return tuple(range(1, rank)) + (0,)
    return tuple(range(rank))


def _calibration_spec(spec: S.Model, split_names: dict[str, str]) -> S.Model:
    """The spec with each Conv2D / Dense activation as its own Activation layer (same values)."""
    layers: list[S.Layer] = []
    for layer in spec.layers:
        if isinstance(layer, (S.Conv2D, S.DepthwiseConv2D, S.Dense)) and layer.activation != "linear":
            layers.append(replace(layer, activation="linear"))
            layers.append(S.Activation(name=split_names[layer.name], activation=layer.activation))
        else:
            layers.append(layer)
    return S.Model(name=spec.name, input_shape=spec.input_shape, layers=tuple(layers))


def place_buffers(steps: list[Step]) -> dict[str, int]:
    """Set ``src`` / ``dst`` of each step; return the element count of buffers ``a`` and ``b``.

    In-place steps (element-wise, affine, softmax) write where they read unless they read the
    caller's const ``in``. Every other step writes the ping-pong buffer it does not read; the
    last writing step writes ``out`` instead, and in-place steps after it work on ``out``.
    """
    where = "in"
    for step in steps:
        step.src = where
        if step.in_place_ok and where != "in":
            step.dst = where
        else:
            step.dst = "a" if where in ("in", "b") else "b"
        where = step.dst
    last = max(k for k, s in enumerate(steps) if not (s.in_place_ok and s.src == s.dst))
    steps[last].dst = "out"
    for step in steps[last + 1:]:
        step.src = step.dst = "out"
    sizes = {"a": 0, "b": 0}
    for step in steps:
        if step.dst in sizes:
            sizes[step.dst] = max(sizes[step.dst], step.output.size)
    return sizes


def lower(spec: S.Model, weights) -> Plan:
    """Lower ``spec`` with Keras-layout ``weights`` to a ``Plan``.

    Raises:
        ExportError: a layer or arrangement that has no C implementation (named).
    """
    lowering = _Lowering(spec, weights)
    steps = lowering.run()
    sizes = place_buffers(steps)
    return Plan(steps=steps, input=c_order(spec.input_shape), output=c_order(spec.output_shape), buffer_sizes=sizes,
                calibration_spec=_calibration_spec(spec, lowering.split_names))
