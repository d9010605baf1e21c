"""CLI sub-commands: one module per feature, each with ``register(subparsers)``.

Shared argument types live here: a count or seed that makes no sense is a usage error (exit 2)
with one line, never a traceback later or a silent reinterpretation (``--train-limit -5``
would otherwise slice off the last five images).
"""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a count of images, epochs, runs...)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be a whole number of at least 1")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (a seed, an index, a count that may be zero)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be a whole number of at least 0")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
