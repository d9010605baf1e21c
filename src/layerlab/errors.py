"""Every error that layerlab raises on purpose, in one tree.

    LayerlabError
    ├── SpecError (ValueError)          an impossible or malformed network spec
    ├── ShapeError (ValueError)         an input array of the wrong shape or dtype
    ├── ModelFileError (ValueError)     a model file that cannot be read as Keras
    │   └── UnsupportedLayerError       a layer type layerlab does not implement
    ├── DataError (OSError)             dataset files missing, corrupt or not downloadable
    ├── ExportError                     an export that cannot be produced or verified
    ├── NNCError (ValueError)           an NNC network that cannot be converted
    ├── NonFiniteError (ValueError)     a result computed from NaN or infinity, where it means nothing
    ├── LimitError (ValueError)         a file declares more than layerlab's limits (limits.py)
    ├── OutputError (OSError)           an output that would clobber something, or cannot be written
    └── MissingExtraError (ImportError) an optional dependency (an "extra") is not installed

Messages follow one template: where, what, expected, received, fix. The CLI prints the message
as one line and exits non-zero; tracebacks appear only with ``--debug``.
"""

from __future__ import annotations


class LayerlabError(Exception):
    """Base class of every error that layerlab raises on purpose."""


class SpecError(LayerlabError, ValueError):
    """A network spec is malformed or describes an impossible network."""


class ShapeError(LayerlabError, ValueError):
    """An input array has the wrong shape or dtype for the layer or model."""


class ModelFileError(LayerlabError, ValueError):
    """A model file is missing, truncated, corrupt or not a Keras model."""


class UnsupportedLayerError(ModelFileError):
    """A model holds a layer type that layerlab does not implement."""


class DataError(LayerlabError, OSError):
    """Dataset files are missing, corrupt, or could not be downloaded."""


class ExportError(LayerlabError):
    """An export could not be produced, or its self-check failed."""


class NNCError(LayerlabError, ValueError):
    """A Neural Network Console (nnabla) network cannot be read or converted."""


class NonFiniteError(LayerlabError, ValueError):
    """Weights or outputs hold NaN or infinity where a result (an accuracy, a workbook) would be meaningless."""


class LimitError(LayerlabError, ValueError):
    """A file declares more data (bytes, nesting) than the limits of ``layerlab.limits`` allow."""


class OutputError(LayerlabError, OSError):
    """An output path that would overwrite an input or a user's file, or that cannot be written."""


class MissingExtraError(LayerlabError, ImportError):
    """An optional dependency is needed for this feature but is not installed."""


class LayerlabWarning(UserWarning):
    """Something that makes a result doubtful but not impossible (NaN weights, a skipped check)."""


def require(module: str, extra: str, feature: str):
    """Import an optional dependency or raise one clear error that says how to get it.

    Args:
        module: the module to import, e.g. ``"matplotlib"``.
        extra: the pip extra of layerlab that installs it, e.g. ``"plot"``.
        feature: what the user asked for, e.g. ``"accuracy plots"``.

    Returns:
        The imported module.

    Raises:
        MissingExtraError: the module is not installed.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{feature} needs the Python package '{module.split('.')[0]}', which is not installed "
            f"({exc}). Install it with: pip install 'layerlab[{extra}]'"
        ) from None
