"""NNC (nnabla) import and export, with nnabla itself and Keras as the oracles.

* Reference files in ../shared/nnc (outputs computed by nnabla 1.39.0) -> import -> engine / Keras.
* Small NNC networks built here -> nnabla (in its Python 3.10 venv, $NNABLA_PYTHON, one
  subprocess for the whole module) and layerlab's import -> engine, both layouts, and Keras.
* layerlab specs -> export .nnp -> nnabla runs it -> compared with the engine.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

import layerlab
from conftest import require_env
from layerlab import spec as S
from layerlab.cli import main as cli
from layerlab.errors import LimitError, NNCError
from layerlab.network import Network
from layerlab.nnc import files, schema, windows
from layerlab.nnc.exporter import export_file, export_network, nnc_init
from layerlab.nnc.importer import import_file, import_network
from layerlab.nnc.sdcproj import read_sdcproj
from layerlab.specfile import load_spec
from nnc_helpers import NNCNet, graph_of, run_oracle

TOL = dict(rtol=1e-5, atol=1e-5)
REFERENCES = [("blog_cnn.nnp", "blog_ref.npz"), ("lenet_010000.nnp", "lenet_ref.npz")]
FORMATS = ["channels_first", "channels_last"]


def _nhwc(x, data_format):
    return x.transpose(0, 2, 3, 1) if data_format == "channels_last" and x.ndim == 4 else x


def _keras_predict(network: Network, x: np.ndarray) -> np.ndarray:
    """Keras' output for a network with weights. The initializers are set to zeros first: the
    weights are overwritten anyway, and JAX compiles one random kernel per shape (seconds each)."""
    from layerlab.keras_build import build_keras

    layers = tuple(
        dataclasses.replace(l, kernel_initializer="zeros", bias_initializer="zeros") if isinstance(l, (S.Conv2D, S.Dense)) else l
        for l in network.spec.layers
    )
    kmodel = build_keras(dataclasses.replace(network.spec, layers=layers), network.weights)
    return np.asarray(kmodel.predict(x, verbose=0))


def _layers(result):
    return [(l.type, getattr(l, "padding", None)) for l in result.network.spec.layers]


# -- the reference files: nnabla's outputs, through the engine and Keras ---------------------------

@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("nnp, ref", REFERENCES)
def test_reference_files_through_engine(shared_dir, nnp, ref, data_format):
    result = import_file(str(shared_dir / "nnc" / nnp), data_format=data_format)
    data = np.load(shared_dir / "nnc" / ref)
    y = result.network.predict(_nhwc(data["x"], data_format))
    assert y.shape == data["y"].shape
    np.testing.assert_allclose(y, data["y"], **TOL)


def test_blog_mapping_and_weights(shared_dir):
    """seed650 as NNC wrote it: IgnoreBorder=False 2x2/2 pooling is Keras 'same'; W transposed."""
    result = import_file(str(shared_dir / "nnc" / "blog_cnn.nnp"))
    assert result.network_name == "MainRuntime" and result.input_variable == "Input"
    assert _layers(result) == [
        ("Conv2D", "valid"), ("MaxPooling2D", "same"), ("Activation", None), ("Conv2D", "valid"),
        ("MaxPooling2D", "same"), ("Activation", None), ("Conv2D", "valid"), ("Activation", None),
        ("Flatten", None), ("Dense", None), ("Activation", None),
    ]
    assert result.network.spec.param_count == 650
    ref = np.load(shared_dir / "nnc" / "blog_ref.npz")
    w = result.network.weights
    np.testing.assert_array_equal(w["Convolution"]["kernel"], ref["p:Convolution/conv/W"].transpose(2, 3, 1, 0))
    # Dense rows: Keras flattens (3, 3, 3) channels_first as H-W-C; NNC's W rows are C-H-W.
    nnc_w = ref["p:Affine/affine/W"].reshape(3, 3, 3, 10)
    np.testing.assert_array_equal(w["Affine"]["kernel"], nnc_w.transpose(1, 2, 0, 3).reshape(27, 10))
    table = result.table()
    assert "MaxPooling: MaxPooling2D 'same'" in table and "C-H-W" in table


@pytest.mark.keras
@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("nnp, ref", REFERENCES)
def test_reference_files_through_keras(keras, shared_dir, nnp, ref, data_format):
    result = import_file(str(shared_dir / "nnc" / nnp), data_format=data_format)
    data = np.load(shared_dir / "nnc" / ref)
    y = _keras_predict(result.network, _nhwc(data["x"], data_format))
    np.testing.assert_allclose(y, data["y"], **TOL)


@pytest.fixture(scope="module")
def blog_keras_file(keras, shared_dir, tmp_path_factory):
    """``layerlab nnc import blog_cnn.nnp --out blog.keras``: the file and what the CLI printed."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("blog") / "blog.keras"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli(["nnc", "import", str(shared_dir / "nnc" / "blog_cnn.nnp"), "--out", str(out)]) == 0
    return out, printed.getvalue()


@pytest.mark.keras
def test_cli_import_keras_file(shared_dir, blog_keras_file):
    """The .keras file holds the imported weights and NNC's initializers (read back with h5py
    alone: keras.saving.load_model would redraw every initial weight, seconds per shape on JAX)."""
    import layerlab

    out, printed = blog_keras_file
    assert "Affine_flatten: Flatten, Affine: Dense" in printed and f"wrote {out}" in printed
    data = np.load(shared_dir / "nnc" / "blog_ref.npz")
    np.testing.assert_allclose(layerlab.load(out).predict(data["x"]), data["y"], **TOL)
    config = json.loads(zipfile.ZipFile(out).read("config.json"))
    conv = next(l for l in config["config"]["layers"] if l["config"]["name"] == "Convolution")["config"]
    assert conv["bias_initializer"]["class_name"] == "Zeros"  # NNC's Constant 0, kept for retraining
    assert conv["kernel_initializer"]["config"]["distribution"] == "untruncated_normal"


@pytest.mark.keras
@pytest.mark.nnabla
def test_cli_export_keras_file_runs_in_nnabla(blog_keras_file, shared_dir, tmp_path, capsys):
    """NNC -> .keras -> (layerlab.load) -> .nnp -> nnabla: the reference outputs survive."""
    python = require_env("NNABLA_PYTHON")
    keras_file, _ = blog_keras_file
    nnp = tmp_path / "back.nnp"
    assert cli(["nnc", "export", str(keras_file), "--out", str(nnp)]) == 0
    assert re.search(r"\nMaxPooling +MaxPooling2D +MaxPooling +Keras 'same' = ignore_border=false, pad \(0, 0\)\n", capsys.readouterr().out)
    data = np.load(shared_dir / "nnc" / "blog_ref.npz")
    np.save(tmp_path / "x.npy", data["x"])
    results = run_oracle(python, [{"id": "back", "kind": "run", "file": str(nnp), "network": None,
                                   "x": str(tmp_path / "x.npy"), "y": str(tmp_path / "y.npy")}], tmp_path)
    assert results["back"]["ok"], results["back"].get("error")
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), data["y"], **TOL)


def test_cli_import_spec_json(shared_dir, tmp_path, capsys):
    out = tmp_path / "lenet.json"
    assert cli(["nnc", "import", str(shared_dir / "nnc" / "lenet_010000.nnp"), "--data-format", "channels_last", "--out", str(out)]) == 0
    spec = load_spec(out)
    assert spec.input_shape == (28, 28, 1) and spec.output_shape == (10,)
    assert isinstance(spec.layers[0], S.Rescaling) and spec.layers[0].scale == pytest.approx(1 / 255)
    assert "MulScalar: Rescaling" in capsys.readouterr().out


# -- small NNC networks: nnabla vs the import ------------------------------------------------------

def _case_conv_same():
    n = NNCNet((2, 7, 6))
    n.conv(2, 3, (3, 3), pad=(1, 1))  # Keras 'same' pads (1, 1) too
    n.act("Tanh")
    return n, [("Conv2D", "same"), ("Activation", None)]


def _case_conv_stride2_dilation():
    n = NNCNet((2, 8, 8))
    n.conv(2, 4, (3, 3), pad=(1, 1), stride=(2, 2))  # Keras 'same' would pad (0, 1): ZeroPadding
    n.conv(4, 2, (2, 3), pad=(2, 0), dilation=(2, 1), bias=False)
    return n, [("ZeroPadding2D", ((1, 1), (1, 1))), ("Conv2D", "valid"), ("ZeroPadding2D", ((2, 2), (0, 0))), ("Conv2D", "valid")]


def _case_max_same_negative():
    n = NNCNet((1, 7, 9))
    n.pool("MaxPooling", (3, 3), (2, 2), pad=(1, 1), ignore_border=True)   # Keras 'same' pads (1, 1)
    n.pool("MaxPooling", (2, 2), (2, 2), pad=(0, 0), ignore_border=False)  # clipped = 'same' (0, 1)
    return n, [("MaxPooling2D", "same"), ("MaxPooling2D", "same")]


def _case_max_zero_pad_after_relu():
    n = NNCNet((2, 8, 6))
    n.conv(2, 2, (1, 1))
    n.act("ReLU")
    n.pool("MaxPooling", (3, 3), (2, 2), pad=(1, 1), ignore_border=True)   # needs (1, 0): zeros, input >= 0
    n.pool("MaxPooling", (3, 3), (1, 1), pad=(1, 1), ignore_border=False)  # needs (1, 2)
    return n, [("Conv2D", "valid"), ("Activation", None), ("ZeroPadding2D", ((1, 0), (1, 0))), ("MaxPooling2D", "valid"),
               ("ZeroPadding2D", ((1, 2), (1, 2))), ("MaxPooling2D", "valid")]


def _case_average():
    n = NNCNet((2, 7, 8))
    n.pool("AveragePooling", (3, 3), (1, 1), pad=(1, 1), ignore_border=True, including_pad=True)
    n.pool("AveragePooling", (3, 3), (1, 1), pad=(1, 1), ignore_border=True, including_pad=False)
    n.pool("AveragePooling", (2, 2), (2, 2), pad=(0, 0), ignore_border=False, including_pad=True)
    return n, [("ZeroPadding2D", ((1, 1), (1, 1))), ("AveragePooling2D", "valid"), ("AveragePooling2D", "same"), ("AveragePooling2D", "same")]


def _case_dense_bn_scalars():
    n = NNCNet((3, 4, 4))
    n.fn("MulScalar", None, "mul_scalar_param", val=0.5)
    n.fn("AddScalar", None, "add_scalar_param", val=-0.25)
    n.bn(3)
    n.act("Sigmoid")
    n.affine(48, 5)
    n.bn(5, image=False)  # after the Flatten: its parameters follow Keras' feature order
    n.softmax(axis=1)
    return n, None


def _case_reshape():
    n = NNCNet((2, 3, 4))
    n.fn("Identity")
    n.fn("Reshape", None, "reshape_param", shape=(-1, 24))
    n.bn(24, image=False)  # channels_last: Keras flattens H-W-C, so its parameters are permuted
    n.affine(24, 6)
    n.act("ReLU")
    n.fn("Reshape", None, "reshape_param", shape=(-1, 1, 2, 3))
    n.conv(1, 2, (2, 2))
    n.act("Tanh")
    return n, None


def _case_graph():
    n = NNCNet((2, 6, 6))
    n.conv(2, 2, (3, 3), pad=(1, 1))
    relu = n.act("ReLU")
    add = n.fn("Add2", [relu, "x"], "add2_param", inplace=False)
    n.fn("Concatenate", [add, "x"], "concatenate_param", axis=1)
    n.pool("MaxPooling", (2, 2), (2, 2), ignore_border=True)
    n.affine(36, 3)
    return n, None


def _case_channel_softmax_bn_no_bias():
    n = NNCNet((3, 4, 5))
    name = "bn_nb"
    inputs = [n.last, n.param(f"{name}/gamma", (1, 3, 1, 1)), n.param(f"{name}/mean", (1, 3, 1, 1)), n.param(f"{name}/var", (1, 3, 1, 1), low=0.2)]
    n.fn("BatchNormalization", inputs, "batch_normalization_param", axes=[1], decay_rate=0.9, eps=1e-4, batch_stat=False, no_bias=True)
    n.softmax(axis=1)  # over channels: Keras' softmax is over the last axis, so channels_last only
    return n, None


def _case_depthwise_relu6_global_average():
    n = NNCNet((3, 7, 8))
    x = n.last
    w, b = n.param("dw/depthwise_conv/W", (6, 3, 3)), n.param("dw/depthwise_conv/b", (6,))
    n.fn("DepthwiseConvolution", [x, w, b], "depthwise_convolution_param", base_axis=1, pad=(1, 1), stride=(2, 2),
         dilation=(1, 1), multiplier=2)
    n.act("ReLU6")
    n.fn("GlobalAveragePooling")
    # width 8, stride 2: Keras 'same' would pad (0, 1), NNC pads 1 each side: ZeroPadding2D + 'valid'
    return n, [("ZeroPadding2D", ((1, 1), (1, 1))), ("DepthwiseConv2D", "valid"), ("Activation", None), ("GlobalAveragePooling2D", None)]


def _case_elementwise_merges():
    n = NNCNet((2, 5, 5))
    a = n.conv(2, 2, (3, 3), pad=(1, 1))
    b = n.conv(2, 2, (1, 1), x="x")
    s = n.fn("Sub2", [a, b], "sub2_param", inplace=False)
    m = n.fn("Mul2", [s, a], "mul2_param", inplace=False)
    mx = n.fn("Maximum2", [m, b])
    n.fn("Minimum2", [mx, "x"])
    return n, None


IMPORT_CASES = {
    "depthwise_relu6_global_average": _case_depthwise_relu6_global_average, "elementwise_merges": _case_elementwise_merges,
    "conv_same": _case_conv_same, "conv_stride2_dilation": _case_conv_stride2_dilation,
    "max_same_negative": _case_max_same_negative, "max_zero_pad_after_relu": _case_max_zero_pad_after_relu,
    "average": _case_average, "dense_bn_scalars": _case_dense_bn_scalars, "reshape": _case_reshape, "graph": _case_graph,
    "channel_softmax_bn_no_bias": _case_channel_softmax_bn_no_bias,
}
CHANNELS_LAST_ONLY = {"channel_softmax_bn_no_bias"}


def _pool_sweep():
    """Every small pooling configuration, on negative inputs (max: padding must never win) and
    after a ReLU (max: zero padding becomes exact); average with and without including_pad."""
    for hw in ((5, 8), (7, 6)):
        for kernel, stride, pad, ignore_border in itertools.product((2, 3), (1, 2, 3), (0, 1), (True, False)):
            for variant in ("max", "max_relu", "avg_incl", "avg_excl"):
                yield f"sweep_{variant}_{hw[0]}x{hw[1]}_k{kernel}_s{stride}_p{pad}_{'ib' if ignore_border else 'clip'}", (
                    variant, hw, kernel, stride, pad, ignore_border)


def _sweep_net(variant, hw, kernel, stride, pad, ignore_border):
    n = NNCNet((2, *hw))
    if variant == "max_relu":
        n.act("ReLU")
    kind = "MaxPooling" if variant.startswith("max") else "AveragePooling"
    including = None if kind == "MaxPooling" else variant == "avg_incl"
    n.pool(kind, (kernel, kernel), (stride, stride), (pad, pad), ignore_border, including)
    return n


SWEEP = dict(_pool_sweep())
# The case (3x3 stride 2 clipped on 25x25: NNC pads (0, 2), Keras 'same' (1, 1)) and more
# where Keras' padding cannot match: odd and even sizes, pad > 0, kernel > stride.
SWEEP.update({f"sweep_max_{h}x{w}_k{k}_s{s}_p{p}_clip": ("max", (h, w), k, s, p, False)
              for h, w, k, s, p in ((25, 25, 3, 2, 0), (24, 25, 3, 2, 1), (9, 10, 4, 3, 1), (8, 8, 5, 2, 2))})
# Keras pooling -> NNC: (layer type, input (H, W), pool_size, strides, padding).
EXPORT_SWEEP = {
    f"xsweep_{cls.__name__}_{h}x{w}_k{k}_s{st}_{padding}": (cls, (h, w), k, st, padding)
    for cls in (S.MaxPooling2D, S.AveragePooling2D) for h, w in ((5, 8), (7, 6))
    for k, st in itertools.product((1, 2, 3, 4), (1, 2, 3)) for padding in ("same", "valid") if k <= min(h, w)
}


def _export_sweep_net(cls, hw, k, st, padding) -> Network:
    spec = S.Model(name="pool", input_shape=(2, *hw), layers=(
        cls(name="pool", pool_size=(k, k), strides=(st, st), padding=padding, data_format="channels_first"),))
    return Network(spec, {})


# -- layerlab specs to export ------------------------------------------------------------------------

def _random_weights(spec: S.Model, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    weights = nnc_init(spec, seed)
    for arrays in weights.values():
        for name, array in arrays.items():
            if name == "moving_variance":
                arrays[name] = rng.uniform(0.5, 1.5, array.shape).astype(np.float32)
            elif name != "kernel":
                arrays[name] = rng.normal(0, 0.3, array.shape).astype(np.float32)
    return weights


def _export_zoo(df: str) -> S.Model:
    cf = df == "channels_first"
    return S.Model(name=f"zoo_{df}", input_shape=(3, 9, 8) if cf else (9, 8, 3), layers=(
        S.Rescaling(name="scale", scale=2.0, offset=-0.5),
        S.Conv2D(name="c1", filters=4, kernel_size=(3, 3), strides=(2, 2), padding="same", data_format=df),  # W pads (0, 1)
        S.MaxPooling2D(name="p1", pool_size=(3, 3), strides=(1, 1), padding="same", data_format=df),
        S.AveragePooling2D(name="a1", pool_size=(2, 2), strides=(2, 2), padding="same", data_format=df),
        S.ZeroPadding2D(name="z1", padding=((1, 1), (2, 2)), data_format=df),
        S.Conv2D(name="c2", filters=3, kernel_size=(3, 3), padding="valid", activation="relu", data_format=df),
        S.MaxPooling2D(name="p2", pool_size=(4, 4), strides=(1, 1), padding="same", data_format=df),  # pads (1, 2)
        S.BatchNormalization(name="bn1", axis=1 if cf else -1),
        S.ZeroPadding2D(name="z2", padding=((0, 1), (1, 0)), data_format=df),
        S.AveragePooling2D(name="a2", pool_size=(2, 2), strides=(1, 1), padding="valid", data_format=df),
        S.Flatten(name="flat", data_format=df),
        S.BatchNormalization(name="bn_flat", axis=-1),  # per feature in Keras' Flatten order
        S.Dense(name="d1", units=6, activation="tanh"),
        S.Dropout(name="drop", rate=0.25),
        S.BatchNormalization(name="bn2", axis=-1),
        S.Dense(name="d2", units=4, activation="softmax"),
    ))


def _export_graph() -> S.Model:
    df = "channels_first"
    return S.Model(name="graph", input_shape=(2, 6, 6), layers=(
        S.Conv2D(name="a", filters=2, kernel_size=(3, 3), padding="same", activation="relu", data_format=df),
        S.Add(name="add", inputs=("a", "input")),
        S.Concatenate(name="cat", inputs=("add", "input"), axis=1),
        S.MaxPooling2D(name="pool", pool_size=(2, 2), padding="valid", data_format=df),
        S.Flatten(name="flat", data_format=df),
        S.Dense(name="out", units=3),
    ))


def _export_mobile(df: str) -> S.Model:
    """The new layer types: depthwise (multiplier 2, 'same' on odd and even sizes), ReLU6, global
    pooling, and every element-wise merge."""
    return S.Model(name=f"mobile_{df}", input_shape=(3, 7, 8) if df == "channels_first" else (7, 8, 3), layers=(
        S.DepthwiseConv2D(name="dw", kernel_size=3, strides=2, padding="same", depth_multiplier=2, data_format=df),
        S.ReLU(name="r6", max_value=6.0),
        S.DepthwiseConv2D(name="dw2", kernel_size=3, padding="same", use_bias=False, data_format=df, activation="relu6"),
        S.Subtract(name="sub", inputs=("r6", "dw2")),
        S.Multiply(name="mul", inputs=("sub", "r6")),
        S.Maximum(name="max", inputs=("mul", "dw2", "r6")),
        S.Minimum(name="min", inputs=("max", "sub")),
        S.Average(name="avg", inputs=("min", "dw2", "r6")),
        S.GlobalMaxPooling2D(name="gmp", inputs=("avg",), data_format=df, keepdims=True),
        S.Flatten(name="gf", data_format=df),
        S.GlobalAveragePooling2D(name="gap", inputs=("avg",), data_format=df),
        S.Add(name="both", inputs=("gf", "gap")),
        S.Dense(name="out", units=4),
    ))


def _export_crop_up(df: str) -> S.Model:
    """Cropping2D (nnabla Slice) and UpSampling2D (Unpooling), in a U-Net-like skip."""
    shape = (2, 6, 7) if df == "channels_first" else (6, 7, 2)
    return S.Model(name=f"crop_up_{df}", input_shape=shape, layers=(
        S.Conv2D(name="down", filters=3, kernel_size=3, strides=2, padding="same", activation="relu", data_format=df),
        S.UpSampling2D(name="up", size=(2, 3), data_format=df),
        S.Cropping2D(name="crop", cropping=((0, 0), (3, 2)), data_format=df),
        S.Concatenate(name="skip", inputs=("crop", "input"), axis=1 if df == "channels_first" else -1),
        S.Cropping2D(name="inner", cropping=((1, 2), (0, 1)), data_format=df),
        S.Conv2D(name="mix", filters=2, kernel_size=1, data_format=df),
        S.Flatten(name="flat", data_format=df),
        S.Dense(name="out", units=3),
    ))


def _export_seq(df: str, exact: bool = False) -> S.Model:
    """The 1-D layers: Conv1D 'same' with an even kernel (asymmetric), 'causal' with dilation, stride 2
    'valid'; ZeroPadding1D, max pooling 'same' on an even length (a -inf Pad), average pooling 'same',
    BatchNormalization, both global poolings, Flatten of a sequence. ``exact``: only layers that
    come back from NNC as the same Keras layers (no keepdims=True, no Flatten)."""
    cf = df == "channels_first"
    steps = [
        S.Conv1D(name="c1", filters=4, kernel_size=4, padding="same", activation="relu", data_format=df),
        S.ZeroPadding1D(name="zp", padding=(2, 1), data_format=df),
        S.Conv1D(name="c2", filters=5, kernel_size=3, padding="causal", dilation_rate=2, data_format=df),
        S.BatchNormalization(name="bn", axis=1 if cf else -1),
        S.MaxPooling1D(name="mp", pool_size=3, strides=2, padding="same", data_format=df),
        S.AveragePooling1D(name="ap", pool_size=3, strides=1, padding="same", data_format=df),
        S.Conv1D(name="c3", filters=4, kernel_size=3, strides=2, data_format=df),
        S.GlobalAveragePooling1D(name="gap", inputs=("ap",), data_format=df),
    ]
    if exact:
        steps += [S.GlobalMaxPooling1D(name="gmp", inputs=("c3",), data_format=df),
                  S.Concatenate(name="cat", inputs=("gap", "gmp"), axis=1), S.Dense(name="out", units=3)]
    else:
        steps += [S.GlobalMaxPooling1D(name="gmp", inputs=("c3",), data_format=df, keepdims=True),
                  S.Flatten(name="gf", data_format=df), S.Flatten(name="flat", inputs=("c3",), data_format=df),
                  S.Dense(name="d_flat", units=3), S.Concatenate(name="cat", inputs=("gap", "gf"), axis=-1),
                  S.Dense(name="d_pool", units=3), S.Add(name="out", inputs=("d_flat", "d_pool"))]
    return S.Model(name=f"seq_{df}", input_shape=(3, 21) if cf else (21, 3), layers=tuple(steps))


def _export_separable(df: str) -> S.Model:
    """SeparableConv2D: stride 2 'same' on an even size (asymmetric pad), multiplier 2, relu; then
    'valid' without bias."""
    return S.Model(name=f"sep_{df}", input_shape=(3, 8, 7) if df == "channels_first" else (8, 7, 3), layers=(
        S.SeparableConv2D(name="s1", filters=5, kernel_size=3, strides=2, padding="same", depth_multiplier=2,
                          activation="relu", data_format=df),
        S.SeparableConv2D(name="s2", filters=4, kernel_size=(2, 3), padding="valid", use_bias=False, data_format=df),
        S.GlobalAveragePooling2D(name="gap", data_format=df),
        S.Dense(name="out", units=3),
    ))


def _export_nets() -> dict[str, Network]:
    from layerlab.presets import seed650

    seed = seed650(kernel_initializer="nnc_glorot_normal", bias_initializer="zeros")
    nets = {"seed650": Network(seed, nnc_init(seed, 1))}
    for name, spec in (("zoo_cf", _export_zoo("channels_first")), ("zoo_cl", _export_zoo("channels_last")), ("graph", _export_graph()),
                       ("mobile_cf", _export_mobile("channels_first")), ("mobile_cl", _export_mobile("channels_last")),
                       ("crop_up_cf", _export_crop_up("channels_first")), ("crop_up_cl", _export_crop_up("channels_last")),
                       ("seq_cf", _export_seq("channels_first")), ("seq_cl", _export_seq("channels_last")),
                       ("sep_cf", _export_separable("channels_first")), ("sep_cl", _export_separable("channels_last"))):
        nets[name] = Network(spec, _random_weights(spec, 3))
    return nets


# -- one nnabla subprocess for every oracle job ------------------------------------------------------

SCHEMA_MESSAGES = {name: [f[0] for f in fields] for name, fields in schema.MESSAGES.items()}
SCHEMA_MESSAGES.update({f"{kind}Parameter": [f[0] for f in fields] for kind, (_, _, fields) in schema.FUNCTION_PARAMS.items()})
SCHEMA_MESSAGES["Function"] += [field for field, _, _ in schema.FUNCTION_PARAMS.values()]
GLOROT_SHAPES = {"NormalConvolutionGlorot": (64, 32, 5, 5), "NormalAffineGlorot": (400, 300)}


@pytest.fixture(scope="module")
def nnabla(tmp_path_factory, shared_dir):
    python = require_env("NNABLA_PYTHON")
    work = tmp_path_factory.mktemp("nnabla")
    rng = np.random.default_rng(7)
    jobs, cases = [], {}
    for name, build in IMPORT_CASES.items():
        net, expected = build()
        path = net.finish().write(work / f"{name}.nnp")
        x = rng.normal(size=(4, *net.input_shape)).astype(np.float32)
        np.save(work / f"{name}_x.npy", x)
        jobs.append({"id": name, "kind": "run", "file": str(path), "network": None, "x": str(work / f"{name}_x.npy"), "y": str(work / f"{name}_y.npy")})
        cases[name] = (path, x, expected)
    for name, args in SWEEP.items():
        net = _sweep_net(*args)
        path = net.finish().write(work / f"{name}.nnp")
        x = (-np.abs(rng.normal(size=(2, *net.input_shape))) - 0.1).astype(np.float32)
        np.save(work / f"{name}_x.npy", x)
        jobs.append({"id": name, "kind": "run", "file": str(path), "network": None, "x": str(work / f"{name}_x.npy"), "y": str(work / f"{name}_y.npy")})
        cases[name] = (path, x, None)
    exports = {}
    for name, args in EXPORT_SWEEP.items():
        network = _export_sweep_net(*args)
        try:
            export_file(network, str(work / f"{name}.nnp"))
        except NNCError as exc:
            exports[name] = (network, None, str(exc))
            continue
        x = (-np.abs(rng.normal(size=(2, *network.spec.input_shape))) - 0.1).astype(np.float32)
        np.save(work / f"{name}_x.npy", x)
        jobs.append({"id": name, "kind": "run", "file": str(work / f"{name}.nnp"), "network": None,
                     "x": str(work / f"{name}_x.npy"), "y": str(work / f"{name}_y.npy")})
        exports[name] = (network, x, None)
    for name, network in _export_nets().items():
        path = work / f"export_{name}.nnp"
        export_file(network, str(path))
        x = rng.normal(size=(3, *network.spec.input_shape)).astype(np.float32)
        x_nchw = np.moveaxis(x, -1, 1) if name.endswith("_cl") else x  # N-C-H-W / N-C-L
        np.save(work / f"export_{name}_x.npy", x_nchw)
        jobs.append({"id": f"export_{name}", "kind": "run", "file": str(path), "network": None,
                     "x": str(work / f"export_{name}_x.npy"), "y": str(work / f"export_{name}_y.npy")})
        exports[name] = (network, x)
    for nnp, ref in REFERENCES:
        jobs.append({"id": nnp, "kind": "run", "file": str(shared_dir / "nnc" / nnp), "network": None,
                     "x": str(work / f"{nnp}_x.npy"), "y": str(work / f"{nnp}_y.npy")})
        np.save(work / f"{nnp}_x.npy", np.load(shared_dir / "nnc" / ref)["x"])
    projects = {}
    (work / "mobile.sdcproj").write_text(MOBILE_PROJECT)
    for project in (*SDCPROJ, "mobile.sdcproj"):  # project files, written as .nnp with layerlab's reading of them
        nnc, _ = read_sdcproj(shared_dir / "nnc" / project if project in SDCPROJ else work / project, seed=3)
        path = work / f"{project}.nnp"
        path.write_bytes(files.nnp_bytes(nnc.proto, nnc.parameters))
        shape = next(tuple(v.shape.dim[1:]) for v in nnc.proto.network[0].variable if v.name == "x")
        x = rng.uniform(0, 1, (4, *shape)).astype(np.float32)
        np.save(work / f"{project}_x.npy", x)
        jobs.append({"id": project, "kind": "run", "file": str(path), "network": None, "x": str(work / f"{project}_x.npy"),
                     "y": str(work / f"{project}_y.npy")})
        projects[project] = (nnc, x)
    jobs.append({"id": "save_h5", "kind": "save_h5", "file": str(shared_dir / "nnc" / "lenet_010000.nnp"), "h5": str(work / "lenet.h5")})
    jobs.append({"id": "schema", "kind": "schema", "messages": SCHEMA_MESSAGES})
    for init, shape in GLOROT_SHAPES.items():
        jobs.append({"id": init, "kind": "glorot", "initializer": init, "shape": list(shape), "seed": 0})
    results = run_oracle(python, jobs, work)
    failed = {k: v["error"] for k, v in results.items() if not v["ok"]}
    assert not failed, f"nnabla failed on: {failed}"
    return {"work": work, "results": results, "cases": cases, "exports": exports, "projects": projects}


SDCPROJ = ("LeNet.sdcproj", "02_binary_cnn.sdcproj")


def _sdcproj(layers: list[tuple[int, str, dict[str, str]]], links: list[tuple[int, int, int]]) -> str:
    """Project text as NNC's GUI writes it: [Layer_N] with ID, Type and Property pairs, [Link_N]."""
    out = ["[Engine]", "SDeepEngineType=NNabla", "[Network_Global]", f"NumLayer={len(layers)}", f"NumLink={len(links)}"]
    for i, (lid, kind, props) in enumerate(layers):
        out += [f"[Layer_{i}]", f"ID={lid}", f"Type={kind}", "Position_0=24", f"Position_1={24 + 48 * i}"]
        for k, (key, value) in enumerate(props.items()):
            out += [f"Property_{k}_Name={key}", f"Property_{k}_Value={value}"]
        out.append(f"NumProperty={len(props)}")
    for i, (src, dst, pin) in enumerate(links):
        out += [f"[Link_{i}]", f"ID={i}", f"SourceLayerID={src}", "SourcePinIndex=0", f"DestLayerID={dst}", f"DestPinIndex={pin}"]
    return "\r\n".join(out) + "\r\n"


# A project in NNC's own terms with the layers of its MobileNet / ResNet samples: IDs not in
# computing order, properties left to NNC's defaults (the depthwise Padding is *ConvolutionPaddingSize:
# 1 for its BorderMode same),
# a Sub2 whose links are listed second pin first, a Dropout, a Comment box and a loss.
MOBILE_LAYERS = [
    (0, "Input", {"Name": "Input", "Size": "3,12,12", "Dataset": "x", "Generator": "None"}),
    (9, "Convolution", {"Name": "conv1", "OutMaps": "8", "KernelShape": "3,3", "BorderMode": "valid", "Padding": "1,1",
                        "ParameterScope": "*Name", "b.Initializer": "Normal", "b.InitializerMultiplier": "0.5"}),
    (3, "BatchNormalization", {"Name": "bn1", "Axes": "0", "DecayRate": "0.9", "Epsilon": "0.0001", "BatchStat": "True",
                               "ParameterScope": "*Name", "gamma.Initializer": "Uniform", "gamma.InitializerMultiplier": "2",
                               "mean.Initializer": "Normal", "mean.InitializerMultiplier": "0.3",
                               "var.Initializer": "Constant", "var.InitializerMultiplier": "0.5"}),
    (4, "ReLU6", {"Name": "relu6"}),
    (5, "DepthwiseConvolution", {"Name": "dw", "KernelShape": "3,3", "BorderMode": "same", "Multiplier": "2"}),
    (2, "Convolution", {"Name": "pw", "OutMaps": "16", "KernelShape": "1,1", "Padding": "0,0", "W.Initializer": "NormalConvolutionHeForward"}),
    (7, "Sub2", {"Name": "sub"}),
    (8, "Concatenate", {"Name": "cat", "Axis": "0"}),
    (10, "MulScalar", {"Name": "half", "Value": "0.5"}),
    (11, "Dropout", {"Name": "drop", "P": "0.5"}),
    (12, "MaxPooling", {"Name": "pool", "KernelShape": "3,3", "Strides": "2,2", "IgnoreBorder": "False", "Padding": "0,0"}),
    (13, "GlobalAveragePooling", {"Name": "gap"}),
    (14, "Affine", {"Name": "fc", "OutShape": "10"}),
    (15, "Softmax", {"Name": "Softmax"}),
    (16, "CategoricalCrossEntropy", {"Name": "loss", "T.Dataset": "y"}),
    (17, "Comment", {"Name": "Comment", "Comment": "drawn in the GUI, not part of the network"}),

]
MOBILE_LINKS = [(0, 9, 0), (9, 3, 0), (3, 4, 0), (4, 5, 0), (4, 2, 0), (2, 7, 1), (5, 7, 0), (7, 8, 0), (4, 8, 0), (8, 10, 0),
                (10, 11, 0), (11, 12, 0), (12, 13, 0), (13, 14, 0), (14, 15, 0), (15, 16, 0)]
MOBILE_PROJECT = _sdcproj(MOBILE_LAYERS, MOBILE_LINKS)

# Convolution padding as NNC's own converter decides it: an explicit Padding wins; NNC's default
# Padding depends on BorderMode (valid 0, same span // 2, full span, span = (k - 1) * dilation);
# a Convolution's BorderMode defaults to same, a DepthwiseConvolution's to valid (5x5 kernel).
PROBE_LAYERS = [
    (0, "Input", {"Name": "Input", "Size": "3,14,13"}),
    (1, "Convolution", {"Name": "same_even", "OutMaps": "4", "KernelShape": "4,4"}),
    (2, "Convolution", {"Name": "full_dilated", "OutMaps": "4", "KernelShape": "3,3", "BorderMode": "full", "Dilation": "1,2"}),
    (3, "Convolution", {"Name": "valid_macro", "OutMaps": "4", "KernelShape": "5,3", "BorderMode": "valid",
                        "Padding": "*ConvolutionPaddingSize"}),
    (4, "Convolution", {"Name": "same_explicit", "OutMaps": "4", "KernelShape": "3,3", "BorderMode": "same", "Padding": "1,2"}),
    (5, "Convolution", {"Name": "defaults"}),
    (6, "DepthwiseConvolution", {"Name": "dw_defaults"}),
    (7, "DepthwiseConvolution", {"Name": "dw_same", "KernelShape": "3,3", "BorderMode": "same", "Dilation": "2,2", "Multiplier": "2"}),
    (8, "MulScalar", {"Name": "half", "Value": "0.5"}),
    (9, "AddScalar", {"Name": "shift", "Value": "-1.0"}),
    (10, "Pad", {"Name": "pad", "PadWidth": "1,0,2,1"}),
    (11, "Affine", {"Name": "fc", "OutShape": "5"}),
    (12, "SquaredError", {"Name": "loss", "T.Dataset": "y"}),
]
def _sdcproj_networks(networks: dict[str, tuple[list, list]], executor: str) -> str:
    """A project of several networks as NNC's newer GUI writes it: [Global] lists them, sections
    are [NAME_Layer_N], [NAME_Link_N]; the executor names the network it runs."""
    out = ["[Engine]", "SDeepEngineType=NNabla", "[Global]", f"NumNetwork={len(networks)}"]
    out += [f"Network_{k}={name}" for k, name in enumerate(networks)]
    for name, (layers, links) in networks.items():
        body = _sdcproj(layers, links).split("\r\n")[2:]  # without [Engine]
        out += [line.replace("[Network_Global]", f"[{name}_Network_Global]").replace("[Layer_", f"[{name}_Layer_")
                .replace("[Link_", f"[{name}_Link_") for line in body if line]
    out += ["[Executor_0]", "Executor_Name=Executor", f"Executor_NetworkName={executor}", "Executor_DatasetName=Validation"]
    return "\r\n".join(out) + "\r\n"


# Units as NNC's samples use them (VGG, SqueezeNet): a network used twice as a layer, its Argument
# (at its default) referred to as *Maps and in an expression (Maps/2-1), layers named UNIT/LAYER. NNC
# computes a unit's shapes from its network's Input Size: each unit here reads that shape.
UNIT_NETWORKS = {
    "Block": ([
        (0, "Input", {"Name": "Input", "Size": "3,8,8"}),
        (1, "Convolution", {"Name": "wide", "OutMaps": "*Maps", "KernelShape": "3,3", "BorderMode": "same"}),
        (2, "ReLU", {"Name": "relu"}),
        (3, "Convolution", {"Name": "narrow", "OutMaps": "Maps/2-1", "KernelShape": "1,1", "BorderMode": "valid"}),
        (9, "Argument", {"Name": "Maps", "Value": "8", "Type": "Text"}),
    ], [(0, 1, 0), (1, 2, 0), (2, 3, 0)]),
    "Main": ([
        (0, "Input", {"Name": "Input", "Size": "3,8,8"}),
        (1, "Unit", {"Name": "first", "Network": "Block", "ParameterScope": "*Name"}),
        (2, "Unit", {"Name": "second", "Network": "Block", "ParameterScope": "*Name"}),
        (3, "Affine", {"Name": "fc", "OutShape": "4"}),
        (4, "SquaredError", {"Name": "loss", "T.Dataset": "y"}),
    ], [(0, 1, 0), (1, 2, 0), (2, 3, 0), (3, 4, 0)]),
}

PROBE_PROJECTS = {
    "probe_unit": _sdcproj_networks(UNIT_NETWORKS, "MainRuntime"),
    "probe_conv": _sdcproj(PROBE_LAYERS, [(i, i + 1, 0) for i in range(12)]),
    # An Affine with a several-axis OutShape (NNC's auto-encoder sample): W is (in, 2, 3, 4).
    "probe_affine": _sdcproj([
        (0, "Input", {"Name": "Input", "Size": "6"}),
        (1, "Affine", {"Name": "expand", "OutShape": "2,3,4"}),
        (2, "Convolution", {"Name": "mix", "OutMaps": "3", "KernelShape": "1,1", "BorderMode": "valid"}),
        (3, "Affine", {"Name": "out", "OutShape": "4"}),
        (4, "SquaredError", {"Name": "loss", "T.Dataset": "y"}),
    ], [(0, 1, 0), (1, 2, 0), (2, 3, 0), (3, 4, 0)]),
}


@pytest.mark.nnabla
@pytest.mark.keras
@pytest.mark.parametrize("project", [*SDCPROJ, "mobile.sdcproj"])
def test_sdcproj_imports_and_agrees_with_nnabla(nnabla, keras, project):
    """An NNC project file: nnabla runs its .nnp, the engine and Keras run the imported model, same
    parameters: they agree within 1e-5 on seeded random inputs."""
    nnc, x = nnabla["projects"][project]
    y_ref = np.load(nnabla["work"] / f"{project}_y.npy")
    result = import_network(nnc)
    np.testing.assert_allclose(result.network.predict(x), y_ref, **TOL)
    np.testing.assert_allclose(_keras_predict(result.network, x), y_ref, **TOL)


def test_sdcproj_reading_losses_defaults_and_errors(shared_dir, tmp_path, capsys):
    nnc, notes = read_sdcproj(shared_dir / "nnc" / "LeNet.sdcproj")
    assert notes == ["note: [Layer_11] (CategoricalCrossEntropy 'CategoricalCrossEntropy') is a training loss: dropped; "
                     "the network's output is what it reads"]
    assert nnc.proto.executor[0].output_variable[0].variable_name == "Softmax_Output"
    w = nnc.parameters["Convolution/conv/W"]
    assert w.shape == (16, 1, 7, 7) and abs(float(w.std()) - (2 / (49 + 16 * 49)) ** 0.5) < 0.01  # NNC's Glorot normal
    assert not nnc.parameters["Convolution/conv/b"].any()  # Constant 0
    # Absent properties take NNC's defaults; unsupported layers are listed together, before anything is written.
    text = (shared_dir / "nnc" / "LeNet.sdcproj").read_text()
    trimmed = text.replace("Property_5_Name=Padding\n", "Property_5_Name=Comment\n", 1)  # Padding absent
    (tmp_path / "d.sdcproj").write_text(trimmed)
    # NNC's Convolution defaults Padding to *ConvolutionPaddingSize: 0 for LeNet's BorderMode valid, (k - 1) // 2
    # for same (as NNC's own converter decides: the probe_conv golden case has the whole table)
    assert read_sdcproj(tmp_path / "d.sdcproj")[0].proto.network[0].function[0].convolution_param.pad.dim == [0, 0]
    (tmp_path / "s.sdcproj").write_text(trimmed.replace("Property_4_Value=valid", "Property_4_Value=same", 1))
    assert read_sdcproj(tmp_path / "s.sdcproj")[0].proto.network[0].function[0].convolution_param.pad.dim == [3, 3]
    odd = text.replace("Type=ReLU", "Type=BinaryConnectAffine", 1).replace("Type=Tanh", "Type=LoopControl", 1)
    (tmp_path / "odd.sdcproj").write_text(odd)
    with pytest.raises(NNCError, match=r"layers that layerlab cannot convert: \[Layer_5\] \(LoopControl 'Tanh_2'\); "
                                       r"\[Layer_9\] \(BinaryConnectAffine 'ReLU'\)\. Nothing was written"):
        read_sdcproj(tmp_path / "odd.sdcproj")
    assert cli(["nnc", "import", str(tmp_path / "odd.sdcproj"), "--out", str(tmp_path / "m.keras")]) == 1
    assert not (tmp_path / "m.keras").exists()
    (tmp_path / "junk.sdcproj").write_text("[Layer_0]\nType\n")
    with pytest.raises(NNCError, match=r"junk\.sdcproj: not a Neural Network Console project|incomplete"):
        read_sdcproj(tmp_path / "junk.sdcproj")


def test_sdcproj_params_from_a_matching_nnp_and_a_clear_mismatch(shared_dir, tmp_path):
    nnc, _ = read_sdcproj(shared_dir / "nnc" / "LeNet.sdcproj", seed=1)
    trained = {k: v + 1.0 for k, v in nnc.parameters.items()}
    (tmp_path / "trained.nnp").write_bytes(files.nnp_bytes(nnc.proto, trained))
    again, _ = read_sdcproj(shared_dir / "nnc" / "LeNet.sdcproj", params=tmp_path / "trained.nnp")
    assert all(np.array_equal(again.parameters[k], trained[k]) for k in trained)
    with pytest.raises(NNCError, match=r"--params .*lenet_010000\.nnp does not match .*LeNet\.sdcproj: Convolution/conv/W "
                                       r"\(16, 1, 7, 7\) is not in it;.*it has parameters the project does not: conv1/conv/W"):
        read_sdcproj(shared_dir / "nnc" / "LeNet.sdcproj", params=shared_dir / "nnc" / "lenet_010000.nnp")


@pytest.mark.nnabla
def test_nnabla_reproduces_the_reference_files(nnabla, shared_dir):
    for nnp, ref in REFERENCES:
        y = np.load(nnabla["work"] / f"{nnp}_y.npy")
        np.testing.assert_allclose(y, np.load(shared_dir / "nnc" / ref)["y"], rtol=0, atol=1e-6)


@pytest.mark.nnabla
@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("case", list(IMPORT_CASES))
def test_import_matches_nnabla(nnabla, case, data_format):
    path, x, expected = nnabla["cases"][case]
    y_ref = np.load(nnabla["work"] / f"{case}_y.npy")
    if case in CHANNELS_LAST_ONLY and data_format == "channels_first":
        with pytest.raises(NNCError, match=r"softmax over axis 1 of shape \(batch, 3, 4, 5\).*Use axis = last, or --data-format channels_last"):
            import_file(str(path), data_format=data_format)
        return
    result = import_file(str(path), data_format=data_format)
    if expected is not None:
        assert [(l.type, getattr(l, "padding", None)) for l in result.network.spec.layers] == expected
    y = result.network.predict(_nhwc(x, data_format))
    y = y.transpose(0, 3, 1, 2) if y.ndim == 4 and data_format == "channels_last" else y
    assert y.shape == y_ref.shape
    np.testing.assert_allclose(y, y_ref, **TOL)


@pytest.mark.nnabla
def test_pooling_sweep_is_exact_or_refused(nnabla):
    """Every pooling configuration either imports to exactly nnabla's output or raises NNCError;
    the refusals are the ones the windows module says Keras cannot express."""
    converted, refused = 0, []
    for name in SWEEP:
        path, x, _ = nnabla["cases"][name]
        y_ref = np.load(nnabla["work"] / f"{name}_y.npy")
        try:
            result = import_file(str(path))
        except NNCError as exc:
            assert "no exact Keras equivalent" in str(exc) or "padding only" in str(exc), str(exc)
            refused.append(name)
            continue
        np.testing.assert_allclose(result.network.predict(x), y_ref, **TOL, err_msg=name)
        converted += 1
    assert converted >= 2 * len(refused), refused
    # Without padding (ignore_border=True, pad 0) Keras 'valid' is always exact, and after a ReLU
    # zero padding always is for max pooling: neither may be refused.
    assert not [n for n in refused if n.endswith("_p0_ib") or "_max_relu_" in n], refused
    # Max pooling is never refused: what Keras cannot pad is built from border copies (exact).
    assert not [n for n in refused if n.startswith("sweep_max")], refused


@pytest.mark.nnabla
@pytest.mark.keras
@pytest.mark.parametrize("case, data_format", [
    ("max_zero_pad_after_relu", "channels_first"), ("average", "channels_last"), ("dense_bn_scalars", "channels_last"),
    ("graph", "channels_first"), ("conv_stride2_dilation", "channels_last"),
])
def test_import_matches_nnabla_through_keras(nnabla, keras, case, data_format):
    path, x, _ = nnabla["cases"][case]
    result = import_file(str(path), data_format=data_format)
    y = _keras_predict(result.network, _nhwc(x, data_format))
    y = y.transpose(0, 3, 1, 2) if y.ndim == 4 and data_format == "channels_last" else y
    np.testing.assert_allclose(y, np.load(nnabla["work"] / f"{case}_y.npy"), **TOL)


@pytest.mark.nnabla
def test_export_pooling_sweep_runs_in_nnabla(nnabla):
    """Keras pooling of every small size, 'same' and 'valid': nnabla computes what the engine
    does; only average pooling whose 'same' padding NNC cannot place is refused."""
    refused = []
    for name in EXPORT_SWEEP:
        network, x, error = nnabla["exports"][name]
        if error:
            assert "AveragePooling2D" in name and "_same" in name and "no exact NNC equivalent" in error, error
            refused.append(name)
            continue
        np.testing.assert_allclose(network.predict(x), np.load(nnabla["work"] / f"{name}_y.npy"), **TOL, err_msg=name)
    assert len(refused) < len(EXPORT_SWEEP) // 4, refused


@pytest.mark.nnabla
@pytest.mark.parametrize("name", ["seed650", "zoo_cf", "zoo_cl", "graph", "mobile_cf", "mobile_cl", "crop_up_cf", "crop_up_cl",
                                  "seq_cf", "seq_cl", "sep_cf", "sep_cl"])
def test_export_runs_in_nnabla(nnabla, name):
    network, x = nnabla["exports"][name]
    y_ref = np.load(nnabla["work"] / f"export_{name}_y.npy")
    y = network.predict(x)
    assert y.shape == y_ref.shape
    np.testing.assert_allclose(y, y_ref, **TOL)


@pytest.mark.nnabla
@pytest.mark.keras
def test_export_runs_in_nnabla_like_keras(nnabla, keras):
    network, x = nnabla["exports"]["zoo_cl"]
    y_ref = np.load(nnabla["work"] / "export_zoo_cl_y.npy")
    np.testing.assert_allclose(_keras_predict(network, x), y_ref, **TOL)


@pytest.mark.nnabla
def test_parameter_h5_written_by_nnabla(nnabla, shared_dir, tmp_path):
    """An .nnp whose parameters are nnabla's own parameter.h5 imports like the protobuf one."""
    source = shared_dir / "nnc" / "lenet_010000.nnp"
    nnp = tmp_path / "lenet_h5.nnp"
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(nnp, "w") as out:
        out.writestr("nnp_version.txt", archive.read("nnp_version.txt"))
        out.writestr("network.nntxt", archive.read("network.nntxt"))
        out.writestr("parameter.h5", (nnabla["work"] / "lenet.h5").read_bytes())
    from_h5, from_protobuf = files.read(nnp).parameters, files.read(source).parameters
    assert list(from_h5) == list(from_protobuf) == nnabla["results"]["save_h5"]["parameters"]
    for name, array in from_protobuf.items():
        np.testing.assert_array_equal(from_h5[name], array)
    data = np.load(shared_dir / "nnc" / "lenet_ref.npz")
    np.testing.assert_allclose(import_file(str(nnp)).network.predict(data["x"]), data["y"], **TOL)


@pytest.mark.nnabla
def test_schema_field_numbers_match_nnabla(nnabla):
    theirs = nnabla["results"]["schema"]["fields"]
    ours = schema.messages()
    for message, fields in SCHEMA_MESSAGES.items():
        assert theirs[message] is not None, f"nnabla has no message {message}"
        desc = ours[message].DESCRIPTOR
        for field in fields:
            mine, real = desc.fields_by_name[field], theirs[message][field]
            assert real is not None, f"nnabla's {message} has no field {field}"
            repeated = mine.is_repeated if hasattr(mine, "is_repeated") else mine.label == mine.LABEL_REPEATED
            assert (mine.number, mine.type, repeated) == (real["number"], real["type"], real["repeated"]), f"{message}.{field}"


@pytest.mark.nnabla
@pytest.mark.parametrize("initializer", list(GLOROT_SHAPES))
def test_nnc_glorot_is_untruncated_with_kernel_folded_fans(nnabla, initializer):
    """nnabla's own NNC initialiser: sigma = sqrt(2 / (K * (in + out))), an untruncated normal."""
    got = nnabla["results"][initializer]
    shape = GLOROT_SHAPES[initializer]
    receptive = int(np.prod(shape[2:])) if len(shape) == 4 else 1
    fan_in, fan_out = (shape[1], shape[0]) if len(shape) == 4 else shape
    assert got["sigma"] == pytest.approx(np.sqrt(2.0 / (receptive * (fan_in + fan_out))), rel=1e-12)
    assert got["std"] == pytest.approx(got["sigma"], rel=0.02)
    assert got["max_over_sigma"] > 3.0  # a 2-sigma truncated normal never exceeds 2


# -- --init nnc: Keras' VarianceScaling(1, fan_avg, untruncated_normal) ------------------------------

@pytest.mark.keras
def test_keras_nnc_glorot_statistics(keras):
    from layerlab.keras_build import build_keras

    spec = S.Model(name="big", input_shape=(32, 20, 20), layers=(
        S.Conv2D(name="conv", filters=64, kernel_size=(5, 5), data_format="channels_first",
                 kernel_initializer="nnc_glorot_normal", bias_initializer="zeros"),
        S.Flatten(name="flat"),
        S.Dense(name="dense", units=300, kernel_initializer="nnc_glorot_normal", bias_initializer="zeros"),
    ))
    kmodel = build_keras(spec, seed=0)
    conv, bias = kmodel.get_layer("conv").get_weights()
    sigma = np.sqrt(2.0 / (25 * (32 + 64)))  # NNC: kernel size folded into both fans
    assert conv.std() == pytest.approx(sigma, rel=0.02) and abs(conv.mean()) < 0.05 * sigma
    assert np.abs(conv).max() / sigma > 3.0 and not bias.any()
    dense = kmodel.get_layer("dense").get_weights()[0]
    assert dense.std() == pytest.approx(np.sqrt(2.0 / (dense.shape[0] + 300)), rel=0.02)
    cfg = kmodel.get_layer("conv").get_config()["kernel_initializer"]["config"]
    assert (cfg["scale"], cfg["mode"], cfg["distribution"]) == (1.0, "fan_avg", "untruncated_normal")


def test_seed650_nnc_preset_and_export_initializers(tmp_path):
    from layerlab.presets import seed650

    spec = seed650(kernel_initializer="nnc_glorot_normal", bias_initializer="zeros")
    proto, params, _ = export_network(Network(spec, nnc_init(spec, 0)))
    inits = {v.name: (v.initializer.type, v.initializer.multiplier) for v in proto.network[0].variable if v.type == "Parameter"}
    assert inits["conv1/conv/W"] == ("NormalConvolutionGlorot", 1.0) and inits["conv1/conv/b"] == ("Constant", 0.0)
    assert inits["dense1/affine/W"] == ("NormalAffineGlorot", 1.0)
    assert not params["conv1/conv/b"].any()


# -- round trip and pure-int planning (no nnabla) ------------------------------------------------------

@pytest.mark.parametrize("name", ["seed650", "zoo_cf", "graph", "mobile_cf", "crop_up_cf", "seq_cf", "sep_cf"])
def test_export_then_import_round_trip(tmp_path, name):
    network = _export_nets()[name]
    path = tmp_path / "net.nnp"
    export_file(network, str(path))
    back = import_file(str(path)).network
    x = np.random.default_rng(1).normal(size=(2, *network.spec.input_shape)).astype(np.float32)
    np.testing.assert_allclose(back.predict(x), network.predict(x), **TOL)
    nntxt = tmp_path / "net.nntxt"
    export_file(network, str(nntxt))  # parameters inline
    np.testing.assert_allclose(import_file(str(nntxt)).network.predict(x), network.predict(x), **TOL)


@pytest.mark.parametrize("build", [_export_separable, lambda df: _export_seq(df, exact=True)], ids=["separable", "seq"])
@pytest.mark.parametrize("data_format", FORMATS)
def test_new_layers_come_back_from_nnc_as_the_same_keras_layers(tmp_path, build, data_format):
    """Keras -> .nnp (and -> .sdcproj) -> Keras: a SeparableConv2D exported as NNC builds it
    (depthwise + 1x1) is one SeparableConv2D again, a 1-D pooling exported as a 1-high 2-D pooling
    between Reshapes is the 1-D pooling, an explicit Pad before a convolution is its 'same' or 'causal'."""
    from layerlab.nnc.sdcproj import read_sdcproj, sdcproj_text

    spec = build(data_format)
    network = Network(spec, _random_weights(spec, 5))
    export_file(network, str(tmp_path / "net.nnp"))
    result = import_file(str(tmp_path / "net.nnp"), data_format=data_format)
    assert graph_of(result.network.spec, True) == graph_of(spec, True), result.table()
    x = np.random.default_rng(2).normal(size=(3, *spec.input_shape)).astype(np.float32)
    np.testing.assert_allclose(result.network.predict(x), network.predict(x), **TOL)
    for name, arrays in network.weights.items():
        for key, array in arrays.items():
            np.testing.assert_array_equal(result.network.weights[name][key], array, err_msg=f"{name}/{key}")
    proto, parameters, _ = export_network(network)
    (tmp_path / "net.sdcproj").write_text(sdcproj_text(proto, parameters, "here"))
    nnc, _ = read_sdcproj(tmp_path / "net.sdcproj", params=tmp_path / "net.nnp")
    assert graph_of(import_network(nnc, data_format=data_format).network.spec, True) == graph_of(spec, True)


def test_nnp_is_deterministic(tmp_path):
    network = _export_nets()["seed650"]
    export_file(network, str(tmp_path / "a.nnp"))
    export_file(network, str(tmp_path / "b.nnp"))
    assert (tmp_path / "a.nnp").read_bytes() == (tmp_path / "b.nnp").read_bytes()
    assert sorted(zipfile.ZipFile(tmp_path / "a.nnp").namelist()) == ["network.nntxt", "nnp_version.txt", "parameter.protobuf"]


@pytest.mark.parametrize("n, kernel, stride, pad, ignore_border, out", [
    (25, 2, 2, 0, False, 13), (24, 2, 2, 0, True, 12), (7, 3, 2, 1, True, 4), (6, 3, 1, 1, False, 7),
    (8, 3, 2, 0, False, 4), (5, 2, 2, 1, False, 3), (4, 4, 1, 0, True, 1),
])
def test_pool_length(n, kernel, stride, pad, ignore_border, out):
    assert windows.pool_length(n, kernel, stride, pad, ignore_border) == out


def test_plans():
    assert windows.conv_plan((8, 8), (3, 3), (1, 1), (1, 1), (1, 1)).padding == "same"
    plan = windows.conv_plan((8, 8), (3, 3), (2, 2), (1, 1), (1, 1))
    assert (plan.padding, plan.zero_pad) == ("valid", ((1, 1), (1, 1)))
    assert windows.pool_plan("max", (25, 25), (2, 2), (2, 2), (0, 0), False).padding == "same"
    with pytest.raises(windows.NoExactMapping, match="-inf padding"):
        windows.pool_plan("max", (7, 7), (3, 3), (2, 2), (0, 0), False)  # Keras 'same' pads (1, 1)
    assert windows.pool_plan("max", (7, 7), (3, 3), (2, 2), (0, 0), False, nonnegative_input=True).zero_pad == ((0, 2), (0, 2))
    assert windows.keras_pool_to_nnc("max", (8, 8), (3, 3), (2, 2), "same") == windows.NNCPooling(False, (0, 0), True)
    assert windows.keras_pool_to_nnc("average", (7, 7), (3, 3), (2, 2), "same") == windows.NNCPooling(True, (1, 1), False)


# -- bad input: one clear NNCError each ------------------------------------------------------------------

def _small():
    n = NNCNet((1, 6, 6))
    n.conv(1, 2, (3, 3))
    n.act("Tanh")
    return n


def test_unknown_function_type():
    n = _small()
    n.fn("LeakyReLU")
    with pytest.raises(NNCError, match=r"function 'LeakyReLU' \(LeakyReLU\): NNC function type 'LeakyReLU' is not supported\. Supported: Convolution, MaxPooling"):
        import_network(n.finish().nnc_file())


def test_missing_parameter():
    n = _small().finish()
    nnc = n.nnc_file()
    del nnc.parameters["conv0/conv/W"]
    with pytest.raises(NNCError, match=r"parameter 'conv0/conv/W' \(W\) is missing from the file"):
        import_network(nnc)


def test_shape_mismatch_parameter_and_declared_output():
    nnc = _small().finish().nnc_file()
    nnc.parameters["conv0/conv/b"] = np.zeros(3, np.float32)
    with pytest.raises(NNCError, match=r"shape mismatch: parameter 'conv0/conv/b' is declared \(2,\) but the file holds \(3,\)"):
        import_network(nnc)
    n = _small().finish()
    var = next(v for v in n.network.variable if v.name == "Convolution")
    var.shape.dim.extend([-1, 2, 5, 5])
    with pytest.raises(NNCError, match=r"shape mismatch: output 'Convolution' is declared \(2, 5, 5\) but the function computes \(2, 4, 4\)"):
        import_network(n.nnc_file())


def test_no_exact_keras_mapping_is_an_error():
    n = NNCNet((1, 7, 7))
    n.act("Tanh")
    n.pool("AveragePooling", (3, 3), (2, 2), ignore_border=False, including_pad=False)
    with pytest.raises(NNCError, match=r"AveragePooling.*no exact Keras equivalent: .*padding left out of the divisor.*Fix: in NNC use IgnoreBorder=True"):
        import_network(n.finish().nnc_file())


def test_max_pooling_keras_cannot_pad_is_built_from_border_copies():
    """3x3 stride 2 clipped on 7x7: NNC pads (0, 2) with -inf, Keras 'same' would pad (1, 1). The
    import repeats the last row and column twice and pools 'valid' (nnabla checks the numbers in
    test_pooling_sweep_is_exact_or_refused); the import report says what it did."""
    n = NNCNet((1, 7, 7))
    n.act("Tanh")
    n.pool("MaxPooling", (3, 3), (2, 2), ignore_border=False)
    result = import_network(n.finish().nnc_file())
    types = [l.type for l in result.network.spec.layers]
    assert types == ["Activation", "Cropping2D", "UpSampling2D", "Concatenate", "Cropping2D", "UpSampling2D", "Concatenate", "MaxPooling2D"]
    assert result.network.spec.output_shape == (1, 4, 4)
    assert "border cells repeated" in result.rows[-1].caveat and "((0, 2), (0, 2))" in result.rows[-1].caveat


def test_dropout_is_identity_in_keras():
    n = _small()
    n.fn("Dropout", None, "dropout_param", p=0.3)
    result = import_network(n.finish().nnc_file())
    layer = result.network.spec.layers[-1]
    assert isinstance(layer, S.Dropout) and layer.rate == pytest.approx(0.3)
    assert "nnabla drops at every forward pass" in result.rows[-1].caveat
    x = np.random.default_rng(0).normal(size=(2, 1, 6, 6)).astype(np.float32)
    trace = result.network.trace(x)
    np.testing.assert_array_equal(trace[layer.name], trace["Tanh"])


def test_unknown_network_and_bad_data_format(shared_dir):
    with pytest.raises(NNCError, match=r"no network named 'Main'\. Networks: MainRuntime"):
        import_file(str(shared_dir / "nnc" / "blog_cnn.nnp"), network="Main")
    with pytest.raises(NNCError, match="data_format='nhwc' is not supported"):
        import_file(str(shared_dir / "nnc" / "blog_cnn.nnp"), data_format="nhwc")


def test_corrupt_archives(tmp_path, monkeypatch):
    garbage = tmp_path / "garbage.nnp"
    garbage.write_bytes(b"this is not a zip file")
    with pytest.raises(NNCError, match=r"garbage\.nnp: not a valid \.nnp \(zip\) archive"):
        files.read(garbage)
    good = _small().finish().write(tmp_path / "good.nnp").read_bytes()
    truncated = tmp_path / "truncated.nnp"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(NNCError, match=r"truncated\.nnp: not a valid \.nnp"):
        files.read(truncated)
    empty = tmp_path / "empty.nnp"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("nnp_version.txt", "0.1")
    with pytest.raises(NNCError, match="holds no network"):
        files.read(empty)
    slip = tmp_path / "slip.nnp"
    with zipfile.ZipFile(slip, "w") as archive:
        archive.writestr("../evil.nntxt", "network {}")
    with pytest.raises(NNCError, match="unsafe path"):
        files.read(slip)
    monkeypatch.setenv("LAYERLAB_MAX_BYTES", "100")
    with pytest.raises(LimitError, match=r"good\.nnp: the archive's members would take [\d.]+ KiB, more than the limit of 100 bytes"):
        files.read(tmp_path / "good.nnp")


def test_bad_text_and_binary(tmp_path):
    text = tmp_path / "bad.nntxt"
    text.write_text("network { name: \"N\" variable { name: }\n")
    with pytest.raises(NNCError, match=r"bad\.nntxt: not valid nnabla protobuf text"):
        files.read(text)
    params_only = tmp_path / "parameter.protobuf"
    params_only.write_bytes(files.parameters_message({"w": np.ones(2, np.float32)}).SerializeToString())
    assert files.read(params_only).parameters["w"].tolist() == [1.0, 1.0]
    with pytest.raises(NNCError, match="holds no network, only parameters"):
        import_file(str(params_only))
    binary = tmp_path / "bad.protobuf"
    binary.write_bytes(b"\xc2\x0c\xff\xff\xff")
    with pytest.raises(NNCError, match=r"not a valid binary nnabla protobuf"):
        files.read(binary)


def test_export_errors():
    spec = S.Model(name="m", input_shape=(1, 8, 8), layers=(
        S.AveragePooling2D(name="avg", pool_size=(4, 4), strides=(1, 1), padding="same", data_format="channels_first"),))
    with pytest.raises(NNCError, match=r"layer 'avg' \(AveragePooling2D\): no exact NNC equivalent"):
        export_network(Network(spec, {}))
    spec = S.Model(name="m", input_shape=(4,), layers=(S.Dense(name="d", units=2, activation="elu"),))
    with pytest.raises(NNCError, match=r"activation 'elu' in 'd_elu' has no NNC export"):
        export_network(Network(spec, nnc_init(spec)))
    spec = S.Model(name="m", input_shape=(5, 4, 3), layers=(
        S.GlobalAveragePooling2D(name="gap", keepdims=True), S.Multiply(name="gate", inputs=("input", "gap"))))
    with pytest.raises(NNCError, match=r"layer 'gate' \(Multiply\): it broadcasts inputs of shapes .* one shape only"):
        export_network(Network(spec, {}))


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.nnp"
    bad.write_bytes(b"nope")
    assert cli(["nnc", "import", str(bad), "--out", str(tmp_path / "m.keras")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("layerlab nnc: NNCError:") and "not a valid .nnp" in err and "\n" not in err
    assert cli(["nnc", "export", "seed650", "--out", str(tmp_path / "x.onnx")]) == 1
    assert "expected an .nnp" in capsys.readouterr().err


def test_cli_export_spec(tmp_path, capsys):
    out = tmp_path / "seed.nnp"
    assert cli(["nnc", "export", "seed650", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "spec without weights" in printed and "ignore_border=false, pad (0, 0)" in printed
    assert import_file(str(out)).network.spec.param_count == 650


def test_sdcproj_writer_round_trips_seed650(tmp_path):
    """Keras -> .sdcproj -> Keras gives the spec the .nnp route gives, the same numbers with the
    .nnp's parameters, and writing it again gives the same project, byte for byte; the file passes
    the reader NNC's own samples go through."""
    from layerlab.cli import main
    from layerlab.nnc.exporter import export_network
    from layerlab.nnc.sdcproj import read_sdcproj, sdcproj_text

    project, params = tmp_path / "seed650.sdcproj", tmp_path / "seed650.nnp"
    assert main(["nnc", "export", "seed650", "--out", str(project)]) == 0
    assert main(["nnc", "export", "seed650", "--out", str(params)]) == 0
    text = project.read_bytes().decode("utf-8")
    assert "[Layer_11]" in text and "Type=CategoricalCrossEntropy" in text and "mnist_training.csv" in text
    nnc, notes = read_sdcproj(project, params=params)
    assert any("training loss" in n for n in notes)
    from_project = import_network(nnc).network
    from_nnp = import_file(str(params)).network
    a, b = from_project.spec.to_dict(), from_nnp.spec.to_dict()
    assert a["input_shape"] == b["input_shape"]  # the name is the network's: Main, MainRuntime
    assert graph_of(from_project.spec) == graph_of(from_nnp.spec)
    x = np.random.default_rng(3).normal(size=(4, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(from_project.predict(x), from_nnp.predict(x))
    proto, parameters, _ = export_network(from_project)
    assert sdcproj_text(proto, parameters, "again") == text


def test_sdcproj_writer_lists_what_a_project_cannot_hold(tmp_path):
    from layerlab.nnc.exporter import export_network
    from layerlab.nnc.sdcproj import sdcproj_text
    from layerlab.presets import seed650

    spec = seed650()
    proto, parameters, _ = export_network(Network(spec, _random_weights(spec, 0)))
    for fn in proto.network[0].function[:3]:
        fn.type = "Deconvolution" if fn.type == "Convolution" else "LSTM"
    with pytest.raises(NNCError, match=r"^here: a \.sdcproj has no layer for Deconvolution x1 \(conv1\); LSTM x2 \(maxpool1, tanh1\)\. "
                                       r"Export --out NAME\.nnp instead"):
        sdcproj_text(proto, parameters, "here")


NNC_GOLDEN = Path(__file__).parent / "golden" / "nnc_console"


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("case", sorted(p.stem for p in NNC_GOLDEN.glob("*.nntxt")))
def test_sdcproj_reader_agrees_with_nnc_own_converter(case, data_format, shared_dir):
    """Neural Network Console's own converter (``nncd_console_cli_util create_prototxt``, recorded
    by scripts/nnc_console_golden.py) and layerlab's reader make the same network of each project:
    the same Keras layers when imported, the same shapes (the importer checks NNC's declared ones)
    and the same outputs with the same parameters. The written_* projects are what layerlab's
    writer makes today (so NNC's converter judges the writer too)."""
    from layerlab.nnc.exporter import export_network
    from layerlab.nnc.sdcproj import sdcproj_text

    project = NNC_GOLDEN / f"{case}.sdcproj"
    if not project.exists():  # one of NNC's own samples in ../shared/nnc
        project = shared_dir / "nnc" / f"{case}.sdcproj"
    if case.startswith("written_"):
        name = case.removeprefix("written_")
        if name == "seed650":
            spec = load_spec("seed650")
            net = Network(spec, nnc_init(spec, seed=0))  # as `layerlab nnc export seed650` does
        else:
            net = layerlab.load(shared_dir / "models" / "mlperf_tiny" / f"{name}.h5")
        proto, parameters, _ = export_network(net)
        assert sdcproj_text(proto, parameters, name) == project.read_bytes().decode("utf-8"), \
            "the writer changed: run scripts/nnc_console_golden.py with NNC's console tool"
    ours, _ = read_sdcproj(project, seed=4)
    theirs = files.read(NNC_GOLDEN / f"{case}.nntxt")
    theirs.parameters = ours.parameters  # NNC's file declares the parameters; layerlab's reader made them
    a, b = import_network(ours, data_format=data_format).network, import_network(theirs, data_format=data_format).network
    assert graph_of(a.spec) == graph_of(b.spec)
    assert a.spec.input_shape == b.spec.input_shape
    x = np.random.default_rng(5).uniform(0, 1, (2, *a.spec.input_shape)).astype(np.float32)
    np.testing.assert_array_equal(a.predict(x), b.predict(x))


def test_sdcproj_reader_pins_aliases_and_graph_errors(tmp_path):
    """Inputs in pin order whatever the link order; Dropout and Identity are no function; a layer
    reading the wrong number of layers, and a loop, are one clear line each."""
    nnc, notes = read_sdcproj(_write(tmp_path / "m.sdcproj", MOBILE_PROJECT), seed=1)
    net = nnc.proto.network[0]
    sub = next(f for f in net.function if f.type == "Sub2")
    assert list(sub.input) == ["dw_Output", "pw_Output"]  # pin 0 first although its link comes second
    assert "Dropout" not in [f.type for f in net.function]
    assert any("[Layer_9] (Dropout 'drop') is the identity at inference" in n for n in notes)
    bn = next(f for f in net.function if f.type == "BatchNormalization")
    assert list(bn.batch_normalization_param.axes) == [1] and not bn.batch_normalization_param.batch_stat
    assert nnc.parameters["bn1/bn/beta"].shape == (1, 8, 1, 1) and np.all(nnc.parameters["bn1/bn/var"] == 0.5)
    dw = next(f for f in net.function if f.type == "DepthwiseConvolution").depthwise_convolution_param
    assert (list(dw.pad.dim), dw.multiplier) == ([1, 1], 2) and nnc.parameters["dw/depthwise_conv/W"].shape == (16, 3, 3)
    shapes = {v.name: tuple(v.shape.dim[1:]) for v in net.variable}
    assert shapes["cat_Output"] == (24, 12, 12) and shapes["pool_Output"] == (24, 6, 6) and shapes["fc_Output"] == (10,)
    with pytest.raises(NNCError, match=r"a link joins layer 4 to 99, and one of them does not exist"):
        read_sdcproj(_write(tmp_path / "a.sdcproj", _sdcproj(MOBILE_LAYERS, [*MOBILE_LINKS, (4, 99, 0)])))
    with pytest.raises(NNCError, match=r"^\[Layer_6\] \(Sub2 'sub'\): a link arrives on pin \[1, 2\]; its connectors are pins 1-1 \(R\)"):
        read_sdcproj(_write(tmp_path / "b.sdcproj", _sdcproj(MOBILE_LAYERS, [*MOBILE_LINKS, (0, 7, 2)])))
    with pytest.raises(NNCError, match=r"^\[Layer_6\] \(Sub2 'sub'\): 2 links on its main input; its second operand goes to its R"):
        read_sdcproj(_write(tmp_path / "b2.sdcproj", _sdcproj(MOBILE_LAYERS, [(s, d, 0) for s, d, _ in MOBILE_LINKS])))
    with pytest.raises(NNCError, match=r"^\[Layer_7\] \(Concatenate 'cat'\): a link arrives on pin \[1\]; all its inputs are on pin 0"):
        read_sdcproj(_write(tmp_path / "b3.sdcproj", _sdcproj(MOBILE_LAYERS, [(s, d, 1 if (s, d) == (4, 8) else p) for s, d, p in MOBILE_LINKS])))
    lone = [link for link in MOBILE_LINKS if link != (4, 8, 0)]
    with pytest.raises(NNCError, match=r"\[Layer_7\] \(Concatenate 'cat'\): reads 1 layers; NNC's Concatenate reads 2 or more layers"):
        read_sdcproj(_write(tmp_path / "c.sdcproj", _sdcproj(MOBILE_LAYERS, lone)))
    loop = _sdcproj([(0, "Input", {"Size": "4"}), (1, "Add2", {}), (2, "ReLU", {})], [(0, 1, 0), (2, 1, 0), (1, 2, 0)])
    with pytest.raises(NNCError, match=r"the links form a loop \(\[Layer_1\] \(Add2 '\?'\), \[Layer_2\] \(ReLU '\?'\)\)"):
        read_sdcproj(_write(tmp_path / "loop.sdcproj", loop))


def test_sdcproj_networks_units_and_expressions(tmp_path):
    """A project of several networks reads the executor's (or --network's); Units expand with their
    Argument; property values may be expressions; an unknown network is one clear line."""
    path = _write(tmp_path / "u.sdcproj", PROBE_PROJECTS["probe_unit"])
    nnc, notes = read_sdcproj(path, seed=2)
    assert notes[0].endswith("network 'Main' of Block, Main (choose with --network)")
    assert any("(Unit 'first'): network 'Block' expanded in place (3 layers)" in n for n in notes)
    functions = [f.name for f in nnc.proto.network[0].function]
    assert functions == ["first/wide", "first/relu", "first/narrow", "second/wide", "second/relu", "second/narrow", "fc"]
    assert nnc.parameters["second/narrow/conv/W"].shape == (3, 8, 1, 1)  # OutMaps Maps/2-1, Maps = 8
    with pytest.raises(NNCError, match=r"no network 'Nope'; the project has Block, Main"):
        read_sdcproj(path, network="Nope")
    text = PROBE_PROJECTS["probe_conv"].replace("Property_1_Value=4\r\n", "Property_1_Value=Input[0]+1\r\n", 1)
    text = text.replace("Property_1_Value=0.5", "Property_1_Value=1/4")
    nnc, _ = read_sdcproj(_write(tmp_path / "e.sdcproj", text))
    assert nnc.parameters["same_even/conv/W"].shape[0] == 4  # Input[0] + 1 with 3 input channels
    half = next(f for f in nnc.proto.network[0].function if f.name == "half")
    assert half.mul_scalar_param.val == 0.25
    with pytest.raises(NNCError, match=r"OutMaps=.__import__\(.os.\). is not a list of integers"):
        read_sdcproj(_write(tmp_path / "x.sdcproj", text.replace("Input[0]+1", "__import__('os')")))


def _write(path, text: str):
    path.write_bytes(text.encode("utf-8"))
    return path


