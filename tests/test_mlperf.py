"""The MLPerf Tiny reference models (../shared/models/mlperf_tiny) against tf_keras, their oracle.

Each .h5 was saved by tf.keras 2.x. layerlab loads it with h5py alone; tf_keras 2.21 loads the
same file. On 64 seeded uniform random inputs in the model's input range the engine must agree
within 1e-5 of the output's largest magnitude, with the same class for the classifiers, and the
summary's parameter count must equal Keras' count_params.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import layerlab
from conftest import require_module, require_tool
from layerlab import engine

MODELS = {
    # file: (input low, input high, classifier, standard MAC count)
    "pretrainedResnet.h5": (0.0, 255.0, True, 12_501_632),  # ResNet-8: 12.5 M
    "str_ww_ref_model.h5": (0.0, 0.94, True, None),
    "ad01.h5": (-85.0, 15.0, False, 264_192),  # 640*128 + 3*128*128 + 128*8 + 8*128 + 3*128*128 + 128*640
}
SAMPLES = 64


def seeded_inputs(shape, low, high, seed=0, n=SAMPLES):
    return np.random.default_rng(seed).uniform(low, high, (n, *shape)).astype(np.float32)


@pytest.fixture(scope="module")
def tf_keras():
    require_module("tf_keras")
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tf_keras

    return tf_keras


@pytest.fixture(scope="module")
def mlperf_dir(shared_dir):
    path = shared_dir / "models" / "mlperf_tiny"
    if not path.is_dir():
        pytest.fail(f"{path} is missing: the MLPerf Tiny models are part of ../shared")
    return path


@pytest.mark.tfkeras
@pytest.mark.parametrize("name", list(MODELS))
def test_engine_matches_tf_keras(tf_keras, mlperf_dir, name):
    low, high, classifier, macs = MODELS[name]
    net = layerlab.load(mlperf_dir / name)
    kmodel = tf_keras.models.load_model(mlperf_dir / name, compile=False)
    assert net.spec.param_count == kmodel.count_params()
    if macs is not None:
        assert net.spec.macs == macs
    x = seeded_inputs(net.spec.input_shape, low, high)
    ref = kmodel.predict(x, verbose=0, batch_size=SAMPLES)
    got = net.predict(x)
    assert got.shape == ref.shape
    scale = float(np.max(np.abs(ref)))
    assert float(np.max(np.abs(got - ref))) <= 1e-5 * scale
    if classifier:
        assert np.array_equal(got.argmax(1), ref.argmax(1))
    # The plain per-layer path agrees too (the fast path covers chains only).
    from layerlab import engine

    plain = engine.run(net.spec, net.weights, x[:8], reference=True)
    assert float(np.max(np.abs(plain - ref[:8]))) <= 1e-5 * scale


@pytest.mark.parametrize("name", list(MODELS))
def test_loads_with_h5py_alone(mlperf_dir, name):
    """No TensorFlow, no Keras: the loader and engine import numpy and h5py only."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, layerlab\n"
        f"net = layerlab.load({str(mlperf_dir / name)!r})\n"
        "y = net.predict(np.zeros((2, *net.spec.input_shape), np.float32))\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras', 'jax', 'torch')]\n"
        "print(y.shape, bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def plausible_weights(model, seed: int) -> None:
    """Random weights whose activations stay of order 1 through a deep network: BN and
    Normalization variances and BN scales in [0.5, 1.5], kernels scaled by their fan-in, sample
    counts kept, the rest small."""
    rng = np.random.default_rng(seed)
    values = []
    for w in model.weights:
        name, shape = w.name, tuple(w.shape)
        if "count" in name:
            values.append(np.asarray(w.numpy()))
        elif "variance" in name or "gamma" in name:
            values.append(rng.uniform(0.5, 1.5, shape))
        elif "kernel" in name:
            values.append(rng.normal(0, 1, shape) / np.sqrt(np.prod(shape[:-1])))
        else:
            values.append(rng.normal(0, 0.2, shape))
    model.set_weights([v if v.dtype.kind in "iu" else v.astype(np.float32) for v in values])


def assert_matches(net, model, x) -> None:
    """The engine's output within 1e-5 of Keras' largest magnitude, with the same classes, on the
    fast path and on the plain one."""
    ref = np.asarray(model.predict(x, verbose=0))
    for got in (net.predict(x), engine.run(net.spec, net.weights, x, reference=True)):
        assert float(np.max(np.abs(got - ref))) <= 1e-5 * float(np.max(np.abs(ref)))
        assert np.array_equal(got.argmax(1), ref.argmax(1))


@pytest.mark.tfkeras
def test_a_mobilenet_saved_by_tf_keras_matches(tf_keras, tmp_path):
    """A network not in the repository: tf_keras' MobileNet (depthwise-separable, ReLU6, asymmetric
    ZeroPadding2D, GlobalAveragePooling2D with keepdims, Reshape), random weights, saved as .h5."""
    model = tf_keras.applications.MobileNet(input_shape=(64, 64, 3), alpha=0.25, weights=None, classes=7)
    plausible_weights(model, 3)
    model.save(tmp_path / "mobilenet.h5")
    net = layerlab.load(tmp_path / "mobilenet.h5")
    assert net.spec.param_count == model.count_params()
    assert {"DepthwiseConv2D", "ReLU", "GlobalAveragePooling2D", "ZeroPadding2D"} <= {l.type for l in net.spec.layers}
    assert_matches(net, model, seeded_inputs((64, 64, 3), -1.0, 1.0, seed=4, n=16))


@pytest.mark.tfkeras
@pytest.mark.cc
@pytest.mark.slow
def test_a_mobilenet_v3_saved_by_tf_keras_matches_and_exports_to_c(tf_keras, tmp_path):
    """tf_keras' MobileNetV3Small: squeeze-and-excite gates, a (1, 1, C) map multiplying an
    (H, W, C) one, and hard sigmoid / hard swish written as TensorFlow arithmetic with numbers
    (TFOpLambda ``x + 3`` and ``x * (1 / 6)``), which layerlab reads as Rescaling layers."""
    model = tf_keras.applications.MobileNetV3Small(input_shape=(48, 48, 3), alpha=0.75, weights=None, classes=6,
                                                   include_preprocessing=False)
    plausible_weights(model, 5)
    model.save(tmp_path / "mobilenet_v3.h5")
    net = layerlab.load(tmp_path / "mobilenet_v3.h5")
    assert net.spec.param_count == model.count_params()
    types = [l.type for l in net.spec.layers]
    assert types.count("Rescaling") == sum(l.__class__.__name__ == "TFOpLambda" for l in model.layers) > 0
    gates = [l for l in net.spec.infos if l.layer.type == "Multiply" and len(set(l.input_shapes)) > 1]
    assert gates and all(min(l.input_shapes)[:2] == (1, 1) for l in gates)
    x = seeded_inputs((48, 48, 3), -1.0, 1.0, seed=6, n=8)
    assert_matches(net, model, x)
    # C float: each gate stretched by a remap; the export compiles it and checks it against the
    # engine, just checked against Keras, on these inputs, and writes nothing if they differ
    require_tool("cc")
    from layerlab.export.c import export_c

    np.save(tmp_path / "x.npy", x)
    report = export_c(net, tmp_path / "c", calibration_data=tmp_path / "x.npy").read_text()
    assert re.search(r"float32 on 8 inputs of x\.npy: max \|C - engine\| = \S+ \(limit .*same predicted class 8/8: PASS", report)
    assert report.count("remap") >= len(gates)


@pytest.mark.keras
def test_an_efficientnet_saved_by_keras3_matches(keras, tmp_path):
    """Keras 3's EfficientNetB0: Rescaling and Normalization (its preprocessing, statistics as
    weights), swish, depthwise convs, and squeeze-and-excite gates reshaped to (1, 1, C)."""
    model = keras.applications.EfficientNetB0(input_shape=(48, 48, 3), weights=None, classes=5)
    plausible_weights(model, 9)
    model.save(tmp_path / "efficientnet.keras")
    net = layerlab.load(tmp_path / "efficientnet.keras")
    assert net.spec.param_count == model.count_params()
    assert {"Normalization", "Rescaling", "DepthwiseConv2D", "Multiply"} <= {l.type for l in net.spec.layers}
    assert_matches(net, model, seeded_inputs((48, 48, 3), 0.0, 255.0, seed=10, n=4))


@pytest.mark.keras
def test_a_mobilenet_v3_saved_by_keras3_matches(keras, tmp_path):
    """Keras 3's MobileNetV3Small with its Rescaling preprocessing: the hard swish is Keras 3's
    activation 'hard_silu', the hard sigmoid keras.ops arithmetic with numbers on the model's
    tensors (``x + 3.0``, ``x * (1 / 6)``), and the squeeze-and-excite gates broadcast."""
    model = keras.applications.MobileNetV3Small(input_shape=(48, 48, 3), alpha=0.75, weights=None, classes=6)
    plausible_weights(model, 7)
    model.save(tmp_path / "mobilenet_v3.keras")
    net = layerlab.load(tmp_path / "mobilenet_v3.keras")
    assert net.spec.param_count == model.count_params()
    assert "hard_silu" in {getattr(l, "activation", None) for l in net.spec.layers}
    assert sum(l.type == "Rescaling" for l in net.spec.layers) > 1  # the preprocessing and the ops
    assert_matches(net, model, seeded_inputs((48, 48, 3), 0.0, 255.0, seed=8, n=8))


@pytest.mark.tfkeras
@pytest.mark.nnabla
def test_nnc_export_runs_in_nnabla_like_tf_keras_as_nnp_and_as_sdcproj(tf_keras, mlperf_dir, tmp_path):
    """Each model as an .nnp and as an NNC project (.sdcproj, parameters from the .nnp): nnabla
    runs both and agrees with tf_keras within 1e-5 of the output's largest magnitude; the project
    imports back to the graph the .nnp gives, and writing it again gives a project of the same
    graph, which is then stable byte for byte."""
    from conftest import require_env
    from layerlab.cli import main
    from layerlab.nnc import files
    from layerlab.nnc.exporter import export_network
    from layerlab.nnc.importer import import_file, import_network
    from layerlab.nnc.sdcproj import read_sdcproj, sdcproj_text
    from nnc_helpers import graph_of, run_oracle

    python = require_env("NNABLA_PYTHON")
    jobs, refs = [], {}
    for name, (low, high, _, _) in MODELS.items():
        stem = name.removesuffix(".h5")
        nnp, project = tmp_path / f"{stem}.nnp", tmp_path / f"{stem}.sdcproj"
        assert main(["nnc", "export", str(mlperf_dir / name), "--out", str(nnp)]) == 0
        assert main(["nnc", "export", str(mlperf_dir / name), "--out", str(project)]) == 0
        nnc, _ = read_sdcproj(project, params=nnp)
        (tmp_path / f"{stem}_project.nnp").write_bytes(files.nnp_bytes(nnc.proto, nnc.parameters))
        from_project, from_nnp = import_network(nnc).network, import_file(str(nnp)).network
        a, b = from_project.spec.to_dict(), from_nnp.spec.to_dict()
        assert a["input_shape"] == b["input_shape"] and graph_of(from_project.spec) == graph_of(from_nnp.spec)
        original = layerlab.load(mlperf_dir / name)
        assert from_nnp.spec.param_count == original.spec.param_count
        proto, parameters, _ = export_network(from_project)
        again = sdcproj_text(proto, parameters, "again")  # layers in NNC's (breadth-first) order now:
        (tmp_path / f"{stem}_again.sdcproj").write_bytes(again.encode("utf-8"))  # the same graph, and stable
        back = import_network(read_sdcproj(tmp_path / f"{stem}_again.sdcproj", params=nnp)[0]).network
        assert graph_of(back.spec) == graph_of(from_project.spec)
        proto, parameters, _ = export_network(back)
        assert sdcproj_text(proto, parameters, "again") == again
        x = seeded_inputs(original.spec.input_shape, low, high, n=8)
        kmodel = tf_keras.models.load_model(mlperf_dir / name, compile=False)
        refs[stem] = kmodel.predict(x, verbose=0)
        x_nnc = x.transpose(0, 3, 1, 2) if x.ndim == 4 else x  # the exported network reads N-C-H-W
        np.save(tmp_path / f"{stem}_x.npy", x_nnc)
        np.testing.assert_array_equal(from_project.predict(x_nnc), from_nnp.predict(x_nnc))
        for kind in ("nnp", "project"):
            file = nnp if kind == "nnp" else tmp_path / f"{stem}_project.nnp"
            jobs.append({"id": f"{stem}_{kind}", "kind": "run", "file": str(file), "network": None,
                         "x": str(tmp_path / f"{stem}_x.npy"), "y": str(tmp_path / f"{stem}_{kind}_y.npy")})
    results = run_oracle(python, jobs, tmp_path)
    assert all(r["ok"] for r in results.values()), {k: r.get("error") for k, r in results.items()}
    for stem, ref in refs.items():
        scale = float(np.max(np.abs(ref)))
        for kind in ("nnp", "project"):
            y = np.load(tmp_path / f"{stem}_{kind}_y.npy").reshape(ref.shape)
            assert float(np.max(np.abs(y - ref))) <= 1e-5 * scale, (stem, kind, float(np.max(np.abs(y - ref))) / scale)
