"""Excel formulas for element-wise activations, as Keras 3 defines them.

Each template takes a cell reference ``x`` (never a long expression: a fused activation first
writes its pre-activation block, so ``x`` may appear twice at no cost). Overflow-free forms are
used where Excel's EXP would overflow (it gives #NUM! above exp(709)):

* ``sigmoid``: ``1 / (1 + exp(-x))`` for x >= 0, ``exp(x) / (1 + exp(x))`` otherwise;
* ``softplus``: ``max(x, 0) + ln(1 + exp(-|x|))`` (``logaddexp(x, 0)``).

Keras quirks as in ``layerlab.engine.activations``: ``gelu`` is the exact erf form,
``hard_sigmoid`` is Keras 3's ``relu6(x + 3) / 6``, ``leaky_relu`` has slope 0.2. Softmax is not
element-wise and is written by ``excel_formulas`` (max, exp, sum and quotient cells).
"""

from __future__ import annotations

# SELU constants as jax.nn.selu / keras.activations.selu.
_SELU_ALPHA = "1.6732632423543772"
_SELU_SCALE = "1.0507009873554805"

_SIGMOID = "IF({x}>=0,1/(1+EXP(-{x})),EXP({x})/(1+EXP({x})))"

ELEMENTWISE: dict[str, str] = {
    "linear": "{x}",
    "relu": "MAX(0,{x})",
    "relu6": "MIN(MAX(0,{x}),6)",
    "leaky_relu": "IF({x}>=0,{x},0.2*{x})",
    "tanh": "TANH({x})",
    "sigmoid": _SIGMOID,
    "hard_sigmoid": "MAX(0,MIN(6,{x}+3))/6",
    "hard_silu": "{x}*(MAX(0,MIN(6,{x}+3))/6)",
    "hard_swish": "{x}*(MAX(0,MIN(6,{x}+3))/6)",
    "softplus": "MAX({x},0)+LN(1+EXP(-ABS({x})))",
    "softsign": "{x}/(1+ABS({x}))",
    "silu": "{x}*" + _SIGMOID,
    "swish": "{x}*" + _SIGMOID,
    "elu": "IF({x}>0,{x},EXP({x})-1)",
    "selu": _SELU_SCALE + "*IF({x}>0,{x}," + _SELU_ALPHA + "*(EXP({x})-1))",
    "gelu": "0.5*{x}*(1+ERF({x}/SQRT(2)))",
    "exponential": "EXP({x})",
}

SOFTMAX = "softmax"
SUPPORTED = (*ELEMENTWISE, SOFTMAX)


def elementwise(activation: str, x: str) -> str:
    """The formula (without '=') of ``activation`` applied to the cell reference ``x``."""
    return ELEMENTWISE[activation].format(x=x)


def number(value: float) -> str:
    """A float literal for a formula, in parentheses when negative (Excel reads ``+-1`` oddly)."""
    text = repr(float(value))
    return f"({text})" if text.startswith("-") else text
