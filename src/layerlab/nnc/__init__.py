"""Sony Neural Network Console (NNC / nnabla) networks to layerlab (and Keras) and back, exactly.

Pipeline::

    schema.py    the subset of nnabla's NNablaProtoBuf messages, built at run time (no protoc)
    files.py     read .nnp (zip, in memory) / .nntxt / .protobuf / parameter.h5; write .nnp
    windows.py   nnabla's conv / pooling window rules and their exact Keras equivalents
    functions.py one converter per NNC function type (NNC function -> Keras layer specs)
    importer.py  NNC network -> spec + Keras-layout weights + mapping table
    exporter.py  spec + weights -> NNC network + parameters that nnabla runs identically

Needs the ``protobuf`` package (``pip install 'layerlab[nnc]'``); never nnabla itself.

    from layerlab.nnc import import_file, export_file
    result = import_file("net.nnp")          # result.network.predict(x); print(result.table())
    export_file(result.network, "back.nnp")
"""

from __future__ import annotations

from layerlab.nnc.exporter import export_file, export_network, nnc_init
from layerlab.nnc.files import read
from layerlab.nnc.importer import ImportResult, MappingRow, import_file, import_network

__all__ = [
    "ImportResult", "MappingRow", "export_file", "export_network", "import_file", "import_network", "nnc_init", "read",
]
