"""Weights out as CSV / JSON / NPZ and back in, bit for bit; names never become formulas."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from conftest import random_weights
from layerlab import spec as S
from layerlab.errors import ExportError
from layerlab.export.tables import export_tables, read_tables
from layerlab.network import Network
from layerlab.presets import seed650

HOSTILE = ('=HYPERLINK("x")', "+cmd|' /C calc'!A0", "@SUM(1)", "-2+3", "'quoted", "a/b\\c")


def hostile_network() -> Network:
    """Small model whose layer names look like formulas, DDE payloads and paths."""
    spec = S.Model(name='=cmd|"x"', input_shape=(5, 5, 2), layers=(
        S.Conv2D(name=HOSTILE[0], filters=3, kernel_size=(2, 3), padding="same"),
        S.BatchNormalization(name=HOSTILE[1]),
        S.Flatten(name=HOSTILE[5]),
        S.Dense(name=HOSTILE[2], units=4),
        S.Dense(name=HOSTILE[3], units=3, use_bias=False),
        S.Dense(name=HOSTILE[4], units=2),
    ))
    weights = random_weights(spec, 1)
    weights[HOSTILE[1]]["moving_variance"] = np.abs(weights[HOSTILE[1]]["moving_variance"]) + 0.5
    return Network(spec, weights)


def awkward_floats(network: Network) -> Network:
    """Values whose decimal form needs all 9 digits, signed zero, subnormals and the extremes."""
    weights = {k: dict(v) for k, v in network.weights.items()}
    kernel = weights["conv1"]["kernel"].copy().reshape(-1)
    special = np.array([-0.0, 1e-45, -1.4e-45, 1.1754942e-38, 3.4028235e38, -3.4028235e38,
                        np.nextafter(np.float32(1), np.float32(2)), np.float32(0.1), 16777217.0], np.float32)
    kernel[: special.size] = special
    weights["conv1"]["kernel"] = kernel.reshape(weights["conv1"]["kernel"].shape)
    return Network(network.spec, weights)


def assert_bitwise_equal(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for layer in want:
        assert list(got[layer]) == list(want[layer])
        for name, array in want[layer].items():
            assert got[layer][name].dtype == np.float32
            assert got[layer][name].shape == array.shape
            np.testing.assert_array_equal(got[layer][name].view(np.uint32), array.view(np.uint32))


@pytest.mark.parametrize("fmt", ["csv", "json", "npz"])
def test_round_trip_is_bit_exact(tmp_path, fmt):
    spec = seed650()
    network = awkward_floats(Network(spec, random_weights(spec)))
    main = export_tables(network, tmp_path / fmt, fmt)
    assert main.parent == tmp_path / fmt and main.is_file()
    assert_bitwise_equal(read_tables(main), network.weights)
    assert_bitwise_equal(read_tables(main.parent), network.weights)  # the folder works too


@pytest.mark.parametrize("fmt", ["csv", "json", "npz"])
def test_hostile_names_round_trip(tmp_path, fmt):
    network = hostile_network()
    main = export_tables(network, tmp_path, fmt)
    assert_bitwise_equal(read_tables(main), network.weights)


def test_csv_index_and_kernel_grids_read_as_a_person_would(tmp_path):
    spec = seed650()
    network = Network(spec, random_weights(spec, 3))
    index = export_tables(network, tmp_path, "csv")
    rows = list(csv.DictReader(open(index, newline="")))
    assert [(r["layer"], r["weight"], r["shape"]) for r in rows] == [
        ("conv1", "kernel", "4x4x1x5"), ("conv1", "bias", "5"), ("conv2", "kernel", "3x3x5x3"), ("conv2", "bias", "3"),
        ("conv3", "kernel", "4x4x3x3"), ("conv3", "bias", "3"), ("dense1", "kernel", "27x10"), ("dense1", "bias", "10"),
    ]
    assert rows[2]["layout"].startswith("HWIO") and rows[6]["layout"] == "(in_features, units)"
    # conv2's kernel: one 3x3 grid per (filter, in_channel), each grid row a CSV row.
    kernel = network.weights["conv2"]["kernel"]
    grid_rows = list(csv.reader(open(tmp_path / rows[2]["file"], newline="")))
    assert grid_rows[0] == ["filter", "in_channel", "filter_y", "x0", "x1", "x2"]
    grids: dict = {}
    for f, c, y, *values in grid_rows[1:]:
        grid = grids.setdefault((int(f), int(c)), [])
        assert int(y) == len(grid)  # rows in filter_y order
        grid.append([np.float32(v) for v in values])
    assert len(grids) == 5 * 3
    for (f, c), grid in grids.items():
        np.testing.assert_array_equal(np.array(grid, np.float32), kernel[:, :, c, f])
    dense = list(csv.reader(open(tmp_path / rows[6]["file"], newline="")))
    assert dense[0][:2] == ["in_feature", "unit0"] and len(dense) == 28


def test_csv_cells_never_start_a_formula(tmp_path):
    index = export_tables(hostile_network(), tmp_path, "csv")
    rows = list(csv.reader(open(index, newline="")))[1:]
    names = [r[0] for r in rows]
    for name in names:
        assert not name.startswith(("=", "+", "-", "@")), name
    assert {"'=HYPERLINK(\"x\")", "'+cmd|' /C calc'!A0", "'@SUM(1)", "'-2+3", "''quoted"} == set(names)
    for row in rows:  # file names are safe, whatever the layer is called
        assert re.fullmatch(r"[A-Za-z0-9_.-]+\.csv", row[6]), row[6]
        assert (tmp_path / row[6]).is_file()


def test_json_is_one_document_with_shapes_and_layouts(tmp_path):
    network = hostile_network()
    doc = json.loads(export_tables(network, tmp_path, "json").read_text())
    assert doc["format"] == "layerlab-weights" and doc["input_shape"] == [5, 5, 2]
    assert [layer["name"] for layer in doc["layers"]] == [n for n in HOSTILE if n != "a/b\\c"]
    conv = doc["layers"][0]["weights"][0]
    assert conv["name"] == "kernel" and conv["shape"] == [2, 3, 2, 3] and conv["layout"].startswith("HWIO")
    np.testing.assert_array_equal(np.array(conv["values"], np.float32), network.weights[HOSTILE[0]]["kernel"])


def test_npz_holds_plain_float32_arrays(tmp_path):
    network = hostile_network()
    path = export_tables(network, tmp_path, "npz")
    with np.load(path, allow_pickle=False) as data:
        assert data.files[0] == f"{HOSTILE[0]}/kernel"
        assert all(data[k].dtype == np.float32 for k in data.files)
        assert len(data.files) == sum(len(v) for v in network.weights.values())


def test_csv_and_json_are_deterministic(tmp_path):
    network = hostile_network()
    for fmt in ("csv", "json"):
        a = export_tables(network, tmp_path / "a", fmt).read_bytes()
        b = export_tables(network, tmp_path / "b", fmt).read_bytes()
        assert a == b


def test_unknown_format_is_one_clear_error(tmp_path):
    network = hostile_network()
    with pytest.raises(ExportError, match=r"format 'xls' is not a table format, expected one of csv, json, npz"):
        export_tables(network, tmp_path, "xls")


def test_reading_bad_tables_says_what_is_wrong(tmp_path):
    with pytest.raises(ExportError, match="no such file"):
        read_tables(tmp_path / "missing.json")
    with pytest.raises(ExportError, match="expected exactly one of index.csv, weights.json, weights.npz, found none"):
        read_tables(tmp_path)
    spec = seed650()
    index = export_tables(Network(spec, random_weights(spec)), tmp_path / "csv", "csv")
    # A kernel file that lost a grid row no longer matches the shape its index gives.
    kernel_file = tmp_path / "csv" / "00_conv1_kernel.csv"
    kernel_file.write_text("\n".join(kernel_file.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(ExportError, match=r"00_conv1_kernel.csv: does not hold a tensor of shape \(4, 4, 1, 5\)"):
        read_tables(index)
    # An .npz with an object array is refused: nothing is ever unpickled.
    np.savez(tmp_path / "evil.npz", **{"conv1/kernel": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ExportError, match="not a readable .npz of plain arrays"):
        read_tables(tmp_path / "evil.npz")
    (tmp_path / "weights.json").write_text('{"format": "something else"}')
    with pytest.raises(ExportError, match="not a layerlab weights document"):
        read_tables(tmp_path / "weights.json")
