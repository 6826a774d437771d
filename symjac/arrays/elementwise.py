"""Elementwise primitives at the array level: one scalar formula, differentiated once by SymPy.

An elementwise op's element is a SymPy expression of its arguments (the op table's ``sympy``
entry). Here it is built on scalar symbols, its partial derivatives are taken exactly with
``sympy.diff``, and value and partials are turned into NumPy functions with ``lambdify``, so
applying the op to a million elements costs one vectorised call, not a million expressions.
"""

from __future__ import annotations

import functools
import math
import types

import numpy as np
import sympy
from sympy.printing.numpy import NumPyPrinter

from ..trace.ops import ELEMENTWISE, element_formula, exact_partial

# NumPy spellings of symjac's own SymPy functions (``sympy.lambdify`` knows the standard ones).
NUMPY_FUNCTIONS = {
    "StopGradient": lambda x: x,
    "Floor": np.floor,
    "Ceil": np.ceil,
    "Trunc": np.trunc,
    "Round": np.rint,  # half to even, as numpy.round and torch.round
    "Sign": np.sign,
    "Cbrt": np.cbrt,
    "CopySign": np.copysign,
    "Softplus": lambda x: np.logaddexp(0.0, x),
    "LogAddExp": np.logaddexp,
    "sigmoid": lambda x: _sigmoid(np.asarray(x, dtype=float)),
    "tanh": np.tanh,
    "atan2": np.arctan2,
    "TanhDerivative": lambda x: _tanh_derivative(np.asarray(x, dtype=float)),
    "NormSqrt": np.sqrt,
    "NormRoot": np.power,
    "Power": np.power,
}


def _sigmoid(x):
    e = np.exp(-np.abs(x))  # never overflows, as the kernels' form
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _tanh_derivative(x):
    t = np.exp(-2 * np.abs(x))  # 4t/(1+t)^2: 1 - tanh(x)^2 without cancellation
    return 4 * t / (1 + t) ** 2


# Printed by name; a custom function without a NumPy form sends its op to the element road.
_USER_FUNCTIONS = {name: name for name in NUMPY_FUNCTIONS}


def _special(name: str):
    """erf/erfc over arrays (NumPy has none): SciPy's, imported at first use (it costs a second),
    else the math module's, element by element."""

    def apply(x):
        try:
            from scipy import special

            return getattr(special, name)(x)
        except ImportError:  # scipy is an optional extra
            return np.vectorize(getattr(math, name), otypes=[float])(x)

    return apply


# What NumPy's printer calls ``math.*``.
_VECTOR_MATH = types.SimpleNamespace(
    erf=_special("erf"), erfc=_special("erfc"), pi=math.pi, e=math.e, inf=math.inf, nan=math.nan
)


class Unsupported(Exception):
    """An op the array level cannot evaluate: the graph takes the per-element road."""


@functools.cache
def rule(op: str, boolean_args: tuple[bool, ...]):
    """``(value, partials)`` NumPy functions of ``op`` for arguments that are masks or reals.

    ``partials[k]`` is None for a mask argument (it has no tangent).
    """
    syms, expr, partials = formulas(op, boolean_args)
    modules = [{**NUMPY_FUNCTIONS, "numpy": np, "math": _VECTOR_MATH}]
    value = _lambdify(syms, expr, modules)
    return value, tuple(None if d is None else _lambdify(syms, d, modules) for d in partials)


@functools.cache
def second_rule(op: str, boolean_args: tuple[bool, ...]):
    """``second[i][j]``: NumPy functions of ``op``'s second partial derivatives (None where zero
    or for a mask), for the curvature terms of second derivatives (:mod:`symjac.arrays.second`)."""
    syms, _, partials = formulas(op, boolean_args)
    modules = [{**NUMPY_FUNCTIONS, "numpy": np, "math": _VECTOR_MATH}]
    table = []
    for d in partials:
        row = []
        for s, is_bool in zip(syms, boolean_args, strict=True):
            dd = None if d is None or is_bool else exact_partial(d, s)
            row.append(None if dd is None or dd == 0 else _lambdify(syms, dd, modules))
        table.append(tuple(row))
    return tuple(table)


@functools.cache
def formulas(op: str, boolean_args: tuple[bool, ...]):
    """``(symbols, element, partials)``: ``op``'s scalar formula on symbols ``a0, a1, ...`` (``c0``
    for a mask) and its exact partial derivatives (None where zero or for a mask)."""
    try:
        syms, expr = element_formula(op, boolean_args)
    except Exception as exc:  # an op whose formula does not take free symbols
        raise Unsupported(f"{op}: {exc}") from None
    partials = []
    for s, is_bool in zip(syms, boolean_args, strict=True):
        if is_bool or ELEMENTWISE[op].boolean:
            partials.append(None)
        else:
            d = exact_partial(expr, s)
            partials.append(None if d == 0 else d)
    return syms, expr, tuple(partials)


def _lambdify(syms, expr, modules):
    names = {f.func.__name__ for f in expr.atoms(sympy.Function)} - {"Piecewise"}
    unknown = {n for n in names if n in {"MaxN", "MinN"} or (n[0].isupper() and n not in NUMPY_FUNCTIONS)}
    if unknown - {"Abs"}:
        raise Unsupported(f"no NumPy form for {sorted(unknown)}")
    try:
        # An explicit namespace: lambdify's "numpy" module string imports all of numpy's lazy
        # submodules (f2py, testing) on its first use, 0.4 s.
        printer = NumPyPrinter({"allow_unknown_functions": True, "user_functions": _USER_FUNCTIONS})
        return sympy.lambdify(syms, expr, modules=modules, printer=printer, cse=True)
    except Exception as exc:  # a form NumPy's printer lacks (Derivative, an unknown class)
        raise Unsupported(str(exc).splitlines()[0]) from None
