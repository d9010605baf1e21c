"""Network specs: a model (input shape + layers), validated layer by layer as it is built.

The layer types themselves are declared once each, by family, in ``layerlab.layers``; this
module re-exports them (``spec.Conv2D``...) and holds the model. A spec is the architecture only, every Keras argument explicit. Weights live beside it (see
``layerlab.network``). Shapes exclude the batch axis and are in each layer's own data_format.

Spec files (read by ``layerlab.specfile.load_spec``) are JSON or YAML documents::

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
from typing import Any

from layerlab.errors import SpecError
from layerlab.layers import LAYER_TYPES
from layerlab.layers.activation import Activation, Dropout, PReLU, ReLU, Rescaling
from layerlab.layers.base import (
    ACTIVATIONS,
    CHANNELS_FIRST,
    CHANNELS_LAST,
    DATA_FORMATS,
    INITIALIZERS,
    Layer,
    Shape,
    fail,
)
from layerlab.layers.conv import Conv1D, Conv2D, DepthwiseConv2D, SeparableConv2D, Windowed
from layerlab.layers.dense import Dense
from layerlab.layers.merge import Add, Average, Concatenate, Maximum, Minimum, Multiply, Subtract
from layerlab.layers.normalization import BatchNormalization, Normalization
from layerlab.layers.pooling import (
    AveragePooling1D,
    AveragePooling2D,
    GlobalAveragePooling1D,
    GlobalAveragePooling2D,
    GlobalMaxPooling1D,
    GlobalMaxPooling2D,
    MaxPooling1D,
    MaxPooling2D,
)
from layerlab.layers.reshape import Cropping2D, Flatten, Permute, Reshape, UpSampling2D, ZeroPadding1D, ZeroPadding2D

__all__ = [
    "ACTIVATIONS", "CHANNELS_FIRST", "CHANNELS_LAST", "DATA_FORMATS", "INITIALIZERS", "LAYER_TYPES", "Activation",
    "Add", "Average", "AveragePooling1D", "AveragePooling2D", "BatchNormalization", "Concatenate", "Conv1D",
    "Conv2D", "Cropping2D", "Dense", "DepthwiseConv2D", "Dropout", "Flatten", "GlobalAveragePooling1D",
    "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "Layer", "LayerInfo", "MaxPooling1D",
    "MaxPooling2D", "Maximum", "Minimum", "Model", "Multiply", "Normalization", "PReLU", "Permute", "ReLU", "Reshape", "Rescaling",
    "SeparableConv2D", "Shape", "Subtract", "UpSampling2D", "Windowed", "ZeroPadding1D", "ZeroPadding2D",
    "layer_from_dict",
]


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
    (the first reads the model input). Merges (Add, Concatenate, ...) name their inputs.

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
        self._check_size()

    def _check_size(self) -> None:
        """Refuse a network whose weights or one sample's largest tensor pass the byte limit
        (``layerlab.limits``), before anything allocates them."""
        from layerlab import limits

        where = f"model '{self.name}'"
        limits.check_bytes(4 * self.param_count, where, f"{self.param_count:,} parameters (float32)")
        largest = max([math.prod(self.input_shape), *(info.activation_size for info in self.infos)])
        limits.check_bytes(4 * largest, where, f"a tensor of {largest:,} values per sample")

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
                        raise fail(f"inputs {missing} are not earlier layers", "Name layers that come before this one")
                    in_shapes = tuple(self.input_shape if n == "input" else shapes[n] for n in layer.inputs)
                else:
                    in_shapes = (previous,)
                out = layer.output_shape_of(in_shapes)
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
        unknown = sorted(set(data) - {"name", "input_shape", "layers"}, key=str)
        if unknown:
            raise SpecError(f"{source}: unknown top-level key(s) {', '.join(map(repr, unknown))}. A spec has 'name', 'input_shape' and 'layers'")
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

    def save(self, path: str | Path, *, force: bool = False, inputs=()) -> None:
        """Write the spec as JSON (or YAML for .yaml/.yml), atomically.

        An existing file is replaced only with ``force``; one of ``inputs`` never (see
        ``layerlab.publish.publish_file``).
        """
        from layerlab.errors import require
        from layerlab.publish import publish_file

        path = Path(path)
        if path.suffix.lower() in (".yaml", ".yml"):
            text = require("yaml", "yaml", "YAML spec files").safe_dump(self.to_dict(), sort_keys=False)
        else:
            text = self.to_json()
        with publish_file(path, inputs=inputs, force=force) as tmp:
            tmp.write_text(text, encoding="utf-8")


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
