"""`layerlab explain`: the padding plan of seed650 as golden text, and the NNC IgnoreBorder verdicts
checked against real nnabla and real Keras."""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap

import numpy as np
import pytest

from conftest import REPO, require_env
from layerlab import spec as S
from layerlab.cli import main
from layerlab.padding_plan import explain_model
from layerlab.presets import seed650

GOLDEN = REPO / "tests" / "golden"


def golden(name: str, text: str) -> None:
    """Compare with tests/golden/NAME; LAYERLAB_UPDATE_GOLDEN=1 rewrites it (then read the diff)."""
    path = GOLDEN / name
    if os.environ.get("LAYERLAB_UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def test_seed650_padding_plan_golden():
    text = explain_model(seed650())
    golden("explain_seed650.txt", text)
    flat = " ".join(text.split())
    assert "maxpool1 (25 -> 13: 1 row at the bottom and 1 column at the right)" in flat
    assert "maxpool2 (11 -> 6: 1 row at the bottom and 1 column at the right)" in flat
    assert "Padding: 2 of 11 layers pad:" in flat and "Nothing else pads." in flat
    assert "out_h = ceil(25 / 2) = 13" in text and "total = max((13 - 1) * 2 + 2 - 25, 0) = 1 -> pad_top = 0, pad_bottom = 1" in text
    assert text.count("\n     no padding\n") == 3 and flat.count("no window, no padding") == 5
    assert flat.count("IgnoreBorder=False, Padding 0 is identical") == 2 and "DIFFERS" not in text
    assert "NNC's Affine reads C-H-W" in flat  # channels_first Flatten order


def test_channels_last_plan_pads_the_same():
    text = explain_model(seed650("channels_last"))
    assert " ".join(text.split()).count("pads 1 row at the bottom and 1 column at the right") == 2
    assert "NNC's Affine" not in text  # channels_last flattens H-W-C, nothing to say


def test_cli_explain_spec_name_and_spec_file(tmp_path, capsys):
    assert main(["explain", "seed650"]) == 0
    assert capsys.readouterr().out == explain_model(seed650())
    model = S.Model(name="odd", input_shape=(7, 7, 1), layers=(
        S.Conv2D(name="conv_even", filters=1, kernel_size=4, padding="same"),
        S.MaxPooling2D(name="pool3", pool_size=3, strides=1, padding="same"),
        S.ZeroPadding2D(name="zp", padding=((1, 0), (0, 2))),
        S.MaxPooling2D(name="pool_valid", pool_size=2, strides=2, padding="valid"),
    ))
    model.save(tmp_path / "odd.json")
    assert main(["explain", str(tmp_path / "odd.json")]) == 0
    flat = " ".join(capsys.readouterr().out.split())
    assert "pads 1 row at the top and 2 rows at the bottom and 1 column at the left and 2 columns at the right (fill: zeros)" in flat
    assert "pads 1 row at the top and 1 row at the bottom" not in flat
    assert "NNC Convolution pads symmetrically and cannot express" in flat
    assert "Equivalent: IgnoreBorder=True, Padding (1, 1)." in flat
    assert "pads 1 row at the top and 2 columns at the right explicitly with zeros" in flat
    assert "it makes 4x5 outputs (extra windows clipped at the border), Keras 4x4. Use IgnoreBorder=True" in flat
    assert "Padding: 3 of 4 layers pad" in flat
    assert "differ from Neural Network Console's defaults (see above): conv_even, pool3, pool_valid." in flat


def test_cli_explain_unknown_source_is_one_line(capsys):
    assert main(["explain", "no_such_spec"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "SpecError: spec 'no_such_spec': no such file and no built-in spec" in err


def test_cli_explain_real_keras2_model_file(shared_dir, capsys):
    """A real Keras 2.2.4 .h5 written by someone else, read with h5py alone."""
    path = shared_dir / "models" / "keras2" / "keras224_sequential_mnist.h5"
    assert main(["explain", str(path)]) == 0
    flat = " ".join(capsys.readouterr().out.split())
    assert "conv2d_1 (Conv2D): (28, 28, 1) -> (28, 28, 64)" in flat
    assert flat.count("pads 1 row at the top and bottom; 1 column at the left and right (fill: zeros)") == 2
    assert flat.count("NNC Convolution with pad (1, 1) (symmetric zeros) is identical.") == 2
    assert "Padding: 2 of 9 layers pad: conv2d_1 (28 -> 28:" in flat and "DIFFERS" not in flat


# --- NNC verdicts: real nnabla vs real Keras ---------------------------------------------------------

# (height, width, pool_size, strides, padding)
NNC_CASES = [
    (25, 25, (2, 2), (2, 2), "same"),  # seed650 maxpool1
    (11, 11, (2, 2), (2, 2), "same"),  # seed650 maxpool2
    (5, 6, (3, 3), (1, 1), "same"),    # pads 1 on every side
    (6, 7, (3, 3), (2, 2), "same"),    # rows (0, 1), columns (1, 1)
    (5, 5, (4, 4), (1, 1), "same"),    # (1, 2) per axis
    (5, 4, (3, 2), (2, 1), "same"),
    (6, 6, (3, 3), (3, 3), "same"),    # no padding at all
    (5, 5, (3, 3), (3, 3), "same"),    # (0, 1)
    (7, 7, (2, 2), (2, 2), "valid"),   # NNC makes 4, Keras 3
    (8, 8, (2, 2), (2, 2), "valid"),
    (7, 6, (3, 3), (2, 2), "valid"),
]

NNABLA_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import nnabla as nn
    import nnabla.functions as F
    jobs = json.load(open(sys.argv[1]))
    data = np.load(sys.argv[2])
    out = {}
    for i, job in enumerate(jobs):
        x = nn.Variable.from_numpy_array(data[f"x{i}"])
        y = F.max_pooling(x, tuple(job["kernel"]), tuple(job["stride"]), ignore_border=job["ignore_border"], pad=tuple(job["pad"]))
        y.forward()
        out[f"y{i}"] = np.array(y.d, dtype=np.float32)
    np.savez(sys.argv[3], **out)
""")


def _verdict(layer: S.Layer, shape) -> tuple[bool, tuple[int, int] | None, bool]:
    """From explain's text: (NNC IgnoreBorder=False differs?, suggested IgnoreBorder=True padding, suggests IgnoreBorder=True)."""
    text = " ".join(explain_model(S.Model(name="one", input_shape=shape, layers=(layer,))).split())
    differs = "DIFFERS" in text
    assert differs or "is identical" in text or "reads the same windows" in text
    match = re.search(r"Equivalent: IgnoreBorder=True, Padding \((\d+), (\d+)\)", text)
    return differs, (int(match.group(1)), int(match.group(2))) if match else None, "Use IgnoreBorder=True" in text


@pytest.mark.nnabla
@pytest.mark.keras
def test_nnc_verdicts_match_real_nnabla_and_keras(tmp_path, keras):
    nnabla_python = require_env("NNABLA_PYTHON")
    from layerlab.keras_build import keras_layer

    rng = np.random.default_rng(11)
    jobs, arrays, expected = [], {}, []
    for h, w, pool_size, strides, padding in NNC_CASES:
        layer = S.MaxPooling2D(name="p", pool_size=pool_size, strides=strides, padding=padding, data_format="channels_first")
        x = rng.standard_normal((1, 2, h, w)).astype(np.float32)
        keras_out = keras.ops.convert_to_numpy(keras_layer(layer, keras)(x))
        differs, pads, use_ignore_border = _verdict(layer, (2, h, w))
        plain = len(jobs)
        jobs.append({"kernel": pool_size, "stride": strides, "ignore_border": False, "pad": [0, 0]})
        arrays[f"x{plain}"] = x
        alt = None
        if pads or use_ignore_border:
            alt = len(jobs)
            jobs.append({"kernel": pool_size, "stride": strides, "ignore_border": True, "pad": list(pads or (0, 0))})
            arrays[f"x{alt}"] = x
        expected.append((differs, plain, alt, keras_out))
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    np.savez(tmp_path / "x.npz", **arrays)
    (tmp_path / "run.py").write_text(NNABLA_SCRIPT)
    done = subprocess.run([nnabla_python, str(tmp_path / "run.py"), str(tmp_path / "jobs.json"), str(tmp_path / "x.npz"),
                           str(tmp_path / "y.npz")], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    nnabla_out = np.load(tmp_path / "y.npz")
    for case, (differs, plain, alt, keras_out) in zip(NNC_CASES, expected, strict=True):
        same = nnabla_out[f"y{plain}"].shape == keras_out.shape and np.array_equal(nnabla_out[f"y{plain}"], keras_out)
        assert same != differs, case
        if alt is not None:  # the equivalent that explain suggests really is one
            np.testing.assert_array_equal(nnabla_out[f"y{alt}"], keras_out, err_msg=str(case))
    assert sum(e[0] for e in expected) >= 5 and sum(e[2] is not None for e in expected) >= 3
