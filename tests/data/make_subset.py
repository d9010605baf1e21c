"""Write the small real MNIST subset shipped with the tests (tests/data/*.gz).

The first 300 training and the first 200 test images and labels of the real MNIST files, as
IDX .gz files with the original names (deterministic bytes: no name or time in the gzip header).

    python tests/data/make_subset.py [MNIST_DIR]     # default ../shared/data/mnist
"""

from __future__ import annotations

import sys
from pathlib import Path

from layerlab.data.idx import read_idx, write_idx

HERE = Path(__file__).resolve().parent
N_TRAIN, N_TEST = 300, 200


def main(argv: list[str]) -> int:
    source = Path(argv[0]) if argv else HERE.parents[2] / "shared" / "data" / "mnist"
    for prefix, count in (("train", N_TRAIN), ("t10k", N_TEST)):
        for name in (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"):
            array = read_idx(source / f"{name}.gz")[:count]
            write_idx(HERE / f"{name}.gz", array)
            print(f"{name}.gz {array.shape} {(HERE / f'{name}.gz').stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
