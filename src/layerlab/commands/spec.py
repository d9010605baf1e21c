"""`layerlab spec show|check` and `layerlab summary`: the network without Keras."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from layerlab.errors import SpecError
from layerlab.spec import Model
from layerlab.specfile import load_spec

MODEL_SUFFIXES = (".h5", ".hdf5", ".keras")


def load_model_or_spec(source: str, architecture: str | None = None) -> Model:
    """A spec from a built-in name, a spec file (.json/.yaml) or a Keras model file (h5py only);
    ``architecture`` gives the architecture of a weights-only file (JSON, .keras or a spec)."""
    path = Path(source)
    if path.suffix.lower() in MODEL_SUFFIXES or architecture:
        if not path.is_file():
            raise SpecError(f"{source}: no such model file")
        from layerlab.modelfile import load

        return load(path, architecture=architecture).spec
    return load_spec(source)


def add_architecture(parser: argparse.ArgumentParser) -> None:
    """The --architecture option every command that reads a model file takes."""
    parser.add_argument("--architecture", metavar="FILE",
                        help="architecture for a weights-only file: model.to_json() JSON, .keras, or a layerlab spec")


def add_force(parser: argparse.ArgumentParser) -> None:
    """The --force option of every command that writes an output (see layerlab.publish)."""
    parser.add_argument("--force", action="store_true",
                        help="replace an existing output file, or files in the --out folder that layerlab did not "
                             "write (or that were edited); never an input")


def _show(args: argparse.Namespace) -> int:
    model = load_model_or_spec(args.source, args.architecture)
    if args.format == "yaml":
        from layerlab.errors import require

        text = require("yaml", "yaml", "YAML spec files").safe_dump(model.to_dict(), sort_keys=False)
    else:
        text = model.to_json()
    if args.out:
        model.save(args.out, force=args.force, inputs=[args.source, args.architecture])
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def _check(args: argparse.Namespace) -> int:
    model = load_model_or_spec(args.source, args.architecture)
    print(f"{args.source}: valid - {len(model.layers)} layers, {model.param_count:,} parameters, output {model.output_shape}")
    return 0


def _summary(args: argparse.Namespace) -> int:
    from layerlab.summary import summary_text

    sys.stdout.write(summary_text(load_model_or_spec(args.source, args.architecture)))
    return 0


def register(subparsers) -> None:
    spec = subparsers.add_parser("spec", help="show or check a network spec")
    spec_sub = spec.add_subparsers(dest="spec_command", metavar="ACTION", required=True)
    show = spec_sub.add_parser("show", help="print a spec (built-in name, spec file or model file) as JSON or YAML")
    show.add_argument("source", help="seed650, a .json/.yaml spec file, or a .h5/.keras model file")
    add_architecture(show)
    show.add_argument("--format", choices=("json", "yaml"), default="json")
    show.add_argument("--out", help="write the spec to this .json/.yaml file instead of printing it")
    add_force(show)
    show.set_defaults(func=_show)
    check = spec_sub.add_parser("check", help="validate a spec and print its size")
    check.add_argument("source")
    add_architecture(check)
    check.set_defaults(func=_check)

    summary = subparsers.add_parser("summary", help="per-layer shapes, parameters, MACs and activation sizes")
    summary.add_argument("source", metavar="MODEL_OR_SPEC", help="seed650, a spec file, or a .h5/.keras model file")
    add_architecture(summary)
    summary.set_defaults(func=_summary)
