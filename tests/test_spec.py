"""Spec: validation errors in the STYLE.md template, shapes, counts, JSON/YAML round trips."""

from __future__ import annotations

import json

import pytest

from layerlab import spec as S
from layerlab.errors import LimitError, SpecError
from layerlab.presets import seed650
from layerlab.specfile import load_spec

SEED650_SHAPES = [(5, 25, 25), (5, 13, 13), (5, 13, 13), (3, 11, 11), (3, 6, 6), (3, 6, 6), (3, 3, 3), (3, 3, 3), (27,), (10,), (10,)]


def test_seed650_shapes_and_parameters():
    model = seed650()
    assert [info.output_shape for info in model.infos] == SEED650_SHAPES
    assert model.param_count == 650
    assert [info.params for info in model.infos if info.params] == [85, 138, 147, 280]
    assert model.macs == 50000 + 16335 + 1296 + 270


def test_seed650_channels_last_has_the_same_counts():
    model = seed650("channels_last")
    assert model.input_shape == (28, 28, 1)
    assert model.infos[0].output_shape == (25, 25, 5)
    assert model.param_count == 650


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_spec_file_round_trip(tmp_path, suffix):
    model = seed650()
    path = tmp_path / f"seed{suffix}"
    model.save(path)
    assert load_spec(path) == model
    assert load_spec("seed650") == model


def _one(layer: dict, input_shape=(4, 4, 1)) -> S.Model:
    return S.Model.from_dict({"name": "m", "input_shape": list(input_shape), "layers": [layer]})


ERRORS = [
    ({"type": "Conv2D", "name": "conv_b", "filters": 2, "kernel_size": [5, 5]},
     r"layer 0 'conv_b' \(Conv2D\): kernel_size=\(5, 5\) does not fit input \(4, 4\) with padding='valid' \(output would be 0x0\)\. Use padding='same' or kernel_size <= \(4, 4\)"),
    ({"type": "Conv2D", "name": "c", "filters": 2, "kernel_size": 3, "strides": [0, 1]}, r"strides=\(0, 1\) must be positive"),
    ({"type": "Conv2D", "name": "c", "filters": 0, "kernel_size": 3}, r"filters=0 must be a positive int"),
    ({"type": "Conv2D", "name": "c", "filters": 1, "kernel_size": 3, "padding": "full"}, r"padding='full' is not supported\. Use one of valid, same"),
    ({"type": "Conv2D", "name": "c", "filters": 1, "kernel_size": 3, "activation": "tanhh"}, r"activation='tanhh' is not supported"),
    ({"type": "Conv2D", "name": "c", "filters": 1, "kernel_size": 3, "kernel_initializer": "glorot_norml"}, r"kernel_initializer='glorot_norml'"),
    ({"type": "Conv2D", "name": "c", "filters": 1, "kernel_size": 2, "strides": 2, "dilation_rate": 2}, r"strides > 1 only with dilation_rate 1"),
    ({"type": "Conv2D", "name": "c", "filters": 1, "kernel_size": 3, "dilation_rate": 2}, r"kernel_size=\(3, 3\) \(dilated span \(5, 5\)\) does not fit input \(4, 4\).*span \(k - 1\) \* d \+ 1 <= \(4, 4\)"),
    ({"type": "MaxPooling2D", "name": "p", "pool_size": 5}, r"pool_size=\(5, 5\) does not fit input \(4, 4\)"),
    ({"type": "Dense", "name": "d", "units": 3}, r"Dense needs a 1-D input, received shape \(4, 4, 1\)\. Add a Flatten layer before it"),
    ({"type": "Conv3D", "name": "x"}, r"unknown layer type 'Conv3D'\. Supported: Conv2D, Conv1D, DepthwiseConv2D"),
    ({"type": "Conv2D", "name": "c", "filters": 1, "kernel_size": 3, "stride": 2}, r"unknown argument\(s\) stride for Conv2D"),
    ({"type": "Conv2D", "name": "c", "filters": 1}, r"missing 1 required keyword-only argument: 'kernel_size'"),
    ({"type": "Reshape", "name": "r", "target_shape": [5, 5]}, r"target_shape=\(5, 5\) holds 25 values but the input \(4, 4, 1\) has 16"),
    ({"type": "Dropout", "name": "d", "rate": 1.5}, r"rate=1.5 must be a number in \[0, 1\)"),
    ({"type": "ZeroPadding2D", "name": "z", "padding": [[1, -1], [0, 0]]}, r"padding=.* is not \(\(top, bottom\), \(left, right\)\)"),
]


@pytest.mark.parametrize("layer, message", ERRORS, ids=[e[0]["type"] + str(i) for i, e in enumerate(ERRORS)])
def test_errors_name_layer_what_and_fix(layer, message):
    with pytest.raises(SpecError, match=message):
        _one(layer)


def test_error_names_the_spec_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"name": "m", "input_shape": [4, 4, 1], "layers": [{"type": "Conv2D", "name": "conv_b", "filters": 2, "kernel_size": [5, 5]}]}))
    with pytest.raises(SpecError, match=r"bad\.json: layer 0 'conv_b'"):
        load_spec(path)


def test_malformed_files(tmp_path):
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(SpecError, match=r"a\.json: not valid JSON \(line 1, column 2"):
        load_spec(tmp_path / "a.json")
    (tmp_path / "b.yaml").write_text("layers: [unclosed")
    with pytest.raises(SpecError, match=r"b\.yaml: not valid YAML"):
        load_spec(tmp_path / "b.yaml")
    with pytest.raises(SpecError, match=r"no such file and no built-in spec of that name\. Built-in: seed650"):
        load_spec("seed651")
    (tmp_path / "c.json").write_text("[1, 2]")
    with pytest.raises(SpecError, match="must be a mapping"):
        load_spec(tmp_path / "c.json")


def test_duplicate_names_and_bad_graph_inputs():
    conv = dict(type="Conv2D", filters=1, kernel_size=1)
    with pytest.raises(SpecError, match="the name 'a' is used twice"):
        S.Model.from_dict({"name": "m", "input_shape": [4, 4, 1], "layers": [dict(conv, name="a"), dict(conv, name="a")]})
    with pytest.raises(SpecError, match=r"inputs \['zz'\] are not earlier layers"):
        S.Model.from_dict({"name": "m", "input_shape": [4, 4, 1], "layers": [dict(conv, name="a"), {"type": "Add", "name": "s", "inputs": ["a", "zz"]}]})
    with pytest.raises(SpecError, match="Add needs inputs whose sizes agree or are 1 on each axis"):
        S.Model.from_dict({"name": "m", "input_shape": [4, 4, 3], "layers": [dict(conv, name="a", filters=2), {"type": "Add", "name": "s", "inputs": ["a", "input"]}]})


def test_input_layer_first_and_channels_first_flatten_shape():
    model = S.Model.from_dict({"name": "m", "layers": [{"type": "Input", "shape": [2, 3, 4]}, {"type": "Flatten", "name": "f", "data_format": "channels_first"}]})
    assert model.input_shape == (2, 3, 4) and model.output_shape == (24,)


def test_graph_shapes():
    model = S.Model(name="g", input_shape=(8, 8, 2), layers=(
        S.Conv2D(name="a", filters=3, kernel_size=3, padding="same"),
        S.Conv2D(name="b", filters=3, kernel_size=1, inputs=("input",)),
        S.Add(name="sum", inputs=("a", "b")),
        S.Concatenate(name="cat", inputs=("sum", "a")),
    ))
    assert model.output_shape == (8, 8, 6)


def test_strict_reading_duplicate_and_unknown_keys(tmp_path):
    layer = '{"type": "Flatten", "name": "f"}'
    (tmp_path / "dup.json").write_text(f'{{"name": "m", "input_shape": [2, 2], "input_shape": [3, 3], "layers": [{layer}]}}')
    with pytest.raises(SpecError, match=r"dup\.json: the key 'input_shape' appears twice in one object"):
        load_spec(tmp_path / "dup.json")
    (tmp_path / "dup.yaml").write_text("name: m\ninput_shape: [2, 2]\nlayers:\n- {type: Flatten, name: f, name: g}\n")
    with pytest.raises(SpecError, match=r"dup\.yaml: line 4: the key 'name' appears twice"):
        load_spec(tmp_path / "dup.yaml")
    (tmp_path / "typo.json").write_text(f'{{"name": "m", "input_shap": [2, 2], "input_shape": [2, 2], "layers": [{layer}]}}')
    with pytest.raises(SpecError, match=r"typo\.json: unknown top-level key\(s\) 'input_shap'"):
        load_spec(tmp_path / "typo.json")


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"layers": ' + "[" * 80 + "]" * 80 + "}"])
def test_deep_nesting_is_one_error(tmp_path, text):
    (tmp_path / "deep.json").write_text(text)
    with pytest.raises(LimitError, match=r"deep\.json: nested more than"):
        load_spec(tmp_path / "deep.json")


def test_a_spec_too_large_to_allocate_is_refused_before_anything_runs(monkeypatch):
    # 44e9 parameters (the hostile case of issue 15): refused as the spec is built.
    layers = [{"type": "Flatten", "name": "f"}, {"type": "Dense", "name": "d", "units": 44_000}]
    with pytest.raises(LimitError, match=r"model 'big': 44,000,044,000 parameters \(float32\) would take 164 GiB, more than "
                                         r"the limit of 256 MiB\. If the file is trusted, raise the limit: LAYERLAB_MAX_BYTES=164G"):
        S.Model.from_dict({"name": "big", "input_shape": [1000, 1000], "layers": layers})
    with pytest.raises(LimitError, match=r"a tensor of 4,000,000,000 values per sample"):
        S.Model.from_dict({"name": "wide", "input_shape": [2000, 2000, 1000], "layers": layers[:1]})
    monkeypatch.setenv("LAYERLAB_MAX_BYTES", "200G")
    assert S.Model.from_dict({"name": "big", "input_shape": [1000, 1000], "layers": layers}).param_count == 44_000_044_000
    monkeypatch.setenv("LAYERLAB_MAX_BYTES", "lots")
    with pytest.raises(LimitError, match=r"LAYERLAB_MAX_BYTES='lots' is not a size"):
        S.Model.from_dict({"name": "big", "input_shape": [1000, 1000], "layers": layers})


def test_import_layerlab_imports_no_numpy():
    # `import layerlab` stays cheap (the version, the lazy probe); numpy comes with the first real use.
    import subprocess
    import sys

    code = "import sys, layerlab; print('numpy' in sys.modules, callable(layerlab.probe), 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "True"]
