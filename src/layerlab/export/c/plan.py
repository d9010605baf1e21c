"""Lower a network (a chain or a graph) to the steps that the C code runs: fold, fuse, lay out, place.

One ``Step`` is one C function. Lowering walks the spec's layers once, in their (topological)
order; a layer reads the values it names in ``inputs``, else the layer before it:

* Dropout is the identity and disappears; Flatten and Reshape are views when the values are
  already in the order they need, otherwise a ``CopyStep`` reorders them.
* BatchNormalization that alone reads a linear Conv2D / DepthwiseConv2D / Dense is folded into its
  kernel and bias (``kernel * inv``, ``bias * inv + beta - moving_mean * inv`` with
  ``inv = gamma / sqrt(moving_variance + epsilon)``), wherever the graph lists it; anywhere else
  it is an ``AffineStep``.
* ZeroPadding2D read only by a Conv2D of the same data_format becomes extra conv padding (out of
  image taps are skipped, so nothing is materialised); anywhere else a ``PadStep``.
* A Conv2D is fused with the element-wise layers after it and with a following non-overlapping
  pooling layer (strides >= pool_size: every conv output is computed once) and the element-wise
  layers after that: conv + maxpool + tanh is one loop that never stores the conv output. Fusing
  needs the later layer to be the only reader of the value, and to read nothing else.
* Element-wise merges (Add, Subtract, Multiply, Average, Maximum, Minimum) are a ``MergeStep``
  with the activation after them fused in; Concatenate a ``ConcatStep`` that copies each input
  into its block; values read by several layers stay stored.
* Element-wise layers (Activation except softmax, Rescaling) elsewhere form an
  ``ElementwiseStep``; softmax is a ``SoftmaxStep`` along the model's last axis.

Layouts: a tensor's ``dims`` are its shape as Keras sees it (the layer's data_format); its
``strides`` say where the values sit in the C buffer. Windowed steps write one plane per channel
(CHW, whatever the data_format) unless a later Flatten, Reshape or the model output wants
another order, which they then write directly. Memory: ``place_arena`` puts every value in one
static arena by liveness (in place where that is safe); the first steps read the caller's ``in``
and the last writes the caller's ``out``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from layerlab import geometry
from layerlab import spec as S
from layerlab.errors import ExportError
from layerlab.export.c.desugar import ONE_D, desugar
from layerlab.export.c.steps import (  # noqa: F401  (re-exported: plan.ConvStep etc.)
    AffineStep,
    Arena,
    ConcatStep,
    ConvStep,
    CopyStep,
    DenseStep,
    DepthwiseStep,
    ElementwiseStep,
    Image,
    Layout,
    MergeStep,
    Op,
    PadStep,
    Plan,
    Pool,
    PoolStep,
    PReLUStep,
    RemapStep,
    Slot,
    SoftmaxStep,
    Step,
    c_order,
    channels_inner,
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
    S.GlobalAveragePooling2D: "_global_pool", S.GlobalMaxPooling2D: "_global_pool",
    S.Concatenate: "_concat", S.Cropping2D: "_remap", S.UpSampling2D: "_remap", S.Permute: "_permute",
    S.PReLU: "_prelu",
    S.Add: "_merge", S.Subtract: "_merge", S.Multiply: "_merge", S.Average: "_merge", S.Maximum: "_merge", S.Minimum: "_merge",
}
_NOTES = {
    S.Conv2D: "Sequential chains; strides or dilation, any padding",
    S.Activation: "every activation; softmax only as the last layer's axis",
    S.ReLU: "as Activation: ReLU() and ReLU(max_value=6) only",
    S.DepthwiseConv2D: "Sequential chains; any depth_multiplier, strides, dilation, padding",
}
_DECLINED = {
}
_MERGES = (S.Add, S.Subtract, S.Multiply, S.Average, S.Maximum, S.Minimum)
_NOTES.update({cls: "graphs: any branches; a value read by several layers stays in the arena until its last reader"
               for cls in _MERGES})
C_INT8.decline(S.PReLU, "PReLU's per-value slopes have no int8 form yet; export float32")
C_FLOAT.register(S.Normalization, "_desugared", note="as a BatchNormalization x * (1 / spread) - mean / spread (desugar.py)")
C_INT8.decline(S.Normalization, "int8 folds a batch norm into the conv before it, and a Normalization has none; "
               "export float32, or scale the input before quantizing it")
for _backend in (C_FLOAT, C_INT8):
    _backend.register(S.SeparableConv2D, "_desugared", note="as Keras computes it: DepthwiseConv2D, then a 1x1 Conv2D (desugar.py)")
    _backend.register(ONE_D, "_desugared", note="as its 2-D form on an image of height 1 (desugar.py); Conv1D 'causal' too")
    for _cls, _method in _HANDLERS.items():
        if _backend is C_INT8 and _cls is S.PReLU:
            continue
        note = _NOTES.get(_cls, "")
        if _backend is C_INT8 and _cls in _MERGES:
            note = "inputs requantized to the output's scale; ReLU or ReLU6 after it; Multiply of two inputs"
        _backend.register(_cls, _method, note=note)
    _backend.register(S.ReLU, "_activation", note=_NOTES[S.ReLU])
    for _classes, _reason in _DECLINED.items():
        _backend.decline(_classes, _reason)


def _bn_inv(layer: S.BatchNormalization, w: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature (scale, shift) of an inference BatchNormalization, in float64 (folded into float32 weights)."""
    return layer_scale_shift(layer, w, dtype=np.float64)


@dataclass
class _Value:
    """A tensor the C code holds: its id (``input`` or ``t<k>``, shared by views), where its
    values sit, and the traced layer whose output they are (int8 calibration)."""

    id: str
    layout: Layout
    tap: str


class _Lowering:
    """One pass over the layers, in the spec's (topological) order.

    A layer reads the outputs it names in ``inputs``, else the layer before it. Layers after a
    conv or dense (its batch norm, activations, a pooling) are fused into its step when they
    alone read its value and read nothing else, wherever they come in the list (a graph lists
    branches interleaved). ``cur`` is the value being built, ``cur_name`` the layer it is the
    output of; ``done`` holds the layers already lowered.
    """

    def __init__(self, spec: S.Model, weights, channels_inner_memory: bool = False) -> None:
        self.infos = spec.infos
        self.image_layout = channels_inner if channels_inner_memory else planar_order
        self.weights = weights
        self.steps: list[Step] = []
        self.split_names = {info.layer.name: f"{info.layer.name}:activation" for info in self.infos}
        self.sources: list[tuple[str, ...]] = []
        previous = "input"
        for info in self.infos:
            self.sources.append(tuple(info.layer.inputs) if info.layer.inputs else (previous,))
            previous = info.layer.name
        self.readers: dict[str, list[int]] = {}
        for index, names in enumerate(self.sources):
            for name in names:
                self.readers.setdefault(name, []).append(index)
        self.done: set[int] = set()
        self.values: dict[str, _Value] = {"input": _Value("input", c_order(spec.input_shape), "input")}
        self.cur = self.values["input"]
        self.cur_name = "input"
        self.pending_pad: dict[int, _PendingPad] = {}
        self.output_name = self.infos[-1].layer.name

    @property
    def layout(self) -> Layout:
        return self.cur.layout

    @property
    def tap(self) -> str:
        return self.cur.tap

    # -- look-ahead helpers -------------------------------------------------------------------
    def _peek(self, name: str) -> int | None:
        """The layer that alone reads ``name``'s value and reads nothing else, if any."""
        readers = self.readers.get(name, [])
        if len(readers) != 1 or readers[0] in self.done or self.sources[readers[0]] != (name,):
            return None
        return readers[0]

    def _follower(self) -> int | None:
        """``_peek`` of the current value; Dropouts on the way (the identity) are consumed."""
        while True:
            j = self._peek(self.cur_name)
            if j is None or not isinstance(self.infos[j].layer, S.Dropout):
                return j
            self.done.add(j)
            self.cur_name = self.infos[j].layer.name
            self.values[self.cur_name] = self.cur

    def _consume(self, j: int) -> S.Layer:
        self.done.add(j)
        self.cur_name = self.infos[j].layer.name
        return self.infos[j].layer

    def _elementwise_op(self, j: int | None) -> Op | None:
        layer = self.infos[j].layer if j is not None else None
        if isinstance(layer, (S.Activation, S.ReLU)) and layer.as_activation() in ELEMENTWISE:
            return Op(layer.name, layer.as_activation())
        if isinstance(layer, S.Rescaling):
            return Op(layer.name, scale=float(layer.scale), offset=float(layer.offset))
        return None

    def _take_elementwise(self) -> tuple[list[Op], str | None]:
        """Consume the element-wise layers that follow the current value; return them and the last name."""
        ops: list[Op] = []
        last = None
        while True:
            j = self._follower()
            op = self._elementwise_op(j)
            if op is None:
                return ops, last
            self._consume(j)
            ops.append(op)
            last = op.layer

    def _wanted(self, dims: tuple[int, ...], data_format: str) -> Layout:
        """The layout the value being built should be written in: what the layers after it want."""
        name = self.cur_name
        while (j := self._peek(name)) is not None:
            layer = self.infos[j].layer
            if isinstance(layer, S.Flatten):
                return ordered(dims, _flatten_order(len(dims), layer.data_format))
            if isinstance(layer, S.Reshape):
                return c_order(dims)
            if not isinstance(layer, (S.Dropout, S.Activation, S.ReLU, S.Rescaling, S.BatchNormalization)):
                return self.image_layout(dims, data_format)
            name = layer.name
        return c_order(dims) if name == self.output_name else self.image_layout(dims, data_format)

    # -- the pass -------------------------------------------------------------------------------
    def run(self) -> list[Step]:
        for info in self.infos:
            if info.index in self.done:
                continue
            layer = info.layer
            method = C_FLOAT.lookup(layer, info.index)
            if isinstance(layer, S.ReLU) and layer.as_activation() is None:
                raise _unsupported(info, f"is ReLU(max_value={layer.max_value}, negative_slope={layer.negative_slope}, "
                                   f"threshold={layer.threshold}); C has ReLU() and ReLU(max_value=6) only")
            self.done.add(info.index)
            if not layer.merge:
                self.cur_name = self.sources[info.index][0]
                self.cur = self.values[self.cur_name]
            getattr(self, method)(info)
        final = self.values[self.output_name]
        self.cur, self.cur_name = final, self.output_name
        if not final.layout.same_memory(c_order(final.layout.dims)) or final.id == "input":
            # the caller's out is C order; a model of views only (Flatten, Dropout) still copies in to out
            self._copy(c_order(final.layout.dims), ())
        return self.steps

    def _add(self, step: Step, sources: tuple[_Value, ...] | None = None) -> None:
        """Append ``step``: it reads ``sources`` (default: the current value) and writes a new value,
        which becomes the current one and the value of ``cur_name``."""
        reads = sources if sources is not None else (self.cur,)
        step.sources = tuple(v.id for v in reads)
        step.target = f"t{len(self.steps)}"
        self.steps.append(step)
        self.cur = _Value(step.target, step.output, step.taps["out"])
        self.values[self.cur_name] = self.cur

    def _copy(self, out: Layout, layers) -> None:
        self._add(CopyStep(layers=tuple(layers), input=self.layout, output=out, taps={"out": self.tap}))

    def _view(self, layout: Layout, name: str) -> None:
        """``name``'s value is the current one read in ``layout`` (same memory, nothing runs)."""
        self.cur = _Value(self.cur.id, layout, name)
        self.values[name] = self.cur

    def _fold_batchnorm(self, kernel: np.ndarray, bias: np.ndarray | None, axis_ok) -> tuple[np.ndarray, np.ndarray | None, list, str | None]:
        """Fold the BatchNormalization that alone reads the current value (Dropouts between are fine)."""
        j = self._follower()
        layer = self.infos[j].layer if j is not None else None
        if not isinstance(layer, S.BatchNormalization) or not axis_ok(self.infos[j]):
            return kernel, bias, [], None
        self._consume(j)
        inv, shift = _bn_inv(layer, self.weights[layer.name])
        kernel = (kernel.astype(np.float64) * inv).astype(np.float32)  # scales the last (output) axis
        base = np.zeros(inv.shape) if bias is None else bias.astype(np.float64)
        return kernel, (base * inv + shift).astype(np.float32), [(layer.name, layer.type)], layer.name

    def _conv(self, info: S.LayerInfo) -> None:
        layer: S.Conv2D = info.layer
        weights = self.weights[layer.name]
        image = self.layout.image(layer.data_format)
        names = [(layer.name, layer.type)]
        self.cur_name = layer.name
        win = self._padded_window(info, image, layer, names)
        kernel, bias = weights["kernel"], weights.get("bias")
        taps = {"acc": layer.name}
        pre: list[Op] = []
        kernel, bias = self._fold_or_activate(layer, kernel, bias, names, taps, pre, 0 if layer.data_format == CHANNELS_FIRST else 2)
        softmax_act = layer.activation == "softmax"
        if not softmax_act:  # element-wise layers after a softmax stay after it
            more, _ = self._take_elementwise()
            pre += more
            names += [(op.layer, _op_type(op)) for op in more]
        pool = None
        post: list[Op] = []
        j = self._follower() if not softmax_act else None
        nxt = self.infos[j].layer if j is not None else None
        if (isinstance(nxt, (S.MaxPooling2D, S.AveragePooling2D)) and nxt.data_format == layer.data_format
                and all(s >= p for s, p in zip(nxt.strides, nxt.pool_size, strict=True))):
            pool_win = nxt.window(self.infos[j].input_shapes[0])
            pool = Pool("max" if isinstance(nxt, S.MaxPooling2D) else "avg", pool_win, nxt.name)
            names.append((nxt.name, nxt.type))
            self._consume(j)
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
        out = self._wanted(tuple(dims), layer.data_format)
        self._add(ConvStep(layers=tuple(names), input=self.layout, output=out, taps=taps, kernel_hwio=kernel, bias=bias,
                           window=win, data_format=layer.data_format, pre=tuple(pre), pool=pool, post=tuple(post)))
        if softmax_act:
            self._softmax_step(((self.split_names[layer.name], "softmax"),), self.split_names[layer.name])

    def _fold_or_activate(self, layer, kernel, bias, names: list, taps: dict, pre: list, channel_axis: int):
        """A linear conv / depthwise / dense takes the batch norm after it into its weights (when
        its ``channel_axis`` is the one normalised); one with an element-wise activation gets it
        as its first op (softmax stays a step of its own). Returns the (folded) kernel and bias."""
        if layer.activation == "linear":
            kernel, bias, bn_names, bn_tap = self._fold_batchnorm(
                kernel, bias, lambda bn: bn.layer.feature_axis(bn.input_shapes[0]) == channel_axis)
            names += bn_names
            taps["acc"] = bn_tap or layer.name
        elif layer.activation in ELEMENTWISE:
            pre.append(Op(self.split_names[layer.name], layer.activation))
        return kernel, bias

    def _then_elementwise(self, names: list, taps: dict, pre: list, take: bool = True) -> None:
        """Fuse the element-wise layers that follow (when ``take``) into ``pre``; set the taps."""
        if take:
            more, _ = self._take_elementwise()
            pre += more
            names += [(op.layer, _op_type(op)) for op in more]
        taps["out"] = pre[-1].layer if pre else taps["acc"]
        if pre:
            taps["pre_out"] = pre[-1].layer

    def _padded_window(self, info: S.LayerInfo, image, layer, names: list) -> geometry.Window2D:
        """The window of a conv or depthwise conv, with a ZeroPadding2D folded before it (its
        name goes first in ``names``): its zeros add to the layer's own padding, and out-of-image
        taps are skipped, so nothing is stored. Coordinates stay unpadded."""
        pending = self.pending_pad.pop(info.index, None)
        (pad_t, pad_b), (pad_l, pad_r) = pending.padding if pending is not None else ((0, 0), (0, 0))
        if pending is not None:
            names[:0] = list(pending.layers)
        win = geometry.window_2d(
            (image.h + pad_t + pad_b, image.w + pad_l + pad_r), layer.kernel_size, layer.strides, layer.padding, layer.dilation_rate
        )
        return replace(win, in_h=image.h, in_w=image.w, pad_top=win.pad_top + pad_t, pad_bottom=win.pad_bottom + pad_b,
                       pad_left=win.pad_left + pad_l, pad_right=win.pad_right + pad_r)

    def _depthwise(self, info: S.LayerInfo) -> None:
        layer: S.DepthwiseConv2D = info.layer
        weights = self.weights[layer.name]
        image = self.layout.image(layer.data_format)
        self.cur_name = layer.name
        names = [(layer.name, layer.type)]
        win = self._padded_window(info, image, layer, names)
        kernel_h, kernel_w, channels, multiplier = weights["kernel"].shape
        # (kh, kw, C, M) -> (kh, kw, 1, C * M): output channel c * M + m, as Keras orders them
        kernel, bias = weights["kernel"].reshape(kernel_h, kernel_w, 1, channels * multiplier), weights.get("bias")
        taps = {"acc": layer.name}
        pre: list[Op] = []
        if layer.activation == "softmax":
            raise _unsupported(info, "has activation softmax over channels; C export has softmax only as a last Dense/Activation")
        kernel, bias = self._fold_or_activate(layer, kernel, bias, names, taps, pre, 0 if layer.data_format == CHANNELS_FIRST else 2)
        self._then_elementwise(names, taps, pre)
        out = self._wanted(tuple(info.output_shape), layer.data_format)
        self._add(DepthwiseStep(layers=tuple(names), input=self.layout, output=out, taps=taps, kernel_hwio=kernel, bias=bias,
                                window=win, data_format=layer.data_format, multiplier=multiplier, pre=tuple(pre)))

    def _dense(self, info: S.LayerInfo) -> None:
        layer: S.Dense = info.layer
        if len(self.layout.dims) != 1:
            raise _unsupported(info, f"reads a tensor of shape {self.layout.dims}; C export needs a Flatten before Dense")
        weights = self.weights[layer.name]
        self.cur_name = layer.name
        kernel, bias = weights["kernel"], weights.get("bias")
        names = [(layer.name, layer.type)]
        taps = {"acc": layer.name}
        pre: list[Op] = []
        kernel, bias = self._fold_or_activate(layer, kernel, bias, names, taps, pre, 0)
        self._then_elementwise(names, taps, pre, take=layer.activation != "softmax")  # a softmax's followers stay after it
        self._add(DenseStep(layers=tuple(names), input=self.layout, output=c_order(info.output_shape), taps=taps,
                            kernel=kernel, bias=bias, pre=tuple(pre)))
        if layer.activation == "softmax":
            self._softmax_step(((self.split_names[layer.name], "softmax"),), self.split_names[layer.name])

    def _softmax_step(self, layers, tap: str) -> None:
        self._add(SoftmaxStep(layers=tuple(layers), input=self.layout, output=self.layout, taps={"in": self.tap, "out": tap}))

    def _pool(self, info: S.LayerInfo) -> None:
        layer = info.layer
        self.cur_name = layer.name
        pool = Pool("max" if isinstance(layer, S.MaxPooling2D) else "avg", layer.window(info.input_shapes[0]), layer.name)
        out = self._wanted(tuple(info.output_shape), layer.data_format)
        self._add(PoolStep(layers=((layer.name, layer.type),), input=self.layout, output=out, taps={"out": layer.name},
                           pool=pool, data_format=layer.data_format))

    def _global_pool(self, info: S.LayerInfo) -> None:
        """A pooling window over the whole image: the mean (or max) of each channel."""
        layer = info.layer
        self.cur_name = layer.name
        image = self.layout.image(layer.data_format)
        window = geometry.window_2d((image.h, image.w), (image.h, image.w), (1, 1), "valid", (1, 1))
        kind = "max" if isinstance(layer, S.GlobalMaxPooling2D) else "avg"
        dims = (image.c, 1, 1) if layer.data_format == CHANNELS_FIRST else (1, 1, image.c)
        self._add(PoolStep(layers=((layer.name, layer.type),), input=self.layout, output=self.image_layout(dims, layer.data_format),
                           taps={"out": layer.name}, pool=Pool(kind, window, layer.name), data_format=layer.data_format))
        if not layer.keepdims:  # (C,): the same memory, one value per channel
            self._view(c_order(tuple(info.output_shape)), layer.name)

    def _pad(self, info: S.LayerInfo) -> None:
        layer: S.ZeroPadding2D = info.layer
        self.cur_name = layer.name
        j = self._peek(layer.name)
        nxt = self.infos[j].layer if j is not None else None
        if isinstance(nxt, (S.Conv2D, S.DepthwiseConv2D)) and nxt.data_format == layer.data_format:
            # Folded into the conv (see _padded_window): out-of-image taps are skipped, nothing is stored.
            self.pending_pad[j] = _PendingPad(layers=((layer.name, layer.type),), input=self.layout, output=self.layout,
                                              padding=layer.padding, data_format=layer.data_format)
            self.values[layer.name] = self.cur
            return
        out = self._wanted(tuple(info.output_shape), layer.data_format)
        self._add(PadStep(layers=((layer.name, layer.type),), input=self.layout, output=out, taps={"out": layer.name},
                          padding=layer.padding, data_format=layer.data_format))

    def _flatten(self, info: S.LayerInfo) -> None:
        layer: S.Flatten = info.layer
        self.cur_name = layer.name
        want = ordered(self.layout.dims, _flatten_order(len(self.layout.dims), layer.data_format))
        if not self.layout.same_memory(want):
            self._copy(want, ((layer.name, layer.type),))
        self._view(c_order(info.output_shape), layer.name)  # the values are in flatten order now

    def _reshape(self, info: S.LayerInfo) -> None:
        layer = info.layer
        self.cur_name = layer.name
        if not self.layout.same_memory(c_order(self.layout.dims)):
            self._copy(c_order(self.layout.dims), ((layer.name, layer.type),))
        self._view(c_order(info.output_shape), layer.name)

    def _batchnorm(self, info: S.LayerInfo) -> None:
        layer: S.BatchNormalization = info.layer
        self.cur_name = layer.name
        scale, shift = _bn_inv(layer, self.weights[layer.name])
        self._add(AffineStep(layers=((layer.name, layer.type),), input=self.layout, output=self.layout,
                             taps={"in": self.tap, "out": layer.name}, scale=scale.astype(np.float32),
                             shift=shift.astype(np.float32), axis=layer.feature_axis(info.input_shapes[0])))

    def _dropout(self, info: S.LayerInfo) -> None:
        self.values[info.layer.name] = self.cur  # the identity at inference

    def _activation(self, info: S.LayerInfo) -> None:
        layer = info.layer
        self.cur_name = layer.name
        if isinstance(layer, S.Activation) and layer.activation == "softmax":
            self._softmax_step(((layer.name, "softmax"),), layer.name)
            return
        tap_in = self.tap
        ops = [self._elementwise_op(info.index)]
        more, last = self._take_elementwise()
        ops += more
        self._add(ElementwiseStep(layers=tuple((op.layer, _op_type(op)) for op in ops),
                                  input=self.layout, output=self.layout, taps={"in": tap_in, "out": last or layer.name}, ops=tuple(ops)))

    def _prelu(self, info: S.LayerInfo) -> None:
        layer = info.layer
        self.cur_name = layer.name
        dims = self.layout.dims
        alpha = np.broadcast_to(self.weights[layer.name]["alpha"], dims)  # Keras' shape, 1 on the shared axes
        flat = np.empty(self.layout.size, np.float32)
        index = sum(np.indices(dims)[a] * self.layout.strides[a] for a in range(len(dims)))  # memory offset of each value
        flat[index.reshape(-1)] = alpha.reshape(-1)
        self._add(PReLUStep(layers=((layer.name, layer.type),), input=self.layout, output=self.layout,
                            taps={"in": self.tap, "out": layer.name}, alpha=flat))

    def _remap(self, info: S.LayerInfo) -> None:
        """Cropping2D and UpSampling2D (nearest): one copy, each output cell from one input cell."""
        layer = info.layer
        self.cur_name = layer.name
        cf = layer.data_format == CHANNELS_FIRST
        if isinstance(layer, S.Cropping2D):
            (top, _), (left, _) = layer.cropping
            up, offset = (1, 1, 1), ((0, top, left) if cf else (top, left, 0))
        else:
            height, width = layer.size
            up, offset = ((1, height, width) if cf else (height, width, 1)), (0, 0, 0)
        out = self._wanted(tuple(info.output_shape), layer.data_format)
        self._add(RemapStep(layers=((layer.name, layer.type),), input=self.layout, output=out, taps={"out": layer.name},
                            up=up, offset=offset))

    def _permute(self, info: S.LayerInfo) -> None:
        """Permute is a view: the same values, their axes read in another order (no copy)."""
        layer: S.Permute = info.layer
        self.cur_name = layer.name
        strides = tuple(self.layout.strides[d - 1] for d in layer.dims)  # dims count from 1, batch excluded
        self._view(Layout(tuple(info.output_shape), strides), layer.name)

    def _concat(self, info: S.LayerInfo) -> None:
        layer: S.Concatenate = info.layer
        reads = tuple(self.values[name] for name in self.sources[info.index])
        dims = tuple(info.output_shape)
        axis = (layer.axis if layer.axis >= 0 else len(dims) + 1 + layer.axis) - 1  # Keras counts the batch axis
        # Channel planes stay channel planes: the layout of the first input, for the whole output.
        first = reads[0].layout
        out = c_order(dims)
        if len(dims) == 3:
            for fmt in (S.CHANNELS_LAST, CHANNELS_FIRST):
                if first.same_memory(self.image_layout(first.dims, fmt)):
                    out = self.image_layout(dims, fmt)
                    break
        self.cur_name = layer.name
        taps = {"in": ",".join(v.tap for v in reads), "out": layer.name}
        self._add(ConcatStep(layers=((layer.name, layer.type),), input=first, output=out, taps=taps, axis=axis,
                             inputs=tuple(v.layout for v in reads)), sources=reads)

    def _merge(self, info: S.LayerInfo) -> None:
        """An element-wise merge of values of one layout. An input with size-1 axes that Keras
        stretches (a squeeze-and-excite gate, (1, 1, C) against (H, W, C)) is first copied out to
        the full shape (a remap whose ``up`` is the stretch), so the merge itself stays one loop
        over equal layouts; it costs the arena one more full-size value while it lives."""
        layer = info.layer
        full = tuple(info.output_shape)
        reads = [self.values[name] for name in self.sources[info.index]]
        whole = [v.layout for v in reads if v.layout.dims == full]
        first = whole[0] if whole else c_order(full)
        for k, value in enumerate(reads):
            if value.layout.same_memory(first):
                continue
            self.cur, self.cur_name = value, self.sources[info.index][k]
            if value.layout.dims == full:  # one layout for all: reorder the odd one
                self._copy(first, ())
            else:
                up = tuple(f if d == 1 else 1 for f, d in zip(full, value.layout.dims, strict=True))
                self._add(RemapStep(layers=(), input=value.layout, output=first, taps={"out": self.tap},
                                    up=up, offset=(0,) * len(full)))
                self.values[self.cur_name] = value  # its other readers read it as it is
            reads[k] = self.cur
        self.cur_name = layer.name
        names = [(layer.name, layer.type)]
        ops, _ = self._take_elementwise()
        names += [(op.layer, _op_type(op)) for op in ops]
        taps = {"in": ",".join(v.tap for v in reads), "acc": layer.name, "out": ops[-1].layer if ops else layer.name}
        if ops:
            taps["pre_out"] = ops[-1].layer
        self._add(MergeStep(layers=tuple(names), input=first, output=first, taps=taps, operation=layer.operation, pre=tuple(ops)),
                  sources=tuple(reads))


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
    """The spec with each Conv2D / Dense activation as its own Activation layer (same values).
    A layer that names such a layer among its inputs reads its Activation."""
    def splits(layer: S.Layer) -> bool:
        return isinstance(layer, (S.Conv2D, S.DepthwiseConv2D, S.Dense)) and layer.activation != "linear"

    split = {layer.name for layer in spec.layers if splits(layer)}
    layers: list[S.Layer] = []
    for layer in spec.layers:
        if split.intersection(layer.inputs):
            layer = replace(layer, inputs=tuple(split_names[name] if name in split else name for name in layer.inputs))
        if splits(layer):
            layers.append(replace(layer, activation="linear"))
            layers.append(S.Activation(name=split_names[layer.name], activation=layer.activation))
        else:
            layers.append(layer)
    return S.Model(name=spec.name, input_shape=spec.input_shape, layers=tuple(layers))


def place_arena(steps: list[Step], *, input_in_arena: bool = False) -> Arena:
    """Place every value in one static arena by liveness; set each step's ``srcs`` and ``dst``.

    A value lives from the step that writes it to the last step that reads it; two values share
    memory only when their lives do not overlap. A step that may work in place (an activation,
    an unfolded batch norm, a softmax, an element-wise merge) writes over the value it reads when
    that value dies there and has the same size and layout (a merge over one of its inputs). The
    model input is the caller's ``in`` (const, never written; with ``input_in_arena`` it also
    gets a slot, where the int8 wrapper puts the quantized input), the last value is the caller's
    ``out``. Slots are placed largest first at the lowest offset free for their whole life
    (TFLite Micro's greedy planner does the same).
    """
    final = steps[-1].target
    size: dict[str, int] = {"input": steps[0].input.size}
    layout: dict[str, Layout] = {}
    last_read: dict[str, int] = {}
    for k, step in enumerate(steps):
        for value in step.sources:
            last_read[value] = k
        size[step.target] = step.output.size
        layout[step.target] = step.output
    group: dict[str, str] = {}  # value -> the first value of its slot

    def root(value: str) -> str:
        while value in group:
            value = group[value]
        return value

    for k, step in enumerate(steps):
        if not step.in_place_ok:
            continue
        for value in step.sources:
            if value == "input" or last_read.get(value) != k or size[value] != size[step.target]:
                continue  # the caller's const input, a value read later, or one of another size
            if step.kind == "merge" and not layout[value].same_memory(step.output):
                continue
            group[step.target] = root(value)
            break
    slots_of: dict[str, list[str]] = {}
    for value in ["input", *(step.target for step in steps)]:
        slots_of.setdefault(root(value), []).append(value)
    first_write = {step.target: k for k, step in enumerate(steps)} | {"input": 0}

    def life(value: str) -> tuple[int, int]:
        return first_write[value], last_read.get(value, first_write[value])

    lives = []
    for head, values in slots_of.items():
        if head == root(final) or (head == "input" and not input_in_arena):
            continue  # the caller's out, and (float) the caller's in
        lives.append((size[head], min(life(v)[0] for v in values), max(life(v)[1] for v in values), tuple(values)))
    placed: list[Slot] = []
    for length, begin, end, values in sorted(lives, key=lambda t: (-t[0], t[1], t[3])):
        offset = 0
        for other in sorted((o for o in placed if o.first <= end and begin <= o.last), key=lambda o: o.offset):
            if offset + length <= other.offset:
                break
            offset = max(offset, other.offset + other.size)
        placed.append(Slot(offset, length, values, begin, end))
    where = {value: f"arena + {slot.offset}" if slot.offset else "arena" for slot in placed for value in slot.values}
    for value in slots_of[root(final)]:
        where[value] = "out"
    if not input_in_arena or "input" not in where:
        where["input"] = "in"
    for step in steps:
        step.srcs = tuple("in" if v == "input" else where[v] for v in step.sources)
        step.dst = where[step.target]
    total = max((slot.offset + slot.size for slot in placed), default=0)
    in_arena = [v for slot in placed for v in slot.values]
    alive = [tuple(v for v in in_arena if life(v)[0] <= k <= life(v)[1]) for k in range(len(steps))]
    peak = max(range(len(steps)), key=lambda k: sum(size[v] for v in alive[k]))
    input_slot = next((slot.offset for slot in placed if "input" in slot.values), None)
    return Arena(size=total, slots=tuple(sorted(placed, key=lambda o: (o.offset, o.first))), peak_step=peak,
                 peak_values=alive[peak], input_offset=input_slot)


def lower(spec: S.Model, weights, *, int8: bool = False) -> Plan:
    """Lower ``spec`` with Keras-layout ``weights`` to a ``Plan`` (composite and 1-D layers
    rewritten first, see ``desugar``). Image tensors are written channel plane by channel plane
    for float32 (neighbouring x positions vectorize), channels side by side for ``int8`` (a Cortex-M
    reads four channels as one word for SMLAD).

    Raises:
        ExportError: a layer or arrangement that has no C implementation (named).
    """
    backend = C_INT8 if int8 else C_FLOAT
    for info in spec.infos:  # the user's own layers, before any is rewritten as others
        backend.lookup(info.layer, info.index)
    spec, weights = desugar(spec, weights)
    lowering = _Lowering(spec, weights, channels_inner_memory=int8)
    steps = lowering.run()
    arena = place_arena(steps)
    return Plan(steps=steps, input=c_order(spec.input_shape), output=c_order(spec.output_shape), arena=arena,
                calibration_spec=_calibration_spec(spec, lowering.split_names), weights=weights)
