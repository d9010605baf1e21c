"""Find each layer's weights in an HDF5 weights store and put them in Keras order.

Two store layouts exist:

* **Legacy** (Keras 1-2 ``model.save('m.h5')`` / ``save_weights('w.h5')``, tf.keras, and Keras 3's
  ``.h5``): one group per layer named after the layer, listed in the ``layer_names`` attribute;
  each lists its datasets in ``weight_names``, in Keras order. The names changed over the years:
  ``conv2d_1/kernel:0`` (Keras 2), ``kernel`` (early Keras 3), ``sequential/conv2d/kernel``
  (Keras 3.15). Like Keras' own loader we read them in ``weight_names`` order and check the last
  path part (``kernel``) when it is a known name.
* **Keras 3** (``.weights.h5`` and ``model.weights.h5`` inside ``.keras``; tf_keras 2.13+ too):
  ``layers/<key>/vars/0, 1, ...`` where ``<key>`` is NOT the layer name but the snake_case
  class name made unique in ``model.layers`` order (``conv2d``, ``conv2d_1``, ``dense``...), as
  ``keras/src/saving/saving_lib.py`` (``_save_container_state``) writes it. A Sequential's
  ``model.layers`` leaves out its InputLayer, a functional model's includes it. Keras 3.15 also
  stores the layer name as the ``name`` attribute of ``vars``; earlier Keras 3 and tf_keras do
  not, and Keras itself loads by path, so the class-name path is the key (the ``name`` attribute
  is not needed). tf.keras 2.13 wrote ``_layer_checkpoint_dependencies/``
  instead of ``layers/``.

Variables are in Keras order (trainable, then non-trainable): Conv2D/Dense kernel, bias;
BatchNormalization gamma, beta, moving_mean, moving_variance.

Keras 1: a legacy store without a ``keras_version`` attribute was written by Keras 1 (tf_keras'
``load_weights`` reads it so too, ``saving/legacy/hdf5_format.py``). Keras 1 kept channels_first
(``dim_ordering='th'``) Conv2D kernels as ``(filters, in_channels, kernel_h, kernel_w)`` and Conv1D
kernels 4-D; as tf_keras' ``preprocess_weights_for_loading`` does, layerlab transposes a
channels_first Conv2D kernel ``(2, 3, 1, 0)`` to HWIO and a Conv1D kernel to
``(kernel_size, in_channels, filters)``.

Theano: Keras 2 files written with ``backend: theano`` hold true-convolution kernels. Keras'
loader (``keras/engine/saving.py``, ``preprocess_weights_for_loading`` with
``conv_utils.convert_kernel``) reverses every spatial axis of a conv kernel when the backend that
wrote it and the one reading it disagree on convolution vs correlation; layerlab, like
TensorFlow, computes correlation, so Conv2D kernels of a theano file are flipped
``kernel[::-1, ::-1, :, :]``.
"""

from __future__ import annotations

import re

import numpy as np

from layerlab import spec as S
from layerlab.errors import ModelFileError
from layerlab.modelfile.config import ParsedModel
from layerlab.modelfile.containers import attr_list, read_dataset

Weights = dict[str, dict[str, np.ndarray]]
CONVOLUTION_BACKENDS = ("theano",)  # backends whose conv is a true convolution (flipped kernel)


def snake_case(class_name: str) -> str:
    """Keras' ``naming.to_snake_case``: 'MaxPooling2D' -> 'max_pooling2d', 'Conv2D' -> 'conv2d'."""
    name = re.sub(r"\W+", "", class_name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def expected_weights(parsed: ParsedModel) -> dict[str, dict[str, tuple[int, ...]]]:
    """Layer name -> weight name -> shape, for the layers that have weights."""
    out = {}
    for info in parsed.spec.infos:
        shapes = info.layer.weight_shapes(info.input_shapes[0])
        if shapes:
            out[info.layer.name] = shapes
    return out


def is_legacy_store(root) -> bool:
    return "layer_names" in root.attrs or "layer_names0" in root.attrs


def is_keras3_store(root) -> bool:
    return any(key in root for key in ("layers", "_layer_checkpoint_dependencies", "vars"))


def read_weights(root, parsed: ParsedModel, source: str, backend: str | None = None) -> Weights:
    """Read every layer's weights from a store (either layout).

    Args:
        root: the h5py group holding the store (a file, or its ``model_weights`` group).
        parsed: the architecture the weights belong to.
        source: the file name, for messages.
        backend: the backend that wrote the file (``'theano'`` flips conv kernels).

    Returns:
        layer name -> weight name -> array, Keras layouts (not yet shape-checked: ``Network``
        does that and names the file).

    Raises:
        ModelFileError: no weights for a layer, or a different number of weights than it needs.
    """
    if is_legacy_store(root):
        weights = _legacy(root, parsed, source)
        if "keras_version" not in root.attrs and "keras_version" not in root.file.attrs:
            _from_keras1(weights, parsed)
    elif is_keras3_store(root):
        weights = _keras3(root, parsed, source)
    else:
        raise ModelFileError(f"{source}: no Keras weights in the file (no 'layer_names' attribute, no 'layers' group)")
    if backend in CONVOLUTION_BACKENDS:
        for layer in parsed.spec.layers:
            if isinstance(layer, S.Conv2D) and "kernel" in weights.get(layer.name, {}):
                kernel = weights[layer.name]["kernel"]
                if kernel.ndim == 4:
                    weights[layer.name]["kernel"] = np.ascontiguousarray(kernel[::-1, ::-1, :, :])  # HWIO, H and W reversed
    return weights


def _from_keras1(weights: Weights, parsed: ParsedModel) -> None:
    """Keras 1 kernel layouts -> Keras 2+, as tf_keras' preprocess_weights_for_loading converts them."""
    for layer in parsed.spec.layers:
        kernel = weights.get(layer.name, {}).get("kernel")
        if kernel is None:
            continue
        if isinstance(layer, S.Conv2D) and layer.data_format == S.CHANNELS_FIRST and kernel.ndim == 4:
            weights[layer.name]["kernel"] = np.ascontiguousarray(kernel.transpose(2, 3, 1, 0))  # (F, C, kh, kw) -> HWIO
        elif isinstance(layer, S.Conv1D) and kernel.ndim == 4:
            if kernel.shape[:2] != (layer.kernel_size[0], 1) or kernel.shape[3] != layer.filters:
                kernel = kernel.transpose(2, 3, 1, 0)  # Keras 1.1: (filters, in, k, 1) -> (k, 1, in, filters)
            weights[layer.name]["kernel"] = np.ascontiguousarray(kernel[:, 0])  # (k, in, filters)


def _check_count(layer: str, names: list[str], stored: list[str], where: str) -> None:
    """Before reading anything: the file holds as many arrays for ``layer`` as it needs."""
    if len(stored) != len(names):
        shown = stored if len(stored) <= 8 else [*stored[:8], f"... {len(stored) - 8} more"]
        raise ModelFileError(
            f"{where}: layer '{layer}' needs {len(names)} weights {names}, the file holds {len(stored)} {shown}. "
            "The weights do not belong to this architecture"
        )


def _assign(layer: str, names: list[str], stored: list[str], values: list[np.ndarray], where: str) -> dict[str, np.ndarray]:
    """Match stored arrays to the layer's Keras weight names (``names``, Keras order)."""
    _check_count(layer, names, stored, where)
    last = [s.split("/")[-1].split(":")[0] for s in stored]
    if sorted(last) == sorted(names):  # names we know: match by name, whatever the stored order
        return {n: values[last.index(n)] for n in names}
    return dict(zip(names, values, strict=True))  # Keras' own loader matches by position


def _legacy(root, parsed: ParsedModel, source: str) -> Weights:
    expected = expected_weights(parsed)
    stored = [n for n in attr_list(root, "layer_names") if n in root and attr_list(root[n], "weight_names")]
    wanted = [r.name for r in parsed.layers if r.name in expected]
    missing = [n for n in wanted if n not in stored]
    if not missing:
        pairs = [(n, n) for n in wanted]
    elif len(stored) == len(wanted):
        # Names differ (the architecture came from another instance of the model): Keras'
        # default load_weights matches layers with weights by position; so do we.
        pairs = list(zip(wanted, stored, strict=True))
    else:
        raise ModelFileError(
            f"{source}: no weights for layer(s) {missing}; the file has weights for {stored}. "
            "Use the weights file saved from this model"
        )
    weights: Weights = {}
    for layer, group_name in pairs:
        group = root[group_name]
        names = attr_list(group, "weight_names")
        where = f"{source}: weights of layer '{group_name}'"
        _check_count(layer, list(expected[layer]), names, source)
        values = []
        for name in names:
            if name not in group:
                raise ModelFileError(f"{where}: weight '{name}' is listed but missing. The file is corrupt; save it again")
            values.append(read_dataset(group[name], f"{where} ({name})", expected[layer].values()))
        weights[layer] = _assign(layer, list(expected[layer]), names, values, source)
    return weights


def _keras3(root, parsed: ParsedModel, source: str) -> Weights:
    expected = expected_weights(parsed)
    base = "layers" if "layers" in root else "_layer_checkpoint_dependencies"
    used: dict[str, int] = {}
    weights: Weights = {}
    for record in parsed.saved_layers():
        key = snake_case(record.class_name)
        if key in used:  # saving_lib._get_unique_name
            used[key] += 1
            key = f"{key}_{used[key]}"
        else:
            used[key] = 0
        if record.name not in expected:
            continue
        path = f"{base}/{key}/vars"
        if path not in root:
            have = sorted(root[base].keys()) if base in root else []
            raise ModelFileError(
                f"{source}: no weights for layer '{record.name}' ({record.class_name}) at '{path}'; the file has "
                f"{have}. Use the weights file saved from this model"
            )
        group = root[path]
        keys = sorted(group.keys(), key=lambda k: int(k) if k.isdigit() else 1 << 30)
        names = list(expected[record.name])
        _check_count(record.name, names, [f"{path}/{k}" for k in keys], source)
        values = [read_dataset(group[k], f"{source}: {path}/{k}", expected[record.name].values()) for k in keys]
        weights[record.name] = _assign(record.name, names, [f"{path}/{k}" for k in keys], values, source)
    return weights
