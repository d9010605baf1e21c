"""``layerlab view``: the page data against the engine and probe, the server's answers, and the page
itself in a real browser (headless Chromium driven by Playwright).

The oracle for every number the page shows is the engine (tested against Keras elsewhere): each
layer's values equal ``Network.trace``; the copy orders reproduce the engine's outputs when they
gather from its inputs; the windows a click shows equal ``probe``'s windows for that cell; the
prediction after drawing a stroke equals ``Network.predict`` on the pixels the page holds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading

import numpy as np
import pytest

from conftest import SHARED, _missing, random_weights, require_module, require_path
from layerlab import spec as S
from layerlab.network import Network, output_layouts
from layerlab.probing import probe
from layerlab.view import data as D
from layerlab.view import open_network, static_runs, write_html
from test_export_c import GRAPHS

KERAS224 = SHARED / "models" / "keras2" / "keras224_sequential_mnist.h5"
KERAS231 = SHARED / "models" / "keras2" / "keras231_channels_first_mnist_weights.h5"
KERAS231_JSON = SHARED / "models" / "keras2" / "keras231_channels_first_mnist_model.json"
MLPERF = SHARED / "models" / "mlperf_tiny"


def _graph_network(case: str) -> Network:
    shape, layers = GRAPHS[case]
    spec = S.Model(name=case, input_shape=shape, layers=layers)
    return Network(spec, random_weights(spec, 3))


def _real_networks():
    from layerlab.modelfile import load

    nets = {"keras224": load(require_path(KERAS224)), "keras231_cf": load(require_path(KERAS231), architecture=str(KERAS231_JSON))}
    for name in ("pretrainedResnet.h5", "str_ww_ref_model.h5", "ad01.h5"):
        nets[name] = load(require_path(MLPERF / name))
    return nets


def _inputs_of(net: Network, run: dict, name: str, reads: list[str]) -> list[np.ndarray]:
    return [D.decode(run["input"]) if r == "input" else D.decode(run["layers"][r]["out"]) for r in reads]


def _check_page_data(net: Network, x: np.ndarray) -> None:
    """Every layer's page values are the engine's; copy orders and element-wise reads reproduce them."""
    model = D.describe(net, source="test", scale=255.0, trained=True)
    json.dumps(model, allow_nan=False)  # the page's JSON holds no NaN
    run = D.run(net, x)
    trace = net.trace(x)
    layouts = output_layouts(net.spec)
    for entry in model["layers"]:
        name = entry["name"]
        out = D.decode(run["layers"][name]["out"])
        assert list(out.shape) == entry["shape"], name
        np.testing.assert_array_equal(out, D.hwc(trace[name][0], layouts[name]), err_msg=name)
        ins = _inputs_of(net, run, name, entry["inputs"])
        assert [list(a.shape) for a in ins] == entry["input_shapes"], name
        if entry["kind"] == "copy":
            which, index = D.decode(entry["source"]["input"], "<i4"), D.decode(entry["source"]["index"], "<i4")
            gathered = np.zeros(out.size, np.float32)
            for k, a in enumerate(ins):
                hit = which == k
                gathered[hit] = a.reshape(-1)[index[hit]]
            np.testing.assert_array_equal(gathered, out.reshape(-1), err_msg=f"{name}: the copy order is not the engine's")
        if entry["kind"] == "elementwise":
            assert all(list(a.shape) == entry["shape"] for a in ins), name
        if entry["kind"] == "merge":  # each input of the merge's shape, or 1 along an axis it stretches
            assert all(d in (1, e) for a in ins for d, e in zip(a.shape, entry["shape"], strict=True)), name
        if entry["kind"] in D.WINDOWED and entry["type"] in ("Conv2D", "DepthwiseConv2D", "MaxPooling2D", "AveragePooling2D"):
            layer = net.spec.layer(name)
            reads = entry["inputs"][0]
            source = x if reads == "input" else trace[reads]
            windows = probe(dataclasses.replace(layer, inputs=()), source, net.weights.get(name)).windows
            win = entry["window"]
            for w in windows[:: max(1, len(windows) // 40)]:
                y, xx = w.out
                shown = [(r, c) for r in win["rows"][y] for c in win["cols"][xx]]
                assert shown == [cell.index for cell in w.cells], f"{name} out[{y}, {xx}]"
        if "pre" in run["layers"][name]:
            assert entry["activation"] != "linear"


@pytest.mark.parametrize("case", sorted(GRAPHS))
def test_page_data_of_graphs_is_the_engines(case):
    net = _graph_network(case)
    x = np.random.default_rng(1).standard_normal((1, *net.spec.input_shape)).astype(np.float32)
    _check_page_data(net, x)


@pytest.mark.slow
def test_page_data_of_real_models_is_the_engines():
    for name, net in _real_networks().items():
        x = np.random.default_rng(2).uniform(0, 1, (1, *net.spec.input_shape)).astype(np.float32)
        _check_page_data(net, x)
        model = D.describe(net, source=name, scale=255.0, trained=True)
        kinds = {e["kind"] for e in model["layers"]}
        assert "value" not in kinds, name  # every layer of the real models explains its cells


def test_notes_mark_what_surprises():
    from layerlab.presets import seed650

    spec = seed650()
    notes = {e["name"]: e["notes"] for e in D.describe(Network(spec, D.seeded_weights(spec)), source="s", scale=255, trained=False)["layers"]}
    flat = " ".join(n for v in notes.values() for n in v)
    assert "never wins" in flat or "unevenly" in flat or "drops" in flat
    cf = S.Model(name="cf", input_shape=(2, 4, 4), layers=(
        S.Conv2D(name="c", filters=2, kernel_size=2, strides=2, padding="same", data_format="channels_first"),
        S.MaxPooling2D(name="p", pool_size=3, strides=2, padding="same", data_format="channels_first"),
        S.Flatten(name="f", data_format="channels_first"), S.Dense(name="d", units=3, activation="hard_sigmoid_keras2")))
    notes = {e["name"]: e["notes"] for e in D.describe(Network(cf, random_weights(cf)), source="s", scale=255, trained=False)["layers"]}
    assert any("never wins" in n for n in notes["p"])
    assert any("unevenly" in n for n in notes["p"])  # 3x3 stride 2 'same' on 2x2 pads (0, 1)
    assert any("row, column, channel" in n for n in notes["f"])
    assert any("Keras 2's hard_sigmoid" in n for n in notes["d"])


# --- the server ------------------------------------------------------------------------------------

def _session(net, scale, trained=True, data_dir=None):
    from layerlab.view.server import Session

    return Session(net, "test", scale, trained, data_dir=data_dir)


def _client(session):
    require_module("flask")
    from layerlab.view.server import make_app

    app = make_app(session)
    app.config["LAYERLAB_HOSTS"] = {"localhost"}
    return app.test_client()


def test_server_runs_drawn_pixels_in_the_models_scale(mnist_dir):
    from layerlab.modelfile import load

    net = load(require_path(KERAS224))  # trained on raw pixels 0..255: --scale 1
    pixels = np.zeros((28, 28, 1), np.float32)
    pixels[4:24, 13:16] = 255.0  # a stroke: a "1"
    for scale in (1.0, 255.0):
        client = _client(_session(net, scale, data_dir=str(mnist_dir)))
        answer = client.post("/api/run", json={"pixels": pixels.reshape(-1).tolist(), "shape": [28, 28, 1]})
        assert answer.status_code == 200
        final = D.decode(answer.get_json()["layers"][net.spec.layers[-1].name]["out"]).reshape(-1)
        np.testing.assert_allclose(final, net.predict(pixels[None] / np.float32(scale))[0], rtol=1e-5, atol=1e-7)
    answer = _client(_session(net, 1.0, data_dir=str(mnist_dir))).post("/api/run", json={"mnist": 0})
    body = answer.get_json()
    assert body["label"].endswith("label 7")
    assert int(np.argmax(D.decode(body["layers"][net.spec.layers[-1].name]["out"]))) == 7


def test_server_reads_channels_first_mnist(mnist_dir):
    from layerlab.commands.model import mnist_input
    from layerlab.data import load_mnist
    from layerlab.modelfile import load

    net = load(require_path(KERAS231), architecture=str(KERAS231_JSON))
    client = _client(_session(net, 255.0, data_dir=str(mnist_dir)))
    body = client.post("/api/run", json={"mnist": 5}).get_json()
    x = mnist_input(load_mnist(str(mnist_dir)).x_test[5:6], net.spec, None)
    final = D.decode(body["layers"][net.spec.layers[-1].name]["out"]).reshape(-1)
    np.testing.assert_allclose(final, net.predict(x)[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(D.decode(body["input"]), D.hwc(x[0], "channels_first"))


@pytest.mark.parametrize("body, words", [
    ({"mnist": 20000}, "MNIST test image 20000: the test set has images 0 to 9999"),
    ({"mnist": "x"}, "give a whole number"),
    ({"pixels": [1, 2, 3], "shape": [28, 28, 1]}, "pixels must be 784 numbers"),
    ({"pixels": ["a"] * 784, "shape": [28, 28, 1]}, "pixels must be numbers"),
    ({"random": -1}, "seed -1"),
    ({"what": 1}, "unknown request"),
    ([], "expected a JSON object"),
])
def test_server_refuses_bad_requests_with_one_line(mnist_dir, body, words):
    from layerlab.presets import seed650

    spec = seed650()
    client = _client(_session(Network(spec, D.seeded_weights(spec)), 255.0, data_dir=str(mnist_dir)))
    answer = client.post("/api/run", json=body)
    assert answer.status_code == 400
    error = answer.get_json()["error"]
    assert words in error and "\n" not in error and error.startswith("ShapeError: ")


@pytest.mark.slow
def test_server_opens_every_real_model_with_a_first_input(mnist_dir):
    for name, net in _real_networks().items():
        client = _client(_session(net, 255.0, data_dir=str(mnist_dir)))
        html = client.get("/", headers={"Host": "localhost"}).get_data(as_text=True)
        block = html.split('<script type="application/json" id="layerlab-data">')[1].split("</script>")[0]
        data = json.loads(block)
        assert data["error"] == "" and data["first"] is not None, (name, data["error"])
        final = D.decode(data["first"]["layers"][net.spec.layers[-1].name]["out"])
        assert final.size == int(np.prod(net.spec.output_shape)), name


def test_server_refuses_other_hosts_and_big_bodies():
    from layerlab.presets import seed650

    spec = seed650()
    client = _client(_session(Network(spec, D.seeded_weights(spec)), 255.0))
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 403
    assert client.get("/", headers={"Host": "localhost"}).status_code == 200
    answer = client.post("/api/run", data=b"[" + b"0," * (5 * 1024 * 1024) + b"0]", content_type="application/json")
    assert answer.status_code == 413 and "LimitError" in answer.get_json()["error"]


def test_page_escapes_hostile_names(tmp_path):
    from layerlab.presets import seed650

    base = seed650()
    layers = list(base.layers)
    layers[0] = dataclasses.replace(layers[0], name="</script><script>alert(1)</script>")
    layers[1] = dataclasses.replace(layers[1], inputs=())
    spec = S.Model(name="<b>x</b>", input_shape=base.input_shape, layers=tuple(layers))
    session = _session(Network(spec, D.seeded_weights(spec)), 255.0, trained=False)
    out = tmp_path / "page.html"
    write_html(out, session, static_runs(session, count=1))
    html = out.read_text()
    assert "<script>alert(1)" not in html and "<b>x</b>" not in html
    assert html.count("<script") == 2  # the data block and the page's script, nothing injected


def test_cli_view_errors_are_one_line(tmp_path):
    bad = tmp_path / "broken.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    out = tmp_path / "v.html"
    env = {**os.environ, "LAYERLAB_DATA": str(tmp_path)}
    cases = [
        (["view", str(bad), "--html", str(out)], "broken.h5"),
        (["view", "seed650", "--images", "0,x", "--html", str(out)], "--images"),
        (["view", "seed650", "--images", "3"], "add --html OUT"),
        (["view", "seed650", "--scale", "0", "--html", str(out)], "--scale 0"),
    ]
    for argv, words in cases:
        proc = subprocess.run([sys.executable, "-m", "layerlab", *argv], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 1, (argv, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("layerlab view: ") and words in lines[0], (argv, proc.stderr)
    assert not out.exists()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "layerlab", "view", "seed650", "--no-browser", "--port", str(port)],
                              capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1 and f"--port {port}: cannot listen" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "layerlab", "view", "seed650", "--no-browser", "--port", "99999"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "99999 is not a port" in proc.stderr and "internal error" not in proc.stderr


def test_cli_static_page_never_clobbers(tmp_path):
    out = tmp_path / "v.html"
    out.write_text("mine")
    env = {**os.environ, "LAYERLAB_DATA": str(tmp_path / "none")}
    proc = subprocess.run([sys.executable, "-m", "layerlab", "view", "seed650", "--html", str(out)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 1 and "already exists" in proc.stderr and out.read_text() == "mine"
    assert "MNIST was not found" not in proc.stderr  # refused before any input was looked for
    proc = subprocess.run([sys.executable, "-m", "layerlab", "view", "seed650", "--html", str(out), "--force"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "random inputs" in proc.stderr  # no MNIST here: said in one warning line
    assert 'id="layerlab-data"' in out.read_text()


# --- in a real browser ---------------------------------------------------------------------------

def _chromium() -> str:
    require_module("playwright")
    for name in (os.environ.get("LAYERLAB_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    _missing("no Chromium on PATH (apt-get install chromium, or set LAYERLAB_CHROMIUM)")


@pytest.fixture(scope="module")
def browser():
    path = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=path)
        yield chromium
        chromium.close()


def _wait(page, expression: str, timeout: float = 20.0) -> None:
    """Poll ``expression`` until true (Playwright's wait_for_function evals strings, which the
    page's Content-Security-Policy rightly forbids)."""
    import time

    end = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {expression}")
        page.wait_for_timeout(50)


def _page(browser, url):
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url)
    _wait(page, "window.layerlab && window.layerlab.ready")
    return page, errors


def _click_cell(page, layer: str, y: int, x: int, c: int = 0) -> dict:
    tile = page.locator(f'canvas[data-layer="{layer}"][data-c="{c}"]')
    cs = int(tile.get_attribute("data-cs"))
    wrap = int(tile.get_attribute("data-wrap"))
    gx, gy = (x % wrap, x // wrap) if wrap else (x, y)
    tile.click(position={"x": gx * cs + cs / 2, "y": gy * cs + cs / 2})
    return page.evaluate("window.layerlab.selected")


def _shown_window(page, channel: int = 0) -> list[tuple[tuple[int, int], bool]]:
    cells = page.locator(f'#detail table.window[data-channel="{channel}"] td')
    out = []
    for i in range(cells.count()):
        cell = cells.nth(i)
        r, c = (int(v) for v in cell.get_attribute("data-in").split(","))
        out.append(((r, c), "pad" in (cell.get_attribute("class") or "")))
    return out


def _assert_window_is_probes(page, net, trace, x, layer_name, y, xx, c=0):
    selected = _click_cell(page, layer_name, y, xx, c)
    layer = net.spec.layer(layer_name)
    reads = (list(layer.inputs) or [None])[0]
    if reads is None:
        index = [l.name for l in net.spec.layers].index(layer_name)
        reads = "input" if index == 0 else net.spec.layers[index - 1].name
    source = x if reads == "input" else trace[reads]
    result = probe(dataclasses.replace(layer, inputs=()), source, net.weights.get(layer_name))
    w = next(w for w in result.windows if w.out == (y, xx))
    expect = [(cell.index, cell.padding) for cell in w.cells]
    channel = c // layer.depth_multiplier if isinstance(layer, S.DepthwiseConv2D) else (c if isinstance(layer, (S.MaxPooling2D, S.AveragePooling2D)) else 0)
    assert _shown_window(page, channel) == expect, f"{layer_name} out[{y}, {xx}]"
    out = D.hwc(trace[layer_name][0], output_layouts(net.spec)[layer_name])
    assert np.float32(selected["value"]) == out[y, xx, c]
    return selected


@pytest.mark.browser
@pytest.mark.slow
def test_browser_server_draw_predict_click(browser, mnist_dir):
    from layerlab.modelfile import load
    from layerlab.view.server import serve

    net = load(require_path(KERAS224))
    session = _session(net, 1.0, data_dir=str(mnist_dir))
    started = threading.Event()
    holder = {}

    def ready(url, server):
        holder.update(url=url, server=server)
        started.set()

    thread = threading.Thread(target=serve, args=(session,), kwargs={"open_browser": False, "ready": ready}, daemon=True)
    thread.start()
    assert started.wait(30)
    try:
        page, errors = _page(browser, holder["url"])
        assert page.get_attribute("#prediction", "data-top") == "7"  # MNIST test image 0 opens the page
        page.click("#clear")
        _wait(page, "document.body.dataset.runs >= 2")
        box = page.locator("#draw").bounding_box()
        scale = box["width"] / 28
        runs = int(page.evaluate("window.layerlab.runs"))
        page.mouse.move(box["x"] + 14 * scale, box["y"] + 4 * scale)
        page.mouse.down()
        for row in range(4, 25):
            page.mouse.move(box["x"] + 14 * scale, box["y"] + row * scale)
        page.mouse.up()
        _wait(page, f"window.layerlab.runs > {runs} && !window.layerlab.state.busy && !window.layerlab.state.dirty")
        page.wait_for_timeout(300)
        _wait(page, "!window.layerlab.state.busy && !window.layerlab.state.dirty")
        pixels = np.array(page.evaluate("Array.from(window.layerlab.state.pixels)"), np.float32).reshape(1, 28, 28, 1)
        assert pixels.max() == 255 and (pixels > 0).sum() > 20
        expected = net.predict(pixels)[0]
        top = int(page.get_attribute("#prediction", "data-top"))
        assert top == int(np.argmax(expected)) == 1  # a vertical stroke is a one
        shown = float(page.get_attribute(f"#pred-{top} span:last-child", "title"))
        assert abs(shown - float(expected[top])) <= 1e-5 * max(1.0, abs(float(expected[top])))
        trace = net.trace(pixels)
        first = net.spec.layers[0].name
        for y, xx, c in ((0, 0, 0), (13, 14, 3), (27, 27, 5)):
            _assert_window_is_probes(page, net, trace, pixels, first, y, xx, c)
        pools = [l.name for l in net.spec.layers if isinstance(l, S.MaxPooling2D)]
        _assert_window_is_probes(page, net, trace, pixels, pools[0], 3, 5, 2)
        flatten = next(l.name for l in net.spec.layers if isinstance(l, S.Flatten))
        _click_cell(page, flatten, 0, 37)
        k, yy, xx, cc = (int(v) for v in page.get_attribute("#detail .copy", "data-in").split(","))
        source = D.hwc(trace[net.spec.layers[[l.name for l in net.spec.layers].index(flatten) - 1].name][0], "channels_last")
        assert source[yy, xx, cc] == trace[flatten][0, 37]
        # the int8 toggle: the C export's own numbers, built on first use, for the same pixels
        runs = int(page.evaluate("window.layerlab.runs"))
        page.check("#int8")
        _wait(page, f"window.layerlab.runs > {runs} && !window.layerlab.state.busy", timeout=120)
        from layerlab.export.c.trace import CTrace

        with tempfile.TemporaryDirectory() as folder:
            ints = CTrace(net, folder, int8=True, data_dir=str(mnist_dir), scale=1.0).run(pixels)
        assert "max |int8 - float|" in page.inner_text(f"#c-{pools[0]}")
        selected = _click_cell(page, pools[0], 3, 5, 2)
        shown = float(page.get_attribute("#detail .result.c", "data-c-value"))
        assert np.float32(shown) == ints[pools[0]][3, 5, 2]
        assert np.float32(selected["value"]) == trace[pools[0]][0, 3, 5, 2]  # the engine's, beside it
        final = net.spec.layers[-1].name
        assert int(page.get_attribute("#prediction", "data-top")) == int(np.argmax(ints[final]))
        assert errors == []
        page.fill("#mnist-index", "20000")
        page.click("#mnist")
        page.wait_for_selector("#error:not([hidden])")
        assert page.inner_text("#error") == "ShapeError: MNIST test image 20000: the test set has images 0 to 9999. Pick one in that range"
        assert all("status of 400" in e for e in errors)  # the browser logs the refused request, nothing else
    finally:
        holder["server"].shutdown()
        thread.join(10)


@pytest.mark.browser
def test_browser_upload_an_image(browser, tmp_path, mnist_dir):
    """A photo-like upload (dark ink on white paper, larger than 28x28) is resized, inverted to
    MNIST's white on black, and predicted as Network.predict predicts the page's pixels."""
    require_module("PIL")
    from PIL import Image, ImageDraw

    from layerlab.modelfile import load
    from layerlab.view.server import serve

    picture = Image.new("L", (140, 140), 255)
    ImageDraw.Draw(picture).line([(70, 20), (70, 120)], fill=0, width=14)
    picture.save(tmp_path / "one.png")
    net = load(require_path(KERAS224))
    session = _session(net, 1.0, data_dir=str(mnist_dir))
    started, holder = threading.Event(), {}
    thread = threading.Thread(target=serve, args=(session,), daemon=True, kwargs={
        "open_browser": False, "ready": lambda url, server: (holder.update(url=url, server=server), started.set())})
    thread.start()
    assert started.wait(30)
    try:
        page, errors = _page(browser, holder["url"])
        runs = int(page.evaluate("window.layerlab.runs"))
        page.set_input_files("#upload", str(tmp_path / "one.png"))
        _wait(page, f"window.layerlab.runs > {runs} && !window.layerlab.state.busy && !window.layerlab.state.dirty")
        assert "one.png, resized to 28x28, inverted" in page.inner_text("#input-note")
        pixels = np.array(page.evaluate("Array.from(window.layerlab.state.pixels)"), np.float32).reshape(1, 28, 28, 1)
        assert pixels[0, 0, 0, 0] == 0 and pixels[0, 14, 14, 0] > 200  # white on black now
        top = int(page.get_attribute("#prediction", "data-top"))
        assert top == int(np.argmax(net.predict(pixels)[0])) == 1
        assert errors == []
    finally:
        holder["server"].shutdown()
        thread.join(10)


@pytest.mark.browser
def test_browser_a_stretched_gate_is_read_at_index_0(browser, tmp_path):
    """A squeeze-and-excite Multiply of a (5, 4, 4) map by a (1, 1, 4) gate: a clicked cell names
    the gate's cell [0, 0, c] and its value, and the two inputs' product is the engine's."""
    net = _graph_network("squeeze_excite_gate")
    session = _session(net, 1.0)
    x = np.random.default_rng(4).standard_normal((2, *net.spec.input_shape)).astype(np.float32)
    out = tmp_path / "gate.html"
    write_html(out, session, static_runs(session, x=x))
    page, errors = _page(browser, out.as_uri())
    page.click("#run-1")
    trace = net.trace(x[1:2])
    selected = _click_cell(page, "excite", 3, 2, 1)
    assert np.float32(selected["value"]) == trace["excite"][0, 3, 2, 1]
    assert page.get_attribute("#detail .copy", "data-in") == "3,2,1;0,0,1"
    text = page.inner_text("#detail .copy")
    assert "size-1 axis at index 0" in text and "expand[0, 0, 1] = " in text
    shown = [float(part.split(" = ")[1]) for part in text.split(": ", 1)[1].split("; ")]
    assert np.float32(shown[0]) * np.float32(shown[1]) == pytest.approx(float(trace["excite"][0, 3, 2, 1]), rel=1e-5)
    assert shown[1] == pytest.approx(float(trace["expand"][0, 0, 0, 1]), rel=1e-5)
    assert errors == []


@pytest.mark.browser
@pytest.mark.slow
def test_browser_static_page_of_a_graph(browser, tmp_path):
    net, trained = open_network(str(require_path(MLPERF / "pretrainedResnet.h5")))
    session = _session(net, 1.0, trained=trained)
    x = np.random.default_rng(4).uniform(0, 1, (3, *net.spec.input_shape)).astype(np.float32)
    out = tmp_path / "resnet.html"
    write_html(out, session, static_runs(session, x=x))
    page, errors = _page(browser, out.as_uri())
    page.click("#run-1")
    trace = net.trace(x[1:2])
    assert int(page.get_attribute("#prediction", "data-top")) == int(np.argmax(trace[net.spec.layers[-1].name][0]))
    # conv2d_3: 3x3 stride 2 'same' on 32x32 pads (0, 1): the bottom/right windows read padding
    marker = page.locator("#card-conv2d_3 .marker")
    assert "unevenly" in marker.first.inner_text()
    assert page.locator('canvas[data-layer="conv2d_3"]').count() == 16  # the first 16 of 32 filters
    page.click("#card-conv2d_3 button.more")
    assert page.locator('canvas[data-layer="conv2d_3"]').count() == 32
    for y, xx, c in ((15, 15, 4), (0, 0, 0), (7, 3, 31)):
        _assert_window_is_probes(page, net, trace, x[1:2], "conv2d_3", y, xx, c)
    selected = _click_cell(page, "add", 5, 6, 9)
    assert np.float32(selected["value"]) == trace["add"][0, 5, 6, 9]
    assert page.locator("#edges path").count() >= 3  # the residual links are drawn
    assert errors == []


# --- the int8 C export beside the engine ----------------------------------------------------------

@pytest.mark.cc
def test_c_trace_float_is_the_engines_and_int8_is_close(mnist_dir):
    from layerlab.export.c.trace import CTrace
    from layerlab.modelfile import load

    if shutil.which("cc") is None:
        _missing("no C compiler (cc)")
    net = load(require_path(KERAS224))
    from layerlab.data import load_mnist

    x = load_mnist(str(mnist_dir), test_only=True).x_test[:2].astype(np.float32)[..., None]
    trace = net.trace(x[1:])
    with tempfile.TemporaryDirectory() as folder:
        floats = CTrace(net, folder, int8=False).run(x[1:])
    assert len(floats) >= 3  # every layer a C step ends with (pools, dense, the final softmax)
    for name, value in floats.items():
        engine = trace[name][0]
        assert np.max(np.abs(value - engine)) <= 1e-5 * max(1.0, float(np.max(np.abs(engine)))), name
    with tempfile.TemporaryDirectory() as folder:
        ints = CTrace(net, folder, int8=True, data_dir=str(mnist_dir), scale=1.0).run(x[1:])
    assert set(ints) == set(floats)
    final = net.spec.layers[-1].name
    assert int(np.argmax(ints[final])) == int(np.argmax(trace[final][0]))
    for name, value in ints.items():
        engine = trace[name][0]
        assert np.max(np.abs(value - engine)) <= 0.1 * float(np.max(np.abs(engine))), name


@pytest.mark.cc
@pytest.mark.parametrize("layers", [
    (S.Conv2D(name="c", filters=2, kernel_size=1), S.Permute(name="perm", dims=(2, 1, 3))),
    (S.Flatten(name="f"),),
    (S.Conv2D(name="a", filters=2, kernel_size=3, padding="same"), S.Permute(name="p", dims=(2, 1, 3)),
     S.Permute(name="q", dims=(2, 1, 3)), S.Add(name="sum", inputs=("a", "q"))),
], ids=["ends-in-a-copy", "only-a-copy", "merge-reorders-an-input"])
def test_c_trace_of_steps_that_belong_to_no_layer(tmp_path, layers):
    """The copy into the caller's output and the reordered copy of a merge's input are steps of
    no layer: the trace shows the layers' own values, the C's float ones equal to the engine's."""
    from layerlab.export.c.trace import CTrace

    if shutil.which("cc") is None:
        _missing("no C compiler (cc)")
    spec = S.Model(name="copies", input_shape=(3, 4, 2), layers=layers)
    net = Network(spec, random_weights(spec, 5))
    x = np.random.default_rng(2).normal(size=(20, 3, 4, 2)).astype(np.float32)
    np.save(tmp_path / "calibration.npy", x)
    trace = net.trace(x[:1])
    floats = CTrace(net, tmp_path / "f", int8=False).run(x[:1])
    assert spec.layers[-1].name in floats
    for name, value in floats.items():
        assert np.max(np.abs(value - trace[name][0])) <= 1e-5 * max(1.0, float(np.max(np.abs(trace[name][0])))), name
    ints = CTrace(net, tmp_path / "i", int8=True, calibration_data=tmp_path / "calibration.npy").run(x[:1])
    assert set(ints) == set(floats)


@pytest.mark.cc
def test_server_int8_toggle_needs_calibration_data_for_non_mnist_models():
    from layerlab.modelfile import load

    if shutil.which("cc") is None:
        _missing("no C compiler (cc)")
    net = load(require_path(MLPERF / "ad01.h5"))
    client = _client(_session(net, 1.0))
    answer = client.post("/api/run", json={"random": 0, "int8": True})
    assert answer.status_code == 400 and "--calibration-data" in answer.get_json()["error"]
    assert client.post("/api/run", json={"random": 0}).status_code == 200  # float still runs


@pytest.mark.cc
def test_cli_static_page_with_int8(tmp_path, mnist_dir):
    if shutil.which("cc") is None:
        _missing("no C compiler (cc)")
    out = tmp_path / "v.html"
    env = {**os.environ, "LAYERLAB_DATA": str(mnist_dir)}
    proc = subprocess.run([sys.executable, "-m", "layerlab", "view", str(require_path(KERAS224)), "--scale", "1", "--images", "0,1",
                           "--int8", "--html", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    block = out.read_text().split('<script type="application/json" id="layerlab-data">')[1].split("</script>")[0]
    runs = json.loads(block)["runs"]
    assert len(runs) == 2 and all(run["c_kind"] == "int8" and len(run["c"]) >= 3 for run in runs)
    assert all(item["max_diff"] < 0.1 * item["range"] + 1e-6 for run in runs for item in run["c"].values())


@pytest.mark.browser
@pytest.mark.slow
def test_browser_every_real_model_and_seed650_in_both_modes(browser, tmp_path, mnist_dir):
    """Each model opens in server and static mode without a script error, draws every layer, and a
    click on each layer's first cell shows the engine's value."""
    from layerlab.presets import seed650
    from layerlab.view.page import render

    spec = seed650()
    nets = {"seed650": Network(spec, D.seeded_weights(spec)), **_real_networks()}
    for name, net in nets.items():
        session = _session(net, 255.0, data_dir=str(mnist_dir))
        out = tmp_path / f"{name}.html"
        write_html(out, session, static_runs(session, count=1) if name in ("pretrainedResnet.h5", "str_ww_ref_model.h5", "ad01.h5")
                   else static_runs(session, images=[0]))
        server_page = tmp_path / f"{name}-server.html"  # the server's page, with its first input, opened as a file
        server_page.write_text(render(session.model, mode="server", first=session.first()))
        for path in (out, server_page):
            page, errors = _page(browser, path.as_uri())
            assert page.locator(".card").count() == len(net.spec.layers) + 1, name
            for layer in net.spec.layers:
                selected = _click_cell(page, layer.name, 0, 0, 0)
                assert selected["layer"] == layer.name, (name, layer.name)
            assert errors == [], (name, errors)
            page.close()
