"""Weights out as tables a person (CSV), a program (JSON) or NumPy (NPZ) can read, and back in.

Every tensor keeps its Keras layout (Conv2D kernel HWIO ``(kernel_h, kernel_w, in_channels,
filters)``, Dense kernel ``(in_features, units)``) and goes out with its layer, name, shape and
layout. Values are float32 and come back bit for bit:

* ``csv``: one file per tensor plus ``index.csv`` (layer, layer_type, weight, shape, layout,
  dtype, file). Numbers are written with ``%.9g``, enough digits for any float32. A Conv2D kernel
  is written as one ``kernel_h x kernel_w`` grid per (filter, in_channel), one grid row per CSV
  row (columns ``filter, in_channel, filter_y, x0 .. x{kw-1}``); a 2-D tensor as its matrix with
  the row index first (Dense: ``in_feature, unit0 ..``); a 1-D tensor as ``index, value``. Text cells that a spreadsheet would run
  as a formula (starting with ``= + - @``, tab or CR) get a leading ``'``, as OWASP advises
  against CSV injection; ``read_tables`` removes it again.
* ``json``: one document ``weights.json`` with nested lists in Keras layout (shortest float32
  repr, so ``np.float32(value)`` is exact).
* ``npz``: ``weights.npz`` written by ``np.savez`` with plain float32 arrays under keys
  ``'<layer>/<weight>'`` (weight names never hold '/', so the last '/' splits the key); it loads
  with ``allow_pickle=False``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import zipfile
from pathlib import Path

import numpy as np

from layerlab import limits
from layerlab import spec as S
from layerlab.errors import ExportError, LimitError
from layerlab.io import atomic_path, atomic_write_text
from layerlab.publish import check_manifest, publish_folder
from layerlab.text import csv_text, csv_untext, file_stem

FORMATS = ("csv", "json", "npz")
INDEX_CSV = "index.csv"
WEIGHTS_JSON = "weights.json"
WEIGHTS_NPZ = "weights.npz"
JSON_FORMAT = "layerlab-weights"
JSON_VERSION = 1
INDEX_COLUMNS = ("layer", "layer_type", "weight", "shape", "layout", "dtype", "file")

Weights = dict[str, dict[str, np.ndarray]]


def weight_layout(layer: S.Layer, weight: str, ndim: int) -> str:
    """The axes of one weight tensor in words, e.g. ``'HWIO (kernel_h, kernel_w, in_channels, filters)'``."""
    return layer.layouts.get(weight, f"{ndim}-D")


def tensors(network) -> list[tuple[S.Layer, str, np.ndarray]]:
    """Every weight tensor of ``network`` as (layer, weight name, float32 array), in model order."""
    out = []
    for layer in network.spec.layers:
        for weight, array in network.weights.get(layer.name, {}).items():
            out.append((layer, weight, np.asarray(array, dtype=np.float32)))
    return out


def export_tables(network, out_dir: str | Path, fmt: str, *, force: bool = False, inputs=()) -> Path:
    """Write every weight tensor of ``network`` to ``out_dir`` as CSV, JSON or NPZ.

    The files are published as a whole with a manifest (``layerlab.publish.publish_folder``):
    a user's own files in ``out_dir`` are kept, and ``read_tables`` refuses a mixture of two
    exports.

    Args:
        network: a ``layerlab.network.Network`` (spec + float32 weights in Keras layouts).
        out_dir: folder to write into (created if missing).
        fmt: ``'csv'``, ``'json'`` or ``'npz'``.
        force: replace files of these names that layerlab did not write.
        inputs: the paths the network came from; never written over.

    Returns:
        The main file: ``out_dir/index.csv``, ``out_dir/weights.json`` or ``out_dir/weights.npz``.

    Raises:
        ExportError: ``fmt`` is not one of the three.
    """
    if fmt not in FORMATS:
        raise ExportError(f"export: format {fmt!r} is not a table format, expected one of {', '.join(FORMATS)}. Use --to csv, json or npz")
    out_dir = Path(out_dir)
    items = tensors(network)
    with publish_folder(out_dir, inputs=inputs, force=force, kind=fmt) as staging:
        if fmt == "csv":
            main = _write_csv(network.spec, items, staging)
        elif fmt == "json":
            main = _write_json(network.spec, items, staging / WEIGHTS_JSON)
        else:
            main = _write_npz(items, staging / WEIGHTS_NPZ)
    return out_dir / main.name


def read_tables(path: str | Path) -> Weights:
    """Read weights written by ``export_tables`` back: layer name -> weight name -> float32 array.

    Args:
        path: ``index.csv``, ``weights.json``, ``weights.npz``, or the folder holding one of them.

    Raises:
        ExportError: the file is missing, of an unknown kind, or inconsistent (shape, grid labels).
    """
    path = Path(path)
    if path.is_dir():
        found = [path / n for n in (INDEX_CSV, WEIGHTS_JSON, WEIGHTS_NPZ) if (path / n).is_file()]
        if len(found) != 1:
            what = "none" if not found else ", ".join(p.name for p in found)
            raise ExportError(
                f"{path}: expected exactly one of {INDEX_CSV}, {WEIGHTS_JSON}, {WEIGHTS_NPZ}, found {what}. "
                "Pass the file itself"
            )
        path = found[0]
    if not path.is_file():
        raise ExportError(f"{path}: no such file. Export the weights first (layerlab export MODEL --to csv|json|npz)")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    check_manifest(path.parent, [path.name])
    limits.check_bytes(path.stat().st_size * (8 if suffix == ".json" else 1), str(path), "the weights file")
    if suffix == ".json":
        return _read_json(path)
    if suffix == ".npz":
        return _read_npz(path)
    raise ExportError(f"{path}: unknown table file kind {suffix!r}, expected .csv (the index), .json or .npz")


# --- CSV ---------------------------------------------------------------------------------------

def _file_stem(index: int, layer: str, weight: str) -> str:
    return f"{index:02d}_{file_stem(layer)}_{weight}"  # prefixed by the layer index: names may repeat once made safe


def _fmt(value: float) -> str:
    return f"{value:.9g}"


def _grid_rows(array: np.ndarray) -> list[list[str]]:
    """The CSV rows of one tensor, header first (see the module docstring for the layouts)."""
    if array.ndim == 4:  # HWIO: one kernel_h x kernel_w grid per (filter, in_channel)
        kernel_h, kernel_w, in_channels, filters = array.shape
        rows = [["filter", "in_channel", "filter_y", *(f"x{x}" for x in range(kernel_w))]]
        for f in range(filters):
            for c in range(in_channels):
                for filter_y in range(kernel_h):
                    rows.append([str(f), str(c), str(filter_y), *(_fmt(v) for v in array[filter_y, :, c, f].tolist())])
        return rows
    if array.ndim == 2:
        rows = [["in_feature", *(f"unit{j}" for j in range(array.shape[1]))]]  # Dense (in, units)
        rows += [[str(i), *(_fmt(v) for v in row)] for i, row in enumerate(array.tolist())]
        return rows
    flat = array.reshape(-1).tolist()  # 1-D, or any other rank in C order
    return [["index", "value"], *([str(i), _fmt(v)] for i, v in enumerate(flat))]


def _label_columns(ndim: int) -> int:
    return 3 if ndim == 4 else 1


def _csv_string(rows) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _write_csv(model: S.Model, items, out_dir: Path) -> Path:
    index_rows = [list(INDEX_COLUMNS)]
    positions = {layer.name: i for i, layer in enumerate(model.layers)}
    for layer, weight, array in items:
        name = _file_stem(positions[layer.name], layer.name, weight) + ".csv"
        atomic_write_text(out_dir / name, _csv_string(_grid_rows(array)))
        index_rows.append([
            csv_text(layer.name), layer.type, weight, "x".join(map(str, array.shape)),
            weight_layout(layer, weight, array.ndim), "float32", name,
        ])
    # The index goes last, so it never names a file that is not written yet.
    index = out_dir / INDEX_CSV
    atomic_write_text(index, _csv_string(index_rows))
    return index


def _read_csv(index: Path) -> Weights:
    limits.check_bytes(index.stat().st_size, str(index), "the index")
    with open(index, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows or tuple(rows[0][: len(INDEX_COLUMNS)]) != INDEX_COLUMNS:
        raise ExportError(f"{index}: not a layerlab weight index; expected the header {','.join(INDEX_COLUMNS)}")
    out: Weights = {}
    files: list[str] = []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) < len(INDEX_COLUMNS):
            raise ExportError(f"{index}:{line}: expected {len(INDEX_COLUMNS)} columns, received {len(row)}")
        layer, weight, shape_text, file = csv_untext(row[0]), row[2], row[3], row[6]
        try:
            shape = tuple(int(v) for v in shape_text.split("x")) if shape_text else ()
        except ValueError:
            raise ExportError(f"{index}:{line}: shape {shape_text!r} is not like 4x4x1x5") from None
        if Path(file).name != file:
            raise ExportError(f"{index}:{line}: file {file!r} must be a plain name in the same folder")
        limits.check_bytes(4 * math.prod(shape), f"{index}:{line}", f"tensor {layer}/{weight} of shape {shape}")
        files.append(file)
        out.setdefault(layer, {})[weight] = _read_tensor_csv(index.parent / file, shape)
    check_manifest(index.parent, [index.name, *files])
    return out


def _read_tensor_csv(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    if not path.is_file():
        raise ExportError(f"{path}: listed in {INDEX_CSV} but missing. Export the weights again")
    limits.check_bytes(path.stat().st_size, str(path), "the tensor file")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.reader(fh) if r]
    expected = _grid_rows(np.zeros(shape, np.float32))
    labels = _label_columns(len(shape))
    if len(rows) != len(expected) or rows[0] != expected[0]:
        raise ExportError(
            f"{path}: does not hold a tensor of shape {shape}: expected {len(expected) - 1} rows under the "
            f"header {','.join(expected[0])}, received {len(rows) - 1} rows under {','.join(rows[0]) if rows else 'nothing'}"
        )
    values = []
    for line, (row, want) in enumerate(zip(rows[1:], expected[1:], strict=True), start=2):
        if row[:labels] != want[:labels] or len(row) != len(want):
            raise ExportError(f"{path}:{line}: expected a row labelled {','.join(want[:labels])} with {len(want) - labels} values, received {','.join(row[:labels])} with {len(row) - labels}")
        try:
            values.append([float(v) for v in row[labels:]])
        except ValueError as exc:
            raise ExportError(f"{path}:{line}: {exc}") from None
    flat = np.asarray(values, dtype=np.float64).astype(np.float32).reshape(-1)
    if len(shape) == 4:  # rows run over (filter, in_channel, filter_y), columns over filter_x
        kernel_h, kernel_w, in_channels, filters = shape
        return np.ascontiguousarray(flat.reshape(filters, in_channels, kernel_h, kernel_w).transpose(2, 3, 1, 0))
    return flat.reshape(shape)


# --- JSON --------------------------------------------------------------------------------------

def _float32_lists(array: np.ndarray):
    """Nested lists of Python floats whose repr is float32's shortest repr (exact on reading)."""
    if array.ndim == 0:
        return float(str(array[()]))
    return [_float32_lists(a) for a in array] if array.ndim > 1 else [float(str(v)) for v in array]


def _write_json(model: S.Model, items, path: Path) -> Path:
    layers: list[dict] = []
    for layer, weight, array in items:
        if not layers or layers[-1]["name"] != layer.name:
            layers.append({"name": layer.name, "type": layer.type, "weights": []})
        layers[-1]["weights"].append({
            "name": weight, "shape": list(array.shape), "layout": weight_layout(layer, weight, array.ndim),
            "dtype": "float32", "values": _float32_lists(array),
        })
    doc = {"format": JSON_FORMAT, "version": JSON_VERSION, "model": model.name,
           "input_shape": list(model.input_shape), "layers": layers}
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return path


def _read_json(path: Path) -> Weights:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != JSON_FORMAT:
        raise ExportError(f"{path}: not a layerlab weights document (expected \"format\": \"{JSON_FORMAT}\")")
    out: Weights = {}
    for layer in doc.get("layers", []):
        for w in layer.get("weights", []):
            array = np.asarray(w["values"], dtype=np.float64).astype(np.float32)
            shape = tuple(w["shape"])
            if array.shape != shape:
                raise ExportError(f"{path}: layer {layer['name']!r} weight {w['name']!r} holds shape {array.shape}, its \"shape\" says {shape}")
            out.setdefault(layer["name"], {})[w["name"]] = array
    return out


# --- NPZ ---------------------------------------------------------------------------------------

def _write_npz(items, path: Path) -> Path:
    arrays = {f"{layer.name}/{weight}": np.ascontiguousarray(array, dtype=np.float32) for layer, weight, array in items}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append '.npz' to a name
            np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds poorly
    return path


def _read_npz(path: Path) -> Weights:
    out: Weights = {}
    try:
        with zipfile.ZipFile(path) as archive:  # what the members declare, before inflating any
            limits.check_bytes(sum(info.file_size for info in archive.infolist()), str(path), "the archive's arrays")
        with np.load(path, allow_pickle=False) as data:
            for key in data.files:
                layer, sep, weight = key.rpartition("/")
                if not sep:
                    raise ExportError(f"{path}: key {key!r} is not '<layer>/<weight>'")
                array = data[key]
                if not np.issubdtype(array.dtype, np.floating):
                    raise ExportError(f"{path}: {key!r} has dtype {array.dtype}, expected float32")
                out.setdefault(layer, {})[weight] = array.astype(np.float32, copy=False)
    except LimitError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ExportError(f"{path}: not a readable .npz of plain arrays ({exc})") from None
    return out
