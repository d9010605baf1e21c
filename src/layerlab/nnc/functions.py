"""One converter per NNC function type: NNC function + input tensors -> Keras layer specs + weights.

Parameters are read as nnabla reads them (proto3: an absent field is 0 / false / empty), and
checked against the shapes they must have. Shapes here are NNC's, without the batch axis;
``Tensor.perm`` is explained in ``layerlab.nnc.importer``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from layerlab import geometry
from layerlab import spec as S
from layerlab.errors import NNCError
from layerlab.layers import LAYER_TYPES
from layerlab.nnc import windows
from layerlab.registry import NNC_IMPORT

SUPPORTED = (
    "Convolution", "MaxPooling", "AveragePooling", "Affine", "Tanh", "ReLU", "Sigmoid", "Softmax",
    "BatchNormalization", "Dropout", "Reshape", "MulScalar", "AddScalar", "Identity", "Add2", "Concatenate", "Pad",
    "DepthwiseConvolution", "GlobalAveragePooling", "ReLU6", "Sub2", "Mul2", "Maximum2", "Minimum2", "Slice", "Unpooling",
)
_ACTIVATIONS = {"Tanh": "tanh", "ReLU": "relu", "Sigmoid": "sigmoid", "ReLU6": "relu6"}
# Functions whose output is >= 0 for any input (zero padding can then never win a max).
_NONNEGATIVE = {"ReLU", "Sigmoid", "Softmax", "ReLU6"}
# Element-wise merges of two inputs of one shape: NNC function -> spec class.
_MERGES = {"Add2": S.Add, "Sub2": S.Subtract, "Mul2": S.Multiply, "Maximum2": S.Maximum, "Minimum2": S.Minimum}
_INITIALIZERS = {"NormalConvolutionGlorot": "nnc_glorot_normal", "NormalAffineGlorot": "nnc_glorot_normal"}


@dataclass(frozen=True)
class Tensor:
    """An NNC variable as a Keras tensor: the layer that makes it ('input' for the model input),
    its NNC shape without batch, the Keras feature order of a 1-D tensor, and whether it is >= 0."""

    layer: str
    shape: tuple[int, ...]
    perm: np.ndarray | None = None
    nonnegative: bool = False
    # A Pad with -inf (layerlab's own export of an asymmetric max-pooling 'same'): no Keras layer
    # until the MaxPooling that reads it, which becomes Keras 'same' on ``unpadded``.
    inf_pad: tuple[tuple[int, int], tuple[int, int]] | None = None
    unpadded: Tensor | None = None


@dataclass(frozen=True)
class FunctionContext:
    data_format: str
    parameters: Mapping[str, np.ndarray]
    variables: Mapping[str, Any]
    where: str


@dataclass
class Converted:
    layers: list[S.Layer]
    tensor: Tensor
    weights: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    caveat: str = ""


def convert_function(ctx: FunctionContext, function: Any, tensors: Mapping[str, Tensor], previous: str,
                     name: Callable[[str], str], where: str) -> Converted:
    """Convert one NNC function whose data inputs are in ``tensors``.

    Args:
        previous: the name of the last Keras layer so far ('input' at first): a layer reading
            it needs no explicit ``inputs``.
        name: makes a unique Keras layer name from a base.
    """
    call = _Call(ctx, function, tensors, previous, name, where)
    if function.type != "MaxPooling" and any(tensors[n].inf_pad for n in function.input if n in tensors):
        raise call.fail("reads a Pad filled with -inf, which only a following MaxPooling can use")
    return _CONVERTERS[function.type](call)


@dataclass
class _Call:
    ctx: FunctionContext
    function: Any
    tensors: Mapping[str, Tensor]
    previous: str
    name: Callable[[str], str]
    where: str

    @property
    def x(self) -> Tensor:
        return self.tensors[self.function.input[0]]

    @property
    def df(self) -> str:
        return self.ctx.data_format

    def inputs(self, tensor: Tensor | None = None) -> tuple[str, ...]:
        source = (tensor or self.x).layer
        return () if source == self.previous else (source,)

    def fail(self, what: str, fix: str = "") -> NNCError:
        return NNCError(f"{self.where}: {what}" + (f". {fix}" if fix else ""))

    def image(self) -> tuple[int, int, int]:
        if len(self.x.shape) != 3:
            raise self.fail(f"needs an image input (C, H, W), received shape {self.x.shape}")
        return self.x.shape  # type: ignore[return-value]

    def param(self, index: int, shape: tuple[int, ...] | None, what: str, optional: bool = False) -> np.ndarray | None:
        """The parameter at input ``index``, checked against ``shape`` (sizes only when the
        layout is free, e.g. BatchNormalization's (1, C, 1, 1))."""
        if index >= len(self.function.input):
            if optional:
                return None
            raise self.fail(f"missing parameter input {index} ({what})", "Every parameter must be an input of the function")
        var = self.function.input[index]
        array = self.ctx.parameters.get(var)
        if array is None:
            raise self.fail(f"parameter '{var}' ({what}) is missing from the file", "Export the .nnp with its parameters (parameter.protobuf or parameter.h5)")
        declared = self.ctx.variables.get(var)
        if declared is not None and declared.HasField("shape") and declared.shape.dim and tuple(declared.shape.dim) != array.shape:
            raise self.fail(f"shape mismatch: parameter '{var}' is declared {tuple(declared.shape.dim)} but the file holds {array.shape}")
        if shape is not None and array.shape != shape:
            raise self.fail(f"shape mismatch: parameter '{var}' ({what}) has shape {array.shape}, expected {shape} for input {self.x.shape}")
        return np.asarray(array, np.float32)

    def init(self, index: int, default: str) -> str:
        """The Keras initializer matching the parameter variable's NNC initializer."""
        if index >= len(self.function.input):
            return default
        var = self.ctx.variables.get(self.function.input[index])
        if var is None or not var.HasField("initializer"):
            return default
        kind, mult = var.initializer.type, var.initializer.multiplier
        if kind == "Constant" and mult in (0.0, 1.0):
            return "zeros" if mult == 0.0 else "ones"
        return _INITIALIZERS.get(kind, default) if mult == 1.0 else default


# The least value each window argument may take: a stride or dilation of 0 (or a negative pad)
# is no network nnabla can run, and would divide by zero in the shape rules.
_MINIMUM = {"stride": 1, "dilation": 1, "kernel": 1, "pad": 0}


def _pair(shape_msg: Any, default: tuple[int, ...], arg: str, call: _Call) -> tuple[int, ...]:
    """A window argument of ``len(default)`` values (2 for an image, 1 for a sequence)."""
    dims = tuple(int(d) for d in shape_msg.dim)
    if not dims:
        return default
    if len(dims) != len(default):
        raise call.fail(f"{arg}={dims}: needs {len(default)} value(s) for input {call.x.shape}")
    least = _MINIMUM.get(arg, 0)
    if min(dims) < least:
        raise call.fail(f"{arg}={dims}: every value must be at least {least}", f"Fix the {arg} of this function in the network")
    return dims  # type: ignore[return-value]


def _keras_image(shape: tuple[int, ...], df: str) -> tuple[int, ...]:
    """An NNC shape (C, H, W) / (C, L) as the Keras tensor's: channels_last moves C to the end."""
    return (*shape[1:], shape[0]) if len(shape) in (2, 3) and df == S.CHANNELS_LAST else shape


def same_order(source: tuple[int, ...], target: tuple[int, ...], df: str) -> bool:
    """Whether reshaping NNC ``source`` to ``target`` is a Keras Reshape of the same data: always in
    channels_first; in channels_last when the channel move commutes with the reshape (sizes 1)."""
    if df == S.CHANNELS_FIRST:
        return True
    index = np.arange(math.prod(source)).reshape(source)
    keras = np.transpose(index, _to_keras(len(source))).ravel()  # Keras' element order
    moved = np.transpose(index.reshape(target), _to_keras(len(target))).ravel()
    return bool(np.array_equal(keras, moved))


def _to_keras(rank: int) -> tuple[int, ...]:
    return (*range(1, rank), 0) if rank in (2, 3) else tuple(range(rank))


def flatten_perm(shape: tuple[int, ...], layout: str, flatten_format: str | None = None) -> np.ndarray | None:
    """NNC feature index at each position of a Keras Flatten's output, or None when the orders agree.

    Args:
        shape: the NNC shape (C, H, W) (or any shape) without the batch axis.
        layout: the Keras tensor's data_format: an image is (C, H, W) or (H, W, C).
        flatten_format: the Flatten layer's data_format (default ``layout``). NNC flattens C-H-W;
            Flatten(data_format='channels_first') first moves axis 1 to the end (Keras 2 and 3),
            so it gives H-W-C on a channels_first tensor, as channels_last does on (H, W, C).
    """
    index = np.arange(math.prod(shape)).reshape(shape)
    keras = index.transpose(_to_keras(len(shape))) if layout == S.CHANNELS_LAST else index
    if (flatten_format or layout) == S.CHANNELS_FIRST and keras.ndim > 1:
        keras = np.moveaxis(keras, 0, -1)
    perm = keras.ravel()
    return None if np.array_equal(perm, np.arange(perm.size)) else perm


def _keras_axis(axis: int, rank: int, df: str) -> int:
    """An NNC axis (counted with the batch axis) as the Keras axis of the same data."""
    if rank in (2, 3) and df == S.CHANNELS_LAST:
        return rank if axis == 1 else axis - 1
    return axis


def _convolution(c: _Call) -> Converted:
    """Convolution on (C, H, W) as Conv2D, on a sequence (C, L) as Conv1D (W (out, in, k))."""
    p = c.function.convolution_param
    if len(c.x.shape) not in (2, 3):
        raise c.fail(f"needs an image (C, H, W) or a sequence (C, L), received shape {c.x.shape}")
    channels, *sizes = c.x.shape
    if p.base_axis != 1 or p.channel_last or p.group not in (0, 1):
        raise c.fail(f"base_axis={p.base_axis}, group={p.group}, channel_last={p.channel_last}: layerlab converts base_axis=1, group=1, channel_last=false")
    kernel = c.param(1, None, "W")
    if kernel.ndim != 2 + len(sizes) or kernel.shape[1] != channels:
        expected = "kh, kw" if len(sizes) == 2 else "k"
        raise c.fail(f"shape mismatch: W has shape {kernel.shape}, expected (filters, {channels}, {expected}) for input {c.x.shape}")
    filters = kernel.shape[0]
    bias = c.param(2, (filters,), "b", optional=True)
    stride, dilation, outs, plan, layers = _window(c, p, tuple(sizes), kernel.shape[2:])
    base = c.function.name
    one_d = len(sizes) == 1
    conv = (S.Conv1D if one_d else S.Conv2D)(
        name=c.name(base), inputs=() if layers else c.inputs(), filters=filters, kernel_size=kernel.shape[2:], strides=stride,
        padding=plan.padding, dilation_rate=dilation, data_format=c.df, activation="linear", use_bias=bias is not None,
        kernel_initializer=c.init(1, "nnc_glorot_normal"), bias_initializer=c.init(2, "zeros"),
    )
    weights = {"kernel": kernel.transpose(2, 1, 0) if one_d else kernel.transpose(2, 3, 1, 0)}  # -> KIO / HWIO
    if bias is not None:
        weights["bias"] = bias
    return Converted(layers + [conv], Tensor(conv.name, (filters, *outs)), {conv.name: weights}, plan.caveat)


def _window(c: _Call, p: Any, sizes: tuple[int, ...], kernel: tuple[int, ...]):
    """A convolution's (stride, dilation, output size, Keras padding plan, [ZeroPadding2D/1D]) from
    its parameter message ``p`` (symmetric zero ``pad``); ``sizes`` (H, W), or (L,) for a sequence."""
    rank = len(sizes)
    pad = _pair(p.pad, (0,) * rank, "pad", c)
    stride = _pair(p.stride, (1,) * rank, "stride", c)
    dilation = _pair(p.dilation, (1,) * rank, "dilation", c)
    outs = tuple(windows.conv_length(n, k, s, q, d) for n, k, s, q, d in zip(sizes, kernel, stride, pad, dilation, strict=True))
    if min(outs) < 1:
        raise c.fail(f"kernel {tuple(kernel)} with pad {pad} and dilation {dilation} does not fit input {sizes}")
    if rank == 1:  # a sequence is an image of height 1
        plan = windows.conv_plan((1, *sizes), (1, *kernel), (1, *stride), (0, *pad), (1, *dilation))
    else:
        plan = windows.conv_plan(sizes, kernel, stride, pad, dilation)
    layers: list[S.Layer] = []
    if plan.zero_pad and rank == 1:
        layers.append(S.ZeroPadding1D(name=c.name(c.function.name + "_pad"), inputs=c.inputs(), padding=plan.zero_pad[1], data_format=c.df))
    elif plan.zero_pad:
        layers.append(S.ZeroPadding2D(name=c.name(c.function.name + "_pad"), inputs=c.inputs(), padding=plan.zero_pad, data_format=c.df))
    return stride, dilation, outs, plan, layers


def _depthwise(c: _Call) -> Converted:
    """nnabla's DepthwiseConvolution: W (C * multiplier, kh, kw), output channel c * multiplier + m
    reads input channel c, as Keras' DepthwiseConv2D orders them."""
    p = c.function.depthwise_convolution_param
    if len(c.x.shape) == 2:
        raise c.fail(f"a 1-D DepthwiseConvolution on {c.x.shape} has no layerlab layer (DepthwiseConv1D is not supported)",
                     "Use a Convolution with Group = channels, or a (C, 1, L) image")
    channels, h, w = c.image()
    if p.base_axis != 1:
        raise c.fail(f"base_axis={p.base_axis}: layerlab converts base_axis=1")
    multiplier = int(p.multiplier) or 1
    kernel = c.param(1, None, "W")
    if kernel.ndim != 3 or kernel.shape[0] != channels * multiplier:
        raise c.fail(f"shape mismatch: W has shape {kernel.shape}, expected ({channels * multiplier}, kh, kw) for input {c.x.shape}")
    _, kh, kw = kernel.shape
    bias = c.param(2, (channels * multiplier,), "b", optional=True)
    stride, dilation, outs, plan, layers = _window(c, p, (h, w), (kh, kw))
    base = c.function.name
    conv = S.DepthwiseConv2D(
        name=c.name(base), inputs=() if layers else c.inputs(), kernel_size=(kh, kw), strides=stride, padding=plan.padding,
        dilation_rate=dilation, depth_multiplier=multiplier, data_format=c.df, activation="linear", use_bias=bias is not None)
    # (C * M, kh, kw) -> Keras (kh, kw, C, M)
    weights = {"kernel": np.ascontiguousarray(kernel.reshape(channels, multiplier, kh, kw).transpose(2, 3, 0, 1))}
    if bias is not None:
        weights["bias"] = bias
    return Converted(layers + [conv], Tensor(conv.name, (channels * multiplier, *outs)), {conv.name: weights}, plan.caveat)


def _global_average(c: _Call) -> Converted:
    """nnabla's GlobalAveragePooling: the mean of each channel, output (C, 1, 1) (also of a sequence)."""
    if len(c.x.shape) == 2:  # (C, L) -> (C, 1, 1): GlobalAveragePooling1D, then a Reshape to the image
        channels = c.x.shape[0]
        pool = S.GlobalAveragePooling1D(name=c.name(c.function.name), inputs=c.inputs(), data_format=c.df, keepdims=False)
        image = S.Reshape(name=c.name(c.function.name + "_image"), target_shape=_keras_image((channels, 1, 1), c.df))
        return Converted([pool, image], Tensor(image.name, (channels, 1, 1), None, c.x.nonnegative))
    channels, _, _ = c.image()
    layer = S.GlobalAveragePooling2D(name=c.name(c.function.name), inputs=c.inputs(), data_format=c.df, keepdims=True)
    return Converted([layer], Tensor(layer.name, (channels, 1, 1), None, c.x.nonnegative))


def _pooling(c: _Call) -> Converted:
    kind = "max" if c.function.type == "MaxPooling" else "average"
    p = c.function.max_pooling_param if kind == "max" else c.function.average_pooling_param
    channels, h, w = c.image()
    if p.channel_last:
        raise c.fail("channel_last=true: layerlab converts N-C-H-W networks only")
    kernel = _pair(p.kernel, (0, 0), "kernel", c)
    if min(kernel) < 1:
        raise c.fail(f"kernel {tuple(p.kernel.dim)} is missing or not positive", "Give the pooling a kernel shape")
    stride = _pair(p.stride, kernel, "stride", c)
    pad = _pair(p.pad, (0, 0), "pad", c)
    including_pad = bool(getattr(p, "including_pad", False))
    if c.x.inf_pad:
        return _pool_after_inf_pad(c, kernel, stride, pad, p.ignore_border)
    outs = tuple(windows.pool_length(n, k, s, q, p.ignore_border) for n, k, s, q in zip((h, w), kernel, stride, pad, strict=True))
    try:
        plan = windows.pool_plan(kind, (h, w), kernel, stride, pad, p.ignore_border, including_pad, c.x.nonnegative)
    except windows.NoExactMapping:
        edges = windows.max_pool_edge_padding((h, w), kernel, stride, pad, p.ignore_border) if kind == "max" else None
        if edges is None:
            raise
        return _max_pool_with_edges(c, kernel, stride, edges, (channels, *outs))
    layers: list[S.Layer] = []
    base = c.function.name
    if plan.zero_pad:
        layers.append(S.ZeroPadding2D(name=c.name(base + "_pad"), inputs=c.inputs(), padding=plan.zero_pad, data_format=c.df))
    cls = S.MaxPooling2D if kind == "max" else S.AveragePooling2D
    pool = cls(name=c.name(base), inputs=() if layers else c.inputs(), pool_size=kernel, strides=stride,
               padding=plan.padding, data_format=c.df)
    caveat = plan.caveat
    if not caveat and plan.padding == windows.SAME:
        caveat = f"ignore_border={str(p.ignore_border).lower()}, pad {pad} equals Keras 'same' here (same window starts and output size)"
    return Converted(layers + [pool], Tensor(pool.name, (channels, *outs), nonnegative=c.x.nonnegative), caveat=caveat)


def _max_pool_with_edges(c: _Call, kernel, stride, edges, shape) -> Converted:
    """NNC max pooling whose -inf padding no Keras padding matches, from standard layers: each
    border row and column repeated into the padding (Cropping2D + UpSampling2D, joined with
    Concatenate), then a 'valid' MaxPooling2D. Exact: see ``windows.max_pool_edge_padding``."""
    channels, h, w = c.image()
    base, df = c.function.name, c.df
    axis = {"h": 2, "w": 3} if df == S.CHANNELS_FIRST else {"h": 1, "w": 2}
    layers: list[S.Layer] = []
    source, size = c.x.layer, (h, w)
    for which, (before, after) in zip("hw", edges, strict=True):
        if not before and not after:
            continue
        n = size[0] if which == "h" else size[1]
        parts = []
        for side, count in (("before", before), ("after", after)):
            if not count:
                continue
            keep = ((0, n - 1) if side == "before" else (n - 1, 0))
            crop = S.Cropping2D(name=c.name(f"{base}_edge_{which}_{side}"), inputs=(source,),
                                cropping=(keep, (0, 0)) if which == "h" else ((0, 0), keep), data_format=df)
            repeat = S.UpSampling2D(name=c.name(f"{base}_edge_{which}_{side}_x{count}"), inputs=(crop.name,),
                                    size=(count, 1) if which == "h" else (1, count), data_format=df)
            layers += [crop, repeat]
            parts.append((side, repeat.name))
        names = [name for side, name in parts if side == "before"] + [source] + [name for side, name in parts if side == "after"]
        join = S.Concatenate(name=c.name(f"{base}_edge_{which}"), inputs=tuple(names), axis=axis[which])
        layers.append(join)
        source = join.name
        size = (h + before + after, size[1]) if which == "h" else (size[0], w + before + after)
    pool = S.MaxPooling2D(name=c.name(base), inputs=(source,), pool_size=kernel, strides=stride, padding=windows.VALID, data_format=df)
    caveat = (f"-inf padding {edges} (before, after) per axis that no Keras padding matches: the border cells repeated into it "
              "(Cropping2D + UpSampling2D + Concatenate), then 'valid'; exact, since every window holds the border cell it repeats")
    return Converted(layers + [pool], Tensor(pool.name, shape, nonnegative=c.x.nonnegative), caveat=caveat)


def _pool_after_inf_pad(c: _Call, kernel, stride, pad, ignore_border) -> Converted:
    """Pad(-inf) + MaxPooling(ignore_border, pad 0) is Keras 'same' when the pads are Keras'."""
    source = c.x.unpadded
    assert source is not None
    _, h, w = source.shape
    win = geometry.window_2d((h, w), kernel, stride, windows.SAME)
    padded = (c.x.shape[1] - h, c.x.shape[2] - w)
    outs = tuple(windows.pool_length(n + q, k, s, 0, True) for n, q, k, s in zip((h, w), padded, kernel, stride, strict=True))
    if pad != (0, 0) or not ignore_border or c.x.inf_pad != ((win.pad_top, win.pad_bottom), (win.pad_left, win.pad_right)) or outs != (win.out_h, win.out_w):
        raise c.fail(f"a Pad with -inf {c.x.inf_pad} before this MaxPooling is not Keras 'same' padding "
                     f"({win.pad_top}, {win.pad_bottom}), ({win.pad_left}, {win.pad_right})")
    pool = S.MaxPooling2D(name=c.name(c.function.name), inputs=() if source.layer == c.previous else (source.layer,),
                          pool_size=kernel, strides=stride, padding=windows.SAME, data_format=c.df)
    return Converted([pool], Tensor(pool.name, (source.shape[0], *outs), nonnegative=source.nonnegative),
                     caveat="with the Pad(-inf) before it: Keras 'same' (padding never wins)")


def _pad(c: _Call) -> Converted:
    p = c.function.pad_param
    widths = [int(v) for v in p.pad_width]
    if len(c.x.shape) == 2:
        return _pad_sequence(c, p, widths)
    channels, h, w = c.image()
    if len(widths) == 6 and widths[:2] == [0, 0]:
        widths = widths[2:]
    if len(widths) != 4 or min(widths) < 0 or p.mode not in ("", "constant"):
        raise c.fail(f"pad_width={list(p.pad_width)}, mode={p.mode!r}: layerlab converts constant padding of height and width only")
    top, bottom, left, right = widths
    shape = (channels, h + top + bottom, w + left + right)
    if p.constant_value == float("-inf"):
        return Converted([], Tensor(c.x.layer, shape, inf_pad=((top, bottom), (left, right)), unpadded=c.x),
                         caveat="-inf padding: becomes part of the next MaxPooling")
    if p.constant_value != 0.0:
        raise c.fail(f"constant_value={p.constant_value}: Keras pads with zeros only")
    layer = S.ZeroPadding2D(name=c.name(c.function.name), inputs=c.inputs(), padding=((top, bottom), (left, right)), data_format=c.df)
    return Converted([layer], Tensor(layer.name, shape, nonnegative=c.x.nonnegative))


def _pad_sequence(c: _Call, p: Any, widths: list[int]) -> Converted:
    """Pad of a sequence (C, L) by (before, after) zeros: Keras ZeroPadding1D."""
    channels, steps = c.x.shape
    if len(widths) == 4 and widths[:2] == [0, 0]:
        widths = widths[2:]
    if len(widths) != 2 or min(widths) < 0 or p.mode not in ("", "constant") or p.constant_value != 0.0:
        raise c.fail(f"pad_width={list(p.pad_width)}, mode={p.mode!r}, constant_value={p.constant_value}: layerlab converts "
                     "zero padding of a sequence's steps only")
    layer = S.ZeroPadding1D(name=c.name(c.function.name), inputs=c.inputs(), padding=tuple(widths), data_format=c.df)
    return Converted([layer], Tensor(layer.name, (channels, steps + sum(widths)), nonnegative=c.x.nonnegative))


def _affine(c: _Call) -> Converted:
    """Affine: W (in, *out) -> Dense, then a Reshape when NNC's OutShape has several axes (e.g.
    an auto-encoder's 1,28,28), the columns permuted so Keras' Reshape lays them out as NNC does."""
    p = c.function.affine_param
    if p.base_axis != 1:
        raise c.fail(f"base_axis={p.base_axis}: layerlab converts base_axis=1 (one batch axis)")
    features = math.prod(c.x.shape)
    kernel = c.param(1, None, "W")
    if kernel.ndim < 2 or kernel.shape[0] != features:
        raise c.fail(f"shape mismatch: W has shape {kernel.shape}, expected ({features}, units) for input {c.x.shape}")
    out_shape = tuple(int(d) for d in kernel.shape[1:])
    units = math.prod(out_shape)
    kernel = kernel.reshape(features, units)
    bias = c.param(2, None, "b", optional=True)
    if bias is not None and bias.size != units:
        raise c.fail(f"shape mismatch: b has shape {bias.shape}, expected {out_shape} for W {tuple(c.param(1, None, 'W').shape)}")
    if bias is not None:
        bias = bias.reshape(units)
    layers: list[S.Layer] = []
    base = c.function.name
    caveat = ""
    perm = c.x.perm
    if len(c.x.shape) > 1:
        layers.append(S.Flatten(name=c.name(base + "_flatten"), inputs=c.inputs(), data_format=c.df))
        perm = flatten_perm(c.x.shape, c.df)
        if perm is not None:
            caveat = "Dense kernel rows reordered from NNC's C-H-W flatten order to Keras' Flatten order (H-W-C)"
    elif perm is not None:
        caveat = "Dense kernel rows permuted to the Keras feature order"
    columns = flatten_perm(out_shape, c.df) if len(out_shape) > 1 else None  # NNC column at each Keras position
    if columns is not None:
        kernel, bias = kernel[:, columns], (bias[columns] if bias is not None else None)
    dense = S.Dense(name=c.name(base), inputs=() if layers else c.inputs(), units=units, activation="linear",
                    use_bias=bias is not None, kernel_initializer=c.init(1, "nnc_glorot_normal"), bias_initializer=c.init(2, "zeros"))
    weights = {"kernel": kernel[perm] if perm is not None else kernel}
    if bias is not None:
        weights["bias"] = bias
    layers.append(dense)
    if len(out_shape) == 1:
        return Converted(layers, Tensor(dense.name, (units,)), {dense.name: weights}, caveat)
    if len(out_shape) not in (2, 3):
        raise c.fail(f"OutShape {out_shape}: layerlab converts Affine outputs of 1 to 3 axes")
    shaped = S.Reshape(name=c.name(base + "_shape"), target_shape=_keras_image(out_shape, c.df))
    layers.append(shaped)
    note = f"NNC's OutShape {out_shape}: Dense({units}) then Reshape" + (" (columns permuted to Keras' layout)" if columns is not None else "")
    return Converted(layers, Tensor(shaped.name, out_shape), {dense.name: weights}, f"{caveat}; {note}" if caveat else note)


def _activation(c: _Call) -> Converted:
    kind = c.function.type
    caveat = ""
    if kind == "Softmax":
        axis = c.function.softmax_param.axis
        rank = len(c.x.shape)
        if not 1 <= axis <= rank or _keras_axis(axis, rank, c.df) != rank:
            raise c.fail(f"softmax over axis {axis} of shape (batch, {', '.join(map(str, c.x.shape))}): Keras' softmax "
                         "works on the last axis only", "Use axis = last, or --data-format channels_last for a channel softmax")
        act = "softmax"
    else:
        act = _ACTIVATIONS[kind]
    layer = S.Activation(name=c.name(c.function.name), inputs=c.inputs(), activation=act)
    nonneg = kind in _NONNEGATIVE
    return Converted([layer], Tensor(layer.name, c.x.shape, c.x.perm, nonneg), caveat=caveat)


def _batch_normalization(c: _Call) -> Converted:
    p = c.function.batch_normalization_param
    if list(p.axes) != [1]:
        raise c.fail(f"axes={list(p.axes)}: layerlab converts normalisation over the channel axis, axes=[1]")
    n = c.x.shape[0]
    names = (["beta"] if not p.no_bias else []) + (["gamma"] if not p.no_scale else []) + ["mean", "variance"]
    if len(c.function.input) != 1 + len(names):
        raise c.fail(f"expected inputs x, {', '.join(names)}, received {list(c.function.input)}")
    arrays = {}
    for index, what in enumerate(names, start=1):
        array = c.param(index, None, what)
        if array.size != n:
            raise c.fail(f"shape mismatch: {what} has shape {array.shape}, expected {n} values (one per channel of {c.x.shape})")
        arrays[what] = array.reshape(n)[c.x.perm] if c.x.perm is not None else array.reshape(n)
    axis = 1 if len(c.x.shape) in (2, 3) and c.df == S.CHANNELS_FIRST else -1
    layer = S.BatchNormalization(name=c.name(c.function.name), inputs=c.inputs(), axis=axis, epsilon=float(p.eps),
                                 momentum=float(p.decay_rate), center=not p.no_bias, scale=not p.no_scale)
    weights = {"moving_mean": arrays["mean"], "moving_variance": arrays["variance"]}
    if not p.no_scale:
        weights["gamma"] = arrays["gamma"]
    if not p.no_bias:
        weights["beta"] = arrays["beta"]
    caveat = ("batch_stat=true: nnabla normalises by each batch's statistics, Keras inference by the stored ones"
              if p.batch_stat else "")
    return Converted([layer], Tensor(layer.name, c.x.shape, c.x.perm), {layer.name: weights}, caveat)


def _dropout(c: _Call) -> Converted:
    layer = S.Dropout(name=c.name(c.function.name), inputs=c.inputs(), rate=float(c.function.dropout_param.p))
    return Converted([layer], Tensor(layer.name, c.x.shape, c.x.perm, c.x.nonnegative),
                     caveat="identity at inference in Keras; nnabla drops at every forward pass of a network that keeps it")


def _reshape(c: _Call) -> Converted:
    dims = [int(d) for d in c.function.reshape_param.shape.dim][1:]  # dims[0] is the batch axis
    size = math.prod(c.x.shape)
    known = math.prod(d for d in dims if d != -1)
    if dims.count(-1) > 1 or not dims or known <= 0 or (size % known if -1 in dims else size != known):
        raise c.fail(f"shape mismatch: cannot reshape {c.x.shape} to {tuple(dims)} (without the batch axis)")
    target = tuple(size // known if d == -1 else d for d in dims)
    base = c.function.name
    if c.df == S.CHANNELS_LAST and len(c.x.shape) == 3 and len(target) == 1:
        layer: S.Layer = S.Flatten(name=c.name(base), inputs=c.inputs(), data_format=c.df)
        perm = flatten_perm(c.x.shape, c.df)
        return Converted([layer], Tensor(layer.name, target, perm, c.x.nonnegative),
                         caveat="Keras flattens H-W-C; later weights are permuted to match" if perm is not None else "")
    if c.x.perm is not None or not same_order(c.x.shape, target, c.df) or len(target) not in (1, 2, 3):
        raise c.fail(f"reshape {c.x.shape} -> {target} has no exact Keras equivalent in {c.df}", "Use --data-format channels_first")
    layer = S.Reshape(name=c.name(base), inputs=c.inputs(), target_shape=_keras_image(target, c.df))
    return Converted([layer], Tensor(layer.name, target, None, c.x.nonnegative))


def _scalar(c: _Call) -> Converted:
    if c.function.type == "MulScalar":
        val = float(c.function.mul_scalar_param.val)
        layer = S.Rescaling(name=c.name(c.function.name), inputs=c.inputs(), scale=val, offset=0.0)
    else:
        val = float(c.function.add_scalar_param.val)
        layer = S.Rescaling(name=c.name(c.function.name), inputs=c.inputs(), scale=1.0, offset=val)
    return Converted([layer], Tensor(layer.name, c.x.shape, c.x.perm, c.x.nonnegative and val >= 0))


def _identity(c: _Call) -> Converted:
    return Converted([], c.x)


def _merge(c: _Call) -> Converted:
    sources = [c.tensors[n] for n in c.function.input]
    if any(s.perm is not None for s in sources):
        raise c.fail("inputs in Keras' Flatten order cannot be merged exactly", "Use --data-format channels_first")
    names = tuple(s.layer for s in sources)
    if c.function.type in _MERGES:
        if len(sources) != 2 or sources[0].shape != sources[1].shape:
            raise c.fail(f"shape mismatch: {c.function.type} needs two inputs of one shape, received {[s.shape for s in sources]}")
        layer: S.Layer = _MERGES[c.function.type](name=c.name(c.function.name), inputs=names)
        shape = sources[0].shape
    else:
        axis = int(c.function.concatenate_param.axis)
        rank = len(sources[0].shape)
        if not 1 <= axis <= rank or any(len(s.shape) != rank for s in sources):
            raise c.fail(f"axis={axis} does not fit inputs {[s.shape for s in sources]}", "Concatenate along a non-batch axis")
        rest = {s.shape[: axis - 1] + s.shape[axis:] for s in sources}
        if len(rest) != 1:
            raise c.fail(f"shape mismatch: inputs {[s.shape for s in sources]} differ off axis {axis}")
        layer = S.Concatenate(name=c.name(c.function.name), inputs=names, axis=_keras_axis(axis, rank, c.df))
        shape = list(sources[0].shape)
        shape[axis - 1] = sum(s.shape[axis - 1] for s in sources)
        shape = tuple(shape)
    return Converted([layer], Tensor(layer.name, shape, None, all(s.nonnegative for s in sources)))


def _slice(c: _Call) -> Converted:
    """Slice of the height and width with step 1 (every channel): Keras Cropping2D."""
    channels, h, w = c.image()
    p = c.function.slice_param
    start, stop, step = list(p.start), list(p.stop), list(p.step) or [1, 1, 1]
    if len(start) == 4:  # with the batch axis
        start, stop, step = start[1:], stop[1:], step[1:]
    if len(start) != 3 or len(stop) != 3 or len(step) != 3:
        raise c.fail(f"start={list(p.start)}, stop={list(p.stop)}: layerlab converts a Slice of (C, H, W)")
    if step != [1, 1, 1] or start[0] != 0 or stop[0] < channels or min(start) < 0 or stop[1] > h or stop[2] > w or \
            stop[1] <= start[1] or stop[2] <= start[2]:
        raise c.fail(f"start={start}, stop={stop}, step={step} on {(channels, h, w)}: Keras Cropping2D keeps every channel "
                     "and crops rows and columns with step 1")
    layer = S.Cropping2D(name=c.name(c.function.name), inputs=c.inputs(),
                         cropping=((start[1], h - stop[1]), (start[2], w - stop[2])), data_format=c.df)
    return Converted([layer], Tensor(layer.name, (channels, stop[1] - start[1], stop[2] - start[2]), nonnegative=c.x.nonnegative))


def _unpooling(c: _Call) -> Converted:
    """Unpooling (each cell repeated kernel times): Keras UpSampling2D, nearest."""
    channels, h, w = c.image()
    p = c.function.unpooling_param
    kernel = tuple(int(v) for v in p.kernel.dim)
    if p.channel_last or len(kernel) != 2 or min(kernel) < 1:
        raise c.fail(f"kernel={kernel}, channel_last={p.channel_last}: layerlab converts a 2-D Unpooling of (C, H, W)")
    layer = S.UpSampling2D(name=c.name(c.function.name), inputs=c.inputs(), size=kernel, data_format=c.df)
    return Converted([layer], Tensor(layer.name, (channels, h * kernel[0], w * kernel[1]), nonnegative=c.x.nonnegative))


_CONVERTERS: dict[str, Callable[[_Call], Converted]] = {
    "Convolution": _convolution, "MaxPooling": _pooling, "AveragePooling": _pooling, "Affine": _affine,
    "Tanh": _activation, "ReLU": _activation, "Sigmoid": _activation, "Softmax": _activation,
    "BatchNormalization": _batch_normalization, "Dropout": _dropout, "Reshape": _reshape,
    "MulScalar": _scalar, "AddScalar": _scalar, "Identity": _identity, "Add2": _merge, "Concatenate": _merge,
    "Pad": _pad, "DepthwiseConvolution": _depthwise, "GlobalAveragePooling": _global_average, "ReLU6": _activation,
    **dict.fromkeys(("Sub2", "Mul2", "Maximum2", "Minimum2"), _merge), "Slice": _slice, "Unpooling": _unpooling,
}
assert set(_CONVERTERS) == set(SUPPORTED)

# The spec layers an NNC network imports as, with the NNC functions that become each.
for _cls, _functions in {
    S.Conv2D: "Convolution", S.MaxPooling2D: "MaxPooling", S.AveragePooling2D: "AveragePooling",
    S.Dense: "Affine", S.Flatten: "Affine (its implicit flatten)", S.Activation: "Tanh, ReLU, ReLU6, Sigmoid, Softmax",
    S.BatchNormalization: "BatchNormalization", S.Dropout: "Dropout", S.Reshape: "Reshape",
    S.Rescaling: "MulScalar, AddScalar", S.Add: "Add2", S.Concatenate: "Concatenate", S.ZeroPadding2D: "Pad",
    S.DepthwiseConv2D: "DepthwiseConvolution", S.GlobalAveragePooling2D: "GlobalAveragePooling", S.Subtract: "Sub2",
    S.Multiply: "Mul2", S.Maximum: "Maximum2", S.Minimum: "Minimum2", S.Cropping2D: "Slice", S.UpSampling2D: "Unpooling",
    S.Conv1D: "Convolution on (C, L)", S.ZeroPadding1D: "Pad on (C, L)", S.GlobalAveragePooling1D: "GlobalAveragePooling on (C, L)",
    S.MaxPooling1D: "Reshape + MaxPooling of height 1 + Reshape", S.AveragePooling1D: "Reshape + AveragePooling of height 1 + Reshape",
    S.GlobalMaxPooling1D: "MaxPooling of the whole sequence + Reshape", S.GlobalMaxPooling2D: "MaxPooling of the whole image + Reshape",
    S.SeparableConv2D: "DepthwiseConvolution NAME_depthwise + 1x1 Convolution NAME",
}.items():
    NNC_IMPORT.register(_cls, _functions, note=f"from NNC {_functions}")
NNC_IMPORT.decline(tuple(cls for cls in LAYER_TYPES.values() if cls not in NNC_IMPORT.handlers),
                   "no NNC function imports as it yet")
