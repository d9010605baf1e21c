"""Which backend runs which layer type: one table per backend, and the support matrix.

Every layer type is declared once, in its family module (``layerlab.layers``). Every backend
(the loader, the engine, the Keras build, the trainer, probe, the C export, the Excel exports and
the NNC converters) keeps a ``Backend`` table here: for each spec class either a handler
(``@ENGINE.handles(S.Conv2D)``) or a one-line reason it is declined
(``C_FLOAT.decline(S.UpSampling2D, "...")``). A backend looks its handler up by the layer's exact
type (``ENGINE.lookup(layer)``); a declined or unknown type raises ``UnsupportedLayerError`` with
the backend's title and the reason::

    C export: layer 3 'up' (UpSampling2D) is not supported because ...

``tests/test_registry.py`` fails when a backend neither handles nor declines a registered type,
and ``layerlab layers`` prints ``support_matrix()``, the table the README shows. The model to
follow is TensorFlow Lite Micro's op resolver: what a backend runs is declared, nothing implicit.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from layerlab.errors import ExportError, NNCError, UnsupportedLayerError
from layerlab.layers import LAYER_TYPES

T = TypeVar("T")


@dataclass
class Backend:
    """One backend's table: spec class -> handler, or spec class -> why it is declined.

    Attributes:
        key: short name, e.g. 'engine' (the matrix column key).
        title: what the user reads, e.g. 'NumPy engine' (the start of every error).
        column: the matrix column header.
        module: the module that fills the table (imported by ``load_all``).
    """

    key: str
    title: str
    column: str
    module: str
    error_class: type[Exception] = UnsupportedLayerError
    handlers: dict[type, Any] = field(default_factory=dict)
    declined: dict[type, str] = field(default_factory=dict)
    notes: dict[type, str] = field(default_factory=dict)

    def handles(self, *classes: type, note: str = "") -> Callable[[T], T]:
        """Decorator: the function handles these spec classes (``note``: a caveat for the matrix)."""
        def register(handler: T) -> T:
            self.register(classes, handler, note=note)
            return handler

        return register

    def register(self, classes: tuple[type, ...] | type, handler: Any = True, note: str = "") -> None:
        for cls in classes if isinstance(classes, tuple) else (classes,):
            if cls in self.handlers or cls in self.declined:
                raise RuntimeError(f"{self.title}: {cls.__name__} is registered twice")
            self.handlers[cls] = handler
            if note:
                self.notes[cls] = note

    def decline(self, classes: tuple[type, ...] | type, reason: str) -> None:
        """These spec classes are not supported, because ``reason`` (one line, shown to the user)."""
        for cls in classes if isinstance(classes, tuple) else (classes,):
            if cls in self.handlers or cls in self.declined:
                raise RuntimeError(f"{self.title}: {cls.__name__} is registered twice")
            self.declined[cls] = reason

    def supports(self, cls: type) -> bool:
        return cls in self.handlers

    def reason(self, cls: type) -> str:
        """Why ``cls`` is not supported ('' when it is)."""
        if cls in self.handlers:
            return ""
        return self.declined.get(cls, f"{self.title} has no handler for it")

    def error(self, layer: Any, index: int | None = None, what: str = "layer") -> Exception:
        """The one-line error for an unsupported layer: backend, where, what, why."""
        at = f"{what} {index}" if index is not None else what
        return self.error_class(
            f"{self.title}: {at} '{layer.name}' ({layer.type}) is not supported because {self.reason(type(layer))}"
        )

    def lookup(self, layer: Any, index: int | None = None, what: str = "layer") -> Any:
        """The handler of ``layer``'s exact type; the backend's error naming the reason otherwise."""
        handler = self.handlers.get(type(layer))
        if handler is None:
            raise self.error(layer, index, what)
        return handler


LOADER = Backend("loader", "Keras file loader", "loader", "layerlab.modelfile.layers")
ENGINE = Backend("engine", "NumPy engine", "engine", "layerlab.engine.runner")
ENGINE_FAST = Backend("engine_fast", "NumPy engine (fast path)", "fast path", "layerlab.engine.fast")
KERAS = Backend("keras", "Keras build", "Keras build", "layerlab.keras_build")
TRAINER = Backend("trainer", "torch trainer", "torch trainer", "layerlab.train.torch_forms")
PROBE = Backend("probe", "probe", "probe/explain", "layerlab.probing")
C_FLOAT = Backend("c_float", "C export", "C float", "layerlab.export.c.plan", ExportError)
C_INT8 = Backend("c_int8", "C export (int8)", "C int8", "layerlab.export.c.plan", ExportError)
EXCEL_VALUES = Backend("excel_values", "xlsx export", "Excel values", "layerlab.export.excel", ExportError)
EXCEL_FORMULAS = Backend("excel_formulas", "xlsx-formulas", "Excel formulas", "layerlab.export.excel_formulas", ExportError)
NNC_IMPORT = Backend("nnc_import", "NNC import", "NNC import", "layerlab.nnc.functions", NNCError)
NNC_EXPORT = Backend("nnc_export", "NNC export", "NNC export", "layerlab.nnc.exporter", NNCError)
VIEW = Backend("view", "layerlab view", "view click", "layerlab.view.data")

BACKENDS: tuple[Backend, ...] = (
    LOADER, ENGINE, ENGINE_FAST, KERAS, TRAINER, PROBE, C_FLOAT, C_INT8, EXCEL_VALUES, EXCEL_FORMULAS,
    NNC_IMPORT, NNC_EXPORT, VIEW,
)


def load_all() -> tuple[Backend, ...]:
    """Import every module that fills a table, so that each backend's table is complete."""
    for backend in BACKENDS:
        importlib.import_module(backend.module)
    return BACKENDS


def gaps() -> list[str]:
    """'backend: Type' for every registered type a backend neither handles nor declines."""
    load_all()
    return [
        f"{backend.key}: {name}" for backend in BACKENDS for name, cls in LAYER_TYPES.items()
        if cls not in backend.handlers and cls not in backend.declined
    ]


def support_matrix(reasons: bool = False) -> str:
    """The support matrix as a Markdown table: layer type x backend ('yes', 'yes*' with a note, '-').

    With ``reasons``, a list follows of every '-' and '*' with its reason or note.
    """
    load_all()
    header = ["layer", *(b.column for b in BACKENDS)]
    rows = [header, ["---"] * len(header)]
    notes: list[str] = []
    for name, cls in LAYER_TYPES.items():
        row = [name]
        for backend in BACKENDS:
            if cls in backend.handlers:
                row.append("yes*" if cls in backend.notes else "yes")
                if cls in backend.notes:
                    notes.append(f"- {name}, {backend.column}: {backend.notes[cls]}")
            else:
                row.append("-")
                notes.append(f"- {name}, {backend.column}: not supported because {backend.reason(cls)}")
        rows.append(row)
    text = "\n".join("| " + " | ".join(r) + " |" for r in rows) + "\n"
    if reasons:
        text += "\n" + "\n".join(notes) + "\n"
    return text
