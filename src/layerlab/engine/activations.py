"""Activation functions as Keras 3 defines them, in float32 NumPy.

Every function maps a float32 array to a float32 array of the same shape, element-wise
(softmax along the last axis, as ``keras.activations.softmax(x, axis=-1)`` inside a layer).
The names are those a Keras model file uses for ``activation=``; ``swish`` is Keras' alias of
``silu``.

Keras quirks matched here (the source is ``keras/src/activations/activations.py``):

* ``gelu`` is the exact form ``x * (1 + erf(x / sqrt(2))) / 2`` (``approximate=False`` is the
  default of the activation function; only ``keras.ops.gelu`` defaults to the tanh form).
* ``hard_sigmoid`` is Keras 3's ``relu6(x + 3) / 6``. Keras 2 (tf.keras <= 2.15, standalone
  Keras 2) used ``clip(0.2 * x + 0.5, 0, 1)``: it is here as ``hard_sigmoid_keras2`` for a loader
  that reads a Keras 2 file.
* ``hard_silu`` (alias ``hard_swish``) is ``x * hard_sigmoid(x)``, Keras 3's hard_sigmoid: it
  is 0 below -3 and x above 3.
* ``leaky_relu`` as an activation name uses ``negative_slope=0.2`` (the LeakyReLU *layer*
  defaults to 0.3, but that is a layer, not an activation name).
* ``selu`` uses the constants of Klambauer et al. as Keras / JAX do.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from layerlab.errors import SpecError

# SELU constants, as jax.nn.selu and keras.activations.selu.
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def linear(x: np.ndarray) -> np.ndarray:
    """Identity."""
    return x


def relu(x: np.ndarray) -> np.ndarray:
    """``max(x, 0)``."""
    return np.maximum(x, np.float32(0))


def relu6(x: np.ndarray) -> np.ndarray:
    """``min(max(x, 0), 6)``."""
    return np.clip(x, np.float32(0), np.float32(6))


def leaky_relu(x: np.ndarray, negative_slope: float = 0.2) -> np.ndarray:
    """``x`` where ``x >= 0``, else ``negative_slope * x`` (Keras' activation default is 0.2)."""
    return np.where(x >= 0, x, np.float32(negative_slope) * x)


def tanh(x: np.ndarray) -> np.ndarray:
    """Hyperbolic tangent."""
    return np.tanh(x)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))``, computed without overflow for large ``|x|``."""
    e = np.exp(-np.abs(x))  # in (0, 1]: never overflows
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(np.float32, copy=False)


def hard_sigmoid(x: np.ndarray) -> np.ndarray:
    """Keras 3: ``relu6(x + 3) / 6`` (0 below -3, 1 above 3)."""
    return np.clip(x + np.float32(3), np.float32(0), np.float32(6)) / np.float32(6)


def hard_sigmoid_keras2(x: np.ndarray) -> np.ndarray:
    """Keras 2: ``clip(0.2 * x + 0.5, 0, 1)`` (0 below -2.5, 1 above 2.5)."""
    return np.clip(np.float32(0.2) * x + np.float32(0.5), np.float32(0), np.float32(1))


def hard_silu(x: np.ndarray) -> np.ndarray:
    """Keras 3: ``x * hard_sigmoid(x)`` (``hard_swish``; MobileNetV3's activation)."""
    return x * hard_sigmoid(x)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``exp(x) / sum(exp(x))`` along ``axis`` (Keras: the last), shifted by the max for stability."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e


def elu(x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """``x`` where ``x > 0``, else ``alpha * (exp(x) - 1)``."""
    return np.where(x > 0, x, np.float32(alpha) * np.expm1(np.minimum(x, np.float32(0))))


def selu(x: np.ndarray) -> np.ndarray:
    """``scale * elu(x, alpha)`` with SELU's fixed ``alpha`` and ``scale``."""
    return np.float32(_SELU_SCALE) * elu(x, _SELU_ALPHA)


def softplus(x: np.ndarray) -> np.ndarray:
    """``log(1 + exp(x))``, as ``logaddexp(x, 0)`` so large ``x`` does not overflow."""
    return np.logaddexp(x, np.float32(0))


def softsign(x: np.ndarray) -> np.ndarray:
    """``x / (1 + |x|)``."""
    return x / (np.float32(1) + np.abs(x))


def silu(x: np.ndarray) -> np.ndarray:
    """``x * sigmoid(x)`` (Keras' ``swish``)."""
    return x * sigmoid(x)


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU ``x * (1 + erf(x / sqrt(2))) / 2`` (Keras' activation default, approximate=False).

    NumPy has no erf, so it is evaluated in float64 with Abramowitz & Stegun 7.1.26 (absolute
    error below 1.5e-7), far inside float32 agreement of 1e-5 for outputs of order 1.
    """
    x64 = np.asarray(x, dtype=np.float64)
    return (0.5 * x64 * (1.0 + _erf(x64 / np.sqrt(2.0)))).astype(np.float32)


def exponential(x: np.ndarray) -> np.ndarray:
    """``exp(x)``."""
    return np.exp(x)


def _erf(z: np.ndarray) -> np.ndarray:
    """erf in float64 (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7)."""
    sign = np.sign(z)
    a = np.abs(z)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": linear,
    "relu": relu,
    "relu6": relu6,
    "leaky_relu": leaky_relu,
    "tanh": tanh,
    "sigmoid": sigmoid,
    "hard_sigmoid": hard_sigmoid,
    "hard_sigmoid_keras2": hard_sigmoid_keras2,
    "hard_silu": hard_silu,
    "hard_swish": hard_silu,
    "softmax": softmax,
    "elu": elu,
    "selu": selu,
    "softplus": softplus,
    "softsign": softsign,
    "silu": silu,
    "swish": silu,
    "gelu": gelu,
    "exponential": exponential,
}


def activation(x: np.ndarray, name: str) -> np.ndarray:
    """Apply the Keras activation called ``name`` to float32 ``x`` (any shape, batch first).

    Args:
        x: float32 array.
        name: a Keras activation name (see ``ACTIVATIONS``), e.g. ``'tanh'``.

    Returns:
        float32 array of ``x``'s shape.

    Raises:
        SpecError: ``name`` is not a supported activation.
    """
    try:
        fn = ACTIVATIONS[name]
    except KeyError:
        raise SpecError(f"activation {name!r} is not supported. Use one of {', '.join(ACTIVATIONS)}") from None
    return fn(np.asarray(x, dtype=np.float32))
