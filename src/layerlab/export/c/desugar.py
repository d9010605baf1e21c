"""Rewrite composite and 1-D layers as the 2-D layers the C lowering knows, with the same values.

* SeparableConv2D is what Keras computes it as: a DepthwiseConv2D without bias, then a 1x1
  Conv2D with the bias and the activation.
* The 1-D layers (Conv1D, Max/AveragePooling1D, GlobalAverage/MaxPooling1D, ZeroPadding1D) are
  their 2-D forms on an image of height 1: ``(steps, channels)`` is ``(1, steps, channels)`` (or
  ``(channels, steps)`` is ``(channels, 1, steps)``), the same values in the same order, so the
  Reshapes around them are views that cost nothing. A 'causal' Conv1D is a ZeroPadding2D of
  ``dilation * (kernel - 1)`` steps before, then a 'valid' conv (Keras' definition), and the
  padding folds into the conv as any ZeroPadding2D does.

* Normalization (Keras' preprocessing layer) is a BatchNormalization: ``(x - mean) / spread``
  with ``spread = max(sqrt(variance), 1e-7)`` as Keras computes it becomes ``x * gamma + beta``
  with ``gamma = 1 / spread`` and ``beta = -mean / spread`` (moving mean 0, moving variance 1 and
  an epsilon that float32 loses in ``1 + epsilon``, so ``gamma`` is used as it is); ``invert``'s
  ``mean + x * spread`` is ``gamma = spread`` and ``beta = mean``. The same values to float32
  rounding (a product and a sum where Keras subtracts and divides), which the C export's own check
  against the engine covers.

Every rewritten layer keeps its name on its last part, so the layers after it read it unchanged;
the parts before get new names (``<name>_depthwise``, ``<name>_2d``, ...). ``desugar`` returns
the new spec and its weights, which the engine computes exactly as the original.
"""

from __future__ import annotations

import numpy as np

from layerlab import spec as S

CHANNELS_FIRST = S.CHANNELS_FIRST
ONE_D = (S.Conv1D, S.MaxPooling1D, S.AveragePooling1D, S.GlobalAveragePooling1D, S.GlobalMaxPooling1D, S.ZeroPadding1D)
COMPOSITE = (S.SeparableConv2D, S.Normalization, *ONE_D)
_LOST_EPSILON = 1e-12  # float32(1) + float32(1e-12) == 1: the BatchNormalization divides by sqrt(1) exactly


def desugar(spec: S.Model, weights) -> tuple[S.Model, dict]:
    """``spec`` with every ``COMPOSITE`` layer rewritten (see the module docstring), and its weights."""
    if not any(isinstance(info.layer, COMPOSITE) for info in spec.infos):
        return spec, dict(weights)
    taken = {layer.name for layer in spec.layers}

    def fresh(base: str) -> str:
        name, k = base, 2
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        return name

    layers: list[S.Layer] = []
    out: dict = {}
    for info in spec.infos:
        layer = info.layer
        given = weights.get(layer.name, {})
        if isinstance(layer, S.SeparableConv2D):
            depthwise = S.DepthwiseConv2D(
                name=fresh(f"{layer.name}_depthwise"), inputs=layer.inputs, kernel_size=layer.kernel_size, strides=layer.strides,
                padding=layer.padding, dilation_rate=layer.dilation_rate, data_format=layer.data_format,
                depth_multiplier=layer.depth_multiplier, use_bias=False, activation="linear")
            pointwise = S.Conv2D(name=layer.name, filters=layer.filters, kernel_size=(1, 1), data_format=layer.data_format,
                                 use_bias=layer.use_bias, activation=layer.activation)
            layers += [depthwise, pointwise]
            out[depthwise.name] = {"kernel": given["depthwise_kernel"]}
            out[pointwise.name] = {"kernel": given["pointwise_kernel"], **({"bias": given["bias"]} if "bias" in given else {})}
        elif isinstance(layer, S.Normalization):
            layers.append(S.BatchNormalization(name=layer.name, inputs=layer.inputs, axis=layer.axis, epsilon=_LOST_EPSILON))
            out[layer.name] = _normalization_as_batchnorm(layer, given)
        elif isinstance(layer, ONE_D):
            layers += _one_d(layer, info, given, fresh, out)
        else:
            layers.append(layer)
            if given:
                out[layer.name] = given
    return S.Model(name=spec.name, input_shape=spec.input_shape, layers=tuple(layers)), out


def _normalization_as_batchnorm(layer: S.Normalization, given: dict) -> dict:
    """The BatchNormalization weights of a Normalization (see the module docstring)."""
    from layerlab.layers.normalization import normalization_spread

    mean, variance = layer.statistics(given)
    spread = normalization_spread(variance).astype(np.float64)
    gamma, beta = (spread, mean.astype(np.float64)) if layer.invert else (1.0 / spread, -mean / spread)
    ones = np.ones_like(spread)
    return {"gamma": gamma.astype(np.float32), "beta": beta.astype(np.float32),
            "moving_mean": np.zeros_like(ones, np.float32), "moving_variance": ones.astype(np.float32)}


def _image_shape(shape: tuple[int, ...], data_format: str) -> tuple[int, int, int]:
    """``(steps, channels)`` -> ``(1, steps, channels)``; channels_first ``(channels, steps)`` -> ``(channels, 1, steps)``."""
    return (shape[0], 1, shape[1]) if data_format == CHANNELS_FIRST else (1, *shape)


def _one_d(layer, info: S.LayerInfo, given: dict, fresh, out: dict) -> list[S.Layer]:
    df = layer.data_format
    as_2d = S.Reshape(name=fresh(f"{layer.name}_as_2d"), inputs=layer.inputs, target_shape=_image_shape(info.input_shapes[0], df))
    parts: list[S.Layer] = [as_2d]
    if isinstance(layer, S.Conv1D):
        (kernel,), (stride,), (dilation,) = layer.kernel_size, layer.strides, layer.dilation_rate
        padding = layer.padding
        if padding == "causal":  # Keras: dilation * (kernel - 1) zeros before the sequence, then 'valid'
            parts.append(S.ZeroPadding2D(name=fresh(f"{layer.name}_causal"), padding=((0, 0), (dilation * (kernel - 1), 0)), data_format=df))
            padding = "valid"
        core = S.Conv2D(name=fresh(f"{layer.name}_2d"), filters=layer.filters, kernel_size=(1, kernel), strides=(1, stride),
                        dilation_rate=(1, dilation), padding=padding, data_format=df, use_bias=layer.use_bias, activation=layer.activation)
        out[core.name] = {"kernel": np.asarray(given["kernel"])[None], **({"bias": given["bias"]} if "bias" in given else {})}
    elif isinstance(layer, (S.MaxPooling1D, S.AveragePooling1D)):
        pool = S.MaxPooling2D if isinstance(layer, S.MaxPooling1D) else S.AveragePooling2D
        core = pool(name=fresh(f"{layer.name}_2d"), pool_size=(1, layer.pool_size[0]), strides=(1, layer.strides[0]),
                    padding=layer.padding, data_format=df)
    elif isinstance(layer, (S.GlobalAveragePooling1D, S.GlobalMaxPooling1D)):
        pool = S.GlobalAveragePooling2D if isinstance(layer, S.GlobalAveragePooling1D) else S.GlobalMaxPooling2D
        if not layer.keepdims:  # (channels,) either way: the 2-D layer is the result
            return [as_2d, pool(name=layer.name, data_format=df)]
        core = pool(name=fresh(f"{layer.name}_2d"), data_format=df, keepdims=True)
    else:  # ZeroPadding1D
        core = S.ZeroPadding2D(name=fresh(f"{layer.name}_2d"), padding=((0, 0), tuple(layer.padding)), data_format=df)
    return [*parts, core, S.Reshape(name=layer.name, target_shape=tuple(info.output_shape))]
