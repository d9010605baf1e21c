"""`layerlab spec` and `layerlab summary` through the real entry point: output and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

from layerlab.cli import main


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "layerlab", *args], capture_output=True, text=True, timeout=120)


def test_summary_seed650(capsys):
    assert main(["summary", "seed650"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[1]: line.split() for line in out.splitlines() if line[:2].strip().isdigit()}
    assert rows["conv1"][3:6] == ["(5,", "25,", "25)"] and rows["conv1"][6:8] == ["85", "50,000"]
    shapes = [" ".join(rows[n][3:-3]) for n in ("conv1", "maxpool1", "conv2", "maxpool2", "conv3", "flat1", "dense1")]
    assert shapes == ["(5, 25, 25)", "(5, 13, 13)", "(3, 11, 11)", "(3, 6, 6)", "(3, 3, 3)", "27", "10"]
    assert "parameters: 650 (2,600 bytes as float32); multiply-accumulates per image: 67,901" in out


def test_spec_show_round_trips(tmp_path, capsys):
    assert main(["spec", "show", "seed650"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["name"] == "seed650" and len(data["layers"]) == 11
    assert main(["spec", "show", "seed650", "--format", "yaml", "--out", str(tmp_path / "s.yaml")]) == 0
    assert main(["spec", "check", str(tmp_path / "s.yaml")]) == 0
    assert "valid - 11 layers, 650 parameters" in capsys.readouterr().out


def test_bad_spec_is_one_line_and_nonzero(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x", "input_shape": [4, 4, 1], "layers": [{"type": "Conv2D", "name": "conv_b", "filters": 2, "kernel_size": [5, 5]}]}')
    result = run("spec", "check", str(bad))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "SpecError" in result.stderr and "kernel_size=(5, 5) does not fit input (4, 4)" in result.stderr
    assert "Traceback" not in result.stderr
