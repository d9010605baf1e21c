"""`layerlab probe` and `layerlab.probe.probe`: the SEED_NETWORK.md examples as golden text, Keras as
the oracle for values and windows, rendered figures, and one-line errors."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import require_module
from layerlab import spec as S
from layerlab.cli import main
from layerlab.errors import ShapeError, SpecError
from layerlab.probing import probe

GOLDEN = Path(__file__).parent / "golden"
SEED = [[-1, -2, 3, -4, -5], [-6, -7, -8, -9, -10], [-11, -12, 13, -14, -15]]  # SEED_NETWORK.md
SEED_3X3 = [[-1, 2, -3], [-4, -5, -6], [-7, 8, -9]]
ONE_TO_TWELVE = [[[[1, 2, 3], [4, 5, 6]], [[7, 8, 9], [10, 11, 12]]]]  # (1, 2, 2, 3), "1..12 in C order"


def golden(name: str, text: str) -> None:
    """Compare with tests/golden/NAME; LAYERLAB_UPDATE_GOLDEN=1 rewrites it (then read the diff)."""
    path = GOLDEN / name
    if os.environ.get("LAYERLAB_UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def pool(kind=S.MaxPooling2D, **kw):
    return kind(**{"name": "pool", "pool_size": 2, "strides": 2, "padding": "same", **kw})


# The single-layer examples of SEED_NETWORK.md: (golden file, layer, input, expected output from the document)
SEED_EXAMPLES = [
    ("seed_maxpool_valid.txt", pool(padding="valid"), SEED, [[-1, 3]], (1, 1, 2, 1)),
    ("seed_maxpool_same.txt", pool(), SEED, [[-1, 3, -5], [-11, 13, -15]], (1, 2, 3, 1)),
    ("seed_conv_same.txt", S.Conv2D(name="conv", filters=1, kernel_size=2, strides=2, padding="same", use_bias=False,
                                    kernel_initializer="ones"), SEED, [[-16, -18, -15], [-23, -1, -15]], (1, 2, 3, 1)),
    ("seed_maxpool_same_3x3.txt", pool(), SEED_3X3, [[2, -3], [8, -9]], (1, 2, 2, 1)),
    ("seed_flatten_channels_last.txt", S.Flatten(name="flatten"), ONE_TO_TWELVE, [list(range(1, 13))], (1, 12)),
]


@pytest.mark.parametrize("name, layer, array, expected, shape", SEED_EXAMPLES, ids=[e[0] for e in SEED_EXAMPLES])
def test_seed_examples_values_and_golden_text(name, layer, array, expected, shape):
    result = probe(layer, array)
    assert result.output.shape == shape
    np.testing.assert_array_equal(result.output.reshape(np.shape(expected)), np.array(expected, np.float32))
    golden(name, result.explain())


def test_seed_flatten_channels_first_golden():
    # What Keras really does (checked against Keras below): channels moved last first, so not 1..12.
    result = probe(S.Flatten(name="flatten", data_format="channels_first"), ONE_TO_TWELVE)
    np.testing.assert_array_equal(result.output, [[1, 7, 2, 8, 3, 9, 4, 10, 5, 11, 6, 12]])
    text = result.explain()
    assert "A C-H-W reading" in text and "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]" in text
    golden("seed_flatten_channels_first.txt", text)


def test_cli_issue_command_golden(capsys):
    argv = ["probe", "maxpool2d", "--pool-size", "2", "--strides", "2", "--padding", "same", "--input",
            "[[-1,-2,3,-4,-5],[-6,-7,-8,-9,-10],[-11,-12,13,-14,-15]]"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out == probe(pool(name="maxpool2d"), SEED).explain()
    for line in ("out_h = ceil(3 / 2) = 2", "out_w = ceil(5 / 2) = 3", "-> pad_top = 0, pad_bottom = 1",
                 "-> pad_left = 0, pad_right = 1", "odd cell goes after (bottom/right)", "never selected",
                 "out[0, 2] = max(x[0,4]=-5, x[0,5]=pad, x[1,4]=-10, x[1,5]=pad) = -5"):
        assert line in out
    golden("cli_maxpool_same.txt", out)


def test_padding_and_windows_of_seed_same_example():
    result = probe(pool(), SEED)
    assert result.padding == (0, 1, 0, 1)
    assert (result.padding.pad_bottom, result.padding.pad_right) == (1, 1)
    by_out = {w.out: w for w in result.windows}
    assert len(by_out) == 6
    assert [(c.index, c.padding) for c in by_out[(0, 2)].cells] == [((0, 4), False), ((0, 5), True), ((1, 4), False), ((1, 5), True)]
    assert sum(c.padding for c in by_out[(1, 2)].cells) == 3


def test_valid_explains_dropped_cells_and_formula():
    text = probe(pool(padding="valid"), SEED).explain()
    assert "out_h = floor((3 - 2) / 2) + 1 = 1" in text and "out_w = floor((5 - 2) / 2) + 1 = 2" in text
    assert "never read by any window (dropped): rows 2 and columns 4" in text


def test_conv_text_shows_zero_padding_and_avgpool_count():
    conv = probe(SEED_EXAMPLES[2][1], SEED).explain()
    assert "Conv2D pads with zeros" in conv and "1*(-5) + 1*0[pad] + 1*(-10) + 1*0[pad] = -15" in conv
    avg = probe(pool(S.AveragePooling2D), SEED).explain()
    assert "out[0, 2] = mean(x[0,4]=-5, x[1,4]=-10) = -15 / 2 = -7.5   (2 pad cells left out of the count)" in avg


def test_dense_and_zero_padding_text():
    dense = probe(S.Dense(name="d", units=2, use_bias=True), [1.0, -2.0, 3.0],
                  {"kernel": [[1, 0], [0, 1], [1, 1]], "bias": [0.5, -0.5]})
    np.testing.assert_array_equal(dense.output, [[4.5, 0.5]])
    assert "out[0] = 1*1 + (-2)*0 + 3*1 + 0.5 (bias) = 4.5" in dense.explain()
    zp = probe(S.ZeroPadding2D(name="zp", padding=((0, 1), (2, 0))), [[1, 2], [3, 4]])
    assert zp.padding == (0, 1, 2, 0)
    np.testing.assert_array_equal(zp.output[0, :, :, 0], [[0, 0, 1, 2], [0, 0, 3, 4], [0, 0, 0, 0]])
    assert [c.padding for w in zp.windows for c in w.cells].count(True) == 8


# --- Keras as the oracle --------------------------------------------------------------------------

@pytest.mark.keras
def test_seed_examples_agree_with_keras(keras):
    cases = [(e[1], e[2]) for e in SEED_EXAMPLES] + [(S.Flatten(name="flatten", data_format="channels_first"), ONE_TO_TWELVE)]
    for layer, array in cases:
        check = probe(layer, array).check_keras()
        assert check.max_abs_diff == 0.0, layer
    keras_flat = probe(*cases[-1]).check_keras().keras_output
    np.testing.assert_array_equal(keras_flat, [[1, 7, 2, 8, 3, 9, 4, 10, 5, 11, 6, 12]])


def _random_configs():
    """Seeded random layer configurations over every probe layer type."""
    rng = np.random.default_rng(2024)
    configs = []
    for i in range(30):
        data_format = ("channels_last", "channels_first")[i % 2]
        h, w, c = int(rng.integers(3, 8)), int(rng.integers(3, 8)), int(rng.integers(1, 4))
        kind = i % 6
        padding = ("valid", "same")[int(rng.integers(2))]
        if kind in (0, 1):  # conv, sometimes dilated
            dilation = (1, 1) if i % 4 else (2, 1)
            strides = (1, 1) if dilation != (1, 1) else tuple(int(v) for v in rng.integers(1, 4, size=2))
            kernel = tuple(int(v) for v in rng.integers(1, 4, size=2))
            layer = S.Conv2D(name=f"c{i}", filters=int(rng.integers(1, 4)), kernel_size=kernel, strides=strides, padding=padding,
                             data_format=data_format, dilation_rate=dilation, use_bias=bool(i % 3), activation=("linear", "tanh", "relu")[i % 3])
        elif kind in (2, 3):
            cls = S.MaxPooling2D if kind == 2 else S.AveragePooling2D
            layer = cls(name=f"p{i}", pool_size=tuple(int(v) for v in rng.integers(1, 4, size=2)),
                        strides=tuple(int(v) for v in rng.integers(1, 4, size=2)), padding=padding, data_format=data_format)
        elif kind == 4:
            layer = S.ZeroPadding2D(name=f"z{i}", padding=tuple(tuple(int(v) for v in rng.integers(0, 3, size=2)) for _ in range(2)),
                                    data_format=data_format)
        else:
            layer = S.Flatten(name=f"f{i}", data_format=data_format)
        shape = (c, h, w) if data_format == "channels_first" else (h, w, c)
        configs.append((layer, shape))
    configs.append((S.Dense(name="dense", units=4, activation="tanh"), (7,)))
    configs.append((S.Dense(name="dense_nb", units=3, use_bias=False), (5,)))
    return configs


@pytest.mark.keras
def test_random_configurations_agree_with_keras(keras):
    rng = np.random.default_rng(7)
    checked = 0
    for layer, shape in _random_configs():
        x = rng.standard_normal(shape).astype(np.float32)
        try:
            result = probe(layer, x, seed=checked)
        except SpecError as exc:  # a 'valid' window bigger than this random input: Keras must refuse too
            assert "does not fit" in str(exc)
            continue
        check = result.check_keras()
        assert check.keras_output.shape == result.output.shape, layer
        assert check.max_abs_diff <= 1e-6, (layer, check.max_abs_diff)
        checked += 1
    assert checked >= 25


@pytest.mark.keras
@pytest.mark.parametrize("layer, shape", [
    (S.MaxPooling2D(name="p", pool_size=3, strides=2, padding="same"), (5, 6, 1)),
    (S.MaxPooling2D(name="p", pool_size=(3, 2), strides=(1, 2), padding="same", data_format="channels_first"), (1, 4, 5)),
    (S.MaxPooling2D(name="p", pool_size=2, strides=2, padding="same"), (3, 5, 1)),
])
def test_windows_match_keras_by_perturbation(keras, layer, shape):
    """Raise one input cell at a time in real Keras: the outputs that change are exactly the windows holding it."""
    from layerlab.keras_build import keras_layer

    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(np.float32)
    result = probe(layer, x)
    channels_first = layer.data_format == "channels_first"
    h, w = (shape[1], shape[2]) if channels_first else (shape[0], shape[1])
    batch = np.repeat(x[None], h * w, axis=0)
    for i in range(h * w):
        if channels_first:
            batch[i, 0, i // w, i % w] = 100.0
        else:
            batch[i, i // w, i % w, 0] = 100.0
    out = keras.ops.convert_to_numpy(keras_layer(layer, keras)(batch))
    changed_all = out == 100.0
    for i in range(h * w):
        changed = changed_all[i, 0] if channels_first else changed_all[i, ..., 0]
        from_keras = {tuple(int(v) for v in p) for p in np.argwhere(changed)}
        from_probe = {win.out for win in result.windows if any(c.index == (i // w, i % w) and not c.padding for c in win.cells)}
        assert from_keras == from_probe, (i // w, i % w)


@pytest.mark.keras
def test_probe_accepts_keras_layer_objects(keras):
    x = np.random.default_rng(1).standard_normal((4, 5, 2)).astype(np.float32)
    fresh = keras.layers.Conv2D(3, (2, 3), strides=(2, 1), padding="same", kernel_initializer="ones", bias_initializer="ones")
    result = probe(fresh, x)
    assert isinstance(result.layer, S.Conv2D) and result.layer.kernel_size == (2, 3)
    np.testing.assert_array_equal(result.weights["kernel"], np.ones((2, 3, 2, 3), np.float32))
    np.testing.assert_allclose(result.output, keras.ops.convert_to_numpy(fresh(x[None])), rtol=1e-6, atol=1e-6)
    pooled = probe(keras.layers.AveragePooling2D(pool_size=3, strides=1, padding="same"), x)
    assert pooled.padding == (1, 1, 1, 1) and pooled.check_keras().max_abs_diff <= 1e-6
    dense = keras.layers.Dense(4, activation="relu")
    dense.build((None, 6))
    v = np.random.default_rng(2).standard_normal(6).astype(np.float32)
    np.testing.assert_allclose(probe(dense, v).output, keras.ops.convert_to_numpy(dense(v[None])), rtol=1e-6, atol=1e-6)


@pytest.mark.keras
@pytest.mark.parametrize("argv", [
    ["conv2d", "--input", "random:4x5x2", "--filters", "2", "--kernel", "random", "--padding", "same", "--strides", "2",
     "--bias", "random"],
    ["conv2d", "--data-format", "channels_first", "--input", "random:2x6x5", "--kernel", "[[1, 0, 2], [0, -1, 0.5]]",
     "--dilation-rate", "2,1", "--padding", "same", "--activation", "tanh", "--use-bias"],
    ["dense", "--input", "[0.5, -1, 2]", "--kernel", "[[1, 2], [3, 4], [5, 6]]", "--bias", "[0.25, -0.25]"],
    ["avgpool2d", "--input", "random:5x4x3", "--pool-size", "3,2", "--strides", "2,1", "--padding", "same"],
    ["flatten", "--data-format", "channels_first", "--input", "random:3x2x2"],
    ["zeropadding2d", "--data-format", "channels_first", "--input", "random:2x3x3", "--padding", "[1, 2]"],
])
def test_cli_check_keras_prints_agreement(capsys, argv):
    assert main(["probe", *argv, "--check-keras"]) == 0
    out = capsys.readouterr().out
    assert "Keras check: agrees with keras.layers." in out and "max abs diff" in out


@pytest.mark.keras
def test_cli_check_keras_reports_a_difference(capsys, monkeypatch):
    probe_module = importlib.import_module("layerlab.probing")

    real = probe_module.run_layer
    monkeypatch.setattr(probe_module, "run_layer", lambda layer, inputs, weights: real(layer, inputs, weights) + 0.5)
    assert main(["probe", "maxpool2d", "--padding", "same", "--check-keras"]) == 1
    out = capsys.readouterr().out
    assert "Keras check: DIFFERS from keras.layers.MaxPooling2D: max abs diff 0.5" in out and "-15" in out


# --- figures ---------------------------------------------------------------------------------------

def _fraction(image: np.ndarray, fig, ax, x: float, y: float, rgb: tuple[float, float, float]) -> float:
    """Share of pixels near data point (x, y) of ``ax`` whose colour is within 0.03 of ``rgb``."""
    px, py = ax.transData.transform((x, y))
    row, col = int(round(image.shape[0] - py)), int(round(px))
    patch = image[row - 6 : row + 6, col - 6 : col + 6, :3]
    return float(np.mean(np.all(np.abs(patch - np.array(rgb)) < 0.03, axis=-1)))


def test_figure_png_and_svg_render(tmp_path):
    require_module("matplotlib")
    import matplotlib.image as mimage

    from layerlab.figures import DPI

    result = probe(pool(), SEED)
    fig = result.figure(tmp_path / "seed.png")
    image = mimage.imread(tmp_path / "seed.png")
    width, height = fig.get_size_inches() * DPI
    assert image.shape[:2] == (round(height), round(width))
    assert image[..., :3].std() > 0.05  # not blank
    ax = fig.axes[0]  # padded input, channel 0; cell (row 3, column 5) of the padded grid is padding
    pad_grey = (0xE4 / 255,) * 3
    assert _fraction(image, fig, ax, 5.3, 3.3, pad_grey) > 0.3
    assert _fraction(image, fig, ax, 0.3, 0.0, (1.0, 1.0, 1.0)) > 0.3  # a real cell is white
    assert _fraction(image, fig, ax, 0.3, 0.0, pad_grey) == 0.0
    svg = tmp_path / "seed.svg"
    assert main(["probe", "maxpool2d", "--padding", "same", "--figure", str(svg)]) == 0
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text and text.rstrip().endswith("</svg>")


@pytest.mark.parametrize("layer, array", [
    (S.Conv2D(name="c", filters=2, kernel_size=3, padding="same", dilation_rate=2), np.random.default_rng(0).standard_normal((6, 7, 2))),
    (S.Flatten(name="f", data_format="channels_first"), ONE_TO_TWELVE),
    (S.Dense(name="d", units=3), [0.5, -1.0, 2.0, 0.25]),
    (S.ZeroPadding2D(name="z", padding=((1, 0), (0, 2))), SEED_3X3),
])
def test_every_layer_type_draws(tmp_path, layer, array):
    require_module("matplotlib")
    import matplotlib.image as mimage

    result = probe(layer, array)
    fig = result.figure(tmp_path / "f.png")
    image = mimage.imread(tmp_path / "f.png")
    assert image.shape[0] > 100 and image.shape[1] > 100 and image[..., :3].std() > 0.05
    assert image.shape[:2] == tuple(round(v) for v in fig.get_size_inches()[::-1] * fig.dpi)


def test_notebook_reprs():
    require_module("matplotlib")
    result = probe(pool(), SEED)
    assert "<svg" in result._repr_svg_()
    html = result._repr_html_()
    assert "<svg" in html and "pad_bottom = 1" in html and "x[0,5]=pad" in html
    assert "padding (0, 1, 0, 1)" in repr(result)


# --- inputs and errors ------------------------------------------------------------------------------

def test_npy_input_and_channels_first(tmp_path, capsys):
    x = np.random.default_rng(5).standard_normal((2, 3, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["probe", "avgpool2d", "--data-format", "channels_first", "--padding", "same", "--input", str(tmp_path / "x.npy")]) == 0
    out = capsys.readouterr().out
    assert "input: shape (1, 2, 3, 4) = (batch, channels, height, width), 2 channels" in out
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert main(["probe", "maxpool2d", "--input", str(tmp_path / "obj.npy")]) == 1
    assert "DataError" in capsys.readouterr().err


@pytest.mark.parametrize("call, error, match", [
    (lambda: probe(pool(), [[1, 2, 3], [4, 5]]), ShapeError, r"ragged nested list: item \[1\] has shape \(2,\)"),
    (lambda: probe(pool(), [[1, "a"], [3, 4]]), ShapeError, r"item \[0, 1\] is 'a'"),
    (lambda: probe(S.Conv2D(name="c", filters=1, kernel_size=4), SEED), SpecError, r"kernel_size=\(4, 4\) does not fit input \(3, 5\) with padding='valid'"),
    (lambda: pool(strides=0), SpecError, r"strides=\(0, 0\) must be positive"),
    (lambda: probe(S.Dense(name="d", units=2), SEED), ShapeError, r"Dense 'd' takes a vector"),
    (lambda: probe(S.Activation(name="a", activation="relu"), SEED), Exception, r"probe: layer .a. \(Activation\) is not supported because it is element-wise"),
    (lambda: probe(pool(), SEED, {"kernel": [1]}), ShapeError, r"has no weight\(s\) \['kernel'\]"),
    (lambda: probe("maxpool", SEED), Exception, r"expected a layerlab spec layer or a Keras layer, received str"),
    (lambda: probe(S.Conv2D(name="c", filters=1, kernel_size=2), SEED, {"kernel": np.ones((2, 2))}), ShapeError,
     r"weight 'kernel' has shape \(2, 2\), expected \(2, 2, 1, 1\) \(kernel_h, kernel_w, in_channels, filters\)"),
])
def test_bad_input_raises_one_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("argv, match", [
    (["maxpool2d", "--input", "[[1,2,3],[4,5]]"], "ShapeError: --input: ragged nested list"),
    (["maxpool2d", "--input", "hello"], "ShapeError: --input: 'hello' is not a nested list of numbers"),
    (["conv2d", "--kernel-size", "4"], "SpecError: probe: layer 0 'conv2d' (Conv2D): kernel_size=(4, 4) does not fit input (3, 5)"),
    (["maxpool2d", "--strides", "0"], "SpecError: strides=(0, 0) must be positive"),
    (["maxpool2d", "--strides", "two"], "SpecError: --strides='two' is not an int or a pair of ints"),
    (["conv2d", "--kernel", "[[1, 2], [3]]"], "ShapeError: --kernel: ragged nested list"),
    (["maxpool2d", "--figure", "out.gif"], "ExportError: --figure 'out.gif': unsupported suffix '.gif'"),
])
def test_cli_errors_are_one_line(capsys, tmp_path, argv, match):
    if "--figure" in argv:
        argv = [a if a != "out.gif" else str(tmp_path / "out.gif") for a in argv]
        match = match.replace("out.gif", str(tmp_path / "out.gif"))
    assert main(["probe", *argv]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("layerlab probe: ") and match in err, err


def test_cli_error_exit_code_in_a_real_process():
    result = subprocess.run([sys.executable, "-m", "layerlab", "probe", "maxpool2d", "--input", "[[1, 2], [3]]"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "ShapeError: --input: ragged nested list" in result.stderr
    assert "Traceback" not in result.stderr
