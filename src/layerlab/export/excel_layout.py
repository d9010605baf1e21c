"""Where a tensor's values sit on a sheet, and how formulas name them (no openpyxl needed).

A ``Block`` places one tensor (shape without the batch axis, in the layer's own layout):

* rank 1: a column, value ``i`` at ``(top + i, left)``;
* rank 2: a grid, value ``(i, j)`` at ``(top + i, left + j)``;
* rank 3: one ``height x width`` grid per channel, stacked downwards with a label row and a blank
  row between grids: channel ``c``'s value ``(y, x)`` sits at ``(top + c * (height + 2) + y,
  left + x)``. ``channel_axis`` says which axis of the shape is the channel: 0 for
  channels_first ``(C, H, W)``, 2 for channels_last ``(H, W, C)``.

Rows and columns are 1-based as in Excel. Ranges are written relative (``B3:E6``): nothing in
these workbooks is ever copied or moved, so relative references stay right.
"""

from __future__ import annotations

from dataclasses import dataclass

from layerlab.errors import ExportError
from layerlab.export.excel_common import sheet_ref

MAX_ROWS = 1_048_576  # Excel's sheet limits
MAX_COLUMNS = 16_384
MAX_FORMULA = 8_192  # characters in one formula (Excel's limit)
MAX_ARGS = 255  # arguments of one function call (Excel's limit)

Cell = tuple[int, int]


def column_letter(col: int) -> str:
    """``1 -> 'A'``, ``27 -> 'AA'``."""
    letters = ""
    while col:
        col, rem = divmod(col - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def a1(cell: Cell) -> str:
    """``(3, 2) -> 'B3'``."""
    return f"{column_letter(cell[1])}{cell[0]}"


@dataclass(frozen=True)
class Block:
    """One tensor laid out on one sheet (see the module docstring).

    Attributes:
        sheet: the sheet title.
        shape: the tensor's shape without the batch axis.
        top, left: the cell of the first value.
        channel_axis: for rank 3, the channel axis (0 or 2); None otherwise.
    """

    sheet: str
    shape: tuple[int, ...]
    top: int
    left: int
    channel_axis: int | None = None

    def hwc(self, index: tuple[int, ...]) -> tuple[int, int, int]:
        """(y, x, channel) of a rank-3 index."""
        if self.channel_axis == 0:
            return index[1], index[2], index[0]
        return index[0], index[1], index[2]

    @property
    def grid_hw(self) -> tuple[int, int]:
        """(height, width) of one channel grid of a rank-3 block."""
        if self.channel_axis == 0:
            return self.shape[1], self.shape[2]
        return self.shape[0], self.shape[1]

    @property
    def channels(self) -> int:
        return self.shape[self.channel_axis] if len(self.shape) == 3 and self.channel_axis is not None else 1

    def cell(self, index: tuple[int, ...]) -> Cell:
        """(row, col) of the value at ``index``."""
        if len(self.shape) == 1:
            return self.top + index[0], self.left
        if len(self.shape) == 2:
            return self.top + index[0], self.left + index[1]
        y, x, c = self.hwc(index)
        height, _ = self.grid_hw
        return self.top + c * (height + 2) + y, self.left + x

    def grid_cell(self, channel: int, y: int, x: int) -> Cell:
        """(row, col) of value (y, x) of channel grid ``channel`` (rank 3)."""
        height, _ = self.grid_hw
        return self.top + channel * (height + 2) + y, self.left + x

    def rects(self) -> list[tuple[int, int, int, int]]:
        """The block as rectangles (row, col, height, width): one per channel grid."""
        if len(self.shape) == 1:
            return [(self.top, self.left, self.shape[0], 1)]
        if len(self.shape) == 2:
            return [(self.top, self.left, *self.shape)]
        height, width = self.grid_hw
        return [(self.top + c * (height + 2), self.left, height, width) for c in range(self.channels)]

    @property
    def bottom(self) -> int:
        """The last row the block uses."""
        row, _, height, _ = self.rects()[-1]
        return row + height - 1

    @property
    def right(self) -> int:
        """The last column the block uses."""
        _, col, _, width = self.rects()[0]
        return col + width - 1

    def ref(self, index: tuple[int, ...], here: str | None = None) -> str:
        """Formula reference to one value; the sheet is omitted when it is ``here``."""
        return _on(self.sheet, a1(self.cell(index)), here)


def _on(sheet: str, text: str, here: str | None) -> str:
    return text if sheet == here else f"{sheet_ref(sheet)}!{text}"


def rect_ref(sheet: str, row: int, col: int, height: int, width: int, here: str | None = None) -> str:
    """Formula reference to a rectangle, e.g. ``'conv1'!B3:E6``."""
    first = a1((row, col))
    text = first if height == width == 1 else f"{first}:{a1((row + height - 1, col + width - 1))}"
    return _on(sheet, text, here)


def cells_ref(sheet: str, cells: list[Cell], here: str | None = None) -> list[str]:
    """Arguments naming ``cells``: one range when they fill a rectangle in row-major order,
    else one reference per cell."""
    rows = sorted({r for r, _ in cells})
    cols = sorted({c for _, c in cells})
    full = [(r, c) for r in range(rows[0], rows[-1] + 1) for c in range(cols[0], cols[-1] + 1)]
    if sorted(cells) == full and len(set(cells)) == len(cells):
        return [rect_ref(sheet, rows[0], cols[0], rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1, here)]
    return [_on(sheet, a1(cell), here) for cell in cells]


def call(function: str, args: list[str]) -> str:
    """``FUNCTION(a, b, ...)``, nested in groups of 255 arguments (Excel's limit) when longer.

    Only for functions where that nesting changes nothing: MAX, MIN, SUM.
    """
    while len(args) > MAX_ARGS:
        args = [f"{function}({','.join(args[i:i + MAX_ARGS])})" for i in range(0, len(args), MAX_ARGS)]
    return f"{function}({','.join(args)})"


def check_formula(text: str, where: str) -> str:
    """``text`` if Excel can hold it, else ExportError naming ``where``."""
    if len(text) > MAX_FORMULA:
        raise ExportError(
            f"xlsx-formulas: {where}: a formula of {len(text)} characters exceeds Excel's limit of {MAX_FORMULA} "
            "(too many input channels or too wide a layer for one cell). Export --to xlsx for the weights instead"
        )
    return text


def check_fits(block: Block, where: str) -> None:
    """ExportError when ``block`` runs past Excel's last row or column."""
    if block.bottom > MAX_ROWS or block.right > MAX_COLUMNS:
        raise ExportError(
            f"xlsx-formulas: {where}: output {block.shape} needs rows up to {block.bottom} and columns up to "
            f"{block.right}, past Excel's {MAX_ROWS} x {MAX_COLUMNS}. The network is too large for a spreadsheet"
        )
