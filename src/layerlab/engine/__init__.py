"""The NumPy reference engine: run a layerlab spec with Keras-layout weights, as Keras would.

    from layerlab import engine
    y = engine.run(spec, weights, x)              # final output, float32
    outs = engine.run(spec, weights, x, trace=True)  # {layer name: output}, in execution order
    y1 = engine.run_layer(layer, [x], {"kernel": k, "bias": b})

Modules:
    layers       one plain function per layer (the readable reference, tested against Keras)
    activations  Keras' activation functions
    runner       run_layer and the layer-by-layer runner (graphs with Add / Concatenate)
    fast         a plan per spec, run in chunks on worker threads (tested against layers and Keras)
    steps        the plan's steps: convolutions as row-batched matmuls on (H, C, W, N) views, pooling by clipped views

Only NumPy is imported here; never TensorFlow or Keras.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from layerlab.engine.activations import ACTIVATIONS, activation
from layerlab.engine.fast import Unsupported, run_fast
from layerlab.engine.layers import (
    add,
    average_pooling2d,
    batch_normalization,
    concatenate,
    conv2d,
    dense,
    dropout,
    flatten,
    max_pooling2d,
    rescaling,
    reshape,
    zero_padding2d,
)
from layerlab.engine.runner import check_model_input, run_layer, run_reference
from layerlab.spec import Model


def run(
    spec: Model,
    weights: Mapping[str, Mapping[str, np.ndarray]],
    x: np.ndarray,
    *,
    trace: bool = False,
    reference: bool = False,
) -> np.ndarray | dict[str, np.ndarray]:
    """Run a model on a batch, as Keras' ``model.predict`` would.

    Args:
        spec: the architecture.
        weights: layer name -> Keras weight name -> float32 array in Keras layout (see
            ``layerlab.network``); layers without weights may be absent.
        x: ``(batch, *spec.input_shape)`` in the model's own data_format; cast to float32.
        trace: return every layer's output instead of the final one.
        reference: use the plain per-layer functions even where the fast plan applies.

    Returns:
        The final output ``(batch, *spec.output_shape)`` float32, or with ``trace=True`` a dict
        layer name -> output, in execution order (always computed by the plain path, layer by
        layer).

    Raises:
        ShapeError: ``x`` is not ``(batch, *spec.input_shape)``.
    """
    x = check_model_input(spec, x)
    if trace or reference:
        return run_reference(spec, weights, x, trace=trace)
    try:
        out = run_fast(spec, weights, x)
    except Unsupported:
        return run_reference(spec, weights, x)
    except KeyError:  # a weight the plan needs is missing: the plain path says which, and where
        return run_reference(spec, weights, x)
    if out.shape != (len(x), *spec.output_shape):  # the plan and the spec disagree: a bug
        raise AssertionError(f"engine fast path: output {out.shape} for model '{spec.name}', spec says {spec.output_shape}")
    return out.copy() if np.may_share_memory(out, x) else out


__all__ = [
    "ACTIVATIONS", "activation", "add", "average_pooling2d", "batch_normalization", "concatenate",
    "conv2d", "dense", "dropout", "flatten", "max_pooling2d", "reshape", "rescaling", "run",
    "run_layer", "zero_padding2d",
]
