"""``layerlab nnc import`` and ``layerlab nnc export``: Neural Network Console networks <-> Keras.

    layerlab nnc import NETWORK.nnp [--network NAME] [--data-format channels_last] --out model.keras
    layerlab nnc export model.h5 --out NETWORK.nnp
    layerlab nnc export seed650 --out seed650.nnp          # a spec: NNC-initialised weights
"""

from __future__ import annotations

import argparse
from pathlib import Path

from layerlab.commands import non_negative_int
from layerlab.commands.spec import add_force
from layerlab.errors import NNCError
from layerlab.publish import publish_file, refuse_inputs

KERAS_SUFFIXES = (".keras", ".h5")
SPEC_SUFFIXES = (".json", ".yaml", ".yml")
NNC_SUFFIXES = (".nnp", ".nntxt")


def register(subparsers) -> None:
    parser = subparsers.add_parser("nnc", help="convert Sony Neural Network Console (nnabla) networks to Keras and back")
    sub = parser.add_subparsers(dest="nnc_command", metavar="ACTION", required=True)

    imp = sub.add_parser("import", help="NNC .nnp / .nntxt / .sdcproj -> Keras model or spec, with a mapping table")
    imp.add_argument("source", help="an .nnp archive, an .nntxt network file, or an NNC project file (.sdcproj)")
    imp.add_argument("--params", metavar="NNP", help=".sdcproj: take the trained parameters from this .nnp (matched by name "
                     "and shape) instead of NNC's initialisation")
    imp.add_argument("--seed", type=non_negative_int, default=0, help=".sdcproj: seed of NNC's random initialisers")
    imp.add_argument("--network", default=None, help="network to convert (default: the executor's, e.g. MainRuntime; in a project, its executor's or Main)")
    imp.add_argument("--data-format", default="channels_first", choices=("channels_first", "channels_last"),
                     help="layout of the Keras model (NNC's own is channels_first)")
    imp.add_argument("--out", required=True, help="model.keras, model.h5 (with weights), spec.json / spec.yaml, or (from an "
                     ".sdcproj) network.nnp / .nntxt that nnabla runs")
    add_force(imp)
    imp.set_defaults(func=run_import)

    exp = sub.add_parser("export", help="Keras model file or spec -> NNC .nnp that nnabla runs identically")
    exp.add_argument("source", help="a Keras model file (.h5, .keras) or a spec (built-in name, .json, .yaml)")
    exp.add_argument("--out", required=True, help="NETWORK.nnp (or .nntxt with the parameters inline), or PROJECT.sdcproj "
                     "(the network as an NNC project, without parameters)")
    add_force(exp)
    exp.add_argument("--network-name", default="MainRuntime", help="name of the NNC network (default MainRuntime)")
    exp.add_argument("--seed", type=non_negative_int, default=0, help="seed of the NNC initialisation of a spec without weights")
    exp.set_defaults(func=run_export)


def run_import(args: argparse.Namespace) -> int:
    from layerlab.nnc.importer import import_file, import_network

    out = Path(args.out)
    suffix = out.suffix.lower()
    project = Path(args.source).suffix.lower() == ".sdcproj"
    allowed = KERAS_SUFFIXES + SPEC_SUFFIXES + (NNC_SUFFIXES if project else ())
    if suffix not in allowed:
        raise NNCError(f"--out {args.out}: unknown output type {suffix or '(none)'!r}. Use {', '.join(allowed)}")
    if args.params and not project:
        raise NNCError(f"--params {args.params}: only an .sdcproj takes its parameters from another file; {args.source} has its own")
    refuse_inputs(out, [args.source, args.params])
    if project:
        from layerlab.nnc import files
        from layerlab.nnc.sdcproj import read_sdcproj

        nnc, notes = read_sdcproj(args.source, params=args.params, seed=args.seed, network=args.network)
        for note in notes:
            print(note)
        if not args.params:
            print(f"note: parameters are NNC's initialisation (seed {args.seed}); pass the trained .nnp with --params")
        if suffix in NNC_SUFFIXES:  # the project as the network NNC's runtime runs
            data = (files.to_text(nnc.proto) + files.to_text(files.parameters_message(nnc.parameters))).encode() \
                if suffix == ".nntxt" else files.nnp_bytes(nnc.proto, nnc.parameters)
            with publish_file(out, inputs=[args.source, args.params], force=args.force) as tmp:
                tmp.write_bytes(data)
            print(f"wrote {out} (network 'Main', executor 'Runtime')")
            return 0
        result = import_network(nnc, data_format=args.data_format)
    else:
        result = import_file(args.source, network=args.network, data_format=args.data_format)
    spec = result.network.spec
    print(f"network '{result.network_name}': input '{result.input_variable}' {spec.input_shape} -> output "
          f"'{result.output_variable}' {spec.output_shape}, {spec.param_count} parameters, {args.data_format}")
    print(result.table())
    if suffix in SPEC_SUFFIXES:
        spec.save(out, force=args.force, inputs=[args.source])
        print(f"wrote {out} (architecture only; write .keras or .h5 to keep the weights)")
        return 0
    from layerlab.keras_build import build_keras, without_tensorflow

    # build_keras builds with zeros when weights are given (no random kernels compiled only to
    # be overwritten) and gives the layers the spec's initializers back, so the file retrains with NNC's.
    with without_tensorflow():  # Keras on JAX: no TensorFlow start-up lines
        kmodel = build_keras(spec, result.network.weights)
        with publish_file(out, inputs=[args.source], force=args.force) as tmp:
            kmodel.save(tmp)
    print(f"wrote {out}")
    return 0


def _export_sdcproj(net, out: Path, args: argparse.Namespace):
    """The network as a Neural Network Console project (``nnc.sdcproj.sdcproj_text``)."""
    from layerlab.nnc.exporter import export_network
    from layerlab.nnc.sdcproj import sdcproj_text
    from layerlab.publish import publish_file

    proto, params, rows = export_network(net, "MainRuntime")
    text = sdcproj_text(proto, params, str(args.source))
    with publish_file(out, inputs=[args.source], force=args.force) as tmp:
        tmp.write_bytes(text.encode("utf-8"))
    return rows


def run_export(args: argparse.Namespace) -> int:
    from layerlab.network import Network
    from layerlab.nnc.exporter import export_file, nnc_init, rows_table
    from layerlab.spec import CHANNELS_LAST

    out = Path(args.out)
    if out.suffix.lower() not in (".nnp", ".nntxt", ".sdcproj"):
        raise NNCError(f"--out {args.out}: expected an .nnp (or .nntxt) file name, or .sdcproj for an NNC project")
    source = Path(args.source)
    note = ""
    if source.suffix.lower() in KERAS_SUFFIXES:
        import layerlab

        net = layerlab.load(source)
    else:
        from layerlab.specfile import load_spec

        spec = load_spec(args.source)
        net = Network(spec, nnc_init(spec, seed=args.seed), source=str(args.source))
        note = (f"note: {args.source} is a spec without weights: parameters are NNC's default initialisation "
                f"(Glorot normal, biases 0), seed {args.seed}")
    if out.suffix.lower() == ".sdcproj":
        rows = _export_sdcproj(net, out, args)
        note = (note + "\n" if note else "") + (f"note: a project holds no parameters: also export --out {out.with_suffix('.nnp').name}, "
                                                 f"then `layerlab nnc import {out.name} --params {out.with_suffix('.nnp').name}` reads both")
    else:
        rows = export_file(net, out, network_name=args.network_name, force=args.force, inputs=[args.source])
    print(rows_table(rows))
    if note:
        print(note)
    if any(getattr(l, "data_format", None) == CHANNELS_LAST for l in net.spec.layers) and len(net.spec.input_shape) == 3:
        print("note: the NNC network takes N-C-H-W input; transpose channels_last images with (0, 3, 1, 2)")
    elif any(getattr(l, "data_format", None) == CHANNELS_LAST for l in net.spec.layers) and len(net.spec.input_shape) == 2:
        print("note: the NNC network takes N-C-L input; transpose channels_last sequences with (0, 2, 1)")
    print(f"wrote {out}")
    return 0
