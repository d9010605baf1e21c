"""One way to write output: lock the target, stage beside it, publish with atomic renames.

Every writer (C, csv/json/npz, xlsx, spec, nnc, trace) goes through one of two context managers:

* ``publish_file(target)`` for one file. The new file is written to a temporary file beside the
  target and renamed over it, so a reader sees the old file or the new one, never half of one. An
  existing file is replaced only with ``force=True`` (``--force``); an output that is one of the
  command's inputs is refused even then.
* ``publish_folder(target)`` for a folder of files (a C export, the csv tables, a trace). The
  files are staged in ``target/.layerlab-staging-*`` and renamed into the folder one by one; the
  manifest ``layerlab-manifest.json`` (each file's SHA-256) is written last, so a reader can tell
  a complete export from a mixture (``check_manifest``). Only files that the previous manifest
  lists, unchanged since, are replaced or removed: a user's own files in the folder (their
  ``main.c``, ``images.bin``, ``.git/``) are never touched. A new file that would land on a file
  layerlab did not write, or on one the user edited, makes the export refuse unless ``force``.

Both hold an OS lock on the target for the whole write (``fcntl.flock``, released when the
process dies): a second writer waits up to ``wait`` seconds (``$LAYERLAB_LOCK_WAIT``, default 30),
then refuses with one line. Staging
left behind by a killed run is removed by the next run into the same place, under the lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from layerlab._version import __version__
from layerlab.errors import LayerlabError, OutputError
from layerlab.io import TMP_MARK, atomic_path, atomic_write_text
from layerlab.text import printable

MANIFEST = "layerlab-manifest.json"
MANIFEST_FORMAT = "layerlab-manifest"
STAGING_PREFIX = ".layerlab-staging-"
FOLDER_LOCK = ".layerlab.lock"
ENV_WAIT = "LAYERLAB_LOCK_WAIT"  # seconds a second writer waits for the first before it refuses (default 30)


def _default_wait() -> float:
    try:
        return max(0.0, float(os.environ.get(ENV_WAIT, "30")))
    except ValueError:
        return 30.0


def _p(path: Path) -> str:
    return printable(str(path))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- locks ---------------------------------------------------------------------------------------

@contextlib.contextmanager
def locked(lock_path: Path, target: Path, wait: float | None = None) -> Iterator[None]:
    """Hold an exclusive OS lock on ``lock_path`` (created, and removed again on release).

    The lock dies with the process, so a killed writer never blocks the next one. The lock file
    is removed on release; a writer that locked a file since removed retries on the new one.

    Raises:
        OutputError: another process holds the lock for more than ``wait`` seconds.
    """
    deadline = time.monotonic() + (_default_wait() if wait is None else wait)
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            if time.monotonic() >= deadline:
                raise OutputError(
                    f"{_p(target)} is being written by another layerlab process (pid {holder}); "
                    "wait for it to finish, or choose another --out") from None
            time.sleep(0.05)
            continue
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock_path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed this lock file as we opened it: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock_path)
        os.close(fd)


# --- inputs and outputs ----------------------------------------------------------------------------

def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def refuse_inputs(target: Path, inputs: Iterable[str | Path | None], flag: str = "--out") -> None:
    """Refuse an output that is (or, for a folder output, would write over) one of the inputs."""
    for item in inputs:
        if item is None:
            continue
        source = Path(item)
        if _same(target, source):
            raise OutputError(f"{flag} {_p(target)} is the input {_p(source)}; layerlab never writes over its input. "
                              f"Choose another {flag}")


def _os_error(exc: OSError, target: Path, kept: str) -> OutputError:
    reason = exc.strerror or str(exc)
    where = _p(Path(exc.filename)) if exc.filename else _p(target)
    return OutputError(f"cannot write {where}: {reason} (errno {errno.errorcode.get(exc.errno or 0, exc.errno)}); {kept}")


def _clean_leftovers(folder: Path, prefix: str) -> None:
    """Remove staging that a killed run left in ``folder`` (called with the target's lock held)."""
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            if entry.name.startswith(prefix):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        entry.unlink()


def check_file_target(target: str | Path, *, inputs: Iterable[str | Path | None] = (), force: bool = False,
                      flag: str = "--out") -> Path:
    """Refuse, before any work, a file output ``publish_file`` would refuse: an input, a folder,
    or an existing file without ``force``. Returns the absolute target.

    Raises:
        OutputError: as ``publish_file`` would (it checks again, under its lock).
    """
    target = Path(os.path.abspath(target))
    refuse_inputs(target, inputs, flag)
    if target.is_dir():
        raise OutputError(f"{flag} {_p(target)} is a folder; this output is one file. Name a file, e.g. {_p(target / 'out')}{target.suffix}")
    if target.exists() and not force:
        raise OutputError(f"{flag} {_p(target)} already exists; layerlab does not replace a file unasked. "
                          "Pass --force to replace it, or choose another name")
    return target


@contextlib.contextmanager
def publish_file(target: str | Path, *, inputs: Iterable[str | Path | None] = (), force: bool = False,
                 wait: float | None = None, flag: str = "--out") -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``target`` atomically.

    Raises:
        OutputError: ``target`` is an input, a folder, or an existing file without ``force``;
            another process is writing it; the disk refused the write (the old file is kept).
    """
    target = check_file_target(target, inputs=inputs, force=force, flag=flag)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _os_error(exc, target, "nothing was written") from None
    if not target.parent.is_dir():
        raise OutputError(f"{flag} {_p(target)}: {_p(target.parent)} is not a folder")
    try:
        lock = locked(target.parent / f".{target.name}.lock", target, wait)
        with lock:
            _clean_leftovers(target.parent, f".{target.name}.{TMP_MARK}")
            if target.exists() and not force:
                raise OutputError(f"{flag} {_p(target)} already exists; layerlab does not replace a file unasked. "
                                  "Pass --force to replace it, or choose another name")
            with atomic_path(target) as tmp:
                yield tmp
    except OSError as exc:
        if isinstance(exc, LayerlabError):  # DataError is an OSError too: it says what it means
            raise
        kept = f"{_p(target)} is as it was" if target.exists() else "nothing was written"
        raise _os_error(exc, target, kept) from None


# --- folders ----------------------------------------------------------------------------------------

def read_manifest(folder: Path) -> dict[str, str] | None:
    """The files (relative path -> SHA-256) that the last publish into ``folder`` wrote, or None."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT or not isinstance(doc.get("files"), dict):
        return None
    files = doc["files"]
    return {str(k): str(v) for k, v in files.items() if _plain_relative(str(k))}


def _plain_relative(rel: str) -> bool:
    parts = Path(rel).parts
    return bool(parts) and not Path(rel).is_absolute() and ".." not in parts


def check_manifest(folder: str | Path, names: Iterable[str]) -> None:
    """Check that each of ``names`` in ``folder`` is the file its manifest lists (same SHA-256).

    A folder without a manifest (written before layerlab had one) passes.

    Raises:
        OutputError: a file is missing from the manifest or differs from it: the folder holds a
            mixture of two exports, or an export cut short.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        return
    for name in names:
        path = folder / name
        want = manifest.get(name)
        if want is None or not path.is_file() or sha256(path) != want:
            raise OutputError(
                f"{_p(path)} is not the file that {_p(folder / MANIFEST)} lists: the folder holds a mixture of two "
                "exports or one cut short. Export again into an empty folder")


@contextlib.contextmanager
def publish_folder(target: str | Path, *, inputs: Iterable[str | Path | None] = (), force: bool = False,
                   wait: float | None = None, kind: str = "export", flag: str = "--out") -> Iterator[Path]:
    """Yield an empty staging folder; on success its files are published into ``target``.

    Raises:
        OutputError: ``target`` is a file or an input; a new file would replace one that layerlab
            did not write (or that was edited since) and ``force`` is off; another process is
            writing the folder; the disk refused the write (what was kept is named).
    """
    target = Path(os.path.abspath(target))
    refuse_inputs(target, inputs, flag)
    if target.exists() and not target.is_dir():
        raise OutputError(f"{flag} {_p(target)} is a file; this output is a folder. Choose a folder name")
    created = not target.exists()
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _os_error(exc, target, "nothing was written") from None
    published = False
    try:
        with locked(target / FOLDER_LOCK, target, wait):
            _clean_leftovers(target, STAGING_PREFIX)
            staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=target))
            try:
                yield staging
                _publish(staging, target, inputs=inputs, force=force, kind=kind)
                published = True
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        if isinstance(exc, LayerlabError):  # DataError is an OSError too: it says what it means
            raise
        kept = "the folder was not changed" if not published else "the export is complete"
        raise _os_error(exc, target, kept + f" (a partly replaced export is caught by its manifest, {MANIFEST})") from None
    finally:
        if created and not published:
            with contextlib.suppress(OSError):
                target.rmdir()  # only if still empty: we made it, nothing went in


def _files(staging: Path) -> list[str]:
    out = []
    for root, dirs, names in os.walk(staging):
        dirs.sort()
        for name in sorted(names):
            out.append(os.path.relpath(os.path.join(root, name), staging).replace(os.sep, "/"))
    return out


def _publish(staging: Path, target: Path, *, inputs, force: bool, kind: str) -> None:
    new = _files(staging)
    old = read_manifest(target) or {}
    blocked = []
    for rel in new:
        path = target / rel
        if rel == MANIFEST:
            raise OutputError(f"{kind}: a file may not be called {MANIFEST}")
        if path.is_dir() and not path.is_symlink():
            blocked.append(f"{rel} (a folder)")
        elif path.exists() or path.is_symlink():
            if rel not in old:
                blocked.append(f"{rel} (not written by layerlab)")
            elif sha256(path) != old[rel]:
                blocked.append(f"{rel} (edited since layerlab wrote it)")
    for item in inputs:
        if item is not None and any(_same(target / rel, Path(item)) for rel in new):
            raise OutputError(f"{_p(target)}: the export would write over its input {_p(Path(item))}. Choose another --out")
    if blocked and (not force or any(b.endswith("(a folder)") for b in blocked)):
        listed = ", ".join(printable(b) for b in blocked[:5]) + (f" and {len(blocked) - 5} more" if len(blocked) > 5 else "")
        fix = "Move them away or choose another --out" + ("" if force else " (or pass --force to replace them)")
        raise OutputError(f"{_p(target)}: would replace {listed}; nothing was changed. {fix}")
    hashes = {rel: sha256(staging / rel) for rel in new}
    for rel in new:  # every new file goes in by rename: each one is whole, old or new
        destination = target / rel
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / rel, destination)
    for rel, digest in old.items():  # layerlab's earlier files that this export no longer writes
        path = target / rel
        if rel not in hashes and path.is_file() and not path.is_symlink() and sha256(path) == digest:
            path.unlink()
            _prune_empty(path.parent, target)
    doc = {"format": MANIFEST_FORMAT, "version": 1, "layerlab": __version__, "kind": kind, "files": hashes}
    atomic_write_text(target / MANIFEST, json.dumps(doc, indent=1, sort_keys=True) + "\n")


def _prune_empty(folder: Path, top: Path) -> None:
    while folder != top and top in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
