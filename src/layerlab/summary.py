"""A model summary from the spec alone: shapes, parameters, multiply-accumulates, activation sizes.

Needs no Keras and no weights, so it works on a spec name, a spec file or a saved model file.
"""

from __future__ import annotations

from layerlab.spec import Model
from layerlab.text import printable


def _shape(shape: tuple[int, ...]) -> str:
    return str(shape[0]) if len(shape) == 1 else "(" + ", ".join(map(str, shape)) + ")"


def summary_rows(model: Model) -> list[dict]:
    """One dict per layer: name, type, output_shape, params, macs, activations."""
    return [
        {
            "index": info.index,
            "name": info.layer.name,
            "type": info.layer.type,
            "output_shape": info.output_shape,
            "params": info.params,
            "macs": info.macs,
            "activations": info.activation_size,
        }
        for info in model.infos
    ]


def summary_text(model: Model) -> str:
    """The summary as an aligned text table with totals (shapes in the model's data_format).

    Activation size counts the output values of a layer (float32 bytes = 4x). The largest two
    consecutive activations bound the RAM of a chain's buffers (the C export's arena reports its own peak).
    """
    rows = summary_rows(model)
    header = ("#", "layer", "type", "output shape", "params", "MACs", "activations")
    table = [header] + [
        (str(r["index"]), printable(r["name"]), r["type"], _shape(r["output_shape"]), f"{r['params']:,}", f"{r['macs']:,}", f"{r['activations']:,}")
        for r in rows
    ]
    peak = max(r["activations"] for r in rows)
    total = ("", "total", "", "", f"{model.param_count:,}", f"{model.macs:,}", f"peak {peak:,}")
    table.append(total)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    right = {0, 4, 5, 6}

    def fmt(row):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    lines = [
        f"model '{printable(model.name)}': input {_shape(model.input_shape)}, output {_shape(model.output_shape)}",
        fmt(header), rule, *[fmt(r) for r in table[1:-1]], rule, fmt(total),
        f"parameters: {model.param_count:,} ({model.param_count * 4:,} bytes as float32); "
        f"multiply-accumulates per image: {model.macs:,}",
    ]
    return "\n".join(lines) + "\n"
