"""``layerlab layers``: the support matrix, layer type x backend."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "layers", help="which layer types each backend supports (the support matrix)",
        description="Print the support matrix: every layer type layerlab knows against every backend (loader, "
        "engine, Keras build, trainer, probe, C float/int8, Excel, NNC). 'yes*' has a caveat and '-' a reason: "
        "--reasons lists them.",
    )
    p.add_argument("--reasons", action="store_true", help="list the reason for every '-' and the caveat of every 'yes*'")
    p.set_defaults(func=_layers)


def _layers(args: argparse.Namespace) -> int:
    from layerlab.registry import support_matrix

    print(support_matrix(reasons=args.reasons), end="")
    return 0
