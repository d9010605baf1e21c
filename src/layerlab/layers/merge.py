"""The merge family: layers that combine two or more inputs named in ``inputs``.

Element-wise merges (Add, Subtract, Multiply, Average, Maximum, Minimum) need inputs of one rank
whose sizes agree axis by axis or are 1 there, as Keras broadcasts them (a squeeze-and-excite
block multiplies an (H, W, C) map by a (1, 1, C) gate); Subtract takes exactly two
(``inputs[0] - inputs[1]``). Concatenate joins along ``axis``,
counted with the batch axis as Keras does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from layerlab.layers.base import Layer, Shape, fail, is_int


def broadcast_shape(what: str, shapes: tuple[Shape, ...]) -> Shape:
    """The shape Keras' element-wise merges give inputs of ``shapes`` (no batch axis): one rank,
    and on each axis one size or 1 (the others' size)."""
    if len({len(s) for s in shapes}) != 1:
        raise fail(f"{what} needs inputs of one rank, received shapes {list(shapes)}",
                   "Reshape the inputs to one rank (keepdims=True on a global pooling keeps it)")
    out = []
    for sizes in zip(*shapes, strict=True):
        wide = {n for n in sizes if n != 1}
        if len(wide) > 1:
            raise fail(f"{what} needs inputs whose sizes agree or are 1 on each axis, received shapes {list(shapes)}",
                       "Make the shapes agree")
        out.append(wide.pop() if wide else 1)
    return tuple(out)


@dataclass(frozen=True, kw_only=True)
class _Merge(Layer):
    family: ClassVar[str] = "merge"
    merge: ClassVar[bool] = True
    operation: ClassVar[str] = ""  # 'add', 'subtract', 'multiply', 'average', 'maximum', 'minimum'
    exact_inputs: ClassVar[int | None] = None

    def _count(self, in_shapes: tuple[Shape, ...]) -> None:
        if self.exact_inputs is not None and len(in_shapes) != self.exact_inputs:
            raise fail(f"{self.type} needs exactly {self.exact_inputs} inputs, received {len(in_shapes)}",
                       f"List {self.exact_inputs} layer names in inputs")
        if len(in_shapes) < 2:
            raise fail(f"{self.type} needs at least two inputs, received {len(in_shapes)}", "List two layer names in inputs")

    def output_shape_of(self, input_shapes: tuple[Shape, ...]) -> Shape:
        self._count(input_shapes)
        return broadcast_shape(self.type, input_shapes)

    def output_shape(self, input_shape: Shape) -> Shape:
        return self.output_shape_of((input_shape, input_shape))


@dataclass(frozen=True, kw_only=True)
class Add(_Merge):
    """Keras Add: the element-wise sum of its inputs."""

    type: ClassVar[str] = "Add"
    operation: ClassVar[str] = "add"


@dataclass(frozen=True, kw_only=True)
class Subtract(_Merge):
    """Keras Subtract: ``inputs[0] - inputs[1]``."""

    type: ClassVar[str] = "Subtract"
    operation: ClassVar[str] = "subtract"
    exact_inputs: ClassVar[int | None] = 2


@dataclass(frozen=True, kw_only=True)
class Multiply(_Merge):
    """Keras Multiply: the element-wise product of its inputs."""

    type: ClassVar[str] = "Multiply"
    operation: ClassVar[str] = "multiply"


@dataclass(frozen=True, kw_only=True)
class Average(_Merge):
    """Keras Average: the element-wise mean of its inputs (their sum times 1 / count)."""

    type: ClassVar[str] = "Average"
    operation: ClassVar[str] = "average"


@dataclass(frozen=True, kw_only=True)
class Maximum(_Merge):
    """Keras Maximum: the element-wise maximum of its inputs."""

    type: ClassVar[str] = "Maximum"
    operation: ClassVar[str] = "maximum"


@dataclass(frozen=True, kw_only=True)
class Minimum(_Merge):
    """Keras Minimum: the element-wise minimum of its inputs."""

    type: ClassVar[str] = "Minimum"
    operation: ClassVar[str] = "minimum"


@dataclass(frozen=True, kw_only=True)
class Concatenate(_Merge):
    """Keras Concatenate along ``axis`` (counted with the batch axis, as Keras does)."""

    type: ClassVar[str] = "Concatenate"
    axis: int = -1

    def validate(self) -> None:
        if not is_int(self.axis):
            raise fail(f"axis={self.axis!r} must be an int", "Use axis=-1")

    def output_shape_of(self, input_shapes: tuple[Shape, ...]) -> Shape:
        self._count(input_shapes)
        rank = len(input_shapes[0]) + 1
        axis = self.axis if self.axis >= 0 else rank + self.axis
        if not 1 <= axis < rank or any(len(s) != rank - 1 for s in input_shapes):
            raise fail(f"Concatenate axis={self.axis} does not fit input shapes {list(input_shapes)}", "Use axis=-1")
        rest = {tuple(s[:axis - 1]) + tuple(s[axis:]) for s in input_shapes}
        if len(rest) != 1:
            raise fail(f"Concatenate inputs differ off axis {self.axis}: {list(input_shapes)}", "Make the other axes agree")
        out = list(input_shapes[0])
        out[axis - 1] = sum(s[axis - 1] for s in input_shapes)
        return tuple(out)


ELEMENTWISE = (Add, Subtract, Multiply, Average, Maximum, Minimum)
TYPES = (*ELEMENTWISE, Concatenate)
