"""``layerlab view``: a network in a browser, every layer's real output, and what each output cell read.

    from layerlab.view import page_data, write_html, serve
    data = page_data(network, source="model.h5")        # the model part of the page
    write_html("out.html", network, inputs)             # one self-contained static page
    serve(network, port=0)                              # the local app (needs the ``view`` extra: Flask)

``data`` (NumPy only) builds what the page shows; ``page`` renders the HTML; ``server`` is the
Flask app. The page's numbers are the engine's; it computes nothing itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["open_network", "static_runs", "write_html"]


def open_network(source: str, architecture: str | None = None, seed: int = 0):
    """``(network, trained)`` for a model file, or for a spec (name or file) with seeded untrained
    weights (``data.seeded_weights``)."""
    from layerlab.commands.spec import MODEL_SUFFIXES
    from layerlab.network import Network

    if Path(source).suffix.lower() in MODEL_SUFFIXES or architecture:
        from layerlab.modelfile import load

        return load(source, architecture=architecture), True
    from layerlab.specfile import load_spec
    from layerlab.view.data import seeded_weights

    spec = load_spec(source)
    return Network(spec, seeded_weights(spec, seed), source=source), False


def static_runs(session, *, images=None, x: np.ndarray | None = None, labels=None, count: int = 4, int8: bool = False) -> list[dict]:
    """The runs a static page holds: MNIST test ``images`` (indices), the rows of ``x`` (model
    inputs), or ``count`` seeded random inputs; with ``int8``, each with the int8 C export's values."""
    from layerlab.view import data as D
    from layerlab.view.server import random_input

    trace = session.c_trace() if int8 else None
    if images is not None:
        return [session.run({"mnist": int(i), "int8": int8}) for i in images]
    if x is not None:
        return [D.run(session.net, x[i : i + 1], label=f"input {i}" + (f", label {int(labels[i])}" if labels is not None else ""),
                      c_trace=trace) for i in range(len(x))]
    return [D.run(session.net, random_input(session.net.spec, seed), label=f"random, seed {seed}", c_trace=trace)
            for seed in range(count)]


def write_html(path: str | Path, session, runs: list[dict], *, force: bool = False, inputs=()) -> None:
    """Write the static page (temporary file, then rename; an existing file only with ``force``)."""
    from layerlab.publish import publish_file
    from layerlab.view.page import render

    html = render(session.model, mode="static", runs=runs)
    with publish_file(path, inputs=inputs, force=force, flag="--html") as tmp:
        Path(tmp).write_text(html, encoding="utf-8")
