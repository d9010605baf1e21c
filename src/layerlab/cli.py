"""The ``layerlab`` command: argparse sub-commands, no logic of its own.

Each module in ``layerlab.commands`` defines ``register(subparsers)``, adding one or more
sub-commands whose handler is set with ``parser.set_defaults(func=handler)``. A handler takes
the parsed ``argparse.Namespace`` and returns an exit code (0 on success).

Errors: a ``LayerlabError`` (or a ``KeyboardInterrupt``) prints one line and exits non-zero;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from layerlab._version import __version__
from layerlab.errors import LayerlabError


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
    try:
        return int(args.func(args) or 0)
    except LayerlabError as exc:
        if args.debug:
            raise
        print(f"layerlab {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"layerlab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
