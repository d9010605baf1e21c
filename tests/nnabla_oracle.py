"""nnabla as the oracle for tests/test_nnc.py: run inside the nnabla venv (Python 3.10), never
imported by the test process (nnabla pins numpy 1.26 and protobuf 3.20).

    $NNABLA_PYTHON tests/nnabla_oracle.py JOBS.json RESULTS.json

JOBS.json is a list of jobs; RESULTS.json maps each job's id to {"ok": true, ...} or
{"ok": false, "error": "..."}. Kinds:

* {"id", "kind": "run", "file": .nnp/.nntxt, "network": name or null, "x": in.npy, "y": out.npy}:
  load the file with nnabla's NnpLoader, run the network (default: the first executor's) on x
  and save its single output to y.
* {"id", "kind": "save_h5", "file": .nnp, "h5": out.h5}: nnabla's own parameter.h5 of a file.
* {"id", "kind": "schema", "messages": {"Message": ["field", ...]}}: nnabla's own field numbers
  and types, from nnabla.utils.nnabla_pb2, for comparison with layerlab's schema.
* {"id", "kind": "glorot", "initializer": "NormalConvolutionGlorot", "shape": [...], "seed": n}:
  the sigma nnabla's formula gives and the sample std and max |w| / sigma of a parameter that
  nnabla itself initialises from that NNC initializer.
"""

from __future__ import annotations

import json
import sys
import traceback


def _run(job):
    import nnabla as nn
    import numpy as np
    from nnabla.utils.nnp_graph import NnpLoader

    nn.clear_parameters()
    nnp = NnpLoader(job["file"])
    name = job.get("network")
    if not name:
        name = _executor_network(job["file"]) or nnp.get_network_names()[0]
    x = np.load(job["x"])
    net = nnp.get_network(name, batch_size=x.shape[0])
    if len(net.inputs) != 1 or len(net.outputs) != 1:
        raise ValueError(f"expected one input and one output, found {list(net.inputs)} -> {list(net.outputs)}")
    xv = next(iter(net.inputs.values()))
    yv = next(iter(net.outputs.values()))
    xv.d = x
    yv.forward(clear_buffer=True)
    np.save(job["y"], np.array(yv.d, dtype=np.float32))
    return {"network": name, "x_shape": list(xv.shape), "y_shape": list(yv.shape)}


def _save_h5(job):
    import nnabla as nn
    from nnabla.utils.nnp_graph import NnpLoader

    nn.clear_parameters()
    nnp = NnpLoader(job["file"])
    nnp.get_network(_executor_network(job["file"]) or nnp.get_network_names()[0], batch_size=1)
    nn.save_parameters(job["h5"])
    return {"parameters": list(nn.get_parameters(grad_only=False))}


def _executor_network(path):
    import zipfile

    from google.protobuf import text_format
    from nnabla.utils import nnabla_pb2

    proto = nnabla_pb2.NNablaProtoBuf()
    if path.endswith(".nnp"):
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if name.endswith((".nntxt", ".prototxt")):
                    text_format.Merge(archive.read(name).decode(), proto)
    else:
        with open(path) as fh:
            text_format.Merge(fh.read(), proto)
    return proto.executor[0].network_name if proto.executor else None


def _schema(job):
    from nnabla.utils import nnabla_pb2

    out = {}
    for message, fields in job["messages"].items():
        desc = nnabla_pb2.DESCRIPTOR.message_types_by_name.get(message)
        if desc is None:
            out[message] = None
            continue
        out[message] = {}
        for field in fields:
            f = desc.fields_by_name.get(field)
            out[message][field] = None if f is None else {
                "number": f.number, "type": f.type, "repeated": f.label == f.LABEL_REPEATED,
                "message": f.message_type.name if f.message_type else None,
            }
    return {"fields": out}


def _glorot(job):
    import numpy as np
    from nnabla.core.graph_def import _create_initializer
    from nnabla.initializer import calc_normal_std_glorot
    from nnabla.utils import nnabla_pb2

    shape = tuple(job["shape"])
    var = nnabla_pb2.Variable(name="W", type="Parameter")
    var.shape.dim.extend(shape)
    var.initializer.type = job["initializer"]
    var.initializer.multiplier = 1.0
    init = _create_initializer(var, np.random.RandomState(job.get("seed", 0)))
    w = np.asarray(init(shape), dtype=np.float64)
    if job["initializer"] == "NormalConvolutionGlorot":
        sigma = calc_normal_std_glorot(shape[-3], shape[0], kernel=shape[-2:])
    else:
        sigma = calc_normal_std_glorot(shape[0], int(np.prod(shape[1:])))
    return {"sigma": float(sigma), "std": float(w.std()), "mean": float(w.mean()), "max_over_sigma": float(np.abs(w).max() / sigma)}


KINDS = {"run": _run, "schema": _schema, "glorot": _glorot, "save_h5": _save_h5}


def main(argv):
    jobs_path, results_path = argv[1], argv[2]
    with open(jobs_path) as fh:
        jobs = json.load(fh)
    results = {}
    for job in jobs:
        try:
            results[job["id"]] = {"ok": True, **KINDS[job["kind"]](job)}
        except Exception as exc:  # every failure is reported to the test, not raised here
            results[job["id"]] = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    with open(results_path, "w") as fh:
        json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
