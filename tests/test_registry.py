"""The layer registry: every backend handles or declines every layer type, and says why."""

from __future__ import annotations

import re

import pytest

from conftest import REPO
from layerlab import registry
from layerlab import spec as S
from layerlab.cli import main
from layerlab.errors import ExportError, NNCError, UnsupportedLayerError
from layerlab.layers import FAMILIES, LAYER_TYPES


def test_every_backend_handles_or_declines_every_layer_type():
    assert registry.gaps() == []


def test_a_type_without_an_entry_is_a_gap(monkeypatch):
    """The gap check itself can fail: a new type that no backend lists shows up everywhere."""
    from dataclasses import dataclass
    from typing import ClassVar

    @dataclass(frozen=True, kw_only=True)
    class Novel(S.Layer):
        type: ClassVar[str] = "Novel"

    monkeypatch.setitem(LAYER_TYPES, "Novel", Novel)
    assert {g.split(": ")[0] for g in registry.gaps() if g.endswith(": Novel")} == {b.key for b in registry.BACKENDS}


def test_every_type_belongs_to_one_family():
    seen = [cls for module in FAMILIES.values() for cls in module.TYPES]
    assert len(seen) == len(set(seen)) == len(LAYER_TYPES)
    assert all(cls.family in FAMILIES for cls in seen)


def test_declines_have_a_reason_the_user_reads():
    registry.load_all()
    for backend in registry.BACKENDS:
        for cls, reason in backend.declined.items():
            assert reason and "\n" not in reason and not reason.endswith("."), (backend.key, cls.type, reason)


@pytest.mark.parametrize("backend, error, layer, message", [
    (registry.C_INT8, ExportError, S.PReLU(name="up"),
     r"^C export \(int8\): layer 3 'up' \(PReLU\) is not supported because PReLU's per-value slopes have no int8 form yet; export float32$"),
    (registry.NNC_EXPORT, NNCError, S.Permute(name="p", dims=(2, 1)),
     r"^NNC export: layer 3 'p' \(Permute\) is not supported because no NNC function is mapped to it yet$"),
    (registry.PROBE, UnsupportedLayerError, S.Add(name="a"),
     r"^probe: layer 3 'a' \(Add\) is not supported because probe runs one layer on one input; a merge reads several$"),
])
def test_lookup_of_a_declined_type_names_backend_layer_and_reason(backend, error, layer, message):
    registry.load_all()
    with pytest.raises(error, match=message):
        backend.lookup(layer, 3)


def test_registering_a_type_twice_is_refused():
    backend = registry.Backend("x", "x", "x", "layerlab")
    backend.register(S.Dense)
    with pytest.raises(RuntimeError, match="Dense is registered twice"):
        backend.decline(S.Dense, "no")


def test_layers_command_prints_the_matrix_and_the_readme_shows_it(capsys):
    assert main(["layers"]) == 0
    printed = capsys.readouterr().out
    assert printed == registry.support_matrix()
    assert printed.splitlines()[0].startswith("| layer | loader | engine |")
    assert len(printed.splitlines()) == 2 + len(LAYER_TYPES)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- layers:begin -->\n```\n\$ layerlab layers\n(.*?)```\n<!-- layers:end -->", readme, re.S)
    assert found, "README.md has no support matrix between <!-- layers:begin --> and <!-- layers:end -->"
    assert found.group(1) == printed, "README's support matrix differs from `layerlab layers`: paste its output"


def test_reasons_list_every_dash():
    matrix = registry.support_matrix(reasons=True)
    dashes = sum(line.count("| - ") for line in matrix.splitlines() if line.startswith("| ") and "---" not in line)
    assert matrix.count("not supported because") == dashes > 0
