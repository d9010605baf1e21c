"""``layerlab predict / evaluate / trace`` on the real old Keras files and real MNIST."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest

import layerlab
from layerlab.cli import main

pytestmark = pytest.mark.mnist

REAL_224 = "models/keras2/keras224_sequential_mnist.h5"
REAL_231_WEIGHTS = "models/keras2/keras231_channels_first_mnist_weights.h5"
REAL_231_JSON = "models/keras2/keras231_channels_first_mnist_model.json"


@pytest.fixture(scope="module")
def mnist_test(mnist_dir):
    from layerlab.data import load_mnist

    data = load_mnist(mnist_dir, download=False)
    return data.x_test, data.y_test


@pytest.fixture()
def cf_args(shared_dir, mnist_dir):
    """The channels_first Keras 2.3.1 weights + JSON pair, pixels / 255."""
    return [str(shared_dir / REAL_231_WEIGHTS), "--architecture", str(shared_dir / REAL_231_JSON),
            "--data-dir", str(mnist_dir)]


def test_predict_top3(shared_dir, mnist_dir, mnist_test, capsys):
    assert main(["predict", str(shared_dir / REAL_224), "--image", "0", "--scale", "1", "--data-dir", str(mnist_dir)]) == 0
    out = capsys.readouterr().out
    x_test, y_test = mnist_test
    net = layerlab.load(shared_dir / REAL_224)
    probabilities = net.predict(x_test[:1].astype(np.float32).reshape(1, 28, 28, 1))[0]  # raw pixels
    top = np.argsort(-probabilities)[:3]
    rows = re.findall(r"^\s+(\d)\s+([0-9.]+)$", out, flags=re.M)
    assert [int(k) for k, _ in rows] == list(top)
    assert [v for _, v in rows] == [f"{probabilities[k]:.6f}" for k in top]
    assert f"MNIST test image 0, label {y_test[0]}" in out
    assert f"predicted {top[0]} (correct)" in out and "raw pixels 0-255" in out


def test_evaluate_reproduces_readme_accuracy(cf_args, capsys):
    assert main(["evaluate", *cf_args]) == 0
    assert "accuracy 0.9899 (9899 of 10000 MNIST test images)" in capsys.readouterr().out


def test_evaluate_scale_is_applied(cf_args, shared_dir, mnist_test, capsys):
    x_test, y_test = mnist_test
    net = layerlab.load(shared_dir / REAL_231_WEIGHTS, architecture=shared_dir / REAL_231_JSON)
    raw = x_test[:400].astype(np.float32).reshape(400, 1, 28, 28)
    for scale, x in (("255", raw / np.float32(255)), ("1", raw)):
        correct = int(np.count_nonzero(net.predict(x).argmax(1) == y_test[:400]))
        assert main(["evaluate", *cf_args, "--limit", "400", "--scale", scale]) == 0
        assert f"({correct} of 400 MNIST test images)" in capsys.readouterr().out


def test_trace_table_csv_and_pngs(cf_args, shared_dir, mnist_test, tmp_path, capsys):
    import matplotlib.image

    out_dir = tmp_path / "trace"
    assert main(["trace", *cf_args, "--image", "3", "--out", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    net = layerlab.load(shared_dir / REAL_231_WEIGHTS, architecture=shared_dir / REAL_231_JSON)
    x = mnist_test[0][3:4].astype(np.float32).reshape(1, 1, 28, 28) / np.float32(255)
    expected = {"input": x, **net.trace(x)}
    with open(out_dir / "trace.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["layer"] for r in rows] == list(expected)
    assert [r["shape"] for r in rows] == ["1x28x28", "50x24x24", "50x12x12", "50x12x12", "7200", "128", "10"]
    for row in rows:
        value = expected[row["layer"]]
        assert (float(row["min"]), float(row["max"]), float(row["mean"])) == (
            float(value.min()), float(value.max()), float(value.mean()))
        assert row["layer"] in printed
    pngs = sorted(out_dir.glob("*.png"))
    assert [p.name for p in pngs] == ["00_input.png", "01_conv2d_1.png", "02_max_pooling2d_1.png", "03_dropout_1.png",
                                      "04_flatten_1.png", "05_dense_1.png", "06_dense_2.png"]
    conv = matplotlib.image.imread(pngs[1])
    assert conv.ndim == 3 and conv.shape[0] > 200 and conv.shape[1] > 400  # 50 maps tiled 8 per row
    assert conv[..., :3].std() > 0.05  # not blank


def test_trace_no_png(cf_args, tmp_path, capsys):
    assert main(["trace", *cf_args, "--image", "0", "--out", str(tmp_path), "--no-png"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layerlab-manifest.json", "trace.csv"]


@pytest.mark.keras
def test_compare_keras(keras, cf_args, tmp_path, capsys):
    assert main(["predict", *cf_args, "--image", "5", "--compare-keras"]) == 0
    out = capsys.readouterr().out
    diffs = dict(re.findall(r"^\s+(\w+)\s+\w+\s+([0-9.e+-]+)\s+\([0-9.e+-]+\)$", out, flags=re.M))
    assert list(diffs) == ["conv2d_1", "max_pooling2d_1", "dropout_1", "flatten_1", "dense_1", "dense_2"]
    assert all(float(d) <= 1e-5 for d in diffs.values()), diffs
    assert main(["trace", *cf_args, "--image", "5", "--compare-keras", "--no-png", "--out", str(tmp_path)]) == 0
    with open(tmp_path / "trace.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["layer"] for r in rows[1:]] == list(diffs)
    assert all(float(r["keras_max_abs_diff"]) <= 1e-5 for r in rows)


def test_image_out_of_range(cf_args, capsys):
    assert main(["predict", *cf_args, "--image", "10000"]) == 1
    assert "--image 10000: the MNIST test set has images 0 to 9999" in capsys.readouterr().err


def test_missing_model_file(tmp_path, mnist_dir, capsys):
    assert main(["evaluate", str(tmp_path / "none.h5"), "--data-dir", str(mnist_dir)]) == 1
    err = capsys.readouterr().err
    assert "layerlab evaluate: ModelFileError:" in err and "none.h5: no such file" in err


def test_model_without_mnist_input(tmp_path, mnist_dir, capsys):
    from layerlab import spec as S

    spec = S.Model(name="tiny", input_shape=(4, 4, 1), layers=(S.Flatten(name="f"), S.Dense(name="d", units=2)))
    spec.save(tmp_path / "tiny.json")
    import h5py

    with h5py.File(tmp_path / "w.h5", "w") as f:  # a Keras 2 save_weights layout, written by hand
        f.attrs["layer_names"] = [b"f", b"d"]
        f.create_group("f").attrs["weight_names"] = np.array([], dtype="S1")
        g = f.create_group("d")
        g.attrs["weight_names"] = [b"d/kernel:0", b"d/bias:0"]
        g["d/kernel:0"] = np.ones((16, 2), np.float32)
        g["d/bias:0"] = np.zeros(2, np.float32)
    code = main(["evaluate", str(tmp_path / "w.h5"), "--architecture", str(tmp_path / "tiny.json"), "--data-dir", str(mnist_dir)])
    assert code == 1
    assert "input shape (4, 4, 1) is not one 28x28 grey MNIST image" in capsys.readouterr().err


def test_trace_sanitises_names_from_the_file(tmp_path, mnist_dir, capsys):
    """Layer names come from the file: no terminal escapes printed, no formula in the CSV, no path
    outside --out."""
    import h5py

    from layerlab import spec as S

    hostile_flatten, hostile_act = '=HYPERLINK("http://x")', "\x1b[31mred/../../escape"
    spec = S.Model(name="hostile", input_shape=(28, 28, 1), layers=(
        S.Flatten(name=hostile_flatten), S.Dense(name="d", units=3), S.Activation(name=hostile_act, activation="softmax")))
    spec.save(tmp_path / "spec.json")
    with h5py.File(tmp_path / "w.h5", "w") as f:  # a Keras 2 save_weights layout, written by hand
        f.attrs["layer_names"] = [b"d"]
        g = f.create_group("d")
        g.attrs["weight_names"] = [b"d/kernel:0", b"d/bias:0"]
        g["d/kernel:0"] = np.random.default_rng(0).normal(0, 0.01, (784, 3)).astype(np.float32)
        g["d/bias:0"] = np.zeros(3, np.float32)
    out_dir = tmp_path / "out"
    assert main(["trace", str(tmp_path / "w.h5"), "--architecture", str(tmp_path / "spec.json"), "--image", "1",
                 "--out", str(out_dir), "--data-dir", str(mnist_dir)]) == 0
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "\\x1b[31mred/../../escape" in printed
    with open(out_dir / "trace.csv", newline="") as fh:
        layers = [row["layer"] for row in csv.DictReader(fh)]
    assert layers == ["input", "'" + hostile_flatten, "d", "\\x1b[31mred/../../escape"]
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "00_input.png", "01_HYPERLINK_http_x.png", "02_d.png", "03_31mred_.._.._escape.png", "layerlab-manifest.json", "trace.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "spec.json", "w.h5"]
