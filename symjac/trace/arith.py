"""Element arithmetic of traced expressions, in one of two forms.

Inspection (``symjac.symbolic``, the functional API) builds SymPy's evaluated forms: sorted,
collected, a number distributed over a sum, so that printed formulas read as SymPy's.

``symjac.compile`` only needs the same values as code, and evaluation was most of a large
build (a 2048-state Brusselator: 1.9 s of 5.6, mostly the assumptions system deciding facts
about every new product). Inside ``light()`` arithmetic builds unevaluated sums, products and
powers instead: nested ones flattened, their numbers folded into one exact coefficient or
constant term, ``0*x``, ``0+x``, ``1*x``, ``x**1`` and ``x**0`` folded as SymPy folds them, and
nothing sorted, collected or distributed. ``x - x`` therefore stays a sum (its derivative is an
explicit zero, as in torch, whose graph also connects ``x`` to it).
"""

from __future__ import annotations

import contextlib
import contextvars
import operator
from functools import reduce

import sympy

from .functions import Power

_S = sympy.S
_LIGHT = contextvars.ContextVar("symjac_light_arithmetic", default=False)


@contextlib.contextmanager
def light():
    """Build unevaluated (light) arithmetic in the body: the form ``symjac.compile`` lowers."""
    token = _LIGHT.set(True)
    try:
        yield
    finally:
        _LIGHT.reset(token)


def _exprs(*xs) -> bool:
    """Whether light forms apply: SymPy expressions (not booleans, not Python numbers)."""
    return _LIGHT.get() and all(isinstance(x, sympy.Expr) for x in xs)


def _is_value(x, value: float) -> bool:
    if x.is_Rational:
        return x.p == value * x.q
    return x.is_Float and float(x) == value


def add(a, b):
    return total([a, b]) if _exprs(a, b) else a + b


def sub(a, b):
    return total([a, neg(b)]) if _exprs(a, b) else a - b


def mul(a, b):
    return product([a, b]) if _exprs(a, b) else a * b


def neg(a):
    return product([_S.NegativeOne, a]) if _exprs(a) else -a


def div(a, b):
    if not _exprs(a, b) or (b.is_Number and (a.is_Number or _is_value(b, 0.0))):
        return a / b
    if b.is_Number:  # x/3 as (1/3)*x: the code generator divides by 3 again
        return product([1 / b, a])
    return product([a, sympy.Pow(b, -1, evaluate=False)])


def power(a, b):
    if isinstance(b, sympy.Basic) and b.free_symbols:  # a traced exponent: torch's derivative at 0
        return Power(sympy.sympify(a), b)
    if not _exprs(a, b) or (a.is_Number and b.is_Number):
        return a**b
    if _is_value(b, 1.0):
        return a
    if _is_value(b, 0.0):
        return _S.One
    if a.is_Pow and a.exp.is_Number and b.is_Number:
        # SymPy's own rules for a power of a power ((x**2)**(1/2) is |x|, sqrt(x)**2 is x),
        # as the functional API has them: the derivative at 0 then is its, not 0/0.
        return sympy.Pow(a, b)
    return sympy.Pow(a, b, evaluate=False)


def total(terms):
    """The sum of ``terms``."""
    if not _exprs(*terms):
        return sympy.Add(*terms)
    numbers, rest = _split(terms, sympy.Add)
    constant = reduce(operator.add, numbers) if numbers else None
    if constant is not None and _is_value(constant, 0.0):
        constant = None
    if not rest:
        return _S.Zero if constant is None else constant
    if constant is None and len(rest) == 1:
        return rest[0]
    return unchecked(sympy.Add, rest if constant is None else [constant, *rest])


def product(factors):
    """The product of ``factors``."""
    if not _exprs(*factors):
        return sympy.Mul(*factors)
    numbers, rest = _split(factors, sympy.Mul)
    coeff = reduce(operator.mul, numbers) if numbers else _S.One
    if not rest:
        return coeff
    if _is_value(coeff, 0.0):
        return _S.Zero  # 0*x is 0, as SymPy has it
    rest = _combine_powers(rest)
    if not rest:
        return coeff
    if _is_value(coeff, 1.0):
        return rest[0] if len(rest) == 1 else unchecked(sympy.Mul, rest)
    return unchecked(sympy.Mul, [coeff, *rest])  # the coefficient first, as SymPy orders it


def _base_exp(x):
    return (x.base, x.exp) if x.is_Pow and x.exp.is_Number else (x, _S.One)


def _combine_powers(factors):
    """Powers of one base as one power (``x * x**-1`` is 1, ``x*x`` is ``x**2``), as SymPy's
    product has them: ``x/x`` then has derivative 0 at 0, as in the functional API."""
    pairs = [_base_exp(f) for f in factors]
    if len({b for b, _ in pairs}) == len(pairs):
        return factors
    exps: dict = {}
    for b, e in pairs:
        exps[b] = exps.get(b, _S.Zero) + e
    out = []
    for b, e in exps.items():
        if e.is_Number and e == 1:
            out.append(b)
        elif not (e.is_Number and e == 0):
            out.append(power(b, e))
    return out


def _split(args, cls) -> tuple[list, list]:
    """The numbers and the other operands of ``args``, nested ``cls`` flattened."""
    numbers, rest = [], []
    for x in args:
        for t in x.args if type(x) is cls else (x,):
            (numbers if t.is_Number else rest).append(t)
    return numbers, rest


def unchecked(cls, args):
    """``cls(*args, evaluate=False)`` (an Add or Mul) without its checks, for operands that are
    commutative SymPy expressions already: those checks were much of a large build."""
    return cls._from_args(args, is_commutative=True)
