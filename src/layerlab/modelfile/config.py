"""A Keras model config (Keras 2.0 to 3.x, Sequential or functional) -> a layerlab spec.

Config shapes this reads (all JSON, as ``model.to_json()``, the ``model_config`` attribute of an
``.h5`` and the ``config.json`` of a ``.keras`` archive hold them):

* Sequential, Keras 2.0-2.2: ``{"class_name": "Sequential", "config": [layer, ...]}`` (a bare
  list), the first layer carrying ``batch_input_shape``; no InputLayer entry.
* Sequential, Keras 2.2.3+ / tf.keras / Keras 3: ``{"config": {"name": ..., "layers": [...]}}``,
  optionally starting with an ``InputLayer`` (``batch_input_shape`` in Keras 2, ``batch_shape``
  in Keras 3), or with ``build_input_shape`` on the model.
* Functional (``"Model"`` in Keras 2, ``"Functional"`` later): layers with ``inbound_nodes``,
  Keras 2 as ``[[["name", node_index, tensor_index, kwargs], ...]]``, Keras 3 as
  ``[{"args": [keras tensors], "kwargs": {...}}]`` where a tensor names its source in
  ``config.keras_history``; plus ``input_layers`` and ``output_layers``.

The spec has one input, called ``'input'`` in ``inputs`` lists, and runs layers in order; a
layer reading anything other than the layer before it lists its sources in ``inputs``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from layerlab import spec as S
from layerlab.errors import ModelFileError, SpecError, UnsupportedLayerError
from layerlab.modelfile.layers import INPUT_LAYER, MODEL_CLASSES, Context, convert

MODEL_INPUT = "input"


@dataclass(frozen=True)
class KerasLayer:
    """One layer entry of a Keras config, in the config's order.

    Attributes:
        name: the layer's name.
        class_name: its Keras class, e.g. 'Conv2D'; 'InputLayer' for inputs.
        sources: names of the layers feeding it (functional models); empty in a Sequential.
    """

    name: str
    class_name: str
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class ParsedModel:
    """A Keras config turned into a spec, with what weight matching needs.

    Attributes:
        spec: the layerlab spec.
        model_class: 'Sequential' or 'Functional'.
        layers: every layer entry of the config in order (``model.layers`` order), InputLayers
            included.
        generation: the major Keras version that wrote it (1, 2 or 3).
    """

    spec: S.Model
    model_class: str
    layers: tuple[KerasLayer, ...]
    generation: int

    def saved_layers(self) -> list[KerasLayer]:
        """The layers Keras 3's saver walks (``model.layers``): a Sequential hides its InputLayer."""
        if self.model_class == "Sequential":
            return [layer for layer in self.layers if layer.class_name != INPUT_LAYER]
        return list(self.layers)


def generation_of(document: Any, keras_version: str | None) -> int:
    """The major Keras version that wrote a config: from the version string if known, else from
    the config's style (Keras 3 writes ``batch_shape`` and DTypePolicy dicts, Keras 2
    ``batch_input_shape``)."""
    if keras_version:
        head = str(keras_version).strip().split(".")[0]
        if head.isdigit():
            return max(1, int(head))
    text = repr(document)
    if any(f"'{key}'" in text for key in ("nb_filter", "border_mode", "dim_ordering", "output_dim")):
        return 1  # Keras 1 argument names
    if "'batch_shape'" in text or "'DTypePolicy'" in text:
        return 3
    if "'batch_input_shape'" in text or "'keras_version'" in text:
        return 2
    return 3


def is_keras_model_config(document: Any) -> bool:
    return isinstance(document, dict) and document.get("class_name") in MODEL_CLASSES and "config" in document


def parse_config(document: Any, source: str, keras_version: str | None = None) -> ParsedModel:
    """Turn a Keras model config into a spec.

    Args:
        document: the parsed JSON config (``{"class_name": "Sequential", "config": ...}``).
        source: the file it came from, for messages.
        keras_version: the writer's Keras version if the container records it.

    Returns:
        The parsed model.

    Raises:
        ModelFileError: not a model config, an input shape that is not fully defined, several
            inputs or outputs, a shared layer, or a spec that does not validate.
        UnsupportedLayerError: a layer layerlab does not implement (or a Lambda layer).
    """
    if not is_keras_model_config(document):
        found = document.get("class_name") if isinstance(document, dict) else type(document).__name__
        raise ModelFileError(
            f"{source}: not a Keras model config (class_name {found!r}, expected one of {', '.join(MODEL_CLASSES)}). "
            "Use the JSON from model.to_json() or a .keras file"
        )
    keras_version = keras_version or document.get("keras_version")
    generation = generation_of(document, keras_version)
    config = document["config"]
    if document["class_name"] == "Sequential":
        layers = config if isinstance(config, list) else config.get("layers")
        name = "sequential" if isinstance(config, list) else config.get("name", "sequential")
        model_class = "Sequential"
    else:
        layers = config.get("layers") if isinstance(config, dict) else None
        name = config.get("name", "model") if isinstance(config, dict) else "model"
        model_class = "Functional"
    if not isinstance(layers, list) or not all(isinstance(l, dict) for l in layers):
        raise ModelFileError(f"{source}: the model config has no list of layers. Use the JSON from model.to_json()")
    if model_class == "Sequential":
        records, input_shape, order = _sequential(layers, config, source)
    else:
        records, input_shape, order = _functional(layers, config, source)
    spec_layers = _spec_layers(records, order, layers, source, generation, model_class)
    try:
        spec = S.Model(name=str(name), input_shape=input_shape, layers=tuple(spec_layers))
    except SpecError as exc:
        raise ModelFileError(f"{source}: {exc}") from None
    return ParsedModel(spec=spec, model_class=model_class, layers=tuple(records), generation=generation)


def _name(entry: dict) -> str:
    cfg = entry.get("config") if isinstance(entry.get("config"), dict) else {}
    return str(entry.get("name") or cfg.get("name") or "")


def _shape(batch_shape: Any, source: str, what: str) -> tuple[int, ...]:
    if not isinstance(batch_shape, (list, tuple)) or len(batch_shape) < 2:
        raise ModelFileError(f"{source}: {what} {batch_shape!r} is not a batch shape like [null, 28, 28, 1]")
    dims = tuple(batch_shape[1:])
    if not all(isinstance(d, int) and d > 0 for d in dims):
        raise ModelFileError(
            f"{source}: the input shape {dims} is not fully defined; layerlab needs fixed sizes. "
            "Rebuild the model with keras.Input(shape=(28, 28, 1)) or similar"
        )
    return dims


def _input_shape_of(entry: dict, source: str) -> tuple[int, ...] | None:
    cfg = entry.get("config") or {}
    for key in ("batch_shape", "batch_input_shape"):
        if cfg.get(key) is not None:
            return _shape(cfg[key], source, key)
    if cfg.get("input_shape") is not None:
        return _shape([None, *cfg["input_shape"]], source, "input_shape")
    return None


def _sequential(layers: list[dict], config: Any, source: str):
    records = [KerasLayer(_name(e), str(e.get("class_name")), ()) for e in layers]
    input_shape = None
    for entry in layers:
        input_shape = _input_shape_of(entry, source)
        if input_shape is not None or entry.get("class_name") != INPUT_LAYER:
            break
    if input_shape is None and isinstance(config, dict) and config.get("build_input_shape") is not None:
        input_shape = _shape(config["build_input_shape"], source, "build_input_shape")
    if input_shape is None and layers and isinstance(layers[0].get("build_config"), dict):
        input_shape = _shape(layers[0]["build_config"].get("input_shape"), source, "build_config.input_shape")
    if input_shape is None:
        raise ModelFileError(f"{source}: the Sequential model records no input shape. Add keras.Input(shape=...) first")
    order = [i for i, r in enumerate(records) if r.class_name != INPUT_LAYER]
    return records, input_shape, order


def _history(value: Any, found: list[tuple[str, int, int]]) -> None:
    """Collect ``keras_history`` triples from a Keras 3 ``inbound_nodes`` args structure."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            history = (value.get("config") or {}).get("keras_history") or []
            if len(history) >= 3:
                found.append((str(history[0]), int(history[1]), int(history[2])))
            return
        for item in value.values():
            _history(item, found)
    elif isinstance(value, list):
        for item in value:
            _history(item, found)


# Arithmetic of a tensor and one number, which Keras records as a node of its own: a keras.ops
# call on a Keras 3 functional model's tensors (``x + 3.0``: class 'Add' of module
# 'keras.src.ops.numpy', the number among the node's args, before or after the tensor) and
# tf.keras' TFOpLambda (function '__operators__.add', the number in the node's kwargs as ``y``,
# or, for ``3.0 - x``, the number as a '_CONSTANT_VALUE' source and the tensor as ``y``). Keras
# 3's MobileNetV3 writes its hard sigmoid so: ``relu6(x + 3) * (1 / 6)``.
_KERAS3_ARITHMETIC = {"Add": "add", "Subtract": "subtract", "Multiply": "multiply", "Divide": "divide",
                      "TrueDivide": "divide"}
_TF_ARITHMETIC = {"__operators__.add": "add", "math.add": "add", "math.subtract": "subtract",
                  "math.multiply": "multiply", "math.truediv": "divide", "math.divide": "divide"}
_TF_CONSTANT = "_CONSTANT_VALUE"


@dataclass(frozen=True)
class ScalarOperation:
    """``x <operation> number`` (or ``number <operation> x`` when ``number_first``) read off a
    Keras node: the tensor's source layer and the number."""

    operation: str  # add, subtract, multiply or divide
    source: str
    number: float
    number_first: bool

    def rescaling(self, name: str, where: str) -> S.Rescaling:
        """The same as a Rescaling, ``x * scale + offset``: bit for bit for add, subtract and
        multiply (``x * 1 + c`` is ``x + c`` in float32); ``x / c`` as ``x * (1 / c)``, within an
        ulp of Keras' quotient. ``c / x`` is not affine in x: refused."""
        c = self.number
        if self.operation == "add":
            return S.Rescaling(name=name, scale=1.0, offset=c)
        if self.operation == "subtract":
            return S.Rescaling(name=name, scale=-1.0, offset=c) if self.number_first else S.Rescaling(name=name, scale=1.0, offset=-c)
        if self.operation == "multiply":
            return S.Rescaling(name=name, scale=c, offset=0.0)
        if self.number_first or c == 0:
            what = f"{c!r} / x" if self.number_first else "x / 0"
            raise UnsupportedLayerError(f"{where}: {what} is not a scaling of x, and layerlab has no layer for it. "
                                        "Rebuild the model with built-in layers (e.g. Rescaling)")
        return S.Rescaling(name=name, scale=1.0 / c, offset=0.0)


def _number_value(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def scalar_operation(entry: dict) -> ScalarOperation | None:
    """The tensor-and-number arithmetic an entry records (see ``_KERAS3_ARITHMETIC``), or None
    when the entry is no such node (a merge of two tensors, any other layer)."""
    cls, cfg = entry.get("class_name"), entry.get("config") if isinstance(entry.get("config"), dict) else {}
    nodes = entry.get("inbound_nodes") or []
    if len(nodes) != 1:
        return None
    node = nodes[0]
    if cls in _KERAS3_ARITHMETIC and str(entry.get("module", "")).startswith("keras.src.ops") and isinstance(node, dict):
        args = node.get("args") or []
        if len(args) != 2:
            return None
        tensors = [i for i, a in enumerate(args) if isinstance(a, dict) and a.get("class_name") == "__keras_tensor__"]
        numbers = [i for i, a in enumerate(args) if _number_value(a) is not None]
        if len(tensors) != 1 or len(numbers) != 1:
            return None
        found: list[tuple[str, int, int]] = []
        _history(args[tensors[0]], found)
        if len(found) != 1:
            return None
        return ScalarOperation(_KERAS3_ARITHMETIC[cls], found[0][0], _number_value(args[numbers[0]]), numbers[0] == 0)
    if cls == "TFOpLambda" and cfg.get("function") in _TF_ARITHMETIC and isinstance(node, list) and node:
        # The call as one [source, node, tensor, kwargs] list (tf.keras), or that list in a list.
        item = node if isinstance(node[0], str) else node[0]
        if not (isinstance(item, list) and len(item) == 4 and isinstance(item[3], dict)):
            return None
        operation, y = _TF_ARITHMETIC[cfg["function"]], item[3].get("y")
        if item[0] == _TF_CONSTANT and isinstance(y, list) and len(y) >= 3 and isinstance(y[0], str):
            number = _number_value(item[2])
            return None if number is None else ScalarOperation(operation, y[0], number, True)
        number = _number_value(y)
        if number is None or not isinstance(item[0], str) or item[1:3] != [0, 0]:
            return None
        return ScalarOperation(operation, item[0], number, False)
    return None


def _sources(entry: dict, where: str) -> tuple[str, ...]:
    operation = scalar_operation(entry)
    if operation is not None:
        return (operation.source,)
    nodes = entry.get("inbound_nodes") or []
    if len(nodes) > 1:
        raise UnsupportedLayerError(
            f"{where}: the layer is called {len(nodes)} times (a shared layer); layerlab specs run each layer once. "
            "Rebuild the model with one layer per call"
        )
    if not nodes:
        return ()
    node = nodes[0]
    found: list[tuple[str, int, int]] = []
    if isinstance(node, dict):  # Keras 3
        _history(node.get("args", []), found)
    else:  # Keras 2: [["name", node_index, tensor_index, kwargs], ...]
        for item in node:
            if isinstance(item, list) and len(item) >= 3:
                found.append((str(item[0]), int(item[1]), int(item[2])))
    for name, node_index, tensor_index in found:
        if node_index != 0 or tensor_index != 0:
            raise UnsupportedLayerError(
                f"{where}: it reads output {tensor_index} of call {node_index} of '{name}' (a shared layer or a "
                "layer with several outputs), which layerlab does not support. Rebuild the model with one layer per call"
            )
    return tuple(name for name, _, _ in found)


def _endpoints(value: Any) -> list[str]:
    """Names in ``input_layers`` / ``output_layers``: ``["x", 0, 0]`` or ``[["x", 0, 0], ...]``."""
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str) and isinstance(value[1], int):
        return [value[0]]
    if isinstance(value, list):
        return [name for item in value for name in _endpoints(item)]
    if isinstance(value, dict):  # Keras 3 may nest endpoints in a dict keyed by input name
        return [name for item in value.values() for name in _endpoints(item)]
    return []


def _functional(layers: list[dict], config: dict, source: str):
    records = []
    for index, entry in enumerate(layers):
        name, cls = _name(entry), str(entry.get("class_name"))
        records.append(KerasLayer(name, cls, _sources(entry, f"{source}: layer {index} '{name}' ({cls})")))
    by_name = {r.name: i for i, r in enumerate(records)}
    if len(by_name) != len(records):
        raise ModelFileError(f"{source}: two layers share a name. Give every layer its own name")
    inputs, outputs = _endpoints(config.get("input_layers")), _endpoints(config.get("output_layers"))
    if len(inputs) != 1 or len(outputs) != 1:
        raise UnsupportedLayerError(
            f"{source}: the model has {len(inputs)} inputs and {len(outputs)} outputs ({inputs} -> {outputs}); "
            "layerlab supports models with one input and one output"
        )
    missing = [n for n in inputs + outputs + [s for r in records for s in r.sources] if n not in by_name]
    if missing:
        raise ModelFileError(f"{source}: the config refers to layers {sorted(set(missing))} that it does not define")
    input_entry = layers[by_name[inputs[0]]]
    if input_entry.get("class_name") != INPUT_LAYER:
        raise UnsupportedLayerError(f"{source}: the model input '{inputs[0]}' is not an InputLayer")
    input_shape = _input_shape_of(input_entry, source)
    if input_shape is None:
        raise ModelFileError(f"{source}: the InputLayer '{inputs[0]}' records no shape")
    # Keep only what the output depends on, in the config's order (a topological order for
    # every Keras generation); a layer listed before one of its sources is a broken file.
    needed, stack = set(), [outputs[0]]
    while stack:
        name = stack.pop()
        if name not in needed:
            needed.add(name)
            stack.extend(records[by_name[name]].sources)
    order, seen = [], set()
    for index, record in enumerate(records):
        if record.name not in needed:
            continue
        if any(s not in seen for s in record.sources):
            raise ModelFileError(f"{source}: layer '{record.name}' is listed before its inputs {list(record.sources)}")
        seen.add(record.name)
        if record.class_name == INPUT_LAYER:
            if record.name != inputs[0]:
                raise UnsupportedLayerError(f"{source}: a second InputLayer '{record.name}'; layerlab supports one input")
            continue
        order.append(index)
    return records, input_shape, order


def _spec_layers(records, order, entries, source, generation, model_class) -> list[S.Layer]:
    input_names = {r.name for r in records if r.class_name == INPUT_LAYER}
    out: list[S.Layer] = []
    previous = MODEL_INPUT
    for position, index in enumerate(order):
        record, entry = records[index], entries[index]
        where = f"{source}: layer {position} '{record.name}' ({record.class_name})"
        if record.name == MODEL_INPUT:
            raise ModelFileError(f"{where}: the name 'input' is reserved for the model input in layerlab. Rename the layer")
        cfg = entry.get("config") if isinstance(entry.get("config"), dict) else {}
        ctx = Context(name=record.name, where=where, generation=generation, module=str(entry.get("module") or ""))
        operation = scalar_operation(entry)
        try:
            layer = operation.rescaling(record.name, where) if operation else convert(record.class_name, cfg, ctx)
        except SpecError as exc:
            raise ModelFileError(f"{where}: {exc}") from None
        sources = tuple(MODEL_INPUT if s in input_names else s for s in record.sources)
        if layer.merge:
            layer = dataclasses.replace(layer, inputs=sources)
        elif model_class == "Functional":
            if len(sources) != 1:
                raise UnsupportedLayerError(f"{where}: it reads {len(sources)} tensors; only merge layers (Add, Concatenate, ...) read several")
            if sources[0] != previous:
                layer = dataclasses.replace(layer, inputs=sources)
        out.append(layer)
        previous = record.name
    if not out:
        raise ModelFileError(f"{source}: the model has no layers besides its input")
    return out
