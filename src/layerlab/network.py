"""A network with weights: a spec plus float32 arrays in Keras layouts, run by the NumPy engine.

``weights`` maps a layer name to that layer's arrays by Keras weight name::

    {"conv1": {"kernel": (4, 4, 1, 5) HWIO, "bias": (5,)}, "dense1": {"kernel": (27, 10), "bias": (10,)}}

Layers without weights have no entry. ``Network`` checks names and shapes against the spec on
construction, so a wrongly shaped or missing weight is reported before anything runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from layerlab import spec as S
from layerlab.errors import ModelFileError, NonFiniteError, ShapeError
from layerlab.spec import Model


@dataclass(frozen=True)
class Network:
    """A validated spec with its weights.

    Attributes:
        spec: the architecture.
        weights: layer name -> weight name -> float32 array, Keras layouts.
        source: where it came from (a file path or "memory"), for messages.
    """

    spec: Model
    weights: Mapping[str, Mapping[str, np.ndarray]] = field(default_factory=dict)
    source: str = "memory"

    def __post_init__(self) -> None:
        checked: dict[str, dict[str, np.ndarray]] = {}
        for info in self.spec.infos:
            layer = info.layer
            expected = layer.weight_shapes(info.input_shapes[0])
            given = dict(self.weights.get(layer.name, {}))
            if not expected:
                if given:
                    raise ModelFileError(f"{self.source}: layer '{layer.name}' ({layer.type}) has no weights, but {sorted(given)} were given")
                continue
            missing = [n for n in expected if n not in given]
            extra = [n for n in given if n not in expected]
            if missing or extra:
                raise ModelFileError(
                    f"{self.source}: layer '{layer.name}' ({layer.type}) needs weights {list(expected)}, "
                    f"received {list(given)}" + (f" (missing {missing})" if missing else "") + (f" (unexpected {extra})" if extra else "")
                )
            arrays = {}
            for name, shape in expected.items():
                array = np.asarray(given[name])
                if tuple(array.shape) != tuple(shape):
                    raise ModelFileError(
                        f"{self.source}: layer '{layer.name}' ({layer.type}) weight '{name}' has shape "
                        f"{tuple(array.shape)}, expected {tuple(shape)}"
                    )
                # Floats; integers too (Normalization's sample count is stored as an int).
                if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
                    raise ModelFileError(f"{self.source}: layer '{layer.name}' weight '{name}' has dtype {array.dtype}, expected float")
                arrays[name] = np.ascontiguousarray(array, dtype=np.float32)
            checked[layer.name] = arrays
        unknown = sorted(set(self.weights) - {l.name for l in self.spec.layers})
        if unknown:
            raise ModelFileError(f"{self.source}: weights for layers not in the model: {unknown}")
        object.__setattr__(self, "weights", checked)

    def nonfinite_weights(self) -> list[str]:
        """'layer/weight' for every weight tensor that holds NaN or infinity (empty when all are finite)."""
        return [f"{layer}/{name}" for layer, arrays in self.weights.items() for name, array in arrays.items()
                if not np.isfinite(array).all()]

    def refuse_nonfinite(self, what: str) -> None:
        """Refuse to write weights with NaN or infinity to ``what``, a format that cannot hold them.

        Raises:
            NonFiniteError: naming the tensors.
        """
        bad = self.nonfinite_weights()
        if bad:
            raise NonFiniteError(f"{what}: {self.source}: the weights hold NaN or infinity in {', '.join(bad[:4])}"
                                 f"{' ...' if len(bad) > 4 else ''}, which {what} cannot hold; nothing was written. "
                                 "Fix the weights, or export --to npz or json, which keep NaN as it is")

    def require_finite(self, outputs: np.ndarray, what: str) -> None:
        """Refuse to report ``what`` (an accuracy, a prediction) computed from NaN or infinite outputs.

        Raises:
            NonFiniteError: names how many outputs are bad and the weights that hold NaN/inf.
        """
        bad = ~np.isfinite(outputs.reshape(len(outputs), -1)).all(axis=1) if len(outputs) else np.zeros(0, bool)
        if bad.any():
            weights = self.nonfinite_weights()
            cause = (f"the weights hold NaN or infinity in {', '.join(weights[:4])}" + (" ..." if len(weights) > 4 else "")
                     if weights else "the inputs or the arithmetic overflowed")
            raise NonFiniteError(f"{self.source}: the outputs for {int(bad.sum())} of {len(outputs)} inputs are NaN or infinite "
                                 f"({cause}); no {what} is reported. Fix or retrain the model")

    def check_input(self, x: np.ndarray) -> np.ndarray:
        """Return ``x`` as float32 with a batch axis; raise ShapeError when it does not fit."""
        x = np.asarray(x)
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise ShapeError(f"model '{self.spec.name}': input dtype {x.dtype} is not numeric")
        expected = tuple(self.spec.input_shape)
        if tuple(x.shape) == expected:
            x = x[None]
        if tuple(x.shape[1:]) != expected:
            raise ShapeError(
                f"model '{self.spec.name}': input shape {tuple(x.shape)} does not fit; expected "
                f"(batch, {', '.join(map(str, expected))}) or {expected}"
            )
        return x.astype(np.float32, copy=False)

    def predict(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """What Keras' ``model.predict(x)`` returns, computed by the NumPy engine."""
        from layerlab import engine

        x = self.check_input(x)
        outs = [engine.run(self.spec, self.weights, x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        if len(outs) == 1:  # no copy (a Dropout-only model's output may be the input itself)
            return outs[0].copy() if np.may_share_memory(outs[0], x) else outs[0]
        return np.concatenate(outs) if outs else np.zeros((0, *self.spec.output_shape), np.float32)

    def trace(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every layer's output, in execution order: layer name -> array (batch first)."""
        from layerlab import engine

        return engine.run(self.spec, self.weights, self.check_input(x), trace=True)


def output_layouts(spec: Model) -> dict[str, str]:
    """The layout of each layer's output ('input': the model input's): a layer's own data_format
    where it has one, else the layout of what flows in."""
    out = {"input": next((l.data_format for l in spec.layers if hasattr(l, "data_format")), S.CHANNELS_LAST)}
    previous = "input"
    for layer in spec.layers:
        source = layer.inputs[0] if layer.inputs else previous
        out[layer.name] = getattr(layer, "data_format", None) or out[source]
        previous = layer.name
    return out
