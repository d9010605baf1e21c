"""One Keras layer config (any Keras generation) -> one layerlab spec layer.

Dispatch is on the config's ``class_name``, never on the layer's name. Every converter reads
only the arguments that change what the layer computes at inference; training-only arguments
(regularizers, constraints, momentum's use, dropout's seed) are ignored.

Keras generations differ in a few places handled here:

* ``activation='hard_sigmoid'`` is ``clip(0.2 * x + 0.5, 0, 1)`` in Keras 1-2 (and tf_keras) but
  ``relu6(x + 3) / 6`` in Keras 3; a file written by Keras < 3 gets ``'hard_sigmoid_keras2'``.
* ``LeakyReLU`` calls its slope ``alpha`` in Keras 2 and ``negative_slope`` in Keras 3.
* ``data_format`` is missing from Keras 2.0-2.1 ``Flatten`` configs (they flatten in the stored
  order, i.e. channels_last behaviour); ``None`` means the Keras default, channels_last.
* ``BatchNormalization.axis`` may be a one-element list in tf.keras configs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from layerlab import spec as S
from layerlab.errors import UnsupportedLayerError
from layerlab.registry import LOADER

KERAS2_HARD_SIGMOID = "hard_sigmoid_keras2"


@dataclass(frozen=True)
class Context:
    """What a converter needs besides the config.

    Attributes:
        name: the layer's name.
        where: the prefix of every message, e.g. "model.h5: layer 3 'conv2d_1' (Conv2D)".
        generation: the major Keras version that wrote the file (1, 2 or 3).
        data_format: what ``data_format: None`` means for this file.
    """

    name: str
    where: str
    generation: int
    data_format: str = S.CHANNELS_LAST
    module: str = ""  # Keras 3's module of the class, e.g. 'keras.layers' or 'keras.src.ops.numpy'


def _unsupported(ctx: Context, what: str, fix: str) -> UnsupportedLayerError:
    return UnsupportedLayerError(f"{ctx.where}: {what}. {fix}")


def activation_name(value: Any, ctx: Context) -> str:
    """The spec activation for a Keras ``activation`` argument (a name or a serialized function)."""
    if value is None:
        return "linear"
    if isinstance(value, dict):
        # Keras 3 may serialize a built-in as {"class_name": "function", "config": "relu", ...}.
        inner = value.get("config")
        if value.get("class_name") in ("function", "builtin_function") and isinstance(inner, str):
            value = inner
        else:
            raise _unsupported(
                ctx, f"activation {value.get('class_name', value)!r} is a custom object, not a built-in Keras activation",
                f"Use one of {', '.join(S.ACTIVATIONS)}",
            )
    name = str(value)
    if name == "hard_sigmoid" and ctx.generation < 3:
        if KERAS2_HARD_SIGMOID not in S.ACTIVATIONS:
            raise _unsupported(
                ctx, "activation 'hard_sigmoid' of a Keras 2 file is clip(0.2 * x + 0.5, 0, 1), not Keras 3's "
                "relu6(x + 3) / 6, and this layerlab has no name for it", "Update layerlab",
            )
        return KERAS2_HARD_SIGMOID
    if name not in S.ACTIVATIONS:
        raise _unsupported(ctx, f"activation {name!r} is not supported", f"Supported: {', '.join(S.ACTIVATIONS)}")
    return name


_VARIANCE_SCALING = {
    # (scale, mode, distribution) -> name; Keras 2.0-2.2 wrote 'normal' for the truncated normal.
    (1.0, "fan_avg", "uniform"): "glorot_uniform",
    (1.0, "fan_avg", "truncated_normal"): "glorot_normal",
    (1.0, "fan_avg", "normal"): "glorot_normal",
    (2.0, "fan_in", "uniform"): "he_uniform",
    (2.0, "fan_in", "truncated_normal"): "he_normal",
    (2.0, "fan_in", "normal"): "he_normal",
    (1.0, "fan_in", "uniform"): "lecun_uniform",
    (1.0, "fan_in", "truncated_normal"): "lecun_normal",
    (1.0, "fan_in", "normal"): "lecun_normal",
    # NNC's Glorot (SEED_NETWORK.md): the untruncated normal with the Glorot variance.
    (1.0, "fan_avg", "untruncated_normal"): "nnc_glorot_normal",
}
_PLAIN_INITIALIZERS = {
    "Zeros": "zeros", "Ones": "ones", "GlorotUniform": "glorot_uniform", "GlorotNormal": "glorot_normal",
    "HeUniform": "he_uniform", "HeNormal": "he_normal", "LecunUniform": "lecun_uniform",
    "LecunNormal": "lecun_normal",
}
# Initializers whose name alone says nothing unless their parameters are Keras' defaults.
_DEFAULTED_INITIALIZERS = {
    "RandomNormal": ("random_normal", {"mean": 0.0, "stddev": 0.05}),
    "RandomUniform": ("random_uniform", {"minval": -0.05, "maxval": 0.05}),
    "TruncatedNormal": ("truncated_normal", {"mean": 0.0, "stddev": 0.05}),
    "Orthogonal": ("orthogonal", {"gain": 1.0}),
}


def initializer_name(value: Any) -> str | None:
    """The spec initializer for a Keras initializer config; None when it has no spec name.

    Initializers only matter for training a fresh copy; a loaded model keeps its weights.
    """
    if isinstance(value, str):
        return value if value in S.INITIALIZERS else None
    if not isinstance(value, dict):
        return None
    cls = value.get("class_name")
    cfg = value.get("config") or {}
    if cls in _PLAIN_INITIALIZERS:
        return _PLAIN_INITIALIZERS[cls]
    if cls == "VarianceScaling":
        key = (_number(cfg.get("scale", 1.0)), cfg.get("mode"), cfg.get("distribution"))
        return _VARIANCE_SCALING.get(key)
    if cls == "Constant" and _number(cfg.get("value")) in (0.0, 1.0):
        return "zeros" if _number(cfg.get("value")) == 0.0 else "ones"
    if cls in _DEFAULTED_INITIALIZERS:
        name, defaults = _DEFAULTED_INITIALIZERS[cls]
        if all(_close(cfg.get(k, v), v) for k, v in defaults.items()):
            return name
    return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _close(value: Any, target: float) -> bool:
    number = _number(value)
    # Keras 2 stored float32 values as doubles (0.05 -> 0.05000000074505806).
    return number is not None and math.isclose(number, target, rel_tol=1e-6, abs_tol=1e-9)


def _pair(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


CONVERTERS: dict[str, Callable[[dict, Context], S.Layer]] = {}


def _keras(cls: type[S.Layer], *class_names: str, note: str = ""):
    """Register a converter from these Keras class names to spec class ``cls`` (LOADER table)."""
    def register(converter):
        for name in class_names or (cls.type,):
            CONVERTERS[name] = converter
        if cls not in LOADER.handlers:
            LOADER.register(cls, converter, note=note)
        return converter

    return register


# Keras 1 wrote its own argument names (``nb_filter``, ``border_mode``, ``subsample``,
# ``dim_ordering``...) and 'th' / 'tf' for data formats.
_KERAS1_FORMATS = {"th": S.CHANNELS_FIRST, "tf": S.CHANNELS_LAST, "default": None}


def _data_format(cfg: dict, ctx: Context) -> str:
    value = cfg.get("data_format")
    if value is None and "dim_ordering" in cfg:
        value = _KERAS1_FORMATS.get(cfg["dim_ordering"], cfg["dim_ordering"])
    return value or ctx.data_format


def _conv_common(cfg: dict, ctx: Context, rank: int) -> dict:
    if cfg.get("groups", 1) not in (1, None):
        raise _unsupported(ctx, f"groups={cfg['groups']} (grouped convolution) is not supported", "Use groups=1")
    if cfg.get("lora_rank"):
        raise _unsupported(ctx, f"lora_rank={cfg['lora_rank']} is not supported", "Merge the LoRA weights first")
    if "kernel_size" in cfg:
        kernel_size = _pair(cfg["kernel_size"])
    elif rank == 2:  # Keras 1
        kernel_size = (cfg["nb_row"], cfg["nb_col"])
    else:
        kernel_size = (cfg["filter_length"],)
    ones = (1,) * rank
    strides = cfg.get("strides", cfg.get("subsample", cfg.get("subsample_length", ones)))
    dilation = cfg.get("dilation_rate", cfg.get("atrous_rate", ones))
    return dict(
        name=ctx.name, kernel_size=kernel_size, strides=_pair(strides), padding=cfg.get("padding", cfg.get("border_mode", "valid")),
        data_format=_data_format(cfg, ctx), dilation_rate=_pair(dilation),
        activation=activation_name(cfg.get("activation"), ctx), use_bias=bool(cfg.get("use_bias", cfg.get("bias", True))),
        bias_initializer=initializer_name(cfg.get("bias_initializer")),
    )


@_keras(S.Conv2D, "Conv2D", "Convolution2D")
def _conv2d(cfg: dict, ctx: Context) -> S.Layer:
    return S.Conv2D(filters=cfg["filters"] if "filters" in cfg else cfg["nb_filter"], **_conv_common(cfg, ctx, 2),
                    kernel_initializer=initializer_name(cfg.get("kernel_initializer", cfg.get("init"))))


@_keras(S.Conv1D, "Conv1D", "Convolution1D")
def _conv1d(cfg: dict, ctx: Context) -> S.Layer:
    return S.Conv1D(filters=cfg["filters"] if "filters" in cfg else cfg["nb_filter"], **_conv_common(cfg, ctx, 1),
                    kernel_initializer=initializer_name(cfg.get("kernel_initializer", cfg.get("init"))))


@_keras(S.DepthwiseConv2D)
def _depthwise_conv2d(cfg: dict, ctx: Context) -> S.Layer:
    return S.DepthwiseConv2D(depth_multiplier=int(cfg.get("depth_multiplier", 1)), **_conv_common(cfg, ctx, 2),
                             depthwise_initializer=initializer_name(cfg.get("depthwise_initializer")))


@_keras(S.SeparableConv2D, "SeparableConv2D", "SeparableConvolution2D")
def _separable_conv2d(cfg: dict, ctx: Context) -> S.Layer:
    return S.SeparableConv2D(
        filters=cfg["filters"], depth_multiplier=int(cfg.get("depth_multiplier", 1)), **_conv_common(cfg, ctx, 2),
        depthwise_initializer=initializer_name(cfg.get("depthwise_initializer")),
        pointwise_initializer=initializer_name(cfg.get("pointwise_initializer")),
    )


def _pooling(kind: type[S.Layer], *names: str):
    rank = kind.rank

    @_keras(kind, *names)
    def convert(cfg: dict, ctx: Context) -> S.Layer:
        default = (2,) * rank
        size = cfg.get("pool_size", cfg.get("pool_length", default))
        strides = cfg.get("strides", cfg.get("stride"))
        return kind(
            name=ctx.name, pool_size=_pair(size), strides=_pair(strides),
            padding=cfg.get("padding", cfg.get("border_mode", "valid")), data_format=_data_format(cfg, ctx),
        )

    return convert


_pooling(S.MaxPooling2D, "MaxPooling2D", "MaxPool2D")
_pooling(S.AveragePooling2D, "AveragePooling2D", "AvgPool2D")
_pooling(S.MaxPooling1D, "MaxPooling1D", "MaxPool1D")
_pooling(S.AveragePooling1D, "AveragePooling1D", "AvgPool1D")


def _global_pooling(kind: type[S.Layer], *names: str):
    @_keras(kind, *names)
    def convert(cfg: dict, ctx: Context) -> S.Layer:
        return kind(name=ctx.name, data_format=_data_format(cfg, ctx), keepdims=bool(cfg.get("keepdims", False)))

    return convert


_global_pooling(S.GlobalAveragePooling2D, "GlobalAveragePooling2D", "GlobalAvgPool2D")
_global_pooling(S.GlobalMaxPooling2D, "GlobalMaxPooling2D", "GlobalMaxPool2D")
_global_pooling(S.GlobalAveragePooling1D, "GlobalAveragePooling1D", "GlobalAvgPool1D")
_global_pooling(S.GlobalMaxPooling1D, "GlobalMaxPooling1D", "GlobalMaxPool1D")


def _sides(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_pair(p) for p in value)
    return value


@_keras(S.ZeroPadding2D)
def _zero_padding2d(cfg: dict, ctx: Context) -> S.Layer:
    return S.ZeroPadding2D(name=ctx.name, padding=_sides(cfg.get("padding", ((1, 1), (1, 1)))), data_format=_data_format(cfg, ctx))


@_keras(S.ZeroPadding1D)
def _zero_padding1d(cfg: dict, ctx: Context) -> S.Layer:
    return S.ZeroPadding1D(name=ctx.name, padding=_sides(cfg.get("padding", 1)), data_format=_data_format(cfg, ctx))


@_keras(S.Cropping2D)
def _cropping2d(cfg: dict, ctx: Context) -> S.Layer:
    return S.Cropping2D(name=ctx.name, cropping=_sides(cfg.get("cropping", ((0, 0), (0, 0)))), data_format=_data_format(cfg, ctx))


@_keras(S.UpSampling2D)
def _up_sampling2d(cfg: dict, ctx: Context) -> S.Layer:
    interpolation = cfg.get("interpolation", "nearest")
    if interpolation != "nearest":
        raise _unsupported(ctx, f"UpSampling2D(interpolation={interpolation!r}) is not supported",
                           "Use interpolation='nearest'")
    return S.UpSampling2D(name=ctx.name, size=_pair(cfg.get("size", (2, 2))), data_format=_data_format(cfg, ctx))


@_keras(S.Permute)
def _permute(cfg: dict, ctx: Context) -> S.Layer:
    return S.Permute(name=ctx.name, dims=tuple(cfg["dims"]))


@_keras(S.Activation)
def _activation(cfg: dict, ctx: Context) -> S.Layer:
    return S.Activation(name=ctx.name, activation=activation_name(cfg.get("activation"), ctx))


@_keras(S.ReLU)
def _relu(cfg: dict, ctx: Context) -> S.Layer:
    return S.ReLU(name=ctx.name, max_value=_number(cfg.get("max_value")),
                  negative_slope=_number(cfg.get("negative_slope", 0.0)) or 0.0,
                  threshold=_number(cfg.get("threshold", 0.0)) or 0.0)


@_keras(S.ReLU, "LeakyReLU")
def _leaky_relu(cfg: dict, ctx: Context) -> S.Layer:
    slope = cfg.get("negative_slope", cfg.get("alpha", 0.3))
    # The spec's 'leaky_relu' is keras.activations.leaky_relu, whose slope is fixed at 0.2;
    # any other slope is ReLU(negative_slope=slope), the same function.
    if _close(slope, 0.2):
        return S.Activation(name=ctx.name, activation="leaky_relu")
    return S.ReLU(name=ctx.name, negative_slope=_number(slope))


@_keras(S.PReLU)
def _prelu(cfg: dict, ctx: Context) -> S.Layer:
    return S.PReLU(name=ctx.name, shared_axes=tuple(cfg.get("shared_axes") or ()),
                   alpha_initializer=initializer_name(cfg.get("alpha_initializer")))


@_keras(S.Activation, "Softmax")
def _softmax(cfg: dict, ctx: Context) -> S.Layer:
    axis = cfg.get("axis", -1)
    if axis not in (-1, [-1]):
        raise _unsupported(ctx, f"Softmax(axis={axis}) is not supported", "Use axis=-1")
    return S.Activation(name=ctx.name, activation="softmax")


@_keras(S.Activation, "ELU")
def _elu(cfg: dict, ctx: Context) -> S.Layer:
    if not _close(cfg.get("alpha", 1.0), 1.0):
        raise _unsupported(ctx, f"ELU(alpha={cfg.get('alpha')}) is not supported", "Use alpha=1.0")
    return S.Activation(name=ctx.name, activation="elu")


@_keras(S.Flatten)
def _flatten(cfg: dict, ctx: Context) -> S.Layer:
    return S.Flatten(name=ctx.name, data_format=_data_format(cfg, ctx))


@_keras(S.Dense)
def _dense(cfg: dict, ctx: Context) -> S.Layer:
    if cfg.get("lora_rank"):
        raise _unsupported(ctx, f"lora_rank={cfg['lora_rank']} is not supported", "Merge the LoRA weights first")
    return S.Dense(
        name=ctx.name, units=cfg["units"] if "units" in cfg else cfg["output_dim"],
        activation=activation_name(cfg.get("activation"), ctx),
        use_bias=bool(cfg.get("use_bias", cfg.get("bias", True))),
        kernel_initializer=initializer_name(cfg.get("kernel_initializer", cfg.get("init"))),
        bias_initializer=initializer_name(cfg.get("bias_initializer")),
    )


@_keras(S.Dropout, "Dropout", "SpatialDropout1D", "SpatialDropout2D")
def _dropout(cfg: dict, ctx: Context) -> S.Layer:
    return S.Dropout(name=ctx.name, rate=float(cfg.get("rate", cfg.get("p", 0.5))))


@_keras(S.BatchNormalization)
def _batch_normalization(cfg: dict, ctx: Context) -> S.Layer:
    axis = cfg.get("axis", -1)
    if isinstance(axis, list):
        if len(axis) != 1:
            raise _unsupported(ctx, f"BatchNormalization over several axes {axis} is not supported", "Normalise one axis")
        axis = axis[0]
    if cfg.get("renorm"):
        raise _unsupported(ctx, "BatchNormalization(renorm=True) is not supported", "Use renorm=False")
    if cfg.get("mode", 0) not in (0, None):
        raise _unsupported(ctx, f"Keras 1 BatchNormalization(mode={cfg['mode']}) is not supported", "Use mode=0")
    return S.BatchNormalization(
        name=ctx.name, axis=int(axis), epsilon=float(cfg.get("epsilon", 1e-3)),
        momentum=float(cfg.get("momentum", 0.99)), center=bool(cfg.get("center", True)),
        scale=bool(cfg.get("scale", True)),
    )


@_keras(S.Normalization)
def _normalization(cfg: dict, ctx: Context) -> S.Layer:
    axis = cfg.get("axis", -1)
    if isinstance(axis, (list, tuple)) and len(axis) == 1:
        axis = axis[0]
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise _unsupported(ctx, f"Normalization over axis={axis!r} (several axes, or none: one mean for all) is not "
                           "supported", "Use axis=-1, one mean and variance per channel")
    stats = [cfg.get("mean"), cfg.get("variance")]
    for i, value in enumerate(stats):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise _unsupported(ctx, f"Normalization with one number as {('mean', 'variance')[i]} ({value!r}) is not "
                               "supported", "Give one value per channel, or adapt the layer")
        if isinstance(value, list) and value and isinstance(value[0], list):  # an array written as nested lists
            stats[i] = [v for row in value for v in (row if isinstance(row, list) else [row])]
    return S.Normalization(name=ctx.name, axis=axis, invert=bool(cfg.get("invert", False)),
                           mean=None if stats[0] is None else tuple(stats[0]),
                           variance=None if stats[1] is None else tuple(stats[1]))


@_keras(S.Reshape)
def _reshape(cfg: dict, ctx: Context) -> S.Layer:
    return S.Reshape(name=ctx.name, target_shape=tuple(cfg["target_shape"]))


def _scalar(value: Any, arg: str, ctx: Context) -> float:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    number = _number(value)
    if number is None:
        raise _unsupported(ctx, f"Rescaling {arg}={value!r} is not a single number", f"Use one number for {arg}")
    return number


@_keras(S.Rescaling)
def _rescaling(cfg: dict, ctx: Context) -> S.Layer:
    return S.Rescaling(name=ctx.name, scale=_scalar(cfg.get("scale", 1.0), "scale", ctx),
                       offset=_scalar(cfg.get("offset", 0.0), "offset", ctx))


def _merge(kind: type[S.Layer]):
    @_keras(kind)
    def convert(cfg: dict, ctx: Context) -> S.Layer:
        return kind(name=ctx.name)

    return convert


for _kind in (S.Add, S.Subtract, S.Multiply, S.Average, S.Maximum, S.Minimum):
    _merge(_kind)


@_keras(S.Concatenate)
def _concatenate(cfg: dict, ctx: Context) -> S.Layer:
    return S.Concatenate(name=ctx.name, axis=int(cfg.get("axis", -1)))


INPUT_LAYER = "InputLayer"
SUPPORTED = (INPUT_LAYER, *CONVERTERS)
# Layers that hold Python code (Lambda) or traced TensorFlow calls: never run from a file.
CODE_LAYERS = ("Lambda", "TFOpLambda", "SlicingOpLambda")
MODEL_CLASSES = ("Sequential", "Functional", "Model")


def convert(class_name: str, cfg: dict, ctx: Context) -> S.Layer:
    """The spec layer for a Keras layer config.

    Raises:
        UnsupportedLayerError: a Lambda layer, a nested model, an unknown layer type, or an
            argument with no spec equivalent (the message names the layer and the fix).
        SpecError: the arguments are invalid (raised by the spec's own validation).
    """
    if class_name == "TFOpLambda":
        raise _unsupported(
            ctx, f"TFOpLambda '{cfg.get('function')}' (a TensorFlow call in the model) has no layerlab equivalent; "
            "of such calls layerlab reads only arithmetic with one number (x + c, x - c, c - x, x * c, x / c)",
            "Rebuild the model with built-in layers (e.g. Rescaling, Activation, Reshape)",
        )
    if class_name in CODE_LAYERS:
        raise _unsupported(
            ctx, f"{class_name} layers hold Python code (a serialized function), and layerlab never executes code "
            "from a model file", "Rebuild the model with built-in layers (e.g. Rescaling, Activation, Reshape)",
        )
    if ctx.module.startswith("keras.src.ops"):
        raise _unsupported(
            ctx, f"the keras.ops call '{class_name}' has no layerlab equivalent; of such calls layerlab reads only "
            "arithmetic with one number (x + c, x - c, c - x, x * c, x / c)",
            "Rebuild the model with built-in layers (e.g. Add, Multiply, Rescaling)",
        )
    if class_name in MODEL_CLASSES:
        raise _unsupported(ctx, "a model nested inside a model is not supported",
                           "Rebuild it as one flat Sequential or functional model")
    converter = CONVERTERS.get(class_name)
    if converter is None:
        raise _unsupported(ctx, f"layer type '{class_name}' is not supported", f"Supported Keras layers: {', '.join(SUPPORTED)}")
    try:
        return converter(cfg, ctx)
    except KeyError as exc:
        raise _unsupported(ctx, f"its config has no {exc} argument", "Save the model with Keras 2 or 3") from None
