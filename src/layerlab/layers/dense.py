"""The dense family: Keras Dense on a 1-D input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from layerlab.layers.base import ACTIVATIONS, Layer, Shape, check_bool, choice, fail, initializer, is_int, set_field


@dataclass(frozen=True, kw_only=True)
class Dense(Layer):
    """Keras Dense on a 1-D input. Kernel ``(in_features, units)``, bias ``(units,)``."""

    type: ClassVar[str] = "Dense"
    family: ClassVar[str] = "dense"
    layouts: ClassVar[dict[str, str]] = {"kernel": "(in_features, units)", "bias": "(units,)"}
    units: int
    activation: str = "linear"
    use_bias: bool = True
    kernel_initializer: str | None = "glorot_uniform"
    bias_initializer: str | None = "zeros"

    def validate(self) -> None:
        if not is_int(self.units) or self.units < 1:
            raise fail(f"units={self.units!r} must be a positive int", "Use units >= 1")
        set_field(self, "activation", choice(self.activation, "activation", ACTIVATIONS))
        check_bool(self, "use_bias")
        set_field(self, "kernel_initializer", initializer(self.kernel_initializer, "kernel_initializer"))
        set_field(self, "bias_initializer", initializer(self.bias_initializer, "bias_initializer"))

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 1:
            raise fail(
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

    def macs(self, input_shape: Shape) -> int:
        return input_shape[0] * self.units


TYPES = (Dense,)
