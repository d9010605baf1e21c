"""Datasets: the MNIST loader, its IDX reader and downloader, and input preparation.

    from layerlab.data import load_mnist, scale, one_hot
    data = load_mnist()                          # --data-dir, $LAYERLAB_DATA, cache, then download
    x_train = scale(data.x_train, "channels_first")   # (60000, 1, 28, 28) float32
    y_train = one_hot(data.y_train)                   # (60000, 10) float32

Modules: ``idx`` (IDX format), ``download`` (mirrors + MD5), ``mnist`` (lookup and loading),
``prepare`` (scaling and one-hot). numpy and the standard library only.
"""

from __future__ import annotations

from layerlab.data.download import MIRRORS, download_file
from layerlab.data.idx import read_idx, write_idx
from layerlab.data.mnist import MNIST_FILES, MnistData, cache_dir, find_mnist, load_mnist, search_path
from layerlab.data.prepare import input_for_model, one_hot, scale

__all__ = [
    "MIRRORS",
    "MNIST_FILES",
    "MnistData",
    "cache_dir",
    "download_file",
    "find_mnist",
    "input_for_model",
    "load_mnist",
    "one_hot",
    "read_idx",
    "scale",
    "search_path",
    "write_idx",
]
