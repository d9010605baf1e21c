"""Nothing lost, nothing mixed, no tracebacks (issue 15): the CLI over a table of hostile inputs.

Every case is generated here (no stored binaries). Each asserts the exit code, that stderr is
one line naming what went wrong, and that nothing outside the intended output changed: the
working folder is snapshotted (every file's bytes, hidden ones too) before and after.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from layerlab import spec as S
from layerlab.cli import main
from layerlab.errors import OutputError
from layerlab.export.tables import read_tables
from layerlab.publish import FOLDER_LOCK, MANIFEST, locked, publish_folder


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) -> SHA-256 of its bytes."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


SPEC = S.Model(name="tiny", input_shape=(28, 28, 1), layers=(
    S.Flatten(name="flat"), S.Dense(name="dense", units=10, activation="softmax")))


def write_weights(path: Path, kernel: np.ndarray | None = None, spec: S.Model = SPEC) -> Path:
    """A Keras 2 save_weights file for SPEC, written with h5py (no Keras needed)."""
    import h5py

    kernel = np.random.default_rng(1).normal(0, 0.05, (784, 10)).astype(np.float32) if kernel is None else kernel
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"dense"]
        g = f.create_group("dense")
        g.attrs["weight_names"] = [b"dense/kernel:0", b"dense/bias:0"]
        g["dense/kernel:0"] = kernel
        g["dense/bias:0"] = np.zeros(10, np.float32)
    return path


@pytest.fixture
def model(tmp_path, monkeypatch):
    """A working folder holding a model (weights + architecture) and the user's own files."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LAYERLAB_LOCK_WAIT", "0.3")
    SPEC.save(tmp_path / "spec.json")
    write_weights(tmp_path / "w.h5")
    return ["w.h5", "--architecture", "spec.json"]


# --- 1. data loss ----------------------------------------------------------------------------------

def test_c_export_keeps_the_users_files_and_replaces_only_its_own(model, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "mysrc").mkdir(parents=True)
    (out / ".git").mkdir()
    for rel, text in (("NOTES.txt", "mine"), ("mysrc/app.c", "int main;"), (".git/HEAD", "ref"), ("images.bin", "x")):
        (out / rel).write_text(text)
    code, _, err = run_cli(capsys, "export", *model, "--to", "c", "--out", out, "--no-verify")
    assert code == 0, err
    first = snapshot(out)
    assert {"NOTES.txt", "mysrc/app.c", ".git/HEAD", "images.bin", "tiny.c", MANIFEST} <= set(first)
    manifest = json.loads((out / MANIFEST).read_text())["files"]
    assert "NOTES.txt" not in manifest and manifest["tiny.c"] == first["tiny.c"]
    # Again, under another name: the old library's files go, the user's stay.
    code, _, err = run_cli(capsys, "export", *model, "--to", "c", "--out", out, "--no-verify", "--name", "other")
    assert code == 0, err
    second = snapshot(out)
    assert "tiny.c" not in second and "other.c" in second
    for rel in ("NOTES.txt", "mysrc/app.c", ".git/HEAD", "images.bin"):
        assert second[rel] == first[rel]


def test_a_file_the_user_edited_or_wrote_is_never_replaced_unasked(model, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_cli(capsys, "export", *model, "--to", "csv", "--out", out)[0] == 0
    (out / "index.csv").write_text("my own notes\n")  # edited since layerlab wrote it
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "export", *model, "--to", "csv", "--out", out)
    assert code == 1 and "would replace index.csv (edited since layerlab wrote it)" in one_line(err) and "--force" in err
    assert snapshot(tmp_path) == before
    assert run_cli(capsys, "export", *model, "--to", "csv", "--out", out, "--force")[0] == 0
    assert (out / "index.csv").read_text().startswith("layer,")


@pytest.mark.parametrize("fmt, name", [("csv", "index.csv"), ("json", "weights.json"), ("npz", "weights.npz")])
def test_table_exports_refuse_a_users_file_of_the_same_name(model, tmp_path, capsys, fmt, name):
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_text("the user's")
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "export", *model, "--to", fmt, "--out", out)
    assert code == 1 and f"would replace {name} (not written by layerlab)" in one_line(err)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("argv", [
    ["export", "w.h5", "--architecture", "spec.json", "--to", "xlsx", "--out", "w.h5"],
    ["export", "w.h5", "--architecture", "spec.json", "--to", "xlsx", "--out", "spec.json"],
    ["spec", "show", "spec.json", "--out", "spec.json"],
    ["spec", "show", "spec.json", "--out", "spec.json", "--force"],
    ["export", "w.h5", "--architecture", "spec.json", "--to", "c", "--out", "w.h5", "--no-verify"],
])
def test_an_output_that_is_an_input_is_refused(model, tmp_path, capsys, argv):
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, *argv)
    line = one_line(err)
    assert code == 1 and ("is the input" in line or "is a file" in line), line
    assert snapshot(tmp_path) == before


def test_an_existing_file_is_replaced_only_with_force(model, tmp_path, capsys):
    (tmp_path / "book.xlsx").write_text("a workbook of the user's")
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "export", *model, "--to", "xlsx", "--out", "book.xlsx")
    assert code == 1 and "book.xlsx already exists" in one_line(err) and "--force" in err
    assert snapshot(tmp_path) == before
    assert run_cli(capsys, "export", *model, "--to", "xlsx", "--out", "book.xlsx", "--force")[0] == 0
    assert (tmp_path / "book.xlsx").read_bytes()[:2] == b"PK"


def test_training_into_a_finished_run_refuses(model, tmp_path, capsys):
    run = tmp_path / "runs" / "seed650"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"best_test_accuracy": 0.9042, "interrupted": False}))
    (run / "model.keras").write_bytes(b"PK old model")
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "train", "--out", run, "--epochs", "1", "--train-limit", "10")
    line = one_line(err)
    assert code == 1 and "holds a finished run (0.9042 test accuracy)" in line and "--resume" in line and "--force" in line
    assert snapshot(tmp_path) == before


def test_a_second_training_into_the_same_folder_refuses_at_once(model, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    with locked(run / FOLDER_LOCK, run, wait=0):
        code, _, err = run_cli(capsys, "train", "--out", run, "--epochs", "1", "--train-limit", "10")
    assert code == 1 and "is being written by another layerlab process" in one_line(err)
    assert sorted(p.name for p in run.iterdir()) == []


# --- 2. mixtures -----------------------------------------------------------------------------------

def test_a_mixture_of_two_exports_is_detected(model, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    write_weights(tmp_path / "w2.h5", np.full((784, 10), 0.5, np.float32))
    assert run_cli(capsys, "export", *model, "--to", "csv", "--out", a)[0] == 0
    assert run_cli(capsys, "export", "w2.h5", "--architecture", "spec.json", "--to", "csv", "--out", b)[0] == 0
    kernel_file = next(p.name for p in a.iterdir() if p.name.endswith("kernel.csv"))
    (a / kernel_file).write_bytes((b / kernel_file).read_bytes())  # model B's tensor beside model A's index
    with pytest.raises(OutputError, match=rf"{kernel_file} is not the file that .*{MANIFEST} lists: the folder holds a mixture"):
        read_tables(a)
    assert read_tables(b)["dense"]["kernel"][0, 0] == np.float32(0.5)


def test_two_exports_started_together_end_as_one_whole_export(model, tmp_path):
    write_weights(tmp_path / "w2.h5", np.full((784, 10), 0.5, np.float32))
    out = tmp_path / "out"
    env = {**os.environ, "LAYERLAB_LOCK_WAIT": "60"}
    procs = [subprocess.Popen([sys.executable, "-m", "layerlab", "export", weights, "--architecture", "spec.json", "--to", "csv",
                               "--out", str(out)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for weights in ("w.h5", "w2.h5")]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    kernel = read_tables(out)["dense"]["kernel"]  # whole, and exactly one of the two models
    assert np.all(kernel == np.float32(0.5)) or not np.any(kernel == np.float32(0.5))
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_a_second_writer_waits_then_refuses_with_one_line(model, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    with locked(out / FOLDER_LOCK, out, wait=0):
        code, _, err = run_cli(capsys, "export", *model, "--to", "npz", "--out", out)
    assert code == 1 and f"(pid {os.getpid()})" in one_line(err)
    assert list(out.iterdir()) == []


def test_a_full_disk_keeps_the_earlier_export_whole(model, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert run_cli(capsys, "export", *model, "--to", "csv", "--out", out)[0] == 0
    before = snapshot(tmp_path)
    import layerlab.export.tables as tables

    real, calls = tables.atomic_write_text, []

    def fill_up(path, text):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, text)

    monkeypatch.setattr(tables, "atomic_write_text", fill_up)
    write_weights(tmp_path / "w.h5", np.full((784, 10), 0.25, np.float32))
    before["w.h5"] = snapshot(tmp_path)["w.h5"]
    code, _, err = run_cli(capsys, "export", *model, "--to", "csv", "--out", out)
    line = one_line(err)
    assert code == 1 and "No space left on device" in line and "ENOSPC" in line and "the folder was not changed" in line
    assert snapshot(tmp_path) == before
    assert read_tables(out)["dense"]["kernel"][0, 0] != np.float32(0.25)


def test_staging_left_by_a_killed_export_is_cleaned_by_the_next(model, tmp_path, capsys):
    out = tmp_path / "out"
    leftover = out / ".layerlab-staging-killed"
    leftover.mkdir(parents=True)
    (leftover / "half.c").write_text("/* cut")
    assert run_cli(capsys, "export", *model, "--to", "c", "--out", out, "--no-verify")[0] == 0
    assert not leftover.exists()


def test_a_writer_that_fails_leaves_no_folder_behind(tmp_path):
    with pytest.raises(RuntimeError), publish_folder(tmp_path / "new") as staging:
        (staging / "a.txt").write_text("x")
        raise RuntimeError("cut short")
    assert list(tmp_path.iterdir()) == []


# --- 3. memory bombs --------------------------------------------------------------------------------

def _declared_h5(path: Path, shape) -> None:
    import h5py

    with h5py.File(path, "w") as f:  # a few KB on disk: chunked and never written, so all fill value
        f.attrs["layer_names"] = [b"dense"]
        g = f.create_group("dense")
        g.attrs["weight_names"] = [b"dense/kernel:0", b"dense/bias:0"]
        g.create_dataset("dense/kernel:0", shape=shape, dtype="f4", chunks=(1, 1024))
        g["dense/bias:0"] = np.zeros(10, np.float32)


def _png_header(path: Path, width: int, height: int) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def _npy_header(path: Path, shape) -> None:
    header = repr({"descr": "<f4", "fortran_order": False, "shape": tuple(shape)}).encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header)


def _zip_bomb(path: Path, member: str, megabytes: int) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", json.dumps({"class_name": "Sequential", "config": {"layers": []}}))
        with archive.open(member, "w", force_zip64=True) as fh:
            block = b"\0" * (1 << 20)
            for _ in range(megabytes):
                fh.write(block)


def _nnp_declaring(path: Path, shape) -> None:
    import h5py

    buffer = path.with_name("nnp-parameters.h5")
    with h5py.File(buffer, "w") as f:
        f.create_dataset("conv/W", shape=shape, dtype="f4", chunks=(1, 1024))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("network.nntxt", 'network { name: "N" }\n')
        archive.write(buffer, "parameter.h5")
    buffer.unlink()


def _bombs(tmp: Path) -> list[tuple[str, list[str], str]]:
    _declared_h5(tmp / "declares.h5", (27, 20_000_000))
    _declared_h5(tmp / "declares_more.h5", (27, 1_000_000_000))
    _png_header(tmp / "huge.png", 9000, 9000)
    _npy_header(tmp / "huge.npy", (1_000_000, 28, 28, 1))
    _zip_bomb(tmp / "bomb.keras", "model.weights.h5", 300)
    _nnp_declaring(tmp / "declares.nnp", (27, 20_000_000))
    big = {"name": "big", "input_shape": [1000, 1000], "layers": [
        {"type": "Flatten", "name": "f"}, {"type": "Dense", "name": "d", "units": 44_000}]}
    (tmp / "big.json").write_text(json.dumps(big))
    arch = ["--architecture", "spec.json"]
    return [
        ("h5 declares 2.2 GB", ["summary", "declares.h5", *arch], r"declares shape \(27, 20000000\), larger than this layer's weights \(784, 10\) or \(10,\)"),
        ("h5 declares 108 GB", ["predict", "declares_more.h5", *arch, "--image", "0"], r"declares shape \(27, 1000000000\)"),
        ("PNG declares 9000x9000", ["predict", "w.h5", *arch, "--input", "huge.png"], r"a 9000x9000 image would take 309 MiB, more than the limit of 256 MiB"),
        (".npy declares 3 GB", ["predict", "w.h5", *arch, "--input", "huge.npy"], r"an array of shape \(1000000, 28, 28, 1\) \(float32\) would take 2.92 GiB"),
        (".keras member inflates to 300 MB", ["summary", "bomb.keras"], r"the archive member model.weights.h5 would take 300 MiB"),
        (".nnp declares 2.2 GB", ["nnc", "import", "declares.nnp", "--out", "x.keras"], r"the parameters up to 'conv/W' would take 2.01 GiB"),
        ("spec of 44e9 parameters", ["spec", "check", "big.json"], r"44,000,044,000 parameters \(float32\) would take 164 GiB"),
    ]


def test_files_that_declare_more_than_they_hold_are_refused_before_allocating(model, tmp_path, capsys):
    import resource

    for name, argv, message in _bombs(tmp_path):
        before = snapshot(tmp_path)
        peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        code, _, err = run_cli(capsys, *argv)
        line = one_line(err)
        assert code == 1, (name, line)
        assert __import__("re").search(message, line), (name, line)
        assert snapshot(tmp_path) == before, name
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
        assert grown_mb < 200, (name, grown_mb)  # nothing near what the file declares was allocated


# --- 4. silent wrong answers ---------------------------------------------------------------------------

def test_nan_weights_warn_and_no_accuracy_is_reported(model, tmp_path, capsys, mnist_dir):
    kernel = np.random.default_rng(2).normal(0, 0.05, (784, 10)).astype(np.float32)
    kernel[3, 4] = np.nan
    write_weights(tmp_path / "nan.h5", kernel)
    arch = ["--architecture", "spec.json", "--data-dir", mnist_dir]
    for argv, what in ((["predict", "nan.h5", *arch, "--image", "0"], "no prediction"),
                       (["evaluate", "nan.h5", *arch, "--limit", "50"], "no accuracy")):
        code, out, err = run_cli(capsys, *argv)
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 2 and "Traceback" not in err, err
        assert "warning: nan.h5: the weights hold NaN or infinity in dense/kernel" in lines[0]
        assert "NonFiniteError" in lines[1] and what in lines[1] and "accuracy 0." not in out
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "export", "nan.h5", "--architecture", "spec.json", "--to", "xlsx", "--out", "nan.xlsx")
    assert code == 1 and "which xlsx cannot hold; nothing was written" in err.strip().splitlines()[-1]
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("argv, message", [
    (["train", "--train-limit", "-5"], "-5 must be a whole number of at least 1"),
    (["train", "--train-limit", "0"], "0 must be a whole number of at least 1"),
    (["train", "--seed", "-1"], "-1 must be a whole number of at least 0"),
    (["evaluate", "w.h5", "--architecture", "spec.json", "--limit", "0"], "0 must be a whole number of at least 1"),
    (["export", "w.h5", "--architecture", "spec.json", "--to", "c", "--out", "o", "--calibration", "x"], "'x' is not a whole number"),
])
def test_nonsense_numbers_are_usage_errors(model, tmp_path, capsys, argv, message):
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and message in err and "Traceback" not in err
    assert snapshot(tmp_path) == before


def test_an_explicit_data_dir_without_mnist_never_falls_back(model, tmp_path, capsys, mnist_dir, monkeypatch):
    monkeypatch.setenv("LAYERLAB_DATA", str(mnist_dir))  # would have been used silently before
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "evaluate", *model, "--data-dir", "empty")
    line = one_line(err)
    assert code == 1 and "--data-dir empty: missing train-images-idx3-ubyte.gz" in line and "drop --data-dir" in line


@pytest.mark.parametrize("text, message", [
    ('{"name": "m", "name": "n", "input_shape": [4], "layers": []}', "the key 'name' appears twice"),
    ('{"name": "m", "input_shape": [4], "layers": [{"type": "Dense", "name": "d", "units": 2}], "extra": 1}',
     "unknown top-level key(s) 'extra'"),
    ("[" * 50_000 + "]" * 50_000, "nested more than"),
])
def test_spec_files_are_read_strictly(model, tmp_path, capsys, text, message):
    (tmp_path / "s.json").write_text(text)
    code, _, err = run_cli(capsys, "spec", "check", "s.json")
    assert code == 1 and message in one_line(err)


def test_int8_better_than_float_passes_the_accuracy_check():
    from layerlab.export.c.verify import Int8Check

    def check(int8, float_):
        return Int8Check(images=10000, source="MNIST", accuracy_int8=int8, accuracy_float=float_, agreement=0.99,
                         max_abs_diff=0.1).passed

    assert check(0.9843, 0.98) and check(0.9772, 0.98) and not check(0.9768, 0.98)


# --- 5. tracebacks ---------------------------------------------------------------------------------------

def _conv_nntxt(stride: str) -> str:
    return ('network { name: "N" batch_size: 1\n'
            ' variable { name: "x" type: "Buffer" shape { dim: 1 dim: 1 dim: 6 dim: 6 } }\n'
            ' variable { name: "W" type: "Parameter" shape { dim: 2 dim: 1 dim: 3 dim: 3 } }\n'
            ' variable { name: "y" type: "Buffer" shape { dim: 1 dim: 2 dim: 4 dim: 4 } }\n'
            ' function { name: "conv" type: "Convolution" input: "x" input: "W" output: "y"\n'
            f'  convolution_param {{ base_axis: 1 pad {{ dim: 0 dim: 0 }} stride {{ {stride} }} dilation {{ dim: 1 dim: 1 }} group: 1 }} }}\n'
            '}\n'
            'executor { name: "Runtime" network_name: "N" data_variable { variable_name: "x" } '
            'output_variable { variable_name: "y" } }\n'
            'parameter { variable_name: "W" shape { dim: 2 dim: 1 dim: 3 dim: 3 } '
            + " ".join("data: 0.1" for _ in range(18)) + " }\n")


def test_hostile_files_end_in_one_line(model, tmp_path, capsys):
    (tmp_path / "stride0.nntxt").write_text(_conv_nntxt("dim: 0 dim: 1"))
    (tmp_path / "deep.nntxt").write_text("network { " * 3000 + "}" * 3000)
    (tmp_path / "deep_config.json").write_text("[" * 100_000 + "]" * 100_000)
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_config.json").write_text("{ not json")
    cut = tmp_path / "cut"
    cut.mkdir()
    cases = [
        (["nnc", "import", "stride0.nntxt", "--out", "x.json"], "stride=(0, 1): every value must be at least 1"),
        (["nnc", "import", "deep.nntxt", "--out", "x.json"], "deep.nntxt: nested more deeply than a real network"),
        (["summary", "w.h5", "--architecture", "deep_config.json"], "nested"),
        (["train", "--resume", "run"], "train_config.json is damaged"),
        (["export", *model, "--to", "c", "--out", "/proc/layerlab-test/out", "--no-verify"], "/proc/layerlab-test"),
        (["export", *model, "--to", "xlsx", "--out", "cut"], "is a folder; this output is one file"),
    ]
    for argv, message in cases:
        before = snapshot(tmp_path)
        code, _, err = run_cli(capsys, *argv)
        line = one_line(err)
        assert code == 1 and message in line, (argv, line)
        assert snapshot(tmp_path) == before, argv


def test_a_truncated_checkpoint_is_one_line(tmp_path):
    from layerlab.errors import ModelFileError
    from layerlab.train.checkpoints import load_checkpoint, save_checkpoint

    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, {"epoch": 1}, [np.zeros(1000, np.float32)], [], None)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ModelFileError, match=r"checkpoint\.npz: not a readable layerlab checkpoint"):
        load_checkpoint(path)


def test_out_dot_publishes_into_the_working_folder(model, tmp_path, capsys):
    code, _, err = run_cli(capsys, "export", *model, "--to", "c", "--out", ".", "--no-verify")
    assert code == 0, err
    assert (tmp_path / "tiny.c").is_file() and (tmp_path / "w.h5").is_file() and (tmp_path / "spec.json").is_file()


def test_an_unexpected_error_is_one_line_that_asks_for_a_report(model, capsys, monkeypatch):
    import layerlab.summary

    monkeypatch.setattr(layerlab.summary, "summary_text", lambda spec: 1 / 0)
    code, _, err = run_cli(capsys, "summary", "spec.json")
    assert code == 1 and "internal error (ZeroDivisionError: division by zero)" in one_line(err) and "--debug" in err


# --- 6. names reach the terminal escaped --------------------------------------------------------------

def test_terminal_escapes_in_names_are_shown_escaped(model, tmp_path, capsys):
    hostile = S.Model(name="m\x1b]0;pwned\x07", input_shape=(28, 28, 1), layers=(
        S.Flatten(name="f\x1b[2J"), S.Dense(name="dense", units=10)))
    hostile.save(tmp_path / "hostile.json")
    code, out, _ = run_cli(capsys, "summary", "hostile.json")
    assert code == 0 and "\x1b" not in out and "\\x1b[2J" in out


def test_force_removes_only_the_earlier_runs_own_files(tmp_path):
    from layerlab.train.runner import _claim

    run = tmp_path / "run"
    for folder in ("run-2/start-2", "start-2", "run-3/start-2"):  # a recipe's extra starts, in the run or in run-N
        (run / folder).mkdir(parents=True)
    for rel in ("train_config.json", "run.json", "checkpoint.npz", "history.csv", "model.keras", "run-2/run.json",
                "run-2/checkpoint.npz", "NOTES.txt", "run-2/mine.txt", "start-2/checkpoint.npz", "start-2/history.csv",
                "run-2/start-2/checkpoint.npz", "run-3/start-2/checkpoint.npz"):
        (run / rel).write_text("x")
    with pytest.raises(OutputError, match="holds an earlier or unfinished run"):
        _claim(run, force=False)
    _claim(run, force=True)  # nothing of the old run is left to mix with the new one; the user's files stay
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == ["NOTES.txt", "run-2", "run-2/mine.txt"]


def test_a_probe_figure_never_replaces_a_file_unasked(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.png").write_bytes(b"the user's picture")
    code, _, err = run_cli(capsys, "probe", "maxpool2d", "--figure", "p.png")
    assert code == 1 and "--figure" in one_line(err) and "p.png already exists" in err
    assert (tmp_path / "p.png").read_bytes() == b"the user's picture"
    assert run_cli(capsys, "probe", "maxpool2d", "--figure", "p.png", "--force")[0] == 0
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
