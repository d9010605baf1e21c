"""Sizes and times of the table and Excel exports of seed650, and LibreOffice's recalculation.

    .venv/bin/python benchmarks/excel_export.py [--model runs/seed650/model.h5] [--images 10] [--jobs 1]

Rows: each export format (files written, bytes, seconds to write), and LibreOffice Calc
recalculating the live-formula workbook: one workbook in one soffice run (start-up included),
then ``--images`` workbooks (MNIST test images 0..N-1 when $LAYERLAB_DATA or ../shared holds
MNIST, else seeded random images) in one run, which gives the cost per extra workbook. Wall
seconds and the CPU seconds of the soffice processes are both printed, since the machine may be
shared. Without ``--model`` the weights are seeded random normals (say so when quoting). Needs
openpyxl, and soffice for the LibreOffice rows. No assertions: this prints a table.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from layerlab.export.excel import export_xlsx
from layerlab.export.excel_formulas import export_xlsx_formulas, read_formula_values
from layerlab.export.tables import export_tables
from layerlab.network import Network
from layerlab.presets import seed650


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    cpu = next((l.split(":", 1)[1].strip() for l in cpuinfo.read_text().splitlines() if l.startswith("model name")),
               platform.processor()) if cpuinfo.exists() else platform.processor()
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return f"{cpu}, {os.cpu_count()} cores, load average {load}; python {platform.python_version()}"


def network(model: str | None) -> tuple[Network, str]:
    if model:
        import layerlab

        return layerlab.load(model), model
    spec = seed650()
    rng = np.random.default_rng(650)
    weights = {}
    for info in spec.infos:
        shapes = info.layer.weight_shapes(info.input_shapes[0])
        if shapes:
            weights[info.layer.name] = {n: (rng.standard_normal(s) * 0.3).astype(np.float32) for n, s in shapes.items()}
    return Network(spec, weights), "seed650, seeded random weights"


def images(spec, count: int) -> tuple[np.ndarray, str]:
    try:
        from layerlab.data import load_mnist

        data = load_mnist(download=False, verify=False)
        x = data.x_test[:count].astype(np.float32) / 255
        return x.reshape(count, *spec.input_shape), "MNIST test images"
    except Exception as exc:  # no MNIST here: the timing hardly depends on the pixels
        print(f"(no MNIST: {type(exc).__name__}; using random images)", file=sys.stderr)
        return np.random.default_rng(0).random((count, *spec.input_shape), dtype=np.float32), "random images"


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a Keras model file (default: seed650 with seeded random weights)")
    parser.add_argument("--images", type=int, default=10, help="workbooks recalculated in one soffice run")
    parser.add_argument("--jobs", type=int, default=1, help="soffice processes at once")
    args = parser.parse_args(argv)
    net, what = network(args.model)
    x, where = images(net.spec, max(args.images, 1))
    rows = [("export", "files", "bytes", "seconds")]
    with tempfile.TemporaryDirectory(prefix="layerlab-bench-") as tmp:
        tmp = Path(tmp)
        for fmt in ("csv", "json", "npz"):
            main_file, seconds = timed(lambda fmt=fmt: export_tables(net, tmp / fmt, fmt))
            rows.append((f"--to {fmt}", str(len(list((tmp / fmt).iterdir()))), str(size(tmp / fmt)), f"{seconds:.3f}"))
        path, seconds = timed(lambda: export_xlsx(net, tmp / "weights.xlsx"))
        rows.append(("--to xlsx", "1", str(size(path)), f"{seconds:.3f}"))
        books = []
        for i in range(len(x)):
            book, seconds = timed(lambda i=i: export_xlsx_formulas(net, tmp / "in" / f"image{i}.xlsx", x[i]))
            books.append((book, seconds))
        rows.append(("--to xlsx-formulas (one image)", "1", str(size(books[0][0])), f"{np.median([s for _, s in books]):.3f} (median of {len(books)})"))
        formulas = _count_formulas(books[0][0])
        print(f"model: {what}; inputs: {where}; machine: {machine()}")
        print(f"formula cells per workbook: {formulas}")
        _table(rows)
        soffice = shutil.which("soffice")
        if soffice is None:
            print("\nLibreOffice rows skipped: no soffice on PATH (apt-get install --no-install-recommends libreoffice-calc)")
            return 0
        from layerlab.export.libreoffice import recalculate

        print()
        rows = [("LibreOffice recalculation", "workbooks", "wall s", "soffice CPU s", "wall s per extra workbook")]
        cpu = child_cpu()
        _, one = timed(lambda: recalculate([books[0][0]], tmp / "out1"))
        rows.append(("one soffice run, start-up included", "1", f"{one:.2f}", f"{child_cpu() - cpu:.2f}", "-"))
        if len(books) > 1:
            cpu = child_cpu()
            outs, many = timed(lambda: recalculate([b for b, _ in books], tmp / "outN", jobs=args.jobs))
            rows.append((f"one soffice run per job ({args.jobs} job(s))", str(len(books)), f"{many:.2f}", f"{child_cpu() - cpu:.2f}",
                         f"{(many - one) / (len(books) - 1):.2f}"))
            _, read = timed(lambda: [read_formula_values(o) for o in outs])
            rows.append(("reading the values back (openpyxl)", str(len(outs)), f"{read:.2f}", "-", f"{read / len(outs):.2f} each"))
        _table(rows)
        print(f"\n{soffice}: {_soffice_version(soffice)}")
    return 0


def _count_formulas(path: Path) -> int:
    import openpyxl

    wb = openpyxl.load_workbook(path)
    return sum(1 for ws in wb for row in ws.iter_rows() for c in row if c.data_type == "f")


def _soffice_version(soffice: str) -> str:
    import subprocess

    try:
        return subprocess.run([soffice, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"version unknown ({exc})"


def _table(rows) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for k, row in enumerate(rows):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if k == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


if __name__ == "__main__":
    sys.exit(main())
