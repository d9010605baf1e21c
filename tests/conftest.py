"""Shared fixtures and tool gates.

A test that needs a heavy tool (Keras, a cross compiler, LibreOffice, nnabla, full MNIST) calls a
gate below. Locally a missing tool skips the test with the reason; in CI, where
LAYERLAB_REQUIRE_TOOLS=1, a missing tool fails it, so a skipped test is never counted as passing.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

# Tests that load tf_keras in-process import TensorFlow, which imports Keras 3 on its default
# (TensorFlow) backend unless told otherwise; layerlab's import_keras chooses JAX only when it is
# the first to import Keras. Choose JAX here, before any test file imports anything.
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LAYERLAB_SHARED", REPO.parent / "shared"))
STRICT = os.environ.get("LAYERLAB_REQUIRE_TOOLS") == "1"


def _missing(reason: str):
    if STRICT:
        pytest.fail(f"LAYERLAB_REQUIRE_TOOLS=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str) -> str:
    """Path of executable ``name``; skip (or fail in CI) when it is not on PATH."""
    path = shutil.which(name)
    if path is None:
        _missing(f"'{name}' is not on PATH")
    return path


def require_module(name: str) -> None:
    """Skip (or fail in CI) when Python module ``name`` cannot be imported."""
    if importlib.util.find_spec(name) is None:
        _missing(f"Python module '{name}' is not installed")


def require_env(name: str) -> str:
    """Value of environment variable ``name`` naming an existing path; skip (or fail) otherwise."""
    value = os.environ.get(name)
    if not value or not Path(value).exists():
        _missing(f"${name} is not set to an existing path")
    return value


def require_path(path: Path) -> Path:
    if not path.exists():
        _missing(f"{path} does not exist")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ../shared folder beside the repository (real MNIST, Keras files, NNC files)."""
    return require_path(SHARED)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """Folder with the four full MNIST files: $LAYERLAB_DATA, else ../shared/data/mnist."""
    value = os.environ.get("LAYERLAB_DATA")
    return require_path(Path(value) if value else SHARED / "data" / "mnist")


@pytest.fixture(scope="session")
def keras():
    """Keras 3 on the JAX backend (runs channels_first on a CPU)."""
    require_module("keras")
    require_module("jax")
    from layerlab.keras_build import import_keras

    return import_keras()


def random_weights(spec, seed: int = 0) -> dict:
    """Seeded random weights for any spec, in Keras layouts, with outputs of order 1.

    Kernels are normal / sqrt(fan_in); BatchNormalization gamma and moving_variance, and
    Normalization's variance, are uniform in [0.5, 1.5] (positive); Normalization's count is a
    sample count; every other weight (biases, beta, moving_mean) is normal(0, 0.5).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    weights = {}
    for info in spec.infos:
        arrays = {}
        for name, shape in info.layer.weight_shapes(info.input_shapes[0]).items():
            if name.endswith("kernel"):  # kernel, depthwise_kernel, pointwise_kernel
                value = rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))
            elif name in ("gamma", "moving_variance", "variance"):
                value = rng.uniform(0.5, 1.5, shape)
            elif name == "count":
                value = np.full(shape, 100.0)
            else:
                value = rng.normal(0.0, 0.5, shape)
            arrays[name] = value.astype(np.float32)
        if arrays:
            weights[info.layer.name] = arrays
    return weights
