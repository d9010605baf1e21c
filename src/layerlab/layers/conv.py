"""The convolution family: Conv2D, DepthwiseConv2D, SeparableConv2D and Conv1D.

Every member is a window over the input (``geometry.Window2D``; a 1-D layer is a window of
height 1), zero padded, with Keras' kernel layouts:

* Conv2D ``kernel (kh, kw, in, filters)`` (HWIO), ``bias (filters,)``.
* DepthwiseConv2D ``kernel (kh, kw, in, depth_multiplier)``, ``bias (in * depth_multiplier,)``;
  output channel ``c * depth_multiplier + m`` reads input channel ``c`` only.
* SeparableConv2D: a depthwise conv (``depthwise_kernel (kh, kw, in, depth_multiplier)``, no
  bias) then a 1x1 conv (``pointwise_kernel (1, 1, in * depth_multiplier, filters)``) and
  ``bias (filters,)``; the activation comes last.
* Conv1D ``kernel (k, in, filters)``; ``padding='causal'`` pads ``dilation_rate * (k - 1)``
  zeros before the sequence and none after.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from layerlab import geometry
from layerlab.layers.base import (
    ACTIVATIONS,
    CHANNELS_LAST,
    DATA_FORMATS,
    Layer,
    Shape,
    check_bool,
    choice,
    fail,
    image,
    initializer,
    ints,
    is_int,
    sequence,
    set_field,
    spatial,
    steps_channels,
)


@dataclass(frozen=True, kw_only=True)
class Windowed(Layer):
    """Shared validation and geometry of the 2-D windowed layers (convolutions and pooling)."""

    family: ClassVar[str] = "conv"
    rank: ClassVar[int] = 2  # spatial axes
    size_arg: ClassVar[str] = "kernel_size"
    paddings: ClassVar[tuple[str, ...]] = geometry.PADDINGS
    padding: str = "valid"
    data_format: str = CHANNELS_LAST

    def validate(self) -> None:
        set_field(self, "padding", choice(self.padding, "padding", self.paddings))
        set_field(self, "data_format", choice(self.data_format, "data_format", DATA_FORMATS))

    def window_args(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """(kernel or pool size, strides, dilation) as 2-D pairs (height 1 for 1-D layers)."""
        raise NotImplementedError

    def hwc(self, input_shape: Shape) -> tuple[int, int, int]:
        """(height, width, channels) of the input; a sequence is (1, steps, channels)."""
        if self.rank == 1:
            steps, channels = steps_channels(input_shape, self.data_format, self.type)
            return 1, steps, channels
        return spatial(input_shape, self.data_format, self.type)

    def out_shape(self, out_h: int, out_w: int, channels: int) -> Shape:
        if self.rank == 1:
            return sequence(out_w, channels, self.data_format)
        return image(out_h, out_w, channels, self.data_format)

    def window(self, input_shape: Shape) -> geometry.Window2D:
        """Geometry of this layer on ``input_shape`` (checked to fit)."""
        h, w, _ = self.hwc(input_shape)
        size, strides, dilation = self.window_args()
        win = geometry.window_2d((h, w), size, strides, self.padding, dilation)
        if win.out_h < 1 or win.out_w < 1:
            arg = self.size_arg
            shown_size = size[1:] if self.rank == 1 else size
            shown_in = (w,) if self.rank == 1 else (h, w)
            span = tuple(geometry.dilated_span(k, d) for k, d in zip(size, dilation, strict=True))
            span = span[1:] if self.rank == 1 else span
            dilated = dilation != (1, 1)
            extra = f" (dilated span {span})" if dilated else ""
            raise fail(
                f"{arg}={shown_size}{extra} does not fit input {shown_in} with padding='valid' "
                f"(output would be {'x'.join(str(v) for v in ((win.out_w,) if self.rank == 1 else (win.out_h, win.out_w)))})",
                f"Use padding='same' or {arg} <= {shown_in}" if not dilated else
                f"Use padding='same', or a kernel_size and dilation_rate whose span (k - 1) * d + 1 <= {shown_in}",
            )
        return win


def _positive(layer: Layer, arg: str) -> None:
    value = getattr(layer, arg)
    if not is_int(value) or value < 1:
        raise fail(f"{arg}={value!r} must be a positive int", f"Use {arg} >= 1")


@dataclass(frozen=True, kw_only=True)
class _Conv(Windowed):
    """What every convolution shares: strides, dilation, activation, bias, initializers."""

    kernel_size: tuple[int, ...]
    strides: tuple[int, ...] = (1, 1)
    dilation_rate: tuple[int, ...] = (1, 1)
    activation: str = "linear"
    use_bias: bool = True
    bias_initializer: str | None = "zeros"

    def validate(self) -> None:
        super().validate()
        rank = self.rank
        set_field(self, "kernel_size", ints(self.kernel_size, "kernel_size", rank))
        set_field(self, "strides", ints(self.strides, "strides", rank))
        set_field(self, "dilation_rate", ints(self.dilation_rate, "dilation_rate", rank))
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise fail(
                f"strides={self.strides} with dilation_rate={self.dilation_rate}: Keras allows "
                "strides > 1 only with dilation_rate 1",
                f"Use strides={(1,) * rank} or dilation_rate={(1,) * rank}",
            )
        set_field(self, "activation", choice(self.activation, "activation", ACTIVATIONS))
        check_bool(self, "use_bias")
        set_field(self, "bias_initializer", initializer(self.bias_initializer, "bias_initializer"))

    def window_args(self):
        if self.rank == 1:
            return (1, *self.kernel_size), (1, *self.strides), (1, *self.dilation_rate)
        return self.kernel_size, self.strides, self.dilation_rate

    def out_channels(self, in_channels: int) -> int:
        raise NotImplementedError

    def output_shape(self, input_shape: Shape) -> Shape:
        win = self.window(input_shape)
        return self.out_shape(win.out_h, win.out_w, self.out_channels(self.hwc(input_shape)[2]))


@dataclass(frozen=True, kw_only=True)
class _FilterConv(_Conv):
    """A convolution over all input channels into ``filters`` outputs (Conv2D, Conv1D)."""

    filters: int
    kernel_initializer: str | None = "glorot_uniform"

    def validate(self) -> None:
        super().validate()
        _positive(self, "filters")
        set_field(self, "kernel_initializer", initializer(self.kernel_initializer, "kernel_initializer"))

    def out_channels(self, in_channels: int) -> int:
        return self.filters

    def weight_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        channels = self.hwc(input_shape)[2]
        shapes: dict[str, Shape] = {"kernel": (*self.kernel_size, channels, self.filters)}
        if self.use_bias:
            shapes["bias"] = (self.filters,)
        return shapes

    def macs(self, input_shape: Shape) -> int:
        win = self.window(input_shape)
        channels = self.hwc(input_shape)[2]
        return win.out_h * win.out_w * self.filters * win.kernel_h * win.kernel_w * channels


@dataclass(frozen=True, kw_only=True)
class Conv2D(_FilterConv):
    """Keras Conv2D. Kernel layout HWIO ``(kh, kw, in_channels, filters)``, bias ``(filters,)``."""

    type: ClassVar[str] = "Conv2D"
    layouts: ClassVar[dict[str, str]] = {"kernel": "HWIO (kernel_h, kernel_w, in_channels, filters)", "bias": "(filters,)"}


@dataclass(frozen=True, kw_only=True)
class Conv1D(_FilterConv):
    """Keras Conv1D on ``(steps, channels)`` (or ``(channels, steps)``): a Conv2D of height 1.

    Kernel ``(kernel_size, in_channels, filters)``. ``padding='causal'`` pads
    ``dilation_rate * (kernel_size - 1)`` zeros before the sequence, none after.
    """

    type: ClassVar[str] = "Conv1D"
    layouts: ClassVar[dict[str, str]] = {"kernel": "(kernel_size, in_channels, filters)", "bias": "(filters,)"}
    rank: ClassVar[int] = 1
    paddings: ClassVar[tuple[str, ...]] = (*geometry.PADDINGS, geometry.CAUSAL)
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...] = (1,)
    dilation_rate: tuple[int, ...] = (1,)


@dataclass(frozen=True, kw_only=True)
class DepthwiseConv2D(_Conv):
    """Keras DepthwiseConv2D: each input channel convolved with its own ``depth_multiplier`` kernels.

    ``out[.., c * depth_multiplier + m] = bias + sum_taps x_pad[.., c] * kernel[fy, fx, c, m]``;
    a window reads ONE input channel (Conv2D's reads all of them).
    """

    type: ClassVar[str] = "DepthwiseConv2D"
    layouts: ClassVar[dict[str, str]] = {
        "kernel": "(kernel_h, kernel_w, in_channels, depth_multiplier)", "bias": "(in_channels * depth_multiplier,)"}
    depth_multiplier: int = 1
    depthwise_initializer: str | None = "glorot_uniform"

    def validate(self) -> None:
        super().validate()
        _positive(self, "depth_multiplier")
        set_field(self, "depthwise_initializer", initializer(self.depthwise_initializer, "depthwise_initializer"))

    def out_channels(self, in_channels: int) -> int:
        return in_channels * self.depth_multiplier

    def weight_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        channels = self.hwc(input_shape)[2]
        shapes: dict[str, Shape] = {"kernel": (*self.kernel_size, channels, self.depth_multiplier)}
        if self.use_bias:
            shapes["bias"] = (channels * self.depth_multiplier,)
        return shapes

    def macs(self, input_shape: Shape) -> int:
        win = self.window(input_shape)
        channels = self.hwc(input_shape)[2]
        return win.out_h * win.out_w * channels * self.depth_multiplier * win.kernel_h * win.kernel_w


@dataclass(frozen=True, kw_only=True)
class SeparableConv2D(_Conv):
    """Keras SeparableConv2D: a DepthwiseConv2D (no bias) then a 1x1 Conv2D with bias, then the activation."""

    type: ClassVar[str] = "SeparableConv2D"
    layouts: ClassVar[dict[str, str]] = {
        "depthwise_kernel": "(kernel_h, kernel_w, in_channels, depth_multiplier)",
        "pointwise_kernel": "(1, 1, in_channels * depth_multiplier, filters)", "bias": "(filters,)"}
    filters: int
    depth_multiplier: int = 1
    depthwise_initializer: str | None = "glorot_uniform"
    pointwise_initializer: str | None = "glorot_uniform"

    def validate(self) -> None:
        super().validate()
        _positive(self, "filters")
        _positive(self, "depth_multiplier")
        set_field(self, "depthwise_initializer", initializer(self.depthwise_initializer, "depthwise_initializer"))
        set_field(self, "pointwise_initializer", initializer(self.pointwise_initializer, "pointwise_initializer"))

    def out_channels(self, in_channels: int) -> int:
        return self.filters

    def weight_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        channels = self.hwc(input_shape)[2]
        middle = channels * self.depth_multiplier
        shapes: dict[str, Shape] = {
            "depthwise_kernel": (*self.kernel_size, channels, self.depth_multiplier),
            "pointwise_kernel": (1, 1, middle, self.filters),
        }
        if self.use_bias:
            shapes["bias"] = (self.filters,)
        return shapes

    def macs(self, input_shape: Shape) -> int:
        win = self.window(input_shape)
        middle = self.hwc(input_shape)[2] * self.depth_multiplier
        return win.out_h * win.out_w * middle * (win.kernel_h * win.kernel_w + self.filters)


TYPES = (Conv2D, Conv1D, DepthwiseConv2D, SeparableConv2D)
