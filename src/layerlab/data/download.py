"""Download a file from a list of mirrors, verify its MD5, write it atomically.

stdlib ``urllib`` only. Each mirror is tried in turn with a short timeout; the bytes go to a
temporary file beside the target (``layerlab.io.atomic_path``) and are renamed into place only
after the checksum matched, so an interrupted or corrupt download never leaves a file behind.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from layerlab import __version__
from layerlab.errors import DataError
from layerlab.io import atomic_path

# The mirrors torchvision (ossci) and TensorFlow's datasets (cvdf) use for the original MNIST
# .gz files; yann.lecun.com itself now often refuses scripted downloads.
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
# Seconds per connect and per read: short, so that an offline machine fails fast.
TIMEOUT_S = 10.0
_CHUNK = 1 << 16


class _ChecksumMismatch(Exception):
    """A mirror answered, but with bytes whose MD5 is not the published one."""


def md5_file(path: str | Path) -> str:
    """Hex MD5 of a file's bytes."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _gunzip_md5(path: Path) -> str | None:
    """MD5 of a gzip file's decompressed content, or None when it is not valid gzip."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with gzip.open(path, "rb") as gz:
            while chunk := gz.read(1 << 20):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error):
        return None
    return digest.hexdigest()


def _fetch(url: str, tmp: Path, timeout: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": f"layerlab/{__version__}"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as fh:
        length = response.headers.get("Content-Length")
        received = 0
        while chunk := response.read(_CHUNK):
            fh.write(chunk)
            received += len(chunk)
        fh.flush()
        os.fsync(fh.fileno())
    if length is not None and received != int(length):
        raise OSError(f"connection closed after {received} of {length} bytes")


def try_download(
    filename: str,
    dest_dir: str | Path,
    *,
    md5: str,
    content_md5: str | None = None,
    mirrors: Sequence[str] = MIRRORS,
    timeout: float = TIMEOUT_S,
    log: Callable[[str], None] | None = None,
) -> tuple[Path | None, list[str]]:
    """Fetch ``filename`` from the first mirror that serves it with the right checksum.

    A file is accepted when its MD5 equals ``md5``, or, for a gzip file, when the MD5 of its
    decompressed content equals ``content_md5``: a mirror that re-compressed the same data (as
    ../shared/data/mnist did) still delivers the published bytes.

    Args:
        filename: the name on the mirror and in ``dest_dir``, e.g. ``train-labels-idx1-ubyte.gz``.
        dest_dir: the folder to write into (created if needed).
        md5: the expected MD5 of the downloaded file.
        content_md5: the expected MD5 of its decompressed content, if it is gzip.
        mirrors: base URLs, tried in order; ``filename`` is appended to each.
        timeout: seconds per connect and per read.
        log: called with one line per attempt (e.g. ``print``); silent when None.

    Returns:
        ``(path, [])`` on success; ``(None, reasons)`` when no mirror could be reached, one
        reason per mirror.

    Raises:
        DataError: at least one mirror answered with bytes of the wrong checksum and none with
            good ones (the bad temporary file is deleted).
    """
    dest = Path(dest_dir) / filename
    reasons: list[str] = []
    mismatches: list[str] = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        if log:
            log(f"downloading {url}")
        try:
            with atomic_path(dest) as tmp:
                _fetch(url, tmp, timeout)
                got = md5_file(tmp)
                if got != md5 and (content_md5 is None or _gunzip_md5(tmp) != content_md5):
                    raise _ChecksumMismatch(f"{url}: MD5 {got}")
        except _ChecksumMismatch as exc:
            mismatches.append(str(exc))
        except urllib.error.HTTPError as exc:
            reasons.append(f"{url}: HTTP {exc.code} {exc.reason}")
        except urllib.error.URLError as exc:
            reasons.append(f"{url}: {exc.reason}")
        except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, short reads
            reasons.append(f"{url}: {type(exc).__name__}: {exc}")
        else:
            if log:
                log(f"saved {dest} (MD5 verified)")
            return dest, []
    if mismatches:
        raise DataError(
            f"download of {filename}: checksum mismatch, expected MD5 {md5}"
            + (f" (or decompressed content MD5 {content_md5})" if content_md5 else "")
            + f", received {'; '.join(mismatches)}. The file was discarded and nothing was written to {dest_dir}. "
            "Fix: try again later, or fetch the file yourself and pass --data-dir DIR."
        )
    return None, reasons


def download_file(
    filename: str,
    dest_dir: str | Path,
    *,
    md5: str,
    content_md5: str | None = None,
    mirrors: Sequence[str] = MIRRORS,
    timeout: float = TIMEOUT_S,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Like ``try_download``, but raise ``DataError`` when no mirror could be reached.

    Returns:
        The path of the verified file, ``dest_dir / filename``.
    """
    path, reasons = try_download(
        filename, dest_dir, md5=md5, content_md5=content_md5, mirrors=mirrors, timeout=timeout, log=log
    )
    if path is None:
        raise DataError(f"download of {filename} failed from every mirror: {'; '.join(reasons) or 'no mirrors given'}.")
    return path
