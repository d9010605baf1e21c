"""The base of every layer spec, and the argument checks the layer families share.

A layer spec is a frozen dataclass: its fields are the Keras arguments that change what the layer
computes at inference, validated when it is built. Shapes exclude the batch axis and are in the
layer's own data_format. A family module (``conv``, ``pooling``, ...) declares each layer type
once: arguments, validation, output shape, weights, parameter and MAC counts.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from layerlab.errors import SpecError

CHANNELS_LAST = "channels_last"
CHANNELS_FIRST = "channels_first"
DATA_FORMATS = (CHANNELS_LAST, CHANNELS_FIRST)

ACTIVATIONS = (
    "linear", "relu", "tanh", "sigmoid", "softmax", "elu", "selu", "softplus", "softsign",
    "swish", "silu", "gelu", "hard_sigmoid", "leaky_relu", "relu6", "exponential",
    # Keras 3's x * hard_sigmoid(x) (MobileNetV3's activation), under both of its names.
    "hard_silu", "hard_swish",
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


def fail(what: str, fix: str = "") -> SpecError:
    """A SpecError in the house template: what is wrong, then how to fix it."""
    return SpecError(f"{what}. {fix}".rstrip(". ") + ("." if fix else ""))


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def ints(value: Any, arg: str, rank: int, low: int = 1) -> tuple[int, ...]:
    """Accept an int or ``rank`` ints, as Keras does, and return ``rank`` ints >= ``low``."""
    example = ", ".join(["2"] * rank)
    if is_int(value):
        value = (value,) * rank
    if isinstance(value, (list, tuple)) and len(value) == rank and all(is_int(v) for v in value):
        if min(value) < low:
            word = "positive" if low == 1 else f">= {low}"
            raise fail(f"{arg}={tuple(value)} must be {word}", f"Use {arg} >= {low} on every axis")
        return tuple(int(v) for v in value)
    noun = "an int" if rank == 1 else f"an int or {rank} ints"
    raise fail(f"{arg}={value!r} is not {noun}", f"Write {arg}=({example}{',' if rank == 1 else ''})")


def pair(value: Any, arg: str) -> tuple[int, int]:
    """An int or a pair of positive ints -> a pair (Keras' ``kernel_size=3`` means (3, 3))."""
    out = ints(value, arg, 2)
    return out[0], out[1]


def choice(value: Any, arg: str, choices: tuple[str, ...], lower: bool = True) -> str:
    if isinstance(value, str) and (value.lower() if lower else value) in choices:
        return value.lower() if lower else value
    raise fail(f"{arg}={value!r} is not supported", f"Use one of {', '.join(choices)}")


def initializer(value: Any, arg: str) -> str | None:
    if value is None:
        return None
    return choice(value, arg, INITIALIZERS, lower=False)


def number(value: Any, arg: str, *, low: float | None = None, allow_none: bool = False) -> float | None:
    """A finite real number (>= ``low`` if given); None only when ``allow_none``."""
    if value is None and allow_none:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise fail(f"{arg}={value!r} must be a finite number", f"Write for example {arg}=1.0")
    if low is not None and value < low:
        raise fail(f"{arg}={value!r} must be >= {low}", f"Use {arg} >= {low}")
    return float(value)


def check_bool(layer: Layer, arg: str) -> None:
    if not isinstance(getattr(layer, arg), bool):
        raise fail(f"{arg}={getattr(layer, arg)!r} must be true or false", f"Write {arg}=True or {arg}=False")


def set_field(layer: Layer, name: str, value: Any) -> None:
    """Normalise a field of a frozen spec during validation."""
    object.__setattr__(layer, name, value)


@dataclass(frozen=True, kw_only=True)
class Layer:
    """Base of every layer spec.

    Attributes:
        name: the layer's name (any text; sanitised wherever it reaches code or formulas).
        inputs: names of the layers feeding this one; empty means "the previous layer".

    Class attributes:
        type: the Keras class name.
        family: the family module that declares it ('conv', 'pooling', ...).
        merge: True for layers that read two or more inputs (Add, Concatenate, ...).
    """

    type: ClassVar[str] = "Layer"
    family: ClassVar[str] = ""
    merge: ClassVar[bool] = False
    layouts: ClassVar[dict[str, str]] = {}  # weight name -> its axes in words (Keras' layout)
    name: str
    inputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise fail(f"name={self.name!r} must be a non-empty string", "Give every layer a name")
        set_field(self, "inputs", tuple(self.inputs))
        self.validate()

    def validate(self) -> None:
        """Check the arguments alone (no shapes); subclasses override."""

    # Shape contract: ``output_shape(input_shape)``, shapes without the batch axis.
    def output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape)

    def output_shape_of(self, input_shapes: tuple[Shape, ...]) -> Shape:
        """The output shape for all of this layer's inputs (one, except for merges)."""
        if len(input_shapes) != 1:
            raise fail(f"{self.type} takes one input, received {len(input_shapes)}", "List one layer in inputs")
        return self.output_shape(input_shapes[0])

    def param_count(self, input_shape: Shape) -> int:
        return sum(math.prod(s) for s in self.weight_shapes(input_shape).values())

    def macs(self, input_shape: Shape) -> int:
        """Multiply-accumulates per image."""
        return 0

    def weight_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        """Names and shapes of this layer's weights, in Keras order and layout."""
        return {}

    def to_dict(self) -> dict[str, Any]:
        """The spec document of this layer: type, name, inputs, then the arguments in Keras' order."""
        out: dict[str, Any] = {"type": self.type}
        fields = sorted(dataclasses.fields(self), key=lambda f: _KEY_ORDER.get(f.name, len(_KEY_ORDER)))
        for f in fields:
            value = getattr(self, f.name)
            if f.name == "inputs" and not value:
                continue
            out[f.name] = _plain(value)
        return out


# Keras' own argument order (Conv2D(filters, kernel_size, strides, padding, ...)), for readable specs.
_KEY_ORDER = {name: i for i, name in enumerate((
    "name", "inputs", "filters", "units", "kernel_size", "pool_size", "depth_multiplier", "strides", "padding",
    "data_format", "dilation_rate", "activation", "use_bias",
))}


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


def spatial(shape: Shape, data_format: str, where: str) -> tuple[int, int, int]:
    """Return (height, width, channels) of a rank-3 shape in the given data_format."""
    if len(shape) != 3:
        raise fail(
            f"{where} needs a 3-D input (height, width, channels), received shape {tuple(shape)}",
            "Add a Reshape layer before it, or fix input_shape",
        )
    if data_format == CHANNELS_FIRST:
        return shape[1], shape[2], shape[0]
    return shape[0], shape[1], shape[2]


def image(h: int, w: int, c: int, data_format: str) -> Shape:
    return (c, h, w) if data_format == CHANNELS_FIRST else (h, w, c)


def steps_channels(shape: Shape, data_format: str, where: str) -> tuple[int, int]:
    """Return (steps, channels) of a rank-2 sequence shape in the given data_format."""
    if len(shape) != 2:
        raise fail(
            f"{where} needs a 2-D input (steps, channels), received shape {tuple(shape)}",
            "Add a Reshape layer before it, or fix input_shape",
        )
    if data_format == CHANNELS_FIRST:
        return shape[1], shape[0]
    return shape[0], shape[1]


def sequence(steps: int, channels: int, data_format: str) -> Shape:
    return (channels, steps) if data_format == CHANNELS_FIRST else (steps, channels)
