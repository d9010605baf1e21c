"""How fast ``layerlab view`` is interactive, in a real headless Chromium, for seed650 and the real models.

    LAYERLAB_DATA=../shared/data/mnist .venv/bin/python benchmarks/view.py [--repeats 5] [--screenshots docs/]

Per model, server mode: seconds from starting ``layerlab view MODEL --no-browser`` (a fresh Python
process) to the printed URL; milliseconds from navigation to the page being interactive (its
script has drawn every layer of the first input: ``window.layerlab.readyMs``); the wall time from
the command to that point; and the median of ``--repeats`` new inputs (request, engine, decode,
every layer repainted: ``lastRunMs``); for MNIST models, seconds from switching the int8 toggle on
to the page showing the int8 C export's values (calibrate, generate, compile, run). Static mode: seconds to write the page with ``--html`` and
its size, and navigation to interactive from file://. No assertions: a table.

With ``--screenshots DIR`` it also writes the README's pictures (view-mnist.png, view-resnet.png).
Needs the test extra (Flask, Playwright) and Chromium (``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "models"
MODELS = [
    ("seed650 (spec, untrained)", ["seed650"]),
    ("keras224_sequential_mnist.h5", [str(SHARED / "keras2" / "keras224_sequential_mnist.h5"), "--scale", "1"]),
    ("pretrainedResnet.h5 (ResNet-8)", [str(SHARED / "mlperf_tiny" / "pretrainedResnet.h5")]),
    ("str_ww_ref_model.h5 (DS-CNN)", [str(SHARED / "mlperf_tiny" / "str_ww_ref_model.h5")]),
    ("ad01.h5 (autoencoder)", [str(SHARED / "mlperf_tiny" / "ad01.h5")]),
]


def chromium() -> str:
    for name in (os.environ.get("LAYERLAB_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    sys.exit("view.py: no Chromium on PATH (apt-get install chromium, or set LAYERLAB_CHROMIUM)")


def wait(page, expression: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > end:
            raise TimeoutError(expression)
        page.wait_for_timeout(10)


def start_server(args: list[str]) -> tuple[subprocess.Popen, str, float]:
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "layerlab", "view", *args, "--no-browser"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if " at http://" in line:
            return proc, line.split(" at ")[1].split()[0], time.perf_counter() - started
    raise RuntimeError(f"layerlab view {' '.join(args)} did not start")


def measure_server(browser, args: list[str], repeats: int) -> dict:
    proc, url, to_url = start_server(args)
    started = time.perf_counter() - to_url
    try:
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.goto(url)
        wait(page, "window.layerlab && window.layerlab.ready")
        wall = time.perf_counter() - started
        ready = page.evaluate("window.layerlab.readyMs")
        runs = []
        for _ in range(repeats):
            count = page.evaluate("window.layerlab.runs")
            page.click("#random")
            wait(page, f"window.layerlab.runs > {count} && !window.layerlab.state.busy")
            runs.append(page.evaluate("window.layerlab.lastRunMs"))
        size = len(page.content())
        toggle = None
        if page.evaluate("window.layerlab.model.mnist"):  # the others need --calibration-data for int8
            count = page.evaluate("window.layerlab.runs")
            begin = time.perf_counter()
            page.check("#int8")
            wait(page, f"window.layerlab.runs > {count} && !window.layerlab.state.busy", timeout=300)
            toggle = time.perf_counter() - begin
        page.close()
    finally:
        proc.terminate()
        proc.wait(10)
    return {"to_url": to_url, "ready_ms": ready, "wall": wall, "run_ms": statistics.median(runs), "size": size, "int8": toggle}


def measure_static(browser, args: list[str], folder: Path) -> dict:
    out = folder / "page.html"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "layerlab", "view", *args, "--html", str(out), "--force"], check=True,
                   capture_output=True)
    write = time.perf_counter() - started
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    page.goto(out.as_uri())
    wait(page, "window.layerlab && window.layerlab.ready")
    ready = page.evaluate("window.layerlab.readyMs")
    page.close()
    return {"write": write, "size": out.stat().st_size, "ready_ms": ready}


def screenshots(browser, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    proc, url, _ = start_server(MODELS[1][1])
    try:
        page = browser.new_page(viewport={"width": 1500, "height": 900})
        page.goto(url)
        wait(page, "window.layerlab && window.layerlab.ready")
        page.click("#clear")
        box = page.locator("#draw").bounding_box()
        s = box["width"] / 28
        page.mouse.move(box["x"] + 9 * s, box["y"] + 7 * s)
        page.mouse.down()
        for x, y in ((14, 5), (19, 7), (19, 11), (15, 15), (10, 21), (19, 21)):  # a two
            page.mouse.move(box["x"] + x * s, box["y"] + y * s, steps=6)
        page.mouse.up()
        wait(page, "!window.layerlab.state.busy && !window.layerlab.state.dirty")
        tile = page.locator('canvas[data-layer="conv2d_1"][data-c="3"]')
        cs = int(tile.get_attribute("data-cs"))
        tile.click(position={"x": 0.5 * cs, "y": 6.5 * cs})
        page.screenshot(path=str(folder / "view-mnist.png"))
        page.close()
    finally:
        proc.terminate()
        proc.wait(10)
    proc, url, _ = start_server(MODELS[2][1])
    try:
        page = browser.new_page(viewport={"width": 1500, "height": 900})
        page.goto(url)
        wait(page, "window.layerlab && window.layerlab.ready")
        count = page.evaluate("window.layerlab.runs")
        page.click("#random")
        wait(page, f"window.layerlab.runs > {count}")
        tile = page.locator('canvas[data-layer="conv2d_3"][data-c="0"]')
        cs = int(tile.get_attribute("data-cs"))
        tile.click(position={"x": 15.5 * cs, "y": 15.5 * cs})  # the bottom-right corner: 'same' pads only after
        page.evaluate("document.getElementById('card-activation_2').scrollIntoView({block: 'start'})")
        page.screenshot(path=str(folder / "view-resnet.png"))
        page.close()
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--screenshots", type=Path, default=None, metavar="DIR")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    rows = []
    with sync_playwright() as p, tempfile.TemporaryDirectory() as tmp:
        browser = p.chromium.launch(executable_path=chromium())
        print(f"browser: Chromium {browser.version} (headless), Playwright")
        for label, model_args in MODELS:
            server = measure_server(browser, model_args, args.repeats)
            static = measure_static(browser, model_args, Path(tmp))
            rows.append((label, server, static))
        if args.screenshots:
            screenshots(browser, args.screenshots)
            print(f"screenshots: wrote {args.screenshots}/view-mnist.png, view-resnet.png")
        browser.close()
    print()
    print("| model | start to URL s | page to interactive ms | command to interactive s | new input ms (median) "
          "| int8 toggle, first time s | static: write s | static: size KB | static: file:// to interactive ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, server, static in rows:
        int8 = "-" if server["int8"] is None else f"{server['int8']:.1f}"
        print(f"| {label} | {server['to_url']:.2f} | {server['ready_ms']:.0f} | {server['wall']:.2f} | {server['run_ms']:.0f} | {int8} "
              f"| {static['write']:.2f} | {static['size'] / 1024:,.0f} | {static['ready_ms']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
