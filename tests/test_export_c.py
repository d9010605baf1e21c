"""C export: generated C compiled with -Werror, run, and compared with the engine (and Keras).

The engine is itself tested against Keras (tests/test_engine.py); seed650 is also compared with
Keras directly here. int8 is checked on a model trained in the test (a closed-form fit) on the
real MNIST test set. Arm tests build for a Cortex-M4F and run under QEMU.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import random_weights, require_module, require_path, require_tool
from layerlab import spec as S
from layerlab.errors import ExportError, OutputError
from layerlab.export.c import export_c
from layerlab.export.c import toolchain as T
from layerlab.export.c import verify as V
from layerlab.export.c.codegen import generate
from layerlab.export.c.names import c_comment, c_identifier
from layerlab.export.c.plan import lower
from layerlab.network import Network
from layerlab.presets import seed650

CF, CL = "channels_first", "channels_last"


@pytest.fixture(scope="module")
def cc() -> str:
    return require_tool("cc")


def c_predict(network: Network, x: np.ndarray, workdir: Path, cc: str, name: str = "model") -> np.ndarray:
    """Generate float32 C for ``network``, build it with -Werror and run it on ``x``."""
    prefix = c_identifier(name)
    plan = lower(network.spec, network.weights)
    files = generate(plan, None, prefix=prefix, model_name=network.spec.name, input_format="test").files
    src = workdir / "src"
    for rel, text in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    build = workdir / "build"
    build.mkdir()
    exe = V.build_host(src, build, prefix, cc)
    return V.run_harness(exe, x, int(np.prod(network.spec.output_shape)))


def normal_inputs(spec: S.Model, n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *spec.input_shape)).astype(np.float32)


def assert_matches_engine(network: Network, x: np.ndarray, ours: np.ndarray) -> None:
    ref = network.predict(x).reshape(len(x), -1)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)
    if ref.shape[1] > 1:
        assert np.array_equal(np.argmax(ours, axis=1), np.argmax(ref, axis=1))


# ---- seed650 ----------------------------------------------------------------------------------

@pytest.mark.cc
@pytest.mark.parametrize("data_format", [CF, CL])
def test_seed650_float_matches_engine(tmp_path, cc, data_format):
    spec = seed650(data_format)
    network = Network(spec, random_weights(spec, 7))
    x = np.random.default_rng(2).random((300, *spec.input_shape), dtype=np.float32)  # pixel-like
    ours = c_predict(network, x, tmp_path, cc, name="seed650")
    assert_matches_engine(network, x, ours)


@pytest.mark.cc
@pytest.mark.keras
@pytest.mark.parametrize("data_format", [CF, CL])
def test_seed650_float_matches_keras(tmp_path, cc, keras, data_format):
    from layerlab.keras_build import build_keras

    spec = seed650(data_format)
    weights = random_weights(spec, 8)
    x = normal_inputs(spec, 64)
    ours = c_predict(Network(spec, weights), x, tmp_path, cc)
    ref = np.asarray(build_keras(spec, weights).predict(x, verbose=0))
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


@pytest.mark.cc
@pytest.mark.mnist
def test_seed650_export_verifies_on_mnist(tmp_path, cc, mnist_dir):
    spec = seed650(CF)
    report = export_c(Network(spec, random_weights(spec, 9)), tmp_path / "out", name="seed650", verify_images=300, data_dir=mnist_dir)
    text = report.read_text()
    assert "float32 on 300 MNIST test images" in text and ": PASS" in text
    assert sorted(p.name for p in report.parent.iterdir()) == ["Makefile", "cortex-m", "layerlab-manifest.json", "main.c", "report.txt", "seed650.c", "seed650.h"]
    source = (report.parent / "seed650.c").read_text()
    assert "malloc" not in source
    # conv1 + pool + tanh fused (5x13x13 = 845) and conv2's output (a later step reuses conv1's slot)
    assert "step0_conv1(in, arena);" in source and "step2_conv3(arena + 845, arena);" in source
    assert "Arena: one static array of" in text and "peak:" in text


# ---- a grid of small models -------------------------------------------------------------------

def conv(name="conv", df=CL, **kw):
    return S.Conv2D(name=name, data_format=df, **{"filters": 3, "kernel_size": 3, **kw})


def dw(name="dw", df=CL, **kw):
    return S.DepthwiseConv2D(name=name, data_format=df, **{"kernel_size": 3, **kw})


GRID = {
    # input shape, layers
    "stride2_same_odd_7": ((7, 7, 2), [conv(strides=2, padding="same")]),
    "stride2_same_even_8": ((8, 8, 2), [conv(strides=2, padding="same")]),
    "k4_stride2_same_9": ((9, 9, 1), [conv(kernel_size=4, strides=2, padding="same")]),
    "nonsquare": ((9, 7, 2), [conv(kernel_size=(3, 2), strides=(2, 1), padding="same")]),
    "dilation_same": ((9, 9, 2), [conv(dilation_rate=2, padding="same")]),
    "dilation_valid_cf": ((2, 9, 9), [conv(df=CF, dilation_rate=(2, 3), padding="valid")]),
    "no_bias_1x1_output": ((3, 3, 4), [conv(kernel_size=3, use_bias=False)]),
    # every position in full blocks, no border: no one-position loop (GCC once warned on it, dead)
    "pointwise_stride2_same_32": ((32, 32, 16), [conv(filters=8, kernel_size=1, strides=2, padding="same")]),
    "wide_conv_groups": ((10, 11, 3), [conv(filters=13, padding="same", activation="relu")]),
    "stride2_cf_planar": ((3, 12, 12), [conv(df=CF, filters=7, strides=2, padding="same")]),
    "conv_maxpool_same_odd": ((9, 9, 2), [conv(padding="same"), S.MaxPooling2D(name="pool", pool_size=2, padding="same")]),
    "conv_avgpool_same_odd": ((9, 9, 2), [conv(padding="same"), S.AveragePooling2D(name="pool", pool_size=2, padding="same")]),
    "conv_maxpool3_same_pad_top_left": ((9, 9, 2), [conv(), S.MaxPooling2D(name="pool", pool_size=3, padding="same")]),
    "conv_avgpool3_same_pad_top_left_cf": ((2, 9, 9), [conv(df=CF, activation="tanh"),
                                                       S.AveragePooling2D(name="pool", pool_size=3, padding="same", data_format=CF),
                                                       S.Activation(name="sig", activation="sigmoid")]),
    "conv_relu_maxpool3_cf": ((2, 11, 11), [conv(df=CF, activation="relu"), S.MaxPooling2D(name="pool", pool_size=3, data_format=CF)]),
    "avgpool3_stride1_same": ((6, 7, 2), [S.AveragePooling2D(name="pool", pool_size=3, strides=1, padding="same")]),
    "maxpool3_stride1_same_cf": ((2, 6, 7), [S.MaxPooling2D(name="pool", pool_size=3, strides=1, padding="same", data_format=CF)]),
    "zeropad_folded": ((6, 6, 2), [S.ZeroPadding2D(name="zp", padding=((1, 2), (0, 3))), conv(strides=2)]),
    "zeropad_then_maxpool": ((5, 5, 2), [S.ZeroPadding2D(name="zp", padding=1), S.MaxPooling2D(name="pool", pool_size=2)]),
    "flatten_cf_dense": ((3, 4, 5), [S.Flatten(name="flat", data_format=CF), S.Dense(name="dense", units=6)]),
    "conv_flatten_cf_dense": ((2, 6, 6), [conv(df=CF), S.Flatten(name="flat", data_format=CF), S.Dense(name="dense", units=4)]),
    "conv_flatten_cl_on_cf": ((2, 6, 6), [conv(df=CF), S.Flatten(name="flat", data_format=CL), S.Dense(name="dense", units=4)]),
    "conv_output_cf": ((2, 6, 5), [conv(df=CF, padding="same")]),
    "batchnorm_conv_cf": ((2, 7, 7), [conv(df=CF), S.BatchNormalization(name="bn", axis=1), S.Activation(name="t", activation="tanh")]),
    "batchnorm_conv_cl_nobias": ((7, 7, 2), [conv(use_bias=False), S.Dropout(name="drop", rate=0.3), S.BatchNormalization(name="bn")]),
    "batchnorm_dense": ((12,), [S.Dense(name="dense", units=5), S.BatchNormalization(name="bn", center=False)]),
    "dense_tiles_no_bias": ((37,), [S.Dense(name="dense", units=35, use_bias=False, activation="relu"), S.Dense(name="d2", units=16)]),
    "batchnorm_standalone": ((6, 6, 2), [S.MaxPooling2D(name="pool"), S.BatchNormalization(name="bn", scale=False)]),
    "rescaling_reshape": ((36,), [S.Rescaling(name="r", scale=0.5, offset=-1.0), S.Reshape(name="rs", target_shape=(6, 6, 1)), conv(kernel_size=2)]),
    "softmax_on_cf_width": ((2, 3, 5), [S.Activation(name="sm", activation="softmax")]),
    "dense_softmax": ((7,), [S.Dense(name="dense", units=4, activation="softmax")]),
    "conv_activation_chain": ((5, 5, 3), [conv(padding="same", activation="elu"), S.Activation(name="s", activation="sigmoid"),
                                          S.Activation(name="ss", activation="softsign")]),
    "elementwise_first": ((4, 5, 2), [S.Rescaling(name="r", scale=2.0, offset=0.5), S.Activation(name="t", activation="tanh"),
                                      S.MaxPooling2D(name="pool", pool_size=2, padding="same")]),
    # DepthwiseConv2D: the cases of STYLE.md, then the DS-CNN block (depthwise, pointwise, BN, ReLU)
    "dw_stride2_same_odd_7": ((7, 7, 3), [dw(strides=2, padding="same")]),
    "dw_stride2_same_even_8_m2": ((8, 8, 2), [dw(strides=2, padding="same", depth_multiplier=2)]),
    "dw_dilation_same_cf": ((3, 9, 9), [dw(df=CF, dilation_rate=2, padding="same")]),
    "dw_nonsquare_no_bias_1x1": ((3, 2, 4), [dw(kernel_size=(3, 2), use_bias=False)]),
    "dw_bn_relu6_cf_m3": ((2, 6, 7), [dw(df=CF, depth_multiplier=3, padding="same"), S.BatchNormalization(name="bn", axis=1),
                                      S.ReLU(name="r6", max_value=6.0)]),
    "zeropad_folded_into_dw_stride2": ((7, 8, 3), [S.ZeroPadding2D(name="zp", padding=((0, 1), (1, 0))), dw(strides=2)]),
    # Normalization as a BatchNormalization (desugar.py): adapted, and given with invert and a variance of 0
    "normalization_adapted_conv": ((6, 6, 2), [S.Normalization(name="norm"), conv(padding="same")]),
    "normalization_given_invert_cf": ((2, 5, 5), [
        S.Normalization(name="n", axis=1, mean=(0.5, -1.0), variance=(4.0, 0.0)), S.Activation(name="t", activation="tanh"),
        S.Normalization(name="back", axis=1, mean=(2.0, 0.25), variance=(0.5, 9.0), invert=True)]),
    # SeparableConv2D and the 1-D layers, as their 2-D forms (desugar.py)
    "separable_stride2_same_m2": ((7, 8, 3), [S.SeparableConv2D(name="sep", filters=4, kernel_size=3, strides=2, padding="same",
                                                                depth_multiplier=2, activation="relu")]),
    "separable_cf_dilation_bn": ((2, 9, 9), [S.SeparableConv2D(name="sep", filters=3, kernel_size=3, dilation_rate=2, data_format=CF,
                                                               use_bias=False), S.BatchNormalization(name="bn", axis=1)]),
    "conv1d_same_stride2_odd": ((9, 3), [S.Conv1D(name="c1", filters=4, kernel_size=3, strides=2, padding="same")]),
    "conv1d_causal_dilation": ((10, 2), [S.Conv1D(name="c1", filters=3, kernel_size=3, dilation_rate=2, padding="causal",
                                                  activation="tanh"), S.Conv1D(name="c2", filters=2, kernel_size=2, padding="causal")]),
    "conv1d_cf_pool_gap": ((2, 12), [S.Conv1D(name="c1", filters=3, kernel_size=3, data_format=CF),
                                     S.MaxPooling1D(name="p", pool_size=2, padding="same", data_format=CF),
                                     S.GlobalAveragePooling1D(name="g", data_format=CF)]),
    "pool1d_avg_zeropad_gmp_keepdims": ((9, 2), [S.ZeroPadding1D(name="z", padding=(2, 1)),
                                                 S.AveragePooling1D(name="a", pool_size=3, strides=2, padding="same"),
                                                 S.GlobalMaxPooling1D(name="g", keepdims=True), S.Flatten(name="f")]),
    "prelu_per_channel_cf": ((2, 5, 6), [conv(df=CF, padding="same"), S.PReLU(name="pr", shared_axes=(2, 3))]),
    "prelu_full_then_dense": ((4, 3, 2), [S.PReLU(name="pr"), S.Flatten(name="f"), S.Dense(name="d", units=3)]),
    "dscnn_block": ((10, 4, 4), [dw(kernel_size=(10, 4), strides=(2, 2), padding="same", use_bias=False),
                                 S.Conv2D(name="pw", filters=6, kernel_size=1, use_bias=False), S.BatchNormalization(name="bn"),
                                 S.Activation(name="relu", activation="relu"), S.Flatten(name="flat"), S.Dense(name="d", units=3)]),
}
ACTIVATIONS = ["relu", "relu6", "leaky_relu", "tanh", "sigmoid", "hard_sigmoid", "softsign", "softplus", "elu", "selu",
               "swish", "silu", "hard_silu", "hard_swish", "gelu", "exponential", "linear"]


@pytest.mark.cc
@pytest.mark.parametrize("case", sorted(GRID))
def test_small_models_match_engine(tmp_path, cc, case, cases=GRID):
    input_shape, layers = cases[case]
    spec = S.Model(name=case, input_shape=input_shape, layers=tuple(layers))
    network = Network(spec, random_weights(spec, 11))
    x = normal_inputs(spec, 40)
    assert_matches_engine(network, x, c_predict(network, x, tmp_path, cc))


@pytest.mark.cc
def test_every_activation_matches_engine(tmp_path, cc):
    """All element-wise activations, as layers after a conv and as a conv's own argument."""
    layers = [conv(name="c0", filters=4, padding="same", activation="elu")]
    layers += [S.Activation(name=f"a_{a}", activation=a) for a in ACTIVATIONS if a != "exponential"]
    spec = S.Model(name="acts", input_shape=(5, 5, 3), layers=tuple(layers))
    network = Network(spec, random_weights(spec, 12))
    x = normal_inputs(spec, 40)
    assert_matches_engine(network, x, c_predict(network, x, tmp_path / "a", cc))
    spec = S.Model(name="exp", input_shape=(5, 5, 3), layers=(conv(activation="exponential"), S.Activation(name="s", activation="swish")))
    network = Network(spec, random_weights(spec, 13))
    x = x * np.float32(0.3)  # exp(x) of order 1, where the absolute tolerance applies
    assert_matches_engine(network, x, c_predict(network, x, tmp_path / "b", cc))


@pytest.mark.cc
def test_tanh_rational_form_is_within_4e7(tmp_path, cc):
    """ll_tanh (the rational fit) against float64 tanh over [-12, 12], through a tanh layer."""
    spec = S.Model(name="tanh", input_shape=(4096,), layers=(S.Activation(name="t", activation="tanh"),))
    network = Network(spec, {})
    x = np.linspace(-12, 12, 4096 * 6, dtype=np.float32).reshape(6, 4096)
    ours = c_predict(network, x, tmp_path, cc)
    assert np.max(np.abs(ours.astype(np.float64) - np.tanh(x.astype(np.float64)))) < 4e-7


# ---- int8 -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_tiny(mnist_dir):
    """Conv(8, 5x5) + maxpool + tanh + Dense(10) + softmax on MNIST: random conv filters, the dense
    layer fitted by ridge regression on 20,000 training images (a second's work, ~95% accuracy)."""
    from layerlab.data import load_mnist

    data = load_mnist(mnist_dir)
    spec = S.Model(name="tiny", input_shape=(1, 28, 28), layers=(
        S.Conv2D(name="conv", filters=8, kernel_size=5, data_format=CF),
        S.MaxPooling2D(name="pool", pool_size=2, padding="same", data_format=CF),
        S.Activation(name="tanh", activation="tanh"),
        S.Flatten(name="flat", data_format=CF),
        S.Dense(name="dense", units=10),
        S.Activation(name="softmax", activation="softmax"),
    ))
    rng = np.random.default_rng(5)
    conv_w = {"kernel": (rng.standard_normal((5, 5, 1, 8)) / 5).astype(np.float32), "bias": np.zeros(8, np.float32)}
    features = S.Model(name="f", input_shape=spec.input_shape, layers=spec.layers[:4])
    x = data.x_train[:20000].astype(np.float32)[:, None] / 255
    h = Network(features, {"conv": conv_w}).predict(x).astype(np.float64)
    h1 = np.concatenate([h, np.ones((len(h), 1))], axis=1)
    target = np.eye(10)[data.y_train[:20000]]
    solution = np.linalg.solve(h1.T @ h1 + 1.0 * np.eye(h1.shape[1]), h1.T @ target) * 8.0  # sharper softmax
    weights = {"conv": conv_w, "dense": {"kernel": solution[:-1].astype(np.float32), "bias": solution[-1].astype(np.float32)}}
    return Network(spec, weights)


@pytest.mark.cc
@pytest.mark.mnist
def test_int8_accuracy_within_03_points_of_float(tmp_path, cc, mnist_dir, trained_tiny):
    report = export_c(trained_tiny, tmp_path / "q", name="tiny", int8=True, calibration=500, data_dir=mnist_dir)
    text = report.read_text()
    line = next(l for l in text.splitlines() if l.strip().startswith("int8 on 10000 MNIST test images"))
    assert line.endswith("PASS")
    float_acc = float(line.split("vs float ")[1].split("%")[0])
    assert float_acc > 90.0  # a real model, not chance
    header = (report.parent / "tiny.h").read_text()
    assert "void tiny_predict_q(const int8_t *in, int8_t *out);" in header and "#define TINY_OUTPUT_IS_LOGITS 1" in header
    assert "table [tanh]" in text


INT8_CASES = ["stride2_same_odd_7", "k4_stride2_same_9", "dilation_same", "wide_conv_groups", "stride2_cf_planar",
              "conv_maxpool_same_odd", "conv_avgpool_same_odd", "conv_relu_maxpool3_cf", "conv_maxpool3_same_pad_top_left",
              "conv_avgpool3_same_pad_top_left_cf", "avgpool3_stride1_same", "maxpool3_stride1_same_cf", "zeropad_folded",
              "zeropad_then_maxpool", "flatten_cf_dense", "conv_flatten_cl_on_cf", "conv_output_cf", "batchnorm_conv_cf",
              "batchnorm_dense", "rescaling_reshape", "dense_softmax", "conv_activation_chain", "elementwise_first",
              "dw_stride2_same_odd_7", "dw_stride2_same_even_8_m2", "dw_dilation_same_cf", "dw_bn_relu6_cf_m3", "dscnn_block",
              "zeropad_folded_into_dw_stride2", "separable_stride2_same_m2", "separable_cf_dilation_bn", "conv1d_same_stride2_odd",
              "conv1d_causal_dilation", "conv1d_cf_pool_gap", "pool1d_avg_zeropad_gmp_keepdims"]


@pytest.mark.cc
@pytest.mark.parametrize("case", INT8_CASES)
def test_int8_small_models_track_the_engine(tmp_path, cc, case):
    """int8 code for each layer arrangement stays within a few quantization steps of float: a gross
    error (a wrong scale, index or table) would be off by the output's whole range."""
    input_shape, layers = GRID[case]
    assert_int8_tracks(tmp_path, cc, S.Model(name=case, input_shape=input_shape, layers=tuple(layers)))


def test_equal_steps_share_one_function_kept_from_constant_propagation():
    """Steps whose code is the same but for its name (here the first and last of three remaps, of
    one shape and between the same buffers) call one function, marked LL_NOIPA: GCC 12.2 at -O2
    dropped both calls of such a function (test_graphs_match_engine[three_gates_of_one_shape] runs it)."""
    input_shape, layers = GRAPHS["three_gates_of_one_shape"]
    spec = S.Model(name="gates", input_shape=input_shape, layers=layers)
    for int8 in (False, True):
        plan = lower(spec, random_weights(spec, 1))
        qplan = None
        if int8:
            from layerlab.export.c.quantize import quantize

            qplan = quantize(plan, random_weights(spec, 1), normal_inputs(spec, 20))
        source = generate(plan, qplan, prefix="g", model_name="gates", input_format="test").files["g.c"]
        first, _, last = [step for step in plan.steps if step.kind == "remap"]  # the second of another shape
        assert first.output == last.output and (int8 or (first.srcs, first.dst) == (last.srcs, last.dst))
        names = re.findall(r"^(?:LL_\w+ )*static void (step\d+_remap)\(", source, re.M)
        assert len(names) == 2 and source.count(f"    {names[0]}(") == 2
        assert f"LL_NOIPA static void {names[0]}(" in source and f"LL_NOIPA static void {names[1]}(" not in source
        assert "#define LL_NOIPA __attribute__((noipa))" in source


def test_int8_calibrates_a_merge_on_the_activation_it_reads():
    """A merge reading a conv's own activation is calibrated on that activation's values (the
    calibration model splits the activation out and the merge must read the split-out layer):
    its range is the engine's."""
    from layerlab.export.c.quantize import calibrate

    spec = S.Model(name="se", input_shape=(5, 4, 6), layers=_squeeze_excite())
    network = Network(spec, random_weights(spec, 3))
    x = normal_inputs(spec, 50)
    bounds = calibrate(lower(spec, network.weights), network.weights, x)
    excite = network.trace(x)["excite"]
    assert bounds["excite"] == (float(excite.min()), float(excite.max())) and excite.min() >= 0


@pytest.mark.cc
def test_int8_of_a_layer_that_is_zero_on_every_calibration_input(tmp_path, cc):
    """A ReLU dead on the calibration data (all zeros) gets a usable scale, not one that makes
    the layer before it need a multiplier of 1e27."""
    spec = S.Model(name="dead", input_shape=(6,), layers=(
        S.Dense(name="live", units=4, activation="relu"), S.Dense(name="dead", units=3, activation="relu"),
        S.Dense(name="out", inputs=("live",), units=2), S.Concatenate(name="both", inputs=("out", "dead"))))
    weights = random_weights(spec, 2)
    weights["dead"]["bias"][:] = -100.0
    network = Network(spec, weights)
    assert not network.trace(normal_inputs(spec, 200))["dead"].any()
    assert_int8_tracks(tmp_path, cc, spec, network)


def assert_int8_tracks(tmp_path: Path, cc: str, spec: S.Model, network: Network | None = None) -> None:
    from layerlab.export.c.quantize import quantize

    network = network or Network(spec, random_weights(spec, 11))
    plan = lower(spec, network.weights)
    x = normal_inputs(spec, 40)
    qplan = quantize(plan, network.weights, np.concatenate([x, normal_inputs(spec, 160, seed=5)]))  # no value beyond the calibration
    files = generate(plan, qplan, prefix="q", model_name=spec.name, input_format="test").files
    for rel, text in files.items():
        (tmp_path / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / rel).write_text(text)
    (tmp_path / "build").mkdir()
    ours = V.run_harness(V.build_host(tmp_path / "src", tmp_path / "build", "q", cc), x, int(np.prod(spec.output_shape)))
    ref = network.predict(x).reshape(len(x), -1)
    span = float(np.max(np.abs(ref)))
    assert np.max(np.abs(ours - ref)) <= 0.08 * span, (np.max(np.abs(ours - ref)), span)
    assert np.corrcoef(ours.ravel(), ref.ravel())[0, 1] > 0.99


def test_int8_requires_foldable_batchnorm(tmp_path):
    spec = S.Model(name="bn", input_shape=(6, 6, 2), layers=(S.MaxPooling2D(name="pool"), S.BatchNormalization(name="bn")))
    with pytest.raises(ExportError, match=r"step 1 \(bn \(BatchNormalization\)\).*cannot be folded"):
        export_c(Network(spec, random_weights(spec, 1)), tmp_path / "o", int8=True, verify=False, calibration=10)


# ---- determinism, names, bad input ------------------------------------------------------------

def test_two_exports_are_byte_identical(tmp_path):
    spec = seed650(CF)
    network = Network(spec, random_weights(spec, 3))
    a = export_c(network, tmp_path / "a", name="seed650", verify=False).parent
    b = export_c(network, tmp_path / "b", name="seed650", verify=False).parent
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert [str(f) for f in files] == ["Makefile", "cortex-m/mps2-an386.ld", "cortex-m/startup.c", "layerlab-manifest.json",
                                       "main.c", "report.txt", "seed650.c", "seed650.h"]
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


@pytest.mark.cc
def test_hostile_names_compile_and_match(tmp_path, cc):
    evil = ['a*/ int x; /*', '"; system("x"); "', "??/", "main", "3d\\\nx", "é∆"]
    layers = [S.Conv2D(name=evil[0], filters=2, kernel_size=3), S.Activation(name=evil[1], activation="tanh"),
              S.Flatten(name=evil[2]), S.Dense(name=evil[3], units=3), S.Activation(name=evil[4], activation="softmax")]
    spec = S.Model(name=evil[1], input_shape=(5, 5, 1), layers=tuple(layers))
    network = Network(spec, random_weights(spec, 4))
    x = normal_inputs(spec, 20)
    assert_matches_engine(network, x, c_predict(network, x, tmp_path / "c", cc, name=evil[1]))
    out = export_c(network, tmp_path / "e", name=evil[0], verify=False).parent
    sources = "".join(p.read_text() for p in out.rglob("*") if p.suffix in (".c", ".h") or p.name == "Makefile")
    for name in (evil[0], evil[1], evil[2], evil[4], evil[5]):
        assert name not in sources
    assert "*/ int" not in sources and 'system("x")' not in sources
    assert (out / "a_int_x.h").exists()


def test_name_sanitisers():
    assert c_identifier('a*/ int x; /*') == "a_int_x"
    assert c_identifier('"; system("x"); "') == "system_x"
    assert c_identifier("int") == "int_m" and c_identifier("9lives") == "m9lives" and c_identifier("!!") == "model"
    assert c_comment("a*/ b /* ??/ \\ \n") == "a__ b __ ___ _ _"


def _residual(df=CL, merge=S.Add):
    """A ResNet block as Keras saves one: the shortcut's layers listed between the branch's, a
    value read by two layers, a batch norm that is not next to its conv in the list."""
    return (
        S.Conv2D(name="c0", filters=4, kernel_size=3, padding="same", data_format=df),
        S.BatchNormalization(name="bn0", axis=1 if df == CF else -1),
        S.Activation(name="r0", activation="relu"),
        S.Conv2D(name="c1", filters=4, kernel_size=3, strides=2, padding="same", data_format=df),
        S.Conv2D(name="short", inputs=("r0",), filters=4, kernel_size=1, strides=2, data_format=df),
        S.BatchNormalization(name="bn1", inputs=("c1",), axis=1 if df == CF else -1),
        merge(name="sum", inputs=("short", "bn1")),
        S.Activation(name="r1", activation="relu"),
    )


def _squeeze_excite(df=CL):
    """MobileNetV3's and EfficientNet's gate: a (1, 1, C) gate stretched over the (H, W, C) map."""
    return (
        S.Conv2D(name="map", filters=4, kernel_size=3, padding="same", activation="relu", data_format=df),
        S.GlobalAveragePooling2D(name="squeeze", keepdims=True, data_format=df),
        S.Conv2D(name="reduce", filters=2, kernel_size=1, activation="relu", data_format=df),
        S.Conv2D(name="expand", filters=4, kernel_size=1, activation="hard_sigmoid", data_format=df),
        S.Multiply(name="excite", inputs=("map", "expand")),
        S.Conv2D(name="project", filters=3, kernel_size=1, data_format=df),
    )


GRAPHS = {
    "residual_add": ((8, 8, 3), _residual()),
    "residual_add_cf_odd": ((3, 9, 9), _residual(CF)),
    "residual_subtract": ((8, 8, 3), _residual(merge=S.Subtract)),
    "residual_multiply": ((8, 8, 3), _residual(merge=S.Multiply)),
    "identity_shortcut_to_dense": ((6, 6, 2), (
        S.Conv2D(name="a", filters=2, kernel_size=3, padding="same"),
        S.Add(name="sum", inputs=("a", "input")),
        S.Flatten(name="f"), S.Dense(name="d", units=5, activation="softmax"))),
    "three_way_average_max_min": ((5, 5, 2), (
        S.Conv2D(name="a", filters=2, kernel_size=3, padding="same", activation="tanh"),
        S.Conv2D(name="b", inputs=("input",), filters=2, kernel_size=1),
        S.Average(name="avg", inputs=("a", "b", "input")),
        S.Maximum(name="mx", inputs=("avg", "a")),
        S.Minimum(name="mn", inputs=("mx", "b", "input")))),
    "mobilenet_tail_global_average": ((7, 6, 4), (
        dw(strides=2, padding="same"), S.BatchNormalization(name="bn"), S.ReLU(name="r6", max_value=6.0),
        S.Conv2D(name="pw", filters=5, kernel_size=1, activation="relu"),
        S.GlobalAveragePooling2D(name="gap"), S.Dense(name="d", units=3, activation="softmax"))),
    "global_max_keepdims_cf": ((3, 5, 4), (
        S.Conv2D(name="c", filters=2, kernel_size=3, data_format=CF),
        S.GlobalMaxPooling2D(name="gmp", data_format=CF, keepdims=True), S.Flatten(name="f", data_format=CF))),
    "fire_module_concat_channels": ((6, 6, 3), (
        S.Conv2D(name="squeeze", filters=2, kernel_size=1, activation="relu"),
        S.Conv2D(name="e1", filters=3, kernel_size=1, activation="relu"),
        S.Conv2D(name="e3", inputs=("squeeze",), filters=4, kernel_size=3, padding="same", activation="relu"),
        S.Concatenate(name="cat", inputs=("e1", "e3")), S.MaxPooling2D(name="p"))),
    "concat_cf_and_width_axis": ((2, 5, 4), (
        S.Conv2D(name="a", filters=2, kernel_size=3, padding="same", data_format=CF),
        S.Concatenate(name="c1", inputs=("a", "input"), axis=1),
        S.Concatenate(name="c2", inputs=("c1", "c1"), axis=3), S.Flatten(name="f", data_format=CF))),
    "concat_vectors": ((12,), (
        S.Dense(name="a", units=3, activation="tanh"), S.Dense(name="b", inputs=("input",), units=2),
        S.Concatenate(name="c", inputs=("b", "input", "a")), S.Dense(name="d", units=4))),
    "unet_up_crop_concat": ((6, 7, 2), (
        S.Conv2D(name="down", filters=3, kernel_size=3, strides=2, padding="same", activation="relu"),
        S.UpSampling2D(name="up", size=(2, 2)),
        S.Cropping2D(name="crop", cropping=((0, 0), (1, 0))),  # 3x4 up to 6x8, back to the input's 6x7
        S.Concatenate(name="skip", inputs=("crop", "input")),
        S.Conv2D(name="out", filters=2, kernel_size=1))),
    "up_crop_permute_cf": ((2, 3, 4), (
        S.UpSampling2D(name="up", size=(3, 2), data_format=CF),
        S.Cropping2D(name="crop", cropping=((1, 1), (0, 3)), data_format=CF),
        S.Permute(name="perm", dims=(3, 1, 2)),
        S.Conv2D(name="c", filters=2, kernel_size=2, data_format=CF))),
    "squeeze_excite_gate": ((5, 4, 6), _squeeze_excite()),
    "squeeze_excite_gate_cf": ((6, 5, 4), _squeeze_excite(CF)),
    "three_gates_of_one_shape": ((2, 2, 16), (  # as MobileNetV3's late blocks: the first and last remaps alike
        S.Conv2D(name="a", filters=16, kernel_size=1, activation="relu"),
        S.GlobalAveragePooling2D(name="s1", keepdims=True),
        S.Conv2D(name="g1", filters=16, kernel_size=1, activation="hard_sigmoid"),
        S.Multiply(name="m1", inputs=("a", "g1")),
        S.Conv2D(name="b", filters=8, kernel_size=1, activation="relu"),
        S.GlobalAveragePooling2D(name="s2", keepdims=True),
        S.Conv2D(name="g2", filters=8, kernel_size=1, activation="hard_sigmoid"),
        S.Multiply(name="m2", inputs=("b", "g2")),
        S.Conv2D(name="c", filters=16, kernel_size=1, activation="relu"),
        S.GlobalAveragePooling2D(name="s3", keepdims=True),
        S.Conv2D(name="g3", filters=16, kernel_size=1, activation="hard_sigmoid"),
        S.Multiply(name="m3", inputs=("c", "g3")),
        S.Flatten(name="f"), S.Dense(name="d", units=3))),
    "broadcast_rows_and_columns": ((3, 4, 2), (  # (3, 1, 2) + (1, 4, 2): no input of the full shape
        S.AveragePooling2D(name="rows", pool_size=(1, 4)),
        S.MaxPooling2D(name="cols", inputs=("input",), pool_size=(3, 1)),
        S.Add(name="grid", inputs=("rows", "cols")),
        S.Multiply(name="again", inputs=("grid", "rows")),  # the gate read once more, as it is
        S.Subtract(name="less", inputs=("again", "input")), S.ReLU(name="r"))),
    "dropout_between_branches": ((6, 6, 2), (
        S.Conv2D(name="a", filters=2, kernel_size=3, padding="same"),
        S.Dropout(name="drop", rate=0.5),
        S.ReLU(name="relu"),
        S.Add(name="sum", inputs=("drop", "relu")),
        S.Flatten(name="f"))),
}


@pytest.mark.cc
@pytest.mark.parametrize("case", sorted(GRAPHS))
def test_graphs_match_engine(tmp_path, cc, case):
    test_small_models_match_engine(tmp_path, cc, case, GRAPHS)


def test_graph_arena_reuses_memory_by_liveness():
    spec = S.Model(name="g", input_shape=(8, 8, 3), layers=_residual())
    plan = lower(spec, random_weights(spec, 1))
    kinds = [step.kind for step in plan.steps]
    # bn0 + r0 and bn1 folded (bn1 is listed after the shortcut), r1 fused into the Add; the Add
    # writes channel planes, the caller's out is C order (HWC): one copy at the end
    assert kinds == ["conv", "conv", "conv", "merge", "copy"]
    merge = plan.steps[3]
    assert merge.in_place and set(merge.srcs) == {plan.steps[1].dst, plan.steps[2].dst}  # over a dying input
    # r0's value (8x8x4) lives until the shortcut conv (step 2) has read it, so the two 4x4x4
    # values beside it cannot reuse it; the merge reuses one of them; nothing else is stored.
    assert plan.arena.size == 8 * 8 * 4 + 2 * 4 * 4 * 4
    assert plan.arena.peak_step == 2 and len(plan.arena.peak_values) == 3


INT8_GRAPHS = ["residual_add", "residual_add_cf_odd", "residual_subtract", "residual_multiply", "identity_shortcut_to_dense",
               "three_way_average_max_min", "dropout_between_branches", "mobilenet_tail_global_average", "global_max_keepdims_cf",
               "fire_module_concat_channels", "concat_cf_and_width_axis", "concat_vectors", "unet_up_crop_concat",
               "up_crop_permute_cf", "squeeze_excite_gate", "squeeze_excite_gate_cf", "broadcast_rows_and_columns",
               "three_gates_of_one_shape"]


@pytest.mark.cc
@pytest.mark.parametrize("case", INT8_GRAPHS)
def test_int8_graphs_track_the_engine(tmp_path, cc, case):
    """int8 merges requantize their inputs to one scale: within a few quantization steps of float."""
    input_shape, layers = GRAPHS[case]
    assert_int8_tracks(tmp_path, cc, S.Model(name=case, input_shape=input_shape, layers=tuple(layers)))


def test_int8_prelu_is_refused_before_calibration(tmp_path):
    spec = S.Model(name="p", input_shape=(4, 4, 2), layers=(S.PReLU(name="pr"),))
    with pytest.raises(ExportError, match=r"C export \(int8\): layer 0 'pr' \(PReLU\) is not supported because PReLU's per-value slopes have no int8 form yet"):
        export_c(Network(spec, random_weights(spec, 1)), tmp_path / "o", int8=True, verify=False)


def test_int8_merge_with_another_activation_is_refused(tmp_path):
    spec = S.Model(name="g", input_shape=(28, 28, 1), layers=(
        S.Conv2D(name="a", filters=1, kernel_size=3, padding="same"),
        S.Add(name="sum", inputs=("a", "input")), S.Activation(name="t", activation="tanh")))
    with pytest.raises(ExportError, match=r"step 1 \(sum \(Add\) \+ t \(Activation\)\): int8 merges take ReLU or ReLU6 after them, not tanh"):
        export_c(Network(spec, random_weights(spec, 1)), tmp_path / "o", int8=True, verify=False)
    assert not (tmp_path / "o").exists()


def test_int8_normalization_is_refused_by_name(tmp_path):
    spec = S.Model(name="n", input_shape=(6, 6, 2), layers=(S.Normalization(name="norm"), conv(padding="same")))
    with pytest.raises(ExportError, match=r"C export \(int8\): layer 0 'norm' \(Normalization\) is not supported because "
                                          r"int8 folds a batch norm into the conv before it"):
        export_c(Network(spec, random_weights(spec, 1)), tmp_path / "o", int8=True, verify=False)
    assert not (tmp_path / "o").exists()


def test_int8_softmax_before_the_end_is_refused(tmp_path):
    spec = S.Model(name="s", input_shape=(8,), layers=(S.Activation(name="sm", activation="softmax"), S.Dense(name="d", units=2)))
    with pytest.raises(ExportError, match="softmax has no int8 form except as the last layer"):
        export_c(Network(spec, random_weights(spec, 1)), tmp_path / "o", int8=True, verify=False, calibration=10)


def test_bad_arguments_and_targets(tmp_path):
    spec = seed650(CL)
    network = Network(spec, random_weights(spec, 1))
    with pytest.raises(ExportError, match=r"calibration=0 must be a positive number of images"):
        export_c(network, tmp_path / "o", int8=True, calibration=0, verify=False)
    with pytest.raises(ExportError, match=r"verify_images=-5 must be a positive"):
        export_c(network, tmp_path / "o", verify_images=-5)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    (foreign / "Makefile").write_text("all: mine")  # the user's, of a name the export writes
    with pytest.raises(OutputError, match=r"mine: would replace Makefile \(not written by layerlab\); nothing was changed"):
        export_c(network, foreign, verify=False)
    assert sorted(p.name for p in foreign.iterdir()) == ["Makefile", "notes.txt"]
    assert (foreign / "Makefile").read_text() == "all: mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file; this output is a folder"):
        export_c(network, tmp_path / "file", verify=False)
    again = export_c(network, tmp_path / "re", verify=False)
    assert export_c(network, tmp_path / "re", verify=False) == again  # an earlier export is replaced


@pytest.mark.cc
@pytest.mark.mnist
def test_failed_verification_writes_nothing(tmp_path, cc, mnist_dir, monkeypatch):
    monkeypatch.setattr(V, "FLOAT_TOLERANCE", 0.0)
    monkeypatch.setattr(V, "FLOAT_FLOOR", 0.0)
    spec = seed650(CF)
    with pytest.raises(ExportError, match=r"verification failed, nothing written. float32: max \|C - engine\|"):
        export_c(Network(spec, random_weights(spec, 1)), tmp_path / "o", verify_images=20, data_dir=mnist_dir)
    assert list(tmp_path.iterdir()) == []


# ---- Makefile, Cortex-M4, QEMU ----------------------------------------------------------------

@pytest.fixture(scope="module")
def seed650_export(tmp_path_factory):
    spec = seed650(CF)
    network = Network(spec, random_weights(spec, 21))
    out = export_c(network, tmp_path_factory.mktemp("m") / "seed650", name="seed650", verify=False).parent
    return network, out


# Run make as a user would: not as a sub-make of `make test` (which prints "make[1]: ..." lines).
MAKE = ["make", "--no-print-directory"]
MAKE_ENV = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}


@pytest.mark.cc
def test_makefile_host_build(seed650_export, cc):
    require_tool("make")
    network, out = seed650_export
    build = out.parent / "host"
    shutil.copytree(out, build)
    proc = subprocess.run([*MAKE], cwd=build, capture_output=True, text=True, timeout=120, env=MAKE_ENV)
    assert proc.returncode == 0, proc.stderr
    assert "-std=c99 -O2 -Wall -Wextra -Werror" in proc.stdout
    x = normal_inputs(network.spec, 8)
    proc = subprocess.run(["./seed650_test"], cwd=build, input=x.tobytes(), capture_output=True, timeout=60)
    assert proc.returncode == 0
    assert_matches_engine(network, x, np.frombuffer(proc.stdout, np.float32).reshape(8, 10))


@pytest.mark.arm
def test_cortex_m4_build_and_qemu_run(seed650_export, cc):
    for tool in ("make", "arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm"):
        require_tool(tool)
    network, out = seed650_export
    build = out.parent / "arm"
    shutil.copytree(out, build)
    proc = subprocess.run([*MAKE, "cortex-m4"], cwd=build, capture_output=True, text=True, timeout=120, env=MAKE_ENV)
    assert proc.returncode == 0, proc.stderr
    text, data, bss = (int(v) for v in proc.stdout.strip().splitlines()[-1].split()[:3])
    assert text + data <= 8 * 1024 and data + bss <= 8 * 1024  # issue 5: flash and RAM goals (float)
    x = normal_inputs(network.spec, 3)
    x.tofile(build / "images.bin")
    proc = subprocess.run([*MAKE, "qemu", "QEMU_IN=images.bin", "QEMU_OUT=outputs.bin"], cwd=build, capture_output=True,
                          text=True, timeout=120, env=MAKE_ENV)
    assert proc.returncode == 0, proc.stderr
    ours = np.fromfile(build / "outputs.bin", np.float32).reshape(3, 10)
    host = c_predict(network, x, out.parent / "hostrun", cc, name="seed650")
    np.testing.assert_allclose(ours, host, rtol=0, atol=1e-6)
    assert_matches_engine(network, x, ours)


def host_and_qemu(export: Path, x: np.ndarray, work: Path, harness: str) -> tuple[np.ndarray, np.ndarray]:
    """Outputs of the export's host build (``make``) and of its Cortex-M4 build in QEMU (``make qemu``) on ``x``."""
    for target in ("all", "qemu"):
        build = work / target
        shutil.copytree(export, build)
        x.tofile(build / "images.bin")
        proc = subprocess.run([*MAKE, target], cwd=build, capture_output=True, text=True, timeout=300, env=MAKE_ENV)
        assert proc.returncode == 0, proc.stderr
    subprocess.run([f"./{harness}", "images.bin", "outputs.bin"], cwd=work / "all", check=True, timeout=60)
    return np.fromfile(work / "all" / "outputs.bin", np.float32), np.fromfile(work / "qemu" / "outputs.bin", np.float32)


@pytest.mark.arm
@pytest.mark.mnist
def test_cortex_m4_int8_qemu_run_matches_host(tmp_path, cc, mnist_dir):
    for tool in ("make", "arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm"):
        require_tool(tool)
    spec = seed650(CL)
    network = Network(spec, random_weights(spec, 22))
    out = export_c(network, tmp_path / "q", name="seed650", int8=True, calibration=100, verify=False, data_dir=mnist_dir).parent
    x = np.random.default_rng(3).random((3, *spec.input_shape), dtype=np.float32)
    host, arm = host_and_qemu(out, x, tmp_path, "seed650_test")
    assert host.shape == (30,)
    np.testing.assert_allclose(arm, host, rtol=0, atol=1e-6)  # int8 inside; float only in the wrapper's softmax
    proc = subprocess.run([*MAKE, "cortex-m4"], cwd=tmp_path / "qemu", capture_output=True, text=True, timeout=120, env=MAKE_ENV)
    text, data, bss = (int(v) for v in proc.stdout.strip().splitlines()[-1].split()[:3])
    assert text + data <= 4 * 1024 and data + bss <= 2 * 1024  # issue 5: int8 flash and RAM goals


# --- verification that fits the model (issue 14) ---------------------------------------------------

def _regressor(seed: int = 0) -> Network:
    """A dense autoencoder-like regressor with outputs of size ~50 (no softmax: class means nothing)."""
    spec = S.Model(name="reg", input_shape=(12,), layers=(
        S.Dense(name="h", units=8, activation="relu"), S.Dense(name="out", units=12)))
    rng = np.random.default_rng(seed)
    return Network(spec, {"h": {"kernel": rng.normal(0, 2, (12, 8)).astype(np.float32), "bias": np.zeros(8, np.float32)},
                          "out": {"kernel": rng.normal(0, 8, (8, 12)).astype(np.float32), "bias": np.full(12, 30, np.float32)}})


@pytest.mark.cc
def test_a_regressor_is_verified_relative_to_its_outputs_without_a_class_check(tmp_path, cc):
    report = export_c(_regressor(), tmp_path / "reg", name="reg").read_text()
    line = next(l for l in report.splitlines() if "float32 on" in l)
    assert "seeded random-normal inputs" in line and "no class check (the output is not a softmax): PASS" in line
    peak = float(line.split("largest |output| ")[1].split(")")[0])
    assert peak > 20 and f"limit {1e-5 * peak:.3g}" in line


def test_int8_of_a_non_mnist_model_needs_calibration_data(tmp_path):
    with pytest.raises(ExportError, match=r"takes input \(12,\), not a 28x28 MNIST image, so there is nothing to calibrate on\. "
                                          r"Pass --calibration-data FILE"):
        export_c(_regressor(), tmp_path / "q", int8=True)
    assert not (tmp_path / "q").exists()


@pytest.mark.cc
def test_int8_rules_by_kind_of_model(tmp_path, cc):
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (400, 12)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    report = export_c(_regressor(), tmp_path / "reg", int8=True, calibration_data=tmp_path / "x.npy").read_text()
    assert "int8 on 80 held-out inputs of x.npy (not a classifier): RMS |int8 - float| = " in report
    assert "of the float outputs' range (limit 2%): PASS" in report
    spec = S.Model(name="cls", input_shape=(12,), layers=(S.Dense(name="d", units=4, activation="softmax"),))
    net = Network(spec, {"d": {"kernel": rng.normal(0, 1, (12, 4)).astype(np.float32), "bias": np.zeros(4, np.float32)}})
    labels = net.predict(x).argmax(axis=1)
    np.savez(tmp_path / "xy.npz", x=x, y=labels)
    report = export_c(net, tmp_path / "cls", int8=True, calibration_data=tmp_path / "xy.npz").read_text()
    assert "int8 on 80 held-out inputs of xy.npz: accuracy " in report and "vs float 100.00% (engine)" in report
    report = export_c(net, tmp_path / "cls2", int8=True, calibration_data=tmp_path / "x.npy").read_text()
    assert "int8 on 80 held-out inputs of x.npy (no labels): int8 and float predict the same class on " in report
    assert "(limit 90%): PASS" in report


def test_int8_check_rules_can_fail():
    base = dict(images=100, source="s", max_abs_diff=1.0)
    assert not V.Int8Check(accuracy_int8=None, accuracy_float=None, agreement=0.85, classifier=True, **base).passed
    assert not V.Int8Check(accuracy_int8=None, accuracy_float=None, agreement=1.0, classifier=False, range_error=0.03, **base).passed
    assert not V.Int8Check(accuracy_int8=0.12, accuracy_float=0.12, agreement=1.0, **base).passed  # inputs the model does not take
    assert not V.FloatCheck(images=10, source="s", max_abs_diff=5e-4, same_class=10, peak=43.0).passed
    assert V.FloatCheck(images=10, source="s", max_abs_diff=4e-4, same_class=3, peak=43.0, classifier=False).passed


@pytest.mark.cc
@pytest.mark.mnist
def test_a_raw_pixel_model_is_calibrated_and_checked_in_its_own_scale(tmp_path, cc, mnist_dir, shared_dir):
    model = require_path(shared_dir / "models" / "keras2" / "keras224_sequential_mnist.h5")
    import layerlab

    net = layerlab.load(model)
    with pytest.raises(ExportError, match=r"the float model is right on only 1\d\.\d\d% of the MNIST test images as fed "
                                          r"\(pixels / 255, channels_last\).*needs --scale 1"):
        export_c(net, tmp_path / "wrong", int8=True, data_dir=mnist_dir)
    assert not (tmp_path / "wrong").exists()
    report = export_c(net, tmp_path / "raw", int8=True, data_dir=mnist_dir, scale=1).read_text()
    assert "raw pixels 0..255" in report
    accuracy = float(report.split("int8 on 10000 MNIST test images: accuracy ")[1].split("%")[0])
    assert accuracy > 98.0 and "PASS" in report


MLPERF_INPUTS = {"str_ww_ref_model.h5": (0.0, 0.94), "ad01.h5": (-85.0, 15.0), "pretrainedResnet.h5": (0.0, 255.0)}
MLPERF_CASES = [(m, int8) for m in sorted(MLPERF_INPUTS) for int8 in (False, True)]


@pytest.mark.arm
@pytest.mark.parametrize("model, int8", MLPERF_CASES, ids=[f"{m}-{'int8' if q else 'float32'}" for m, q in MLPERF_CASES])
def test_mlperf_models_export_verify_and_run_on_cortex_m4_as_on_the_host(tmp_path, cc, shared_dir, model, int8):
    """The DS-CNN (depthwise) and the dense autoencoder: exported, verified, built for the
    Cortex-M4 and run in QEMU with the host build's outputs (int8 calibrated on inputs in range)."""
    for tool in ("make", "arm-none-eabi-gcc", "qemu-system-arm"):
        require_tool(tool)
    import layerlab

    network = layerlab.load(require_path(shared_dir / "models" / "mlperf_tiny" / model))
    low, high = MLPERF_INPUTS[model]
    rng = np.random.default_rng(7)
    np.save(tmp_path / "x.npy", rng.uniform(low, high, (300, *network.spec.input_shape)).astype(np.float32))
    report = export_c(network, tmp_path / "c", int8=int8, calibration_data=tmp_path / "x.npy").read_text()
    assert "PASS" in report and "FAIL" not in report
    x = rng.uniform(low, high, (2, *network.spec.input_shape)).astype(np.float32)
    host, arm = host_and_qemu(tmp_path / "c", x, tmp_path, "model_test")
    assert host.shape == (2 * int(np.prod(network.spec.output_shape)),)
    ref = network.predict(x).reshape(-1)
    np.testing.assert_allclose(arm, host, rtol=0, atol=1e-6 * max(1.0, float(np.max(np.abs(ref)))))
    if not int8:
        np.testing.assert_allclose(host, ref, rtol=0, atol=1e-5 * float(np.max(np.abs(ref))))
    # the same ELF in a second emulator (unicorn), which counts instructions: the same outputs as QEMU, bit for bit
    require_module("unicorn")
    require_module("elftools")
    from layerlab.export.c.emulate import count

    size, outputs = int(np.prod(network.spec.input_shape)), int(np.prod(network.spec.output_shape))
    counted = [count(tmp_path / "qemu" / "model-cm4.elf", "model", x[i], int8=int8, input_size=size, output_size=outputs)
               for i in range(len(x))]
    np.testing.assert_array_equal(np.concatenate([c.output for c in counted]), arm)
    assert all(network.spec.macs / 2 < c.instructions < 20 * network.spec.macs for c in counted)
    assert all(0 < c.stack < 4096 for c in counted)
    if int8:  # the portable loops (-DLAYERLAB_NO_DSP) give the same int8 network bit for bit, in more instructions
        build = tmp_path / "qemu"
        (build / "model-cm4.elf").unlink()
        proc = subprocess.run([*MAKE, "model-cm4.elf", f"ARM_FLOAT={' '.join(T.ARM_FLOAT)} -DLAYERLAB_NO_DSP"], cwd=build,
                              capture_output=True, text=True, timeout=300, env=MAKE_ENV)
        assert proc.returncode == 0, proc.stderr
        portable = [count(build / "model-cm4.elf", "model", x[i], int8=True, input_size=size, output_size=outputs) for i in range(len(x))]
        np.testing.assert_array_equal(np.concatenate([c.output for c in portable]), arm)
        dense = any(isinstance(l, S.Dense) for l in network.spec.layers)
        assert all((p.instructions > c.instructions) if dense else (p.instructions >= c.instructions)
                   for p, c in zip(portable, counted, strict=True))


@pytest.mark.cc
def test_requantize_helpers_equal_the_64_bit_formula(tmp_path, cc):
    """ll_requantize and ll_requantize_high (32-bit forms of the high word, no variable 64-bit shift
    on a 32-bit core), zero points and ReLU clamps included, against the plain 64-bit expression,
    on 2 million seeded cases."""
    from layerlab.export.c.emit import _helpers

    helpers = _helpers()
    source = "\n".join(["#include <stdint.h>", "#include <stdio.h>", helpers["inline"], helpers["requantize"], helpers["requantize_high"], r"""
static int32_t plain(int32_t acc, int32_t multiplier, int shift, int32_t zero, int32_t low)
{
    const int64_t scaled = (((int64_t)acc * multiplier + ((int64_t)1 << (shift - 1))) >> shift) + zero;
    return scaled > 127 ? 127 : scaled < low ? low : (int32_t)scaled;
}
int main(void)
{
    uint64_t s = 88172645463325252ull;
    long i, bad = 0;
    for (i = 0; i < 2000000; ++i) {
        int32_t acc, mult, low, zero;
        int shift;
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        acc = (int32_t)(s >> 32) >> (s & 15);
        mult = (int32_t)(0x40000000u + ((uint32_t)s & 0x3fffffffu));
        shift = 20 + (int)((s >> 20) % 43);
        zero = (int32_t)((s >> 44) & 255) - 128;
        low = (s >> 40) & 1 ? zero : -128;
        bad += ll_requantize(acc, mult, shift, zero, low) != plain(acc, mult, shift, zero, low);
        if (shift >= 33) bad += ll_requantize_high(acc, mult, shift - 32, zero, low) != plain(acc, mult, shift, zero, low);
    }
    printf("%ld\n", bad);
    return 0;
}
"""])
    (tmp_path / "rq.c").write_text(source)
    subprocess.run([cc, *T.HOST_CFLAGS, "-Wno-unused-function", "-o", str(tmp_path / "rq"), str(tmp_path / "rq.c")], check=True)
    assert subprocess.run([str(tmp_path / "rq")], capture_output=True, text=True, check=True).stdout.strip() == "0"


@pytest.mark.arm
def test_int8_dsp_kernels_on_cortex_m4_equal_the_portable_host_build(tmp_path, cc):
    """The SMLAD paths (conv runs with pairs of positions, dilated taps, a column conv, odd filter
    counts and channel tails, depthwise four channels a word, Dense two units a step) give in QEMU
    and unicorn the very outputs of the portable loops on the host."""
    for tool in ("make", "arm-none-eabi-gcc", "qemu-system-arm"):
        require_tool(tool)
    # every conv big enough for the SMLAD kernel (DOT_MIN_MACS) but pw, which takes the compact one
    spec = S.Model(name="dsp", input_shape=(12, 13, 3), layers=(
        S.Conv2D(name="c1", filters=6, kernel_size=3, padding="same", activation="relu"),
        S.Conv2D(name="c2", filters=7, kernel_size=3, dilation_rate=2, padding="same"),
        S.DepthwiseConv2D(name="dw", kernel_size=3, strides=2, padding="same", activation="relu"),
        S.Conv2D(name="pw", filters=24, kernel_size=1),
        S.Reshape(name="col", target_shape=(42, 1, 24)),
        S.Conv2D(name="c3", filters=9, kernel_size=(3, 1), activation="relu"),
        S.Flatten(name="f"), S.Dense(name="d", units=5, activation="softmax")))
    network = Network(spec, random_weights(spec, 5))
    rng = np.random.default_rng(2)
    np.save(tmp_path / "x.npy", rng.normal(0, 1, (200, *spec.input_shape)).astype(np.float32))
    export_c(network, tmp_path / "c", name="dsp", int8=True, calibration_data=tmp_path / "x.npy", verify=False)  # identity, not accuracy
    x = rng.normal(0, 1, (3, *spec.input_shape)).astype(np.float32)
    host, arm = host_and_qemu(tmp_path / "c", x, tmp_path, "dsp_test")
    np.testing.assert_allclose(arm, host, rtol=0, atol=1e-6)
    source = (tmp_path / "c" / "dsp.c").read_text()
    assert "ll_dot_2x2" in source and "ll_depthwise4" in source
    assert re.search(r"step\d+_d\(.*?ll_dot_x2\(input, weight0, weight1", source, re.S)  # Dense: two units a step
    require_module("unicorn")
    require_module("elftools")
    from layerlab.export.c.emulate import count

    for i in range(len(x)):
        c = count(tmp_path / "qemu" / "dsp-cm4.elf", "dsp", x[i], int8=True, input_size=x[i].size, output_size=5)
        np.testing.assert_array_equal(c.output, arm[5 * i : 5 * i + 5])
