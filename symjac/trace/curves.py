"""Curves given by constants: polynomials (numpy.polyval) and piecewise-linear tables (numpy.interp).

Both are built from op-table primitives, so their derivatives are exact: Horner's rule for a
polynomial, and a chain of ``where`` over the constant breakpoints for a table, whose
derivative is the slope of the segment x falls in (the right-hand one at a breakpoint).
"""

from __future__ import annotations

import numpy as np

from .. import errors
from .api_ops import _find_trace, _is_torch_tensor, _torch_to_numpy, lift, where
from .tensor import Var


def polyval(p, x):
    """numpy.polyval: ``p[0] * x**(n-1) + ... + p[n-1]`` by Horner's rule."""
    trace = _find_trace((p, x))
    coeffs = lift(trace, p)
    if coeffs.ndim != 1:
        raise ValueError(f"polyval: coefficients must be 1-d, got shape {coeffs.shape}")
    x = lift(trace, x)
    if coeffs.shape[0] == 0:
        return x * 0.0
    y = coeffs[0] + x * 0.0  # the result has x's shape even for a constant polynomial
    for k in range(1, coeffs.shape[0]):
        y = y * x + coeffs[k]
    return y


def _constant(value, name) -> np.ndarray:
    if isinstance(value, Var):
        raise errors.UntraceableError(
            f"interp: {name} must be known while tracing (the breakpoints decide which segment "
            "applies); pass a NumPy array or a constant tensor"
        )
    arr = _torch_to_numpy(value) if _is_torch_tensor(value) else np.asarray(value, dtype=float)
    return arr.astype(float)


def interp(x, xp, fp, left=None, right=None, period=None):
    """numpy.interp over constant, increasing breakpoints ``xp``; ``x`` and ``fp`` may be traced."""
    if period is not None:
        raise NotImplementedError("interp: period= is not supported; wrap x into one period first")
    xp = _constant(xp, "xp")
    if xp.ndim != 1 or xp.size == 0:
        raise ValueError(f"interp: xp must be a non-empty 1-d array, got shape {xp.shape}")
    if np.any(np.diff(xp) <= 0):
        raise ValueError("interp: xp must be strictly increasing")
    trace = _find_trace((x, fp, left, right))
    x, fp = lift(trace, x), lift(trace, fp)
    if fp.shape != xp.shape:
        raise ValueError(f"interp: fp has shape {fp.shape}, xp has shape {xp.shape}")
    n = xp.size
    first, last = fp[0], fp[n - 1]
    result = where(x > xp[-1], last if right is None else right, last)
    for k in range(n - 2, -1, -1):
        slope = (fp[k + 1] - fp[k]) / float(xp[k + 1] - xp[k])
        result = where(x < xp[k + 1], fp[k] + slope * (x - float(xp[k])), result)
    return where(x < xp[0], first if left is None else left, result)
