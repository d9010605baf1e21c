"""The pooling family: windowed max/average pooling (1-D and 2-D) and global pooling.

What fills 'same' padding is the pooling's business (geometry only says how much there is):
max pooling pads cells that can never win (as -inf); average pooling leaves padded cells out of
the count it divides by (Keras' ``window_counts``). Global pooling reduces every spatial axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from layerlab.layers.base import (
    CHANNELS_LAST,
    DATA_FORMATS,
    Layer,
    Shape,
    check_bool,
    choice,
    ints,
    set_field,
    spatial,
    steps_channels,
)
from layerlab.layers.conv import Windowed


@dataclass(frozen=True, kw_only=True)
class _Pooling(Windowed):
    family: ClassVar[str] = "pooling"
    size_arg: ClassVar[str] = "pool_size"
    reduce: ClassVar[str] = ""  # 'max' or 'average'
    pool_size: tuple[int, ...] = (2, 2)
    strides: tuple[int, ...] | None = None

    def validate(self) -> None:
        super().validate()
        set_field(self, "pool_size", ints(self.pool_size, "pool_size", self.rank))
        # Keras: strides=None means strides=pool_size.
        strides = self.pool_size if self.strides is None else self.strides
        set_field(self, "strides", ints(strides, "strides", self.rank))

    def window_args(self):
        if self.rank == 1:
            return (1, *self.pool_size), (1, *self.strides), (1, 1)
        return self.pool_size, self.strides, (1, 1)

    def output_shape(self, input_shape: Shape) -> Shape:
        win = self.window(input_shape)
        return self.out_shape(win.out_h, win.out_w, self.hwc(input_shape)[2])


@dataclass(frozen=True, kw_only=True)
class MaxPooling2D(_Pooling):
    """Keras MaxPooling2D: 'same' padding cells can never win (they act as -inf)."""

    type: ClassVar[str] = "MaxPooling2D"
    reduce: ClassVar[str] = "max"


@dataclass(frozen=True, kw_only=True)
class AveragePooling2D(_Pooling):
    """Keras AveragePooling2D: 'same' padding cells are left out of the count it divides by."""

    type: ClassVar[str] = "AveragePooling2D"
    reduce: ClassVar[str] = "average"


@dataclass(frozen=True, kw_only=True)
class MaxPooling1D(_Pooling):
    """Keras MaxPooling1D on ``(steps, channels)``: MaxPooling2D of height 1."""

    type: ClassVar[str] = "MaxPooling1D"
    reduce: ClassVar[str] = "max"
    rank: ClassVar[int] = 1
    pool_size: tuple[int, ...] = (2,)


@dataclass(frozen=True, kw_only=True)
class AveragePooling1D(_Pooling):
    """Keras AveragePooling1D on ``(steps, channels)``: AveragePooling2D of height 1."""

    type: ClassVar[str] = "AveragePooling1D"
    reduce: ClassVar[str] = "average"
    rank: ClassVar[int] = 1
    pool_size: tuple[int, ...] = (2,)


@dataclass(frozen=True, kw_only=True)
class _GlobalPooling(Layer):
    """Reduce every spatial axis; ``keepdims=True`` keeps them with size 1."""

    family: ClassVar[str] = "pooling"
    reduce: ClassVar[str] = ""
    rank: ClassVar[int] = 2
    data_format: str = CHANNELS_LAST
    keepdims: bool = False

    def validate(self) -> None:
        set_field(self, "data_format", choice(self.data_format, "data_format", DATA_FORMATS))
        check_bool(self, "keepdims")

    def channels(self, input_shape: Shape) -> int:
        if self.rank == 1:
            return steps_channels(input_shape, self.data_format, self.type)[1]
        return spatial(input_shape, self.data_format, self.type)[2]

    def spatial_axes(self) -> tuple[int, ...]:
        """The reduced axes, counted with the batch axis."""
        first = 2 if self.data_format == "channels_first" else 1
        return tuple(range(first, first + self.rank))

    def output_shape(self, input_shape: Shape) -> Shape:
        channels = self.channels(input_shape)
        if not self.keepdims:
            return (channels,)
        ones = (1,) * self.rank
        return (channels, *ones) if self.data_format == "channels_first" else (*ones, channels)


@dataclass(frozen=True, kw_only=True)
class GlobalAveragePooling2D(_GlobalPooling):
    """Keras GlobalAveragePooling2D: the mean over height and width, per channel."""

    type: ClassVar[str] = "GlobalAveragePooling2D"
    reduce: ClassVar[str] = "average"


@dataclass(frozen=True, kw_only=True)
class GlobalMaxPooling2D(_GlobalPooling):
    """Keras GlobalMaxPooling2D: the maximum over height and width, per channel."""

    type: ClassVar[str] = "GlobalMaxPooling2D"
    reduce: ClassVar[str] = "max"


@dataclass(frozen=True, kw_only=True)
class GlobalAveragePooling1D(_GlobalPooling):
    """Keras GlobalAveragePooling1D: the mean over the steps, per channel."""

    type: ClassVar[str] = "GlobalAveragePooling1D"
    reduce: ClassVar[str] = "average"
    rank: ClassVar[int] = 1


@dataclass(frozen=True, kw_only=True)
class GlobalMaxPooling1D(_GlobalPooling):
    """Keras GlobalMaxPooling1D: the maximum over the steps, per channel."""

    type: ClassVar[str] = "GlobalMaxPooling1D"
    reduce: ClassVar[str] = "max"
    rank: ClassVar[int] = 1


TYPES = (
    MaxPooling2D, AveragePooling2D, MaxPooling1D, AveragePooling1D,
    GlobalAveragePooling2D, GlobalMaxPooling2D, GlobalAveragePooling1D, GlobalMaxPooling1D,
)
