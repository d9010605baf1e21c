"""The ``layerlab`` command: argparse sub-commands, no logic of its own.

Each module in ``layerlab.commands`` defines ``register(subparsers)``, adding one or more
sub-commands whose handler is set with ``parser.set_defaults(func=handler)``. A handler takes
the parsed ``argparse.Namespace`` and returns an exit code (0 on success).

Errors: every error prints one line ("layerlab CMD: ErrorType: what, where, fix") and exits 1
(2 for usage errors, 130 when interrupted): layerlab's own errors as they are, an OS error with
its path, anything else as an internal error to report. Warnings are one line too. ``--debug``
shows tracebacks instead.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import warnings

from layerlab._version import __version__
from layerlab.errors import LayerlabError, LayerlabWarning
from layerlab.text import printable


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="layerlab",
        description="Specify, train, probe, load, export and convert small Keras CNNs.",
    )
    parser.add_argument("--version", action="version", version=f"layerlab {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    import layerlab.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"layerlab.commands.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    where = f"layerlab {args.command}"
    warnings.simplefilter("always", LayerlabWarning)  # every command says it, not only the first in a process
    if not args.debug:
        warnings.showwarning = lambda message, category, *rest, **kw: print(f"{where}: warning: {_line(message)}", file=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{where}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"{where}: {_message(exc)}", file=sys.stderr)
        return 1


def _line(text) -> str:
    """One line, control characters escaped: messages quote names from untrusted files."""
    return printable(" ".join(str(text).split("\n")).strip())


def _message(exc: Exception) -> str:
    """The one line the CLI prints for ``exc``: layerlab's own errors as they are, the rest said plainly."""
    if isinstance(exc, LayerlabError):
        return f"{type(exc).__name__}: {_line(exc)}"
    if isinstance(exc, MemoryError):
        return ("MemoryError: out of memory. An input or file is larger than this machine can hold; "
                "try a smaller batch or a smaller file")
    if isinstance(exc, RecursionError):
        return "LimitError: an input is nested too deeply to read; it is not a real model or spec file"
    if isinstance(exc, OSError):
        where = f" {_line(exc.filename)}" if exc.filename else ""
        return f"OSError:{where}: {_line(exc.strerror or exc)}"
    return (f"internal error ({type(exc).__name__}: {_line(exc)}). This is a bug in layerlab: run the command "
            "again with --debug for the traceback and please report it")


if __name__ == "__main__":
    sys.exit(main())
