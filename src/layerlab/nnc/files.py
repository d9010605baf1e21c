"""Read and write Neural Network Console / nnabla files: .nnp, .nntxt / .prototxt, .protobuf, .h5.

An ``.nnp`` is a zip archive holding ``nnp_version.txt``, the network as protobuf text
(``*.nntxt``; NNC also writes ``*.prototxt``) and the parameters as binary protobuf
(``parameter.protobuf``, an ``NNablaProtoBuf`` with only its ``parameter`` field) or as HDF5
(``parameter.h5``: one dataset per parameter name, with ``index`` and ``need_grad`` attributes).

Parameters are returned in nnabla's layouts (Convolution W ``(out, in, kh, kw)``, Affine W
``(in_features, out)``), as float32 arrays keyed by variable name. The archive is read in
memory, never extracted, and every member is size-checked before it is inflated.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from layerlab import limits
from layerlab.errors import LimitError, NNCError
from layerlab.nnc import schema

# A real NNC network with its parameters is a few MB; refuse anything that inflates past this.
MAX_COMPRESSION_RATIO = 1000
NNP_VERSION = "0.1"
TEXT_SUFFIXES = (".nntxt", ".prototxt")


@dataclass
class NNCFile:
    """A parsed NNC file: the protobuf document and the parameters.

    Attributes:
        proto: an ``NNablaProtoBuf`` message (networks, executors; parameters moved out).
        parameters: variable name -> float32 array in nnabla layout.
        source: the path, for messages.
    """

    proto: Any
    parameters: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = "memory"

    def network_names(self) -> list[str]:
        return [n.name for n in self.proto.network]


def read(path: str | Path) -> NNCFile:
    """Read an ``.nnp``, ``.nntxt`` / ``.prototxt`` or binary ``.protobuf`` file.

    Raises:
        NNCError: the file is missing, not a zip / protobuf, corrupt, or oversized.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise NNCError(f"{source}: no such file. Give the path of an .nnp or .nntxt file")
    suffix = path.suffix.lower()
    result = NNCFile(proto=schema.new("NNablaProtoBuf"), source=source)
    if suffix == ".nnp":
        _read_nnp(path, result)
    elif suffix in TEXT_SUFFIXES:
        _merge_text(result, path.read_bytes(), source)
    elif suffix == ".protobuf":
        _merge_binary(result, path.read_bytes(), source)
    elif suffix == ".h5":
        _merge_h5(result, path.read_bytes(), source)
    else:
        raise NNCError(
            f"{source}: unknown NNC file type {suffix or '(none)'!r}, expected .nnp, .nntxt, .prototxt, "
            ".protobuf or .h5. Export the network from Neural Network Console as .nnp"
        )
    return result


def _read_nnp(path: Path, result: NNCFile) -> None:
    source = str(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise NNCError(f"{source}: not a valid .nnp (zip) archive ({exc}). Re-export it from Neural Network Console") from None
    with archive:
        members = _checked_members(archive, source)
        # Networks first, then parameters, so parameters may refer to any network's variables.
        order = sorted(members, key=lambda i: (not i.filename.lower().endswith(TEXT_SUFFIXES), i.filename))
        found = False
        for info in order:
            name = info.filename.lower()
            where = f"{source}!{info.filename}"
            if name.endswith(TEXT_SUFFIXES):
                _merge_text(result, _read_member(archive, info, source), where)
                found = True
            elif name.endswith(".protobuf"):
                _merge_binary(result, _read_member(archive, info, source), where)
                found = True
            elif name.endswith(".h5"):
                _merge_h5(result, _read_member(archive, info, source), where)
                found = True
        if not found or not result.proto.network:
            names = ", ".join(i.filename for i in members) or "nothing"
            raise NNCError(f"{source}: the archive holds no network (.nntxt / .prototxt); it holds {names}. Re-export it from Neural Network Console")


def _checked_members(archive: zipfile.ZipFile, source: str) -> list[zipfile.ZipInfo]:
    members = []
    total = 0
    for info in archive.infolist():
        if info.is_dir():
            continue
        pure = PurePosixPath(info.filename.replace("\\", "/"))
        # Never extracted, but a path that climbs out or is absolute marks a hostile archive.
        if pure.is_absolute() or ".." in pure.parts:
            raise NNCError(f"{source}: archive member {info.filename!r} has an unsafe path. Refusing the archive")
        if info.compress_size and info.file_size / info.compress_size > MAX_COMPRESSION_RATIO:
            raise NNCError(f"{source}: archive member {info.filename!r} has compression ratio {info.file_size / info.compress_size:.0f}:1, a zip bomb. Refusing it")
        total += info.file_size
        limits.check_bytes(total, source, "the archive's members")
        members.append(info)
    return members


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, source: str) -> bytes:
    try:
        with archive.open(info) as fh:
            # The header's size may lie: read at most one byte past it.
            data = fh.read(info.file_size + 1)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise NNCError(f"{source}: archive member {info.filename!r} is corrupt ({exc}). Re-export the .nnp") from None
    if len(data) > info.file_size:
        raise NNCError(f"{source}: archive member {info.filename!r} is larger than its header says. Refusing it")
    return data


def _merge_text(result: NNCFile, data: bytes, where: str) -> None:
    from google.protobuf import text_format

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NNCError(f"{where}: not UTF-8 protobuf text ({exc})") from None
    message = schema.new("NNablaProtoBuf")
    try:
        # Sections layerlab does not need (dataset, optimizer, monitor, other functions'
        # parameters) are skipped, not rejected.
        text_format.Parse(text, message, allow_unknown_field=True)
    except RecursionError:
        raise LimitError(f"{where}: nested more deeply than a real network; not an NNC network file") from None
    except text_format.ParseError as exc:
        raise NNCError(f"{where}: not valid nnabla protobuf text ({exc}). Check the file, or re-export it") from None
    _merge(result, message, where)


def _merge_binary(result: NNCFile, data: bytes, where: str) -> None:
    from google.protobuf.message import DecodeError

    message = schema.new("NNablaProtoBuf")
    try:
        message.ParseFromString(data)
    except RecursionError:
        raise LimitError(f"{where}: nested more deeply than a real network; not an NNC network file") from None
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise NNCError(f"{where}: not a valid binary nnabla protobuf ({exc}). Re-export the file") from None
    _merge(result, message, where)


def _merge(result: NNCFile, message: Any, where: str) -> None:
    for param in message.parameter:
        result.parameters[param.variable_name] = _param_array(param, where)
    del message.parameter[:]
    result.proto.MergeFrom(message)


def _param_array(param: Any, where: str) -> np.ndarray:
    shape = tuple(int(d) for d in param.shape.dim)
    data = np.asarray(param.data, dtype=np.float32)
    if any(d < 0 for d in shape) or int(np.prod(shape, dtype=np.int64)) != data.size:
        raise NNCError(
            f"{where}: parameter {param.variable_name!r} has shape {shape} but {data.size} values. "
            "The parameter file is corrupt; re-export it"
        )
    return data.reshape(shape)


def _merge_h5(result: NNCFile, data: bytes, where: str) -> None:
    import h5py

    try:
        h5 = h5py.File(io.BytesIO(data), "r")
    except OSError as exc:
        raise NNCError(f"{where}: not a valid HDF5 parameter file ({exc})") from None
    found: list[tuple[int, str, np.ndarray]] = []

    declared = [0]

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            if not np.issubdtype(obj.dtype, np.number):
                raise NNCError(f"{where}: parameter {name!r} has dtype {obj.dtype}, expected float")
            declared[0] += 4 * int(np.prod(obj.shape, dtype=np.int64))  # checked before reading it
            limits.check_bytes(declared[0], where, f"the parameters up to {name!r}")
            found.append((int(obj.attrs.get("index", len(found))), name, np.asarray(obj[()], dtype=np.float32)))

    with h5:
        h5.visititems(visit)
    for _, name, array in sorted(found, key=lambda item: item[0]):
        result.parameters[name] = array


def parameters_message(parameters: Mapping[str, np.ndarray], need_grad: bool = True) -> Any:
    """An ``NNablaProtoBuf`` holding only ``parameters`` (nnabla layouts), in the given order."""
    message = schema.new("NNablaProtoBuf")
    for name, array in parameters.items():
        array = np.asarray(array, dtype=np.float32)
        param = message.parameter.add(variable_name=name, need_grad=need_grad)
        param.shape.dim.extend(int(d) for d in array.shape)
        param.data.extend(array.ravel().tolist())
    return message


def to_text(message: Any) -> str:
    """Protobuf text of ``message``, as nnabla writes .nntxt files."""
    from google.protobuf import text_format

    return text_format.MessageToString(message)


def nnp_bytes(network: Any, parameters: Mapping[str, np.ndarray]) -> bytes:
    """The bytes of an .nnp archive: nnp_version.txt, network.nntxt, parameter.protobuf.

    Args:
        network: an ``NNablaProtoBuf`` without parameters (networks, executors, ...).
        parameters: variable name -> array in nnabla layout.
    """
    buffer = io.BytesIO()
    # A fixed timestamp keeps the archive byte-for-byte deterministic.
    stamp = (1980, 1, 1, 0, 0, 0)
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in (
            ("nnp_version.txt", NNP_VERSION.encode()),
            ("network.nntxt", to_text(network).encode()),
            ("parameter.protobuf", parameters_message(parameters).SerializeToString()),
        ):
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()
