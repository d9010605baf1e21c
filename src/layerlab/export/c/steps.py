"""The data the C generator works on: tensor layouts, element-wise ops and the step kinds.

``plan.lower`` builds these from a spec; ``quantize``, ``kernels`` and ``codegen`` read them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from layerlab import geometry
from layerlab import spec as S
from layerlab.errors import ExportError

CHANNELS_FIRST = S.CHANNELS_FIRST


@dataclass(frozen=True)
class Image:
    """A rank-3 tensor seen as height x width x channels, with the buffer strides of each axis."""

    h: int
    w: int
    c: int
    stride_y: int
    stride_x: int
    stride_c: int


@dataclass(frozen=True)
class Layout:
    """Where a tensor's values sit in a C buffer.

    Attributes:
        dims: the shape without the batch axis, as Keras sees it (in the layer's data_format).
        strides: elements between neighbours along each of ``dims`` in the buffer.
    """

    dims: tuple[int, ...]
    strides: tuple[int, ...]

    @property
    def size(self) -> int:
        return math.prod(self.dims)

    def same_memory(self, other: Layout) -> bool:
        """True when both put every value at the same offset (strides of size-1 axes never matter)."""
        return self.dims == other.dims and all(d == 1 or s == t for d, s, t in zip(self.dims, self.strides, other.strides, strict=True))

    def image(self, data_format: str) -> Image:
        """This rank-3 tensor as (h, w, c) for a layer of ``data_format``."""
        if len(self.dims) != 3:
            raise ExportError(f"C export: expected a rank-3 tensor, received dims {self.dims}")
        if data_format == CHANNELS_FIRST:
            (c, h, w), (sc, sy, sx) = self.dims, self.strides
        else:
            (h, w, c), (sy, sx, sc) = self.dims, self.strides
        return Image(h, w, c, sy, sx, sc)


def ordered(dims: tuple[int, ...], order: tuple[int, ...]) -> Layout:
    """The dense layout of ``dims`` whose axes run ``order`` (slowest first) through memory."""
    strides = [0] * len(dims)
    step = 1
    for axis in reversed(order):
        strides[axis] = step
        step *= dims[axis]
    return Layout(tuple(dims), tuple(strides))


def c_order(dims: tuple[int, ...]) -> Layout:
    """C (row-major) order of ``dims``: what Keras' arrays hold, and what the caller passes."""
    return ordered(tuple(dims), tuple(range(len(dims))))


def planar_order(dims: tuple[int, ...], data_format: str) -> Layout:
    """One plane per channel, rows of width values: the layout windowed steps write by default
    (neighbouring x positions are neighbours in memory, so a conv can load them as a vector)."""
    if len(dims) != 3:
        return c_order(tuple(dims))
    return ordered(tuple(dims), (0, 1, 2) if data_format == CHANNELS_FIRST else (2, 0, 1))


def channels_inner(dims: tuple[int, ...], data_format: str) -> Layout:
    """The channels of one position side by side, positions row by row (HWC in memory whatever the
    data_format): the layout int8 steps write, so a kernel reads four channels as one word (SMLAD)."""
    if len(dims) != 3:
        return c_order(tuple(dims))
    return ordered(tuple(dims), (1, 2, 0) if data_format == CHANNELS_FIRST else (0, 1, 2))


@dataclass(frozen=True)
class Op:
    """One element-wise operation: a Keras activation or a Rescaling ``x * scale + offset``."""

    layer: str
    activation: str = "linear"
    scale: float | None = None
    offset: float = 0.0

    @property
    def is_rescale(self) -> bool:
        return self.scale is not None

    def describe(self) -> str:
        return f"x*{self.scale:g}{self.offset:+g}" if self.is_rescale else self.activation


@dataclass(frozen=True)
class Pool:
    """A pooling window fused after a conv: ``kind`` 'max' or 'avg', geometry over the conv output."""

    kind: str
    window: geometry.Window2D
    layer: str


@dataclass
class Step:
    """One C function. Subclasses add what their kind needs.

    Attributes:
        layers: the spec layers it computes, ``(name, type)`` in order.
        input, output: layouts of the tensor read and the tensor written.
        taps: calibration points, e.g. ``{"out": layer name}``: the traced layer output whose values
            this step's tensors hold (used by int8 calibration).
        sources, target: ids of the values read and written (``input``, ``t<k>``), set by lowering.
        srcs, dst: where they sit, as C expressions (``in``, ``out``, ``arena + 128``), set by
            ``place_arena``; ``src`` is the first of ``srcs``.
    """

    kind: ClassVar[str] = "step"
    in_place_ok: ClassVar[bool] = False
    layers: tuple[tuple[str, str], ...]
    input: Layout
    output: Layout
    taps: dict[str, str] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    target: str = ""
    srcs: tuple[str, ...] = ()
    dst: str = ""

    @property
    def src(self) -> str:
        return self.srcs[0] if self.srcs else ""

    @property
    def in_place(self) -> bool:
        """The step writes over the value it reads (set by ``place_arena``)."""
        return bool(self.srcs) and self.dst in self.srcs

    def describe(self) -> str:
        return " + ".join(f"{name} ({kind})" for name, kind in self.layers)


@dataclass
class ConvStep(Step):
    """Conv2D (+ folded BN) + element-wise ``pre`` + optional non-overlapping pool + ``post``."""

    kind: ClassVar[str] = "conv"
    kernel_hwio: np.ndarray = None  # (kernel_h, kernel_w, in_channels, filters), Keras' layout
    bias: np.ndarray | None = None  # (filters,)
    window: geometry.Window2D = None  # over the unpadded input; pads include a folded ZeroPadding2D
    data_format: str = "channels_last"
    pre: tuple[Op, ...] = ()
    pool: Pool | None = None
    post: tuple[Op, ...] = ()


@dataclass
class DepthwiseStep(Step):
    """DepthwiseConv2D (+ folded BN) + element-wise ``pre``: output channel ``c * M + m`` reads
    input channel ``c`` only.

    ``kernel_hwio`` is ``(kernel_h, kernel_w, 1, C * M)``: Keras' ``(kernel_h, kernel_w, C, M)``
    with its last two axes flattened in Keras' channel order, so the weights are quantized per
    output channel exactly as a Conv2D's.
    """

    kind: ClassVar[str] = "depthwise"
    kernel_hwio: np.ndarray = None
    bias: np.ndarray | None = None  # (C * M,)
    window: geometry.Window2D = None
    data_format: str = "channels_last"
    multiplier: int = 1
    pre: tuple[Op, ...] = ()


@dataclass
class DenseStep(Step):
    """Dense (+ folded BN) + element-wise ``pre`` (its activation and the layers after it)."""

    kind: ClassVar[str] = "dense"
    kernel: np.ndarray = None  # (in_features, units), Keras' layout
    bias: np.ndarray | None = None
    pre: tuple[Op, ...] = ()


@dataclass
class PoolStep(Step):
    kind: ClassVar[str] = "pool"
    pool: Pool = None
    data_format: str = "channels_last"


@dataclass
class PadStep(Step):
    kind: ClassVar[str] = "pad"
    padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))
    data_format: str = "channels_last"


@dataclass
class ElementwiseStep(Step):
    kind: ClassVar[str] = "elementwise"
    in_place_ok: ClassVar[bool] = True
    ops: tuple[Op, ...] = ()


@dataclass
class AffineStep(Step):
    """A BatchNormalization that cannot be folded: ``x * scale[i] + shift[i]`` along ``axis``."""

    kind: ClassVar[str] = "affine"
    in_place_ok: ClassVar[bool] = True
    scale: np.ndarray = None
    shift: np.ndarray = None
    axis: int = 0


@dataclass
class SoftmaxStep(Step):
    """Softmax along the last axis of ``dims`` (Keras' axis=-1), in place."""

    kind: ClassVar[str] = "softmax"
    in_place_ok: ClassVar[bool] = True


@dataclass
class MergeStep(Step):
    """An element-wise merge of two or more values of one layout (Add, Subtract, Multiply, Average,
    Maximum, Minimum), then element-wise ``pre`` ops (the activation after a residual Add)."""

    kind: ClassVar[str] = "merge"
    in_place_ok: ClassVar[bool] = True  # out[i] depends on in_k[i] only: it may write over a dying input
    operation: str = "add"
    pre: tuple[Op, ...] = ()


@dataclass
class PReLUStep(Step):
    """Keras PReLU, ``relu(x) - alpha * relu(-x)``, in place: ``alpha`` is broadcast to the whole
    tensor and stored in the tensor's own memory order (one weight per value)."""

    kind: ClassVar[str] = "prelu"
    in_place_ok: ClassVar[bool] = True
    alpha: np.ndarray = None  # (size,) in memory order


@dataclass
class RemapStep(Step):
    """Each output cell copies one input cell: along axis k, output index i reads input index
    ``i // up[k] + offset[k]`` (Cropping2D: up 1, offset the cells cropped before; UpSampling2D
    nearest: up the size, offset 0). Scale-preserving, so the same code serves int8."""

    kind: ClassVar[str] = "remap"
    up: tuple[int, ...] = ()
    offset: tuple[int, ...] = ()


@dataclass
class ConcatStep(Step):
    """Concatenate: each input copied into its block of the output along ``axis`` (of ``dims``);
    ``inputs`` are the layouts the values are read in (``input`` is the first)."""

    kind: ClassVar[str] = "concat"
    axis: int = 0
    inputs: tuple[Layout, ...] = ()


@dataclass
class CopyStep(Step):
    """Reorder values: same ``dims``, output strides differ from input strides."""

    kind: ClassVar[str] = "copy"


@dataclass(frozen=True)
class Slot:
    """One region of the arena: the values that share it, one after another (in place)."""

    offset: int
    size: int  # elements
    values: tuple[str, ...]  # value ids
    first: int  # step that writes it first
    last: int  # step that reads it last


@dataclass
class Arena:
    """Where every value between the input and the output lives: ``slots`` in one static array of
    ``size`` elements; ``peak_step`` is the step with the most values alive, ``peak_values`` them."""

    size: int
    slots: tuple[Slot, ...]
    peak_step: int
    peak_values: tuple[str, ...]
    input_offset: int | None = None  # int8: where the wrapper puts the quantized input


@dataclass
class Plan:
    """The lowered network.

    Attributes:
        steps: in execution order, buffers placed.
        input, output: the caller's layouts (C order of the model's input and output shapes).
        arena: the static arena's placement (``place_arena``).
        calibration_spec: the spec with every layer's own activation split into an Activation
            layer, so a trace shows pre-activation values (int8 calibration); composite and 1-D
            layers rewritten as lowered (``desugar``).
    """

    steps: list[Step]
    input: Layout
    output: Layout
    arena: Arena
    calibration_spec: S.Model
    weights: dict = field(default_factory=dict)  # Keras layouts, of the layers of calibration_spec
