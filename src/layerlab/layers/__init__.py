"""Every layer type layerlab knows, declared once, by family.

    conv           Conv2D, Conv1D, DepthwiseConv2D, SeparableConv2D
    pooling        Max/AveragePooling1D/2D, Global{Average,Max}Pooling1D/2D
    dense          Dense
    normalization  BatchNormalization (and its one folding rule, ``scale_shift``)
    merge          Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate
    reshape        Flatten, Reshape, Permute, ZeroPadding1D/2D, Cropping2D, UpSampling2D
    activation     Activation, ReLU, PReLU, Rescaling, Dropout

A family module declares each type's arguments, validation, output shape, weights, parameter and
MAC counts. ``LAYER_TYPES`` maps the Keras class name to the spec class; each backend (engine,
Keras build, trainer, C, Excel, NNC) keeps its own table of handlers over these classes in
``layerlab.registry``, and declines the rest with a reason.
"""

from __future__ import annotations

from layerlab.layers import activation, conv, dense, merge, normalization, pooling, reshape
from layerlab.layers.base import Layer

FAMILIES = {
    "conv": conv, "pooling": pooling, "dense": dense, "normalization": normalization,
    "merge": merge, "reshape": reshape, "activation": activation,
}
LAYER_TYPES: dict[str, type[Layer]] = {cls.type: cls for module in FAMILIES.values() for cls in module.TYPES}

__all__ = ["FAMILIES", "LAYER_TYPES", "Layer"]
