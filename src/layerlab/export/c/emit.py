"""What the C generators share: templates, literals, const arrays, the pieces of one C file.

Templates are files in ``templates/`` filled with ``string.Template.substitute`` (a missing key
raises). Float literals are written with ``%.9g``, enough digits for every float32 to round-trip.
"""

from __future__ import annotations

import functools
import math
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from layerlab.errors import ExportError
from layerlab.export.c.names import c_comment

TEMPLATES = Path(__file__).parent / "templates"

# C types of the two variants: activations, weights, accumulators.
FLOAT = {"ctype": "float", "wtype": "float", "acc_type": "float"}
INT8 = {"ctype": "int8_t", "wtype": "int8_t", "acc_type": "int32_t"}


@functools.cache
def template(name: str) -> string.Template:
    """The template ``templates/<name>``."""
    return string.Template((TEMPLATES / name).read_text(encoding="utf-8"))


def render(name: str, **values) -> str:
    """Fill template ``name``; every placeholder must be given (KeyError otherwise)."""
    return template(name).substitute({k: str(v) for k, v in values.items()})


@functools.lru_cache(maxsize=1)
def _helpers() -> dict[str, str]:
    text = (TEMPLATES / "helpers.c").read_text(encoding="utf-8")
    parts = re.split(r"^@@ (\w+)\n", text, flags=re.M)
    return {parts[i]: parts[i + 1].rstrip() + "\n" for i in range(1, len(parts), 2)}


def float_literal(value: float) -> str:
    """A C float literal that reads back as exactly ``np.float32(value)``."""
    value = float(np.float32(value))
    if not math.isfinite(value):
        raise ExportError(f"C export: a weight or constant is {value}; only finite numbers can be exported. Fix the model's weights")
    text = f"{value:.9g}"  # %.9g: 9 significant digits round-trip every float32
    if not any(c in text for c in ".e"):
        text += ".0"
    return text + "f"


@dataclass
class Unit:
    """The parts of one generated ``.c`` file, collected while steps are rendered.

    Attributes:
        helpers: names of helper functions used (sections of ``templates/helpers.c``).
        math: whether ``<math.h>`` is needed.
        arrays: const array definitions, in order.
        functions: step functions, in order.
        flash: bytes of const data per step index (weights, tables), for the report.
        scratch: elements of ``conv_rows``, the rows of one pool window of a fused conv + pool.
    """

    helpers: set[str] = field(default_factory=set)
    math: bool = False
    arrays: list[str] = field(default_factory=list)
    functions: list[str] = field(default_factory=list)
    flash: dict[int, int] = field(default_factory=dict)
    scratch: int = 0
    _seen: dict[tuple[str, bytes], str] = field(default_factory=dict)

    def array(self, step: int, ctype: str, name: str, values: np.ndarray, comment: str) -> str:
        """Add ``static const ctype name[n] = {...};`` with a comment; return ``name``.

        Args:
            step: the step index the bytes are charged to in the report.
            ctype: ``float``, ``int8_t``, ``int32_t`` or ``uint8_t``.
            name: the C identifier (already safe).
            values: any shape; written flat in C order.
            comment: what it is: shape and layout (sanitised here).
        """
        flat = np.asarray(values).reshape(-1)
        key = (ctype, np.asarray(flat, np.float64).tobytes())
        if key in self._seen:  # byte-identical data (e.g. two tanh tables): one array
            return self._seen[key]
        self._seen[key] = name
        if ctype == "float":
            items, per_line = [float_literal(v) for v in flat], 6
        else:
            items, per_line = [str(int(v)) for v in flat], 16
        lines = [", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
        body = ",\n    ".join(lines)
        self.arrays.append(f"/* {c_comment(comment, max_len=200)} */\nstatic const {ctype} {name}[{len(items)}] = {{\n    {body}\n}};\n")
        size = {"float": 4, "int32_t": 4, "int8_t": 1, "uint8_t": 1}[ctype]
        self.flash[step] = self.flash.get(step, 0) + size * len(items)
        return name

    def helper(self, *names: str) -> None:
        self.helpers.update(names)
        if {"sigmoid", "softmax"} & set(names):
            self.math = True

    def helper_code(self) -> str:
        """The helpers used, in the order of ``templates/helpers.c``."""
        return "".join(code + "\n" for name, code in _helpers().items() if name in self.helpers)


def window_range(base: str, pad_before: int, pad_after: int, size: int, taps: int) -> tuple[str, str]:
    """C expressions ``(begin, end)`` of the pooling window cells that fall inside ``[0, size)``.

    ``base`` is the C expression of the window's first cell (negative in the padding). A side
    with no padding needs no clipping, so 'valid' windows get expressions the compiler unrolls.
    """
    begin = base if pad_before == 0 else f"{base} > 0 ? {base} : 0"
    end = f"{base} + {taps}" if pad_after == 0 else f"{base} + {taps} < {size} ? {base} + {taps} : {size}"
    return begin, end


def tap_range(base: str, pad_before: int, pad_after: int, size: int, taps: int, dilation: int, unit: Unit) -> tuple[str, str]:
    """C expressions ``(begin, end)`` of the kernel taps ``t`` whose cell ``base + t * dilation`` is inside."""
    if pad_before == 0:
        begin = "0"
    else:
        unit.helper("tap_begin")
        begin = f"ll_tap_begin({base}, {dilation})"
    if pad_after == 0:
        end = str(taps)
    else:
        unit.helper("tap_end")
        end = f"ll_tap_end({base}, {size}, {dilation}, {taps})"
    return begin, end


def shape_text(dims: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"
