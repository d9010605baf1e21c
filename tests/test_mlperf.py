"""The MLPerf Tiny reference models (../shared/models/mlperf_tiny) against tf_keras, their oracle.

Each .h5 was saved by tf.keras 2.x. layerlab loads it with h5py alone; tf_keras 2.21 loads the
same file. On 64 seeded uniform random inputs in the model's input range the engine must agree
within 1e-5 of the output's largest magnitude, with the same class for the classifiers, and the
summary's parameter count must equal Keras' count_params.
"""

from __future__ import annotations

import numpy as np
import pytest

import layerlab
from conftest import require_module

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


@pytest.mark.tfkeras
def test_a_mobilenet_saved_by_tf_keras_matches(tf_keras, tmp_path):
    """A network not in the repository: tf_keras' MobileNet (depthwise-separable, ReLU6, asymmetric
    ZeroPadding2D, GlobalAveragePooling2D with keepdims, Reshape), random weights, saved as .h5."""
    model = tf_keras.applications.MobileNet(input_shape=(64, 64, 3), alpha=0.25, weights=None, classes=7)
    rng = np.random.default_rng(3)
    values = []
    for w in model.weights:  # BN variances positive; everything else of order 1 after each layer
        name = w.name
        if "moving_variance" in name or "gamma" in name:
            values.append(rng.uniform(0.5, 1.5, w.shape))
        elif "kernel" in name:
            values.append(rng.normal(0, 1, w.shape) / np.sqrt(np.prod(w.shape[:-1])))
        else:
            values.append(rng.normal(0, 0.2, w.shape))
    model.set_weights([v.astype(np.float32) for v in values])
    model.save(tmp_path / "mobilenet.h5")
    net = layerlab.load(tmp_path / "mobilenet.h5")
    assert net.spec.param_count == model.count_params()
    assert {"DepthwiseConv2D", "ReLU", "GlobalAveragePooling2D", "ZeroPadding2D"} <= {l.type for l in net.spec.layers}
    x = seeded_inputs((64, 64, 3), -1.0, 1.0, seed=4, n=16)
    ref = model.predict(x, verbose=0)
    got = net.predict(x)
    assert float(np.max(np.abs(got - ref))) <= 1e-5 * float(np.max(np.abs(ref)))
    assert np.array_equal(got.argmax(1), ref.argmax(1))


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
