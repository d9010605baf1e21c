"""Recalculate workbooks with LibreOffice Calc, headless, so their formula values can be read.

openpyxl writes formulas without values. ``recalculate`` opens each workbook in LibreOffice with
recalculation on load forced to "always" and saves a copy, whose cells then hold the values
LibreOffice computed (``openpyxl.load_workbook(copy, data_only=True)`` reads them).

How recalculation is forced: LibreOffice keeps a workbook's cached values unless the option
"Recalculation on file load" (``/org.openoffice.Office.Calc/Formula/Load``, properties
``OOXMLRecalcMode`` for .xlsx and ``ODFRecalcMode`` for .ods; 0 = always, 1 = never, 2 = ask) says
otherwise. Each call runs soffice with a fresh, private user profile
(``-env:UserInstallation=file:///...``) whose ``registrymodifications.xcu`` sets both to 0; the
private profile also keeps a user's running LibreOffice (which would swallow the request) out of
the way. One soffice process converts all the files given, which saves its start-up time (about
2 s) per workbook.

Debian/Ubuntu: ``apt-get install --no-install-recommends libreoffice-calc`` provides ``soffice``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from layerlab.errors import ExportError

XLSX_FILTER = "xlsx:Calc MS Excel 2007 XML"
ALWAYS = 0  # the value of OOXMLRecalcMode / ODFRecalcMode that means "recalculate on load"

_REGISTRY = """<?xml version="1.0" encoding="UTF-8"?>
<oor:items xmlns:oor="http://openoffice.org/2001/registry" xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<item oor:path="/org.openoffice.Office.Calc/Formula/Load"><prop oor:name="OOXMLRecalcMode" oor:op="fuse"><value>{mode}</value></prop></item>
<item oor:path="/org.openoffice.Office.Calc/Formula/Load"><prop oor:name="ODFRecalcMode" oor:op="fuse"><value>{mode}</value></prop></item>
</oor:items>
"""


def find_soffice() -> str:
    """Path of LibreOffice's ``soffice`` (or ``libreoffice``); ExportError when neither is installed."""
    for name in ("soffice", "libreoffice"):
        path = shutil.which(name)
        if path:
            return path
    raise ExportError(
        "LibreOffice is not installed (no 'soffice' on PATH); it is needed to recalculate workbooks. "
        "Install it: apt-get install --no-install-recommends libreoffice-calc"
    )


def recalculate(
    files: Sequence[str | Path],
    out_dir: str | Path,
    *,
    timeout: float | None = None,
    soffice: str | None = None,
    jobs: int = 1,
) -> list[Path]:
    """Recalculate workbooks with LibreOffice and save the results as .xlsx in ``out_dir``.

    Args:
        files: .xlsx (or .ods) files with distinct names.
        out_dir: folder for the recalculated copies (created); must not hold any of ``files``.
        timeout: seconds for the whole batch; default 60 plus 10 per file.
        soffice: the LibreOffice executable; found on PATH by default.
        jobs: soffice processes to run at once, each with its own profile and share of the files
            (LibreOffice recalculates on one core).

    Returns:
        The recalculated copies, ``out_dir / (file stem + '.xlsx')``, in the order of ``files``.

    Raises:
        ExportError: LibreOffice is missing, timed out, failed, or did not write a copy.
    """
    paths = [Path(f).resolve() for f in files]
    out_dir = Path(out_dir).resolve()
    if not paths:
        return []
    missing = [str(f) for f in paths if not f.is_file()]
    if missing:
        raise ExportError(f"recalculate: no such workbook(s): {', '.join(missing)}")
    outputs = [out_dir / (f.stem + ".xlsx") for f in paths]
    if len(set(outputs)) != len(outputs):
        raise ExportError("recalculate: the workbooks must have distinct names; LibreOffice names each copy after its file")
    if any(f.parent == out_dir for f in paths):
        raise ExportError(f"recalculate: out_dir {out_dir} holds an input workbook, which would be overwritten. Use another folder")
    soffice = soffice or find_soffice()
    timeout = 60 + 10 * len(paths) if timeout is None else timeout
    out_dir.mkdir(parents=True, exist_ok=True)
    for out in outputs:  # never mistake an old copy for this run's result
        out.unlink(missing_ok=True)
    jobs = max(1, min(int(jobs), len(paths)))
    try:
        log = _convert(paths, out_dir, soffice, jobs, timeout)
    except _Crashed:
        # soffice sometimes dies of a signal while it starts (a segfault, seen about once in
        # 60 runs): once, the whole batch again, in fresh profiles; a second crash is reported.
        for out in outputs:
            out.unlink(missing_ok=True)
        log = _convert(paths, out_dir, soffice, jobs, timeout, last_try=True)
    absent = [str(o) for o in outputs if not o.is_file()]
    if absent:
        raise ExportError(f"recalculate: LibreOffice wrote no {', '.join(absent)}. Its output: {log[-800:]}")
    return outputs


class _Crashed(Exception):
    """An soffice process ended by a signal."""


def _convert(paths: list[Path], out_dir: Path, soffice: str, jobs: int, timeout: float, last_try: bool = False) -> str:
    """Run ``jobs`` soffice processes over ``paths``, each in a fresh profile; their output."""
    with tempfile.TemporaryDirectory(prefix="layerlab-soffice-") as tmp:
        procs = []
        try:
            for job in range(jobs):
                profile = Path(tmp) / f"profile{job}"
                (profile / "user").mkdir(parents=True)
                (profile / "user" / "registrymodifications.xcu").write_text(_REGISTRY.format(mode=ALWAYS), encoding="utf-8")
                command = [
                    soffice, f"-env:UserInstallation={profile.as_uri()}", "--headless", "--invisible",
                    "--norestore", "--nolockcheck", "--nodefault", "--nologo",
                    "--convert-to", XLSX_FILTER, "--outdir", str(out_dir), *map(str, paths[job::jobs]),
                ]
                procs.append(_start(command))
            return "".join(_wait(proc, timeout, last_try) for proc in procs)
        finally:
            for proc in procs:  # only after a failure is any still running
                _kill(proc)


def _start(command: list[str]) -> subprocess.Popen:
    # A session of its own, so that on a timeout the whole group (the soffice wrapper script and
    # soffice.bin) is killed, not just the wrapper.
    env = dict(os.environ, SAL_USE_VCLPLUGIN="svp")
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=env)


def _wait(proc: subprocess.Popen, timeout: float, last_try: bool) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise ExportError(f"recalculate: LibreOffice did not finish within {timeout:.0f} s and was stopped") from None
    if proc.returncode != 0:
        # soffice is a shell script: soffice.bin's death by a signal comes back as 128 + signal
        signalled = -proc.returncode in _CRASH_SIGNALS or proc.returncode - 128 in _CRASH_SIGNALS
        if signalled and not last_try:
            raise _Crashed(out)
        cause = " (it crashed)" if signalled else ""
        raise ExportError(f"recalculate: LibreOffice exited with status {proc.returncode}{cause}: {out[-800:]}")
    return out


_CRASH_SIGNALS = {int(signal.SIGSEGV), int(signal.SIGBUS), int(signal.SIGABRT), int(signal.SIGILL), int(signal.SIGFPE)}


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
