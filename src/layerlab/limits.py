"""What a file may make layerlab allocate, named in one place.

Readers check what a file *declares* (an HDF5 dataset's shape x dtype, an archive member's size,
an image's pixels, a spec's parameter count) against these limits before they allocate, so a
42 KB file cannot ask for gigabytes. The limits are generous for small models and can be raised
for a trusted file:

    LAYERLAB_MAX_BYTES=2G layerlab summary big_model.h5

``LAYERLAB_MAX_BYTES`` (default 256M) bounds any one thing a file declares: a weight tensor,
all weights together, an input batch, a decoded image, a spec's parameters (4 bytes each).
Nested documents (JSON, YAML, nntxt) are bounded to ``MAX_DEPTH`` levels.
"""

from __future__ import annotations

import os
import re

from layerlab.errors import LimitError

ENV_MAX_BYTES = "LAYERLAB_MAX_BYTES"
DEFAULT_MAX_BYTES = 256 * 2**20
MAX_DEPTH = 64  # levels of nesting in a JSON / YAML / nntxt document; real ones use under 10
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def max_bytes() -> int:
    """The byte limit in force: ``$LAYERLAB_MAX_BYTES`` (e.g. ``512M``, ``2G``, ``1000000``) or 256 MiB."""
    text = os.environ.get(ENV_MAX_BYTES, "").strip()
    if not text:
        return DEFAULT_MAX_BYTES
    match = re.fullmatch(r"(\d+)\s*([KMGT]?)(?:i?B)?", text, flags=re.IGNORECASE)
    if not match or int(match.group(1)) == 0:
        raise LimitError(f"{ENV_MAX_BYTES}={text!r} is not a size. Use bytes or a unit: {ENV_MAX_BYTES}=512M or 2G")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def size_text(nbytes: int | float) -> str:
    """``nbytes`` for a person: '2.2 GiB', '40 MiB', '12 KiB'."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= size:
            return f"{nbytes / size:.3g} {unit}"
    return f"{int(nbytes)} bytes"


def check_bytes(nbytes: int | float, where: str, what: str) -> None:
    """Refuse before allocating when ``what`` at ``where`` would take more than the limit.

    Raises:
        LimitError: "where: what declares 2.2 GiB, more than the limit of 256 MiB. ..."
    """
    limit = max_bytes()
    if nbytes > limit:
        raise LimitError(
            f"{where}: {what} would take {size_text(nbytes)}, more than the limit of {size_text(limit)}. "
            f"If the file is trusted, raise the limit: {ENV_MAX_BYTES}={_next_unit(nbytes)} layerlab ..."
        )


def _next_unit(nbytes: float) -> str:
    for unit in ("M", "G", "T"):
        value = -(-nbytes // _UNITS[unit])
        if value < 1024:
            return f"{int(value)}{unit}"
    return f"{int(-(-nbytes // _UNITS['T']))}T"


def check_depth(depth: int, where: str) -> None:
    """Refuse a document nested deeper than ``MAX_DEPTH`` (a hostile file, never a real model)."""
    if depth > MAX_DEPTH:
        raise LimitError(f"{where}: nested more than {MAX_DEPTH} levels deep; not a real model document")
