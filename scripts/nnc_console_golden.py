"""Record what Neural Network Console's own project converter makes of .sdcproj files.

    .venv/bin/python scripts/nnc_console_golden.py --console DIR

DIR is NNC's console tool folder (``nncd_console_cli_util`` beside its ``settings/``), from
Sony's open-source Neural Network Console desktop (github.com/sony/nnc-desktop,
``local_editor/runner_component/tools/nncd_console``); it is not part of this repository and CI
cannot download it, so its answers are kept here: for every case, ``CASE.sdcproj`` (the project
given to it; not for NNC's samples, which the test reads from ../shared/nnc) and ``CASE.nntxt`` (``nncd_console_cli_util create_prototxt``'s output) in
tests/golden/nnc_console/. ``tests/test_nnc.py`` reads each project with layerlab and compares
the network to NNC's. Cases: the two NNC sample projects of ../shared/nnc, the MobileNet-style
project the tests write in NNC's terms, and the projects layerlab writes for seed650 and the
MLPerf Tiny models (so NNC's converter is the judge of the writer too).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "nnc_console"
SHARED = REPO.parent / "shared"
SHARED_CASES = ("LeNet", "02_binary_cnn")


def projects() -> dict[str, str]:
    """Case name -> project text."""
    sys.path[:0] = [str(REPO / "src"), str(REPO / "tests")]
    import layerlab
    from layerlab.nnc.exporter import export_network
    from layerlab.nnc.sdcproj import sdcproj_text
    from test_nnc import MOBILE_PROJECT, PROBE_PROJECTS

    cases = {name: (SHARED / "nnc" / f"{name}.sdcproj").read_text(encoding="utf-8-sig") for name in SHARED_CASES}
    cases["mobile"] = MOBILE_PROJECT
    cases.update(PROBE_PROJECTS)
    from layerlab.network import Network
    from layerlab.nnc.exporter import nnc_init
    from layerlab.specfile import load_spec

    spec = load_spec("seed650")
    nets = {"seed650": Network(spec, nnc_init(spec, seed=0))}  # as `layerlab nnc export seed650` does
    for name in ("pretrainedResnet", "str_ww_ref_model", "ad01"):
        nets[name] = layerlab.load(SHARED / "models" / "mlperf_tiny" / f"{name}.h5")
    for name, net in nets.items():
        proto, parameters, _ = export_network(net)
        cases[f"written_{name}"] = sdcproj_text(proto, parameters, name)
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--console", required=True, type=Path, help="the folder holding nncd_console_cli_util and settings/")
    args = parser.parse_args()
    cli = args.console / "nncd_console_cli_util"
    if not cli.exists():
        print(f"error: {cli} does not exist", file=sys.stderr)
        return 2
    version = subprocess.run([str(cli), "version"], capture_output=True, text=True, cwd=args.console).stdout.strip()
    GOLDEN.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in projects().items():
            project, out = Path(tmp) / f"{name}.sdcproj", Path(tmp) / f"{name}.nntxt"
            project.write_bytes(text.encode("utf-8"))
            run = subprocess.run([str(cli), "create_prototxt", "-i", str(project), "-o", str(out), "-p", str(Path(tmp) / "p.csv")],
                                 capture_output=True, text=True, cwd=args.console)  # the tool finds settings/ from its folder
            if "successfully" not in run.stdout:
                print(f"{name}: NNC refused it: {(run.stdout + run.stderr).strip().splitlines()[-1]}")
                continue
            if name not in SHARED_CASES:  # NNC's own samples stay in ../shared/nnc
                shutil.copy(project, GOLDEN / f"{name}.sdcproj")
            shutil.copy(out, GOLDEN / f"{name}.nntxt")
            print(f"{name}: recorded ({out.stat().st_size} bytes)")
    (GOLDEN / "VERSION").write_text(f"nncd_console_cli_util {version or '(version unknown)'}, sony/nnc-desktop\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
