"""The page: one HTML file with its style, script and data inlined (no network, no CDN).

The same page serves both modes: ``server`` (it asks ``api/run`` for every new input) and
``static`` (it holds the runs of a few chosen inputs and needs nothing else).
"""

from __future__ import annotations

import json
import string
from importlib import resources

from layerlab import __version__


def _asset(name: str) -> str:
    return resources.files("layerlab.view").joinpath("static", name).read_text(encoding="utf-8")


def _json_for_script(data: dict) -> str:
    """JSON that a ``<script type="application/json">`` block holds safely (no ``</script>``)."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render(model: dict, *, mode: str, runs: list[dict] | None = None, first: dict | None = None, error: str = "") -> str:
    """The page for ``model`` (``data.describe``) in ``mode`` 'server' or 'static'."""
    if mode not in ("server", "static"):
        raise ValueError(f"mode must be 'server' or 'static', received {mode!r}")
    data = {"mode": mode, "version": __version__, "model": model, "runs": runs or [], "first": first, "error": error}
    return string.Template(_asset("view.html")).substitute(
        title=_escape(model["model"]["name"]), style=_asset("view.css"), script=_asset("view.js"), data=_json_for_script(data))


def _escape(text: str) -> str:
    import html

    return html.escape(text)
