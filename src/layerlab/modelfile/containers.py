"""Open the containers a Keras model comes in, with h5py and the standard library alone.

Containers, told apart by their first bytes (never by the file name):

* HDF5 (``\\x89HDF\\r\\n\\x1a\\n``): ``model.save('m.h5')`` of Keras 1-3, ``save_weights`` of
  Keras 2 (``.h5``) and of Keras 3 / tf_keras 2.13+ (``.weights.h5``).
* zip (``PK\\x03\\x04``): the Keras 3 (and tf_keras 2.13+) ``.keras`` archive with
  ``config.json``, ``metadata.json`` and ``model.weights.h5``; an unzipped folder holding the same
  files is accepted too.
* JSON: an architecture from ``model.to_json()`` (or a layerlab spec).

Every failure to open or decode becomes one ``ModelFileError`` that names the file.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from layerlab import limits
from layerlab.errors import LimitError, ModelFileError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"
ARCHIVE_CONFIG = "config.json"
ARCHIVE_METADATA = "metadata.json"
ARCHIVE_WEIGHTS = "model.weights.h5"


def sniff(path: Path) -> str:
    """What ``path`` holds: 'hdf5', 'zip', 'json', 'folder' (an unzipped .keras) or 'unknown'."""
    if path.is_dir():
        return "folder" if (path / ARCHIVE_CONFIG).is_file() else "unknown"
    with open(path, "rb") as fh:
        head = fh.read(1024 * 8 + 8)
    # HDF5 allows a user block before the superblock: the signature sits at 0, 512, 1024, 2048...
    for offset in (0, 512, 1024, 2048, 4096, 8192):
        if head[offset : offset + 8] == HDF5_SIGNATURE:
            return "hdf5"
    if head.startswith(ZIP_SIGNATURE):
        return "zip"
    if head.lstrip()[:1] in (b"{", b"["):
        return "json"
    return "unknown"


def text(value: Any) -> str:
    """An HDF5 attribute or JSON value as str (h5py returns bytes for fixed-length strings)."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8")
    return str(value)


def attr_list(group, name: str) -> list[str]:
    """A list attribute such as ``layer_names`` / ``weight_names``, as Keras 2 wrote it.

    Keras splits a list too long for one HDF5 object header (64 kB) into ``name0``, ``name1``,
    ... (``save_attributes_to_hdf5_group``); this reads both forms. Missing means empty.
    """
    if name in group.attrs:
        chunks = [group.attrs[name]]
    else:
        chunks = []
        while f"{name}{len(chunks)}" in group.attrs:
            chunks.append(group.attrs[f"{name}{len(chunks)}"])
    return [text(v) for chunk in chunks for v in np.atleast_1d(chunk) if np.asarray(chunk).size]


def parse_json(data: str | bytes, where: str) -> Any:
    """Parse JSON text; one ModelFileError naming ``where`` if it is not JSON."""
    try:
        return json.loads(data)
    except RecursionError:
        raise LimitError(f"{where}: JSON nested more deeply than Python can parse; not a Keras model config") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{where}: not valid JSON ({exc}). Expected a Keras model config from model.to_json()") from None


def open_hdf5(source: Path | bytes, where: str):
    """Open an HDF5 file read-only (a path, or the bytes of one from an archive)."""
    import h5py

    try:
        return h5py.File(io.BytesIO(source) if isinstance(source, bytes) else source, "r")
    except OSError as exc:
        raise ModelFileError(
            f"{where}: truncated or corrupt HDF5 file ({_first_line(exc)}). "
            "Save the model again, or copy the file again"
        ) from None


def read_dataset(dataset, where: str, shapes: Iterable[tuple[int, ...]] = ()) -> np.ndarray:
    """Read one HDF5 dataset; a truncated file fails here rather than later.

    What the dataset declares is checked before anything is read: its size against the layer's
    weight ``shapes`` (when given) and its bytes against ``layerlab.limits``.
    """
    try:
        declared, dtype = tuple(int(v) for v in dataset.shape or ()), dataset.dtype
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{where}: cannot read the weight's header ({_first_line(exc)}); the file is corrupt. Save it again") from None
    if dtype.kind not in "fiub":
        raise ModelFileError(f"{where}: holds {dtype} data, not numbers. The file is not a Keras weights file")
    shapes = [tuple(shape) for shape in shapes]
    if shapes and math.prod(declared) > max(math.prod(shape) for shape in shapes):
        # Larger than any weight of the layer: wrong, and not worth reading (a wrong shape that
        # is no larger is read, and the network check names the weight it should have been).
        want = " or ".join(map(str, shapes))
        raise ModelFileError(f"{where}: declares shape {declared}, larger than this layer's weights {want}. "
                             "The weights do not belong to this architecture")
    limits.check_bytes(math.prod(declared) * dtype.itemsize, where, f"a weight of shape {declared} ({dtype})")
    try:
        return np.asarray(dataset[()])
    except (OSError, ValueError, KeyError) as exc:
        raise ModelFileError(f"{where}: cannot read weight data ({_first_line(exc)}); the file is truncated or corrupt. Save it again") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


@dataclass(frozen=True)
class KerasArchive:
    """The parts of a ``.keras`` archive (or of an unzipped one).

    Attributes:
        config: the parsed ``config.json`` (the model's Keras config).
        metadata: the parsed ``metadata.json`` (``keras_version``, ...), or {} if absent.
        weights: the bytes of ``model.weights.h5``, or None if absent.
    """

    config: Any
    metadata: dict
    weights: bytes | None


def read_archive(path: Path, where: str) -> KerasArchive:
    """Read a ``.keras`` zip archive or folder without executing anything in it."""
    if path.is_dir():
        def member(name: str) -> bytes | None:
            file = path / name
            return file.read_bytes() if file.is_file() else None
    else:
        try:
            archive = zipfile.ZipFile(path)
            names = set(archive.namelist())
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ModelFileError(f"{where}: truncated or corrupt .keras archive ({_first_line(exc)}). Save the model again") from None

        def member(name: str) -> bytes | None:
            if name not in names:
                return None
            limits.check_bytes(archive.getinfo(name).file_size, where, f"the archive member {name}")
            try:
                return archive.read(name)
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
                raise ModelFileError(f"{where}: archive member {name} is corrupt ({_first_line(exc)}). Save the model again") from None

    config = member(ARCHIVE_CONFIG)
    if config is None:
        raise ModelFileError(
            f"{where}: no {ARCHIVE_CONFIG} in the archive, so it is not a Keras .keras file. "
            "Save the model with model.save('model.keras')"
        )
    metadata = member(ARCHIVE_METADATA)
    meta = parse_json(metadata, f"{where}: {ARCHIVE_METADATA}") if metadata else {}
    return KerasArchive(
        config=parse_json(config, f"{where}: {ARCHIVE_CONFIG}"),
        metadata=meta if isinstance(meta, dict) else {},
        weights=member(ARCHIVE_WEIGHTS),
    )

