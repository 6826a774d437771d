"""torch.nn.functional activations with their keyword arguments, built from op-table primitives."""

from __future__ import annotations

import sympy

from .api_ops import EW, _as_var, where
from .reductions import log_softmax, softmax

_SQRT_2_OVER_PI = float(sympy.sqrt(2 / sympy.pi))


def relu(input, inplace=False):
    return EW["relu"](input)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    return EW["leaky_relu"](input, float(negative_slope))


def elu(input, alpha=1.0, inplace=False):
    return EW["elu"](input, float(alpha))


def selu(input, inplace=False):
    return EW["selu"](input)


def gelu(input, approximate="none"):
    if approximate == "tanh":
        x = _as_var(input)
        return 0.5 * x * (1 + EW["tanh"](_SQRT_2_OVER_PI * (x + 0.044715 * x**3)))
    if approximate != "none":
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return EW["gelu"](input)


def softplus(input, beta=1.0, threshold=20.0):
    # torch switches to the identity where beta * x > threshold; so does symjac, exactly.
    x = _as_var(input)
    smooth = EW["softplus"](x * float(beta)) / float(beta)
    return where(x * float(beta) > float(threshold), x, smooth)


def silu(input, inplace=False):
    return input * EW["sigmoid"](input)


def logsigmoid(input):
    return -EW["softplus"](-_as_var(input))


def _torch_softmax(input, dim=None, _stacklevel=3, dtype=None):
    return softmax(input, -1 if dim is None else dim)


def _torch_log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    return log_softmax(input, -1 if dim is None else dim)


# --- issue 13: hard activations ----------------------------------------------------------------


def relu6(input, inplace=False):
    return EW["relu6"](input)


def hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
    if min_val > max_val:
        raise ValueError(f"hardtanh: min_val ({min_val}) cannot be greater than max_val ({max_val})")
    return EW["hardtanh"](input, float(min_val), float(max_val))


def hardswish(input, inplace=False):
    return EW["hardswish"](input)


def hardsigmoid(input, inplace=False):
    return EW["hardsigmoid"](input)


HARD_ACTIVATIONS = {
    "relu6": relu6,
    "hardtanh": hardtanh,
    "hardswish": hardswish,
    "hardsigmoid": hardsigmoid,
}

TORCH_ACTIVATIONS = {
    "relu": relu,
    "leaky_relu": leaky_relu,
    "elu": elu,
    "selu": selu,
    "gelu": gelu,
    "softplus": softplus,
    "silu": silu,
    "logsigmoid": logsigmoid,
    "log_sigmoid": logsigmoid,
    "softmax": _torch_softmax,
    "log_softmax": _torch_log_softmax,
    **HARD_ACTIVATIONS,
}
