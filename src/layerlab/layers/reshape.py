"""The reshape family: layers that move, add or drop values without arithmetic.

Flatten, Reshape, Permute, ZeroPadding1D/2D, Cropping2D and UpSampling2D (nearest).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from layerlab.layers.base import (
    CHANNELS_LAST,
    DATA_FORMATS,
    Layer,
    Shape,
    choice,
    fail,
    image,
    is_int,
    pair,
    sequence,
    set_field,
    spatial,
    steps_channels,
)


@dataclass(frozen=True, kw_only=True)
class Flatten(Layer):
    """Keras Flatten. With data_format='channels_first' Keras first moves axis 1 (channels) to
    the end, then flattens: the order is H-W-C, not C-H-W (Keras 2 and 3 alike)."""

    type: ClassVar[str] = "Flatten"
    family: ClassVar[str] = "reshape"
    data_format: str = CHANNELS_LAST

    def validate(self) -> None:
        set_field(self, "data_format", choice(self.data_format, "data_format", DATA_FORMATS))

    def output_shape(self, input_shape: Shape) -> Shape:
        return (math.prod(input_shape),)


@dataclass(frozen=True, kw_only=True)
class Reshape(Layer):
    """Keras Reshape; one entry of target_shape may be -1."""

    type: ClassVar[str] = "Reshape"
    family: ClassVar[str] = "reshape"
    target_shape: tuple[int, ...]

    def validate(self) -> None:
        shape = self.target_shape
        if not isinstance(shape, (list, tuple)) or not shape or not all(
            is_int(v) and (v >= 1 or v == -1) for v in shape
        ) or list(shape).count(-1) > 1:
            raise fail(f"target_shape={shape!r} must be positive ints (one -1 allowed)", "Write target_shape=(28, 28, 1)")
        set_field(self, "target_shape", tuple(shape))

    def output_shape(self, input_shape: Shape) -> Shape:
        size = math.prod(input_shape)
        known = math.prod(v for v in self.target_shape if v != -1)
        if -1 in self.target_shape:
            if size % known:
                raise fail(f"target_shape={self.target_shape} cannot hold {size} values of input {tuple(input_shape)}", "Fix target_shape")
            return tuple(size // known if v == -1 else v for v in self.target_shape)
        if known != size:
            raise fail(
                f"target_shape={self.target_shape} holds {known} values but the input {tuple(input_shape)} has {size}",
                "Make the sizes agree",
            )
        return self.target_shape


@dataclass(frozen=True, kw_only=True)
class Permute(Layer):
    """Keras Permute: ``dims`` is a permutation of 1..rank (axes counted from 1, batch excluded)."""

    type: ClassVar[str] = "Permute"
    family: ClassVar[str] = "reshape"
    dims: tuple[int, ...]

    def validate(self) -> None:
        dims = self.dims
        if not isinstance(dims, (list, tuple)) or not dims or sorted(dims) != list(range(1, len(dims) + 1)) or not all(
            is_int(d) for d in dims
        ):
            raise fail(f"dims={dims!r} is not a permutation of 1..{len(dims) if isinstance(dims, (list, tuple)) else 'rank'}",
                       "Write dims=(2, 1) for a rank-2 input")
        set_field(self, "dims", tuple(dims))

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != len(self.dims):
            raise fail(f"dims={self.dims} does not fit input shape {tuple(input_shape)} (rank {len(input_shape)})",
                       f"Give {len(input_shape)} dims")
        return tuple(input_shape[d - 1] for d in self.dims)


def _sides(value: Any, arg: str, axes: int, example: str) -> tuple:
    """An int, ``axes`` ints or ``axes`` (before, after) pairs of ints >= 0 -> ``axes`` pairs."""
    def ok(v):
        return is_int(v) and v >= 0

    if ok(value):
        value = ((value, value),) * axes
    elif isinstance(value, (list, tuple)) and len(value) == axes and all(ok(v) for v in value):
        value = tuple((v, v) for v in value)
    elif axes == 1 and isinstance(value, (list, tuple)) and len(value) == 2 and all(ok(v) for v in value):
        value = (tuple(value),)
    if not (isinstance(value, (list, tuple)) and len(value) == axes and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and all(ok(v) for v in p) for p in value
    )):
        raise fail(f"{arg}={value!r} is not {example} of ints >= 0", f"Write {arg}={example.replace('top', '1').replace('bottom', '1').replace('left', '1').replace('right', '1')}")
    return tuple((int(p[0]), int(p[1])) for p in value)


@dataclass(frozen=True, kw_only=True)
class ZeroPadding2D(Layer):
    """Keras ZeroPadding2D; ``padding = ((top, bottom), (left, right))``."""

    type: ClassVar[str] = "ZeroPadding2D"
    family: ClassVar[str] = "reshape"
    padding: tuple[tuple[int, int], tuple[int, int]] = ((1, 1), (1, 1))
    data_format: str = CHANNELS_LAST

    def validate(self) -> None:
        set_field(self, "padding", _sides(self.padding, "padding", 2, "((top, bottom), (left, right))"))
        set_field(self, "data_format", choice(self.data_format, "data_format", DATA_FORMATS))

    def output_shape(self, input_shape: Shape) -> Shape:
        h, w, c = spatial(input_shape, self.data_format, self.type)
        (top, bottom), (left, right) = self.padding
        return image(h + top + bottom, w + left + right, c, self.data_format)


@dataclass(frozen=True, kw_only=True)
class ZeroPadding1D(Layer):
    """Keras ZeroPadding1D on ``(steps, channels)``; ``padding = (left, right)`` zero steps."""

    type: ClassVar[str] = "ZeroPadding1D"
    family: ClassVar[str] = "reshape"
    padding: tuple[int, int] = (1, 1)
    data_format: str = CHANNELS_LAST

    def validate(self) -> None:
        set_field(self, "padding", _sides(self.padding, "padding", 1, "(left, right)")[0])
        set_field(self, "data_format", choice(self.data_format, "data_format", DATA_FORMATS))

    def output_shape(self, input_shape: Shape) -> Shape:
        steps, channels = steps_channels(input_shape, self.data_format, self.type)
        return sequence(steps + sum(self.padding), channels, self.data_format)


@dataclass(frozen=True, kw_only=True)
class Cropping2D(Layer):
    """Keras Cropping2D; ``cropping = ((top, bottom), (left, right))`` rows and columns removed."""

    type: ClassVar[str] = "Cropping2D"
    family: ClassVar[str] = "reshape"
    cropping: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))
    data_format: str = CHANNELS_LAST

    def validate(self) -> None:
        set_field(self, "cropping", _sides(self.cropping, "cropping", 2, "((top, bottom), (left, right))"))
        set_field(self, "data_format", choice(self.data_format, "data_format", DATA_FORMATS))

    def output_shape(self, input_shape: Shape) -> Shape:
        h, w, c = spatial(input_shape, self.data_format, self.type)
        (top, bottom), (left, right) = self.cropping
        out_h, out_w = h - top - bottom, w - left - right
        if out_h < 1 or out_w < 1:
            raise fail(f"cropping={self.cropping} removes all of input ({h}, {w}) (output would be {out_h}x{out_w})",
                       "Crop fewer rows and columns")
        return image(out_h, out_w, c, self.data_format)


@dataclass(frozen=True, kw_only=True)
class UpSampling2D(Layer):
    """Keras UpSampling2D with ``interpolation='nearest'``: each cell repeated ``size`` times per axis."""

    type: ClassVar[str] = "UpSampling2D"
    family: ClassVar[str] = "reshape"
    size: tuple[int, int] = (2, 2)
    data_format: str = CHANNELS_LAST
    interpolation: str = "nearest"

    def validate(self) -> None:
        set_field(self, "size", pair(self.size, "size"))
        set_field(self, "data_format", choice(self.data_format, "data_format", DATA_FORMATS))
        set_field(self, "interpolation", choice(self.interpolation, "interpolation", ("nearest",)))

    def output_shape(self, input_shape: Shape) -> Shape:
        h, w, c = spatial(input_shape, self.data_format, self.type)
        return image(h * self.size[0], w * self.size[1], c, self.data_format)


TYPES = (Flatten, Reshape, Permute, ZeroPadding2D, ZeroPadding1D, Cropping2D, UpSampling2D)
