"""Turn MNIST arrays into network inputs and targets, as the seed author did in Keras.

Example:
    x = scale(data.x_train, "channels_first")   # (N, 28, 28) uint8 -> (N, 1, 28, 28) float32 in [0, 1]
    y = one_hot(data.y_train)                   # (N,) uint8 -> (N, 10) float32, like keras.utils.to_categorical
"""

from __future__ import annotations

import numpy as np

from layerlab.errors import ShapeError, SpecError

DATA_FORMATS = ("channels_first", "channels_last")


def scale(x: np.ndarray, data_format: str = "channels_first") -> np.ndarray:
    """Pixels / 255 as float32, with a channel axis added for ``data_format``.

    Same values as the seed recipe's ``x.astype('float32') / 255.0``.

    Args:
        x: (N, H, W) integer pixels 0..255, e.g. ``MnistData.x_train``.
        data_format: ``'channels_first'`` gives (N, 1, H, W); ``'channels_last'`` gives (N, H, W, 1).

    Returns:
        float32 array in [0, 1], (N, 1, H, W) or (N, H, W, 1).

    Raises:
        SpecError: unknown ``data_format``.
        ShapeError: ``x`` is not 3-D, or not integer (already scaled pixels would be divided twice).
    """
    if data_format not in DATA_FORMATS:
        raise SpecError(
            f"scale: data_format={data_format!r} is not known, expected 'channels_first' or 'channels_last'."
        )
    x = np.asarray(x)
    if x.ndim != 3 or not np.issubdtype(x.dtype, np.integer):
        raise ShapeError(
            f"scale: x of shape {x.shape} and dtype {x.dtype}, expected integer pixels (N, H, W) such as MNIST's uint8 "
            f"(N, 28, 28). Fix: pass the unscaled images (a float array is probably scaled already)."
        )
    x = x.astype(np.float32) / np.float32(255.0)
    return x[:, np.newaxis] if data_format == "channels_first" else x[..., np.newaxis]  # (N,1,H,W) | (N,H,W,1)


def one_hot(y: np.ndarray, num_classes: int = 10) -> np.ndarray:
    """One-hot float32 targets, as ``keras.utils.to_categorical``.

    Args:
        y: (N,) integer labels in 0..num_classes-1.
        num_classes: number of classes (10 for MNIST).

    Returns:
        (N, num_classes) float32, 1.0 at each label and 0.0 elsewhere.

    Raises:
        ShapeError: ``y`` is not 1-D integer, or holds a label outside 0..num_classes-1.
    """
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ShapeError(f"one_hot: y of shape {y.shape} and dtype {y.dtype}, expected 1-D integer labels (N,).")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ShapeError(
            f"one_hot: labels range {int(y.min())}..{int(y.max())}, expected 0..{num_classes - 1}. "
            f"Fix: pass num_classes > {int(y.max())}, or check the labels."
        )
    out = np.zeros((y.size, num_classes), dtype=np.float32)  # (N, num_classes)
    out[np.arange(y.size), y] = 1.0
    return out


def input_for_model(pixels: np.ndarray, model, scale: float = 255.0) -> np.ndarray:
    """Grey images laid out as a model's input: ``pixels / scale`` in ``model.input_shape``.

    Args:
        pixels: one image (H, W) or a batch (N, H, W) of raw pixels (0..255).
        model: a ``layerlab.spec.Model``; its input_shape may be (1, H, W) (channels_first),
            (H, W, 1) (channels_last), (H, W) or (H * W,).
        scale: divide by this; 255 for models trained on pixels/255, 1 for raw pixels.

    Returns:
        float32 (N, *model.input_shape).

    Raises:
        ShapeError: the images do not fit the model's input.
    """
    x = np.asarray(pixels, dtype=np.float32)
    if x.ndim == 2:
        x = x[np.newaxis]  # (1, H, W)
    if x.ndim != 3:
        raise ShapeError(f"input_for_model: images of shape {x.shape}, expected (H, W) or (N, H, W)")
    if not scale or scale <= 0:
        raise ShapeError(f"input_for_model: scale={scale!r} must be a positive number (255 or 1)")
    target = tuple(model.input_shape)
    if int(np.prod(target)) != x.shape[1] * x.shape[2]:
        raise ShapeError(
            f"input_for_model: a {x.shape[1]}x{x.shape[2]} grey image does not fit model '{model.name}' "
            f"input {target}. Fix: give an input file of that shape (--input FILE.npy)"
        )
    return (x / np.float32(scale)).reshape((x.shape[0], *target))  # (N, *input_shape)
