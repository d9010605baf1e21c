"""layerlab: specify, train, probe, load, export and convert small Keras CNNs.

The core (spec, geometry, model files, engine, exporters) needs only numpy and h5py and never
imports TensorFlow or Keras; Keras is imported lazily by the features that need it.

    import layerlab
    m = layerlab.load("model.h5")        # numpy + h5py only
    m.predict(x); m.trace(x); m.spec
    layerlab.probe(layer, array)         # run one layer and explain it
"""

from __future__ import annotations

__version__ = "0.1.0"


def load(path, architecture=None):
    """Load a Keras model file (.h5, .keras, .weights.h5 + JSON) as a ``Network``.

    See ``layerlab.modelfile.load``.
    """
    from layerlab.modelfile import load as _load

    return _load(path, architecture=architecture)


# Imported eagerly: a lazy wrapper named ``probe`` would be replaced by the submodule
# ``layerlab.probe`` the first time it is imported. probe.py imports only numpy and the core.
from layerlab.probe import ProbeResult, probe  # noqa: E402

__all__ = ["ProbeResult", "__version__", "load", "probe"]
