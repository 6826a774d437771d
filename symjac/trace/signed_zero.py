"""Constant negative zeros: rewrite the few ops that read the sign of a zero into exact +0 forms.

IEEE 754 gives -0.0 a sign that some functions read: ``arctan2(-0.0, -1) = -pi``,
``copysign(1, -0.0) = -1``,
``1 / -0.0 = -inf``, ``(-0.0) ** -1 = -inf``. SymPy has one zero, so a constant -0.0 would take
the +0 branch on the element road (issue 12). Rather than carry a signed zero through SymPy,
such an op is recorded, when a constant argument holds a -0.0, as an identity that only needs
+0; every road (elements, arrays, compile, symbolic) then agrees with NumPy's value and torch's
derivative. Ordinary constants pay one ``signbit`` test, for these ops only.
"""

from __future__ import annotations

import math

import numpy as np

from .tensor import Var


def _constant_values(x):
    """The values of a constant float argument as an array, or None (traced, or not float)."""
    if type(x) is float or type(x) is int:
        return np.asarray(float(x))
    if isinstance(x, Var):
        x = x._constant()
    elif type(x).__module__.startswith("torch"):
        from .api_ops import _is_torch_tensor, _torch_to_numpy

        x = _torch_to_numpy(x) if _is_torch_tensor(x) else None
    elif isinstance(x, np.floating):
        x = np.asarray(x)
    return x if type(x) is np.ndarray and x.dtype.kind == "f" else None


def negative_zeros(x):
    """The mask of -0.0 entries of a constant argument, or None (traced, or no -0.0 in it)."""
    if type(x) is float:  # the common case, without an array
        return np.True_ if x == 0 and math.copysign(1.0, x) < 0 else None
    values = _constant_values(x)
    if values is None:
        return None
    mask = np.signbit(values) & (values == 0)
    return mask if mask.any() else None


def _zeros(x):
    """The mask of zero entries (either sign) of a constant argument, or None."""
    if type(x) is float or type(x) is int:
        return np.True_ if x == 0 else None
    values = _constant_values(x)
    if values is None:
        return None
    mask = values == 0
    return mask if mask.any() else None


def _cleared(x, mask, fill=0.0):
    """x with ``fill`` at each masked entry (a NumPy array of x's dtype, or a float)."""
    if type(x) is float or type(x) is int:
        return fill
    values = _constant_values(x)
    return np.where(mask, np.asarray(fill, values.dtype), values)


def _select(where, mask, at_negative_zero, otherwise):
    # A constant mask folds per element, so the other branch costs nothing after expansion.
    return at_negative_zero if mask.all() else where(mask, at_negative_zero, otherwise)


def _arctan2(ew, where, args, masks):
    y, x = args
    if masks[0] is not None:  # arctan2 is odd in y, signed zeros included
        sign = np.where(masks[0], -1.0, 1.0)
        return ew["mul"](ew["arctan2"](_cleared(y, masks[0]), x), -1.0 if masks[0].all() else sign)
    # arctan2(y, -0) is arctan2(y, +0) except at y = ±0, where it is ±pi = arctan2(y, -1); "+ y"
    # keeps torch's 0 derivative there (arctan2(y, -1) alone has slope -1 in y).
    main = ew["arctan2"](y, _cleared(x, masks[1]))
    at_zero = ew["add"](ew["arctan2"](y, -1.0), y)
    on_axis = ew["equal"](y, 0.0)
    if not masks[1].all():
        on_axis = ew["logical_and"](on_axis, masks[1])
    return where(on_axis, at_zero, main)


def _by_zero(ew, where, name, a, b):
    zeros = _zeros(b)
    if zeros is None:
        return None
    # a / ±0.0 is a * ±inf exactly (nan for a = 0 or nan, ±inf otherwise); SymPy's a / 0 is
    # zoo * a, which has no sign (and no standard printing).
    infinities = np.where(np.signbit(_constant_values(b)), -math.inf, math.inf)
    scaled = ew["mul"](a, float(infinities) if zeros.all() and infinities.ndim == 0 else infinities)
    if name == "floor_divide":
        scaled = ew["floor"](scaled)  # floor(±inf) = ±inf; keeps floor's zero derivative
    # 1.0 where the branch is not taken: no inf or nan computed there
    return _select(where, zeros, scaled, ew[name](a, _cleared(b, zeros, 1.0)))


def _pow(ew, where, args, masks):
    base, exponent = args
    if masks[0] is None:  # x ** -0.0 is 1, as x ** +0.0
        return None
    power = ew["pow"](_cleared(base, masks[0]), exponent)
    # (-0) ** e is -(0 ** e) for an odd integer e, else 0 ** e
    odd = ew["equal"](ew["remainder"](exponent, 2.0), 1.0)
    return _select(where, masks[0], where(odd, ew["neg"](power), power), power)


def _copysign(ew, where, args, masks):
    if masks[1] is None:  # a -0 magnitude: |a| is 0 either way
        return None
    # copysign reads only b's sign bit: -1.0 carries the same one, and SymPy keeps it
    return ew["copysign"](args[0], -1.0 if masks[1].all() else _cleared(args[1], masks[1], -1.0))


REWRITES = {
    "arctan2": _arctan2,
    "copysign": _copysign,
    "pow": _pow,
}
DIVISIONS = ("div", "floor_divide")


def fold(op, args):
    """The value of an elementwise op whose arguments are all float constants, by NumPy, or None.

    ``-0.0 * np.ones(3)`` in a traced function multiplies constants the trace recorded (the
    factories are traced, :mod:`symjac.trace.assembly`); through SymPy the product would be +0. NumPy
    computes it as the user's code would have, signed zeros included, and the trace records the
    result as one constant.
    """
    # maximum also answers to fmax, which treats NaN otherwise: those stay symjac's
    ufunc = getattr(np, op.numpy[0], None) if op.numpy and not op.boolean else None
    if not isinstance(ufunc, np.ufunc) or op.name in ("maximum", "minimum"):
        return None
    if not any(isinstance(a, Var) for a in args):
        return None
    values = []
    for a in args:
        if type(a) is float or type(a) is int:
            values.append(a)
            continue
        if isinstance(a, Var):
            a = a._constant()
        elif isinstance(a, np.floating):
            a = np.asarray(a)
        if type(a) is not np.ndarray or a.dtype.kind != "f":
            return None
        values.append(a)
    with np.errstate(all="ignore"):
        return np.asarray(ufunc(*values))


def rewrite(name: str, args, ew, where):
    """The op recorded without constant -0.0 arguments, or None when it needs no rewrite."""
    if len(args) != 2:
        return None
    if name in DIVISIONS:
        return _by_zero(ew, where, name, *args)
    masks = [negative_zeros(a) for a in args]
    if masks[0] is None and masks[1] is None:
        return None
    return REWRITES[name](ew, where, args, masks)
