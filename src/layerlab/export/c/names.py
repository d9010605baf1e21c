"""Make names from a model file safe for C: identifiers, comments, file names.

Layer and model names come from files written by anyone. They reach generated C only through
the two functions here:

* ``c_identifier`` keeps ``[A-Za-z0-9_]``, never starts with a digit or an underscore (names
  that start with ``_`` are reserved by C99 7.1.3), never holds ``__``, is at most ``max_len``
  characters (C99 guarantees 31 significant characters for external names) and never equals
  a C keyword.
* ``c_comment`` keeps a conservative set of printable ASCII: no ``*`` or ``/`` (so no
  ``*/`` that would close the comment), no ``?`` (C99 trigraphs such as ``??/``), no
  backslash (line splicing), no quotes, no newlines.

Example: ``a*/ int x; /*`` becomes the identifier ``a_int_x`` and the comment text
``a__ int x; __``.
"""

from __future__ import annotations

import re

# C99 6.4.1 keywords plus names a translation unit of ours uses itself (main, the libc functions
# it calls): a library called `main` or `printf` would clash with them.
C_RESERVED = frozenset(
    """auto break case char const continue default do double else enum extern float for goto if
    inline int long register restrict return short signed sizeof static struct switch typedef union
    unsigned void volatile while _Bool _Complex _Imaginary main printf fprintf fopen fclose fread
    fwrite exit malloc free memcpy memset expf tanhf erff expm1f log1pf fabsf clock""".split()
)

_COMMENT_SAFE = re.compile(r"[^A-Za-z0-9 _.,:;()\[\]{}+=#@!%&^~<>|$-]")


def c_identifier(name: str, fallback: str = "model", max_len: int = 24) -> str:
    """A C identifier made from ``name``: safe, short, deterministic.

    Args:
        name: any text (a model or layer name from a file).
        fallback: used when nothing of ``name`` survives; must itself be a valid identifier.
        max_len: longest result.

    Returns:
        ``[A-Za-z][A-Za-z0-9_]*`` without ``__``, at most ``max_len`` characters, not a keyword.
    """
    text = re.sub(r"[^A-Za-z0-9]+", "_", str(name)).strip("_")
    if not text:
        text = fallback
    if text[0].isdigit():
        text = f"m{text}"
    text = text[:max_len].rstrip("_")
    if text in C_RESERVED:
        text = f"{text}_m"  # keywords and libc names are short: no truncation needed
    return text


def c_comment(text: str, max_len: int = 60) -> str:
    """``text`` reduced to characters that cannot end or escape a C block comment."""
    safe = _COMMENT_SAFE.sub("_", str(text))
    return safe if len(safe) <= max_len else safe[: max_len - 3] + "..."


def unique_identifiers(names: list[str], max_len: int = 24) -> list[str]:
    """``c_identifier`` of each name, with ``_2``, ``_3`` ... appended where two would collide."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        base = c_identifier(name, fallback="layer", max_len=max_len - 4)
        ident = base
        while ident in seen:
            seen[base] += 1
            ident = f"{base}_{seen[base]}"
        seen.setdefault(ident, 1)
        out.append(ident)
    return out
