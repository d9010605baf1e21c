"""layerlab.load against files written by real Keras: Keras 3 (JAX) in-process, Keras 2 (tf_keras)
in a subprocess, and two old files written by other people. Keras is the oracle: specs, weights
and predictions are compared with what Keras built, stored and computed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

import layerlab
from conftest import random_weights
from layerlab import spec as S
from layerlab.errors import ModelFileError, ShapeError, UnsupportedLayerError
from layerlab.modelfile import read

HERE = Path(__file__).resolve().parent
REAL_224 = "models/keras2/keras224_sequential_mnist.h5"
REAL_231_WEIGHTS = "models/keras2/keras231_channels_first_mnist_weights.h5"
REAL_231_JSON = "models/keras2/keras231_channels_first_mnist_model.json"
TOLERANCE = 1e-5


# Keras 3 ---------------------------------------------------------------------------------------

CF_SPEC = S.Model(name="cf", input_shape=(2, 9, 9), layers=(
    S.Conv2D(name="conv_a", filters=4, kernel_size=3, strides=2, padding="same", data_format="channels_first", activation="tanh"),
    S.ZeroPadding2D(name="pad", padding=((1, 0), (2, 1)), data_format="channels_first"),
    S.Conv2D(name="conv_b", filters=3, kernel_size=(2, 3), dilation_rate=(2, 1), data_format="channels_first",
             activation="elu", use_bias=False),
    S.BatchNormalization(name="bn", axis=1),
    S.MaxPooling2D(name="pool_a", pool_size=3, strides=1, padding="same", data_format="channels_first"),
    S.AveragePooling2D(name="pool_b", pool_size=2, padding="same", data_format="channels_first"),
    S.Activation(name="act", activation="selu"),
    S.Flatten(name="flat", data_format="channels_first"),
    S.Dropout(name="drop", rate=0.3),
    S.Dense(name="dense_a", units=12, activation="softplus"),
    S.Reshape(name="reshape", target_shape=(3, 4)),
    S.Flatten(name="flat_b"),
    S.Rescaling(name="rescale", scale=0.5, offset=0.1),
    S.Dense(name="dense_b", units=5, activation="softmax"),
))
GRAPH_SPEC = S.Model(name="graph", input_shape=(8, 7, 3), layers=(
    S.Normalization(name="norm"),  # adapted: mean, variance and count as weights
    S.Conv2D(name="a", filters=4, kernel_size=3, padding="same", activation="relu"),
    S.Conv2D(name="b", filters=4, kernel_size=1, activation="gelu", inputs=("input",)),
    S.Add(name="sum", inputs=("a", "b")),
    S.BatchNormalization(name="bn", epsilon=0.01),
    S.Concatenate(name="cat", inputs=("bn", "a")),
    S.MaxPooling2D(name="pool", pool_size=2, strides=2),
    S.Flatten(name="flat"),
    S.Dense(name="out", units=3, activation="sigmoid"),
))
K3_FORMATS = ("keras", "unzipped keras", "h5", "weights+json", "weights+keras", "weights+spec")


@pytest.fixture(scope="session")
def k3_files(keras, tmp_path_factory):
    """Keras 3 models built from specs, saved in every format, with Keras' predictions."""
    from layerlab.keras_build import build_keras

    out = {}
    folder = tmp_path_factory.mktemp("keras3")
    for seed, spec in enumerate((CF_SPEC, GRAPH_SPEC)):
        weights = random_weights(spec, seed)
        model = build_keras(spec, weights)
        base = folder / spec.name
        model.save(f"{base}.keras")
        with zipfile.ZipFile(f"{base}.keras") as archive:
            archive.extractall(f"{base}_unzipped")
        model.save(f"{base}.h5")
        model.save_weights(f"{base}.weights.h5")
        Path(f"{base}.json").write_text(model.to_json())
        spec.save(f"{base}_spec.json")
        x = np.random.default_rng(10 + seed).normal(size=(5, *spec.input_shape)).astype(np.float32)
        out[spec.name] = dict(spec=spec, weights=weights, base=base, x=x, y=np.asarray(model.predict(x, verbose=0)))
    return out


def _k3_load(entry, fmt):
    base = entry["base"]
    return {
        "keras": lambda: read(f"{base}.keras"),
        "unzipped keras": lambda: read(f"{base}_unzipped"),
        "h5": lambda: read(f"{base}.h5"),
        "weights+json": lambda: read(f"{base}.weights.h5", architecture=f"{base}.json"),
        "weights+keras": lambda: read(f"{base}.weights.h5", architecture=f"{base}.keras"),
        "weights+spec": lambda: read(f"{base}.weights.h5", architecture=f"{base}_spec.json"),
    }[fmt]()


def assert_same_weights(loaded, expected):
    assert sorted(loaded) == sorted(expected)
    for layer, arrays in expected.items():
        assert list(loaded[layer]) == list(arrays), layer
        for name, array in arrays.items():
            np.testing.assert_array_equal(loaded[layer][name], array, err_msg=f"{layer}/{name}")


@pytest.mark.keras
@pytest.mark.parametrize("fmt", K3_FORMATS)
@pytest.mark.parametrize("model", ["cf", "graph"])
def test_keras3_spec_and_weights(k3_files, model, fmt):
    entry = k3_files[model]
    loaded = _k3_load(entry, fmt)
    assert loaded.network.spec == entry["spec"]
    assert_same_weights(loaded.network.weights, entry["weights"])
    assert loaded.generation == 3


@pytest.mark.keras
@pytest.mark.parametrize("fmt", K3_FORMATS)
@pytest.mark.parametrize("model", ["cf", "graph"])
def test_keras3_predictions_match_keras(k3_files, model, fmt):
    entry = k3_files[model]
    y = _k3_load(entry, fmt).network.predict(entry["x"])
    assert y.shape == entry["y"].shape
    assert np.max(np.abs(y - entry["y"])) <= TOLERANCE


@pytest.mark.keras
def test_keras3_handwritten_functional(keras, tmp_path):
    """Input not called 'input', activation layers, and Keras 3's own hard_sigmoid."""
    L = keras.layers
    inp = keras.Input((6, 5, 2), name="img")
    h = L.Conv2D(3, 3, activation="hard_sigmoid", name="conv")(inp)
    h = L.ReLU(max_value=6.0, name="relu6")(h)
    h = L.LeakyReLU(negative_slope=0.2, name="leaky")(h)
    h = L.Flatten(name="flat")(h)
    h = L.Dense(4, activation="swish", name="dense")(h)
    out = L.Softmax(name="soft")(h)
    model = keras.Model(inp, out, name="hand")
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(0, 1.5, w.shape).astype(np.float32) for w in model.weights])
    model.save(tmp_path / "hand.keras")
    net = layerlab.load(tmp_path / "hand.keras")
    assert [getattr(l, "activation", None) for l in net.spec.layers] == [
        "hard_sigmoid", None, "leaky_relu", None, "silu", "softmax"]
    assert net.spec.layers[1] == S.ReLU(name="relu6", max_value=6.0)
    x = rng.normal(0, 2, (6, 6, 5, 2)).astype(np.float32)
    assert np.max(np.abs(net.predict(x) - model.predict(x, verbose=0))) <= TOLERANCE


@pytest.mark.keras
def test_keras3_arithmetic_with_numbers_is_a_rescaling(keras, tmp_path):
    """keras.ops arithmetic of a tensor and a number in a functional model (a node of class 'Add'
    of module keras.src.ops.numpy, the number in its args, before or after the tensor) is a
    Rescaling; a number divided by the tensor, or another keras.ops call, is refused by name."""
    L = keras.layers
    inp = keras.Input((6, 5, 3), name="img")
    a = 0.5 * ((3.0 - ((inp + 3.0) - 2.0)) * 2.0) / 4.0
    c = L.Conv2D(4, 3, padding="same", activation="hard_silu", name="conv")(a)
    g = L.Conv2D(4, 1, activation="sigmoid", name="gate")(L.GlobalAveragePooling2D(keepdims=True, name="gap")(c))
    m = L.Multiply(name="excite")([g, c])  # the (1, 1, 4) gate first
    out = L.Dense(3, name="out")(L.Flatten(name="fl")(L.Maximum(name="max")([m, L.Conv2D(1, 1, name="one")(m)])))
    model = keras.Model(inp, out)
    rng = np.random.default_rng(5)
    model.set_weights([rng.normal(0, 0.7, w.shape).astype(np.float32) for w in model.weights])
    model.save(tmp_path / "ops.keras")
    net = layerlab.load(tmp_path / "ops.keras")
    assert [(l.scale, l.offset) for l in net.spec.layers if l.type == "Rescaling"] == [
        (1.0, 3.0), (1.0, -2.0), (-1.0, 3.0), (2.0, 0.0), (0.5, 0.0), (0.25, 0.0)]
    x = rng.normal(0, 2, (5, 6, 5, 3)).astype(np.float32)
    assert np.max(np.abs(net.predict(x) - model.predict(x, verbose=0))) <= TOLERANCE
    vec = keras.Input((4,))
    keras.Model(vec, L.Dense(2)(4.0 / vec)).save(tmp_path / "reciprocal.keras")
    with pytest.raises(UnsupportedLayerError, match=r"'true_divide\w*' \(TrueDivide\): 4\.0 / x is not a scaling of x"):
        layerlab.load(tmp_path / "reciprocal.keras")
    keras.Model(vec, L.Dense(2)(keras.ops.sqrt(vec))).save(tmp_path / "sqrt.keras")
    with pytest.raises(UnsupportedLayerError, match=r"the keras\.ops call 'Sqrt' has no layerlab equivalent; .*\(x \+ c"):
        layerlab.load(tmp_path / "sqrt.keras")


@pytest.mark.keras
def test_keras3_early_layouts(k3_files, tmp_path):
    """Early Keras 3 wrote legacy .h5 weight names without prefix ('kernel') and .weights.h5
    groups without the 'name' attribute: only the class-name path says which layer is which."""
    entry = k3_files["graph"]
    h5 = tmp_path / "early.h5"
    shutil.copy(f"{entry['base']}.h5", h5)
    with h5py.File(h5, "r+") as f:
        for layer in f["model_weights"].values():
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in layer.attrs["weight_names"]]
            if not names:
                continue
            for name in names:
                data = layer[name][()]
                del layer[name]
                layer[name.split("/")[-1]] = data
            layer.attrs["weight_names"] = [n.split("/")[-1].encode() for n in names]
    assert_same_weights(layerlab.load(h5).weights, entry["weights"])
    weights = tmp_path / "early.weights.h5"
    shutil.copy(f"{entry['base']}.weights.h5", weights)
    with h5py.File(weights, "r+") as f:
        groups = []
        f.visititems(lambda name, obj: groups.append(obj) if isinstance(obj, h5py.Group) else None)
        for group in groups:
            group.attrs.pop("name", None)
        assert "layers/conv2d_1/vars" in f and "name" not in f["layers/conv2d_1/vars"].attrs
    assert_same_weights(layerlab.load(weights, architecture=f"{entry['base']}.json").weights, entry["weights"])


# Keras 2 (tf_keras) -----------------------------------------------------------------------------

K2_FORMATS = {
    "h5": ("{n}.h5", None),
    "save_weights+to_json": ("{n}_weights.h5", "{n}.json"),
    "keras": ("{n}.keras", None),
    "weights.h5+to_json": ("{n}.weights.h5", "{n}.json"),
}


@pytest.fixture(scope="session")
def k2_dir(tmp_path_factory):
    """Keras 2 files written by tf_keras in a separate process (TensorFlow stays out of this one)."""
    from conftest import require_module

    require_module("tf_keras")
    out = tmp_path_factory.mktemp("keras2")
    result = subprocess.run([sys.executable, str(HERE / "fixtures" / "make_tfkeras_files.py"), str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def _k2(k2_dir, name, fmt):
    path, arch = K2_FORMATS[fmt]
    return read(k2_dir / path.format(n=name), architecture=arch and k2_dir / arch.format(n=name))


def _stored_weights(io, net):
    return {layer: {n: io[f"{layer}/{i}"] for i, n in enumerate(arrays)} for layer, arrays in net.weights.items()}


@pytest.mark.tfkeras
@pytest.mark.parametrize("fmt", list(K2_FORMATS))
@pytest.mark.parametrize("name", ["k2_seq", "k2_fun"])
def test_keras2_files(k2_dir, name, fmt):
    loaded = _k2(k2_dir, name, fmt)
    io = np.load(k2_dir / f"{name}_io.npz")
    assert loaded.generation == 2
    assert_same_weights(loaded.network.weights, _stored_weights(io, loaded.network))
    assert sum(a.size for arrays in loaded.network.weights.values() for a in arrays.values()) == sum(
        io[k].size for k in io.files if "/" in k)
    y = loaded.network.predict(io["x"])
    assert np.max(np.abs(y - io["y"])) <= TOLERANCE


@pytest.mark.tfkeras
def test_keras2_functional_spec(k2_dir):
    spec = layerlab.load(k2_dir / "k2_fun.h5").spec
    by_name = {l.name: l for l in spec.layers}
    assert by_name["c2"].inputs == ("rescale",)  # not the previous layer: named
    assert by_name["add"].inputs == ("c1", "c2") and by_name["cat"].inputs == ("relu6", "leaky")
    assert by_name["relu6"] == S.ReLU(name="relu6", max_value=6.0)
    assert (by_name["leaky"].activation, by_name["sm"].activation) == ("leaky_relu", "softmax")
    assert by_name["rescale"] == S.Rescaling(name="rescale", scale=0.5, offset=-0.25)
    assert spec.input_shape == (8, 7, 3)


@pytest.mark.tfkeras
@pytest.mark.parametrize("fmt", list(K2_FORMATS))
def test_keras2_hard_sigmoid_is_keras2s(k2_dir, fmt):
    """Keras 2's hard_sigmoid is clip(0.2x + 0.5, 0, 1), Keras 3's relu6(x + 3) / 6."""
    loaded = _k2(k2_dir, "k2_hsig", fmt)
    assert loaded.network.spec.layers[0].activation == "hard_sigmoid_keras2"
    io = np.load(k2_dir / "k2_hsig_io.npz")
    assert np.max(np.abs(loaded.network.predict(io["x"]) - io["y"])) <= TOLERANCE


@pytest.mark.tfkeras
@pytest.mark.parametrize("fmt", list(K2_FORMATS))
def test_keras2_arithmetic_with_numbers_and_broadcasting_merges(k2_dir, fmt):
    """tf.keras' TFOpLambda arithmetic with a number (``x + 3``, ``x - 2``, ``3 - x``, ``x * 2``,
    ``0.5 * x``, ``x / 4``) is read as Rescaling layers, and Multiply and Subtract broadcast a
    size-1 axis as tf.keras does."""
    loaded = _k2(k2_dir, "k2_ops", fmt)
    layers = loaded.network.spec.layers
    assert layers[0] == S.Normalization(name="norm")  # adapted: its statistics are weights
    assert 1.0 < float(loaded.network.weights["norm"]["mean"].mean()) < 3.0
    assert [(l.scale, l.offset) for l in layers if l.type == "Rescaling"] == [
        (1.0, 3.0), (1.0, -2.0), (-1.0, 3.0), (2.0, 0.0), (0.5, 0.0), (0.25, 0.0)]
    shapes = {i.layer.name: i.input_shapes for i in loaded.network.spec.infos}
    assert shapes["excite"] == ((6, 5, 4), (1, 1, 4)) and shapes["sub"] == ((6, 5, 1), (6, 5, 4))
    io = np.load(k2_dir / "k2_ops_io.npz")
    assert np.max(np.abs(loaded.network.predict(io["x"]) - io["y"])) <= TOLERANCE


@pytest.mark.tfkeras
def test_theano_kernels_are_flipped(k2_dir, tmp_path):
    """A Keras 2 theano file stores true-convolution kernels; flipping them back must give the
    TensorFlow model's kernels and predictions exactly."""
    theano = tmp_path / "theano.h5"
    shutil.copy(k2_dir / "k2_seq.h5", theano)
    with h5py.File(theano, "r+") as f:
        for group in (f, f["model_weights"]):
            group.attrs["backend"] = "theano"
        for layer in ("conv_a", "conv_b"):
            kernel = f[f"model_weights/{layer}/{layer}/kernel:0"]
            kernel[...] = kernel[()][::-1, ::-1]
    io = np.load(k2_dir / "k2_seq_io.npz")
    loaded = read(theano)
    assert loaded.backend == "theano"
    np.testing.assert_array_equal(loaded.network.weights["conv_a"]["kernel"], io["conv_a/0"])
    np.testing.assert_array_equal(loaded.network.weights["conv_b"]["kernel"], io["conv_b/0"])
    assert np.max(np.abs(loaded.network.predict(io["x"]) - io["y"])) <= TOLERANCE
    with h5py.File(theano, "r+") as f:  # the same file claiming tensorflow is read as stored
        f.attrs["backend"] = "tensorflow"
        f["model_weights"].attrs["backend"] = "tensorflow"
    assert not np.array_equal(layerlab.load(theano).weights["conv_a"]["kernel"], io["conv_a/0"])


@pytest.mark.tfkeras
def test_keras20_bare_list_sequential(k2_dir, tmp_path):
    """Keras 2.0-2.2 wrote a Sequential's config as a bare list, with no InputLayer entry."""
    old = tmp_path / "old.h5"
    shutil.copy(k2_dir / "k2_seq.h5", old)
    with h5py.File(old, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        layers = [l for l in config["config"]["layers"] if l["class_name"] != "InputLayer"]
        layers[0]["config"]["batch_input_shape"] = [None, 9, 10, 2]
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": layers})
        f.attrs["keras_version"] = "2.1.6"
    loaded = read(old)
    assert loaded.network.spec.layers == layerlab.load(k2_dir / "k2_seq.h5").spec.layers
    io = np.load(k2_dir / "k2_seq_io.npz")
    assert np.max(np.abs(loaded.network.predict(io["x"]) - io["y"])) <= TOLERANCE


# Real files written by other people ---------------------------------------------------------------

def _mnist_test(mnist_dir):
    from layerlab.data import load_mnist

    data = load_mnist(mnist_dir, download=False)
    return data.x_test, data.y_test


def test_real_keras224_spec(shared_dir):
    loaded = read(shared_dir / REAL_224)
    spec = loaded.network.spec
    assert (loaded.kind, loaded.keras_version, loaded.generation) == ("h5 model", "2.2.4", 2)
    assert spec.input_shape == (28, 28, 1)
    assert [l.type for l in spec.layers] == ["Conv2D", "Activation", "MaxPooling2D", "Conv2D", "Activation",
                                              "MaxPooling2D", "Flatten", "Dense", "Activation"]
    assert spec.param_count == 3 * 3 * 64 + 64 + 3 * 3 * 64 * 32 + 32 + 1568 * 10 + 10


def test_real_keras231_spec(shared_dir):
    net = layerlab.load(shared_dir / REAL_231_WEIGHTS, architecture=shared_dir / REAL_231_JSON)
    assert net.spec.input_shape == (1, 28, 28)
    assert net.spec.layers[0].data_format == "channels_first"
    assert net.spec.layer("flatten_1") == S.Flatten(name="flatten_1", data_format="channels_first")
    assert net.spec.layers[0].kernel_initializer == "glorot_uniform"  # VarianceScaling(1, fan_avg, uniform)


@pytest.mark.mnist
@pytest.mark.parametrize("path, architecture, divide, accuracy", [
    (REAL_224, None, 1.0, 0.9848),            # raw pixels 0-255, as its author trained it
    (REAL_231_WEIGHTS, REAL_231_JSON, 255.0, 0.9899),
])
def test_real_files_reproduce_accuracy(shared_dir, mnist_dir, path, architecture, divide, accuracy):
    net = layerlab.load(shared_dir / path, architecture=architecture and shared_dir / architecture)
    x_test, y_test = _mnist_test(mnist_dir)
    x = (x_test.astype(np.float32) / np.float32(divide)).reshape(len(x_test), *net.spec.input_shape)
    predicted = net.predict(x).argmax(axis=1)
    assert np.count_nonzero(predicted == y_test) == round(accuracy * len(y_test))


def test_loading_never_imports_keras_or_tensorflow(shared_dir):
    code = (
        "import sys, numpy as np, layerlab\n"
        f"m = layerlab.load({str(shared_dir / REAL_231_WEIGHTS)!r}, architecture={str(shared_dir / REAL_231_JSON)!r})\n"
        "m.predict(np.random.default_rng(0).normal(size=(2, 1, 28, 28)).astype(np.float32))\n"
        f"m = layerlab.load({str(shared_dir / REAL_224)!r})\n"
        "m.trace(np.random.default_rng(0).normal(size=(2, 28, 28, 1)).astype(np.float32))\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('tensorflow', 'keras', 'jax', 'tf_keras'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr[-2000:]


# Bad input -------------------------------------------------------------------------------------------

@pytest.fixture()
def real_h5(shared_dir, tmp_path):
    """A writable copy of the real Keras 2.2.4 file."""
    path = tmp_path / "model.h5"
    shutil.copy(shared_dir / REAL_224, path)
    path.chmod(0o644)
    return path


def _edit_config(path, edit):
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        edit(config["config"]["layers"])
        f.attrs["model_config"] = json.dumps(config)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match=r"nothere\.h5: no such file"):
        layerlab.load(tmp_path / "nothere.h5")


def test_not_a_model_file(tmp_path):
    path = tmp_path / "noise.h5"
    path.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(ModelFileError, match=r"noise\.h5: not a Keras model file \(neither HDF5 nor a \.keras zip"):
        layerlab.load(path)


def test_truncated_h5(real_h5):
    data = real_h5.read_bytes()
    real_h5.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"model\.h5: truncated or corrupt HDF5 file"):
        layerlab.load(real_h5)


def test_corrupt_weight_data(real_h5):
    with h5py.File(real_h5, "r") as f:
        offset = f["model_weights/dense_1/dense_1/kernel:0"].id.get_offset()
    with open(real_h5, "r+b") as fh:  # keep the metadata, cut the file inside the dense kernel
        fh.truncate(offset + 100)
    with pytest.raises(ModelFileError, match=r"model\.h5.*(truncated|corrupt)"):
        layerlab.load(real_h5)


def test_truncated_keras_archive(tmp_path):
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps({"class_name": "Sequential", "config": {"layers": []}}))
        archive.writestr("model.weights.h5", b"x" * 5000)
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(ModelFileError, match=r"m\.keras: truncated or corrupt \.keras archive"):
        layerlab.load(path)


def test_zip_without_config(tmp_path):
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ModelFileError, match=r"no config\.json in the archive"):
        layerlab.load(path)


def test_non_keras_hdf5(tmp_path):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((3, 4))
    with pytest.raises(ModelFileError, match=r"data\.h5: an HDF5 file, but not a Keras model"):
        layerlab.load(path)


def test_weights_only_needs_architecture(shared_dir):
    with pytest.raises(ModelFileError, match=r"holds weights only.*architecture="):
        layerlab.load(shared_dir / REAL_231_WEIGHTS)


def test_json_alone_is_not_a_model(shared_dir):
    with pytest.raises(ModelFileError, match=r"is an architecture \(JSON\) without weights"):
        layerlab.load(shared_dir / REAL_231_JSON)


def test_missing_layer_weights(real_h5):
    with h5py.File(real_h5, "r+") as f:
        del f["model_weights/dense_1"]
        names = [n for n in f["model_weights"].attrs["layer_names"] if n != b"dense_1"]
        f["model_weights"].attrs["layer_names"] = names
    with pytest.raises(ModelFileError, match=r"model\.h5: no weights for layer\(s\) \['dense_1'\]"):
        layerlab.load(real_h5)


def test_missing_weight(real_h5):
    with h5py.File(real_h5, "r+") as f:
        f["model_weights/conv2d_2"].attrs["weight_names"] = [b"conv2d_2/kernel:0"]
    with pytest.raises(ModelFileError, match=r"model\.h5: layer 'conv2d_2' needs 2 weights \['kernel', 'bias'\], the file holds 1"):
        layerlab.load(real_h5)


def test_wrongly_shaped_weight_names_the_file(real_h5):
    with h5py.File(real_h5, "r+") as f:
        del f["model_weights/dense_1/dense_1/bias:0"]
        f["model_weights/dense_1/dense_1/bias:0"] = np.zeros(11, np.float32)
    with pytest.raises(ModelFileError, match=r"model\.h5: layer 'dense_1' \(Dense\) weight 'bias' has shape \(11,\), expected \(10,\)"):
        layerlab.load(real_h5)


def test_unknown_layer_type_is_named(real_h5):
    _edit_config(real_h5, lambda layers: layers[1].update(class_name="GRU"))
    with pytest.raises(UnsupportedLayerError, match=r"'activation_1' \(GRU\): layer type 'GRU' is not supported\. "
                                                    r"Supported Keras layers: InputLayer, Conv2D, .*Dense"):
        layerlab.load(real_h5)


def test_lambda_layer_is_refused(real_h5):
    def make_lambda(layers):
        layers[1].update(class_name="Lambda", config={"name": "activation_1", "function": ["4wEAAAAAAAAA", None, None],
                                                      "function_type": "lambda"})
    _edit_config(real_h5, make_lambda)
    with pytest.raises(UnsupportedLayerError, match=r"Lambda layers hold Python code .* never executes code from a model file"):
        layerlab.load(real_h5)


def test_other_tensorflow_calls_are_refused_by_name(real_h5):
    _edit_config(real_h5, lambda layers: layers[1].update(
        class_name="TFOpLambda", config={"name": "activation_1", "function": "math.reduce_mean"}))
    with pytest.raises(UnsupportedLayerError, match=r"TFOpLambda 'math\.reduce_mean' \(a TensorFlow call in the model\) "
                                                    r"has no layerlab equivalent"):
        layerlab.load(real_h5)


def test_unsupported_activation_is_named(real_h5):
    _edit_config(real_h5, lambda layers: layers[1]["config"].update(activation="mish"))
    with pytest.raises(UnsupportedLayerError, match=r"activation 'mish' is not supported"):
        layerlab.load(real_h5)


def test_undefined_input_shape(real_h5):
    _edit_config(real_h5, lambda layers: layers[0]["config"].update(batch_input_shape=[None, None, None, 1]))
    with pytest.raises(ModelFileError, match=r"input shape \(None, None, 1\) is not fully defined"):
        layerlab.load(real_h5)


def test_wrong_input_shape(shared_dir):
    net = layerlab.load(shared_dir / REAL_224)
    with pytest.raises(ShapeError, match=r"input shape \(2, 1, 28, 28\) does not fit"):
        net.predict(np.zeros((2, 1, 28, 28), np.float32))


def test_architecture_from_another_instance_matches_by_position(shared_dir, tmp_path):
    """Keras' default load_weights pairs layers with weights by position when names differ (a
    to_json from a second instance of the model says conv2d_2 where the weights say conv2d_1)."""
    config = json.loads((shared_dir / REAL_231_JSON).read_text())
    for layer in config["config"]["layers"]:
        layer["config"]["name"] = layer["config"]["name"].replace("_1", "_7").replace("_2", "_8")
    renamed = tmp_path / "renamed.json"
    renamed.write_text(json.dumps(config))
    original = layerlab.load(shared_dir / REAL_231_WEIGHTS, architecture=shared_dir / REAL_231_JSON)
    moved = layerlab.load(shared_dir / REAL_231_WEIGHTS, architecture=renamed)
    assert [l.name for l in moved.spec.layers] == ["conv2d_7", "max_pooling2d_7", "dropout_7", "flatten_7", "dense_7", "dense_8"]
    for old, new in (("conv2d_1", "conv2d_7"), ("dense_1", "dense_7"), ("dense_2", "dense_8")):
        for name, array in original.weights[old].items():
            np.testing.assert_array_equal(moved.weights[new][name], array)


def test_architecture_as_dict_or_spec(shared_dir):
    config = json.loads((shared_dir / REAL_231_JSON).read_text())
    from_dict = layerlab.load(shared_dir / REAL_231_WEIGHTS, architecture=config)
    from_spec = layerlab.load(shared_dir / REAL_231_WEIGHTS, architecture=from_dict.spec)
    assert from_dict.spec == from_spec.spec
    assert_same_weights(from_spec.weights, from_dict.weights)


def _keras1_files(tmp_path, rng):
    """A Keras 1 Sequential as Keras 1 wrote it: to_json with Keras 1 argument names, and
    save_weights with (filters, in, h, w) kernels, '<layer>_W:0' names and no version attributes."""
    import json

    import h5py

    arch = {"class_name": "Sequential", "config": [
        {"class_name": "Convolution2D", "config": {
            "name": "convolution2d_1", "nb_filter": 3, "nb_row": 3, "nb_col": 2, "border_mode": "same",
            "subsample": [2, 1], "dim_ordering": "th", "activation": "relu", "init": "glorot_uniform", "bias": True,
            "batch_input_shape": [None, 2, 7, 6]}},
        {"class_name": "Flatten", "config": {"name": "flatten_1"}},
        {"class_name": "Dense", "config": {"name": "dense_1", "output_dim": 4, "activation": "softmax",
                                           "init": "glorot_uniform", "bias": True}},
    ]}
    (tmp_path / "k1.json").write_text(json.dumps(arch))
    weights = {
        "convolution2d_1": [("convolution2d_1_W:0", rng.normal(0, 0.5, (3, 2, 3, 2))), ("convolution2d_1_b:0", rng.normal(0, 0.5, (3,)))],
        "dense_1": [("dense_1_W:0", rng.normal(0, 0.3, (3 * 4 * 6, 4))), ("dense_1_b:0", rng.normal(0, 0.3, (4,)))],
    }
    with h5py.File(tmp_path / "k1_weights.h5", "w") as h5:
        h5.attrs["layer_names"] = np.array([b"convolution2d_1", b"flatten_1", b"dense_1"])
        for layer in ("convolution2d_1", "flatten_1", "dense_1"):
            group = h5.create_group(layer)
            group.attrs["weight_names"] = np.array([n.encode() for n, _ in weights.get(layer, [])], dtype="S")
            for name, value in weights.get(layer, []):
                group.create_dataset(name, data=value.astype(np.float32))
    return tmp_path / "k1_weights.h5", tmp_path / "k1.json"


@pytest.mark.tfkeras
def test_keras1_weights_with_json_load_as_tf_keras_loads_them(tmp_path, keras):
    """tf_keras' own Keras 1 conversion is the oracle for the weights; Keras 3 for the outputs."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tf_keras

    weights_file, json_file = _keras1_files(tmp_path, np.random.default_rng(11))
    net = layerlab.load(weights_file, architecture=json_file)
    conv = net.spec.layers[0]
    assert conv == S.Conv2D(name="convolution2d_1", filters=3, kernel_size=(3, 2), strides=(2, 1), padding="same",
                            data_format=S.CHANNELS_FIRST, activation="relu", kernel_initializer="glorot_uniform",
                            bias_initializer=None)
    reference = tf_keras.Sequential([
        tf_keras.Input((2, 7, 6)),
        tf_keras.layers.Conv2D(3, (3, 2), strides=(2, 1), padding="same", data_format="channels_first", activation="relu"),
        tf_keras.layers.Flatten(), tf_keras.layers.Dense(4, activation="softmax"),
    ])
    reference.load_weights(weights_file)  # no keras_version attribute: tf_keras converts from Keras 1
    expected = reference.get_weights()
    ours = [net.weights["convolution2d_1"]["kernel"], net.weights["convolution2d_1"]["bias"],
            net.weights["dense_1"]["kernel"], net.weights["dense_1"]["bias"]]
    assert all(np.array_equal(a, b) for a, b in zip(ours, expected, strict=True))
    from layerlab.keras_build import build_keras

    x = np.random.default_rng(12).normal(0, 1, (4, 2, 7, 6)).astype(np.float32)
    keras_out = np.asarray(build_keras(net.spec, net.weights)(x, training=False))
    assert np.max(np.abs(net.predict(x) - keras_out)) <= TOLERANCE


def test_keras1_conv1d_kernels_are_converted():
    """Keras 1.1 stored Conv1D kernels (filters, in, k, 1); later Keras 1 (k, 1, in, filters)."""
    from layerlab.modelfile.config import ParsedModel
    from layerlab.modelfile.weights import _from_keras1

    spec = S.Model(name="m", input_shape=(9, 2), layers=(S.Conv1D(name="c", filters=4, kernel_size=3),))
    parsed = ParsedModel(spec=spec, model_class="Sequential", layers=(), generation=1)
    kernel = np.random.default_rng(0).normal(size=(3, 2, 4)).astype(np.float32)
    old = {"c": {"kernel": kernel.transpose(2, 1, 0)[..., None]}}  # (filters, in, k, 1)
    new = {"c": {"kernel": kernel[:, None]}}  # (k, 1, in, filters)
    _from_keras1(old, parsed)
    _from_keras1(new, parsed)
    assert np.array_equal(old["c"]["kernel"], kernel) and np.array_equal(new["c"]["kernel"], kernel)
