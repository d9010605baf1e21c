"""The activation family: element-wise layers (Activation, ReLU, PReLU, Rescaling, Dropout).

ReLU follows ``keras.activations.relu`` exactly, in its order of operations::

    positive = x * (x > threshold)            (relu(x) when threshold == 0)
    positive = clip(positive, 0, max_value)   (when max_value is set)
    y = positive - negative_slope * relu(threshold - x)

so below the threshold ``y = negative_slope * (x - threshold)``, a cell equal to the threshold
gives 0, and ``ReLU(max_value=6)`` is ReLU6.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from layerlab.layers.base import ACTIVATIONS, Layer, Shape, choice, fail, initializer, is_int, number, set_field


@dataclass(frozen=True, kw_only=True)
class Activation(Layer):
    """Keras Activation layer."""

    type: ClassVar[str] = "Activation"
    family: ClassVar[str] = "activation"
    activation: str

    def validate(self) -> None:
        set_field(self, "activation", choice(self.activation, "activation", ACTIVATIONS))

    def as_activation(self) -> str:
        """The spec activation this layer applies (ReLU has the same method)."""
        return self.activation


@dataclass(frozen=True, kw_only=True)
class ReLU(Layer):
    """Keras ReLU layer with ``max_value`` (None: unbounded; 6: ReLU6), ``negative_slope`` and ``threshold``."""

    type: ClassVar[str] = "ReLU"
    family: ClassVar[str] = "activation"
    max_value: float | None = None
    negative_slope: float = 0.0
    threshold: float = 0.0

    def validate(self) -> None:
        set_field(self, "max_value", number(self.max_value, "max_value", low=0.0, allow_none=True))
        set_field(self, "negative_slope", number(self.negative_slope, "negative_slope", low=0.0))
        set_field(self, "threshold", number(self.threshold, "threshold", low=0.0))  # Keras refuses < 0

    def as_activation(self) -> str | None:
        """The spec activation computing the same function ('relu', 'relu6'), or None: backends
        that know only activations by name run a ReLU through this."""
        if self.negative_slope == 0.0 and self.threshold == 0.0:
            if self.max_value is None:
                return "relu"
            if self.max_value == 6.0:
                return "relu6"
        return None


@dataclass(frozen=True, kw_only=True)
class PReLU(Layer):
    """Keras PReLU: ``y = relu(x) - alpha * relu(-x)`` with a learned ``alpha``.

    ``alpha`` has the input's shape with every axis in ``shared_axes`` (1-based, batch excluded)
    set to 1, so it broadcasts along those axes (e.g. shared_axes=(1, 2): one alpha per channel).
    """

    type: ClassVar[str] = "PReLU"
    layouts: ClassVar[dict[str, str]] = {"alpha": "the input's shape, 1 on every shared axis"}
    family: ClassVar[str] = "activation"
    shared_axes: tuple[int, ...] = ()
    alpha_initializer: str | None = "zeros"

    def validate(self) -> None:
        axes = () if self.shared_axes is None else self.shared_axes
        if is_int(axes):
            axes = (axes,)
        if not isinstance(axes, (list, tuple)) or not all(is_int(a) and a >= 1 for a in axes):
            raise fail(f"shared_axes={self.shared_axes!r} must be axis numbers >= 1", "Write shared_axes=(1, 2)")
        set_field(self, "shared_axes", tuple(sorted(set(axes))))
        set_field(self, "alpha_initializer", initializer(self.alpha_initializer, "alpha_initializer"))

    def weight_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        if self.shared_axes and max(self.shared_axes) > len(input_shape):
            raise fail(f"shared_axes={self.shared_axes} do not fit input shape {tuple(input_shape)}",
                       f"Use axes 1..{len(input_shape)}")
        return {"alpha": tuple(1 if i + 1 in self.shared_axes else d for i, d in enumerate(input_shape))}


@dataclass(frozen=True, kw_only=True)
class Rescaling(Layer):
    """Keras Rescaling: ``y = x * scale + offset``."""

    type: ClassVar[str] = "Rescaling"
    family: ClassVar[str] = "activation"
    scale: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Dropout(Layer):
    """Keras Dropout: the identity at inference."""

    type: ClassVar[str] = "Dropout"
    family: ClassVar[str] = "activation"
    rate: float = 0.5

    def validate(self) -> None:
        if not isinstance(self.rate, (int, float)) or isinstance(self.rate, bool) or not 0 <= self.rate < 1:
            raise fail(f"rate={self.rate!r} must be a number in [0, 1)", "Use for example rate=0.25")


TYPES = (Activation, ReLU, PReLU, Rescaling, Dropout)
