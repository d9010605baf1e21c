"""``layerlab data where|fetch``: show where MNIST is found, or fetch and verify it."""

from __future__ import annotations

import argparse
import os
import sys

from layerlab.data.download import MIRRORS, TIMEOUT_S
from layerlab.data.mnist import ENV_VAR, MNIST_FILES, find_mnist, load_mnist, locate, search_path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="find, fetch and verify the MNIST files")
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    where = actions.add_parser("where", help="list the folders searched for MNIST and which one is used")
    where.add_argument("--data-dir", metavar="DIR", help="a folder to look in first")
    where.set_defaults(func=_where)

    fetch = actions.add_parser("fetch", help="load MNIST, downloading it into the cache if needed, and verify it")
    fetch.add_argument("--data-dir", metavar="DIR", help="a folder to look in first")
    fetch.add_argument("--timeout", type=float, default=TIMEOUT_S, metavar="S", help="network timeout in seconds")
    fetch.add_argument(
        "--mirror",
        action="append",
        metavar="URL",
        help="a base URL to download from instead of the default mirrors (repeatable)",
    )
    fetch.set_defaults(func=_fetch)


def _where(args: argparse.Namespace) -> int:
    lines = [
        f"{option:<15} {folder}  ({len(locate(folder))} of {len(MNIST_FILES)} files)"
        for option, folder in search_path(args.data_dir)
    ]
    if not os.environ.get(ENV_VAR):
        lines.insert(1 if args.data_dir is not None else 0, f"{'$' + ENV_VAR:<15} (not set)")
    folder = find_mnist(args.data_dir)
    lines.append(f"uses: {folder}" if folder else "uses: none (`layerlab data fetch` downloads MNIST into the cache)")
    print("\n".join(lines))
    return 0 if folder else 1


def _fetch(args: argparse.Namespace) -> int:
    data = load_mnist(
        args.data_dir,
        mirrors=args.mirror or MIRRORS,
        timeout=args.timeout,
        log=lambda line: print(line, file=sys.stderr),
    )
    print(
        f"MNIST ok in {data.source}: train {data.x_train.shape} test {data.x_test.shape}, "
        f"content MD5s match the published files"
    )
    return 0
