"""Weights as a formatted Excel workbook (values, no formulas), and reading them back.

Sheets:

* ``summary``: the model (name, input shape), one row per layer (index, name, type, output
  shape, parameters, multiply-accumulates, the sheet holding its weights) and the totals; then a
  ``tensors`` table (layer, weight, shape, layout, sheet, first cell) that ``read_xlsx`` follows.
* one sheet per layer with weights. A Conv2D kernel (HWIO) is drawn as one ``kernel_h x kernel_w``
  grid per (in_channel, filter): filters across, input channels down. A 2-D tensor (Dense kernel ``(in_features, units)``) is drawn as its matrix; a
  1-D tensor as a column. Every tensor has a blue-white-red colour scale centred on zero.

Cells hold the float32 values to 16 significant digits (openpyxl's number format): the double
read back is within ~1e-16 of the float32, and rounding it to float32 gives the value exactly
(``read_xlsx`` does). They are shown with 4 decimals.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from layerlab import spec as S
from layerlab.errors import ExportError
from layerlab.export import excel_common as X
from layerlab.export.tables import tensors, weight_layout
from layerlab.layers import LAYER_TYPES
from layerlab.publish import publish_file
from layerlab.registry import EXCEL_VALUES

SUMMARY = "summary"
TENSORS_TITLE = "tensors"
TENSOR_COLUMNS = ("layer", "weight", "shape", "layout", "sheet", "first cell")
NUMBER_FORMAT = "0.0000"
GRID_COLUMN_WIDTH = 9


def export_xlsx(network, out_file: str | Path, *, force: bool = False, inputs=()) -> Path:
    """Write ``network``'s weights as a formatted workbook.

    Args:
        network: a ``layerlab.network.Network``.
        out_file: the .xlsx file to write (atomically).

        force: replace an existing ``out_file`` (never one of ``inputs``, the model's files).
        inputs: the paths the network came from.

    Returns:
        ``out_file`` as a Path.

    Raises:
        MissingExtraError: openpyxl is not installed.
    """
    network.refuse_nonfinite("xlsx")
    openpyxl = X.openpyxl()
    out_file = Path(out_file)
    wb = openpyxl.Workbook()
    summary = wb.active
    used: set[str] = set()
    summary.title = X.sheet_title(SUMMARY, used)
    items = tensors(network)
    sheets: dict[str, str] = {}
    anchors: list[tuple[S.Layer, str, np.ndarray, str, str]] = []
    for layer in network.spec.layers:
        layer_items = [(w, a) for l, w, a in items if l.name == layer.name]
        if not layer_items:
            continue
        ws = wb.create_sheet(X.sheet_title(layer.name, used))
        sheets[layer.name] = ws.title
        X.set_text(ws.cell(1, 1), f"{layer.name} ({layer.type})")
        X.bold(ws.cell(1, 1))
        top = 3
        for weight, array in layer_items:
            top, anchor = _write_tensor(ws, top, layer, weight, array)
            anchors.append((layer, weight, array, ws.title, anchor))
    _write_summary(summary, network.spec, sheets, anchors)
    with publish_file(out_file, inputs=inputs, force=force) as tmp:
        wb.save(tmp)
    return out_file


def _grid_origin(shape: tuple[int, ...], top: int, c: int, f: int) -> tuple[int, int]:
    """Top-left cell (row, col) of the grid of (in_channel c, filter f) of an HWIO kernel."""
    kernel_h, kernel_w = shape[0], shape[1]
    return top + 2 + c * (kernel_h + 1), 2 + f * (kernel_w + 1)


def _write_tensor(ws, top: int, layer: S.Layer, weight: str, array: np.ndarray) -> tuple[int, str]:
    """Draw one tensor from row ``top``; return (next free row, first value cell)."""
    utils = X.openpyxl().utils
    X.set_text(ws.cell(top, 1), f"{weight} {tuple(array.shape)} {weight_layout(layer, weight, array.ndim)}")
    X.bold(ws.cell(top, 1))
    ranges = []
    if array.ndim == 4:  # HWIO kernel: one grid per (in_channel, filter)
        kernel_h, kernel_w, in_channels, filters = array.shape
        for f in range(filters):
            _, col = _grid_origin(array.shape, top, 0, f)
            X.set_text(ws.cell(top + 1, col), f"filter {f}")
        for c in range(in_channels):
            row, _ = _grid_origin(array.shape, top, c, 0)
            X.set_text(ws.cell(row, 1), f"in_channel {c}")
            for f in range(filters):
                row, col = _grid_origin(array.shape, top, c, f)
                _put_matrix(ws, row, col, array[:, :, c, f])
                ranges.append(_range(utils, row, col, kernel_h, kernel_w))
        first = _grid_origin(array.shape, top, 0, 0)
        bottom = top + 2 + in_channels * (kernel_h + 1)
    elif array.ndim == 2:  # (rows, columns), e.g. Dense (in_features, units)
        rows, cols = array.shape
        for j in range(cols):
            X.set_text(ws.cell(top + 1, 2 + j), f"unit {j}" if isinstance(layer, S.Dense) else f"col {j}")
        for i in range(rows):
            X.set_text(ws.cell(top + 2 + i, 1), f"in {i}" if isinstance(layer, S.Dense) else f"row {i}")
        first = (top + 2, 2)
        _put_matrix(ws, *first, array)
        ranges.append(_range(utils, *first, rows, cols))
        bottom = top + 2 + rows
    else:  # 1-D (a bias, a BatchNormalization vector) or any other rank, flattened in C order
        flat = array.reshape(-1)
        for i in range(flat.size):
            X.set_text(ws.cell(top + 1 + i, 1), str(i))
        first = (top + 1, 2)
        _put_matrix(ws, *first, flat.reshape(-1, 1))
        ranges.append(_range(utils, *first, flat.size, 1))
        bottom = top + 1 + flat.size
    if ranges:
        ws.conditional_formatting.add(" ".join(ranges), X.diverging_rule())
    for col in range(2, ws.max_column + 1):
        ws.column_dimensions[utils.get_column_letter(col)].width = GRID_COLUMN_WIDTH
    return bottom + 1, f"{utils.get_column_letter(first[1])}{first[0]}"


def _put_matrix(ws, row: int, col: int, matrix: np.ndarray) -> None:
    for i, values in enumerate(np.asarray(matrix, dtype=np.float32).tolist()):
        for j, value in enumerate(values):
            cell = ws.cell(row + i, col + j, value)
            cell.number_format = NUMBER_FORMAT


def _range(utils, row: int, col: int, height: int, width: int) -> str:
    first = f"{utils.get_column_letter(col)}{row}"
    last = f"{utils.get_column_letter(col + width - 1)}{row + height - 1}"
    return f"{first}:{last}"


def _write_summary(ws, model: S.Model, sheets: dict[str, str], anchors) -> None:
    X.set_text(ws.cell(1, 1), "model")
    X.set_text(ws.cell(1, 2), model.name)
    X.set_text(ws.cell(2, 1), "input shape")
    X.set_text(ws.cell(2, 2), str(tuple(model.input_shape)))
    header = ("#", "layer", "type", "output shape", "parameters", "MACs", "weights sheet")
    for j, text in enumerate(header, start=1):
        X.set_text(ws.cell(4, j), text)
        X.bold(ws.cell(4, j))
    row = 5
    for info in model.infos:
        ws.cell(row, 1, info.index)
        X.set_text(ws.cell(row, 2), info.layer.name)
        X.set_text(ws.cell(row, 3), info.layer.type)
        X.set_text(ws.cell(row, 4), str(tuple(info.output_shape)))
        ws.cell(row, 5, info.params)
        ws.cell(row, 6, info.macs)
        if info.layer.name in sheets:
            X.set_text(ws.cell(row, 7), sheets[info.layer.name])
        row += 1
    X.set_text(ws.cell(row, 2), "total")
    X.bold(ws.cell(row, 2))
    ws.cell(row, 5, model.param_count)
    ws.cell(row, 6, model.macs)
    row += 2
    X.set_text(ws.cell(row, 1), TENSORS_TITLE)
    X.bold(ws.cell(row, 1))
    for j, text in enumerate(TENSOR_COLUMNS, start=1):
        X.set_text(ws.cell(row + 1, j), text)
    row += 2
    for layer, weight, array, title, anchor in anchors:
        for j, text in enumerate((layer.name, weight, "x".join(map(str, array.shape)),
                                  weight_layout(layer, weight, array.ndim), title, anchor), start=1):
            X.set_text(ws.cell(row, j), text)
        row += 1
    for col, width in zip("ABCDEFG", (12, 24, 20, 16, 12, 12, 24), strict=True):
        ws.column_dimensions[col].width = width


def read_xlsx(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Read the weights of a workbook written by ``export_xlsx``: layer -> weight -> float32 array.

    Raises:
        ExportError: the file is not such a workbook, or a value cell is empty or not a number.
    """
    path = Path(path)
    openpyxl = X.openpyxl()
    wb = X.load_written_workbook(path, SUMMARY, "xlsx")
    summary = wb[SUMMARY]
    rows = list(summary.iter_rows(values_only=True))
    try:
        start = next(i for i, r in enumerate(rows) if r[0] == TENSORS_TITLE) + 2
    except StopIteration:
        raise ExportError(f"{path}: the '{SUMMARY}' sheet has no '{TENSORS_TITLE}' table") from None
    out: dict[str, dict[str, np.ndarray]] = {}
    for r in rows[start:]:
        if not r or r[0] is None:
            break
        layer, weight, shape_text, _, title, anchor = r[:6]
        shape = tuple(int(v) for v in str(shape_text).split("x"))
        row, col = openpyxl.utils.cell.coordinate_to_tuple(anchor)
        out.setdefault(layer, {})[weight] = _read_tensor(wb[title], shape, row, col, path)
    return out


def _read_tensor(ws, shape: tuple[int, ...], row: int, col: int, path: Path) -> np.ndarray:
    def grid(r: int, c: int, height: int, width: int) -> np.ndarray:
        values = [[ws.cell(r + i, c + j).value for j in range(width)] for i in range(height)]
        if any(not isinstance(v, (int, float)) or isinstance(v, bool) for line in values for v in line):
            raise ExportError(f"{path}: sheet '{ws.title}' has a non-number in the grid at row {r}, column {c}")
        return np.asarray(values, dtype=np.float64).astype(np.float32)

    if len(shape) == 4:
        kernel_h, kernel_w, in_channels, filters = shape
        out = np.zeros(shape, np.float32)
        top = row - 2  # the tensor's title row (see _grid_origin)
        for c in range(in_channels):
            for f in range(filters):
                r, c0 = _grid_origin(shape, top, c, f)
                out[:, :, c, f] = grid(r, c0, kernel_h, kernel_w)
        return out
    if len(shape) == 2:
        return grid(row, col, *shape)
    return grid(row, col, math.prod(shape), 1).reshape(shape)


# The weights workbook writes every layer's weights as tables, whatever the layer computes.
EXCEL_VALUES.register(tuple(LAYER_TYPES.values()))
