"""A layerlab network (spec + Keras-layout weights) -> an NNC network that nnabla runs identically.

The exported network takes N-C-H-W input whatever the Keras data_format (NNC's only layout on a
CPU); a channels_last model's input (N, H, W, C) must be transposed with ``(0, 3, 1, 2)``, a
sequence (N, L, C) with ``(0, 2, 1)``. nnabla pools 2-D windows only: a 1-D pooling is a pooling
of height 1 between two Reshapes. SeparableConv2D is a DepthwiseConvolution ``NAME_depthwise``
(no bias) and a 1x1 Convolution ``NAME``; ``layerlab.nnc.simplify`` folds both back on import.
Padding: Keras 'same' convolution padding becomes NNC's symmetric pad where Keras pads
symmetrically, else a Pad function (zeros) before a pad-0 Convolution. Keras 'same' pooling becomes
NNC pooling with Keras' pad before and the ignore_border that gives Keras' output size (see
``windows.keras_pool_to_nnc``); where none does, max pooling gets a Pad function filled with -inf.
Flatten emits no function: NNC's Affine flattens C-H-W itself, so the Dense kernel rows are
reordered from Keras' Flatten order instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from layerlab import spec as S
from layerlab.errors import NNCError
from layerlab.network import Network
from layerlab.nnc import files, schema, windows
from layerlab.nnc.functions import flatten_perm, same_order
from layerlab.registry import NNC_EXPORT
from layerlab.text import printable

_ACTIVATIONS = {"relu": "ReLU", "relu6": "ReLU6", "tanh": "Tanh", "sigmoid": "Sigmoid", "softmax": "Softmax"}
_MERGES = {S.Add: "Add2", S.Subtract: "Sub2", S.Multiply: "Mul2", S.Maximum: "Maximum2", S.Minimum: "Minimum2", S.Average: "Add2"}
_INITIALIZERS = {"zeros": ("Constant", 0.0), "ones": ("Constant", 1.0)}


@dataclass(frozen=True)
class ExportRow:
    """One Keras layer and the NNC functions written for it (none: an alias), with a caveat."""

    layer: str
    kind: str
    functions: tuple[str, ...]
    caveat: str = ""


@dataclass
class _Out:
    """A Keras tensor as an NNC variable: its name, NNC shape (no batch), and for a flattened
    tensor the NNC feature index at each Keras position (None: same order)."""

    var: str
    shape: tuple[int, ...]
    flat: bool = False
    perm: np.ndarray | None = None


def nnc_init(model: S.Model, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """NNC's default parameters for a spec: kernels N(0, sqrt(2 / (fan_in + fan_out))) with the
    kernel size folded into both fans (NormalConvolutionGlorot / NormalAffineGlorot), biases 0,
    BatchNormalization gamma 1, beta 0, mean 0, variance 1."""
    rng = np.random.default_rng(seed)
    weights: dict[str, dict[str, np.ndarray]] = {}
    for info in model.infos:
        arrays = {}
        for name, shape in info.layer.weight_shapes(info.input_shapes[0]).items():
            if name == "kernel":
                receptive = math.prod(shape[:-2])
                std = math.sqrt(2.0 / (receptive * (shape[-2] + shape[-1])))
                arrays[name] = rng.normal(0.0, std, size=shape).astype(np.float32)
            else:
                fill = 1.0 if name in ("gamma", "moving_variance") else 0.0
                arrays[name] = np.full(shape, fill, np.float32)
        if arrays:
            weights[info.layer.name] = arrays
    return weights


def _data_format(model: S.Model) -> str:
    formats = {l.data_format for l in model.layers if hasattr(l, "data_format") and not isinstance(l, S.Flatten)}
    if len(formats) > 1:
        raise NNCError(f"model '{model.name}' mixes data formats {sorted(formats)}; NNC export needs one")
    return formats.pop() if formats else S.CHANNELS_FIRST


def _nnc_shape(shape: tuple[int, ...], df: str) -> tuple[int, ...]:
    """A Keras shape (no batch) in NNC's channels-first order: (H, W, C) -> (C, H, W), (L, C) -> (C, L)."""
    if df == S.CHANNELS_LAST and len(shape) in (2, 3):
        return (shape[-1], *shape[:-1])
    return tuple(shape)


class _Writer:
    def __init__(self, net: Network, network_name: str):
        self.net = net
        self.spec = net.spec
        self.df = _data_format(self.spec)
        self.proto = schema.new("NNablaProtoBuf", version="0.1")
        ctx = self.proto.global_config.default_context
        ctx.backends.append("cpu:float")
        ctx.array_class = "CpuCachedArray"
        self.network = self.proto.network.add(name=network_name, batch_size=1)
        self.params: dict[str, np.ndarray] = {}
        self.rows: list[ExportRow] = []
        self.outs: dict[str, _Out] = {}
        self.names: set[str] = set()
        # A symmetric ZeroPadding2D folded into the Convolution that follows it.
        self.pending_pad = (0, 0)

    # -- proto helpers -------------------------------------------------------------------------
    def buffer(self, name: str, shape: tuple[int, ...]) -> str:
        var = self.network.variable.add(name=name, type="Buffer")
        var.shape.dim.extend((-1, *shape))
        return name

    def parameter(self, name: str, array: np.ndarray, init: tuple[str, float] | None = None) -> str:
        var = self.network.variable.add(name=name, type="Parameter")
        var.shape.dim.extend(array.shape)
        if init:
            var.initializer.type, var.initializer.multiplier = init
        self.params[name] = np.ascontiguousarray(array, np.float32)
        return name

    def function(self, name: str, kind: str, inputs: list[str], shape: tuple[int, ...], **param) -> str:
        name = self.unique(name)
        fn = self.network.function.add(name=name, type=kind)
        fn.input.extend(inputs)
        fn.output.append(self.buffer(name, shape))
        for field_name, values in param.items():
            target = getattr(fn, field_name)
            for key, value in values.items():
                if isinstance(value, (tuple, list)) and key not in ("axes", "pad_width", "start", "stop", "step"):
                    getattr(target, key).dim.extend(value)
                elif isinstance(value, (tuple, list)):
                    getattr(target, key).extend(value)
                else:
                    setattr(target, key, value)
            if not values:
                target.SetInParent()
        return name

    def unique(self, base: str) -> str:
        name, n = base, 2
        while name in self.names:
            name, n = f"{base}_{n}", n + 1
        self.names.add(name)
        return name

    def materialize(self, out: _Out, layer: str) -> _Out:
        """A flattened alias as a real (batch, features) NNC variable (C-H-W order)."""
        if not out.flat or len(out.shape) == 1:
            return out
        size = math.prod(out.shape)
        var = self.function(f"{layer}_reshape", "Reshape", [out.var], (size,), reshape_param={"shape": (-1, size)})
        return _Out(var, (size,), False, out.perm)

    # -- the walk ------------------------------------------------------------------------------
    def run(self) -> None:
        spec = self.spec
        in_shape = _nnc_shape(spec.input_shape, self.df)
        x = self.buffer(self.unique("x"), in_shape)
        self.outs["input"] = _Out(x, in_shape)
        previous = "input"
        consumers: dict[str, int] = {}
        for layer in spec.layers:
            for source in layer.inputs or ():
                consumers[source] = consumers.get(source, 0) + 1
        for index, info in enumerate(spec.infos):
            layer = info.layer
            sources = [self.outs[n] for n in layer.inputs] if layer.inputs else [self.outs[previous]]
            nxt = spec.layers[index + 1] if index + 1 < len(spec.layers) else None
            out, funcs, caveat = self.layer(layer, sources, info, nxt, consumers.get(layer.name, 0))
            self.outs[layer.name] = out
            self.rows.append(ExportRow(layer.name, layer.type, tuple(funcs), caveat))
            previous = layer.name
        final = self.materialize(self.outs[previous], "output")
        if final.perm is not None:
            raise NNCError(f"model '{spec.name}': its output is in Keras' Flatten order, which NNC cannot reproduce")
        executor = self.proto.executor.add(name="Executor", network_name=self.network.name)
        executor.data_variable.add(variable_name=x, data_name="x")
        executor.output_variable.add(variable_name=final.var, data_name="y")
        for name in self.params:
            executor.parameter_variable.add(variable_name=name)

    def layer(self, layer: S.Layer, sources: list[_Out], info: S.LayerInfo, nxt: S.Layer | None, extra_consumers: int):
        """The NNC functions of one layer (the NNC_EXPORT table's method)."""
        method = NNC_EXPORT.lookup(layer)
        shape_out = _nnc_shape(info.output_shape, self.df)
        return getattr(self, method)(layer, sources, info, nxt, extra_consumers, shape_out)

    def _zero_padding(self, layer, sources, info, nxt, extra_consumers, shape_out):
        x = sources[0]
        if isinstance(layer, S.ZeroPadding1D):
            var = self.function(layer.name, "Pad", [x.var], shape_out, pad_param={"pad_width": layer.padding, "mode": "constant", "constant_value": 0.0})
            return _Out(var, shape_out), [var], ""
        (top, bottom), (left, right) = layer.padding
        if (isinstance(nxt, S.Conv2D) and nxt.padding == "valid" and not nxt.inputs and not extra_consumers
                and top == bottom and left == right):
            self.pending_pad = (top, left)
            return _Out(x.var, x.shape), [], f"folded into the next Convolution as pad ({top}, {left})"
        var = self.function(layer.name, "Pad", [x.var], shape_out, pad_param={"pad_width": (top, bottom, left, right), "mode": "constant", "constant_value": 0.0})
        return _Out(var, shape_out), [var], ""

    def _crop(self, layer, sources, info, nxt, extra_consumers, shape_out):
        """Cropping2D as nnabla's Slice of (C, H, W), step 1."""
        x = self.materialize(sources[0], layer.name)
        channels, h, w = x.shape
        (top, bottom), (left, right) = layer.cropping
        var = self.function(layer.name, "Slice", [x.var], shape_out, slice_param={
            "start": (0, top, left), "stop": (channels, h - bottom, w - right), "step": (1, 1, 1)})
        return _Out(var, shape_out), [var], ""

    def _upsample(self, layer, sources, info, nxt, extra_consumers, shape_out):
        """UpSampling2D (nearest) as nnabla's Unpooling: each cell repeated kernel times."""
        x = self.materialize(sources[0], layer.name)
        var = self.function(layer.name, "Unpooling", [x.var], shape_out, unpooling_param={"kernel": tuple(layer.size)})
        return _Out(var, shape_out), [var], ""

    def _conv(self, layer, sources, info, nxt, extra_consumers, shape_out):
        return self.conv(layer, sources[0], info, shape_out)

    def _pool(self, layer, sources, info, nxt, extra_consumers, shape_out):
        if layer.rank == 2:
            return self.pool(layer, sources[0], info, shape_out)
        # nnabla pools 2-D windows only: the sequence (C, L) as an image (C, 1, L), and back.
        x = sources[0]
        channels, steps = x.shape
        image = self.function(f"{layer.name}_2d", "Reshape", [x.var], (channels, 1, steps), reshape_param={"shape": (-1, channels, 1, steps)})
        out, funcs, caveat = self.pool(layer, _Out(image, (channels, 1, steps)), info, (shape_out[0], 1, shape_out[1]), f"{layer.name}_pool")
        var = self.function(layer.name, "Reshape", [out.var], shape_out, reshape_param={"shape": (-1, *shape_out)})
        note = "as a 1-high 2-D pooling between Reshapes (nnabla pools 2-D windows only)"
        return _Out(var, shape_out), [image, *funcs, var], f"{note}; {caveat}" if caveat else note

    def _flatten(self, layer, sources, info, nxt, extra_consumers, shape_out):
        x = sources[0]
        perm = flatten_perm(x.shape, self.df, layer.data_format)
        return _Out(x.var, x.shape, True, perm), [], "no function: NNC's Affine flattens C-H-W itself; the Dense rows are reordered"

    def _dense(self, layer, sources, info, nxt, extra_consumers, shape_out):
        return self.dense(layer, sources[0])

    def _activation(self, layer, sources, info, nxt, extra_consumers, shape_out):
        activation = layer.as_activation()  # Activation, or a ReLU equal to relu / relu6
        if activation is None:
            raise NNCError(f"layer '{layer.name}' (ReLU): only ReLU() and ReLU(max_value=6) have an NNC export")
        return self.activation(activation, layer.name, sources[0])

    def _dropout(self, layer, sources, info, nxt, extra_consumers, shape_out):
        return sources[0], [], "no function: Dropout is the identity at inference (NNC's runtime network omits it)"

    def _rescaling(self, layer, sources, info, nxt, extra_consumers, shape_out):
        x, name = sources[0], layer.name
        funcs, var = [], x.var
        if layer.scale != 1.0:
            var = self.function(name, "MulScalar", [var], x.shape, mul_scalar_param={"val": float(layer.scale)})
            funcs.append(var)
        if layer.offset != 0.0:
            var = self.function(f"{name}_offset" if funcs else name, "AddScalar", [var], x.shape, add_scalar_param={"val": float(layer.offset)})
            funcs.append(var)
        return _Out(var, x.shape, x.flat, x.perm), funcs, ""

    def _batchnorm(self, layer, sources, info, nxt, extra_consumers, shape_out):
        return self.batch_norm(layer, sources[0], info)

    def _reshape(self, layer, sources, info, nxt, extra_consumers, shape_out):
        name = layer.name
        x = self.materialize(sources[0], name)
        if x.perm is not None or not same_order(x.shape, tuple(shape_out), self.df):
            raise NNCError(f"layer '{name}' (Reshape): {x.shape} -> {shape_out} in {self.df} has no exact NNC equivalent. Use channels_first")
        var = self.function(name, "Reshape", [x.var], shape_out, reshape_param={"shape": (-1, *shape_out)})
        return _Out(var, shape_out), [var], ""

    def _merge(self, layer, sources, info, nxt, extra_consumers, shape_out):
        return self.merge(layer, sources, shape_out)

    def _depthwise(self, layer, sources, info, nxt, extra_consumers, shape_out):
        """DepthwiseConv2D as nnabla's DepthwiseConvolution: W (C * M, kh, kw), channel c * M + m."""
        weights = self.net.weights[layer.name]
        bias = weights["bias"] if layer.use_bias else None
        var, funcs, caveat = self.depthwise(layer, layer.name, sources[0], info, weights["kernel"], bias, shape_out)
        out, more, _ = self.activation(layer.activation, f"{layer.name}_{layer.activation}", _Out(var, shape_out))
        return out, funcs + more, caveat

    def _separable(self, layer, sources, info, nxt, extra_consumers, shape_out):
        """SeparableConv2D as NNC builds it: a DepthwiseConvolution without bias named NAME_depthwise,
        then a 1x1 Convolution NAME with the bias, then the activation."""
        weights = self.net.weights[layer.name]
        channels = weights["depthwise_kernel"].shape[2] * layer.depth_multiplier
        middle = (channels, *shape_out[1:])
        var, funcs, caveat = self.depthwise(layer, f"{layer.name}_depthwise", sources[0], info, weights["depthwise_kernel"], None, middle,
                                            scope=f"{layer.name}_depthwise")
        kernel = weights["pointwise_kernel"].transpose(3, 2, 0, 1)  # (1, 1, in, out) -> (out, in, 1, 1)
        inputs = [var, self.parameter(f"{layer.name}/conv/W", kernel, self.init(layer.pointwise_initializer, "NormalConvolutionGlorot"))]
        if layer.use_bias:
            inputs.append(self.parameter(f"{layer.name}/conv/b", weights["bias"], self.init(layer.bias_initializer, None)))
        var = self.function(layer.name, "Convolution", inputs, shape_out, convolution_param={
            "base_axis": 1, "pad": (0, 0), "stride": (1, 1), "dilation": (1, 1), "group": 1})
        funcs.append(var)
        out, more, _ = self.activation(layer.activation, f"{layer.name}_{layer.activation}", _Out(var, shape_out))
        return out, funcs + more, caveat

    def depthwise(self, layer, name: str, x: _Out, info: S.LayerInfo, keras_kernel: np.ndarray, bias, shape_out, scope: str | None = None):
        """nnabla's DepthwiseConvolution of a (Keras) depthwise kernel (kh, kw, C, M), Keras' padding."""
        scope = scope or name
        src, funcs, pad, caveat = self.same_padding(layer, name, x, info)
        kh, kw, channels, multiplier = keras_kernel.shape
        kernel = keras_kernel.transpose(2, 3, 0, 1).reshape(channels * multiplier, kh, kw)
        inputs = [src, self.parameter(f"{scope}/depthwise_conv/W", kernel, self.init(layer.depthwise_initializer, None))]
        if bias is not None:
            inputs.append(self.parameter(f"{scope}/depthwise_conv/b", bias, self.init(layer.bias_initializer, None)))
        var = self.function(name, "DepthwiseConvolution", inputs, shape_out, depthwise_convolution_param={
            "base_axis": 1, "pad": pad, "stride": layer.strides, "dilation": layer.dilation_rate, "multiplier": multiplier})
        return var, funcs + [var], caveat

    def same_padding(self, layer, name: str, x: _Out, info: S.LayerInfo):
        """(source variable, [Pad function], NNC's symmetric pad, caveat) for a convolution's Keras
        padding: symmetric 'same' is NNC's own pad; asymmetric 'same' and 'causal' an explicit Pad."""
        win = layer.window(info.input_shapes[0])
        rank = layer.rank
        sides = ((win.pad_top, win.pad_bottom), (win.pad_left, win.pad_right))[-rank:]
        if all(before == after for before, after in sides):
            return x.var, [], tuple(before for before, _ in sides), ""
        widths = tuple(v for side in sides for v in side)
        padded = (x.shape[0], *(n + a + b for n, (a, b) in zip(x.shape[1:], sides, strict=True)))
        src = self.function(f"{name}_pad", "Pad", [x.var], padded, pad_param={"pad_width": widths, "mode": "constant", "constant_value": 0.0})
        kind = "'causal'" if layer.padding == "causal" else "'same'"
        return src, [src], (0,) * rank, f"Keras {kind} pads {sides}: an explicit Pad, NNC pads symmetrically"

    def _global_pool(self, layer, sources, info, nxt, extra_consumers, shape_out):
        """GlobalAveragePooling2D as NNC's GlobalAveragePooling; GlobalMaxPooling2D as a MaxPooling over
        the whole image; then a Reshape to (C,) unless keepdims."""
        x = self.materialize(sources[0], layer.name)
        channels, *sizes = x.shape
        name = layer.name if layer.keepdims and layer.rank == 2 else f"{layer.name}_pool"
        funcs = []
        if layer.reduce == "average":  # nnabla's GlobalAveragePooling takes (C, L) too
            var = self.function(name, "GlobalAveragePooling", [x.var], (channels, 1, 1))
        else:
            src = x.var
            if layer.rank == 1:
                src = self.function(f"{layer.name}_2d", "Reshape", [src], (channels, 1, *sizes), reshape_param={"shape": (-1, channels, 1, *sizes)})
                funcs.append(src)
                sizes = [1, *sizes]
            var = self.function(name, "MaxPooling", [src], (channels, 1, 1), max_pooling_param={
                "kernel": tuple(sizes), "stride": tuple(sizes), "ignore_border": True, "pad": (0, 0)})
        funcs.append(var)
        if tuple(shape_out) != (channels, 1, 1):
            var = self.function(layer.name, "Reshape", [var], shape_out, reshape_param={"shape": (-1, *shape_out)})
            funcs.append(var)
        return _Out(var, shape_out), funcs, ""

    def conv(self, layer: S.Conv2D | S.Conv1D, x: _Out, info: S.LayerInfo, shape_out):
        src, funcs, pad, caveat = self.same_padding(layer, layer.name, x, info)
        if self.pending_pad != (0, 0):  # a ZeroPadding2D before a 'valid' Conv2D
            pad, self.pending_pad = self.pending_pad, (0, 0)
        kernel = self.net.weights[layer.name]["kernel"]
        kernel = kernel.transpose(3, 2, 0, 1) if kernel.ndim == 4 else kernel.transpose(2, 1, 0)  # HWIO / KIO -> (out, in, *kernel)
        inputs = [src, self.parameter(f"{layer.name}/conv/W", kernel, self.init(layer.kernel_initializer, "NormalConvolutionGlorot"))]
        if layer.use_bias:
            inputs.append(self.parameter(f"{layer.name}/conv/b", self.net.weights[layer.name]["bias"], self.init(layer.bias_initializer, None)))
        conv_shape = shape_out
        var = self.function(layer.name, "Convolution", inputs, conv_shape, convolution_param={
            "base_axis": 1, "pad": pad, "stride": layer.strides, "dilation": layer.dilation_rate, "group": 1})
        funcs.append(var)
        out, more, _ = self.activation(layer.activation, f"{layer.name}_{layer.activation}", _Out(var, shape_out))
        return out, funcs + more, caveat

    def pool(self, layer, x: _Out, info: S.LayerInfo, shape_out, name: str | None = None):
        """A Keras pooling on the NNC image ``x`` (C, H, W) (a 1-D one on (C, 1, L)), as function ``name``."""
        name = name or layer.name
        kind = layer.reduce
        _, h, w = x.shape
        size, strides, _ = layer.window_args()
        ftype = "MaxPooling" if kind == "max" else "AveragePooling"
        field = "max_pooling_param" if kind == "max" else "average_pooling_param"
        try:
            nnc = windows.keras_pool_to_nnc(kind, (h, w), size, strides, layer.padding)
        except windows.NoExactMapping as exc:
            if kind != "max":
                raise NNCError(f"layer '{layer.name}' ({layer.type}): no exact NNC equivalent: {exc}. Use padding='valid' or an odd pool_size") from None
            win = layer.window(info.input_shapes[0])
            pads = (win.pad_top, win.pad_bottom, win.pad_left, win.pad_right)
            padded = (x.shape[0], h + pads[0] + pads[1], w + pads[2] + pads[3])
            src = self.function(f"{name}_pad", "Pad", [x.var], padded, pad_param={"pad_width": pads, "mode": "constant", "constant_value": float("-inf")})
            var = self.function(name, ftype, [src], shape_out, **{field: {
                "kernel": size, "stride": strides, "ignore_border": True, "pad": (0, 0)}})
            return _Out(var, shape_out), [src, var], f"Keras 'same' pads {pads}: an explicit Pad with -inf, which never wins"
        param = {"kernel": size, "stride": strides, "ignore_border": nnc.ignore_border, "pad": nnc.pad}
        if kind == "average":
            param["including_pad"] = nnc.including_pad
        var = self.function(name, ftype, [x.var], shape_out, **{field: param})
        caveat = ""
        if layer.padding == "same":
            caveat = f"Keras 'same' = ignore_border={str(nnc.ignore_border).lower()}, pad {nnc.pad}" + (", including_pad=false" if kind == "average" else "")
        return _Out(var, shape_out), [var], caveat

    def dense(self, layer: S.Dense, x: _Out):
        kernel = self.net.weights[layer.name]["kernel"]
        if x.perm is not None:
            reordered = np.empty_like(kernel)
            reordered[x.perm] = kernel  # Keras row j is NNC feature perm[j]
            kernel = reordered
        inputs = [x.var, self.parameter(f"{layer.name}/affine/W", kernel, self.init(layer.kernel_initializer, "NormalAffineGlorot"))]
        if layer.use_bias:
            inputs.append(self.parameter(f"{layer.name}/affine/b", self.net.weights[layer.name]["bias"], self.init(layer.bias_initializer, None)))
        var = self.function(layer.name, "Affine", inputs, (layer.units,), affine_param={"base_axis": 1})
        out, more, _ = self.activation(layer.activation, f"{layer.name}_{layer.activation}", _Out(var, (layer.units,)))
        caveat = "Affine W rows reordered from Keras' Flatten order (H-W-C) to NNC's C-H-W" if x.perm is not None else ""
        return out, [var, *more], caveat

    def activation(self, act: str, name: str, x: _Out):
        if act == "linear":
            return x, [], ""
        if act not in _ACTIVATIONS:
            raise NNCError(f"activation '{act}' in '{name}' has no NNC export. Supported: linear, {', '.join(_ACTIVATIONS)}")
        if act == "softmax":
            x = self.materialize(x, name)
            # Keras' softmax runs over the last Keras axis: the channel (axis 1) in channels_last.
            axis = 1 if len(x.shape) == 1 or self.df == S.CHANNELS_LAST else len(x.shape)
            var = self.function(name, "Softmax", [x.var], x.shape, softmax_param={"axis": axis})
        else:
            var = self.function(name, _ACTIVATIONS[act], [x.var], x.shape)
        return _Out(var, x.shape, x.flat, x.perm), [var], ""

    def batch_norm(self, layer: S.BatchNormalization, x: _Out, info: S.LayerInfo):
        x = self.materialize(x, layer.name)
        axis = layer.feature_axis(info.input_shapes[0])
        channel_axis = 0 if len(x.shape) == 1 or self.df == S.CHANNELS_FIRST else len(x.shape) - 1
        if axis != channel_axis:
            raise NNCError(f"layer '{layer.name}' (BatchNormalization): axis={layer.axis} is not the channel axis; NNC export needs the channel axis")
        w = self.net.weights[layer.name]
        n = x.shape[0]
        values = {
            "beta": w.get("beta", np.zeros(n, np.float32)), "gamma": w.get("gamma", np.ones(n, np.float32)),
            "mean": w["moving_mean"], "var": w["moving_variance"],
        }
        pshape = (1, n, *(1,) * (len(x.shape) - 1))
        inputs = [x.var]
        for key, value in values.items():
            nnc = value
            if x.perm is not None:
                nnc = np.empty_like(value)
                nnc[x.perm] = value  # Keras feature j is NNC feature perm[j]
            inputs.append(self.parameter(f"{layer.name}/bn/{key}", nnc.reshape(pshape)))
        var = self.function(layer.name, "BatchNormalization", inputs, x.shape, batch_normalization_param={
            "axes": (1,), "decay_rate": float(layer.momentum), "eps": float(layer.epsilon), "batch_stat": False})
        return _Out(var, x.shape, False, x.perm), [var], ""

    def merge(self, layer, sources: list[_Out], shape_out):
        sources = [self.materialize(s, layer.name) for s in sources]
        if type(layer) in _MERGES and len({tuple(s.shape) for s in sources}) > 1:
            raise NNCError(f"layer '{layer.name}' ({layer.type}): it broadcasts inputs of shapes "
                           f"{[tuple(s.shape) for s in sources]}; the NNC export merges inputs of one shape only")
        if any(s.perm is not None for s in sources):
            raise NNCError(f"layer '{layer.name}' ({layer.type}): inputs in Keras' Flatten order cannot be merged exactly in NNC")
        if type(layer) in _MERGES:  # folded left over the inputs, as Keras does; Average then scales by 1/n
            kind = _MERGES[type(layer)]
            param = {f"{kind.lower()}_param": {}} if kind in ("Add2", "Sub2", "Mul2") else {}
            average = isinstance(layer, S.Average)
            var, funcs = sources[0].var, []
            for index, other in enumerate(sources[1:]):
                last = index == len(sources) - 2 and not average
                var = self.function(layer.name if last else f"{layer.name}_{index}", kind, [var, other.var], shape_out, **param)
                funcs.append(var)
            if average:
                var = self.function(layer.name, "MulScalar", [var], shape_out, mul_scalar_param={"val": 1.0 / len(sources)})
                funcs.append(var)
            return _Out(var, shape_out), funcs, "the sum times 1/n (Keras divides by n)" if average else ""
        rank = len(sources[0].shape)
        axis = layer.axis if layer.axis >= 0 else rank + 1 + layer.axis
        if rank in (2, 3) and self.df == S.CHANNELS_LAST:  # Keras (H, W, C) / (L, C) -> NNC (C, H, W) / (C, L)
            axis = 1 if axis == rank else axis + 1
        var = self.function(layer.name, "Concatenate", [s.var for s in sources], shape_out, concatenate_param={"axis": axis})
        return _Out(var, shape_out), [var], ""

    @staticmethod
    def init(name: str | None, glorot: str | None) -> tuple[str, float] | None:
        if name == "nnc_glorot_normal" and glorot:
            return glorot, 1.0
        return _INITIALIZERS.get(name or "")


def export_network(net: Network, network_name: str = "MainRuntime") -> tuple[object, dict[str, np.ndarray], list[ExportRow]]:
    """Convert a network to an ``NNablaProtoBuf`` (network + executor) and nnabla-layout parameters.

    Raises:
        NNCError: a layer, activation or padding that NNC cannot compute exactly.
    """
    writer = _Writer(net, network_name)
    writer.run()
    return writer.proto, writer.params, writer.rows


def export_file(net: Network, path: str, network_name: str = "MainRuntime", *, force: bool = False, inputs=()) -> list[ExportRow]:
    """Write ``net`` as an .nnp archive (or an .nntxt with the parameters inline) atomically.

    An existing file is replaced only with ``force``, one of ``inputs`` never.
    """
    from layerlab.publish import publish_file

    proto, params, rows = export_network(net, network_name)
    if str(path).lower().endswith(".nntxt"):
        proto.MergeFrom(files.parameters_message(params))
        data = files.to_text(proto).encode("utf-8")
    else:
        data = files.nnp_bytes(proto, params)
    with publish_file(path, inputs=inputs, force=force) as tmp:
        tmp.write_bytes(data)
    return rows


def rows_table(rows: list[ExportRow]) -> str:
    head = ("Keras layer", "type", "NNC function(s)", "caveat")
    body = [(printable(r.layer), r.kind, ", ".join(map(printable, r.functions)) or "(none)", r.caveat) for r in rows]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + ("  " + row[3] if row[3] else "") for row in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * len(head[3]))
    return "\n".join(line.rstrip() for line in lines)



for _cls, _method in {
    S.ZeroPadding2D: "_zero_padding", S.Conv2D: "_conv", S.MaxPooling2D: "_pool", S.AveragePooling2D: "_pool",
    S.Flatten: "_flatten", S.Dense: "_dense", S.Activation: "_activation", S.Dropout: "_dropout",
    S.Rescaling: "_rescaling", S.BatchNormalization: "_batchnorm", S.Reshape: "_reshape", S.Add: "_merge",
    S.Concatenate: "_merge", S.Subtract: "_merge", S.Multiply: "_merge", S.Average: "_merge", S.Maximum: "_merge",
    S.Minimum: "_merge", S.DepthwiseConv2D: "_depthwise", S.GlobalAveragePooling2D: "_global_pool",
    S.GlobalMaxPooling2D: "_global_pool", S.Cropping2D: "_crop", S.UpSampling2D: "_upsample",
    S.Conv1D: "_conv", S.ZeroPadding1D: "_zero_padding", S.GlobalAveragePooling1D: "_global_pool",
    S.GlobalMaxPooling1D: "_global_pool", S.SeparableConv2D: "_separable",
}.items():
    NNC_EXPORT.register(_cls, _method)
for _cls in (S.MaxPooling1D, S.AveragePooling1D):
    NNC_EXPORT.register(_cls, "_pool", note="a 1-high 2-D pooling between Reshapes")
NNC_EXPORT.register(S.ReLU, "_activation", note="ReLU() and ReLU(max_value=6) only")
NNC_EXPORT.decline((S.PReLU, S.Permute, S.Normalization), "no NNC function is mapped to it yet")
