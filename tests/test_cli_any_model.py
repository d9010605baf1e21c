"""``predict``, ``evaluate``, ``trace``, ``summary`` and ``export`` on any model, not only MNIST.

The MLPerf Tiny models take (32, 32, 3) pixels, (30, 1, 40) features and 640 log-mels; inputs
come from .npy / .npz files or image files. tf_keras, which wrote those files, is the oracle for
the classes and the accuracy printed.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import layerlab
from layerlab.cli import main

MLPERF = "models/mlperf_tiny"


@pytest.fixture(scope="module")
def tf_keras():
    from conftest import require_module

    require_module("tf_keras")
    import tf_keras

    return tf_keras


def _classes(out: str) -> list[int]:
    """The first class listed under every 'input i' heading."""
    return [int(m) for m in re.findall(r"input \d+.*\n  class  \w+\n\s+(\d+) ", out)]


@pytest.mark.tfkeras
def test_predict_resnet_from_npy_gives_keras_classes(shared_dir, tf_keras, tmp_path, capsys):
    model = shared_dir / MLPERF / "pretrainedResnet.h5"
    x = np.random.default_rng(4).uniform(0, 255, (5, 32, 32, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["predict", str(model), "--input", str(tmp_path / "x.npy"), "--top", "1"]) == 0
    out = capsys.readouterr().out
    expected = tf_keras.models.load_model(model, compile=False).predict(x, verbose=0).argmax(1)
    assert _classes(out) == expected.tolist()
    assert "inputs from" in out and "as stored" in out


@pytest.mark.tfkeras
def test_evaluate_ds_cnn_on_a_labelled_npz_equals_keras_accuracy(shared_dir, tf_keras, tmp_path, capsys):
    model = shared_dir / MLPERF / "str_ww_ref_model.h5"
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 0.94, (40, 30, 1, 40)).astype(np.float32)
    keras_classes = tf_keras.models.load_model(model, compile=False).predict(x, verbose=0).argmax(1)
    y = keras_classes.copy()
    y[::3] = (y[::3] + 1) % 3  # a third of the labels wrong: the accuracy is not trivially 1
    np.savez(tmp_path / "kws.npz", x=x, y=np.eye(3)[y])  # one-hot labels are read too
    assert main(["evaluate", str(model), "--data", str(tmp_path / "kws.npz")]) == 0
    out = capsys.readouterr().out
    correct = int(np.count_nonzero(keras_classes == y))
    assert f"accuracy {correct / 40:.4f} ({correct} of 40 inputs of" in out


def test_predict_autoencoder_prints_the_output_range(shared_dir, tmp_path, capsys):
    model = shared_dir / MLPERF / "ad01.h5"
    x = np.random.default_rng(6).uniform(-85, 15, (640,)).astype(np.float32)
    np.save(tmp_path / "one.npy", x)
    assert main(["predict", str(model), "--input", str(tmp_path / "one.npy")]) == 0
    out = capsys.readouterr().out
    y = layerlab.load(model).predict(x[None])[0]
    assert f"output shape (640,): min {y.min():.6g}, max {y.max():.6g}" in out


def test_trace_any_model_from_an_input_file(shared_dir, tmp_path, capsys):
    model = shared_dir / MLPERF / "str_ww_ref_model.h5"
    np.save(tmp_path / "x.npy", np.random.default_rng(7).uniform(0, 0.9, (2, 30, 1, 40)).astype(np.float32))
    assert main(["trace", str(model), "--input", str(tmp_path / "x.npy"), "--out", str(tmp_path / "tr"), "--no-png"]) == 0
    rows = (tmp_path / "tr" / "trace.csv").read_text().splitlines()
    assert len(rows) == 1 + 1 + len(layerlab.load(model).spec.layers)  # header, input, every layer
    assert "depthwise_conv2d" in capsys.readouterr().out


@pytest.mark.mnist
def test_image_file_input_equals_the_mnist_image(shared_dir, mnist_dir, tmp_path, capsys):
    """A PNG of MNIST test image 3 predicts exactly what --image 3 predicts (grey, 28x28, raw pixels)."""
    from PIL import Image

    from layerlab.data import load_mnist

    model = str(shared_dir / "models/keras2/keras224_sequential_mnist.h5")
    pixels = load_mnist(mnist_dir, download=False).x_test[3]
    Image.fromarray(pixels).convert("RGB").save(tmp_path / "digit.png")  # RGB: converted back to grey
    assert main(["predict", model, "--input", str(tmp_path / "digit.png"), "--scale", "1"]) == 0
    from_file = capsys.readouterr().out
    assert main(["predict", model, "--image", "3", "--scale", "1", "--data-dir", str(mnist_dir)]) == 0
    from_mnist = capsys.readouterr().out
    scores = from_file.split("input 0\n")[1]
    assert scores and scores == re.split(r"label \d+\n", from_mnist)[1].split("predicted")[0]


def test_summary_export_and_explain_take_architecture(shared_dir, tmp_path, capsys):
    weights = str(shared_dir / "models/keras2/keras231_channels_first_mnist_weights.h5")
    arch = str(shared_dir / "models/keras2/keras231_channels_first_mnist_model.json")
    assert main(["summary", weights, "--architecture", arch]) == 0
    assert "parameters:" in capsys.readouterr().out
    assert main(["explain", weights, "--architecture", arch]) == 0
    capsys.readouterr()
    assert main(["export", weights, "--architecture", arch, "--to", "npz", "--out", str(tmp_path / "w")]) == 0
    assert (tmp_path / "w").exists()


@pytest.mark.parametrize("content, message", [
    (np.zeros((3, 5)), r"array shape \(3, 5\) does not fit the model input \(32, 32, 3\)"),
    (np.array(["a", "b"]), r"dtype <U1 is not numeric"),
])
def test_bad_input_arrays_are_one_line_errors(shared_dir, tmp_path, capsys, content, message):
    np.save(tmp_path / "bad.npy", content)
    assert main(["predict", str(shared_dir / MLPERF / "pretrainedResnet.h5"), "--input", str(tmp_path / "bad.npy")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err


def test_bad_input_files_are_one_line_errors(shared_dir, tmp_path, capsys):
    model = str(shared_dir / MLPERF / "ad01.h5")
    (tmp_path / "x.txt").write_text("1 2 3")
    (tmp_path / "broken.npy").write_bytes(b"\x93NUMPY garbage")
    np.savez(tmp_path / "nolabels.npz", x=np.zeros((2, 640), np.float32))
    cases = [
        (["predict", model, "--input", str(tmp_path / "x.txt")], r"unknown file type '.txt'"),
        (["predict", model, "--input", str(tmp_path / "missing.npy")], r"no such file"),
        (["predict", model, "--input", str(tmp_path / "broken.npy")], r"not a .npy file"),
        (["evaluate", model, "--data", str(tmp_path / "nolabels.npz")], r"holds no labels 'y'"),
    ]
    for argv, message in cases:
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and re.search(message, err), (argv, err)


def test_a_vector_input_takes_samples_of_its_size_flattened_row_major(shared_dir, tmp_path, capsys):
    model = str(shared_dir / MLPERF / "ad01.h5")
    x = np.random.default_rng(8).uniform(-85, 15, (2, 640)).astype(np.float32)
    np.save(tmp_path / "flat.npy", x)
    np.save(tmp_path / "grid.npy", x.reshape(2, 32, 20))  # e.g. frames x mel bins, as the features were made
    assert main(["predict", model, "--input", str(tmp_path / "flat.npy")]) == 0
    flat = capsys.readouterr().out.split("\n", 1)[1]
    assert main(["predict", model, "--input", str(tmp_path / "grid.npy")]) == 0
    assert capsys.readouterr().out.split("\n", 1)[1] == flat


@pytest.mark.mnist
def test_xlsx_formulas_input_file_is_read_as_predict_reads_it(shared_dir, mnist_dir, tmp_path):
    """export --to xlsx-formulas --input digit.png fills the input sheet with the same values as --image N."""
    import openpyxl
    from PIL import Image

    from layerlab.data import load_mnist

    model = str(shared_dir / "models/keras2/keras224_sequential_mnist.h5")
    Image.fromarray(load_mnist(mnist_dir, download=False).x_test[5]).save(tmp_path / "digit.png")
    common = ["export", model, "--to", "xlsx-formulas", "--scale", "1", "--data-dir", str(mnist_dir)]
    assert main([*common, "--input", str(tmp_path / "digit.png"), "--out", str(tmp_path / "file.xlsx")]) == 0
    assert main([*common, "--image", "5", "--out", str(tmp_path / "mnist.xlsx")]) == 0

    def input_values(path):
        sheet = openpyxl.load_workbook(path)["input"]
        return [[c.value for c in row if isinstance(c.value, (int, float))] for row in sheet.iter_rows()]

    values = input_values(tmp_path / "file.xlsx")
    assert sum(len(r) for r in values) >= 784 and values == input_values(tmp_path / "mnist.xlsx")
