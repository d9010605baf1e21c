"""Rewrite an imported layer list into the Keras layers a person would have written.

The NNC converters work one function at a time, so some Keras layers come back as the several
NNC functions they were exported as: a 1-D pooling as Reshape + 1-high 2-D pooling + Reshape
(nnabla pools 2-D windows only), a global pooling as pooling + Reshape, a SeparableConv2D as a
DepthwiseConvolution ``NAME_depthwise`` + 1x1 Convolution ``NAME``, a layer's activation as an
Activation ``NAME_act``, Keras 'same' / 'causal' padding as a Pad. Each rule here replaces a run of
consecutive layers, each read only by the next, by fewer layers that compute exactly the same
(same windows, same sums, only reshapes removed); the result keeps the name the exporter gave the
Keras layer (the run's last, or NAME for NAME + NAME_act) and later references follow it. Runs
are made consecutive first (``_sink``): NNC's converter orders functions breadth first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from layerlab import spec as S

Weights = dict[str, dict[str, np.ndarray]]
_POOL_1D = {S.MaxPooling2D: S.MaxPooling1D, S.AveragePooling2D: S.AveragePooling1D}
_GLOBAL = (S.GlobalAveragePooling1D, S.GlobalAveragePooling2D, S.GlobalMaxPooling1D, S.GlobalMaxPooling2D)


def simplify(name: str, input_shape: tuple[int, ...], layers: list[S.Layer], weights: Weights) -> tuple[list[S.Layer], Weights, dict[str, str]]:
    """The simplified layers and weights, and for each layer name that went, the layer now computing it.

    A rule returns how many layers from position i it replaces, the new layers (the last one with
    the last old one's name) and the new layers' weights.
    """
    layers, weights, fate = _sink(list(layers)), dict(weights), {}
    while True:
        run = _Run(S.Model(name=name, input_shape=input_shape, layers=tuple(layers)), weights)
        change = next((found for i in range(len(layers)) for rule in _RULES if (found := rule(run, i))), None)
        if change is None:
            return layers, weights, fate
        i, count, new, new_weights = change
        old = layers[i:i + count]
        new[0] = replace(new[0], inputs=old[0].inputs)
        for layer in old:
            weights.pop(layer.name, None)
            if layer.name not in {n.name for n in new}:
                fate[layer.name] = new[-1].name
        weights.update(new_weights)
        layers[i:i + count] = new
        if new[-1].name != old[-1].name:  # later layers read the run's output under its new name
            was, now = old[-1].name, new[-1].name
            layers = [replace(l, inputs=tuple(now if n == was else n for n in l.inputs)) if was in (l.inputs or ()) else l for l in layers]


def _sink(layers: list[S.Layer]) -> list[S.Layer]:
    """Each layer read by one later layer only, and not by the next, moved to just before its
    reader (its inputs made explicit): the same graph, with each run the rules look for consecutive
    (NNC's converter orders functions breadth first: a branch's pad and its conv may be apart)."""
    moved = True
    while moved:
        moved = False
        sources = [layer.inputs or ((layers[k - 1].name,) if k else ("input",)) for k, layer in enumerate(layers)]
        readers: dict[str, list[int]] = {}
        for k, names in enumerate(sources):
            for name in names:
                readers.setdefault(name, []).append(k)
        for i, layer in enumerate(layers[:-1]):
            reading = readers.get(layer.name, [])
            if len(reading) != 1 or reading[0] == i + 1 or len(set(sources[reading[0]])) != 1:
                continue
            j = reading[0]
            item = replace(layer, inputs=tuple(sources[i]))
            rest = layers[:i] + layers[i + 1:]
            rest.insert(j - 1, item)  # just before its reader, which now sits at j - 1 + 1
            layers, moved = rest, True
            break
    return layers


class _Run:
    """Shapes and readers of a model's layers, by position."""

    def __init__(self, model: S.Model, weights: Weights):
        self.weights = weights
        self.layers = model.layers
        self.infos = model.infos
        self.readers: dict[str, int] = {}
        for index, layer in enumerate(model.layers):
            for source in layer.inputs or ((model.layers[index - 1].name,) if index else ("input",)):
                self.readers[source] = self.readers.get(source, 0) + 1

    def at(self, i: int) -> S.Layer | None:
        return self.layers[i] if 0 <= i < len(self.layers) else None

    def chain(self, i: int, count: int) -> bool:
        """Layers i .. i + count - 1 exist and each is read by the next one only."""
        if i + count > len(self.layers):
            return False
        for k in range(i, i + count - 1):
            reader = self.layers[k + 1]
            if self.readers.get(self.layers[k].name) != 1 or reader.inputs not in ((), (self.layers[k].name,)):
                return False
        return True

    def shape_in(self, i: int) -> tuple[int, ...]:
        return tuple(self.infos[i].input_shapes[0])

    def shape_out(self, i: int) -> tuple[int, ...]:
        return tuple(self.infos[i].output_shape)


def _is_reshape(run: _Run, i: int) -> bool:
    """A Reshape, or a Flatten that is a plain reshape of its input (Keras order kept)."""
    layer = run.at(i)
    if isinstance(layer, S.Reshape):
        return True
    if not isinstance(layer, S.Flatten):
        return False
    shape = run.shape_in(i)
    return layer.data_format == S.CHANNELS_LAST or len(shape) == 1 or shape[0] == 1 or math.prod(shape[1:]) == 1


def _reshape_to(run: _Run, i: int, source_shape: tuple[int, ...], target: tuple[int, ...]) -> S.Layer:
    """A layer reshaping ``source_shape`` to ``target``: layer i itself when it is a Flatten that
    stays a plain reshape there, else a Reshape."""
    layer = run.at(i)
    plain = len(source_shape) == 1 or source_shape[0] == 1 or math.prod(source_shape[1:]) == 1
    if isinstance(layer, S.Flatten) and len(target) == 1 and (layer.data_format == S.CHANNELS_LAST or plain):
        return layer
    return S.Reshape(name=layer.name, target_shape=target)


def _reshapes(run: _Run, i: int):
    """Reshape + reshape: the second alone."""
    if not (_is_reshape(run, i) and _is_reshape(run, i + 1) and run.chain(i, 2)):
        return None
    return i, 2, [_reshape_to(run, i + 1, run.shape_in(i), run.shape_out(i + 1))], {}


def _identity(run: _Run, i: int):
    """A layer then a reshape to the shape it already has: the layer alone (named after the reshape)."""
    if not (_is_reshape(run, i + 1) and run.chain(i, 2) and run.shape_in(i + 1) == run.shape_out(i + 1)):
        return None
    layer, final = run.at(i), run.at(i + 1).name
    arrays = run.weights.get(layer.name)
    return i, 2, [replace(layer, name=final)], {final: arrays} if arrays else {}


def _global_keepdims(run: _Run, i: int):
    """Global pooling then a reshape to its shape with or without the kept axes: keepdims set so."""
    layer = run.at(i)
    if not (isinstance(layer, _GLOBAL) and _is_reshape(run, i + 1) and run.chain(i, 2)):
        return None
    target = run.shape_out(i + 1)
    for keepdims in (False, True):
        candidate = replace(layer, keepdims=keepdims)
        if candidate.output_shape(run.shape_in(i)) == target:
            return i, 2, [replace(candidate, name=run.at(i + 1).name)], {}
    return None


def _global_max(run: _Run, i: int):
    """Max pooling of the whole input ('valid', one window) then a reshape to (C,): global max pooling."""
    layer = run.at(i)
    if not (isinstance(layer, (S.MaxPooling1D, S.MaxPooling2D)) and _is_reshape(run, i + 1) and run.chain(i, 2)):
        return None
    win = layer.window(run.shape_in(i))
    h, w, channels = layer.hwc(run.shape_in(i))
    if layer.padding != "valid" or (win.kernel_h, win.kernel_w) != (h, w) or run.shape_out(i + 1) != (channels,):
        return None
    cls = S.GlobalMaxPooling1D if layer.rank == 1 else S.GlobalMaxPooling2D
    return i, 2, [cls(name=run.at(i + 1).name, data_format=layer.data_format)], {}


def _pool_1d(run: _Run, i: int):
    """Reshape (L, C) -> (1, L, C), [zero padding of the width only], a 1-high 2-D pooling: the 1-D
    pooling (and ZeroPadding1D), then a Reshape back to the image the pooling gave."""
    first = run.at(i)
    if not isinstance(first, S.Reshape) or len(run.shape_in(i)) != 2:
        return None
    df, pad = None, None
    k = i + 1
    if isinstance(run.at(k), S.ZeroPadding2D) and run.at(k).padding[0] == (0, 0):
        pad, k = run.at(k), k + 1
    pool = run.at(k)
    if type(pool) not in _POOL_1D or not run.chain(i, k - i + 1):
        return None
    df = pool.data_format
    steps, channels = run.shape_in(i) if df == S.CHANNELS_LAST else run.shape_in(i)[::-1]
    image = (1, steps, channels) if df == S.CHANNELS_LAST else (channels, 1, steps)
    if run.shape_out(i) != image or pool.pool_size[0] != 1 or pool.strides[0] != 1:
        return None
    new: list[S.Layer] = []
    if pad is not None:
        new.append(S.ZeroPadding1D(name=pad.name, padding=pad.padding[1], data_format=df))
    new.append(_POOL_1D[type(pool)](name=f"{pool.name}_1d", pool_size=pool.pool_size[1:], strides=pool.strides[1:],
                                     padding=pool.padding, data_format=df))
    new.append(S.Reshape(name=pool.name, target_shape=run.shape_out(k)))
    return i, k - i + 1, new, {}


def _separable(run: _Run, i: int):
    """DepthwiseConv2D ``NAME_depthwise`` (no bias, linear) read only by a 1x1 Conv2D ``NAME`` (stride 1,
    'valid'): how layerlab exports a SeparableConv2D, imported as one again."""
    dw, pw = run.at(i), run.at(i + 1)
    if not (isinstance(dw, S.DepthwiseConv2D) and isinstance(pw, S.Conv2D) and run.chain(i, 2) and dw.name == f"{pw.name}_depthwise"):
        return None
    if dw.use_bias or dw.activation != "linear" or pw.kernel_size != (1, 1) or pw.strides != (1, 1) or pw.padding != "valid" \
            or pw.data_format != dw.data_format:
        return None
    layer = S.SeparableConv2D(
        name=pw.name, filters=pw.filters, kernel_size=dw.kernel_size, strides=dw.strides, padding=dw.padding,
        dilation_rate=dw.dilation_rate, depth_multiplier=dw.depth_multiplier, data_format=dw.data_format,
        activation=pw.activation, use_bias=pw.use_bias, bias_initializer=pw.bias_initializer,
        pointwise_initializer=pw.kernel_initializer)
    arrays = {"depthwise_kernel": run.weights[dw.name]["kernel"], "pointwise_kernel": run.weights[pw.name]["kernel"]}
    if pw.use_bias:
        arrays["bias"] = run.weights[pw.name]["bias"]
    return i, 2, [layer], {pw.name: arrays}


def _same_padding(run: _Run, i: int):
    """ZeroPadding then a 'valid' convolution, padded exactly as Keras 'same' (or Conv1D 'causal')
    would pad there: the convolution with that padding."""
    pad, conv = run.at(i), run.at(i + 1)
    if not (isinstance(pad, (S.ZeroPadding1D, S.ZeroPadding2D)) and isinstance(conv, (S.Conv1D, S.Conv2D, S.DepthwiseConv2D, S.SeparableConv2D))
            and conv.padding == "valid" and conv.data_format == pad.data_format and run.chain(i, 2)):
        return None
    sides = (((0, 0), tuple(pad.padding)) if isinstance(pad, S.ZeroPadding1D) else tuple(map(tuple, pad.padding)))
    for padding in ("same", "causal") if isinstance(conv, S.Conv1D) else ("same",):
        candidate = replace(conv, padding=padding)
        win = candidate.window(run.shape_in(i))
        if ((win.pad_top, win.pad_bottom), (win.pad_left, win.pad_right)) == sides:
            return i, 2, [candidate], {conv.name: run.weights[conv.name]}
    return None


def _activation(run: _Run, i: int):
    """A linear convolution or Dense ``NAME`` then an Activation ``NAME_act`` (how layerlab exports a
    layer's activation): the layer with its activation, named NAME."""
    layer, act = run.at(i), run.at(i + 1)
    if not (isinstance(act, S.Activation) and isinstance(layer, (S.Conv1D, S.Conv2D, S.DepthwiseConv2D, S.SeparableConv2D, S.Dense))
            and layer.activation == "linear" and act.name == f"{layer.name}_{act.activation}" and run.chain(i, 2)):
        return None
    arrays = run.weights.get(layer.name)
    return i, 2, [replace(layer, activation=act.activation)], {layer.name: arrays} if arrays else {}


_RULES: tuple[Callable, ...] = (_activation, _separable, _same_padding, _pool_1d, _reshapes, _identity, _global_keepdims, _global_max)
