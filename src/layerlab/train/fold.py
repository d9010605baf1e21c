"""Fold input standardisation into the first layer's weights (numpy only).

Training on ``z = (x - mean) / std`` with a first layer ``y = sum(w * z) + b`` is the same as a
first layer on ``x`` with

    w' = w / std
    b' = b - (mean / std) * sum(w)        (sum over every input tap of one output unit)

because ``sum(w * (x - mean) / std) = sum(w / std * x) - mean / std * sum(w)``. This is exact
only when every tap reads a real input value: a Conv2D with padding='valid' (a 'same' conv pads
zeros, which are ``-mean/std`` in standardised units, not 0) or a Dense. The layer must have a
bias to absorb the shift.
"""

from __future__ import annotations

import numpy as np

from layerlab import spec as S
from layerlab.errors import SpecError


def foldable(model: S.Model) -> str | None:
    """None when standardisation folds exactly into ``model``'s first layer, else why not."""
    first = model.layers[0]
    if first.inputs:
        return f"the first layer '{first.name}' reads {first.inputs}, not the model input"
    if isinstance(first, S.Conv2D):
        if first.padding != "valid":
            return f"the first layer '{first.name}' (Conv2D) has padding='{first.padding}'; only 'valid' folds exactly"
    elif not isinstance(first, S.Dense):
        return f"the first layer '{first.name}' is a {first.type}, not a Conv2D or Dense"
    if not first.use_bias:
        return f"the first layer '{first.name}' has use_bias=False; the mean shift needs a bias"
    return None


def fold_standardization(
    model: S.Model, weights: dict[str, dict[str, np.ndarray]], mean: float, std: float
) -> dict[str, dict[str, np.ndarray]]:
    """Weights that take ``x`` equal to ``weights`` taking ``(x - mean) / std``.

    Args:
        model: the spec; its first layer must be a 'valid' Conv2D or a Dense with a bias.
        weights: layer name -> weight name -> array (Keras layouts: Conv2D kernel HWIO
            (kh, kw, cin, filters), Dense kernel (in, units)).
        mean, std: the two scalars the training input was standardised with.

    Returns:
        A new weights dict; only the first layer's kernel and bias change.

    Raises:
        SpecError: the first layer cannot absorb the standardisation exactly.
    """
    reason = foldable(model)
    if reason:
        raise SpecError(f"fold_standardization: {reason}. Fix: train without standardisation.")
    if not std > 0:
        raise SpecError(f"fold_standardization: std={std!r}, expected > 0.")
    first = model.layers[0].name
    kernel = np.asarray(weights[first]["kernel"], np.float64)
    bias = np.asarray(weights[first]["bias"], np.float64)
    taps = tuple(range(kernel.ndim - 1))  # every axis but the output one: (kh, kw, cin) or (in,)
    out = {name: dict(values) for name, values in weights.items()}
    out[first]["kernel"] = (kernel / std).astype(np.float32)
    out[first]["bias"] = (bias - mean / std * kernel.sum(axis=taps)).astype(np.float32)  # (filters,)
    return out
