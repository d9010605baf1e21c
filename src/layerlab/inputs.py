"""Model inputs from files: .npy / .npz arrays of any input shape, or an image file.

``read_input(path, spec, scale)`` returns ``(N, *spec.input_shape)`` float32, divided by
``scale``:

* ``.npy``: one array. ``(N, *input_shape)`` is a batch, ``input_shape`` one sample; a shape
  that differs from those only by axes of size 1 (``(28, 28)`` for ``(28, 28, 1)``) is reshaped,
  and a model with a 1-D input takes samples of any shape of that size, flattened in row-major
  order (``x.reshape(n, -1)``, what an MNIST MLP is fed). Anything else is refused: reordering
  axes silently would be a wrong answer.
* ``.npz``: the array ``x`` (or the only array), with optional labels ``y`` (class indices, or
  one-hot rows) for ``evaluate``.
* ``.png`` / ``.jpg`` / ... (Pillow, which matplotlib brings): converted to grey or RGB as the
  model's channel count needs, resized to the model's height and width, laid out in its
  data_format. Pixels are 0..255 before ``scale``.

Arrays are read with ``allow_pickle=False`` (a file never runs code), and the size a file declares
is checked before anything is allocated.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from layerlab import limits
from layerlab import spec as S
from layerlab.errors import DataError, ShapeError

ARRAY_SUFFIXES = (".npy", ".npz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _data_format(spec: S.Model) -> str:
    return next((l.data_format for l in spec.layers if hasattr(l, "data_format")), S.CHANNELS_LAST)


def _declared_npy(path: Path) -> None:
    with open(path, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(handle)  # the header only: nothing allocated yet
        except ValueError as exc:
            raise DataError(f"{path}: not a .npy file ({exc}). Save the input with np.save") from None
    limits.check_bytes(math.prod(shape) * dtype.itemsize, str(path), f"an array of shape {shape} ({dtype})")


def _load_array(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    if path.suffix.lower() == ".npy":
        _declared_npy(path)
        try:
            return np.load(path, allow_pickle=False), None
        except (ValueError, OSError) as exc:
            raise DataError(f"{path}: cannot read the array ({exc}). Save it with np.save") from None
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path}: not a .npz archive ({exc}). Save it with np.savez(path, x=..., y=...)") from None
    with archive:
        limits.check_bytes(sum(info.file_size for info in archive.infolist()), str(path), "the archive's arrays")
    try:
        with np.load(path, allow_pickle=False) as data:
            names = list(data.files)
            key = "x" if "x" in names else names[0] if len(names) == 1 else None
            if key is None:
                raise DataError(f"{path}: holds arrays {names} but none called 'x'. Save the inputs as x=...")
            return data[key], (data["y"] if "y" in names else None)
    except ValueError as exc:
        raise DataError(f"{path}: cannot read the arrays ({exc}). Save them with np.savez") from None


def default_scale(path: str | Path) -> float:
    """What ``read_input`` divides by when no scale is given: 1 for arrays, 255 for image pixels."""
    return 1.0 if Path(path).suffix.lower() in ARRAY_SUFFIXES else 255.0


def pixel_scale(spec: S.Model, scale: float | None = None) -> float:
    """What image pixels (0..255) are divided by for this model: ``scale`` when given, else 1 when
    the model rescales its own input (a first Rescaling of 1/255: it takes raw pixels), else 255."""
    if scale is not None:
        return float(scale)
    first = spec.layers[0]
    if isinstance(first, S.Rescaling) and abs(first.scale * 255.0 - 1.0) < 1e-6:
        return 1.0
    return 255.0


def fit_to_model(x: np.ndarray, spec: S.Model, where: str) -> np.ndarray:
    """``x`` as ``(N, *spec.input_shape)``: a batch, one sample, or either with extra axes of size 1."""
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise ShapeError(f"{where}: dtype {x.dtype} is not numeric. Pass numbers")
    expected = tuple(spec.input_shape)
    squeezed = tuple(d for d in expected if d != 1)
    if tuple(x.shape) == expected:
        return x[None]
    if tuple(x.shape[1:]) == expected:
        return x
    if tuple(d for d in x.shape if d != 1) == squeezed and x.size == math.prod(expected):
        return x.reshape(1, *expected)  # one sample; only axes of size 1 differ
    if x.ndim >= 1 and tuple(d for d in x.shape[1:] if d != 1) == squeezed:
        return x.reshape(len(x), *expected)
    if len(expected) == 1 and x.ndim >= 1:  # a vector input: row-major flattening is the only reading
        if x.size == expected[0]:
            return x.reshape(1, expected[0])
        if x.ndim >= 2 and math.prod(x.shape[1:]) == expected[0]:
            return x.reshape(len(x), expected[0])
    raise ShapeError(
        f"{where}: array shape {tuple(x.shape)} does not fit the model input {expected} (as one sample or a batch "
        f"(N, {', '.join(map(str, expected))})). Save the array in the model's layout"
    )


def read_image(path: Path, spec: S.Model) -> np.ndarray:
    """An image file as one model input, pixels 0..255 (float32, not yet scaled)."""
    from layerlab.errors import require

    require("matplotlib", "plot", "reading image files")  # Pillow comes with matplotlib
    from PIL import Image, UnidentifiedImageError

    shape = tuple(spec.input_shape)
    data_format = _data_format(spec)
    if len(shape) == 3:
        h, w, c = (shape[1], shape[2], shape[0]) if data_format == S.CHANNELS_FIRST else shape
    elif len(shape) == 2:
        (h, w), c = shape, 1
    else:
        raise ShapeError(f"{path}: the model input {shape} is not an image; pass a .npy array instead")
    if c not in (1, 3):
        raise ShapeError(f"{path}: the model input has {c} channels; an image file gives 1 (grey) or 3 (RGB). "
                         "Pass a .npy array instead")
    try:
        with Image.open(path) as image:
            # decoding takes up to 4 bytes a pixel (RGBA): checked before PIL decodes anything
            limits.check_bytes(4 * image.width * image.height, str(path), f"a {image.width}x{image.height} image")
            image = image.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32)  # (h, w) or (h, w, 3)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: not an image file layerlab can read ({exc})") from None
    if c == 1:
        pixels = pixels[..., None]
    if len(shape) == 2:
        return pixels[..., 0][None]
    if data_format == S.CHANNELS_FIRST:
        pixels = pixels.transpose(2, 0, 1)  # HWC -> CHW
    return pixels[None]


def read_input(path: str | Path, spec: S.Model, scale: float | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Inputs (and labels, from a .npz ``y``) for ``spec`` from a file, divided by ``scale``.

    Args:
        path: a .npy / .npz file or an image file.
        spec: the model the inputs are for.
        scale: inputs are divided by it; default 255 for images (pixels), 1 for arrays.

    Returns:
        ``(x, y)``: x ``(N, *spec.input_shape)`` float32; y ``(N,)`` int class indices or None.

    Raises:
        DataError: the file is missing, unreadable or too large.
        ShapeError: its array does not fit the model input, or its labels do not fit its inputs.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--input {path}: no such file. Give a .npy, .npz or image file")
    suffix = path.suffix.lower()
    if suffix in ARRAY_SUFFIXES:
        raw, labels = _load_array(path)
        x = fit_to_model(raw, spec, str(path))
    elif suffix in IMAGE_SUFFIXES:
        x, labels = read_image(path, spec), None
    else:
        raise DataError(f"--input {path}: unknown file type '{suffix}'. Give a .npy, .npz or an image "
                        f"({', '.join(IMAGE_SUFFIXES)})")
    scale = default_scale(path) if scale is None else scale
    if not scale > 0 or not math.isfinite(scale):
        raise ShapeError(f"--scale {scale}: must be a positive number (inputs are divided by it)")
    x = x.astype(np.float32)
    if scale != 1:
        x /= np.float32(scale)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim == 2:  # one-hot rows
            labels = labels.argmax(axis=1)
        if labels.ndim != 1 or len(labels) != len(x) or not np.issubdtype(labels.dtype, np.number):
            raise ShapeError(f"{path}: labels y of shape {labels.shape} do not fit {len(x)} inputs. Save y as (N,) class indices")
        labels = labels.astype(np.int64)
    return x, labels
