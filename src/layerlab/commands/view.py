"""``layerlab view MODEL_OR_SPEC``: the network in a browser (a local app, or one static page)."""

from __future__ import annotations

import argparse
import math

from layerlab.commands import non_negative_int, positive_int
from layerlab.commands.spec import add_architecture, add_force
from layerlab.errors import ShapeError

MAX_STATIC_INPUTS = 16


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "view", help="your network in a browser: draw an input, see every layer, click any output cell",
        description="Start a local web app (127.0.0.1 only) that shows the network as a graph with every layer's "
        "Keras arguments and real outputs; draw or pick an input; click an output cell to see the window it read, "
        "the padding and the arithmetic. With --html, write one self-contained page for a few inputs instead.",
    )
    p.add_argument("source", metavar="MODEL_OR_SPEC", help="model file (.h5/.keras/.weights.h5 with --architecture), "
                   "built-in spec name (seed650) or spec file (a spec gets seeded untrained weights)")
    add_architecture(p)
    p.add_argument("--port", type=_port, default=0, help="port on 127.0.0.1, 1-65535 (default: a free one)")
    p.add_argument("--no-browser", action="store_true", help="print the URL, do not open a browser")
    p.add_argument("--html", metavar="OUT", help="write one static page (no server) computed for the chosen inputs")
    p.add_argument("--images", metavar="I,J,...", help="--html: MNIST test images to compute (default 0,1,2,3 for an "
                   "MNIST model, else --random)")
    p.add_argument("--input", metavar="FILE", help="--html: inputs from a .npy/.npz/image file (up to 16)")
    p.add_argument("--random", type=positive_int, default=4, metavar="N", help="--html: N seeded random inputs "
                   "when the model does not take MNIST (default 4)")
    p.add_argument("--scale", type=float, default=None, help="what image pixels 0..255 are divided by (default 255, "
                   "or 1 when the model starts with Rescaling(1/255)); --scale 1 for a model trained on raw pixels")
    p.add_argument("--data-dir", default=None, help="folder with the MNIST files (default: $LAYERLAB_DATA, the cache, "
                   "or a download)")
    p.add_argument("--int8", action="store_true", help="--html: also hold the int8 C export's values of every input "
                   "(the app builds them when its int8 toggle is switched on)")
    p.add_argument("--calibration-data", metavar="FILE", help="real inputs (.npy/.npz/images) to calibrate the int8 C "
                   "export on, for a model that does not take MNIST")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of a spec's untrained weights")
    add_force(p)
    p.set_defaults(func=_view)


def _port(text: str) -> int:
    """argparse type: a TCP port, 0 (any free one) to 65535."""
    value = non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port: give 1 to 65535, or leave --port out for a free one")
    return value


def _images(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ShapeError(f"--images {text!r}: give MNIST test image numbers separated by commas, e.g. 0,1,2") from None
    if not values or len(values) > MAX_STATIC_INPUTS or min(values) < 0:
        raise ShapeError(f"--images {text!r}: give 1 to {MAX_STATIC_INPUTS} image numbers >= 0")
    return values


def _mnist_here(session) -> bool:
    """Whether MNIST loads; when it does not, warn (one line) and let the page use random inputs."""
    import warnings

    from layerlab.errors import DataError, LayerlabWarning

    try:
        session.mnist()
        return True
    except DataError:
        warnings.warn("MNIST was not found (not in $LAYERLAB_DATA or the cache, and no download), so the page holds "
                      "random inputs. Pass --data-dir DIR or set LAYERLAB_DATA=DIR for MNIST test images",
                      LayerlabWarning, stacklevel=2)
        return False


def _view(args: argparse.Namespace) -> int:
    from layerlab.inputs import pixel_scale
    from layerlab.view import open_network, static_runs, write_html
    from layerlab.view.server import Session, serve

    if args.scale is not None and not (args.scale > 0 and math.isfinite(args.scale)):
        raise ShapeError(f"--scale {args.scale}: must be a positive number (pixels are divided by it)")
    net, trained = open_network(args.source, args.architecture, args.seed)
    session = Session(net, args.source, pixel_scale(net.spec, args.scale), trained, data_dir=args.data_dir,
                      calibration_data=args.calibration_data)
    if not args.html:
        if args.images or args.input or args.int8:
            raise ShapeError("--images, --input and --int8 are for a static page; add --html OUT (the app has an int8 toggle)")
        serve(session, port=args.port, open_browser=not args.no_browser)
        return 0
    from layerlab.publish import check_file_target

    inputs = [args.source, args.architecture, args.input, args.calibration_data]
    check_file_target(args.html, inputs=inputs, force=args.force, flag="--html")  # before any work
    if args.images:
        runs = static_runs(session, images=_images(args.images), int8=args.int8)
    elif args.input:
        from pathlib import Path

        from layerlab.inputs import IMAGE_SUFFIXES, read_input

        image = Path(args.input).suffix.lower() in IMAGE_SUFFIXES
        x, labels = read_input(args.input, net.spec, session.scale if image else args.scale)
        runs = static_runs(session, x=x[:MAX_STATIC_INPUTS], labels=None if labels is None else labels[:MAX_STATIC_INPUTS],
                           int8=args.int8)
    elif math.prod(net.spec.input_shape) == 28 * 28 and _mnist_here(session):
        runs = static_runs(session, images=[0, 1, 2, 3], int8=args.int8)
    else:
        runs = static_runs(session, count=args.random, int8=args.int8)
    write_html(args.html, session, runs, force=args.force, inputs=inputs)
    print(f"wrote {args.html}: {net.spec.name}, {len(runs)} input{'s' * (len(runs) != 1)}; open it in a browser")
    return 0
