"""The normalization family: Keras BatchNormalization at inference, and its one folding rule.

``scale_shift`` is the only place layerlab turns batch-norm statistics into an affine map: the
engine, the C export, the NNC export and the trainer's folding all call it, in Keras' own order
of operations (``inv = gamma * rsqrt(var + eps)``, ``shift = beta - mean * inv``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from layerlab.layers.base import Layer, Shape, check_bool, fail, is_int

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


TYPES = (BatchNormalization,)
