"""Excel export: the formatted weights workbook, and the workbook whose formulas are the network.

The formula workbook is checked by a real spreadsheet engine: LibreOffice recalculates it
headless and every layer's values are compared with Keras (the oracle), for seed650 on 21 MNIST
test images (20 of them pasted into the `input` sheet of a recalculated workbook, as a user
would) and for two small networks that use every other supported layer, activation and border
case, with layer names that look like formulas.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import openpyxl
import pytest

from conftest import random_weights, require_tool
from layerlab import spec as S
from layerlab.errors import ExportError, ShapeError
from layerlab.export.excel import export_xlsx, read_xlsx
from layerlab.export.excel_common import sheet_title
from layerlab.export.excel_formulas import export_xlsx_formulas, read_formula_values
from layerlab.export.excel_layout import Block, a1
from layerlab.network import Network
from layerlab.presets import seed650

HOSTILE = ('=HYPERLINK("x")', "+cmd|' /C calc'!A0")
# Every function the formula workbook may call; a name from the model must never add one.
FUNCTIONS = {"SUMPRODUCT", "MAX", "MIN", "AVERAGE", "SUM", "EXP", "LN", "TANH", "IF", "ABS", "ERF", "SQRT", "MATCH"}


def zoo_channels_last() -> S.Model:
    """Every supported layer and activation, odd sizes and borders, hostile names."""
    d = dict(data_format="channels_last")
    dense = [S.Dense(name=f"dense_{a}", units=8, activation=a) for a in
             ("swish", "softsign", "hard_sigmoid", "leaky_relu", "relu6", "exponential", "silu", "linear", "hard_silu")]
    return S.Model(name="zoo-cl", input_shape=(7, 9, 2), layers=(
        S.Rescaling(name=HOSTILE[0], scale=0.5, offset=-0.25),
        S.ZeroPadding2D(name=HOSTILE[1], padding=((1, 0), (0, 2)), **d),  # (8, 11, 2)
        S.Conv2D(name="conv [a]:b*?/\\ with a name past 31 characters", filters=4, kernel_size=(3, 2),
                 strides=(2, 2), padding="same", activation="relu", **d),  # (4, 6, 4): stride 2 'same', odd width
        S.BatchNormalization(name="History"),
        S.Conv2D(name="it's", filters=3, kernel_size=(2, 2), dilation_rate=(2, 2), padding="same",
                 activation="gelu", use_bias=False, **d),  # (4, 6, 3)
        S.MaxPooling2D(name="'quoted'", pool_size=(3, 3), strides=(1, 1), padding="same", **d),  # total padding 2
        S.AveragePooling2D(name="HISTORY", pool_size=(2, 2), strides=(2, 2), padding="same", **d),  # (2, 3, 3)
        S.Activation(name="elu", activation="elu"),
        S.Conv2D(name="one_by_one", filters=4, kernel_size=(1, 1), activation="selu", **d),  # (2, 3, 4)
        S.Activation(name="softplus", activation="softplus"),
        S.Conv2D(name="valid", filters=3, kernel_size=(2, 2), activation="sigmoid", **d),  # (1, 2, 3)
        S.Dropout(name="dropout", rate=0.5),
        S.Flatten(name="flatten", **d),
        *dense,
        S.Dense(name="dense_tanh", units=6, activation="tanh"),
        S.Reshape(name="reshape", target_shape=(1, 2, 3)),
        S.Activation(name="softmax3d", activation="softmax"),  # along the last axis of a rank-3 tensor
        S.Flatten(name="flatten2", **d),
        S.Dense(name="=SUM(1)", units=4, activation="softmax"),
    ))


def zoo_channels_first() -> S.Model:
    d = dict(data_format="channels_first")
    return S.Model(name="zoo-cf", input_shape=(2, 7, 5), layers=(
        S.Conv2D(name="conv", filters=3, kernel_size=(3, 3), strides=(2, 2), padding="same", activation="tanh", **d),
        S.ZeroPadding2D(name="pad", padding=((0, 1), (2, 0)), **d),  # (3, 5, 5)
        S.MaxPooling2D(name="max", pool_size=(3, 3), strides=(2, 2), padding="same", **d),  # (3, 3, 3)
        # A channels_last layer inside a channels_first model: its windows are not rectangles
        # of the previous sheet, so its formulas list the cells one by one.
        S.MaxPooling2D(name="max_cl", pool_size=(2, 2), strides=(1, 1), padding="same", data_format="channels_last"),
        S.AveragePooling2D(name="avg", pool_size=(2, 2), strides=(2, 2), padding="same", **d),  # (3, 2, 2)
        S.BatchNormalization(name="bn", axis=1, center=False),
        S.Activation(name="softmax_w", activation="softmax"),  # along W, the last axis
        S.Flatten(name="flatten", **d),  # Keras order H, W, C
        S.Dense(name="dense", units=5, use_bias=False),
        S.Activation(name="softmax", activation="softmax"),
    ))


@contextlib.contextmanager
def keras_in(float64: bool):
    """Keras computing in float64 (JAX x64, Keras' float64 policy and floatx) or as usual, only
    inside the block. Keras 3.15 still rounds tanh (and a few other ops) to float32 there."""
    from layerlab.keras_build import import_keras

    keras = import_keras()
    if not float64:
        yield keras
        return
    import jax

    # jax.enable_x64 in JAX >= 0.7, jax.experimental.enable_x64 before.
    x64 = jax.enable_x64(True) if callable(getattr(jax, "enable_x64", None)) else __import__(
        "jax.experimental", fromlist=["enable_x64"]).enable_x64()
    policy, floatx = keras.config.dtype_policy(), keras.config.floatx()
    with x64:
        try:
            keras.config.set_dtype_policy("float64")
            keras.config.set_floatx("float64")
            yield keras
        finally:
            keras.config.set_dtype_policy(policy)
            keras.config.set_floatx(floatx)


def _plain(layer: S.Layer, i: int) -> S.Layer:
    # Keras refuses some names (a '/'), so it runs copies with plain names.
    return dataclasses.replace(layer, name=f"l{i}")


def keras_trace(spec: S.Model, weights: dict, x: np.ndarray, float64: bool = False) -> dict[str, np.ndarray]:
    """Every layer's output computed by Keras on the batch ``x``, by layer name."""
    from layerlab.keras_build import build_keras

    dtype = np.float64 if float64 else np.float32
    plain = S.Model(name="oracle", input_shape=spec.input_shape, layers=tuple(_plain(l, i) for i, l in enumerate(spec.layers)))
    plain_weights = {f"l{i}": {k: v.astype(dtype) for k, v in weights[l.name].items()}
                     for i, l in enumerate(spec.layers) if l.name in weights}
    with keras_in(float64) as keras:
        model = build_keras(plain, plain_weights)
        probe = keras.Model(model.inputs, [layer.output for layer in model.layers])
        outs = probe([x.astype(dtype)])  # called eagerly: no compilation for one small batch
        return {layer.name: np.asarray(out) for layer, out in zip(spec.layers, outs, strict=True)}


def keras_layer_by_layer(spec: S.Model, weights: dict, inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Each layer alone, in Keras float64, on the batch ``inputs[k]`` given to layer k."""
    from layerlab.keras_build import build_keras

    outs = {}
    with keras_in(True):
        for i, (info, x) in enumerate(zip(spec.infos, inputs, strict=True)):
            one = S.Model(name="one", input_shape=info.input_shapes[0], layers=(_plain(info.layer, i),))
            w = {f"l{i}": {k: v.astype(np.float64) for k, v in weights[info.layer.name].items()}} if info.layer.name in weights else None
            outs[info.layer.name] = np.asarray(build_keras(one, w)(x.astype(np.float64)))
    return outs


def assert_matches(got: np.ndarray, want: np.ndarray, where: str, tolerance: float = 1e-6) -> float:
    """Max abs difference <= ``tolerance`` times the range of the values (their magnitude when
    all are equal); returns the ratio."""
    assert got.shape == want.shape, where
    scale = float(np.ptp(want)) or float(np.max(np.abs(want))) or 1.0
    err = float(np.max(np.abs(got - want))) / scale
    assert err <= tolerance, f"{where}: max abs diff {err:.3g} of the range"
    return err


# --- the values workbook --------------------------------------------------------------------

def test_weights_workbook_reads_back_exactly_with_summary(tmp_path):
    spec = seed650()
    network = Network(spec, random_weights(spec))
    path = export_xlsx(network, tmp_path / "w.xlsx")
    back = read_xlsx(path)
    for layer, arrays in network.weights.items():
        for name, array in arrays.items():
            np.testing.assert_array_equal(back[layer][name].view(np.uint32), array.view(np.uint32))
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == ["summary", "conv1", "conv2", "conv3", "dense1"]
    rows = list(wb["summary"].iter_rows(values_only=True))
    layer_rows = [r for r in rows[4:15]]
    assert [r[1] for r in layer_rows] == [layer.name for layer in spec.layers]
    assert [r[4] for r in layer_rows] == [85, 0, 0, 138, 0, 0, 147, 0, 0, 280, 0]
    assert rows[15][1] == "total" and rows[15][4] == 650
    assert layer_rows[0][3] == "(5, 25, 25)"
    # conv2's kernel: 5 x 3 grids of 3x3, each with its colour scale centred on zero.
    conv2 = wb["conv2"]
    rules = [r for cf in conv2.conditional_formatting for r in cf.rules]
    assert rules and all(r.type == "colorScale" for r in rules)
    kernel = network.weights["conv2"]["kernel"]
    # openpyxl writes 16 significant digits: the double read back is the float32 to ~1e-16, and
    # exactly the float32 once rounded to float32.
    assert np.float32(conv2["B5"].value) == kernel[0, 0, 0, 0] and np.float32(conv2["F5"].value) == kernel[0, 0, 0, 1]
    assert np.float32(conv2["B9"].value) == kernel[0, 0, 1, 0]


def test_sheet_titles_follow_excel_rules():
    used: set[str] = set()
    titles = [sheet_title(n, used) for n in
              ("a[b]:c*d?e/f\\g", "History", "x" * 40, "x" * 40, "'quoted'", "Input", "input", "", "\U0001F600" * 20)]
    assert titles[0] == "a_b__c_d_e_f_g"
    assert titles[1] == "History (2)"
    assert titles[2] == "x" * 31 and titles[3] == "x" * 27 + " (2)"
    assert titles[4] == "quoted"
    assert titles[5] == "Input" and titles[6] == "input (2)"  # unique without regard to case
    assert titles[7] == "sheet"
    assert len(titles[8].encode("utf-16-le")) // 2 <= 31  # Excel counts UTF-16 units
    for title in titles:
        assert not re.search(r"[\[\]:*?/\\]", title) and not title.startswith("'") and not title.endswith("'")


def _sheet_xml(path: Path) -> dict[str, str]:
    """Sheet title -> worksheet XML of an .xlsx."""
    ns = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main",
          "r": "http://schemas.openxmlformats.org/officeDocument/2006/relationships"}
    with zipfile.ZipFile(path) as z:
        book = ElementTree.fromstring(z.read("xl/workbook.xml"))
        rels = ElementTree.fromstring(z.read("xl/_rels/workbook.xml.rels"))
        targets = {r.get("Id"): r.get("Target") for r in rels}
        out = {}
        for sheet in book.find("m:sheets", ns):
            target = targets[sheet.get(f"{{{ns['r']}}}id")].lstrip("/")
            out[sheet.get("name")] = z.read(target if target.startswith("xl/") else "xl/" + target).decode()
    return out


def test_names_are_text_in_both_workbooks(tmp_path):
    spec = zoo_channels_last()
    network = Network(spec, random_weights(spec))
    values = export_xlsx(network, tmp_path / "values.xlsx")
    formulas = export_xlsx_formulas(network, tmp_path / "formulas.xlsx", np.zeros(spec.input_shape, np.float32))
    for path in (values, formulas):
        xml = "".join(_sheet_xml(path).values())
        for name in HOSTILE:
            escaped = name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
            cells = re.findall(r'<c [^>]*t="inlineStr"[^>]*><is><t>(?:' + re.escape(name) + "|" + re.escape(escaped) + ")</t>", xml)
            assert cells, f"{name!r} is not an inline string in {path.name}"
        for formula in re.findall(r"<f>(.*?)</f>", xml):
            bare = re.sub(r"'(?:[^']|'')*'!", "", formula.replace("&apos;", "'").replace("&quot;", '"'))
            assert set(re.findall(r"([A-Z][A-Z0-9.]*)\(", bare)) <= FUNCTIONS, formula
    assert "<f>" not in "".join(_sheet_xml(values).values())
    wb = openpyxl.load_workbook(values)
    cell = next(c for row in wb["summary"].iter_rows() for c in row if c.value == HOSTILE[0])
    assert cell.data_type == "s" and cell.quotePrefix


# --- the formula workbook, without a spreadsheet engine -------------------------------------------

def test_formula_workbook_structure_for_seed650(tmp_path):
    spec = seed650()
    network = Network(spec, random_weights(spec))
    image = np.random.default_rng(5).random(spec.input_shape).astype(np.float32)
    path = export_xlsx_formulas(network, tmp_path / "f.xlsx", image, label=7)
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == ["input", *(layer.name for layer in spec.layers), "prediction",
                             "conv1 weights", "conv2 weights", "conv3 weights", "dense1 weights", "layout"]
    # The image is one 28x28 grid (channels_first, one channel) of the exact float32 values.
    grid = Block("input", (1, 28, 28), 5, 2, 0)
    assert wb["input"]["A4"].value == "channel 0"
    assert np.float32(wb["input"][a1(grid.cell((0, 27, 27)))].value) == image[0, 27, 27]
    conv1 = Block("conv1", (5, 25, 25), 5, 2, 0)
    assert wb["conv1"][a1(conv1.cell((0, 0, 0)))].value == "=SUMPRODUCT('input'!B5:E8,'conv1 weights'!B4:E7)+'conv1 weights'!B9"
    assert wb["conv1"][a1(conv1.cell((1, 2, 3)))].value == "=SUMPRODUCT('input'!E7:H10,'conv1 weights'!G4:J7)+'conv1 weights'!G9"
    # maxpool1: 25 -> 13 with 'same'; the last window has one real row and column only.
    pool = Block("maxpool1", (5, 13, 13), 5, 2, 0)
    assert wb["maxpool1"][a1(pool.cell((0, 0, 0)))].value == "=MAX('conv1'!B5:C6)"
    assert wb["maxpool1"][a1(pool.cell((2, 12, 12)))].value == f"=MAX('conv1'!{a1(conv1.cell((2, 24, 24)))})"
    assert wb["maxpool1"][a1(pool.cell((2, 12, 0)))].value == f"=MAX('conv1'!{a1(conv1.cell((2, 24, 0)))}:{a1(conv1.cell((2, 24, 1)))})"
    assert wb["tanh1"]["B5"].value == "=TANH('maxpool1'!B5)"
    # Flatten in Keras' channels_first order: H, W, C.
    conv3 = Block("tanh3", (3, 3, 3), 5, 2, 0)
    flat = [wb["flat1"].cell(5 + i, 2).value for i in range(27)]
    assert flat[:4] == [f"='tanh3'!{a1(conv3.cell(idx))}" for idx in ((0, 0, 0), (1, 0, 0), (2, 0, 0), (0, 0, 1))]
    assert wb["dense1"]["B5"].value == "=SUMPRODUCT('flat1'!B5:B31,'dense1 weights'!B4:B30)+'dense1 weights'!B32"
    # softmax as Keras: max (B19), exp(x - max) (B24:B33), their sum (B38), quotient (B5:B14).
    assert [wb["softmax"][c].value for c in ("B19", "B24", "B38", "B5")] == [
        "=MAX('dense1'!B5:B14)", "=EXP('dense1'!B5-B19)", "=SUM(B24:B33)", "=B24/B38"]
    assert wb["prediction"]["B3"].value == "=MATCH(MAX('softmax'!B5:B14),'softmax'!B5:B14,0)-1"
    assert wb["prediction"]["B4"].value == 7
    rules = [r for cf in wb["conv1"].conditional_formatting for r in cf.rules]
    assert len(rules) == 5 and all(r.type == "colorScale" for r in rules)  # one heat map per feature map


def test_graph_layers_are_refused_by_name(tmp_path):
    spec = S.Model(name="g", input_shape=(4, 4, 1), layers=(
        S.Conv2D(name="a", filters=1, kernel_size=1),
        S.Conv2D(name="b", filters=1, kernel_size=1, inputs=("input",)),
        S.Add(name="sum_of_branches", inputs=("a", "b")),
    ))
    network = Network(spec, random_weights(spec))
    with pytest.raises(ExportError, match=r"layer 1 'b' \(Conv2D\) reads named inputs: a workbook of live formulas holds a chain"):
        export_xlsx_formulas(network, tmp_path / "g.xlsx", np.zeros((4, 4, 1), np.float32))
    assert not (tmp_path / "g.xlsx").exists()


def test_wrong_image_is_a_shape_error(tmp_path):
    spec = seed650()
    network = Network(spec, random_weights(spec))
    with pytest.raises(ShapeError, match=r"image shape \(28, 28\) does not fit, expected \(1, 28, 28\)"):
        export_xlsx_formulas(network, tmp_path / "x.xlsx", np.zeros((28, 28), np.float32))
    with pytest.raises(ShapeError, match="NaN or infinity"):
        export_xlsx_formulas(network, tmp_path / "x.xlsx", np.full((1, 1, 28, 28), np.nan, np.float32))
    with pytest.raises(ShapeError, match="dtype <U1 is not numeric"):
        export_xlsx_formulas(network, tmp_path / "x.xlsx", np.full((1, 28, 28), "a"))


def test_a_formula_past_excels_limit_is_refused(tmp_path):
    spec = S.Model(name="wide", input_shape=(2, 2, 300), layers=(S.Conv2D(name="wide_conv", filters=1, kernel_size=1),))
    network = Network(spec, random_weights(spec))
    with pytest.raises(ExportError, match=r"layer 0 'wide_conv' \(Conv2D\): a formula of \d+ characters exceeds Excel's limit of 8192"):
        export_xlsx_formulas(network, tmp_path / "w.xlsx", np.zeros((2, 2, 300), np.float32))


# --- the LibreOffice helper's failures, without LibreOffice -----------------------------------------

def test_recalculate_reports_bad_requests(tmp_path, monkeypatch):
    from layerlab.export.libreoffice import find_soffice, recalculate

    book = tmp_path / "a" / "book.xlsx"
    book.parent.mkdir()
    book.write_bytes(b"not really a workbook")
    twin = tmp_path / "b" / "book.xlsx"
    twin.parent.mkdir()
    twin.write_bytes(b"")
    with pytest.raises(ExportError, match="no such workbook"):
        recalculate([tmp_path / "missing.xlsx"], tmp_path / "out", soffice="/bin/true")
    with pytest.raises(ExportError, match="distinct names"):
        recalculate([book, twin], tmp_path / "out", soffice="/bin/true")
    with pytest.raises(ExportError, match="would be overwritten"):
        recalculate([book], book.parent, soffice="/bin/true")
    with pytest.raises(ExportError, match="exited with status 1"):
        recalculate([book], tmp_path / "out", soffice="/bin/false")
    with pytest.raises(ExportError, match=r"LibreOffice wrote no .*book\.xlsx"):
        recalculate([book], tmp_path / "out", soffice="/bin/true")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ExportError, match="apt-get install --no-install-recommends libreoffice-calc"):
        find_soffice()


def _crashing_soffice(folder, crashes: int):
    """A stand-in for soffice that dies of a segfault on its first ``crashes`` runs, as
    soffice.bin under its wrapper script does (status 139), then writes each file into --outdir."""
    script = folder / "soffice"
    script.write_text(f"""#!/bin/sh
runs=$(cat "{folder}/runs" 2>/dev/null || echo 0); echo $((runs + 1)) > "{folder}/runs"
[ "$runs" -lt {crashes} ] && exit 139
while [ "$#" -gt 0 ]; do
  case "$1" in --outdir) out="$2"; shift;; *.xlsx) cp "$1" "$out/";; esac; shift
done
""")
    script.chmod(0o755)
    return str(script)


def test_recalculate_runs_again_once_after_libreoffice_crashes(tmp_path):
    from layerlab.export.libreoffice import recalculate

    book = tmp_path / "a" / "book.xlsx"
    book.parent.mkdir()
    book.write_bytes(b"a workbook")
    once = tmp_path / "once"
    once.mkdir()
    assert recalculate([book], tmp_path / "out", soffice=_crashing_soffice(once, 1)) == [tmp_path / "out" / "book.xlsx"]
    assert (tmp_path / "out" / "book.xlsx").read_bytes() == b"a workbook" and (once / "runs").read_text().strip() == "2"
    always = tmp_path / "always"
    always.mkdir()
    with pytest.raises(ExportError, match=r"exited with status 139 \(it crashed\)"):
        recalculate([book], tmp_path / "out2", soffice=_crashing_soffice(always, 9))
    assert (always / "runs").read_text().strip() == "2" and not (tmp_path / "out2" / "book.xlsx").exists()


def test_recalculate_stops_a_hung_soffice_and_its_children(tmp_path):
    from layerlab.export.libreoffice import recalculate

    book = tmp_path / "book.xlsx"
    book.write_bytes(b"")
    pid_file = tmp_path / "child.pid"
    hung = tmp_path / "soffice"
    hung.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {pid_file}\nwait\n")
    hung.chmod(0o755)
    with pytest.raises(ExportError, match="did not finish within 1 s and was stopped"):
        recalculate([book], tmp_path / "out", soffice=str(hung), timeout=1)
    status = Path(f"/proc/{pid_file.read_text().strip()}/status")
    # The grandchild got the SIGKILL too: it is gone, or a zombie waiting for init.
    assert not status.exists() or "State:\tZ" in status.read_text()


# --- recalculated by LibreOffice, compared with Keras ------------------------------------------

def ridge_seed650(mnist, keras_weights_of):
    """seed650 with Keras' seeded conv layers (zero biases, so tanh does not saturate) and a
    dense layer fitted by ridge regression on 3000 training images: about 64% right on the test
    set, with moderate weights (|w| < 10), made in a few seconds without training."""
    from layerlab.keras_build import build_keras

    spec = seed650(bias_initializer="zeros")
    model = build_keras(spec, seed=650)
    weights = keras_weights_of(model, spec)
    features = keras_trace(spec, weights, mnist.x_train[:3000, None] / np.float32(255))["flat1"]
    a = np.c_[features, np.ones(len(features))].astype(np.float64)
    target = np.eye(10)[mnist.y_train[:3000]] * 10 - 5
    solution = np.linalg.solve(a.T @ a + np.eye(a.shape[1]), a.T @ target)
    weights["dense1"] = {"kernel": solution[:-1].astype(np.float32), "bias": solution[-1].astype(np.float32)}
    return Network(spec, weights)


def paste_image(recalculated: Path, out: Path, image: np.ndarray, block: Block) -> None:
    """Overwrite the input cells of a recalculated workbook in its XML, leaving every formula's
    cached (now stale) value in place: what a user pasting a digit leaves behind."""
    values = {a1(block.cell(index)): repr(float(image[index])) for index in np.ndindex(image.shape)}
    with zipfile.ZipFile(recalculated) as z:
        entries = {info: z.read(info) for info in z.infolist()}
    (target,) = [i for i in entries if i.filename == "xl/worksheets/sheet1.xml"]
    count = 0

    def swap(match):
        nonlocal count
        if match.group(1) not in values:
            return match.group(0)
        count += 1
        return f'<c r="{match.group(1)}"{match.group(2)}><v>{values[match.group(1)]}</v></c>'

    entries[target] = re.sub(r'<c r="([A-Z]+[0-9]+)"([^>]*)><v>[^<]*</v></c>', swap, entries[target].decode()).encode()
    assert count == image.size, "every input cell holds a value"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for info, data in entries.items():
            z.writestr(info, data)


@pytest.fixture(scope="module")
def recalculated(tmp_path_factory, mnist_dir, keras):
    """Everything LibreOffice computes for this module, in two soffice runs of two jobs each."""
    require_tool("soffice")
    from layerlab.data import load_mnist
    from layerlab.export.libreoffice import recalculate
    from layerlab.keras_build import keras_weights

    tmp = tmp_path_factory.mktemp("xlsx")
    mnist = load_mnist(mnist_dir, download=False, verify=False)
    seed = ridge_seed650(mnist, keras_weights)
    images = mnist.x_test[:21, None] / np.float32(255)  # (21, 1, 28, 28)
    zoos = {}
    files = [export_xlsx_formulas(seed, tmp / "seed650_0.xlsx", images[0], label=int(mnist.y_test[0]))]
    for i, spec in enumerate((zoo_channels_last(), zoo_channels_first())):
        network = Network(spec, random_weights(spec, 10 + i))
        x = np.random.default_rng(20 + i).standard_normal(spec.input_shape).astype(np.float32)
        files.append(export_xlsx_formulas(network, tmp / f"{spec.name}.xlsx", x))
        zoos[spec.name] = (network, x)
    first = recalculate(files, tmp / "out", jobs=2)
    # Paste test images 1..20 into the recalculated seed650 workbook, then recalculate those.
    pasted = []
    for i in range(1, len(images)):
        pasted.append(tmp / f"seed650_{i}.xlsx")
        paste_image(first[0], pasted[-1], images[i], Block("input", (1, 28, 28), 5, 2, 0))
    second = recalculate(pasted, tmp / "out2", jobs=2)
    return {"seed": seed, "images": images, "seed_files": [first[0], *second],
            "zoos": {name: (net, x, path) for (name, (net, x)), path in zip(zoos.items(), first[1:], strict=True)}}


def check_layers(network: Network, x: np.ndarray, values: list) -> float:
    """Compare workbook values with Keras twice; return the worst layer-local ratio.

    Layer by layer: each sheet's values against the Keras layer run in float64 on the previous
    sheet's values, within 1e-6 of the range: the formulas compute each layer as Keras does.
    End to end: every sheet against the whole Keras model in float64 from the image, within
    1e-5 (Keras 3.15 rounds tanh to float32 even then, and the dense weights amplify that).
    """
    spec = network.spec
    got = {layer.name: np.stack([v.outputs[layer.name] for v in values]) for layer in spec.layers}
    inputs = [x] + [got[layer.name] for layer in spec.layers[:-1]]
    local = keras_layer_by_layer(spec, network.weights, inputs)
    whole = keras_trace(spec, network.weights, x, float64=True)
    worst = 0.0
    for layer in spec.layers:
        for i in range(len(x)):
            worst = max(worst, assert_matches(got[layer.name][i], local[layer.name][i], f"image {i} {layer.name} (layer alone)"))
            assert_matches(got[layer.name][i], whole[layer.name][i], f"image {i} {layer.name} (end to end)", 1e-5)
    return worst


@pytest.mark.libreoffice
@pytest.mark.keras
@pytest.mark.mnist
@pytest.mark.slow
def test_libreoffice_computes_seed650_as_keras_on_21_mnist_images(recalculated):
    seed, images = recalculated["seed"], recalculated["images"]
    values = [read_formula_values(path) for path in recalculated["seed_files"]]
    for i, v in enumerate(values):  # the pasted digits are in place
        np.testing.assert_array_equal(v.input.astype(np.float32), images[i])
    worst = check_layers(seed, images, values)
    # The class the float32 Keras model predicts, as the user's model would.
    predicted = np.argmax(keras_trace(seed.spec, seed.weights, images)["softmax"], axis=1)
    assert [v.predicted_class for v in values] == predicted.tolist()
    print(f"worst layer-local difference from Keras float64: {worst:.3g} of the range")


@pytest.mark.libreoffice
@pytest.mark.keras
@pytest.mark.mnist  # shares the soffice run of the MNIST test
@pytest.mark.slow
@pytest.mark.parametrize("name", ["zoo-cl", "zoo-cf"])
def test_libreoffice_computes_every_layer_type_as_keras(recalculated, name):
    network, x, path = recalculated["zoos"][name]
    values = read_formula_values(path)
    np.testing.assert_array_equal(values.input.astype(np.float32), x)
    check_layers(network, x[None], [values])
    final = keras_trace(network.spec, network.weights, x[None])[network.spec.layers[-1].name]
    assert values.predicted_class == int(np.argmax(final[0]))
