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

import ast
import collections
import configparser
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from layerlab import limits
from layerlab.errors import NNCError
from layerlab.nnc import files, schema, windows
from layerlab.text import printable

ACTIVATIONS = {"ReLU": "ReLU", "Tanh": "Tanh", "Sigmoid": "Sigmoid", "ReLU6": "ReLU6"}  # sdcproj Type -> nnabla function
LOSSES = ("CategoricalCrossEntropy", "BinaryCrossEntropy", "SquaredError", "HuberLoss", "AbsoluteError", "SigmoidCrossEntropy")
MERGES = ("Add2", "Sub2", "Mul2", "Maximum2", "Minimum2")  # two inputs of one shape, element by element
_CONV = {"WithBias": "True", "Padding": "*ConvolutionPaddingSize", "Strides": "1,1", "Dilation": "1,1",
         "ParameterScope": "*Name", "W.Initializer": "NormalConvolutionGlorot", "W.InitializerMultiplier": "1",
         "b.Initializer": "Constant", "b.InitializerMultiplier": "0"}
DEFAULTS = {  # NNC's values for properties a project may leave out (its layer definitions)
    "Convolution": {**_CONV, "OutMaps": "16", "KernelShape": "3,3", "BorderMode": "same", "Group": "1"},
    "DepthwiseConvolution": {**_CONV, "KernelShape": "5,5", "BorderMode": "valid", "Multiplier": "1"},
    "Affine": {"WithBias": "True", "ParameterScope": "*Name", "W.Initializer": "NormalAffineGlorot",
               "W.InitializerMultiplier": "1", "b.Initializer": "Constant", "b.InitializerMultiplier": "0"},
    "MaxPooling": {"Strides": "*KernelShape", "IgnoreBorder": "True", "Padding": "0,0"},
    "AveragePooling": {"Strides": "*KernelShape", "IgnoreBorder": "True", "Padding": "0,0", "IncludingPad": "True"},
    "Softmax": {"Axis": "0"},
    "Concatenate": {"Axis": "0"},
    "Unpooling": {"KernelShape": "2,2"},
    "BatchNormalization": {"Axes": "0", "DecayRate": "0.9", "Epsilon": "0.0001", "ParameterScope": "*Name",
                           "beta.Initializer": "Constant", "beta.InitializerMultiplier": "0",
                           "gamma.Initializer": "Constant", "gamma.InitializerMultiplier": "1",
                           "mean.Initializer": "Constant", "mean.InitializerMultiplier": "0",
                           "var.Initializer": "Constant", "var.InitializerMultiplier": "0"},
    "MulScalar": {"Value": "1.0"}, "AddScalar": {"Value": "0.0"},
    "Pad": {"Mode": "constant", "ConstantValue": "0"},
    "Dropout": {"P": "0.5"},
    "Slice": {"Start": "0,0,0", "Stop": "*Input", "Step": "1,1,1"},
}
IGNORED = ("Comment",)  # GUI-only boxes with no links: no part of the network
ALIASES = ("Dropout", "Identity")  # the identity at inference: NNC's runtime network has no function for them
# Training-data augmentation: skipped at inference when SkipAtTest (the web editor: SkipAtInspection)
# is True, its default, as NNC's converter drops it from the runtime network.
AUGMENTATIONS = ("ImageAugmentation", "RandomShift", "RandomFlip", "RandomCrop", "RandomErase")


@dataclass
class _Layer:
    section: str
    id: int
    type: str
    props: dict[str, str] = field(default_factory=dict)
    input_shape: tuple[int, ...] = ()  # what the layer reads (set once known): ``Input[i]`` in expressions

    @property
    def where(self) -> str:
        return f"[{self.section}] ({printable(self.type)} '{printable(self.props.get('Name', '?'))}')"

    def get(self, key: str) -> str:
        value = self.props.get(key, DEFAULTS.get(self.type, {}).get(key))
        if value is None:
            raise NNCError(f"{self.where}: has no {key} property, and NNC has no default for it. Set it in Neural Network Console")
        while value.startswith("*"):  # a reference to another property: '*KernelShape', '*Name'
            ref = value[1:]
            if ref == "ConvolutionPaddingSize":  # NNC's pad for the BorderMode (what NNC's own converter writes):
                kernel = self.ints("KernelShape")  # valid 0, same span // 2, full span
                spans = [(k - 1) * d for k, d in zip(kernel, _window_ints(self, "Dilation", len(kernel)), strict=True)]
                mode = self.get("BorderMode")
                return ",".join(str({"valid": 0, "same": span // 2, "full": span}.get(mode, span // 2)) for span in spans)
            if ref.startswith("AutoInPlace"):  # a memory option of NNC's runtime: no effect on the values
                return "False"
            if ref == "Input" and ref not in self.props:  # the input's shape, e.g. Slice's default Stop
                return ",".join(map(str, self.input_shape))
            value = self.get(ref)
        return value

    def ints(self, key: str) -> tuple[int, ...]:
        """A comma-separated list of integers; each may be an expression of NNC's kind: numbers,
        ``Input[i]`` (the input's shape), other properties by name, + - * / and parentheses."""
        text = self.get(key)
        try:
            return tuple(_integer(part, self) for part in text.split(","))
        except (ValueError, ZeroDivisionError, RecursionError):
            raise NNCError(f"{self.where}: {key}={text!r} is not a list of integers (or of expressions of Input[i] and numbers)") from None


def _integer(text: str, layer: _Layer) -> int:
    """One item of an integer property: an int, or an arithmetic expression NNC allows in it."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    result = _evaluate(text, layer)
    if result != int(result):
        raise ValueError(text)
    return int(result)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _evaluate(text: str, layer: _Layer) -> float:
    """An arithmetic expression of a property value (``1/255``, ``Input[0]*2``), safely: numbers,
    + - * /, ``Input[i]``, other properties of the layer by name; anything else is a ValueError."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise ValueError(text) from None

    def value(node) -> float:
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            return -value(node.operand) if isinstance(node.op, ast.USub) else value(node.operand)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv)):
            a, b = value(node.left), value(node.right)
            return {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}.get(type(node.op)) if not isinstance(node.op, (ast.Div, ast.FloorDiv)) else a / b
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "Input":
            index = int(value(node.slice))
            if not 0 <= index < len(layer.input_shape):
                raise ValueError(text)
            return layer.input_shape[index]
        if isinstance(node, ast.Name) and node.id in layer.props:  # another property, or a unit's Argument
            return float(layer.props[node.id]) if _is_float(layer.props[node.id]) else _evaluate(layer.props[node.id], layer)
        raise ValueError(text)

    return float(value(tree))


def _parse(path: Path, network: str | None = None) -> tuple[list[_Layer], list[tuple[int, int, int]], list[str], bool]:
    """The layers of one network of the project, its links as (source ID, destination ID,
    destination pin) in the project's order, notes, and whether NNC derives the runtime network
    from it (the network is Main, its executor's MainRuntime): then layers skipped at test
    (SkipAtTest) go, as NNC's converter drops them; a network drawn as it runs keeps them.

    A project of one network has [Network_Global], [Layer_N], [Link_N]; NNC's newer projects list
    their networks in [Global] (Network_K=NAME) with sections [NAME_Layer_N], [NAME_Link_N]. The
    network read is ``network``, else the executor's (MainRuntime is NNC's runtime form of Main),
    else Main, else the first.
    """
    limits.check_bytes(path.stat().st_size, str(path), "the project file")
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # NNC's keys are case-sensitive
    try:
        parser.read_string(path.read_text(encoding="utf-8-sig"), source=str(path))
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise NNCError(f"{printable(str(path))}: not a Neural Network Console project ({str(exc).splitlines()[0]})") from None
    where = printable(str(path))
    prefix, notes, derived = "", [], True
    if parser.has_section("Global") and parser["Global"].get("NumNetwork", "").isdigit():
        names = [parser["Global"].get(f"Network_{k}", "") for k in range(int(parser["Global"]["NumNetwork"]))]
        executor = parser["Executor_0"].get("Executor_NetworkName", "") if parser.has_section("Executor_0") else ""
        if network is not None:
            if network not in names:
                raise NNCError(f"{where}: no network {printable(network)!r}; the project has {', '.join(map(printable, names))}")
            chosen = network
        else:
            chosen = next((n for n in (executor, executor.removesuffix("Runtime"), "Main") if n and n in names), names[0] if names else "")
        if len(names) > 1:
            notes.append(f"note: {where}: network '{printable(chosen)}' of {', '.join(map(printable, names))} (choose with --network)")
        prefix = f"{chosen}_"
        derived = chosen != executor
    elif network is not None and network not in ("Main", "MainRuntime"):
        raise NNCError(f"{where}: the project has one network (Main); --network {printable(network)!r} does not name it")
    networks = _networks(parser, where)
    layers, links = networks.get(prefix[:-1], ([], []))
    if not layers:
        raise NNCError(f"{where}: no [{prefix}Layer_N] sections; not a Neural Network Console project")
    if any(layer.type == "Unit" for layer in layers):
        layers, links = _expand_units(layers, links, networks, where, notes)
    return layers, links, notes, derived


def _networks(parser: configparser.ConfigParser, where: str) -> dict[str, tuple[list[_Layer], list[tuple[int, int, int]]]]:
    """Every network of the project by name ('' for a project of one network): layers and links,
    in the project's order."""
    networks: dict[str, tuple[list[_Layer], list[tuple[int, int, int]]]] = {}
    for section in parser.sections():
        found = re.fullmatch(r"(?:(.+)_)?(Layer|Link)_(\d+)", section)
        if not found:
            continue
        layers, links = networks.setdefault(found.group(1) or "", ([], []))
        items = parser[section]
        try:
            if found.group(2) == "Layer":
                count = int(items.get("NumProperty", "0"))
                props = {items[f"Property_{k}_Name"]: items.get(f"Property_{k}_Value", "") for k in range(count)}
                layers.append(_Layer(section, int(items["ID"]), items["Type"], props))
            else:
                links.append((int(items["SourceLayerID"]), int(items["DestLayerID"]), int(items.get("DestPinIndex", "0"))))
        except (KeyError, ValueError) as exc:
            raise NNCError(f"{where}: [{section}] is incomplete or malformed ({exc}). Save the project again in NNC") from None
    return networks


def _expand_units(layers, links, networks, where: str, notes: list[str], depth: int = 0, counter=None):
    """Each Unit layer replaced by the network it names, as NNC's converter does: its layers named
    UNIT/LAYER, parameter scopes under the unit's, its Argument values (the unit's own properties
    first) put where the inner layers refer to them, its Input joined to what the unit reads, and
    the layer nothing reads in it giving the unit's output."""
    if depth > 16:
        raise NNCError(f"{where}: Units nested more than 16 deep (a unit that contains itself?)")
    out_layers: list[_Layer] = []
    out_links = list(links)
    if counter is None:  # fresh IDs for every copied layer, across nested units
        counter = itertools.count(max([layer.id for layer in layers] + [src for src, _, _ in links] + [0]) + 1)
    for unit in layers:
        if unit.type != "Unit":
            out_layers.append(unit)
            continue
        target = unit.props.get("Network", "")
        if target not in networks or not target:
            raise NNCError(f"{unit.where}: its Network {printable(target)!r} is not a network of the project")
        inner, inner_links = networks[target]
        inner = [layer for layer in inner if layer.type not in IGNORED]
        args = {layer.props.get("Name", ""): layer.props.get("Value", "") for layer in inner if layer.type == "Argument"}
        args.update({key: value for key, value in unit.props.items() if key in args})
        inner = [layer for layer in inner if layer.type != "Argument"]
        unit_name = unit.props.get("Name", f"Unit_{unit.id}")
        scope = unit.props.get("ParameterScope", "*Name")
        scope = unit_name if scope == "*Name" else scope
        ids = {layer.id: next(counter) for layer in inner}
        entry = [layer for layer in inner if layer.type == "Input"]
        read = {src for src, _, _ in inner_links}
        ends = [layer for layer in inner if layer.id not in read and layer.type != "Input" and layer.type not in LOSSES]
        if len(entry) != 1 or len(ends) != 1:
            raise NNCError(f"{unit.where}: its network {printable(target)!r} has {len(entry)} Input and {len(ends)} end layers; "
                           "layerlab expands units of one input and one output")
        copies = []
        for layer in inner:
            if layer.type == "Input":
                continue
            props = dict(layer.props)
            for key, value in props.items():
                if value.startswith("*") and value[1:] in args:
                    props[key] = args[value[1:]]
            own = props.get("ParameterScope", DEFAULTS.get(layer.type, {}).get("ParameterScope", "*Name"))
            own = layer.props.get("Name", "") if own == "*Name" else own
            if "ParameterScope" in props or "ParameterScope" in DEFAULTS.get(layer.type, {}):
                props["ParameterScope"] = f"{scope}/{own}" if scope else own
            for key, value in args.items():
                props.setdefault(key, value)  # for expressions such as ConvMaps/4
            props["Name"] = f"{unit_name}/{layer.props.get('Name', layer.type)}"
            copies.append(_Layer(f"{layer.section} in {unit.section}", ids[layer.id], layer.type, props))
        outer_sources = [src for src, dst, _ in out_links if dst == unit.id]
        inner_edges = []
        for src, dst, pin in inner_links:
            if src == entry[0].id and dst in ids:
                inner_edges += [(outer, ids[dst], pin) for outer in outer_sources]
            elif src in ids and dst in ids:
                inner_edges.append((ids[src], ids[dst], pin))
        rewired: list[tuple[int, int, int]] = []
        for src, dst, pin in out_links:  # the project's order kept: it orders merge inputs
            if dst == unit.id:
                rewired += inner_edges
                inner_edges = []
            else:
                rewired.append((ids[ends[0].id] if src == unit.id else src, dst, pin))
        out_links = rewired + inner_edges
        nested = copies
        if any(layer.type == "Unit" for layer in copies):
            nested, out_links = _expand_units(copies, out_links, networks, where, notes, depth + 1, counter)
        out_layers += nested
        notes.append(f"note: {unit.where}: network {printable(target)!r} expanded in place ({len(nested)} layers)")
    return out_layers, out_links


def read_sdcproj(path: str | Path, params: str | Path | None = None, seed: int = 0,
                 network: str | None = None) -> tuple[files.NNCFile, list[str]]:
    """The project's network as an ``NNCFile`` (see the module docstring), and the notes to print.

    Args:
        path: the .sdcproj file.
        params: a trained .nnp of the same network: its parameters replace the initial ones,
            matched by name and shape.
        seed: for NNC's random initialisers.
        network: which network of a project with several (default: the executor's, see ``_parse``).

    Raises:
        NNCError: unreadable project, unsupported layers (all listed), a branch layerlab cannot
            order, or parameters that do not match (all listed).
    """
    path = Path(path)
    layers, links, notes, derived = _parse(path, network)
    layers = [layer for layer in layers if layer.type not in IGNORED]
    by_id = {layer.id: layer for layer in layers}
    pinned: dict[int, list[tuple[int, int, int]]] = {layer.id: [] for layer in layers}
    readers: dict[int, list[int]] = {layer.id: [] for layer in layers}
    for order, (src, dst, pin) in enumerate(links):
        if src not in by_id or dst not in by_id:
            raise NNCError(f"{printable(str(path))}: a link joins layer {src} to {dst}, and one of them does not exist")
        pinned[dst].append((pin, order, src))
        readers[src].append(dst)
    odd = [layer.where + (" runs at inference (SkipAtTest False, or a network drawn as it runs)" if layer.type in AUGMENTATIONS else "")
           for layer in layers if layer.type not in ("Input", *LOSSES, *ALIASES, *_READERS) and not (derived and _skipped(layer))]
    if odd:
        raise NNCError(f"{printable(str(path))}: layers that layerlab cannot convert: {'; '.join(odd)}. Nothing was written")
    sources = {lid: _inputs(by_id[lid], entries) for lid, entries in pinned.items()}
    inputs = [layer for layer in layers if layer.type == "Input"]
    if len(inputs) != 1:
        raise NNCError(f"{printable(str(path))}: {len(inputs)} Input layers; layerlab converts networks with one input")
    order = _topological(layers, sources, path, links)
    proto = schema.new("NNablaProtoBuf")
    net = proto.network.add()
    net.name, net.batch_size = "Main", 1
    build = _Build(net, {}, np.random.default_rng(seed))
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
        xs = [value[s] for s in sources[layer.id]]
        layer.input_shape = xs[0][1] if xs else ()
        least, most = _ARITY.get(layer.type, (1, 1))
        if not least <= len(xs) <= most:
            wanted = f"{least} or more layers" if most > least else f"{least} layer{'s' if least != 1 else ''}"
            raise NNCError(f"{layer.where}: reads {len(xs)} layers; NNC's {printable(layer.type)} reads {wanted}")
        if layer.type in LOSSES:
            notes.append(f"note: {layer.where} is a training loss: dropped; the network's output is what it reads")
            output = output or xs[0][0]
            continue
        if layer.type == "SoftmaxCrossEntropy":
            notes.append(f"note: {layer.where} is a training loss: the network ends in the Softmax it contains")
        if layer.type in AUGMENTATIONS:  # _skipped: the identity at inference
            notes.append(f"note: {layer.where} augments training data only (SkipAtTest): no function")
            value[layer.id] = xs[0]
            continue
        if layer.type == "Dropout" and not (derived and _skip_at_test(layer)):
            # NNC keeps it in the runtime network (Monte-Carlo dropout, or a network drawn as it runs): so does
            # layerlab; the importer says what Keras does with it
            b = build.function(name, "Dropout", [xs[0][0]], f"{name}_Output")
            b.dropout_param.p = _number(layer, "P")
            _variable(net, f"{name}_Output", xs[0][1])
            value[layer.id] = (f"{name}_Output", xs[0][1])
            continue
        if layer.type in ALIASES:
            if layer.type == "Dropout":
                notes.append(f"note: {layer.where} is the identity at inference: no function")
            value[layer.id] = xs[0]
            continue
        out_name = f"{name}_Output"
        out_shape = _READERS[layer.type](build, layer, name, xs, out_name)
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
    parameters = _trained(build.parameters, params, path) if params is not None else build.parameters
    return files.NNCFile(proto=proto, parameters=parameters, source=str(path)), notes


# Layers with input side connectors among those layerlab reads: NNC draws each side connector as
# a pin of its own, numbered from 1 (pin 0 is the layer's main input).
SIDE_CONNECTORS = {"Sub2": ("R",), "Convolution": ("W", "b"), "DepthwiseConvolution": ("W", "b"), "Affine": ("W", "b"),
                   "BatchNormalization": ("beta", "gamma", "mean", "var")}
PARAMETER_CONNECTORS = ("Convolution", "DepthwiseConvolution", "Affine", "BatchNormalization")


def _skipped(layer: _Layer) -> bool:
    """An augmentation layer that NNC's runtime network leaves out."""
    return layer.type in AUGMENTATIONS and _skip_at_test(layer)


def _skip_at_test(layer: _Layer) -> bool:
    """The layer's SkipAtTest (the web editor writes SkipAtInspection), NNC's default True."""
    return layer.props.get("SkipAtTest", layer.props.get("SkipAtInspection", "True")) == "True"


def _inputs(layer: _Layer, entries: list[tuple[int, int, int]]) -> list[int]:
    """The layer IDs a layer reads, in NNC's order (checked with NNC's own converter): the links
    on pin 0 in the order the project lists them, then one per side connector (Sub2's R on pin 1)."""
    main = [src for pin, _, src in sorted(entries, key=lambda e: e[1]) if pin == 0]
    side = SIDE_CONNECTORS.get(layer.type, ())
    extra = sorted((pin, order, src) for pin, order, src in entries if pin != 0)
    if any(not 1 <= pin <= len(side) for pin, _, _ in extra):
        pins = sorted({pin for pin, _, _ in extra})
        where = f"its connectors are pins 1-{len(side)} ({', '.join(side)})" if side else "all its inputs are on pin 0"
        raise NNCError(f"{layer.where}: a link arrives on pin {pins}; {where}. Reconnect it in Neural Network Console")
    if extra and layer.type in PARAMETER_CONNECTORS:
        named = ", ".join(side[pin - 1] for pin, _, _ in extra)
        raise NNCError(f"{layer.where}: reads its {named} from another layer (a link on its parameter connector); "
                       "layerlab converts layers that hold their own parameters")
    if side and len(main) > 1:
        raise NNCError(f"{layer.where}: {len(main)} links on its main input; its second operand goes to its "
                       f"{side[0]} connector (pin 1). Reconnect it in Neural Network Console")
    return main + [src for _, _, src in extra]


def _topological(layers: list[_Layer], sources: dict[int, list[int]], path: Path,
                 links: list[tuple[int, int, int]]) -> list[_Layer]:
    """The layers in an order that computes each after what it reads, the order NNC's own converter
    gives its functions: first-ready first (a queue), a layer's readers taken in the project's link
    order; layers that read nothing in the project's section order."""
    by_id = {layer.id: layer for layer in layers}
    waiting = {layer.id: len(sources[layer.id]) for layer in layers}
    readers: dict[int, list[int]] = {layer.id: [] for layer in layers}
    for src, dst, _ in links:
        if dst in waiting and dst not in readers[src]:
            readers[src].append(dst)
    counts = {lid: sources[lid].count for lid in waiting}
    queue = collections.deque(layer.id for layer in layers if waiting[layer.id] == 0)
    order: list[_Layer] = []
    while queue:
        lid = queue.popleft()
        order.append(by_id[lid])
        for reader in readers[lid]:
            waiting[reader] -= counts[reader](lid)
            if waiting[reader] == 0:
                queue.append(reader)
    if len(order) != len(layers):
        stuck = [layer.where for layer in layers if waiting[layer.id] > 0]
        raise NNCError(f"{printable(str(path))}: the links form a loop ({', '.join(stuck[:4])}); layerlab converts feed-forward networks")
    return order


def _variable(net, name: str, shape: tuple[int, ...], kind: str = "Buffer"):
    var = net.variable.add()
    var.name, var.type = name, kind
    var.shape.dim.extend([-1, *shape] if kind == "Buffer" else list(shape))
    return var


@dataclass
class _Build:
    """The nnabla network being built, its initial parameters and the initialisers' random state."""

    net: object
    parameters: dict[str, np.ndarray]
    rng: np.random.Generator

    def function(self, name: str, kind: str, inputs: list[str], output: str):
        fn = self.net.function.add()
        fn.name, fn.type = name, kind
        fn.input.extend(inputs)
        fn.output.append(output)
        return fn

    def parameter(self, layer: _Layer, suffix: str, shape: tuple[int, ...], fans: tuple[int, int]) -> str:
        """Declare ``scope/suffix`` and initialise it as NNC does (``W.Initializer`` etc.)."""
        which = suffix.rsplit("/", 1)[-1]
        kind = layer.get(f"{which}.Initializer")
        try:
            multiplier = float(layer.get(f"{which}.InitializerMultiplier"))
        except ValueError:
            raise NNCError(f"{layer.where}: {which}.InitializerMultiplier is not a number") from None
        fan_in, fan_out = fans
        if kind == "Constant":
            array = np.full(shape, multiplier, np.float32)
        elif kind.startswith("Normal") and kind != "Normal":
            # NNC: untruncated normals with the kernel folded into both fans; Glorot sqrt(2 / (in + out)),
            # He forward sqrt(2 / in), He backward sqrt(2 / out)
            spread = {"Glorot": 2.0 / (fan_in + fan_out), "HeForward": 2.0 / fan_in, "HeBackward": 2.0 / fan_out}
            key = next((k for k in spread if kind.endswith(k)), None)
            if key is None:
                raise NNCError(f"{layer.where}: initializer {kind!r} is not one layerlab reproduces. Train the project in NNC "
                               "and pass its .nnp with --params")
            array = (self.rng.standard_normal(shape) * math.sqrt(spread[key]) * multiplier).astype(np.float32)
        elif kind in ("UniformConvolutionGlorot", "UniformAffineGlorot"):
            bound = math.sqrt(6.0 / (fan_in + fan_out)) * multiplier
            array = self.rng.uniform(-bound, bound, shape).astype(np.float32)
        elif kind == "Normal":
            array = (self.rng.standard_normal(shape) * multiplier).astype(np.float32)
        elif kind == "Uniform":
            array = self.rng.uniform(-multiplier, multiplier, shape).astype(np.float32)
        else:
            raise NNCError(f"{layer.where}: initializer {kind!r} is not one layerlab reproduces. Train the project in NNC and "
                           "pass its .nnp with --params")
        name = f"{layer.get('ParameterScope')}/{suffix}"
        var = _variable(self.net, name, shape, "Parameter")
        var.initializer.type, var.initializer.multiplier = kind, multiplier  # as the .nnp NNC would write declares it
        self.parameters[name] = array
        return name


def _image(layer: _Layer, shape: tuple[int, ...], what: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise NNCError(f"{layer.where}: reads shape {shape}; layerlab converts 2-D {what} of (C, H, W)")
    return shape


def _number(layer: _Layer, key: str) -> float:
    text = layer.get(key)
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return _evaluate(text, layer)
    except (ValueError, ZeroDivisionError, RecursionError, TypeError):
        raise NNCError(f"{layer.where}: {key}={text!r} is not a number") from None


def _conv_window(layer: _Layer, sizes: tuple[int, ...]):
    """(kernel, pad, stride, dilation, output size) of a (depthwise) convolution's properties, on an
    image (H, W) or a sequence (L,) (a KernelShape of one size). Checked against NNC's own project
    converter (``nncd_console_cli_util create_prototxt``): tests/golden/nnc_console/."""
    kernel = layer.ints("KernelShape")
    if len(kernel) != len(sizes):
        raise NNCError(f"{layer.where}: KernelShape {kernel} needs {len(sizes)} size(s) for input sizes {sizes}")
    mode = layer.get("BorderMode")
    if mode not in ("valid", "same", "full"):
        raise NNCError(f"{layer.where}: BorderMode {mode!r} is not one of NNC's: valid, same, full")
    # As NNC's converter does: an explicit Padding wins whatever the BorderMode; NNC's default
    # Padding (*ConvolutionPaddingSize) is 0 for valid, span // 2 for same, span for full.
    pad = _window_ints(layer, "Padding", len(kernel))
    stride, dilation = _window_ints(layer, "Strides", len(kernel)), _window_ints(layer, "Dilation", len(kernel))
    if min(stride + dilation) < 1 or min(pad) < 0:
        raise NNCError(f"{layer.where}: Strides {stride} and Dilation {dilation} must be at least 1, Padding {pad} at least 0")
    out = tuple(windows.conv_length(n, k, s, p, d) for n, k, s, p, d in zip(sizes, kernel, stride, pad, dilation, strict=True))
    if min(out) < 1:
        raise NNCError(f"{layer.where}: kernel {kernel} does not fit input {sizes}")
    return kernel, pad, stride, dilation, out


def _window_ints(layer: _Layer, key: str, rank: int) -> tuple[int, ...]:
    """A window property with one value per kernel axis; NNC's 2-D default ('1,1') fits a 1-D kernel too."""
    values = layer.ints(key)
    if len(values) != rank and key not in layer.props and len(set(values)) == 1:
        return values[:1] * rank
    if len(values) != rank:
        raise NNCError(f"{layer.where}: {key} {values} needs {rank} value(s), one per KernelShape axis")
    return values


def _convolution(b: _Build, layer, name, xs, out_name) -> tuple[int, ...]:
    """NNC's Convolution of an image (C, H, W), or of a sequence (C, L) with a one-size KernelShape."""
    (x, shape), = xs
    if len(shape) not in (2, 3):
        raise NNCError(f"{layer.where}: reads shape {shape}; layerlab converts convolutions of (C, H, W) or (C, L)")
    channels, *sizes = shape
    maps, group = layer.ints("OutMaps")[0], layer.ints("Group")[0]
    if group < 1 or channels % group or maps % group:
        raise NNCError(f"{layer.where}: Group {group} does not divide {channels} input and {maps} output maps")
    kernel, pad, stride, dilation, out = _conv_window(layer, tuple(sizes))
    taps = math.prod(kernel)
    fans = (channels // group * taps, maps * taps)
    inputs = [x, b.parameter(layer, "conv/W", (maps, channels // group, *kernel), fans)]
    if layer.get("WithBias") == "True":
        inputs.append(b.parameter(layer, "conv/b", (maps,), fans))
    p = b.function(name, "Convolution", inputs, out_name).convolution_param
    p.base_axis, p.group = 1, group
    p.pad.dim.extend(pad)
    p.stride.dim.extend(stride)
    p.dilation.dim.extend(dilation)
    return (maps, *out)


def _depthwise(b: _Build, layer, name, xs, out_name) -> tuple[int, ...]:
    """NNC's DepthwiseConvolution: W (C * Multiplier, kh, kw); each filter reads one channel."""
    (x, shape), = xs
    channels, h, w = _image(layer, shape, "convolutions")
    multiplier = layer.ints("Multiplier")[0]
    if multiplier < 1:
        raise NNCError(f"{layer.where}: Multiplier {multiplier} must be at least 1")
    (kh, kw), pad, stride, dilation, out = _conv_window(layer, (h, w))
    fans = (kh * kw, multiplier * kh * kw)  # per filter: one input channel, Multiplier outputs
    inputs = [x, b.parameter(layer, "depthwise_conv/W", (channels * multiplier, kh, kw), fans)]
    if layer.get("WithBias") == "True":
        inputs.append(b.parameter(layer, "depthwise_conv/b", (channels * multiplier,), fans))
    p = b.function(name, "DepthwiseConvolution", inputs, out_name).depthwise_convolution_param
    p.base_axis, p.multiplier = 1, multiplier
    p.pad.dim.extend(pad)
    p.stride.dim.extend(stride)
    p.dilation.dim.extend(dilation)
    return (channels * multiplier, *out)


def _affine(b: _Build, layer, name, xs, out_name) -> tuple[int, ...]:
    (x, shape), = xs
    units = layer.ints("OutShape")
    features = int(np.prod(shape))
    fans = (features, int(np.prod(units)))
    inputs = [x, b.parameter(layer, "affine/W", (features, *units), fans)]
    if layer.get("WithBias") == "True":
        inputs.append(b.parameter(layer, "affine/b", units, fans))
    b.function(name, "Affine", inputs, out_name).affine_param.base_axis = 1
    return units


def _pooling(b: _Build, layer, name, xs, out_name) -> tuple[int, ...]:
    (x, shape), = xs
    channels, h, w = _image(layer, shape, "pooling")
    kernel, stride, pad = layer.ints("KernelShape"), layer.ints("Strides"), layer.ints("Padding")
    if min(kernel + stride) < 1 or min(pad) < 0:
        raise NNCError(f"{layer.where}: KernelShape {kernel} and Strides {stride} must be at least 1, Padding {pad} at least 0")
    ignore = layer.get("IgnoreBorder") == "True"
    fn = b.function(name, layer.type, [x], out_name)
    p = fn.max_pooling_param if layer.type == "MaxPooling" else fn.average_pooling_param
    p.kernel.dim.extend(kernel)
    p.stride.dim.extend(stride)
    p.pad.dim.extend(pad)
    p.ignore_border = ignore
    if layer.type == "AveragePooling":
        p.including_pad = layer.get("IncludingPad") == "True"
    out = tuple(windows.pool_length(n, k, s, q, ignore) for n, k, s, q in zip((h, w), kernel, stride, pad, strict=True))
    if min(out) < 1:
        raise NNCError(f"{layer.where}: KernelShape {kernel} does not fit input {(h, w)}")
    return (channels, *out)


def _global_average(b: _Build, layer, name, xs, out_name) -> tuple[int, ...]:
    (x, shape), = xs
    if len(shape) not in (2, 3):
        raise NNCError(f"{layer.where}: reads shape {shape}; layerlab converts global pooling of (C, H, W) or (C, L)")
    channels = shape[0]
    b.function(name, "GlobalAveragePooling", [x], out_name)
    return (channels, 1, 1)


def _activation(b: _Build, layer, name, xs, out_name) -> tuple[int, ...]:
    (x, shape), = xs
    if layer.type == "SoftmaxCrossEntropy":
        b.function(name, "Softmax", [x], out_name).softmax_param.axis = 1
    elif layer.type == "Softmax":  # the project counts axes without the batch axis, nnabla with it
        b.function(name, "Softmax", [x], out_name).softmax_param.axis = int(layer.get("Axis")) + 1
    else:
        b.function(name, ACTIVATIONS[layer.type], [x], out_name)
    return shape


def _batch_normalization(b: _Build, layer, name, xs, out_name) -> tuple[int, ...]:
    """Inference statistics: NNC's runtime network runs BatchStat=False whatever the project trains with."""
    (x, shape), = xs
    axes = layer.ints("Axes")
    if len(axes) != 1 or not 0 <= axes[0] < len(shape):
        raise NNCError(f"{layer.where}: Axes {axes} does not name one axis of its input {shape}")
    pshape = (1, *(n if i == axes[0] else 1 for i, n in enumerate(shape)))
    fans = (shape[axes[0]], shape[axes[0]])
    inputs = [x] + [b.parameter(layer, f"bn/{key}", pshape, fans) for key in ("beta", "gamma", "mean", "var")]
    p = b.function(name, "BatchNormalization", inputs, out_name).batch_normalization_param
    p.axes.append(axes[0] + 1)
    p.decay_rate, p.eps, p.batch_stat = _number(layer, "DecayRate"), _number(layer, "Epsilon"), False
    return shape


def _reshape(b: _Build, layer, name, xs, out_name) -> tuple[int, ...]:
    (x, shape), = xs
    target = layer.ints("OutShape")
    if math.prod(target) != math.prod(shape) or min(target) < 1:
        raise NNCError(f"{layer.where}: OutShape {target} does not hold the {math.prod(shape)} values of {shape}")
    b.function(name, "Reshape", [x], out_name).reshape_param.shape.dim.extend([-1, *target])
    return target


def _merge(b: _Build, layer, name, xs, out_name) -> tuple[int, ...]:
    shapes = [shape for _, shape in xs]
    if shapes[0] != shapes[1]:
        raise NNCError(f"{layer.where}: reads shapes {shapes[0]} and {shapes[1]}; layerlab converts {layer.type} of one shape")
    fn = b.function(name, layer.type, [x for x, _ in xs], out_name)
    if layer.type in ("Add2", "Sub2", "Mul2"):
        getattr(fn, f"{layer.type.lower()}_param").SetInParent()
    return shapes[0]


def _concatenate(b: _Build, layer, name, xs, out_name) -> tuple[int, ...]:
    shapes = [shape for _, shape in xs]
    axis = int(layer.get("Axis"))
    if not 0 <= axis < len(shapes[0]) or len({s[:axis] + s[axis + 1:] for s in shapes}) != 1 or len({len(s) for s in shapes}) != 1:
        raise NNCError(f"{layer.where}: inputs {shapes} cannot be joined along axis {axis}")
    b.function(name, "Concatenate", [x for x, _ in xs], out_name).concatenate_param.axis = axis + 1
    out = list(shapes[0])
    out[axis] = sum(s[axis] for s in shapes)
    return tuple(out)


def _scalar(b: _Build, layer, name, xs, out_name) -> tuple[int, ...]:
    (x, shape), = xs
    fn = b.function(name, layer.type, [x], out_name)
    (fn.mul_scalar_param if layer.type == "MulScalar" else fn.add_scalar_param).val = _number(layer, "Value")
    return shape


def _unpooling(b: _Build, layer, name, xs, out_name) -> tuple[int, ...]:
    (x, shape), = xs
    channels, h, w = _image(layer, shape, "unpooling")
    kernel = layer.ints("KernelShape")
    if len(kernel) != 2 or min(kernel) < 1:
        raise NNCError(f"{layer.where}: KernelShape {kernel} must be two sizes of at least 1")
    b.function(name, "Unpooling", [x], out_name).unpooling_param.kernel.dim.extend(kernel)
    return (channels, h * kernel[0], w * kernel[1])


def _slice(b: _Build, layer, name, xs, out_name) -> tuple[int, ...]:
    (x, shape), = xs
    start, stop = layer.ints("Start"), layer.ints("Stop")
    step = layer.ints("Step") if "Step" in layer.props else (1,) * len(shape)
    if not len(start) == len(stop) == len(step) == len(shape) or min(step) < 1:
        raise NNCError(f"{layer.where}: Start {start}, Stop {stop}, Step {step} must give one entry >= 0 per axis of {shape}")
    out = tuple(len(range(*slice(a, z, s).indices(n))) for a, z, s, n in zip(start, stop, step, shape, strict=True))
    if min(out) < 1:
        raise NNCError(f"{layer.where}: Start {start} to Stop {stop} keeps nothing of {shape}")
    p = b.function(name, "Slice", [x], out_name).slice_param
    p.start.extend(start)
    p.stop.extend(stop)
    p.step.extend(step)
    return out


def _pad(b: _Build, layer, name, xs, out_name) -> tuple[int, ...]:
    (x, shape), = xs
    widths = layer.ints("PadWidth")
    if len(widths) % 2 or len(widths) // 2 > len(shape) or min(widths) < 0 or layer.get("Mode") != "constant":
        raise NNCError(f"{layer.where}: PadWidth {widths} with Mode {layer.get('Mode')!r}: layerlab converts constant "
                       "padding, two widths >= 0 per padded axis")
    p = b.function(name, "Pad", [x], out_name).pad_param
    p.pad_width.extend(widths)
    p.mode, p.constant_value = "constant", _number(layer, "ConstantValue")
    padded = len(widths) // 2
    head = shape[: len(shape) - padded]
    return (*head, *(n + widths[2 * i] + widths[2 * i + 1] for i, n in enumerate(shape[len(shape) - padded:])))


_READERS = {  # sdcproj Type -> the nnabla function(s) it writes; returns the output shape
    "Convolution": _convolution, "DepthwiseConvolution": _depthwise, "Affine": _affine,
    "MaxPooling": _pooling, "AveragePooling": _pooling, "GlobalAveragePooling": _global_average,
    "Softmax": _activation, "SoftmaxCrossEntropy": _activation, **dict.fromkeys(ACTIVATIONS, _activation),
    "BatchNormalization": _batch_normalization, "Reshape": _reshape, "Concatenate": _concatenate,
    **dict.fromkeys(MERGES, _merge), "MulScalar": _scalar, "AddScalar": _scalar, "Unpooling": _unpooling,
    "Slice": _slice, "Pad": _pad,
}
_ARITY = {**dict.fromkeys(MERGES, (2, 2)), "Concatenate": (2, math.inf)}  # (fewest, most) inputs; (1, 1) when not listed


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
WRITTEN = ("Convolution", "DepthwiseConvolution", "Affine", "MaxPooling", "AveragePooling", "GlobalAveragePooling", "Softmax",
           "BatchNormalization", "Reshape", "Concatenate", *MERGES, "MulScalar", "AddScalar", "Unpooling", "Slice", "Pad",
           *WRITTEN_ACTIVATIONS)


def sdcproj_text(proto, parameters: dict[str, np.ndarray], where: str) -> str:
    """An nnabla network (``exporter.export_network``) as a Neural Network Console project.

    Each function as the layer NNC's GUI draws for it, with every property written out, the links
    between them (a merge's inputs all on pin 0 in order; Sub2's second operand on its R pin, 1), a loss (CategoricalCrossEntropy after
    a final Softmax, SquaredError otherwise) so the project trains in NNC, and NNC's default
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
        if f.type not in WRITTEN:
            odd.setdefault(f.type, []).append(f.name)
    if odd:
        listed = "; ".join(f"{kind} x{len(names)} ({', '.join(names[:2])}{', ...' if len(names) > 2 else ''})" for kind, names in odd.items())
        raise NNCError(f"{where}: a .sdcproj has no layer for {listed}. Export --out NAME.nnp instead (nnabla runs it)")
    declared = {v.name: v.initializer for v in net.variable if v.HasField("initializer")}

    def initializer(prefix: str, variable: str, kind: str, multiplier: str) -> list[tuple[str, str]]:
        """The parameter's initializer as the network declares it (NNC's default when it declares none)."""
        if variable in declared and declared[variable].type:
            kind, multiplier = declared[variable].type, f"{declared[variable].multiplier:g}"
        return [(f"{prefix}.Initializer", kind), (f"{prefix}.InitializerMultiplier", multiplier)]

    def window(p, kernel) -> list[tuple[str, str]]:
        return [("KernelShape", _csv(kernel)), ("BorderMode", "valid"), ("Padding", _csv(p.pad.dim or (0, 0))),
                ("Strides", _csv(p.stride.dim or (1, 1))), ("Dilation", _csv(p.dilation.dim or (1, 1)))]

    layers: list[tuple[str, list[tuple[str, str]]]] = []
    links: list[tuple[int, int, int]] = []
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
            p, w = f.convolution_param, parameters[f.input[1]]
            props += [("OutMaps", str(w.shape[0])), ("WithBias", str(len(f.input) > 2)), *window(p, w.shape[2:]),
                      ("Group", str(p.group or 1)), ("ParameterScope", scope),
                      *initializer("W", f.input[1], "NormalConvolutionGlorot", "1"),
                      *(initializer("b", f.input[2], "Constant", "0") if len(f.input) > 2 else [])]
        elif f.type == "DepthwiseConvolution":
            p, w = f.depthwise_convolution_param, parameters[f.input[1]]
            props += [("WithBias", str(len(f.input) > 2)), *window(p, w.shape[1:]), ("Multiplier", str(p.multiplier or 1)),
                      ("ParameterScope", scope), *initializer("W", f.input[1], "NormalConvolutionGlorot", "1"),
                      *(initializer("b", f.input[2], "Constant", "0") if len(f.input) > 2 else [])]
        elif f.type == "Affine":
            props += [("OutShape", _csv(parameters[f.input[1]].shape[1:])), ("WithBias", str(len(f.input) > 2)),
                      ("ParameterScope", scope), *initializer("W", f.input[1], "NormalAffineGlorot", "1"),
                      *(initializer("b", f.input[2], "Constant", "0") if len(f.input) > 2 else [])]
        elif f.type in ("MaxPooling", "AveragePooling"):
            p = f.max_pooling_param if f.type == "MaxPooling" else f.average_pooling_param
            props += [("KernelShape", _csv(p.kernel.dim)), ("Strides", _csv(p.stride.dim)), ("IgnoreBorder", str(bool(p.ignore_border))),
                      ("Padding", _csv(p.pad.dim or (0, 0)))]
            if f.type == "AveragePooling":
                props.append(("IncludingPad", str(bool(p.including_pad))))
        elif f.type == "Softmax":
            props.append(("Axis", str(int(f.softmax_param.axis) - 1)))  # the project counts without the batch axis
        elif f.type == "BatchNormalization":
            p = f.batch_normalization_param
            props += [("Axes", _csv(a - 1 for a in p.axes)), ("DecayRate", repr(float(p.decay_rate))), ("Epsilon", repr(float(p.eps))),
                      ("BatchStat", "True"), ("ParameterScope", scope)]
            for key, default in zip(("beta", "gamma", "mean", "var"), ("0", "1", "0", "1"), strict=True):
                props += initializer(key, f"{scope}/bn/{key}", "Constant", default)
        elif f.type == "Reshape":
            props.append(("OutShape", _csv(shapes[f.output[0]])))
        elif f.type == "Concatenate":
            props.append(("Axis", str(int(f.concatenate_param.axis) - 1)))
        elif f.type in ("MulScalar", "AddScalar"):
            props.append(("Value", repr(float((f.mul_scalar_param if f.type == "MulScalar" else f.add_scalar_param).val))))
        elif f.type == "Unpooling":
            props.append(("KernelShape", _csv(f.unpooling_param.kernel.dim)))
        elif f.type == "Slice":
            p = f.slice_param
            props += [("Start", _csv(p.start)), ("Stop", _csv(p.stop)), ("Step", _csv(p.step))]
        elif f.type == "Pad":
            p = f.pad_param
            props += [("PadWidth", _csv(p.pad_width)), ("Mode", p.mode or "constant"), ("ConstantValue", repr(float(p.constant_value)))]
        layers.append((WRITTEN_ACTIVATIONS.get(f.type, f.type), props))
        k = len(layers) - 1
        side = SIDE_CONNECTORS.get(WRITTEN_ACTIVATIONS.get(f.type, f.type), ())
        links += [(producer[name], k, pin if side else 0) for pin, name in enumerate(reads)]  # NNC: pin 0, side connectors 1..
        producer[f.output[0]] = k
        last = f
    loss = "CategoricalCrossEntropy" if last is not None and last.type == "Softmax" else "SquaredError"
    layers.append((loss, [("Name", loss)] + ([("Axis", "0")] if loss == "CategoricalCrossEntropy" else []) +
                   [("T.Dataset", "y"), ("T.Generator", "None"), ("T.GeneratorMultiplier", "1.0")]))
    output = next(v.variable_name for v in proto.executor[0].output_variable)
    links.append((producer[output], len(layers) - 1, 0))
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
    for i, (src, dst, pin) in enumerate(links):
        out += [f"[Link_{i}]", f"ID={i}", f"SourceLayerID={src}", "SourcePinIndex=0", f"DestLayerID={dst}", f"DestPinIndex={pin}"]
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
