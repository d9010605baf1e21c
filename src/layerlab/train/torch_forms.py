"""Which layer types the torch trainer builds as plain torch operations (``torch_train``).

Kept apart from ``torch_train`` so that the support matrix can be read without importing torch.
A network with any other layer trains with Keras' fit instead (``unsupported`` says why).
"""

from __future__ import annotations

from layerlab import spec as S
from layerlab.registry import TRAINER

TRAINER.register((
    S.Conv2D, S.MaxPooling2D, S.AveragePooling2D, S.ZeroPadding2D, S.Activation, S.Flatten, S.Dense, S.Dropout,
    S.Reshape, S.Rescaling, S.ReLU,
))
TRAINER.decline((S.BatchNormalization,), "it trains with Keras' fit (batch statistics and moving averages)")
TRAINER.decline(S.Normalization, "a preprocessing layer: adapt it in Keras (its statistics are not trained)")
TRAINER.decline((S.Add, S.Subtract, S.Multiply, S.Average, S.Maximum, S.Minimum, S.Concatenate),
                "graphs train with Keras' fit; the torch trainer runs chains")
TRAINER.decline((S.Conv1D, S.DepthwiseConv2D, S.SeparableConv2D, S.MaxPooling1D, S.AveragePooling1D,
                 S.GlobalAveragePooling2D, S.GlobalMaxPooling2D, S.GlobalAveragePooling1D, S.GlobalMaxPooling1D,
                 S.ZeroPadding1D, S.Cropping2D, S.UpSampling2D, S.Permute, S.PReLU),
                "it trains with Keras' fit (no torch form checked against Keras yet)")


def unsupported(model: S.Model) -> str | None:
    """None when ``model`` trains with the torch trainer, else why it trains with Keras' fit instead."""
    for layer in model.layers:
        if layer.inputs:
            return f"layer '{layer.name}' reads named inputs {list(layer.inputs)} (a graph, not a chain)"
        if not TRAINER.supports(type(layer)):
            return f"layer '{layer.name}' is a {layer.type}"
    return None
