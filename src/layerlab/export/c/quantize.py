"""int8 quantization of a lowered network: calibrate, quantize weights, plan requantization.

The scheme (TFLite's):

* Weights: symmetric per output channel: ``w_q = round(w / s_w[c])`` in [-127, 127] with
  ``s_w[c] = max|w[..., c]| / 127``.
* Activations: asymmetric per tensor: ``x = s * (q - z)``, q in [-128, 127], with
  ``s = (max - min) / 255`` over the calibration images (the range widened to hold 0) and the
  zero point ``z = round(-128 - min / s)``, so real 0 is exactly ``z``: a ReLU's output uses all
  256 levels (``z = -128``), not half of them. A skipped out-of-image tap is a real 0 and adds
  nothing; zero padding is filled with ``z``. Tensors after tanh or softsign keep ``s = 1 / 127``,
  ``z = 0``; after sigmoid or ReLU6 ``s = bound / 255``, ``z = -128``.
* Accumulators: int32, ``acc = bias_q[c] + sum((x_q - z_x) * w_q)`` with real value
  ``acc * s_in * s_w[c]`` and ``bias_q = round(bias / (s_in * s_w[c]))``; a Dense layer folds
  ``-z_x * sum(w_q)`` into its bias, convolutions subtract ``z_x`` as they load (the window's
  taps inside the input vary at the borders).
* Requantization: ``q = clamp(round(acc * M) + z_out)`` with ``M = s_in * s_w[c] / s_out`` held as
  a Q31 multiplier and a right shift (``M = multiplier / 2^shift``), rounding half up; a ReLU is
  the clamp at ``z_out``.
* Pooling after a conv runs on int8 values: max pooling on requantized values equals
  requantizing the max (rounding is monotonic); average pooling sums in int32 and divides with
  rounding (TFLite's way).
* Every other element-wise function (tanh, sigmoid, ...) and chains of them go through a
  256-entry lookup table from the int8 input to the int8 output, computed with the engine's
  float functions, or (``activation='float'``) in float at that boundary:
  ``q = round(f(v * s_in) / s_out)``. For a table fed by an accumulator, its input scale covers
  the calibrated range but no more than where the output saturates (for tanh with output
  scale 1/127, |x| > 3.1 all give 127), which keeps the table fine where it matters. Bounded
  functions (tanh, sigmoid, ...) get the output scale bound / 127, as TFLite fixes tanh's; so
  equal layers get byte-identical tables, which the C shares.
* A softmax at the very end is left to the float wrapper: ``*_predict_q`` writes the int8
  values before it (their argmax is the class), ``*_predict`` dequantizes and applies it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from layerlab.errors import ExportError
from layerlab.export.c import plan as P

MODES = ("lut", "float")
_TINY = 1e-30


@dataclass
class Stage:
    """One int32/int8 -> int8 (or int32 -> int32) transformation, per channel.

    Attributes:
        kind: 'requant' (int32 to int8; ``relu`` clamps at 0), 'lut' (requantize when the source
            is int32, then a 256-entry table), 'float' (``round(f(v * in_scale[c]) / out_scale)``
            in C float).
        source: 'int32' (an accumulator) or 'int8'.
        relu: clamp at 0 ('requant').
        multiplier, shift: per channel, for int32 sources of 'requant' and 'lut'.
        lut: 256 int8 values, entry ``q + 128`` for input q ('lut').
        ops: the element-wise ops ('float').
        in_scale: per channel real value of one input unit ('float'; also kept for the report).
        out_scale: real value of one output unit.
        lut_in_scale: real value of one table-input unit ('lut' from int32).
        in_zero, out_zero: zero points of an int8 input and of the output.
    """

    kind: str
    source: str
    relu: bool = False
    multiplier: np.ndarray | None = None
    shift: np.ndarray | None = None
    lut: np.ndarray | None = None
    ops: tuple[P.Op, ...] = ()
    in_scale: np.ndarray | None = None
    out_scale: float = 1.0
    lut_in_scale: float | None = None
    in_zero: int = 0
    out_zero: int = 0


@dataclass
class QStep:
    """int8 data of one step: scales, quantized weights and its stages."""

    in_scale: float
    out_scale: float
    kernel_q: np.ndarray | None = None  # conv HWIO, dense (in, units): int8
    weight_scale: np.ndarray | None = None  # per output channel
    bias_q: np.ndarray | None = None  # int32
    stage1: Stage | None = None  # conv/dense: int32 accumulator -> int8; elementwise: int8 -> int8
    stage2: Stage | None = None  # conv with pool: int8 -> int8 after pooling
    multipliers: tuple[int, ...] = ()  # merge: per input, real coefficient = multiplier / 2^shift
    shift: int = 0
    low: int = -128  # merge: the clamp (the zero point for a ReLU after it, zero + round(6 / scale) as the top for ReLU6)
    high: int = 127
    in_zero: int = 0  # zero point of the input (a Dense layer folds it into bias_q)
    out_zero: int = 0
    in_zeros: tuple[int, ...] = ()  # merge / concat: per input


@dataclass
class QPlan:
    """The int8 network: per step data, input/output scales, the softmax left to the wrapper."""

    steps: list[QStep]
    input_scale: float
    output_scale: float
    final_softmax: P.SoftmaxStep | None
    activation: str
    calibration_images: int
    input_zero: int = 0
    output_zero: int = 0


def fixed_point(real: float) -> tuple[int, int]:
    """``real`` as ``(multiplier, shift)`` with ``real ~= multiplier / 2^shift``, multiplier in [2^30, 2^31).

    Raises:
        ExportError: ``real >= 2^30`` (scales that far apart mean a broken calibration).
    """
    if real <= 0:
        return 0, 1
    mantissa, exponent = math.frexp(real)  # real = mantissa * 2^exponent, mantissa in [0.5, 1)
    multiplier = round(mantissa * (1 << 31))
    if multiplier == 1 << 31:
        multiplier //= 2
        exponent += 1
    shift = 31 - exponent
    if shift > 62:  # below 2^-31: every int32 accumulator rounds to 0
        return 0, 1
    if shift < 1:
        raise ExportError(f"C export (int8): requantization scale {real:g} is too large; the calibration ranges are broken")
    return multiplier, shift


def _chain(ops: tuple[P.Op, ...], x: np.ndarray) -> np.ndarray:
    """The engine's float32 result of element-wise ``ops`` on ``x``."""
    from layerlab.engine import activation, rescaling

    y = np.asarray(x, np.float32)
    for op in ops:
        y = rescaling(y, scale=op.scale, offset=op.offset) if op.is_rescale else activation(y, op.activation)
    return y


def _q8(y: np.ndarray, scale: float, zero: int = 0) -> np.ndarray:
    return np.clip(np.round(np.asarray(y, np.float64) / scale) + zero, -128, 127).astype(np.int64)


# The range of bounded activations: their output scale and zero point come from it whatever the
# calibration saw (as TFLite fixes tanh's), so equal layers share equal tables.
BOUNDS = {"tanh": (-1.0, 1.0), "sigmoid": (0.0, 1.0), "hard_sigmoid": (0.0, 1.0), "softsign": (-1.0, 1.0), "relu6": (0.0, 6.0)}


def qparams(low: float, high: float) -> tuple[float, int]:
    """``(scale, zero_point)`` of a tensor whose values span ``[low, high]`` (widened to hold 0)."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    if high - low < _TINY:
        # Zero on every calibration input (a ReLU dead there): any scale stores it. One that
        # spans [-1, 1] keeps the requantizations into and out of it in range; a tiny one made
        # the conv before it need a multiplier of 1e27.
        return 1.0 / 127.0, 0
    if low == -high:  # symmetric: zero point 0, as before
        return high / 127.0, 0
    scale = (high - low) / 255.0
    return scale, int(np.clip(round(-128.0 - low / scale), -128, 127))
_SATURATION_LIMIT = 32.0


@functools.lru_cache(maxsize=64)
def _saturation(ops: tuple[P.Op, ...], out_scale: float) -> float:
    """Smallest c such that the quantized chain output is constant on [c, 32] and on [-32, -c]
    (inf when it still changes there): a table needs no input beyond c."""
    grid = np.linspace(0.0, _SATURATION_LIMIT, 32769, dtype=np.float64)
    pos = _q8(_chain(ops, grid.astype(np.float32)), out_scale)
    neg = _q8(_chain(ops, (-grid).astype(np.float32)), out_scale)
    settled = (pos == pos[-1]) & (neg == neg[-1])
    if not settled[-2]:
        return math.inf
    k = len(grid) - 1
    while k > 0 and settled[k - 1]:
        k -= 1
    return float(grid[min(k + 1, len(grid) - 1)])


def _out_qparams(ops: tuple[P.Op, ...], calibrated: tuple[float, int]) -> tuple[float, int]:
    """Output (scale, zero) of a chain: from the bounds when it ends in a bounded activation, else calibrated."""
    last = ops[-1] if ops else None
    if last is not None and not last.is_rescale and last.activation in BOUNDS:
        return qparams(*BOUNDS[last.activation])
    return calibrated


def _lut(ops: tuple[P.Op, ...], in_scale: float, out_scale: float, in_zero: int = 0, out_zero: int = 0) -> np.ndarray:
    q = np.arange(-128, 128, dtype=np.float32)
    real = (q - np.float32(in_zero)) * np.float32(in_scale)
    return _q8(_chain(ops, real), out_scale, out_zero).astype(np.int8)  # entry q + 128


def _is_int32_safe(ops: tuple[P.Op, ...]) -> bool:
    """Ops that commute with requantization: identity and ReLU."""
    return all(not op.is_rescale and op.activation in ("linear", "relu") for op in ops)


def _stage(ops, source: str, in_scale: np.ndarray, in_range: float, out: tuple[float, int], mode: str, in_zero: int = 0) -> Stage:
    """The stage applying ``ops`` to values of ``source`` whose unit is ``in_scale`` (per channel)
    and, for int8, whose zero point is ``in_zero``; ``out`` is the output's (scale, zero)."""
    out_scale, out_zero = out
    relu = any(op.activation == "relu" for op in ops)
    if source == "int32" and _is_int32_safe(ops):
        pairs = [fixed_point(float(s) / out_scale) for s in in_scale]
        return Stage("requant", source, relu=relu, ops=tuple(ops), multiplier=np.array([m for m, _ in pairs], np.int64),
                     shift=np.array([s for _, s in pairs], np.int64), in_scale=in_scale, out_scale=out_scale, out_zero=out_zero)
    if mode == "float":
        return Stage("float", source, ops=tuple(ops), in_scale=in_scale, out_scale=out_scale, in_zero=in_zero, out_zero=out_zero)
    if source == "int8":
        return Stage("lut", source, ops=tuple(ops), lut=_lut(tuple(ops), float(in_scale[0]), out_scale, in_zero, out_zero),
                     in_scale=in_scale, out_scale=out_scale, in_zero=in_zero, out_zero=out_zero)
    cap = min(in_range, _saturation(tuple(ops), out_scale))
    lut_in = max(cap, _TINY) / 127.0  # the table's own input: symmetric, zero point 0
    pairs = [fixed_point(float(s) / lut_in) for s in in_scale]
    return Stage("lut", source, ops=tuple(ops), multiplier=np.array([m for m, _ in pairs], np.int64), shift=np.array([s for _, s in pairs], np.int64),
                 lut=_lut(tuple(ops), lut_in, out_scale, 0, out_zero), in_scale=in_scale, out_scale=out_scale, lut_in_scale=lut_in,
                 out_zero=out_zero)


def calibrate(plan: P.Plan, weights, x: np.ndarray, batch: int = 500) -> dict[str, tuple[float, float]]:
    """``(min, max)`` of every traced layer output (and of the input, key 'input') over ``x``."""
    from layerlab.network import Network

    net = Network(plan.calibration_spec, weights)
    bounds: dict[str, tuple[float, float]] = {"input": (float(np.min(x)), float(np.max(x))) if x.size else (0.0, 0.0)}
    for start in range(0, len(x), batch):
        for name, values in net.trace(x[start : start + batch]).items():
            low, high = bounds.get(name, (np.inf, -np.inf))
            bounds[name] = (min(low, float(np.min(values))), max(high, float(np.max(values))))
    return bounds


def check_int8(plan: P.Plan) -> None:
    """Refuse, before any calibration data is read, a plan with a step that has no int8 form.

    Raises:
        ExportError: a softmax that is not the last step, a BatchNormalization that cannot fold.
    """
    for index, step in enumerate(plan.steps):
        where = f"C export (int8): step {index} ({step.describe()})"
        if isinstance(step, P.SoftmaxStep) and not (index == len(plan.steps) - 1 and index > 0):
            raise ExportError(f"{where}: softmax has no int8 form except as the last layer. Export float32 instead")
        if isinstance(step, P.PReLUStep):
            raise ExportError(f"{where}: PReLU's per-value slopes have no int8 form yet. Export float32 instead")
        if isinstance(step, P.MergeStep):
            odd = [op.describe() for op in step.pre if op.is_rescale or op.activation not in MERGE_OPS]
            if odd:
                raise ExportError(f"{where}: int8 merges take ReLU or ReLU6 after them, not {', '.join(odd)}. Export float32 instead")
            if step.operation == "multiply" and len(step.sources) != 2:
                raise ExportError(f"{where}: int8 Multiply takes two inputs, not {len(step.sources)}. Export float32 instead")
        if isinstance(step, P.AffineStep):
            raise ExportError(f"{where}: a BatchNormalization that does not directly follow a linear Conv2D or Dense "
                              "cannot be folded, and has no int8 form. Export float32 instead")


def quantize(plan: P.Plan, weights, x_calibration: np.ndarray, activation: str = "lut") -> QPlan:
    """Quantize every step of ``plan`` (see the module docstring).

    Args:
        plan: the lowered network (float weights, BN folded).
        weights: the network's Keras-layout weights (for the calibration trace).
        x_calibration: ``(N, *input_shape)`` float32 calibration inputs.
        activation: 'lut' (tables) or 'float' (exact float at the boundary).

    Raises:
        ExportError: a step with no int8 form (an unfoldable BatchNormalization, a softmax that
            is not last, a copy of rank > 4) or broken scales.
    """
    if activation not in MODES:
        raise ExportError(f"C export (int8): activation={activation!r} is not known, expected one of {MODES}")
    check_int8(plan)
    bounds = calibrate(plan, plan.weights or weights, x_calibration)  # the weights of the spec as lowered
    ranges = {name: max(abs(low), abs(high)) for name, (low, high) in bounds.items()}  # max |x|: table caps

    def qp(tap: str) -> tuple[float, int]:
        return qparams(*bounds[tap])

    steps: list[QStep] = []
    values = {"input": qp("input")}  # value id -> its (scale, zero point) (views share their value's)
    final_softmax = None
    cur = values["input"]
    for index, step in enumerate(plan.steps):
        where = f"C export (int8): step {index} ({step.describe()})"
        cur = values[step.sources[0]]
        if isinstance(step, P.MergeStep):
            q = _quantize_merge(step, [values[v] for v in step.sources], _out_qparams(step.pre, qp(step.taps["out"])), where)
            cur = (q.out_scale, q.out_zero)
        elif isinstance(step, P.ConcatStep):
            q = _quantize_concat([values[v] for v in step.sources], qp(step.taps["out"]), where)
            cur = (q.out_scale, q.out_zero)
        elif isinstance(step, (P.ConvStep, P.DepthwiseStep, P.DenseStep)):
            q, cur = _quantize_weighted(step, cur, ranges, qp, activation, where)
        elif isinstance(step, P.ElementwiseStep):
            out = _out_qparams(step.ops, qp(step.taps["out"]))
            q = QStep(cur[0], out[0], in_zero=cur[1], out_zero=out[1],
                      stage1=_stage(step.ops, "int8", np.array([cur[0]]), ranges[step.taps["in"]], out, activation, cur[1]))
            cur = out
        elif isinstance(step, (P.PoolStep, P.PadStep, P.CopyStep, P.RemapStep)):
            # scale- and zero-preserving: max, real zeros (the zero point), moves; the mean rounds in the same unit
            q = QStep(cur[0], cur[0], in_zero=cur[1], out_zero=cur[1])
        else:  # the last step, a softmax (check_int8 refused every other kind)
            final_softmax = step
            cur = values[step.sources[0]]
            break
        steps.append(q)
        values[step.target] = cur
    return QPlan(steps=steps, input_scale=values["input"][0], output_scale=cur[0], final_softmax=final_softmax,
                 activation=activation, calibration_images=len(x_calibration), input_zero=values["input"][1], output_zero=cur[1])


MERGE_OPS = ("linear", "relu", "relu6")


def _quantize_merge(step: P.MergeStep, ins: list[tuple[float, int]], out: tuple[float, int], where: str) -> QStep:
    """Each input (or, for Multiply, the product) to the output scale with one common shift.

    ``out_q = z_out + clamp((sum_i (in_q[i] - z_i) * multiplier[i] + 2^(shift-1)) >> shift)`` for
    Add, Subtract and Average (coefficients s_i / s_out, negated for Subtract's second, divided by
    n for Average); Maximum / Minimum take the max / min of the inputs so requantized (rounding is
    monotonic); Multiply requantizes ``(in0_q - z_0) * (in1_q - z_1)`` with s_0 * s_1 / s_out. A
    ReLU after the merge is the clamp at z_out, a ReLU6 also the clamp at z_out + round(6 / s_out).
    """
    n = len(ins)
    in_scales = [s for s, _ in ins]
    out_scale, out_zero = out
    if step.operation == "multiply":
        coefficients = [in_scales[0] * in_scales[1] / out_scale]
    else:
        coefficients = [s / out_scale for s in in_scales]
        if step.operation == "average":
            coefficients = [c / n for c in coefficients]
        if step.operation == "subtract":
            coefficients[1] = -coefficients[1]
    top = max(abs(c) for c in coefficients)
    shift = 29 - math.floor(math.log2(top)) if top > 0 else 31
    if not 1 <= shift <= 56:
        raise ExportError(f"{where}: merge coefficients {coefficients} are out of range; the calibration ranges are broken")
    multipliers = tuple(int(round(c * 2.0**shift)) for c in coefficients)
    acts = {op.activation for op in step.pre}
    low = out_zero if acts & {"relu", "relu6"} else -128
    high = min(127, out_zero + int(round(6.0 / out_scale))) if "relu6" in acts else 127
    return QStep(in_scales[0], out_scale, multipliers=multipliers, shift=shift, low=low, high=high, in_zero=ins[0][1],
                 out_zero=out_zero, in_zeros=tuple(z for _, z in ins))


def _quantize_concat(ins: list[tuple[float, int]], out: tuple[float, int], where: str) -> QStep:
    """Each input requantized to the output's scale (one shift for all): ``z_out + ((q - z_i) * m_i + half) >> shift``."""
    coefficients = [s / out[0] for s, _ in ins]
    shift = 29 - math.floor(math.log2(max(coefficients)))
    if not 1 <= shift <= 56:
        raise ExportError(f"{where}: Concatenate scales {coefficients} are out of range; the calibration ranges are broken")
    return QStep(ins[0][0], out[0], multipliers=tuple(int(round(c * 2.0**shift)) for c in coefficients), shift=shift,
                 in_zero=ins[0][1], out_zero=out[1], in_zeros=tuple(z for _, z in ins))


def _quantize_weighted(step, cur: tuple[float, int], ranges, qp, mode: str, where: str) -> tuple[QStep, tuple[float, int]]:
    in_scale, in_zero = cur
    kernel = step.kernel_hwio if isinstance(step, (P.ConvStep, P.DepthwiseStep)) else step.kernel
    axes = tuple(range(kernel.ndim - 1))
    absmax = np.max(np.abs(kernel.astype(np.float64)), axis=axes)  # per output channel
    w_scale = np.where(absmax > 0, absmax / 127.0, 1.0)
    kernel_q = np.clip(np.round(kernel / w_scale), -127, 127).astype(np.int8)
    acc_scale = in_scale * w_scale  # real value of one accumulator unit, per channel
    bias_q = None
    if step.bias is not None:
        bias_q = np.round(step.bias.astype(np.float64) / acc_scale).astype(np.int64)
    if isinstance(step, P.DenseStep) and in_zero:  # sum((x - z) * w) = sum(x * w) - z * sum(w): into the bias
        fold = -in_zero * kernel_q.astype(np.int64).sum(axis=0)
        bias_q = fold if bias_q is None else bias_q + fold
    if bias_q is not None and np.max(np.abs(bias_q)) >= 2**31 - 1:
        raise ExportError(f"{where}: a bias does not fit an int32 accumulator at this scale; the weights are degenerate")
    pool = getattr(step, "pool", None)
    post = getattr(step, "post", ())
    taps = step.taps
    if pool is None:
        out = _out_qparams(step.pre, qp(taps["out"]))
        stage1 = _stage(step.pre, "int32", acc_scale, ranges[taps["acc"]], out, mode)
        stage2 = None
    elif _is_int32_safe(step.pre):
        # Requantize before pooling: rounding is monotonic, so the max of the requantized values
        # is the requantized max. With a table after the pool, requantize straight to its input
        # scale (capped where the table saturates: clamping commutes with max).
        out = _out_qparams(post, qp(taps["out"]))
        if pool.kind == "avg":
            # the conv outputs' own range: a mean of values clipped to the (narrower) range of the means is off
            mid = qp(taps.get("pre_out", taps["acc"]))
            out = out if post else mid
        elif not post:
            mid = out
        elif mode == "lut":
            mid = (max(min(ranges[taps["pool"]], _saturation(tuple(post), out[0])), _TINY) / 127.0, 0)
        else:
            mid = qp(taps["pool"])
        stage1 = _stage(step.pre, "int32", acc_scale, ranges[taps["acc"]], mid, mode)
        stage2 = _stage(post, "int8", np.array([mid[0]]), ranges[taps["pool"]], out, mode, mid[1]) if post else None
    else:
        mid = _out_qparams(step.pre, qp(taps["pre_out"]))
        stage1 = _stage(step.pre, "int32", acc_scale, ranges[taps["acc"]], mid, mode)
        out = _out_qparams(post, qp(taps["out"])) if post else mid
        stage2 = _stage(post, "int8", np.array([mid[0]]), ranges[taps["pool"]], out, mode, mid[1]) if post else None
    return QStep(in_scale, out[0], kernel_q=kernel_q, weight_scale=w_scale, bias_q=bias_q, stage1=stage1, stage2=stage2,
                 in_zero=in_zero, out_zero=out[1]), out
