"""Names from model files made safe for where they go: a terminal, a CSV cell, a file name.

A model file is untrusted input: a layer called ``"\\x1b]0;pwned\\x07"`` must not retitle the
user's terminal, one called ``"=HYPERLINK(...)"`` must not run in their spreadsheet, one
called ``"../../x"`` must not pick where a file goes. Each target has one function here, used
by every writer. (C identifiers and comments have their own rules in ``export/c/names.py``.)
"""

from __future__ import annotations

import re

# First characters that make Excel / LibreOffice run a CSV cell as a formula (OWASP's list);
# "'" is escaped too so that un-escaping is exact.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


def printable(text: str) -> str:
    """``text`` safe to print: control and other unprintable characters shown escaped (``\\x1b``).

    >>> printable("conv\\x1b[2J")
    'conv\\\\x1b[2J'
    """
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(text))


def csv_text(text: str) -> str:
    """``text`` safe for a CSV cell that a spreadsheet may open: a formula start gets a leading
    apostrophe (OWASP's CSV-injection advice). ``csv_untext`` undoes it exactly."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def csv_untext(text: str) -> str:
    """The inverse of ``csv_text``."""
    return text[1:] if text.startswith("'") else text


def file_stem(text: str, limit: int = 40) -> str:
    """``text`` as part of a file name: only ``A-Za-z0-9_.-``, no leading or trailing dots, at
    most ``limit`` characters, never empty (``'layer'``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("._")[:limit] or "layer"
