"""Read and write IDX files, the format of the MNIST database, with numpy alone.

An IDX file (http://yann.lecun.com/exdb/mnist/, "file formats") is a big-endian header and then
the raw array in C order:

    bytes 0-1   0x00 0x00
    byte  2     element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte  3     number of dimensions, ndim
    4 * ndim    each dimension as a big-endian uint32
    rest        prod(dims) elements, big-endian

So MNIST's image files start with the magic number 0x00000803 (uint8, 3 dims: N, 28, 28) and its
label files with 0x00000801 (uint8, 1 dim: N). Files may be gzipped; a gzip stream is recognised
by its own magic bytes (1f 8b), whatever the file is called.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from layerlab.errors import DataError, ShapeError
from layerlab.io import atomic_path

# IDX element type code -> big-endian numpy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_FIX_REFETCH = "Fix: delete it and fetch it again (layerlab data fetch), or point --data-dir at intact files."


def read_idx_bytes(path: str | Path) -> bytes:
    """Return the IDX bytes of ``path``, decompressing it when it is a gzip stream.

    Raises:
        DataError: the file is missing, unreadable, or a corrupt or truncated gzip stream.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
            fh.seek(0)
            if head != _GZIP_MAGIC:
                return fh.read()
            with gzip.GzipFile(fileobj=fh, mode="rb") as gz:
                return gz.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found. Fix: check the path, or run `layerlab data where`.") from None
    except EOFError as exc:  # gzip raises this when the stream stops before its end marker
        raise DataError(f"{path}: truncated gzip file ({exc}). {_FIX_REFETCH}") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{path}: corrupt gzip file ({exc}). {_FIX_REFETCH}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc.strerror or exc}).") from None


def parse_idx(data: bytes, source: str | Path = "<bytes>") -> np.ndarray:
    """Decode IDX bytes (already decompressed) into an array.

    Args:
        data: the whole IDX file content.
        source: the file name, used in error messages only.

    Returns:
        A writable array of the header's shape, in native byte order (uint8 for MNIST).

    Raises:
        DataError: wrong magic number, unknown element type, or a size that does not match the
            header (truncated file or trailing bytes); the message names ``source``.
    """
    if len(data) < 4:
        raise DataError(
            f"{source}: not an IDX file: {len(data)} bytes, expected at least a 4-byte magic number. {_FIX_REFETCH}"
        )
    zero0, zero1, type_code, ndim = data[0], data[1], data[2], data[3]
    magic = int.from_bytes(data[:4], "big")
    if zero0 != 0 or zero1 != 0 or type_code not in IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{source}: not an IDX file: magic number 0x{magic:08x}, expected 0x0000TTDD with element type TT in "
            f"{{{', '.join(f'{c:02x}' for c in IDX_DTYPES)}}} and DD >= 1 dimensions (MNIST images 0x00000803, labels "
            f"0x00000801). Fix: point to the original MNIST files (IDX format, .gz or raw)."
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(
            f"{source}: truncated IDX header: {len(data)} bytes, expected {header_len} for {ndim} dimensions. {_FIX_REFETCH}"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    dtype = IDX_DTYPES[type_code]
    want = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    have = len(data) - header_len
    if have != want:
        what = "truncated IDX file" if have < want else "IDX file with trailing bytes"
        raise DataError(
            f"{source}: {what}: header says shape {tuple(dims)} of {dtype.newbyteorder('=').name}, expected {want} data "
            f"bytes, received {have}. {_FIX_REFETCH}"
        )
    # The copy makes the array writable and native-endian (frombuffer on bytes is read-only).
    return np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzipped or raw) into an array of its header's shape.

    Args:
        path: the file, e.g. ``train-images-idx3-ubyte.gz`` or ``train-images-idx3-ubyte``.

    Returns:
        The array, native byte order; MNIST images are uint8 (N, 28, 28), labels uint8 (N,).

    Raises:
        DataError: missing, corrupt or truncated file, or wrong magic number (the message names it).
    """
    return parse_idx(read_idx_bytes(path), source=path)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file, gzipped when ``path`` ends in ``.gz``; atomic.

    The gzip header carries no name and no time stamp, so the same array gives the same bytes.

    Args:
        path: the output file.
        array: uint8, int8, int16, int32, float32 or float64, 1 to 255 dimensions.

    Raises:
        ShapeError: an unsupported dtype, or a 0-d array.
    """
    array = np.asarray(array)
    codes = {dt.newbyteorder("=").str: code for code, dt in IDX_DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("=").str)
    if code is None or not 1 <= array.ndim <= 255:
        raise ShapeError(
            f"write_idx({path}): array of dtype {array.dtype} and {array.ndim} dimensions cannot be stored, expected "
            f"uint8, int8, int16, int32, float32 or float64 with 1 to 255 dimensions. Fix: convert it with .astype()."
        )
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        if path.suffix == ".gz":
            with gzip.GzipFile(filename="", mode="wb", fileobj=fh, compresslevel=9, mtime=0) as gz:
                gz.write(payload)
        else:
            fh.write(payload)
