"""Network specs: frozen dataclasses for layers and models, with all argument validation.

A spec is the architecture only, every Keras argument explicit. Weights live beside it (see
``layerlab.network``). Shapes exclude the batch axis and are in each layer's own data_format.

Spec files are JSON or YAML documents::

    {"name": "seed650", "input_shape": [1, 28, 28],
     "layers": [{"type": "Conv2D", "name": "conv1", "filters": 5, "kernel_size": [4, 4], ...}]}

``Model(...)`` validates every layer against the shape that reaches it and raises ``SpecError``
with the template of STYLE.md: where, what, expected, received, fix.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from layerlab import geometry
from layerlab.errors import SpecError

CHANNELS_LAST = "channels_last"
CHANNELS_FIRST = "channels_first"
DATA_FORMATS = (CHANNELS_LAST, CHANNELS_FIRST)

ACTIVATIONS = (
    "linear", "relu", "tanh", "sigmoid", "softmax", "elu", "selu", "softplus", "softsign",
    "swish", "silu", "gelu", "hard_sigmoid", "leaky_relu", "relu6", "exponential",
    # Keras 2's hard_sigmoid, clip(0.2 * x + 0.5, 0, 1); Keras 3's is relu6(x + 3) / 6.
    "hard_sigmoid_keras2",
)
INITIALIZERS = (
    "zeros", "ones", "glorot_normal", "glorot_uniform", "he_normal", "he_uniform",
    "lecun_normal", "lecun_uniform", "random_normal", "random_uniform", "truncated_normal",
    "orthogonal",
    # NNC's NormalConvolutionGlorot / NormalAffineGlorot: Keras
    # VarianceScaling(scale=1.0, mode='fan_avg', distribution='untruncated_normal').
    "nnc_glorot_normal",
)

Shape = tuple[int, ...]


def _fail(what: str, fix: str = "") -> SpecError:
    return SpecError(f"{what}. {fix}".rstrip(". ") + ("." if fix else ""))


def _pair(value: Any, arg: str) -> tuple[int, int]:
    """Accept an int or a pair of ints, as Keras does, and return a pair of positive ints."""
    if isinstance(value, bool):
        raise _fail(f"{arg}={value!r} is not an int or a pair of ints", f"Write {arg}=(2, 2)")
    if isinstance(value, int):
        value = (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        if min(value) < 1:
            raise _fail(f"{arg}={tuple(value)} must be positive", f"Use {arg} >= 1 on both axes")
        return int(value[0]), int(value[1])
    raise _fail(f"{arg}={value!r} is not an int or a pair of ints", f"Write {arg}=(2, 2)")


def _choice(value: Any, arg: str, choices: tuple[str, ...], lower: bool = True) -> str:
    if isinstance(value, str) and (value.lower() if lower else value) in choices:
        return value.lower() if lower else value
    raise _fail(f"{arg}={value!r} is not supported", f"Use one of {', '.join(choices)}")


def _initializer(value: Any, arg: str) -> str | None:
    if value is None:
        return None
    return _choice(value, arg, INITIALIZERS, lower=False)


@dataclass(frozen=True, kw_only=True)
class Layer:
    """Base of every layer spec.

    Attributes:
        name: the layer's name (any text; sanitised wherever it reaches code or formulas).
        inputs: names of the layers feeding this one; empty means "the previous layer".
    """

    type: ClassVar[str] = "Layer"
    name: str
    inputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise _fail(f"name={self.name!r} must be a non-empty string", "Give every layer a name")
        object.__setattr__(self, "inputs", tuple(self.inputs))
        self.validate()

    def validate(self) -> None:
        """Check the arguments alone (no shapes); subclasses override."""

    # Shape contract: ``output_shape(input_shape)``, shapes without the batch axis.
    def output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape)

    def param_count(self, input_shape: Shape) -> int:
        return 0

    def macs(self, input_shape: Shape) -> int:
        """Multiply-accumulates per image."""
        return 0

    def weight_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        """Names and shapes of this layer's weights, in Keras order and layout."""
        return {}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "inputs" and not value:
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


def _spatial(shape: Shape, data_format: str, where: str) -> tuple[int, int, int]:
    """Return (height, width, channels) of a rank-3 shape in the given data_format."""
    if len(shape) != 3:
        raise _fail(
            f"{where} needs a 3-D input (height, width, channels), received shape {tuple(shape)}",
            "Add a Reshape layer before it, or fix input_shape",
        )
    if data_format == CHANNELS_FIRST:
        return shape[1], shape[2], shape[0]
    return shape[0], shape[1], shape[2]


def _image(h: int, w: int, c: int, data_format: str) -> Shape:
    return (c, h, w) if data_format == CHANNELS_FIRST else (h, w, c)


@dataclass(frozen=True, kw_only=True)
class _Windowed(Layer):
    """Shared validation for Conv2D and the pooling layers."""

    padding: str = "valid"
    data_format: str = CHANNELS_LAST

    def validate(self) -> None:
        object.__setattr__(self, "padding", _choice(self.padding, "padding", geometry.PADDINGS))
        object.__setattr__(self, "data_format", _choice(self.data_format, "data_format", DATA_FORMATS))

    def window_args(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """(kernel or pool size, strides, dilation) of this layer."""
        raise NotImplementedError

    def window(self, input_shape: Shape) -> geometry.Window2D:
        """Geometry of this layer on ``input_shape`` (checked to fit)."""
        h, w, _ = _spatial(input_shape, self.data_format, f"{self.type}")
        size, strides, dilation = self.window_args()
        win = geometry.window_2d((h, w), size, strides, self.padding, dilation)
        if win.out_h < 1 or win.out_w < 1:
            arg = "kernel_size" if isinstance(self, Conv2D) else "pool_size"
            span = tuple(geometry.dilated_span(k, d) for k, d in zip(size, dilation, strict=True))
            extra = f" (dilated span {span})" if dilation != (1, 1) else ""
            raise _fail(
                f"{arg}={size}{extra} does not fit input ({h}, {w}) with padding='valid' "
                f"(output would be {win.out_h}x{win.out_w})",
                f"Use padding='same' or {arg} <= ({h}, {w})" if dilation == (1, 1) else
                f"Use padding='same', or a kernel_size and dilation_rate whose span (k - 1) * d + 1 <= ({h}, {w})",
            )
        return win


@dataclass(frozen=True, kw_only=True)
class Conv2D(_Windowed):
    """Keras Conv2D. Kernel layout HWIO ``(kh, kw, in_channels, filters)``, bias ``(filters,)``."""

    type: ClassVar[str] = "Conv2D"
    filters: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    dilation_rate: tuple[int, int] = (1, 1)
    activation: str = "linear"
    use_bias: bool = True
    kernel_initializer: str | None = "glorot_uniform"
    bias_initializer: str | None = "zeros"

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.filters, int) or isinstance(self.filters, bool) or self.filters < 1:
            raise _fail(f"filters={self.filters!r} must be a positive int", "Use filters >= 1")
        object.__setattr__(self, "kernel_size", _pair(self.kernel_size, "kernel_size"))
        object.__setattr__(self, "strides", _pair(self.strides, "strides"))
        object.__setattr__(self, "dilation_rate", _pair(self.dilation_rate, "dilation_rate"))
        if self.strides != (1, 1) and self.dilation_rate != (1, 1):
            raise _fail(
                f"strides={self.strides} with dilation_rate={self.dilation_rate}: Keras allows "
                "strides > 1 only with dilation_rate 1",
                "Use strides=(1, 1) or dilation_rate=(1, 1)",
            )
        object.__setattr__(self, "activation", _choice(self.activation, "activation", ACTIVATIONS))
        _bool(self, "use_bias")
        object.__setattr__(self, "kernel_initializer", _initializer(self.kernel_initializer, "kernel_initializer"))
        object.__setattr__(self, "bias_initializer", _initializer(self.bias_initializer, "bias_initializer"))

    def window_args(self):
        return self.kernel_size, self.strides, self.dilation_rate

    def output_shape(self, input_shape: Shape) -> Shape:
        win = self.window(input_shape)
        return _image(win.out_h, win.out_w, self.filters, self.data_format)

    def weight_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        _, _, channels = _spatial(input_shape, self.data_format, self.type)
        shapes: dict[str, Shape] = {"kernel": (*self.kernel_size, channels, self.filters)}
        if self.use_bias:
            shapes["bias"] = (self.filters,)
        return shapes

    def param_count(self, input_shape: Shape) -> int:
        return sum(math.prod(s) for s in self.weight_shapes(input_shape).values())

    def macs(self, input_shape: Shape) -> int:
        win = self.window(input_shape)
        _, _, channels = _spatial(input_shape, self.data_format, self.type)
        return win.out_h * win.out_w * self.filters * self.kernel_size[0] * self.kernel_size[1] * channels


@dataclass(frozen=True, kw_only=True)
class _Pooling2D(_Windowed):
    pool_size: tuple[int, int] = (2, 2)
    strides: tuple[int, int] | None = None

    def validate(self) -> None:
        super().validate()
        object.__setattr__(self, "pool_size", _pair(self.pool_size, "pool_size"))
        # Keras: strides=None means strides=pool_size.
        strides = self.pool_size if self.strides is None else self.strides
        object.__setattr__(self, "strides", _pair(strides, "strides"))

    def window_args(self):
        return self.pool_size, self.strides, (1, 1)

    def output_shape(self, input_shape: Shape) -> Shape:
        win = self.window(input_shape)
        _, _, channels = _spatial(input_shape, self.data_format, self.type)
        return _image(win.out_h, win.out_w, channels, self.data_format)


@dataclass(frozen=True, kw_only=True)
class MaxPooling2D(_Pooling2D):
    """Keras MaxPooling2D: 'same' padding cells can never win (they act as -inf)."""

    type: ClassVar[str] = "MaxPooling2D"


@dataclass(frozen=True, kw_only=True)
class AveragePooling2D(_Pooling2D):
    """Keras AveragePooling2D: 'same' padding cells are left out of the count it divides by."""

    type: ClassVar[str] = "AveragePooling2D"


@dataclass(frozen=True, kw_only=True)
class ZeroPadding2D(Layer):
    """Keras ZeroPadding2D; ``padding = ((top, bottom), (left, right))``."""

    type: ClassVar[str] = "ZeroPadding2D"
    padding: tuple[tuple[int, int], tuple[int, int]] = ((1, 1), (1, 1))
    data_format: str = CHANNELS_LAST

    def validate(self) -> None:
        pad = self.padding
        if isinstance(pad, int) and not isinstance(pad, bool):
            pad = ((pad, pad), (pad, pad))
        elif isinstance(pad, (list, tuple)) and len(pad) == 2 and all(isinstance(p, int) for p in pad):
            pad = ((pad[0], pad[0]), (pad[1], pad[1]))
        ok = (
            isinstance(pad, (list, tuple)) and len(pad) == 2
            and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in pad)
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for p in pad for v in p)
        )
        if not ok:
            raise _fail(
                f"padding={self.padding!r} is not ((top, bottom), (left, right)) of ints >= 0",
                "Write padding=((1, 1), (1, 1))",
            )
        object.__setattr__(self, "padding", (tuple(pad[0]), tuple(pad[1])))
        object.__setattr__(self, "data_format", _choice(self.data_format, "data_format", DATA_FORMATS))

    def output_shape(self, input_shape: Shape) -> Shape:
        h, w, c = _spatial(input_shape, self.data_format, self.type)
        (top, bottom), (left, right) = self.padding
        return _image(h + top + bottom, w + left + right, c, self.data_format)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["padding"] = [list(p) for p in self.padding]
        return out


@dataclass(frozen=True, kw_only=True)
class Activation(Layer):
    """Keras Activation layer."""

    type: ClassVar[str] = "Activation"
    activation: str

    def validate(self) -> None:
        object.__setattr__(self, "activation", _choice(self.activation, "activation", ACTIVATIONS))


@dataclass(frozen=True, kw_only=True)
class Flatten(Layer):
    """Keras Flatten. With data_format='channels_first' Keras first moves axis 1 (channels) to
    the end, then flattens: the order is H-W-C, not C-H-W (Keras 2 and 3 alike)."""

    type: ClassVar[str] = "Flatten"
    data_format: str = CHANNELS_LAST

    def validate(self) -> None:
        object.__setattr__(self, "data_format", _choice(self.data_format, "data_format", DATA_FORMATS))

    def output_shape(self, input_shape: Shape) -> Shape:
        return (math.prod(input_shape),)


@dataclass(frozen=True, kw_only=True)
class Dense(Layer):
    """Keras Dense on a 1-D input. Kernel ``(in_features, units)``, bias ``(units,)``."""

    type: ClassVar[str] = "Dense"
    units: int
    activation: str = "linear"
    use_bias: bool = True
    kernel_initializer: str | None = "glorot_uniform"
    bias_initializer: str | None = "zeros"

    def validate(self) -> None:
        if not isinstance(self.units, int) or isinstance(self.units, bool) or self.units < 1:
            raise _fail(f"units={self.units!r} must be a positive int", "Use units >= 1")
        object.__setattr__(self, "activation", _choice(self.activation, "activation", ACTIVATIONS))
        _bool(self, "use_bias")
        object.__setattr__(self, "kernel_initializer", _initializer(self.kernel_initializer, "kernel_initializer"))
        object.__setattr__(self, "bias_initializer", _initializer(self.bias_initializer, "bias_initializer"))

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 1:
            raise _fail(
                f"Dense needs a 1-D input, received shape {tuple(input_shape)}",
                "Add a Flatten layer before it",
            )
        return (self.units,)

    def weight_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        self.output_shape(input_shape)
        shapes: dict[str, Shape] = {"kernel": (input_shape[0], self.units)}
        if self.use_bias:
            shapes["bias"] = (self.units,)
        return shapes

    def param_count(self, input_shape: Shape) -> int:
        return sum(math.prod(s) for s in self.weight_shapes(input_shape).values())

    def macs(self, input_shape: Shape) -> int:
        return input_shape[0] * self.units


@dataclass(frozen=True, kw_only=True)
class Dropout(Layer):
    """Keras Dropout: the identity at inference."""

    type: ClassVar[str] = "Dropout"
    rate: float = 0.5

    def validate(self) -> None:
        if not isinstance(self.rate, (int, float)) or isinstance(self.rate, bool) or not 0 <= self.rate < 1:
            raise _fail(f"rate={self.rate!r} must be a number in [0, 1)", "Use for example rate=0.25")


@dataclass(frozen=True, kw_only=True)
class BatchNormalization(Layer):
    """Keras BatchNormalization at inference:
    ``y = gamma * (x - moving_mean) / sqrt(moving_variance + epsilon) + beta`` along ``axis``."""

    type: ClassVar[str] = "BatchNormalization"
    axis: int = -1
    epsilon: float = 1e-3
    momentum: float = 0.99
    center: bool = True
    scale: bool = True

    def validate(self) -> None:
        if not isinstance(self.axis, int) or isinstance(self.axis, bool):
            raise _fail(f"axis={self.axis!r} must be an int", "Use axis=-1 (channels_last) or axis=1 (channels_first)")
        if not isinstance(self.epsilon, (int, float)) or self.epsilon <= 0:
            raise _fail(f"epsilon={self.epsilon!r} must be a positive number", "Use epsilon=1e-3")
        _bool(self, "center")
        _bool(self, "scale")

    def feature_axis(self, input_shape: Shape) -> int:
        """The normalised axis as an index into ``input_shape`` (no batch axis)."""
        rank = len(input_shape) + 1
        axis = self.axis if self.axis >= 0 else rank + self.axis
        if not 1 <= axis < rank:
            raise _fail(f"axis={self.axis} is out of range for input shape {tuple(input_shape)}", "Use axis=-1")
        return axis - 1

    def weight_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        n = (input_shape[self.feature_axis(input_shape)],)
        shapes: dict[str, Shape] = {}
        if self.scale:
            shapes["gamma"] = n
        if self.center:
            shapes["beta"] = n
        shapes["moving_mean"] = n
        shapes["moving_variance"] = n
        return shapes

    def param_count(self, input_shape: Shape) -> int:
        return sum(math.prod(s) for s in self.weight_shapes(input_shape).values())


@dataclass(frozen=True, kw_only=True)
class Reshape(Layer):
    """Keras Reshape; one entry of target_shape may be -1."""

    type: ClassVar[str] = "Reshape"
    target_shape: tuple[int, ...]

    def validate(self) -> None:
        shape = self.target_shape
        if not isinstance(shape, (list, tuple)) or not shape or not all(
            isinstance(v, int) and not isinstance(v, bool) and (v >= 1 or v == -1) for v in shape
        ) or list(shape).count(-1) > 1:
            raise _fail(f"target_shape={shape!r} must be positive ints (one -1 allowed)", "Write target_shape=(28, 28, 1)")
        object.__setattr__(self, "target_shape", tuple(shape))

    def output_shape(self, input_shape: Shape) -> Shape:
        size = math.prod(input_shape)
        known = math.prod(v for v in self.target_shape if v != -1)
        if -1 in self.target_shape:
            if size % known:
                raise _fail(f"target_shape={self.target_shape} cannot hold {size} values of input {tuple(input_shape)}", "Fix target_shape")
            return tuple(size // known if v == -1 else v for v in self.target_shape)
        if known != size:
            raise _fail(
                f"target_shape={self.target_shape} holds {known} values but the input {tuple(input_shape)} has {size}",
                "Make the sizes agree",
            )
        return self.target_shape


@dataclass(frozen=True, kw_only=True)
class Rescaling(Layer):
    """Keras Rescaling: ``y = x * scale + offset``."""

    type: ClassVar[str] = "Rescaling"
    scale: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Add(Layer):
    """Keras Add: element-wise sum of two or more inputs of the same shape."""

    type: ClassVar[str] = "Add"


@dataclass(frozen=True, kw_only=True)
class Concatenate(Layer):
    """Keras Concatenate along ``axis`` (counted with the batch axis, as Keras does)."""

    type: ClassVar[str] = "Concatenate"
    axis: int = -1


LAYER_TYPES: dict[str, type[Layer]] = {
    cls.type: cls
    for cls in (
        Conv2D, MaxPooling2D, AveragePooling2D, ZeroPadding2D, Activation, Flatten, Dense,
        Dropout, BatchNormalization, Reshape, Rescaling, Add, Concatenate,
    )
}


def _bool(layer: Layer, arg: str) -> None:
    if not isinstance(getattr(layer, arg), bool):
        raise _fail(f"{arg}={getattr(layer, arg)!r} must be true or false", f"Write {arg}=True or {arg}=False")


def _where(index: int, layer: Layer | dict) -> str:
    if isinstance(layer, Layer):
        return f"layer {index} '{layer.name}' ({layer.type})"
    return f"layer {index} '{layer.get('name', '?')}' ({layer.get('type', '?')})"


@dataclass(frozen=True)
class LayerInfo:
    """One row of a model summary."""

    index: int
    layer: Layer
    input_shapes: tuple[Shape, ...]
    output_shape: Shape
    params: int
    macs: int

    @property
    def activation_size(self) -> int:
        return math.prod(self.output_shape)


@dataclass(frozen=True)
class Model:
    """A network: an input shape and layers. Validated on construction.

    Layers run in order; a layer whose ``inputs`` is empty reads the previous layer's output
    (the first reads the model input). Add and Concatenate name their inputs.

    Attributes:
        name: the model's name.
        input_shape: the input shape without the batch axis, e.g. (1, 28, 28) for channels_first.
        layers: the layers in execution order.
    """

    name: str
    input_shape: Shape
    layers: tuple[Layer, ...]
    infos: tuple[LayerInfo, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        shape = self.input_shape
        if not isinstance(shape, (list, tuple)) or not shape or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape
        ):
            raise SpecError(f"model '{self.name}': input_shape={shape!r} must be positive ints, e.g. [28, 28, 1]")
        object.__setattr__(self, "input_shape", tuple(shape))
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise SpecError(f"model '{self.name}' has no layers. Add at least one layer")
        object.__setattr__(self, "infos", self._infer())

    def _infer(self) -> tuple[LayerInfo, ...]:
        shapes: dict[str, Shape] = {}
        previous = self.input_shape
        infos = []
        for index, layer in enumerate(self.layers):
            where = _where(index, layer)
            if layer.name in shapes:
                raise SpecError(f"{where}: the name '{layer.name}' is used twice. Give every layer its own name")
            try:
                if layer.inputs:
                    missing = [n for n in layer.inputs if n not in shapes and n != "input"]
                    if missing:
                        raise _fail(f"inputs {missing} are not earlier layers", "Name layers that come before this one")
                    in_shapes = tuple(self.input_shape if n == "input" else shapes[n] for n in layer.inputs)
                else:
                    in_shapes = (previous,)
                out = _merge_shape(layer, in_shapes) if isinstance(layer, (Add, Concatenate)) else layer.output_shape(in_shapes[0])
                params = layer.param_count(in_shapes[0])
                macs = layer.macs(in_shapes[0])
            except SpecError as exc:
                raise SpecError(f"{where}: {exc}") from None
            shapes[layer.name] = out
            previous = out
            infos.append(LayerInfo(index, layer, in_shapes, tuple(out), params, macs))
        return tuple(infos)

    @property
    def output_shape(self) -> Shape:
        return self.infos[-1].output_shape

    @property
    def param_count(self) -> int:
        return sum(info.params for info in self.infos)

    @property
    def macs(self) -> int:
        return sum(info.macs for info in self.infos)

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise SpecError(f"model '{self.name}' has no layer named {name!r}. Layers: {', '.join(l.name for l in self.layers)}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "input_shape": list(self.input_shape), "layers": [l.to_dict() for l in self.layers]}

    @classmethod
    def from_dict(cls, data: Any, source: str = "spec") -> Model:
        """Build and validate a model from a parsed JSON/YAML document."""
        if not isinstance(data, dict):
            raise SpecError(f"{source}: the document must be a mapping with 'name', 'input_shape' and 'layers'")
        layers_data = list(data.get("layers") or [])
        input_shape = data.get("input_shape")
        if layers_data and isinstance(layers_data[0], dict) and layers_data[0].get("type") in ("Input", "InputLayer"):
            first = layers_data.pop(0)
            input_shape = first.get("shape", first.get("batch_shape", [None])[1:] if "batch_shape" in first else None)
        if input_shape is None:
            raise SpecError(f"{source}: no input_shape. Add \"input_shape\": [28, 28, 1] or an Input layer first")
        layers = []
        for index, item in enumerate(layers_data):
            layers.append(layer_from_dict(item, f"{source}: {_where(index, item if isinstance(item, dict) else {})}"))
        try:
            return cls(name=str(data.get("name", "model")), input_shape=tuple(input_shape) if isinstance(input_shape, list) else input_shape, layers=tuple(layers))
        except SpecError as exc:
            raise SpecError(f"{source}: {exc}") from None

    def to_json(self) -> str:
        """JSON with one layer per line, so spec files read like a table and diff cleanly."""
        data = self.to_dict()
        layers = ",\n".join("    " + json.dumps(layer) for layer in data["layers"])
        return (
            "{\n"
            f'  "name": {json.dumps(data["name"])},\n'
            f'  "input_shape": {json.dumps(data["input_shape"])},\n'
            f'  "layers": [\n{layers}\n  ]\n'
            "}\n"
        )

    def save(self, path: str | Path) -> None:
        """Write the spec as JSON (or YAML for .yaml/.yml), atomically."""
        from layerlab.io import atomic_write_text

        path = Path(path)
        if path.suffix.lower() in (".yaml", ".yml"):
            yaml = _yaml()
            atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))
        else:
            atomic_write_text(path, self.to_json())


def layer_from_dict(item: Any, where: str = "layer") -> Layer:
    """Build one layer spec from a mapping with a 'type' key; errors name ``where``."""
    if not isinstance(item, dict):
        raise SpecError(f"{where}: expected a mapping with 'type' and 'name', received {type(item).__name__}")
    kind = item.get("type")
    cls = LAYER_TYPES.get(kind)
    if cls is None:
        raise SpecError(f"{where}: unknown layer type {kind!r}. Supported: {', '.join(LAYER_TYPES)}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(item) - names - {"type"})
    if unknown:
        raise SpecError(f"{where}: unknown argument(s) {', '.join(unknown)} for {kind}. Known: {', '.join(sorted(names))}")
    kwargs = {k: _tupled(v) for k, v in item.items() if k != "type"}
    try:
        return cls(**kwargs)
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from None
    except TypeError as exc:  # a missing required argument
        raise SpecError(f"{where}: {exc}".replace("__init__() ", "")) from None


def _tupled(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tupled(v) for v in value)
    return value


def _merge_shape(layer: Layer, in_shapes: tuple[Shape, ...]) -> Shape:
    if len(in_shapes) < 2:
        raise _fail(f"{layer.type} needs at least two inputs, received {len(in_shapes)}", "List two layer names in inputs")
    if isinstance(layer, Add):
        if len(set(in_shapes)) != 1:
            raise _fail(f"Add needs inputs of one shape, received {list(in_shapes)}", "Make the shapes agree")
        return in_shapes[0]
    assert isinstance(layer, Concatenate)
    rank = len(in_shapes[0]) + 1
    axis = layer.axis if layer.axis >= 0 else rank + layer.axis
    if not 1 <= axis < rank or any(len(s) != rank - 1 for s in in_shapes):
        raise _fail(f"Concatenate axis={layer.axis} does not fit input shapes {list(in_shapes)}", "Use axis=-1")
    rest = {tuple(s[:axis - 1]) + tuple(s[axis:]) for s in in_shapes}
    if len(rest) != 1:
        raise _fail(f"Concatenate inputs differ off axis {layer.axis}: {list(in_shapes)}", "Make the other axes agree")
    out = list(in_shapes[0])
    out[axis - 1] = sum(s[axis - 1] for s in in_shapes)
    return tuple(out)


def _yaml():
    from layerlab.errors import require

    return require("yaml", "yaml", "YAML spec files")


def load_spec(source: str | Path) -> Model:
    """Load a spec by built-in name (``seed650``) or from a .json / .yaml / .yml file."""
    from layerlab.presets import PRESETS

    if isinstance(source, str) and source in PRESETS:
        return PRESETS[source]()
    path = Path(source)
    if not path.is_file():
        raise SpecError(f"spec {str(source)!r}: no such file and no built-in spec of that name. Built-in: {', '.join(PRESETS)}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            data = _yaml().safe_load(text)
        except Exception as exc:  # yaml.YAMLError and its many subclasses
            raise SpecError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    return Model.from_dict(data, source=str(path))
