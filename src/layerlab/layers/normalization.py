"""The normalization family: Keras BatchNormalization at inference, and its one folding rule;
Keras' Normalization preprocessing layer (fixed statistics: ``(x - mean) / sqrt(variance)``).

``scale_shift`` is the only place layerlab turns batch-norm statistics into an affine map: the
engine, the C export, the NNC export and the trainer's folding all call it, in Keras' own order
of operations (``inv = gamma * rsqrt(var + eps)``, ``shift = beta - mean * inv``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from layerlab.layers.base import Layer, Shape, check_bool, fail, is_int, set_field

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True, kw_only=True)
class BatchNormalization(Layer):
    """Keras BatchNormalization at inference:
    ``y = gamma * (x - moving_mean) / sqrt(moving_variance + epsilon) + beta`` along ``axis``."""

    type: ClassVar[str] = "BatchNormalization"
    family: ClassVar[str] = "normalization"
    layouts: ClassVar[dict[str, str]] = {n: "(channels,)" for n in ("gamma", "beta", "moving_mean", "moving_variance")}
    axis: int = -1
    epsilon: float = 1e-3
    momentum: float = 0.99
    center: bool = True
    scale: bool = True

    def validate(self) -> None:
        if not is_int(self.axis):
            raise fail(f"axis={self.axis!r} must be an int", "Use axis=-1 (channels_last) or axis=1 (channels_first)")
        if not isinstance(self.epsilon, (int, float)) or isinstance(self.epsilon, bool) or not self.epsilon > 0:
            raise fail(f"epsilon={self.epsilon!r} must be a positive number", "Use epsilon=1e-3")
        check_bool(self, "center")
        check_bool(self, "scale")

    def feature_axis(self, input_shape: Shape) -> int:
        """The normalised axis as an index into ``input_shape`` (no batch axis)."""
        rank = len(input_shape) + 1
        axis = self.axis if self.axis >= 0 else rank + self.axis
        if not 1 <= axis < rank:
            raise fail(f"axis={self.axis} is out of range for input shape {tuple(input_shape)}", "Use axis=-1")
        return axis - 1

    def weight_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        n = (input_shape[self.feature_axis(input_shape)],)
        shapes: dict[str, Shape] = {}
        if self.scale:
            shapes["gamma"] = n
        if self.center:
            shapes["beta"] = n
        shapes["moving_mean"] = n
        shapes["moving_variance"] = n
        return shapes


# Keras' backend.epsilon(): Normalization divides by max(sqrt(variance), this).
NORMALIZATION_EPSILON = 1e-7


@dataclass(frozen=True, kw_only=True)
class Normalization(Layer):
    """Keras Normalization (a preprocessing layer, adapted or given its statistics) along one
    ``axis``: ``y = (x - mean) / max(sqrt(variance), 1e-7)``, or with ``invert``
    ``y = mean + x * max(sqrt(variance), 1e-7)``. ``mean`` and ``variance`` are the config's
    values when Keras was given them, else None and the layer holds them as weights (with
    Keras' ``count`` of adapted samples, which it does not use)."""

    type: ClassVar[str] = "Normalization"
    family: ClassVar[str] = "normalization"
    layouts: ClassVar[dict[str, str]] = {"mean": "(channels,)", "variance": "(channels,)", "count": "() samples adapted on"}
    axis: int = -1
    invert: bool = False
    mean: tuple[float, ...] | None = None
    variance: tuple[float, ...] | None = None

    def validate(self) -> None:
        if not is_int(self.axis):
            raise fail(f"axis={self.axis!r} must be an int", "Use axis=-1 (channels_last) or axis=1 (channels_first)")
        check_bool(self, "invert")
        if (self.mean is None) != (self.variance is None):
            raise fail("mean and variance must be given together, or neither (then they are weights)",
                       "Give both, or adapt the layer")
        if self.mean is not None:
            for name in ("mean", "variance"):
                values = getattr(self, name)
                if not isinstance(values, (list, tuple)) or not values or not all(
                        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
                    raise fail(f"{name}={values!r} must be a list of finite numbers, one per channel", f"Use {name}=[...]")
                set_field(self, name, tuple(float(v) for v in values))
            if len(self.mean) != len(self.variance) or min(self.variance) < 0:
                raise fail(f"mean ({len(self.mean)} values) and variance ({len(self.variance)}) must be as long, "
                           "the variances not negative", "Give one mean and one variance per channel")

    feature_axis = BatchNormalization.feature_axis

    def output_shape(self, input_shape: Shape) -> Shape:
        n = input_shape[self.feature_axis(input_shape)]
        if self.mean is not None and len(self.mean) != n:
            raise fail(f"mean and variance hold {len(self.mean)} values but axis {self.axis} of {tuple(input_shape)} "
                       f"has {n}", "Give one mean and one variance per channel")
        return tuple(input_shape)

    def weight_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        if self.mean is not None:
            return {}
        n = (input_shape[self.feature_axis(input_shape)],)
        return {"mean": n, "variance": n, "count": ()}

    def statistics(self, params: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, variance)`` as float32 ``(channels,)`` arrays: the config's, else the weights'."""
        import numpy as np

        if self.mean is not None:
            return np.asarray(self.mean, np.float32), np.asarray(self.variance, np.float32)
        return (np.asarray(params["mean"], np.float32).reshape(-1), np.asarray(params["variance"], np.float32).reshape(-1))


def normalization_spread(variance) -> np.ndarray:
    """What a Normalization divides by (or, inverted, multiplies by), as Keras computes it in
    float32: ``max(sqrt(variance), 1e-7)``. The engine's two paths and the C export's rewrite as
    a BatchNormalization all take it from here."""
    import numpy as np

    return np.maximum(np.sqrt(np.asarray(variance, np.float32)), np.float32(NORMALIZATION_EPSILON))


def scale_shift(
    moving_mean, moving_variance, gamma=None, beta=None, *, epsilon: float, dtype=None
) -> tuple[np.ndarray, np.ndarray]:
    """A batch norm as ``y = x * scale + shift`` per feature, in Keras' order of operations.

    ``scale = gamma / sqrt(moving_variance + epsilon)`` (``gamma`` None: ``scale=False``);
    ``shift = beta - moving_mean * scale`` (``beta`` None: ``center=False``).

    Args:
        moving_mean, moving_variance, gamma, beta: ``(features,)`` arrays.
        epsilon: the layer's epsilon.
        dtype: float32 (default, what Keras computes in) or float64 (to fold into weights that
            are rounded to float32 once afterwards).

    Returns:
        ``(scale, shift)``, each ``(features,)`` of ``dtype``.
    """
    import numpy as np

    dtype = np.float32 if dtype is None else dtype
    inv = dtype(1) / np.sqrt(np.asarray(moving_variance, dtype) + dtype(epsilon))
    if gamma is not None:
        inv = inv * np.asarray(gamma, dtype)
    shift = -np.asarray(moving_mean, dtype) * inv
    if beta is not None:
        shift = shift + np.asarray(beta, dtype)
    return inv.astype(dtype), shift.astype(dtype)


def layer_scale_shift(layer: BatchNormalization, params: Mapping[str, np.ndarray], dtype=None) -> tuple[np.ndarray, np.ndarray]:
    """``scale_shift`` for a spec layer and its weights by Keras name."""
    return scale_shift(
        params["moving_mean"], params["moving_variance"], params.get("gamma") if layer.scale else None,
        params.get("beta") if layer.center else None, epsilon=layer.epsilon, dtype=dtype,
    )


TYPES = (BatchNormalization, Normalization)
