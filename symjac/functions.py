"""Custom SymPy functions for primitives SymPy lacks, each with its derivative and LLVM lowering.

SymPy owns every derivative, so a primitive whose torch derivative differs from SymPy's (a step
function's derivative is 0, not a DiracDelta) is a ``sympy.Function`` subclass with its own
``fdiff`` (the pattern of ``sympy/codegen/cfunctions.py``). ``_llvm`` names how
:mod:`symjac.codegen` lowers it: an LLVM intrinsic or libm function, or a Python emitter.
"""

from __future__ import annotations

import math

import sympy


class StopGradient(sympy.Function):
    """``x.detach()``: the value of x, with derivative 0."""

    nargs = 1
    is_real = True
    _llvm = "identity"

    def fdiff(self, argindex=1):
        return sympy.S.Zero

    @classmethod
    def eval(cls, arg):
        if arg.is_Number or isinstance(arg, StopGradient):
            return arg
        return None


class _StepFunction(sympy.Function):
    """Piecewise-constant functions: derivative 0 almost everywhere, as torch takes it."""

    nargs = 1
    is_real = True
    _numeric = None

    def fdiff(self, argindex=1):
        return sympy.S.Zero

    @classmethod
    def eval(cls, arg):
        if arg.is_Number and arg.is_finite and cls._numeric is not None:
            return cls._numeric(arg)
        return None


class Floor(_StepFunction):
    _llvm = "llvm.floor"
    _numeric = staticmethod(sympy.floor)


class Ceil(_StepFunction):
    _llvm = "llvm.ceil"
    _numeric = staticmethod(sympy.ceiling)


class Trunc(_StepFunction):
    _llvm = "llvm.trunc"
    _numeric = staticmethod(lambda a: sympy.Integer(int(a)))


class Round(_StepFunction):
    # Round half to even, as numpy.round and torch.round do.
    _llvm = "llvm.roundeven"
    _numeric = staticmethod(lambda a: sympy.Integer(round(float(a))))


class Sign(_StepFunction):
    _llvm = "sign"
    _numeric = staticmethod(sympy.sign)


class Cbrt(sympy.Function):
    """The real cube root (defined for negative x, unlike x**(1/3))."""

    nargs = 1
    is_real = True
    _llvm = "cbrt"

    def fdiff(self, argindex=1):
        return 1 / (3 * Cbrt(self.args[0]) ** 2)

    @classmethod
    def eval(cls, arg):
        if arg.is_Number:
            return sympy.real_root(arg, 3)
        return None


def _softplus_llvm(lw, args):
    # log1p(exp(x)) overflows for large x, where softplus(x) == x to double precision.
    (x,) = args
    big = lw.b.fcmp_ordered(">", x, lw.const(20.0))
    return lw.b.select(big, x, lw.call("log1p", False, [lw.call("llvm.exp", True, [x])]))


class Softplus(sympy.Function):
    """log(1 + exp(x)), evaluated without overflow."""

    nargs = 1
    is_real = True
    _llvm = staticmethod(_softplus_llvm)

    def fdiff(self, argindex=1):
        return 1 / (1 + sympy.exp(-self.args[0]))


def _logaddexp_llvm(lw, args):
    a, b = args
    m = lw.b.select(lw.b.fcmp_ordered(">", a, b), a, b)
    gap = lw.call("llvm.fabs", True, [lw.b.fsub(a, b)])
    tail = lw.call("log1p", False, [lw.call("llvm.exp", True, [lw.b.fneg(gap)])])
    return lw.b.fadd(m, tail)


class LogAddExp(sympy.Function):
    """log(exp(a) + exp(b)), evaluated without overflow."""

    nargs = 2
    is_real = True
    _llvm = staticmethod(_logaddexp_llvm)

    def fdiff(self, argindex=1):
        a, b = self.args
        return 1 / (1 + sympy.exp(b - a)) if argindex == 1 else 1 / (1 + sympy.exp(a - b))


def _extremum_llvm(pred):
    def lower(lw, args):
        acc = args[0]
        for v in args[1:]:
            acc = lw.b.select(lw.b.fcmp_ordered(pred, acc, v), acc, v)
        return acc

    return staticmethod(lower)


class _Extremum(sympy.Function):
    """max/min of several values; the derivative splits evenly between ties (torch's rule)."""

    is_real = True

    def fdiff(self, argindex=1):
        tied = [sympy.Piecewise((1, sympy.Eq(a, self)), (0, True)) for a in self.args]
        return tied[argindex - 1] / sympy.Add(*tied)

    @classmethod
    def eval(cls, *args):
        if len(args) == 1:
            return args[0]
        if all(a.is_Number for a in args):
            return cls._pick(args)
        return None


class MaxN(_Extremum):
    _llvm = _extremum_llvm(">")
    _pick = staticmethod(lambda args: sympy.Max(*args))


class MinN(_Extremum):
    _llvm = _extremum_llvm("<")
    _pick = staticmethod(lambda args: sympy.Min(*args))


# --- issue 13: logsumexp without a shift in the formula, and standard SymPy forms ------------


def _logsumexp_llvm(lw, args):
    # The max shift lives only here: the formula (and so its derivatives) never sees it.
    top = args[0]
    for v in args[1:]:
        top = lw.b.select(lw.b.fcmp_ordered(">", top, v), top, v)
    finite = lw.b.fcmp_ordered("<", lw.call("llvm.fabs", True, [top]), lw.const(math.inf))
    shift = lw.b.select(finite, top, lw.const(0.0))  # all -inf: log(0) = -inf, as torch
    total = None
    for v in args:
        term = lw.call("llvm.exp", True, [lw.b.fsub(v, shift)])
        total = term if total is None else lw.b.fadd(total, term)
    return lw.b.fadd(shift, lw.call("llvm.log", True, [total]))


class LogSumExp(sympy.Function):
    """log(exp(x_1) + ... + exp(x_n)); its derivative exp(x_i - LogSumExp) is the softmax,
    which never overflows. The kernel shifts by the maximum, the formula does not."""

    is_real = True
    _llvm = staticmethod(_logsumexp_llvm)

    def fdiff(self, argindex=1):
        return sympy.exp(self.args[argindex - 1] - self)

    @classmethod
    def eval(cls, *args):
        if len(args) == 1:
            return args[0]
        return None

    def _ccode(self, printer):
        args = [printer._print(a) for a in self.args]
        top = args[0]
        for a in args[1:]:
            top = f"fmax({top}, {a})"
        shift = f"(isfinite({top}) ? ({top}) : 0.0)"
        terms = " + ".join(f"exp(({a}) - {shift})" for a in args)
        return f"({shift} + log({terms}))"


CUSTOM_FUNCTIONS = (
    StopGradient,
    Floor,
    Ceil,
    Trunc,
    Round,
    Sign,
    Cbrt,
    Softplus,
    LogAddExp,
    MaxN,
    MinN,
    LogSumExp,
)


def _round_half_even(a):
    nearest = sympy.floor(a + sympy.S.Half)
    tie_to_odd = sympy.And(sympy.Eq(a - sympy.floor(a), sympy.S.Half), sympy.Eq(sympy.Mod(nearest, 2), 1))
    return sympy.Piecewise((nearest - 1, tie_to_odd), (nearest, True))


# The standard SymPy form of each custom function: the same values, without the numerical
# safeguards (overflow-free softplus, the logsumexp shift) that only the kernels need.
STANDARD_FORMS = {
    StopGradient: lambda a: a,  # a derivative already taken: only the value remains
    Floor: sympy.floor,
    Ceil: sympy.ceiling,
    Trunc: lambda a: sympy.Piecewise((sympy.floor(a), a >= 0), (sympy.ceiling(a), True)),
    Round: _round_half_even,
    Sign: sympy.sign,
    Cbrt: lambda a: sympy.sign(a) * sympy.Abs(a) ** sympy.Rational(1, 3),
    Softplus: lambda a: sympy.log(1 + sympy.exp(a)),
    LogAddExp: lambda a, b: sympy.log(sympy.exp(a) + sympy.exp(b)),
    LogSumExp: lambda *args: sympy.log(sympy.Add(*(sympy.exp(a) for a in args))),
    MaxN: sympy.Max,
    MinN: sympy.Min,
}


def standard(expr):
    """``expr`` with symjac's functions replaced by standard SymPy ones (for reading and
    ``sympy.lambdify``); values are unchanged.

    Example:
        >>> import sympy
        >>> x = sympy.Symbol("x", real=True)
        >>> standard(Softplus(x) + StopGradient(x))
        x + log(exp(x) + 1)
    """
    if not isinstance(expr, sympy.Basic):
        return expr
    for cls, form in STANDARD_FORMS.items():
        if expr.has(cls):
            expr = expr.replace(cls, form)
    return expr
