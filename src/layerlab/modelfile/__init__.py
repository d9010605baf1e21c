"""Read any Keras model file with h5py and numpy alone: config + weights -> ``Network``.

    import layerlab
    m = layerlab.load("model.h5")                                   # Keras 2 or 3 full model
    m = layerlab.load("model.keras")                                # Keras 3 / tf_keras archive
    m = layerlab.load("w.weights.h5", architecture="model.keras")   # Keras 3 save_weights
    m = layerlab.load("w.h5", architecture="model.json")            # Keras 2 save_weights + to_json

Files this reads (see ``containers``, ``config`` and ``weights`` for the layouts):

=================================  ===========================================================
Keras 3 ``.keras``                 zip: config.json + metadata.json + model.weights.h5
Keras 3 ``.h5`` (``model.save``)    ``model_config`` attribute + legacy ``model_weights`` group
Keras 3 ``.weights.h5``             ``layers/<class-name key>/vars/<i>``; needs ``architecture``
Keras 2 / tf.keras ``.h5``          ``model_config`` + ``model_weights`` (``kernel:0`` names)
Keras 2 ``save_weights`` ``.h5``    ``layer_names`` + groups; needs ``architecture`` (to_json)
``backend: theano`` Keras 2 files   conv kernels flipped back to correlation (see ``weights``)
=================================  ===========================================================

``architecture`` may be a ``to_json()`` JSON file, a ``.keras`` archive, a full-model ``.h5``, a
layerlab spec (JSON/YAML file, dict or ``spec.Model``), or a parsed Keras config dict.

Nothing in a file is ever executed: no pickle, no Lambda layers, no custom objects. TensorFlow
and Keras are never imported.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerlab import spec as S
from layerlab.errors import LayerlabWarning, ModelFileError, SpecError
from layerlab.modelfile.config import KerasLayer, ParsedModel, is_keras_model_config, parse_config
from layerlab.modelfile.containers import open_hdf5, parse_json, read_archive, sniff, text
from layerlab.modelfile.layers import SUPPORTED
from layerlab.modelfile.weights import is_keras3_store, is_legacy_store, read_weights
from layerlab.network import Network

__all__ = ["SUPPORTED", "LoadedFile", "ParsedModel", "load", "read", "read_architecture"]


@dataclass(frozen=True)
class LoadedFile:
    """A loaded model file and what it says about itself.

    Attributes:
        network: the spec and weights, ready to run.
        kind: 'keras archive', 'h5 model', 'h5 weights (Keras 2)' or 'weights.h5 (Keras 3)'.
        keras_version: the Keras version that wrote it, when recorded.
        backend: the backend that wrote it, when recorded ('tensorflow', 'jax', 'theano'...).
        generation: the major Keras version the config was read as (2 or 3).
    """

    network: Network
    kind: str
    keras_version: str | None
    backend: str | None
    generation: int


def load(path: str | Path, architecture: Any = None) -> Network:
    """Load a Keras model file as a ``Network`` (numpy + h5py only).

    Args:
        path: a ``.keras``, ``.h5`` or ``.weights.h5`` file (or an unzipped ``.keras`` folder).
        architecture: needed for weights-only files: a ``to_json()`` file, ``.keras`` file,
            full-model ``.h5``, layerlab spec file / dict / ``spec.Model``, or Keras config dict.

    Returns:
        ``Network`` with ``.spec``, ``.weights``, ``.predict(x)`` and ``.trace(x)``.

    Raises:
        ModelFileError: missing, truncated, corrupt or non-Keras file, weights that do not fit.
        UnsupportedLayerError: a layer type layerlab does not implement, or a Lambda layer.
    """
    return read(path, architecture).network


def read(path: str | Path, architecture: Any = None) -> LoadedFile:
    """Like ``load``, and also report what kind of file it was (see ``LoadedFile``)."""
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise ModelFileError(f"{source}: no such file. Check the path (a .keras, .h5 or .weights.h5 file)")
    kind = sniff(path)
    arch = read_architecture(architecture) if architecture is not None else None
    if kind in ("zip", "folder"):
        archive = read_archive(path, source)
        version = archive.metadata.get("keras_version")
        parsed = arch or _parse(archive.config, source, version)
        if archive.weights is None:
            raise ModelFileError(f"{source}: the archive has no model.weights.h5. Save the model again with model.save()")
        with open_hdf5(archive.weights, f"{source}: model.weights.h5") as h5:
            weights = read_weights(h5, parsed, source)
        return _done(parsed, weights, source, "keras archive", version, None)
    if kind == "json":
        raise ModelFileError(
            f"{source} is an architecture (JSON) without weights. Load the weights file and pass this as "
            f"architecture: layerlab.load('weights.h5', architecture='{path.name}')"
        )
    if kind != "hdf5":
        raise ModelFileError(
            f"{source}: not a Keras model file (neither HDF5 nor a .keras zip archive). "
            "Save the model with model.save('model.keras') or model.save('model.h5')"
        )
    with open_hdf5(path, source) as h5:
        version = _attr(h5, "keras_version")
        backend = _attr(h5, "backend")
        if "model_config" in h5.attrs:
            parsed = arch or _parse(parse_json(text(h5.attrs["model_config"]), f"{source}: model_config"), source, version)
            root = h5["model_weights"] if "model_weights" in h5 else h5
            version = version or _attr(root, "keras_version")
            backend = backend or _attr(root, "backend")
            return _done(parsed, read_weights(root, parsed, source, backend), source, "h5 model", version, backend)
        if is_legacy_store(h5) or is_keras3_store(h5):
            legacy = is_legacy_store(h5)
            kind_name = "h5 weights (Keras 2)" if legacy else "weights.h5 (Keras 3)"
            if arch is None:
                raise ModelFileError(
                    f"{source} holds weights only (saved with save_weights), no architecture. Pass it: "
                    "layerlab.load(path, architecture='model.json') with the JSON of model.to_json() or a .keras file"
                )
            return _done(arch, read_weights(h5, arch, source, backend), source, kind_name, version, backend)
        raise ModelFileError(
            f"{source}: an HDF5 file, but not a Keras model: no 'model_config' attribute, no 'layer_names' "
            "weights index and no Keras 3 'layers' group. Save the model with model.save() or model.save_weights()"
        )


def _attr(group, name: str) -> str | None:
    return text(group.attrs[name]) if name in group.attrs else None


def _parse(document: Any, source: str, version: str | None) -> ParsedModel:
    return parse_config(document, source, keras_version=version)


def _done(parsed: ParsedModel, weights, source: str, kind: str, version: str | None, backend: str | None) -> LoadedFile:
    network = Network(parsed.spec, weights, source=source)
    bad = network.nonfinite_weights()
    if bad:
        warnings.warn(f"{source}: the weights hold NaN or infinity in {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}; "
                      "what the model computes from them is meaningless", LayerlabWarning, stacklevel=3)
    return LoadedFile(network, kind, version, backend, parsed.generation)


def read_architecture(architecture: Any) -> ParsedModel:
    """Parse an ``architecture`` argument (see ``load``) into a ``ParsedModel``.

    Raises:
        ModelFileError: the file is missing or holds no model architecture.
    """
    if isinstance(architecture, S.Model):
        return _from_spec(architecture)
    if isinstance(architecture, dict):
        if is_keras_model_config(architecture):
            return parse_config(architecture, "architecture")
        try:
            return _from_spec(S.Model.from_dict(architecture, source="architecture"))
        except SpecError as exc:
            raise ModelFileError(f"architecture: neither a Keras model config nor a layerlab spec ({exc})") from None
    path = Path(architecture)
    source = str(path)
    if not path.exists():
        raise ModelFileError(f"{source}: no such architecture file. Pass the JSON of model.to_json() or a .keras file")
    kind = sniff(path)
    if kind in ("zip", "folder"):
        archive = read_archive(path, source)
        return parse_config(archive.config, source, archive.metadata.get("keras_version"))
    if kind == "hdf5":
        with open_hdf5(path, source) as h5:
            if "model_config" not in h5.attrs:
                raise ModelFileError(f"{source}: this HDF5 file has no 'model_config', so it holds no architecture")
            return parse_config(parse_json(text(h5.attrs["model_config"]), source), source, _attr(h5, "keras_version"))
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            from layerlab.specfile import load_spec

            return _from_spec(load_spec(path))
        except SpecError as exc:
            raise ModelFileError(f"{source}: not a layerlab spec ({exc})") from None
    if kind != "json":
        raise ModelFileError(f"{source}: not an architecture file (expected JSON from model.to_json() or a .keras file)")
    document = parse_json(path.read_bytes(), source)
    if is_keras_model_config(document):
        return parse_config(document, source)
    if isinstance(document, dict) and "layers" in document and "class_name" not in document:
        try:
            return _from_spec(S.Model.from_dict(document, source=source))
        except SpecError as exc:
            raise ModelFileError(str(exc)) from None
    return parse_config(document, source)  # raises the "not a Keras model config" error


def _from_spec(model: S.Model) -> ParsedModel:
    """A layerlab spec as an architecture: Keras class names are the spec types, and a graph is
    saved as a functional model (its InputLayer counts in Keras 3 weight paths), as
    ``keras_build.build_keras`` builds it."""
    functional = any(layer.inputs for layer in model.layers)
    records = [KerasLayer(layer.name, layer.type) for layer in model.layers]
    if functional:
        records.insert(0, KerasLayer("input", "InputLayer"))
    return ParsedModel(spec=model, model_class="Functional" if functional else "Sequential", layers=tuple(records), generation=3)
