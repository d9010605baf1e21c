"""Read a spec by built-in name (``seed650``) or from a JSON / YAML file, strictly.

Strict because a spec decides what gets trained and exported: a duplicate key (which JSON
readers resolve silently, last one wins), an unknown top-level key (a typo such as
``"input_shap"``), a document nested past ``limits.MAX_DEPTH`` or larger than the byte limit is
an error naming the file, never a guess.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from layerlab import limits
from layerlab.errors import LimitError, SpecError, require
from layerlab.presets import PRESETS
from layerlab.spec import Model


def load_spec(source: str | Path) -> Model:
    """Load a spec by built-in name (``seed650``) or from a .json / .yaml / .yml file.

    Raises:
        SpecError: no such file or name, not valid JSON/YAML, a duplicate or unknown key, an
            invalid network.
        LimitError: the file is larger or nested deeper than ``layerlab.limits`` allow.
    """
    if isinstance(source, str) and source in PRESETS:
        return PRESETS[source]()
    path = Path(source)
    if not path.is_file():
        raise SpecError(f"spec {str(source)!r}: no such file and no built-in spec of that name. Built-in: {', '.join(PRESETS)}")
    limits.check_bytes(path.stat().st_size, str(path), "the spec file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); a spec is a JSON or YAML file") from None
    data = _parse_yaml(text, path) if path.suffix.lower() in (".yaml", ".yml") else parse_json_strict(text, str(path))
    limits.check_depth(depth(data), str(path))
    return Model.from_dict(data, source=str(path))


def parse_json_strict(text: str, where: str) -> Any:
    """JSON with duplicate keys refused and nesting bounded; errors name ``where``."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise SpecError(f"{where}: the key {key!r} appears twice in one object; keep one")
            out[key] = value
        return out

    try:
        return json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{where}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except RecursionError:
        raise LimitError(f"{where}: nested more than Python can parse; not a real spec document") from None


def _parse_yaml(text: str, path: Path) -> Any:
    yaml = require("yaml", "yaml", "YAML spec files")

    class StrictLoader(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        keys = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in keys:
                raise SpecError(f"{path}: line {key_node.start_mark.line + 1}: the key {key!r} appears twice in one mapping; keep one")
            keys.add(key)
        return loader.construct_mapping(node, deep=deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise LimitError(f"{path}: nested more than Python can parse; not a real spec document") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None


def depth(data: Any) -> int:
    """How deeply lists and mappings nest in ``data`` (a scalar is 0), without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if level > limits.MAX_DEPTH:
            return level
        stack.extend((child, level + 1) for child in children)
    return deepest
