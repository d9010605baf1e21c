"""`layerlab export MODEL --to c|csv|json|npz|xlsx|xlsx-formulas --out PATH`: dispatch only."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from layerlab.commands import non_negative_int, positive_int
from layerlab.commands.model import _positive_float
from layerlab.errors import ShapeError
from layerlab.publish import refuse_inputs

FORMATS = ("c", "csv", "json", "npz", "xlsx", "xlsx-formulas")


def _input_image(args: argparse.Namespace, network) -> tuple[np.ndarray, int | None]:
    """One input in the model's input_shape: MNIST test image N, or the first input of --input FILE
    (read as ``predict --input`` reads it; pixels and arrays alike divided by --scale)."""
    if args.input:
        from layerlab.inputs import read_input

        x, labels = read_input(args.input, network.spec, args.scale)
        return x[0], None if labels is None else int(labels[0])
    from layerlab.data import input_for_model, load_mnist

    data = load_mnist(args.data_dir)
    if not 0 <= args.image < len(data.x_test):
        raise ShapeError(f"--image {args.image}: MNIST has test images 0..{len(data.x_test) - 1}")
    pixels, label = data.x_test[args.image], int(data.y_test[args.image])
    from layerlab.inputs import pixel_scale

    return input_for_model(pixels, network.spec, scale=pixel_scale(network.spec, args.scale)), label


def _export(args: argparse.Namespace) -> int:
    from layerlab.modelfile import load

    network = load(args.model, architecture=args.architecture)
    out = Path(args.out)
    inputs = [args.model, args.architecture, args.input]
    refuse_inputs(out, inputs)  # before a long export, not after it
    if args.to == "c":
        from layerlab.export.c import export_c

        report = export_c(
            network, out, name=args.name or network.spec.name, int8=args.int8, calibration=args.calibration,
            verify=not args.no_verify, verify_images=args.verify_images, data_dir=args.data_dir,
            force=args.force, inputs=inputs, scale=args.scale, calibration_data=args.calibration_data,
        )
        print(Path(report).read_text(encoding="utf-8"), end="")
    elif args.to in ("csv", "json", "npz"):
        from layerlab.export.tables import export_tables

        print(f"wrote {export_tables(network, out, args.to, force=args.force, inputs=inputs)}")
    elif args.to == "xlsx":
        from layerlab.export.excel import export_xlsx

        print(f"wrote {export_xlsx(network, out, force=args.force, inputs=inputs)}")
    else:
        from layerlab.export.excel_formulas import export_xlsx_formulas

        image, label = _input_image(args, network)
        print(f"wrote {export_xlsx_formulas(network, out, image, label=label, force=args.force, inputs=inputs)}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="export trained weights: C, CSV/JSON/NPZ, Excel")
    p.add_argument("model", metavar="MODEL", help="a Keras model file (.h5, .keras)")
    p.add_argument("--to", required=True, choices=FORMATS, help="output format")
    from layerlab.commands.spec import add_architecture

    add_architecture(p)
    p.add_argument("--out", required=True, help="output folder (c, csv, json, npz) or file (xlsx)")
    from layerlab.commands.spec import add_force

    add_force(p)
    p.add_argument("--name", help="C: library and function prefix (sanitised)")
    p.add_argument("--int8", action="store_true", help="C: int8 quantised code")
    p.add_argument("--calibration", type=positive_int, default=1000, metavar="N", help="C int8: inputs to calibrate on")
    p.add_argument("--calibration-data", metavar="FILE",
                   help="C: the model's real inputs (.npy/.npz with x [and y], or an image): int8 calibrates on 80%% "
                        "and is checked on the rest; needed for int8 of a model whose input is not a 28x28 MNIST image")
    p.add_argument("--no-verify", action="store_true", help="C: skip compiling and checking against the engine")
    p.add_argument("--verify-images", type=positive_int, default=1000, metavar="N", help="C: MNIST test images to verify on")
    p.add_argument("--image", type=non_negative_int, default=0, metavar="N", help="xlsx-formulas: MNIST test image N as the input")
    p.add_argument("--input", metavar="FILE", help="xlsx-formulas: a .npy/.npz array or an image file instead of --image")
    p.add_argument("--scale", type=_positive_float, default=None,
                   help="divide inputs by this: MNIST pixels (default 255, or 1 for a model that starts with "
                        "Rescaling(1/255)), --input / --calibration-data files (default 255 for images, 1 for arrays)")
    p.add_argument("--data-dir", help="folder with the MNIST files")
    p.set_defaults(func=_export)
