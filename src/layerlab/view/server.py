"""The local app of ``layerlab view``: Flask on 127.0.0.1, one page and one JSON endpoint.

Flask (the ``view`` extra) because it is small, well kept and needs no build step; the page
itself is one self-contained HTML file (``page.render``), so the server only answers:

* ``GET /``: the page, with the model and the first input's values inlined;
* ``POST /api/run``: ``{"pixels": [...], "shape": [h, w, c]}`` (canvas pixels 0..255),
  ``{"mnist": i}`` (test image i) or ``{"random": seed}`` -> every layer's values, or
  ``{"error": one line}`` with status 400 (the same line the CLI prints, printed on the terminal too).

Only 127.0.0.1 is bound, and requests that name another host are refused (403), so a web page
elsewhere cannot reach the app through DNS rebinding.
"""

from __future__ import annotations

import math
import socket
import sys
import threading
from dataclasses import dataclass, field

import numpy as np

from layerlab.errors import DataError, ShapeError, require
from layerlab.network import Network
from layerlab.view import data as D
from layerlab.view import page

MAX_BODY = 8 * 1024 * 1024  # a 1000x1000 RGB canvas as JSON numbers fits; anything larger is refused


@dataclass
class Session:
    """What one ``layerlab view`` serves: the network, its page data, and where inputs come from."""

    net: Network
    source: str
    scale: float
    trained: bool
    data_dir: str | None = None
    calibration_data: str | None = None
    log: object = None
    _model: dict | None = field(default=None, repr=False)
    _mnist: object = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _mnist_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _trace: object = field(default=None, repr=False)
    _trace_folder: object = field(default=None, repr=False)

    def c_trace(self):
        """The int8 C export of the network, compiled for tracing (built on first use, kept)."""
        if self._trace is None:
            import tempfile

            from layerlab.export.c.trace import CTrace

            folder = tempfile.TemporaryDirectory(prefix="layerlab-view-")
            try:
                self._trace = CTrace(self.net, folder.name, int8=True, data_dir=self.data_dir,
                                     scale=self.scale if self.calibration_data is None else None,
                                     calibration_data=self.calibration_data)
            except BaseException:
                folder.cleanup()
                raise
            self._trace_folder = folder  # removed with the session
        return self._trace

    def warm_up(self) -> None:
        """Build the page data and read MNIST in the background while the browser starts."""
        def work():
            try:
                _ = self.model
                if math.prod(self.net.spec.input_shape) == 28 * 28:
                    self.mnist()
            except Exception:  # said when the page asks for it
                pass

        threading.Thread(target=work, daemon=True).start()

    @property
    def model(self) -> dict:
        if self._model is None:
            self._model = D.describe(self.net, source=self.source, scale=self.scale, trained=self.trained)
        return self._model

    def mnist(self):
        """The MNIST test set (loaded once; DataError says how to point layerlab at local files)."""
        with self._mnist_lock:
            return self._load_mnist()

    def _load_mnist(self):
        if self._mnist is None:
            from layerlab.data import load_mnist

            data = load_mnist(self.data_dir, test_only=True)
            self._mnist = (data.x_test, data.y_test)
        return self._mnist

    def run(self, body: object) -> dict:
        """One request's input -> every layer's values (see the module docstring).

        Raises:
            ShapeError: the request is not one of the three forms, or its pixels do not fit.
            DataError: MNIST is not available.
        """
        if not isinstance(body, dict) or len(body) == 0:
            raise ShapeError("api/run: expected a JSON object with 'pixels', 'mnist' or 'random'")
        body = dict(body)
        int8 = body.pop("int8", False) is True
        result = self._run(body, self.c_trace() if int8 else None)
        return result

    def _run(self, body: dict, trace) -> dict:
        spec = self.net.spec
        if "pixels" in body:
            pixels = _pixels(body, D.input_image(spec))
            result = D.run(self.net, D.pixels_to_input(pixels, spec, self.scale), label="drawn", c_trace=trace)
            result["pixels"] = D.encode(pixels)
            return result
        if "mnist" in body:
            index = body["mnist"]
            if isinstance(index, bool) or not isinstance(index, int):
                raise ShapeError(f"MNIST test image {index!r}: give a whole number 0-9999")
            x_test, y_test = self.mnist()
            if not 0 <= index < len(x_test):
                raise ShapeError(f"MNIST test image {index}: the test set has images 0 to {len(x_test) - 1}. Pick one in that range")
            pixels = x_test[index].astype(np.float32)[..., None]
            result = D.run(self.net, D.pixels_to_input(pixels, spec, self.scale), label=f"MNIST test {index}, label {int(y_test[index])}",
                           c_trace=trace)
            result["pixels"] = D.encode(pixels)
            return result
        if "random" in body:
            seed = body["random"]
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                raise ShapeError(f"random input seed {seed!r}: give a whole number >= 0")
            return D.run(self.net, random_input(spec, seed), label=f"random, seed {seed}", c_trace=trace)
        raise ShapeError(f"api/run: unknown request {sorted(body)!r}; expected 'pixels', 'mnist' or 'random'")

    def first(self) -> dict:
        """The input the page opens with: MNIST test image 0 when the model takes MNIST and the
        data is here, else a blank canvas, else seeded random numbers."""
        canvas = D.input_image(self.net.spec)
        if math.prod(self.net.spec.input_shape) == 28 * 28:
            try:
                return self.run({"mnist": 0})
            except DataError:
                pass
        if canvas is not None:
            return self.run({"pixels": [0] * math.prod(canvas), "shape": canvas})
        return self.run({"random": 0})


def random_input(spec, seed: int) -> np.ndarray:
    """Seeded standard normals of the model's input shape (batch of 1)."""
    return np.random.default_rng(seed).standard_normal((1, *spec.input_shape)).astype(np.float32)


def _pixels(body: dict, canvas: list[int] | None) -> np.ndarray:
    if canvas is None:
        raise ShapeError("api/run: this model's input is not an image; ask for a random input")
    shape = body.get("shape", canvas)
    values = body["pixels"]
    if list(shape) != canvas or not isinstance(values, list) or len(values) != math.prod(canvas):
        raise ShapeError(f"api/run: pixels must be {math.prod(canvas)} numbers for the canvas {tuple(canvas)}")
    try:
        pixels = np.asarray(values, dtype=np.float32).reshape(canvas)
    except (TypeError, ValueError):
        raise ShapeError("api/run: pixels must be numbers 0..255") from None
    if not np.isfinite(pixels).all():
        raise ShapeError("api/run: pixels must be finite numbers 0..255")
    return np.clip(pixels, 0, 255)


def make_app(session: Session):
    """The Flask app for ``session`` (``app.config['LAYERLAB_HOSTS']`` is set by ``serve``)."""
    require("flask", "view", "the layerlab view server")
    from flask import Flask, Response, jsonify, request

    from layerlab.cli import _message

    app = Flask("layerlab.view")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.config["LAYERLAB_HOSTS"] = None

    def say(line: str) -> None:
        print(f"layerlab view: {line}", file=session.log or sys.stderr, flush=True)

    @app.before_request
    def local_only():
        hosts = app.config["LAYERLAB_HOSTS"]
        if hosts is not None and request.host not in hosts:
            return Response(f"layerlab view answers only {sorted(hosts)[0]}, not {request.host}", status=403, mimetype="text/plain")
        return None

    @app.get("/")
    def index():
        error = ""
        try:
            first = session.first()
        except Exception as exc:  # the page still opens and says why
            first, error = None, _message(exc)
            say(error)
        return Response(page.render(session.model, mode="server", first=first, error=error), mimetype="text/html")

    @app.post("/api/run")
    def api_run():
        body = request.get_json(silent=True)
        try:
            with session._lock:  # one input at a time: the engine's threads are busy enough
                return jsonify(session.run(body))
        except Exception as exc:
            line = _message(exc)
            say(line)
            return jsonify({"error": line}), 400

    @app.errorhandler(413)
    def too_large(_exc):
        line = f"LimitError: api/run: the request is larger than {MAX_BODY // (1024 * 1024)} MiB"
        say(line)
        return jsonify({"error": line}), 413

    return app


def serve(session: Session, *, port: int = 0, open_browser: bool = True, ready=None) -> None:
    """Serve ``session`` on 127.0.0.1:``port`` (0: a free one) until interrupted; prints the URL.

    ``ready``, when given, is called with the URL once the socket listens (tests use it).
    """
    import logging

    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request; errors are said once, by make_app
    app = make_app(session)
    try:  # werkzeug prints its own lines and exits when a port is taken: ask the socket first
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))
        server = make_server("127.0.0.1", port, app, threaded=True)
    except (OSError, SystemExit) as exc:
        why = getattr(exc, "strerror", None) or "in use"
        raise DataError(f"--port {port}: cannot listen on 127.0.0.1:{port} ({why}). "
                        "Pick another port, or leave --port out for a free one") from None
    session.warm_up()
    bound = server.socket.getsockname()[1]
    app.config["LAYERLAB_HOSTS"] = {f"127.0.0.1:{bound}", f"localhost:{bound}"}
    url = f"http://127.0.0.1:{bound}/"
    print(f"layerlab view: serving {session.source} at {url} (Ctrl-C stops it)", flush=True)
    if ready is not None:
        ready(url, server)
    if open_browser:
        import webbrowser

        threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
    try:
        server.serve_forever()
    finally:
        server.server_close()
