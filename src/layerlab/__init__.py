"""layerlab: specify, train, probe, load, export and convert small Keras CNNs.

The core (spec, geometry, model files, engine, exporters) needs only numpy and h5py and never
imports TensorFlow or Keras; Keras is imported lazily by the features that need it.

    import layerlab
    m = layerlab.load("model.h5")        # numpy + h5py only
    m.predict(x); m.trace(x); m.spec
    layerlab.probe(layer, array)         # run one layer and explain it
"""

from __future__ import annotations

from layerlab._version import __version__

__all__ = ["ProbeResult", "__version__", "load", "probe"]


def load(path, architecture=None):
    """Load a Keras model file (.h5, .keras, .weights.h5 + JSON) as a ``Network``.

    See ``layerlab.modelfile.load``.
    """
    from layerlab.modelfile import load as _load

    return _load(path, architecture=architecture)


def __getattr__(name: str):
    # ``probe`` and ``ProbeResult`` load on first use (PEP 562): ``import layerlab`` then costs
    # no numpy. They live in ``layerlab.probing``, so that importing that module never replaces
    # the function ``layerlab.probe`` with a submodule of the same name.
    if name in ("probe", "ProbeResult"):
        from layerlab import probing

        return getattr(probing, name)
    raise AttributeError(f"module 'layerlab' has no attribute {name!r}")
