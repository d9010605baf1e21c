"""A workbook that *is* the network: every layer a sheet of live formulas over the one before.

Sheets, in order:

* ``input``: the image (one grid per channel; channels_first ``(1, 28, 28)`` is one 28x28
  grid), values as the model expects them (MNIST: pixels / 255), and the predicted class.
  Paste another image there and Excel or LibreOffice recomputes every sheet.
* one sheet per layer, formulas over the previous layer's sheet:
  Conv2D ``SUMPRODUCT(window, kernel)`` per input channel plus the bias, taps that fall in the
  zero padding left out; MaxPooling2D ``MAX`` over the window's real cells (Keras 'same' padding
  cells never win, so they are simply not in the range); AveragePooling2D ``AVERAGE`` over the
  real cells (Keras divides by their count); activations cell by cell (``TANH`` ...); softmax as
  Keras computes it, ``EXP(x - MAX(x)) / SUM(EXP(x - MAX(x)))``, with its max, exp and sum cells
  shown; Flatten in Keras' order (channels_first: channels move last first); Dense
  ``SUMPRODUCT(inputs, kernel column)`` plus the bias. Feature maps carry a heat-map colour scale.
  Padding and output sizes come from ``layerlab.geometry`` only.
* ``prediction``: ``MATCH(MAX(p), p, 0) - 1``, the class probabilities, and the label if known.
* one ``<layer> weights`` sheet per layer with weights, which the formulas reference.
* ``layout``: where every tensor sits (kind, name, type, sheet, shape, first cell, channel
  axis); ``read_formula_values`` follows it to read the values a spreadsheet computed.

Layer names are text, never formulas, and sheet titles follow Excel's rules (``excel_common``).
Graph layers (Add, Concatenate, explicit ``inputs``) have no place in a chain of sheets and raise
ExportError.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from layerlab import spec as S
from layerlab.errors import ExportError, ShapeError
from layerlab.export import excel_common as X
from layerlab.export.excel_layers import LayerWriter, weights_title
from layerlab.export.excel_layout import Block, a1, call, cells_ref
from layerlab.publish import publish_file
from layerlab.registry import EXCEL_FORMULAS

INPUT = "input"
PREDICTION = "prediction"
LAYOUT = "layout"
LAYOUT_COLUMNS = ("kind", "name", "type", "sheet", "shape", "first cell", "channel axis")
PREDICTED_CELL = (3, 2)  # on the prediction sheet


def export_xlsx_formulas(network, out_file: str | Path, image: np.ndarray, *, label: int | None = None, force: bool = False, inputs=()) -> Path:
    """Write a workbook whose formulas compute ``network`` on ``image`` (and on any pasted image).

    Args:
        network: a ``layerlab.network.Network`` whose layers form a chain.
        out_file: the .xlsx file to write (atomically).
        image: one input of shape ``network.spec.input_shape`` (a leading batch axis of 1 is
            accepted), float, scaled as the model expects (MNIST: pixels / 255).
        label: the true class, shown beside the prediction when given.

        force: replace an existing ``out_file`` (never one of ``inputs``, the model's files).
        inputs: the paths the network came from.

    Returns:
        ``out_file`` as a Path.

    Raises:
        ExportError: a layer cannot be written as formulas (graph layers, rank > 3 tensors).
        ShapeError: ``image`` has the wrong shape, is not numeric, or holds NaN or infinity.
        MissingExtraError: openpyxl is not installed.
    """
    network.refuse_nonfinite("xlsx-formulas")
    spec = network.spec
    check_supported(spec)
    x = _check_image(spec, image)
    openpyxl = X.openpyxl()
    out_file = Path(out_file)
    wb = openpyxl.Workbook()
    _Book(wb, network).write(x, label)
    with publish_file(out_file, inputs=inputs, force=force) as tmp:
        wb.save(tmp)
    return out_file


def check_supported(spec: S.Model) -> None:
    """Raise one ExportError naming the first layer that cannot become formulas."""
    if len(spec.input_shape) > 3:
        raise ExportError(f"xlsx-formulas: model '{spec.name}': input shape {spec.input_shape} has rank {len(spec.input_shape)}; sheets hold rank 1 to 3")
    for info in spec.infos:
        layer = info.layer
        where = f"xlsx-formulas: layer {info.index} '{layer.name}' ({layer.type})"
        if not EXCEL_FORMULAS.supports(type(layer)):
            raise ExportError(f"{EXCEL_FORMULAS.error(layer, info.index)}. Export --to xlsx for the weights instead")
        if layer.inputs:
            raise ExportError(f"{where} reads named inputs: a workbook of live formulas holds a chain of layers, "
                              "not a graph. Export --to xlsx for the weights instead")
        if isinstance(layer, S.ReLU) and layer.as_activation() is None:
            raise ExportError(f"{where}: only ReLU() and ReLU(max_value=6) have formulas. Export --to xlsx for the weights instead")
        if len(info.output_shape) > 3:
            raise ExportError(f"{where}: output shape {info.output_shape} has rank {len(info.output_shape)}; sheets hold rank 1 to 3")


def _check_image(spec: S.Model, image) -> np.ndarray:
    x = np.asarray(image)
    expected = tuple(spec.input_shape)
    where = f"xlsx-formulas: model '{spec.name}'"
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ShapeError(f"{where}: image dtype {x.dtype} is not numeric. Pass a float32 array")
    if x.shape == (1, *expected):
        x = x[0]
    if x.shape != expected:
        raise ShapeError(
            f"{where}: image shape {x.shape} does not fit, expected {expected} (one image, scaled as the model "
            "expects, e.g. pixels / 255). Reshape the image to the model's input_shape"
        )
    if not np.all(np.isfinite(x)):
        raise ShapeError(f"{where}: image holds NaN or infinity. Pass finite values")
    return x.astype(np.float32)


def _channel_axis(data_format: str) -> int:
    return 0 if data_format == S.CHANNELS_FIRST else 2


def _ahead_axis(layers, default: int = 2) -> int:
    """Channel axis for a rank-3 tensor with no data_format of its own (the model input, a
    Reshape output): that of the next layer that reads one, else channels_last."""
    for layer in layers:
        if hasattr(layer, "data_format"):
            return _channel_axis(layer.data_format)
    return default


class _Book:
    """Sheets of one workbook, filled layer by layer."""

    def __init__(self, wb, network) -> None:
        self.wb = wb
        self.network = network
        self.spec: S.Model = network.spec
        used: set[str] = set()
        # Fixed titles first, so a layer called 'input' or 'prediction' gets a suffixed title.
        fixed = {name: X.sheet_title(name, used) for name in (INPUT, PREDICTION, LAYOUT)}
        layer_titles = [X.sheet_title(layer.name, used) for layer in self.spec.layers]
        weight_titles = {
            layer.name: X.sheet_title(weights_title(layer.name), used)
            for layer in self.spec.layers if network.weights.get(layer.name)
        }
        wb.active.title = fixed[INPUT]
        self.input_ws = wb.active
        self.layer_ws = [wb.create_sheet(t) for t in layer_titles]
        self.prediction_ws = wb.create_sheet(fixed[PREDICTION])
        self.weight_ws = {name: wb.create_sheet(t) for name, t in weight_titles.items()}
        self.layout_ws = wb.create_sheet(fixed[LAYOUT])
        self.layout: list[tuple] = []

    def write(self, x: np.ndarray, label: int | None) -> None:
        axis = _ahead_axis(self.spec.layers) if x.ndim == 3 else None
        writer = LayerWriter(self.input_ws)
        X.set_text(self.input_ws.cell(1, 1), f"input {tuple(x.shape)}: values as the model expects them "
                   "(MNIST: pixels / 255). Paste another image here and every sheet recalculates.")
        src = writer.alloc(x.shape, "input", axis)
        for index in np.ndindex(x.shape):
            writer.put_value(src, index, float(x[index]))
        writer.format(src, X.ink_rule)
        writer.widths()
        self.layout.append(("input", INPUT, "Input", src))
        for i, (info, ws) in enumerate(zip(self.spec.infos, self.layer_ws, strict=True)):
            layer = info.layer
            out_axis = _ahead_axis(self.spec.layers[i + 1:], default=2 if src.channel_axis is None else src.channel_axis)
            writer = LayerWriter(ws, self.weight_ws.get(layer.name), self.network.weights.get(layer.name, {}))
            src = writer.write_layer(info, src, out_axis)
            self.layout.append(("layer", layer.name, layer.type, src))
        self._prediction(src, label)
        self._layout()

    def _prediction(self, final: Block, label: int | None) -> None:
        ws = self.prediction_ws
        X.set_text(ws.cell(1, 1), f"prediction of model '{self.spec.name}'")
        X.bold(ws.cell(1, 1))
        row, col = PREDICTED_CELL
        X.set_text(ws.cell(row, col - 1), "predicted class")
        X.bold(ws.cell(row, col - 1))
        if len(final.shape) != 1:
            X.set_text(ws.cell(row, col), f"(the output {final.shape} is not a vector of class scores)")
            return
        here = ws.title
        scores = cells_ref(final.sheet, [final.cell((k,)) for k in range(final.shape[0])], here)[0]
        ws.cell(row, col).value = f"=MATCH({call('MAX', [scores])},{scores},0)-1"
        X.bold(ws.cell(row, col))
        if label is not None:
            X.set_text(ws.cell(row + 1, col - 1), "label")
            ws.cell(row + 1, col, int(label))
            X.set_text(ws.cell(row + 2, col - 1), "correct")
            ws.cell(row + 2, col).value = f'=IF({a1((row, col))}={a1((row + 1, col))},"yes","no")'
        X.set_text(ws.cell(row + 4, 1), "class")
        X.set_text(ws.cell(row + 4, 2), "output")
        for k in range(final.shape[0]):
            ws.cell(row + 5 + k, 1, k)
            cell = ws.cell(row + 5 + k, 2)
            cell.value = "=" + final.ref((k,), here)
            cell.number_format = "0.0000"
        ws.conditional_formatting.add(f"B{row + 5}:B{row + 4 + final.shape[0]}", X.heat_rule())
        ws.column_dimensions["A"].width = 16
        # The answer beside the image, where the user pastes a digit.
        right = self.layout[0][3].right
        X.set_text(self.input_ws.cell(3, right + 2), "predicted class")
        X.bold(self.input_ws.cell(3, right + 2))
        self.input_ws.cell(4, right + 2).value = f"={X.sheet_ref(ws.title)}!{a1(PREDICTED_CELL)}"

    def _layout(self) -> None:
        ws = self.layout_ws
        for j, text in enumerate(LAYOUT_COLUMNS, start=1):
            X.set_text(ws.cell(1, j), text)
            X.bold(ws.cell(1, j))
        for i, (kind, name, kind_type, block) in enumerate(self.layout, start=2):
            values = (kind, name, kind_type, block.sheet, "x".join(map(str, block.shape)),
                      a1((block.top, block.left)), "" if block.channel_axis is None else str(block.channel_axis))
            for j, text in enumerate(values, start=1):
                X.set_text(ws.cell(i, j), text)
        row = len(self.layout) + 2
        X.set_text(ws.cell(row, 1), "prediction")
        X.set_text(ws.cell(row, 2), "predicted class")
        X.set_text(ws.cell(row, 4), self.prediction_ws.title)
        X.set_text(ws.cell(row, 6), a1(PREDICTED_CELL))


@dataclass(frozen=True)
class FormulaValues:
    """What a spreadsheet computed in a workbook of ``export_xlsx_formulas``.

    Attributes:
        input: the input image as the workbook holds it.
        outputs: layer name -> that layer's output (no batch axis, the layer's layout).
        predicted_class: the prediction cell, or None when the output is not a vector.
    """

    input: np.ndarray
    outputs: dict[str, np.ndarray]
    predicted_class: int | None


def read_formula_values(path: str | Path) -> FormulaValues:
    """Read the cached values of a recalculated formula workbook (see ``layerlab.export.libreoffice``).

    Raises:
        ExportError: not such a workbook, or a cell holds no number (never recalculated, or an
            error value such as #NUM!).
    """
    path = Path(path)
    openpyxl = X.openpyxl()
    wb = X.load_written_workbook(path, LAYOUT, "xlsx-formulas")
    image = None
    outputs: dict[str, np.ndarray] = {}
    predicted = None
    for row in list(wb[LAYOUT].iter_rows(min_row=2, values_only=True)):
        kind, name, _, title, shape_text, first, axis = (list(row) + [None] * 7)[:7]
        if kind is None:
            continue
        ws = wb[title]
        if kind == "prediction":
            value = ws[first].value
            predicted = None if isinstance(value, str) else int(_number(value, path, title, first))
            continue
        shape = tuple(int(v) for v in str(shape_text).split("x"))
        top, left = openpyxl.utils.cell.coordinate_to_tuple(first)
        block = Block(title, shape, top, left, None if axis in (None, "") else int(axis))
        values = np.empty(shape, np.float64)
        for index in np.ndindex(shape):
            r, c = block.cell(index)
            values[index] = _number(ws.cell(r, c).value, path, title, a1((r, c)))
        if kind == "input":
            image = values
        else:
            outputs[name] = values
    if image is None:
        raise ExportError(f"{path}: the '{LAYOUT}' sheet names no input block")
    return FormulaValues(image, outputs, predicted)


def _number(value, path: Path, title: str, cell: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ExportError(
            f"{path}: sheet '{title}' cell {cell} holds {value!r}, not a number. Recalculate the workbook first "
            "(layerlab.export.libreoffice.recalculate) and check it for error values"
        )
    return float(value)


