"""What both workbooks share: Excel's sheet-name rules, text cells that never run, colour scales.

Names from a model file are text to show, never code: a layer called ``=HYPERLINK("x")`` or
``+cmd|' /C calc'!A0`` becomes a string cell (``t="inlineStr"``, with Excel's quote prefix so
that editing the cell keeps it text), and a sheet title that obeys Excel's rules: at most 31
characters, none of ``[ ] : * ? / \\``, not starting or ending with an apostrophe, not the reserved
name ``History``, unique without regard to case. Formulas reference sheets only through
``sheet_ref``, which always quotes the title.
"""

from __future__ import annotations

import re

from layerlab.errors import require

MAX_SHEET_TITLE = 31
# Excel refuses these in a sheet title; control characters are not legal XML at all.
_BAD_TITLE_CHARS = re.compile(r"[\[\]:*?/\\\x00-\x1f\x7f]")
# Characters XML 1.0 cannot hold (openpyxl raises IllegalCharacterError on them).
_ILLEGAL_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_RESERVED_TITLES = ("history",)
MAX_CELL_TEXT = 32767

# Diverging colours (blue, white, red) for weights: the sign is what a reader looks for.
NEGATIVE = "5B7DB8"
ZERO = "FFFFFF"
POSITIVE = "D0553F"
# Heat map for feature maps: low to high within each grid.
HEAT_LOW = "FFFFFF"
HEAT_MID = "F8C471"
HEAT_HIGH = "C0392B"
# The input image: white paper, black ink, as MNIST digits look.
INK_LOW = "FFFFFF"
INK_HIGH = "000000"


def openpyxl():
    """openpyxl, or one clear MissingExtraError naming the extra that installs it."""
    return require("openpyxl", "excel", "Excel export")


def load_written_workbook(path, sheet: str, command: str):
    """Open a workbook layerlab wrote (cached values), checking it has ``sheet``.

    Raises:
        ExportError: not a readable .xlsx, or not one written by ``layerlab export --to COMMAND``.
    """
    from pathlib import Path

    from layerlab.errors import ExportError

    path = Path(path)
    try:
        wb = openpyxl().load_workbook(path, data_only=True)
    except Exception as exc:  # openpyxl raises zipfile, KeyError and its own errors alike
        raise ExportError(f"{path}: not a readable .xlsx ({type(exc).__name__}: {exc})") from None
    if sheet not in wb.sheetnames:
        raise ExportError(f"{path}: no '{sheet}' sheet; not a workbook written by layerlab export --to {command}")
    return wb


def _utf16_len(text: str) -> int:
    # Excel counts UTF-16 code units: a character outside the BMP takes two.
    return len(text.encode("utf-16-le")) // 2


def _truncate(text: str, limit: int) -> str:
    while _utf16_len(text) > limit:
        text = text[:-1]
    return text


def sheet_title(name: str, used: set[str]) -> str:
    """A legal, unique Excel sheet title for ``name``; records it (lower-cased) in ``used``.

    Args:
        name: any text, e.g. a layer name from a model file.
        used: lower-cased titles taken so far in this workbook; updated.

    Returns:
        ``name`` with forbidden characters replaced by ``_``, apostrophes stripped from both
        ends, cut to 31 characters, and ``" (2)"``, ``" (3)"``... appended when taken.
    """
    base = _BAD_TITLE_CHARS.sub("_", name).strip("'").strip() or "sheet"
    base = _truncate(base, MAX_SHEET_TITLE).rstrip("'") or "sheet"
    title, n = base, 1
    while title.lower() in used or title.lower() in _RESERVED_TITLES:
        n += 1
        suffix = f" ({n})"
        title = _truncate(base, MAX_SHEET_TITLE - len(suffix)).rstrip("'") + suffix
    used.add(title.lower())
    return title


def sheet_ref(title: str) -> str:
    """``title`` quoted for use in a formula: ``'it''s'`` for a sheet called ``it's``."""
    return "'" + title.replace("'", "''") + "'"


def set_text(cell, text: str) -> None:
    """Write ``text`` into an openpyxl cell as a string that no spreadsheet runs as a formula."""
    text = _ILLEGAL_XML.sub("\ufffd", str(text))[:MAX_CELL_TEXT]
    cell.value = text
    # openpyxl turns any str that starts with '=' into a formula: force the string type back.
    cell.data_type = "s"
    if text[:1] in ("=", "+", "-", "@"):
        cell.quotePrefix = True  # Excel keeps it text even after the user edits the cell


def diverging_rule():
    """Blue below zero, white at zero, red above: for weights."""
    rule = openpyxl().formatting.rule
    return rule.ColorScaleRule(
        start_type="min", start_color=NEGATIVE, mid_type="num", mid_value=0, mid_color=ZERO,
        end_type="max", end_color=POSITIVE,
    )


def heat_rule():
    """White to red from the grid's minimum to its maximum: for feature maps."""
    rule = openpyxl().formatting.rule
    return rule.ColorScaleRule(
        start_type="min", start_color=HEAT_LOW, mid_type="percentile", mid_value=50, mid_color=HEAT_MID,
        end_type="max", end_color=HEAT_HIGH,
    )


def ink_rule():
    """White paper, black ink: for the input image."""
    rule = openpyxl().formatting.rule
    return rule.ColorScaleRule(start_type="min", start_color=INK_LOW, end_type="max", end_color=INK_HIGH)


def bold(cell) -> None:
    """Make a label cell bold."""
    cell.font = openpyxl().styles.Font(bold=True)
