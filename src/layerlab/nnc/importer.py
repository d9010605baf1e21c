"""An NNC network -> a layerlab spec with weights in Keras layouts, and a mapping table.

Each NNC function becomes one Keras layer, or two where Keras needs help (ZeroPadding2D before a
Convolution or pooling whose padding Keras 'same' does not reproduce, Flatten before an Affine
on an image). Layouts: NNC tensors are N-C-H-W. With ``data_format='channels_first'`` (the
default) the Keras tensors keep that layout; with 'channels_last' an image (C, H, W) becomes
(H, W, C). Weights are converted at the edges: Convolution W ``(out, in, kh, kw)`` -> Keras HWIO;
Affine W rows, in NNC's C-H-W flatten order, reordered to the order Keras' Flatten produces
(H-W-C for either data_format). A 1-D Keras tensor carries ``perm`` when its feature order differs
from NNC's (``keras_features[j] == nnc_features[perm[j]]``), so later Affine / BatchNormalization
weights are permuted to match. A sequence is (C, L) in NNC and (L, C) in channels_last Keras.
Last, ``layerlab.nnc.simplify`` folds the multi-function forms of single Keras layers (1-D pooling,
SeparableConv2D, global pooling + Reshape, Pad + convolution) back into those layers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from layerlab import spec as S
from layerlab.errors import LayerlabError, NNCError
from layerlab.network import Network
from layerlab.nnc import files, windows
from layerlab.nnc.functions import SUPPORTED, FunctionContext, Tensor, convert_function
from layerlab.nnc.simplify import simplify


@dataclass(frozen=True)
class MappingRow:
    """One NNC function and what it became.

    Attributes:
        function: the NNC function's name; kind: its type ('Convolution', ...).
        layers: the Keras layers made from it, as "name: Type 'padding'" strings (may be empty).
        caveat: what a reader should know (an exactness argument, a semantic difference).
    """

    function: str
    kind: str
    layers: tuple[str, ...]
    caveat: str = ""


@dataclass(frozen=True)
class ImportResult:
    """A converted NNC network.

    Attributes:
        network: the spec with Keras-layout weights (run it with ``.predict`` or ``build_keras``).
        rows: one MappingRow per NNC function that feeds the output.
        network_name, input_variable, output_variable: what was converted, in NNC's names.
    """

    network: Network
    rows: tuple[MappingRow, ...]
    network_name: str
    input_variable: str
    output_variable: str

    def table(self) -> str:
        """The mapping as aligned text: NNC function, type, Keras layer(s), caveat."""
        head = ("NNC function", "type", "Keras layer(s)", "caveat")
        body = [(r.function, r.kind, ", ".join(r.layers) or "(none: alias)", r.caveat) for r in self.rows]
        widths = [max(len(row[i]) for row in [head, *body]) for i in range(3)]
        lines = []
        for row in [head, *body]:
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)) + ("  " + row[3] if row[3] else ""))
        lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * len(head[3]))
        return "\n".join(line.rstrip() for line in lines)


def import_file(path: str, network: str | None = None, data_format: str = S.CHANNELS_FIRST) -> ImportResult:
    """Read an .nnp / .nntxt file and convert one of its networks (see ``import_network``)."""
    return import_network(files.read(path), network, data_format)


def import_network(nnc: files.NNCFile, network: str | None = None, data_format: str = S.CHANNELS_FIRST) -> ImportResult:
    """Convert the network named by the executor (or ``network``) to a spec with weights.

    Args:
        nnc: a parsed NNC file (``files.read``).
        network: the network's name; default the first executor's network (NNC: MainRuntime).
        data_format: 'channels_first' (NNC's own layout) or 'channels_last'.

    Returns:
        An ImportResult whose network computes what nnabla computes, within float32 rounding.

    Raises:
        NNCError: an unknown function type, a missing parameter, a shape mismatch, or a
            configuration that no Keras layer computes exactly.
    """
    if data_format not in S.DATA_FORMATS:
        raise NNCError(f"data_format={data_format!r} is not supported. Use channels_first or channels_last")
    proto = _choose_network(nnc, network)
    executor = next((e for e in nnc.proto.executor if e.network_name == proto.name), None)
    where = f"{nnc.source}: network '{proto.name}'"
    variables = {v.name: v for v in proto.variable}
    functions = list(proto.function)
    if not functions:
        raise NNCError(f"{where} has no functions. Choose another network with --network ({', '.join(nnc.network_names())})")
    produced = {name for f in functions for name in f.output}
    input_name = _input_variable(where, executor, functions, variables, produced, nnc.parameters)
    output_name = _output_variable(where, executor, functions)
    needed = _needed_functions(functions, output_name, where)

    input_shape = _declared_shape(variables.get(input_name))
    if input_shape is None or not input_shape or min(input_shape) < 1:
        raise NNCError(f"{where}: input variable '{input_name}' has no usable shape ({input_shape}). Declare its shape in the network")
    ctx = FunctionContext(data_format=data_format, parameters=nnc.parameters, variables=variables, where=where)
    tensors: dict[str, Tensor] = {input_name: Tensor(layer="input", shape=input_shape)}
    layers: list[S.Layer] = []
    weights: dict[str, dict[str, np.ndarray]] = {}
    rows: list[MappingRow] = []
    used = {"input"}
    for function in functions:
        if id(function) not in needed:
            continue
        fwhere = f"{where}: function '{function.name}' ({function.type})"
        if function.type not in SUPPORTED:
            raise NNCError(
                f"{fwhere}: NNC function type '{function.type}' is not supported. "
                f"Supported: {', '.join(SUPPORTED)}"
            )
        missing = [n for n in function.input[:1] if n not in tensors]
        if function.type in ("Add2", "Concatenate"):
            missing = [n for n in function.input if n not in tensors]
        if missing or len(function.output) != 1:
            raise NNCError(f"{fwhere}: input {missing} is not produced by an earlier function, or it has {len(function.output)} outputs; expected one")
        previous = layers[-1].name if layers else "input"
        try:
            result = convert_function(ctx, function, tensors, previous, lambda base: _unique(base, used), fwhere)
        except windows.NoExactMapping as exc:
            raise NNCError(f"{fwhere}: no exact Keras equivalent: {exc}. {_pool_fix(function.type)}") from None
        except NNCError:
            raise
        except LayerlabError as exc:
            raise NNCError(f"{fwhere}: {exc}") from None
        out_name = function.output[0]
        declared = _declared_shape(variables.get(out_name))
        if declared is not None and declared != result.tensor.shape:
            raise NNCError(
                f"{fwhere}: shape mismatch: output '{out_name}' is declared {declared} but the function "
                f"computes {result.tensor.shape} from input {tensors[function.input[0]].shape}. Fix the network's shapes"
            )
        tensors[out_name] = result.tensor
        layers.extend(result.layers)
        weights.update(result.weights)
        rows.append((function.name, function.type, [layer.name for layer in result.layers], result.caveat))

    out = tensors[output_name]
    if not layers or out.layer != layers[-1].name:
        raise NNCError(f"{where}: output '{output_name}' is not computed by the last function; layerlab models end in their output layer")
    if out.perm is not None:
        raise NNCError(f"{where}: output '{output_name}' would come out in Keras' Flatten order, not NNC's. Use --data-format channels_first")
    model_name = _sanitize(proto.name) or "nnc"
    keras_input = _keras_shape(input_shape, data_format, where)
    try:
        layers, weights, fate = simplify(model_name, keras_input, layers, weights)
        spec = S.Model(name=model_name, input_shape=keras_input, layers=tuple(layers))
        net = Network(spec, weights, source=nnc.source)
    except LayerlabError as exc:
        raise NNCError(f"{where}: the converted model is invalid: {exc}") from None
    return ImportResult(net, _rows(rows, layers, fate), proto.name, input_name, output_name)


def _rows(rows, layers: list[S.Layer], fate: dict[str, str]) -> tuple[MappingRow, ...]:
    """Mapping rows naming the final layers (a layer merged by ``simplify`` as the one computing it now)."""
    by_name = {layer.name: layer for layer in layers}
    out = []
    for function, kind, names, caveat in rows:
        described = []
        for name in names:
            while name in fate:
                name = fate[name]
            text = _describe(by_name[name])
            if text not in described:
                described.append(text)
        out.append(MappingRow(function, kind, tuple(described), caveat))
    return tuple(out)


def _choose_network(nnc: files.NNCFile, name: str | None):
    names = nnc.network_names()
    if not names:
        raise NNCError(f"{nnc.source}: the file holds no network, only parameters. Give the .nnp or .nntxt with the network")
    if name is None:
        if nnc.proto.executor:
            name = nnc.proto.executor[0].network_name
        elif len(names) == 1:
            name = names[0]
        else:
            raise NNCError(f"{nnc.source}: no executor names the network to convert. Choose one with --network: {', '.join(names)}")
    for network in nnc.proto.network:
        if network.name == name:
            return network
    raise NNCError(f"{nnc.source}: no network named {name!r}. Networks: {', '.join(names) or 'none'}")


def _input_variable(where, executor, functions, variables, produced, parameters) -> str:
    if executor is not None and executor.data_variable:
        if len(executor.data_variable) != 1:
            names = [d.variable_name for d in executor.data_variable]
            raise NNCError(f"{where}: the executor feeds {len(names)} inputs {names}; layerlab converts single-input networks")
        return executor.data_variable[0].variable_name
    candidates = []
    for function in functions:
        for name in function.input:
            variable = variables.get(name)
            if name in produced or name in parameters or (variable is not None and variable.type == "Parameter"):
                continue
            if name not in candidates:
                candidates.append(name)
    if len(candidates) != 1:
        raise NNCError(f"{where}: cannot tell the input variable (candidates: {candidates}). Add an executor with one data_variable")
    return candidates[0]


def _output_variable(where, executor, functions) -> str:
    if executor is not None and executor.output_variable:
        if len(executor.output_variable) != 1:
            names = [o.variable_name for o in executor.output_variable]
            raise NNCError(f"{where}: the executor reads {len(names)} outputs {names}; layerlab converts single-output networks")
        return executor.output_variable[0].variable_name
    return functions[-1].output[0] if functions[-1].output else ""


def _needed_functions(functions, output_name: str, where: str) -> set[int]:
    """``id()`` of the functions the output depends on (a training network's loss is left out).

    Protobuf messages are unhashable, hence ids; they stay valid while ``functions`` lives.
    """
    producer = {name: f for f in functions for name in f.output}
    if output_name not in producer:
        raise NNCError(f"{where}: no function produces the output variable '{output_name}'")
    needed: set[int] = set()
    stack = [output_name]
    while stack:
        function = producer.get(stack.pop())
        if function is None or id(function) in needed:
            continue
        needed.add(id(function))
        stack.extend(function.input)
    return needed


def _declared_shape(variable: Any) -> tuple[int, ...] | None:
    """A variable's declared shape without the batch axis, or None when not declared."""
    if variable is None or not variable.HasField("shape") or not variable.shape.dim:
        return None
    return tuple(int(d) for d in variable.shape.dim[1:])


def _keras_shape(shape: tuple[int, ...], data_format: str, where: str) -> tuple[int, ...]:
    if len(shape) in (2, 3) and data_format == S.CHANNELS_LAST:
        return (*shape[1:], shape[0])
    if len(shape) in (1, 2, 3):
        return shape
    raise NNCError(f"{where}: input of shape {shape} (without batch); layerlab converts images (C, H, W), sequences (C, L) or vectors")


def _sanitize(name: str) -> str:
    """A Keras-safe layer name: letters, digits and '_' (Keras 3 refuses '/')."""
    clean = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_")
    return ("f_" + clean) if clean[:1].isdigit() else clean


def _unique(base: str, used: set[str]) -> str:
    name = _sanitize(base) or "layer"
    candidate, n = name, 2
    while candidate in used:
        candidate, n = f"{name}_{n}", n + 1
    used.add(candidate)
    return candidate


def _describe(layer: S.Layer) -> str:
    extra = f" '{layer.padding}'" if isinstance(layer, S.Windowed) else ""
    if isinstance(layer, (S.ZeroPadding1D, S.ZeroPadding2D)):
        extra = f" {layer.padding}"
    if isinstance(layer, S.Activation):
        extra = f" {layer.activation}"
    return f"{layer.name}: {layer.type}{extra}"


def _pool_fix(kind: str) -> str:
    if kind == "MaxPooling":
        return ("Fix: in NNC use IgnoreBorder=True, or a pad that Keras 'same' reproduces, or put a ReLU "
                "before it (then zero padding is exact)")
    return "Fix: in NNC use IgnoreBorder=True with Padding 0, or IncludingPad=False with a pad Keras 'same' reproduces"
