"""The padding plan of a whole model: which layers pad, on which sides, with what, and where NNC's
IgnoreBorder=False pooling would differ from Keras 'same'.
"""

from __future__ import annotations

from layerlab import geometry
from layerlab import spec as S
from layerlab.explain import padding_lines, size_lines, unread_lines, wrap


def _sides(pads) -> str:
    """``(pad_top, pad_bottom, pad_left, pad_right)`` in words: '1 row at the bottom and 1 column at the right'."""
    pad_top, pad_bottom, pad_left, pad_right = pads
    groups = []
    for before, after, unit, names in ((pad_top, pad_bottom, "row", ("top", "bottom")), (pad_left, pad_right, "column", ("left", "right"))):
        if before and before == after:
            groups.append(f"{before} {unit}{'s' * (before != 1)} at the {names[0]} and {names[1]}")
            continue
        for n, where in ((before, names[0]), (after, names[1])):
            if n:
                groups.append(f"{n} {unit}{'s' * (n != 1)} at the {where}")
    if not groups:
        return "nothing"
    return (" and " if not any(" and " in g for g in groups) else "; ").join(groups)


def _hw(h: int, w: int) -> str:
    return str(h) if h == w else f"{h}x{w}"


def _nnc_note(layer: S.Layer, win: geometry.Window2D) -> tuple[str, bool]:
    """What NNC's equivalent function does here, and whether it differs from Keras."""
    pads = (win.pad_top, win.pad_bottom, win.pad_left, win.pad_right)
    if isinstance(layer, S.Conv2D):
        if not any(pads):
            return "NNC Convolution with pad (0, 0) is identical.", False
        if win.pad_top == win.pad_bottom and win.pad_left == win.pad_right:
            return f"NNC Convolution with pad ({win.pad_top}, {win.pad_left}) (symmetric zeros) is identical.", False
        return (f"NNC Convolution pads symmetrically and cannot express Keras' {_sides(pads)}: "
                "it needs an explicit asymmetric pad before a 'valid' convolution."), True
    # Pooling. nnabla max_pooling(ignore_border=False, pad=0): out = ceil(n / s); window of out_y
    # starts at out_y * s and is clipped at the border (nnabla src/nbla/function/generic/max_pooling.cpp).
    nnc_h, nnc_w = -(-win.in_h // win.stride_h), -(-win.in_w // win.stride_w)
    name = "MaxPooling" if isinstance(layer, S.MaxPooling2D) else "AveragePooling"
    caveat = "" if isinstance(layer, S.MaxPooling2D) else " (window placement only; the divisor at clipped borders follows NNC's including_pad)"
    if layer.padding == geometry.VALID:
        if (nnc_h, nnc_w) == (win.out_h, win.out_w):
            return f"NNC {name} IgnoreBorder=False, Padding 0 reads the same windows{caveat}.", False
        return (f"NNC {name} IgnoreBorder=False, Padding 0 DIFFERS: it makes {nnc_h}x{nnc_w} outputs (extra windows clipped "
                f"at the border), Keras {win.out_h}x{win.out_w}. Use IgnoreBorder=True{caveat}."), True
    if win.pad_top == 0 and win.pad_left == 0:
        return (f"NNC {name} IgnoreBorder=False, Padding 0 is identical: Keras pads nothing at the top or left, and the "
                f"windows it pads at the bottom/right NNC clips at the border{caveat}."), False
    fix = (f" Equivalent: IgnoreBorder=True, Padding ({win.pad_top}, {win.pad_left})."
           if win.pad_top == win.pad_bottom and win.pad_left == win.pad_right else
           " NNC's symmetric Padding cannot express this.")
    return (f"NNC {name} IgnoreBorder=False, Padding 0 DIFFERS: Keras pads {_sides((win.pad_top, 0, win.pad_left, 0))} "
            f"too, so each Keras window starts {win.pad_top} row(s) higher and {win.pad_left} column(s) further left than "
            f"NNC's (NNC's start at out * stride, clipped at the border).{fix}{caveat}"), True


def explain_model(model: S.Model) -> str:
    """The padding plan of every layer of ``model``, and where NNC's IgnoreBorder=False differs."""
    lines = [f"{model.name}: padding plan (input {model.input_shape}; shapes without the batch axis)", ""]
    padders, nnc_diff, pools = [], [], []
    for info in model.infos:
        layer = info.layer
        shape_in, shape_out = info.input_shapes[0], info.output_shape
        lines.append(f"{info.index:>2} {layer.name} ({layer.type}): {shape_in} -> {shape_out}")
        if isinstance(layer, S.Windowed):
            win = layer.window(shape_in)
            size, strides, dilation = layer.window_args()
            kind = "kernel_size" if isinstance(layer, S.Conv2D) else "pool_size"
            lines.append(f"     {kind}={size}, strides={strides}" + (f", dilation_rate={dilation}" if dilation != (1, 1) else "")
                         + f", padding='{layer.padding}'")
            lines += ["   " + line for line in size_lines(win, layer.padding)[1:]]
            pads = (win.pad_top, win.pad_bottom, win.pad_left, win.pad_right)
            if layer.padding == geometry.SAME:
                lines += ["   " + line for line in padding_lines(win, layer.padding)[1:3]]
            if any(pads):
                fill = {"Conv2D": "zeros", "MaxPooling2D": "-inf, never selected", "AveragePooling2D": "left out of the count"}[layer.type]
                lines.append(wrap(f"     pads {_sides(pads)} (fill: {fill})"))
                padders.append(f"{layer.name} ({_hw(win.in_h, win.in_w)} -> {_hw(win.out_h, win.out_w)}: {_sides(pads)})")
            else:
                lines.append("     no padding")
            unread = unread_lines(win)
            if unread:
                lines.append(f"     never read: {' and '.join(unread)}")
            note, differs = _nnc_note(layer, win)
            lines.append(wrap(f"     {note}"))
            if isinstance(layer, (S.MaxPooling2D, S.AveragePooling2D)):
                pools.append(layer.name)
            if differs:
                nnc_diff.append(layer.name)
        elif isinstance(layer, S.ZeroPadding2D):
            (top, bottom), (left, right) = layer.padding
            lines.append(f"     pads {_sides((top, bottom, left, right))} explicitly with zeros")
            padders.append(f"{layer.name} (ZeroPadding2D: {_sides((top, bottom, left, right))})")
        elif isinstance(layer, S.Flatten) and layer.data_format == S.CHANNELS_FIRST and len(shape_in) == 3:
            lines.append(wrap("     no padding. Order: Keras moves the channels last first, so it flattens row, column, "
                              "channel - not C-H-W. NNC's Affine reads C-H-W: converting needs the next Dense's rows reordered."))
        else:
            lines.append("     no window, no padding")
    lines.append("")
    if padders:
        lines.append(wrap(f"Padding: {len(padders)} of {len(model.layers)} layers pad: " + "; ".join(padders) + ". Nothing else pads."))
    else:
        lines.append(f"Padding: none of the {len(model.layers)} layers pads.")
    if nnc_diff:
        lines.append(wrap("NNC: these layers differ from Neural Network Console's defaults (see above): " + ", ".join(nnc_diff) + "."))
    elif pools:
        lines.append(wrap("NNC: pooling with IgnoreBorder=False, Padding 0 reads the same windows as Keras for "
                          + ", ".join(pools) + "; nothing differs."))
    return "\n".join(lines) + "\n"
