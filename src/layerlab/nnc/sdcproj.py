"""Neural Network Console's own project files (.sdcproj) as an nnabla network, ready to import.

A project file is INI-like text: ``[Layer_N]`` sections (``Type``, ``Property_K_Name`` /
``Property_K_Value`` pairs) and ``[Link_N]`` sections (``SourceLayerID`` -> ``DestLayerID``).
Shapes are not stored: they are inferred here from the ``Input`` layer's ``Size`` with nnabla's
own rules (``layerlab.nnc.windows``). Properties a project leaves out take NNC's defaults
(``DEFAULTS``). Training-only layers (the loss) are dropped with a note: the network's output is
what the loss reads (a SoftmaxCrossEntropy becomes the Softmax it contains). Layers that cannot
be converted are listed together in one error, each with its ``[Layer_N]`` and type.

``read_sdcproj`` returns an ``NNCFile`` whose proto is the network as NNC's runtime would run it
(network ``Main``, executor ``Runtime``) and whose parameters are initialised with NNC's own
initialisers (or taken from a trained .nnp, ``params=``), in nnabla layouts; so the .nnp
importer converts it to Keras, and ``files.nnp_bytes`` writes it as an .nnp that nnabla runs.
"""

from __future__ import annotations

import configparser
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from layerlab import limits
from layerlab.errors import NNCError
from layerlab.nnc import files, schema, windows
from layerlab.text import printable

ACTIVATIONS = {  # sdcproj Type -> nnabla function type (no parameters)
    "ReLU": "ReLU", "Tanh": "Tanh", "Sigmoid": "Sigmoid", "ELU": "ELU", "Swish": "Swish", "Abs": "Abs",
    "SELU": "SELU", "Softplus": "SoftPlus", "HardSigmoid": "HardSigmoid", "HardTanh": "HardTanh",
}
LOSSES = ("CategoricalCrossEntropy", "BinaryCrossEntropy", "SquaredError", "HuberLoss", "AbsoluteError", "SigmoidCrossEntropy")
DEFAULTS = {  # NNC's values for properties a project may leave out
    "Convolution": {"WithBias": "True", "BorderMode": "valid", "Padding": "0,0", "Strides": "1,1", "Dilation": "1,1",
                    "ParameterScope": "*Name", "W.Initializer": "NormalConvolutionGlorot", "W.InitializerMultiplier": "1",
                    "b.Initializer": "Constant", "b.InitializerMultiplier": "0"},
    "Affine": {"WithBias": "True", "ParameterScope": "*Name", "W.Initializer": "NormalAffineGlorot",
               "W.InitializerMultiplier": "1", "b.Initializer": "Constant", "b.InitializerMultiplier": "0"},
    "MaxPooling": {"Strides": "*KernelShape", "IgnoreBorder": "True", "Padding": "0,0"},
    "AveragePooling": {"Strides": "*KernelShape", "IgnoreBorder": "True", "Padding": "0,0", "IncludingPad": "True"},
    "Softmax": {"Axis": "0"},
}


@dataclass
class _Layer:
    section: str
    id: int
    type: str
    props: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"[{self.section}] ({printable(self.type)} '{printable(self.props.get('Name', '?'))}')"

    def get(self, key: str) -> str:
        value = self.props.get(key, DEFAULTS.get(self.type, {}).get(key))
        if value is None:
            raise NNCError(f"{self.where}: has no {key} property, and NNC has no default for it. Set it in Neural Network Console")
        while value.startswith("*"):  # a reference to another property: '*KernelShape', '*Name'
            ref = value[1:]
            if ref == "ConvolutionPaddingSize":  # NNC: the padding that keeps the size, kernel // 2 per axis
                return ",".join(str(k // 2) for k in self.ints("KernelShape"))
            if ref.startswith("AutoInPlace"):  # a memory option of NNC's runtime: no effect on the values
                return "False"
            value = self.get(ref)
        return value

    def ints(self, key: str) -> tuple[int, ...]:
        try:
            return tuple(int(v) for v in self.get(key).split(","))
        except ValueError:
            raise NNCError(f"{self.where}: {key}={self.get(key)!r} is not a list of integers") from None


def _parse(path: Path) -> tuple[list[_Layer], list[tuple[int, int]]]:
    limits.check_bytes(path.stat().st_size, str(path), "the project file")
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # NNC's keys are case-sensitive
    try:
        parser.read_string(path.read_text(encoding="utf-8-sig"), source=str(path))
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise NNCError(f"{printable(str(path))}: not a Neural Network Console project ({str(exc).splitlines()[0]})") from None
    layers, links = [], []
    for section in parser.sections():
        items = parser[section]
        try:
            if section.startswith("Layer_"):
                count = int(items.get("NumProperty", "0"))
                props = {items[f"Property_{k}_Name"]: items.get(f"Property_{k}_Value", "") for k in range(count)}
                layers.append(_Layer(section, int(items["ID"]), items["Type"], props))
            elif section.startswith("Link_"):
                links.append((int(items["SourceLayerID"]), int(items["DestLayerID"])))
        except (KeyError, ValueError) as exc:
            raise NNCError(f"{printable(str(path))}: [{section}] is incomplete or malformed ({exc}). Save the project again in NNC") from None
    if not layers:
        raise NNCError(f"{printable(str(path))}: no [Layer_N] sections; not a Neural Network Console project")
    return layers, links


def read_sdcproj(path: str | Path, params: str | Path | None = None, seed: int = 0) -> tuple[files.NNCFile, list[str]]:
    """The project's network as an ``NNCFile`` (see the module docstring), and the notes to print.

    Args:
        path: the .sdcproj file.
        params: a trained .nnp of the same network: its parameters replace the initial ones,
            matched by name and shape.
        seed: for NNC's random initialisers.

    Raises:
        NNCError: unreadable project, unsupported layers (all listed), a branch layerlab cannot
            order, or parameters that do not match (all listed).
    """
    path = Path(path)
    layers, links = _parse(path)
    by_id = {layer.id: layer for layer in layers}
    sources: dict[int, list[int]] = {layer.id: [] for layer in layers}
    readers: dict[int, list[int]] = {layer.id: [] for layer in layers}
    for src, dst in links:
        if src not in by_id or dst not in by_id:
            raise NNCError(f"{printable(str(path))}: a link joins layer {src} to {dst}, and one of them does not exist")
        sources[dst].append(src)
        readers[src].append(dst)
    notes: list[str] = []
    odd = [f"{layer.where}" for layer in layers
           if layer.type not in ("Input", "Convolution", "Affine", "MaxPooling", "AveragePooling", "Softmax",
                                 "SoftmaxCrossEntropy", *ACTIVATIONS, *LOSSES)]
    if odd:
        raise NNCError(f"{printable(str(path))}: layers that layerlab cannot convert: {'; '.join(odd)}. Nothing was written")
    inputs = [layer for layer in layers if layer.type == "Input"]
    if len(inputs) != 1:
        raise NNCError(f"{printable(str(path))}: {len(inputs)} Input layers; layerlab converts networks with one input")
    order = _topological(layers, sources, path)
    proto = schema.new("NNablaProtoBuf")
    net = proto.network.add()
    net.name, net.batch_size = "Main", 1
    rng = np.random.default_rng(seed)
    parameters: dict[str, np.ndarray] = {}
    value: dict[int, tuple[str, tuple[int, ...]]] = {}  # layer id -> (variable, shape without batch)
    output = None
    for layer in order:
        name = layer.props.get("Name", f"{layer.type}_{layer.id}")
        if layer.type == "Input":
            shape = layer.ints("Size")
            if layer.props.get("Generator", "None") not in ("None", ""):
                notes.append(f"note: {layer.where}: its training-data generator {layer.props['Generator']!r} is dropped")
            _variable(net, "x", shape)
            value[layer.id] = ("x", shape)
            continue
        if len(sources[layer.id]) != 1:
            raise NNCError(f"{layer.where}: reads {len(sources[layer.id])} layers; layerlab converts layers that read one")
        x, shape = value[sources[layer.id][0]]
        if layer.type in LOSSES:
            notes.append(f"note: {layer.where} is a training loss: dropped; the network's output is what it reads")
            output = output or x
            continue
        out_name = f"{name}_Output"
        if layer.type == "SoftmaxCrossEntropy":
            notes.append(f"note: {layer.where} is a training loss: the network ends in the Softmax it contains")
            fn = _function(net, name, "Softmax", [x], out_name)
            fn.softmax_param.axis = 1
            out_shape = shape
        elif layer.type in ACTIVATIONS:
            _function(net, name, ACTIVATIONS[layer.type], [x], out_name)
            out_shape = shape
        elif layer.type == "Softmax":
            fn = _function(net, name, "Softmax", [x], out_name)
            fn.softmax_param.axis = int(layer.get("Axis")) + 1  # the project counts without the batch axis, nnabla with it
            out_shape = shape
        elif layer.type == "Convolution":
            out_shape = _convolution(net, layer, name, x, shape, out_name, parameters, rng)
        elif layer.type == "Affine":
            out_shape = _affine(net, layer, name, x, shape, out_name, parameters, rng)
        else:
            out_shape = _pooling(net, layer, name, x, shape, out_name)
        _variable(net, out_name, out_shape)
        value[layer.id] = (out_name, out_shape)
    if output is None:  # no loss: the layer that nothing reads
        ends = [layer for layer in order if not readers[layer.id] and layer.type not in LOSSES]
        if len(ends) != 1:
            raise NNCError(f"{printable(str(path))}: {len(ends)} layers end the network; layerlab converts networks with one output")
        output = value[ends[0].id][0]
    executor = proto.executor.add()
    executor.name, executor.network_name = "Runtime", "Main"
    executor.data_variable.add().variable_name = "x"
    executor.output_variable.add().variable_name = output
    if params is not None:
        parameters = _trained(parameters, params, path)
    return files.NNCFile(proto=proto, parameters=parameters, source=str(path)), notes


def _topological(layers: list[_Layer], sources: dict[int, list[int]], path: Path) -> list[_Layer]:
    done: set[int] = set()
    order: list[_Layer] = []
    pending = sorted(layers, key=lambda layer: layer.id)
    while pending:
        ready = [layer for layer in pending if all(s in done for s in sources[layer.id])]
        if not ready:
            raise NNCError(f"{printable(str(path))}: the links form a loop ({', '.join(layer.where for layer in pending[:4])}); "
                           "layerlab converts feed-forward networks")
        for layer in ready:
            done.add(layer.id)
            order.append(layer)
        pending = [layer for layer in pending if layer.id not in done]
    return order


def _variable(net, name: str, shape: tuple[int, ...], kind: str = "Buffer"):
    var = net.variable.add()
    var.name, var.type = name, kind
    var.shape.dim.extend([-1, *shape] if kind == "Buffer" else list(shape))
    return var


def _function(net, name: str, kind: str, inputs: list[str], output: str):
    fn = net.function.add()
    fn.name, fn.type = name, kind
    fn.input.extend(inputs)
    fn.output.append(output)
    return fn


def _parameter(net, layer: _Layer, scope: str, suffix: str, shape: tuple[int, ...], fans: tuple[int, int],
               parameters: dict, rng) -> str:
    """Declare ``scope/suffix`` and initialise it as NNC does (``W.Initializer`` etc.)."""
    which = suffix.rsplit("/", 1)[-1]
    kind = layer.get(f"{which}.Initializer")
    try:
        multiplier = float(layer.get(f"{which}.InitializerMultiplier"))
    except ValueError:
        raise NNCError(f"{layer.where}: {which}.InitializerMultiplier is not a number") from None
    if kind == "Constant":
        array = np.full(shape, multiplier, np.float32)
    elif kind in ("NormalConvolutionGlorot", "NormalAffineGlorot"):
        # NNC: an untruncated normal, sigma = sqrt(2 / (fan_in + fan_out)) with the kernel folded into both fans
        array = (rng.standard_normal(shape) * math.sqrt(2.0 / sum(fans)) * multiplier).astype(np.float32)
    elif kind in ("UniformConvolutionGlorot", "UniformAffineGlorot"):
        bound = math.sqrt(6.0 / sum(fans)) * multiplier
        array = rng.uniform(-bound, bound, shape).astype(np.float32)
    elif kind == "Normal":
        array = (rng.standard_normal(shape) * multiplier).astype(np.float32)
    elif kind == "Uniform":
        array = rng.uniform(-multiplier, multiplier, shape).astype(np.float32)
    else:
        raise NNCError(f"{layer.where}: initializer {kind!r} is not one layerlab reproduces. Train the project in NNC and "
                       "pass its .nnp with --params")
    name = f"{scope}/{suffix}"
    var = _variable(net, name, shape, "Parameter")
    var.initializer.type, var.initializer.multiplier = kind, multiplier  # as the .nnp NNC would write declares it
    parameters[name] = array
    return name


def _scope(layer: _Layer) -> str:
    return layer.get("ParameterScope")


def _convolution(net, layer, name, x, shape, out_name, parameters, rng) -> tuple[int, ...]:
    if len(shape) != 3:
        raise NNCError(f"{layer.where}: reads shape {shape}; layerlab converts 2-D convolutions of (C, H, W)")
    channels, h, w = shape
    (kh, kw), maps = layer.ints("KernelShape"), layer.ints("OutMaps")[0]
    mode = layer.get("BorderMode")
    if mode == "valid":
        pad = layer.ints("Padding")
    elif mode == "same" and kh % 2 and kw % 2:
        pad = ((kh - 1) // 2, (kw - 1) // 2)
    elif mode == "full":
        pad = (kh - 1, kw - 1)
    else:
        raise NNCError(f"{layer.where}: BorderMode {mode!r} with kernel {(kh, kw)} has no exact form; use valid with Padding")
    stride, dilation = layer.ints("Strides"), layer.ints("Dilation")
    if min(stride + dilation) < 1 or min(pad) < 0:
        raise NNCError(f"{layer.where}: Strides {stride} and Dilation {dilation} must be at least 1, Padding {pad} at least 0")
    out = tuple(windows.conv_length(n, k, s, p, d) for n, k, s, p, d in zip((h, w), (kh, kw), stride, pad, dilation, strict=True))
    if min(out) < 1:
        raise NNCError(f"{layer.where}: kernel {(kh, kw)} does not fit input {(h, w)}")
    scope = _scope(layer)
    fans = (channels * kh * kw, maps * kh * kw)
    inputs = [x, _parameter(net, layer, scope, "conv/W", (maps, channels, kh, kw), fans, parameters, rng)]
    if layer.get("WithBias") == "True":
        inputs.append(_parameter(net, layer, scope, "conv/b", (maps,), fans, parameters, rng))
    fn = _function(net, name, "Convolution", inputs, out_name)
    p = fn.convolution_param
    p.base_axis, p.group = 1, 1
    p.pad.dim.extend(pad)
    p.stride.dim.extend(stride)
    p.dilation.dim.extend(dilation)
    return (maps, *out)


def _affine(net, layer, name, x, shape, out_name, parameters, rng) -> tuple[int, ...]:
    units = layer.ints("OutShape")
    features = int(np.prod(shape))
    scope = _scope(layer)
    fans = (features, int(np.prod(units)))
    inputs = [x, _parameter(net, layer, scope, "affine/W", (features, *units), fans, parameters, rng)]
    if layer.get("WithBias") == "True":
        inputs.append(_parameter(net, layer, scope, "affine/b", units, fans, parameters, rng))
    fn = _function(net, name, "Affine", inputs, out_name)
    fn.affine_param.base_axis = 1
    return units


def _pooling(net, layer, name, x, shape, out_name) -> tuple[int, ...]:
    if len(shape) != 3:
        raise NNCError(f"{layer.where}: reads shape {shape}; layerlab converts 2-D pooling of (C, H, W)")
    channels, h, w = shape
    kernel, stride, pad = layer.ints("KernelShape"), layer.ints("Strides"), layer.ints("Padding")
    if min(kernel + stride) < 1 or min(pad) < 0:
        raise NNCError(f"{layer.where}: KernelShape {kernel} and Strides {stride} must be at least 1, Padding {pad} at least 0")
    ignore = layer.get("IgnoreBorder") == "True"
    kind = "MaxPooling" if layer.type == "MaxPooling" else "AveragePooling"
    fn = _function(net, name, kind, [x], out_name)
    p = fn.max_pooling_param if kind == "MaxPooling" else fn.average_pooling_param
    p.kernel.dim.extend(kernel)
    p.stride.dim.extend(stride)
    p.pad.dim.extend(pad)
    p.ignore_border = ignore
    if kind == "AveragePooling":
        p.including_pad = layer.get("IncludingPad") == "True"
    out = tuple(windows.pool_length(n, k, s, q, ignore) for n, k, s, q in zip((h, w), kernel, stride, pad, strict=True))
    if min(out) < 1:
        raise NNCError(f"{layer.where}: KernelShape {kernel} does not fit input {(h, w)}")
    return (channels, *out)


def _trained(initial: dict[str, np.ndarray], params: str | Path, path: Path) -> dict[str, np.ndarray]:
    """The parameters of a trained .nnp in place of the initial ones: same names, same shapes."""
    trained = files.read(params).parameters
    problems = []
    for name, array in initial.items():
        if name not in trained:
            problems.append(f"{name} {array.shape} is not in it")
        elif trained[name].shape != array.shape:
            problems.append(f"{name} is {trained[name].shape} there, {array.shape} in the project")
    extra = sorted(set(trained) - set(initial))
    if extra:
        problems.append(f"it has parameters the project does not: {', '.join(extra[:6])}")
    if problems:
        raise NNCError(f"--params {printable(str(params))} does not match {printable(str(path))}: {'; '.join(problems)}")
    return {name: np.asarray(trained[name], np.float32) for name in initial}


# --- writing ---------------------------------------------------------------------------------------

WRITTEN_ACTIVATIONS = {v: k for k, v in ACTIVATIONS.items()}  # nnabla function type -> sdcproj Type


def sdcproj_text(proto, parameters: dict[str, np.ndarray], where: str) -> str:
    """An nnabla network (``exporter.export_network``) as a Neural Network Console project.

    The layers NNC's GUI draws (Input, Convolution, Affine, pooling, activations, Softmax) with
    every property written out, the links between them, a loss (CategoricalCrossEntropy after a
    final Softmax, SquaredError otherwise) so the project trains in NNC, and NNC's default
    training settings (MNIST datasets for a 1x28x28 input). Parameters are not part of a project:
    keep the .nnp beside it (``nnc import X.sdcproj --params X.nnp`` reads both).

    Raises:
        NNCError: functions a project cannot hold, all listed.
    """
    net = proto.network[0]
    shapes = {v.name: tuple(int(d) for d in v.shape.dim[1:]) for v in net.variable}
    params = {name for name in parameters} | {v.name for v in net.variable if v.type == "Parameter"}
    odd: dict[str, list[str]] = {}
    for f in net.function:
        if (f.type not in ("Convolution", "Affine", "MaxPooling", "AveragePooling", "Softmax", *WRITTEN_ACTIVATIONS)
                or (f.type == "Convolution" and f.convolution_param.group not in (0, 1))):
            odd.setdefault(f.type if f.type != "Convolution" else "grouped Convolution", []).append(f.name)
    if odd:
        listed = "; ".join(f"{kind} x{len(names)} ({', '.join(names[:2])}{', ...' if len(names) > 2 else ''})" for kind, names in odd.items())
        raise NNCError(f"{where}: a .sdcproj written by layerlab holds Convolution, Affine, pooling, activations and "
                       f"Softmax layers; this network also has {listed}. Export --out NAME.nnp instead (nnabla runs it)")
    declared = {v.name: v.initializer for v in net.variable if v.HasField("initializer")}

    def _initializer(prefix: str, variable: str, kind: str, multiplier: str) -> list[tuple[str, str]]:
        """The parameter's initializer as the network declares it (NNC's default when it declares none)."""
        if variable in declared and declared[variable].type:
            kind, multiplier = declared[variable].type, f"{declared[variable].multiplier:g}"
        return [(f"{prefix}.Initializer", kind), (f"{prefix}.InitializerMultiplier", multiplier)]

    layers: list[tuple[str, list[tuple[str, str]]]] = []
    links: list[tuple[int, int]] = []
    input_name = next(v.variable_name for v in proto.executor[0].data_variable)
    layers.append(("Input", [("Name", "Input"), ("Size", _csv(shapes[input_name])), ("Dataset", "x"), ("Generator", "None"),
                             ("GeneratorMultiplier", "1.0")]))
    producer = {input_name: 0}
    last = None
    for f in net.function:
        reads = [name for name in f.input if name not in params]
        props = [("Name", f.name)]
        scope = next((name.rsplit("/", 2)[0] for name in f.input if name in params), f.name)
        if f.type == "Convolution":
            p = f.convolution_param
            props += [("OutMaps", str(parameters[f.input[1]].shape[0])),
                      ("KernelShape", _csv(parameters[f.input[1]].shape[2:])), ("WithBias", str(len(f.input) > 2)),
                      ("BorderMode", "valid"), ("Padding", _csv(p.pad.dim)), ("Strides", _csv(p.stride.dim)),
                      ("Dilation", _csv(p.dilation.dim)), ("ParameterScope", scope),
                      *_initializer("W", f.input[1], "NormalConvolutionGlorot", "1"),
                      *(_initializer("b", f.input[2], "Constant", "0") if len(f.input) > 2 else [])]
        elif f.type == "Affine":
            props += [("OutShape", _csv(parameters[f.input[1]].shape[1:])), ("WithBias", str(len(f.input) > 2)),
                      ("ParameterScope", scope), *_initializer("W", f.input[1], "NormalAffineGlorot", "1"),
                      *(_initializer("b", f.input[2], "Constant", "0") if len(f.input) > 2 else [])]
        elif f.type in ("MaxPooling", "AveragePooling"):
            p = f.max_pooling_param if f.type == "MaxPooling" else f.average_pooling_param
            props += [("KernelShape", _csv(p.kernel.dim)), ("Strides", _csv(p.stride.dim)), ("IgnoreBorder", str(bool(p.ignore_border))),
                      ("Padding", _csv(p.pad.dim or (0, 0)))]
            if f.type == "AveragePooling":
                props.append(("IncludingPad", str(bool(p.including_pad))))
        elif f.type == "Softmax":
            props.append(("Axis", str(int(f.softmax_param.axis) - 1)))  # the project counts without the batch axis
        kind = WRITTEN_ACTIVATIONS.get(f.type, f.type)
        layers.append((kind, props))
        k = len(layers) - 1
        links += [(producer[name], k) for name in reads]
        producer[f.output[0]] = k
        last = f
    loss = "CategoricalCrossEntropy" if last is not None and last.type == "Softmax" else "SquaredError"
    layers.append((loss, [("Name", loss)] + ([("Axis", "0")] if loss == "CategoricalCrossEntropy" else []) +
                   [("T.Dataset", "y"), ("T.Generator", "None"), ("T.GeneratorMultiplier", "1.0")]))
    links.append((len(layers) - 2, len(layers) - 1))
    return _render(layers, links, mnist=shapes[input_name] == (1, 28, 28))


def _csv(values) -> str:
    return ",".join(str(int(v)) for v in values)


def _render(layers, links, mnist: bool) -> str:
    out = ["[Engine]", "SDeepEngineType=NNabla", "RNNTrainingMode=0", "[Network_Global]", f"NumLayer={len(layers)}",
           f"NumLink={len(links)}"]
    for i, (kind, props) in enumerate(layers):
        out += [f"[Layer_{i}]", f"ID={i}", f"Type={kind}", "Position_0=24", f"Position_1={24 + 48 * i}", "Position_2=240", "Position_3=48"]
        for k, (name, value) in enumerate(props):
            out += [f"Property_{k}_Name={name}", f"Property_{k}_Value={value}"]
        out.append(f"NumProperty={len(props)}")
    for i, (src, dst) in enumerate(links):
        out += [f"[Link_{i}]", f"ID={i}", f"SourceLayerID={src}", "SourcePinIndex=0", f"DestLayerID={dst}", "DestPinIndex=0"]
    train, valid = (("{SDCPATH}samples\\sample_dataset\\mnist\\mnist_training.csv", "{SDCPATH}samples\\sample_dataset\\mnist\\mnist_test.csv")
                    if mnist else ("", ""))
    out += ["[Dataset]", "Num=2", "MainIndex=0",
            "[Dataset_0]", "Name=Training", f"URI={train}", "Shuffle=1", "EnableCache=1", "ImageNormalization=1", "NumData=0",
            "[Dataset_1]", "Name=Validation", f"URI={valid}", "Shuffle=0", "EnableCache=1", "ImageNormalization=1", "NumData=0",
            "[Description]", "Text=written by layerlab" + (": dataset-require=MNIST" if mnist else ""),
            "[Config]", "MaxEpoch=10", "SaveBest=1", "BatchSize=64", "NumOptimizer=1", "NumMonitor=2", "NumExecutor=1",
            "[Optimizer_0]", "Optimizer_Name=Optimizer", "Optimizer_NetworkName=Main", "Optimizer_DatasetName=Training",
            "UpdateInterval=1", "SolverName=Adam", "SolverParameterNum=4", "SolverParameterName_0=Alpha", "SolverParameter_0=0.001",
            "SolverParameterName_1=Beta1", "SolverParameter_1=0.9", "SolverParameterName_2=Beta2", "SolverParameter_2=0.999",
            "SolverParameterName_3=Epsilon", "SolverParameter_3=1e-08", "WeightDecay=0", "LearningRateMultiplier=1",
            "LearningRateUpdateInterval=1",
            "[Monitor_0]", "Monitor_Name=train_error", "Monitor_NetworkName=MainValidation", "Monitor_DatasetName=Training",
            "[Monitor_1]", "Monitor_Name=valid_error", "Monitor_NetworkName=MainValidation", "Monitor_DatasetName=Validation",
            "[Executor_0]", "Executor_Name=Executor", "Executor_NetworkName=MainRuntime", "Executor_DatasetName=Validation",
            "NumEvaluations=1", "RepeatEvaluationType=0", "NeedBackPropagation=0",
            "[Script]", "Enabled=0", "NumScript=0"]
    return "\r\n".join(out) + "\r\n"  # NNC writes Windows line ends
