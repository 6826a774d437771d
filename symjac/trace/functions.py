"""Custom SymPy functions for primitives SymPy lacks, each with its derivative and LLVM lowering.

SymPy owns every derivative, so a primitive whose torch derivative differs from SymPy's (a step
function's derivative is 0, not a DiracDelta) is a ``sympy.Function`` subclass with its own
``fdiff`` (the pattern of ``sympy/codegen/cfunctions.py``). ``_llvm`` names how
:mod:`symjac.backend.codegen` lowers it: an LLVM intrinsic or libm function, or a Python emitter.
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


class CopySign(sympy.Function):
    """``copysign(a, b)``: |a| with the sign bit of b (of a zero too: copysign(1, -0.0) = -1).
    torch's derivative: ``copysign(a, b) / a`` in a, 0 at a = 0; 0 in b."""

    nargs = 2
    is_real = True
    _llvm = "llvm.copysign"

    def fdiff(self, argindex=1):
        a, _ = self.args
        if argindex == 2:
            return sympy.S.Zero
        return sympy.Piecewise((sympy.S.Zero, sympy.Eq(a, 0)), (CopySign(sympy.S.One, a * self), True))

    @classmethod
    def eval(cls, a, b):
        # numbers only: the tape differentiates shallow definitions (a function of atoms)
        if a.is_Number and b.is_Number and b.is_finite is not False:  # SymPy's 0 is +0
            return -abs(a) if b.is_negative else abs(a)
        return None


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


def _sigmoid_llvm(lw, args):
    # e / (1 + e) with e = exp(-|x|) <= 1 for x < 0, 1 / (1 + e) for x >= 0: no overflow, and
    # the tiny values of x << 0 (denormal in float32) are kept rather than flushed to 0.
    (x,) = args
    b, one = lw.b, lw.const(1.0)
    e = lw.call("llvm.exp", True, [b.fneg(lw.call("llvm.fabs", True, [x]))])
    denominator = b.fadd(one, e)
    negative = b.fcmp_ordered("<", x, lw.const(0.0))
    return b.fdiv(b.select(negative, e, one), denominator)


class sigmoid(sympy.Function):  # noqa: N801 -- printed by its class name, as torch names it
    """1 / (1 + exp(-x)), whose derivative is written ``sigmoid(x) * sigmoid(-x)``.

    SymPy's derivative of ``1 / (1 + exp(-x))``, ``exp(-x) / (1 + exp(-x))**2``, is inf/inf
    (NaN) from x = -710 (float64) or -89 (float32) on, where the true value is a tiny number.
    """

    nargs = 1
    is_real = True
    _smooth = True
    _llvm = staticmethod(_sigmoid_llvm)

    def fdiff(self, argindex=1):
        return self * sigmoid(-self.args[0])  # = s * (1 - s), without 1 - s cancelling for x >> 0

    @classmethod
    def eval(cls, arg):
        if arg.is_Number:
            return 1 / (1 + sympy.exp(-arg))
        return None

    def _eval_rewrite_as_exp(self, arg, **kwargs):
        return 1 / (1 + sympy.exp(-arg))

    def _ccode(self, printer):
        return f"(1.0 / (1.0 + exp(-{printer._print(self.args[0])})))"


def _softplus_llvm(lw, args):
    # log1p(exp(x)) overflows for large x, where softplus(x) == x to double precision.
    (x,) = args
    big = lw.b.fcmp_ordered(">", x, lw.const(20.0))
    return lw.b.select(big, x, lw.call("log1p", False, [lw.call("llvm.exp", True, [x])]))


class Softplus(sympy.Function):
    """log(1 + exp(x)), evaluated without overflow."""

    nargs = 1
    is_real = True
    _smooth = True
    _llvm = staticmethod(_softplus_llvm)

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])  # not 1/(1 + exp(-x)): its own derivative overflows


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
    _smooth = True
    _llvm = staticmethod(_logaddexp_llvm)

    def fdiff(self, argindex=1):
        a, b = self.args
        return sigmoid(a - b) if argindex == 1 else sigmoid(b - a)


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


class _PrintedAs:
    """Printed (str, pretty, LaTeX) as the formula ``_formula()`` it evaluates."""

    def _sympystr(self, printer):
        return printer._print(self._formula())

    def _pretty(self, printer):
        return printer._print(self._formula())

    def _latex(self, printer):
        return printer._print(self._formula())


def _zero_at(condition, derivative):
    return sympy.Piecewise((sympy.S.Zero, condition), (derivative, True))


class NormSqrt(_PrintedAs, sympy.Function):
    """The square root that ends a 2-norm or a standard deviation: ``sqrt(s)``, whose derivative
    at ``s = 0`` is the subgradient 0, as torch takes it (``sqrt``'s own is infinite there)."""

    nargs = 1
    is_real = True
    _llvm = "llvm.sqrt"

    def fdiff(self, argindex=1):
        s = self.args[0]
        return _zero_at(sympy.Eq(s, 0), 1 / (2 * self))

    @classmethod
    def eval(cls, arg):
        if arg.is_Number:
            return sympy.sqrt(arg)
        return None

    def _eval_rewrite_as_sqrt(self, arg, **kwargs):
        return sympy.sqrt(arg)

    def _formula(self):
        return sympy.Pow(self.args[0], sympy.S.Half, evaluate=False)

    def _ccode(self, printer):
        return f"sqrt({printer._print(self.args[0])})"


class NormRoot(_PrintedAs, sympy.Function):
    """``s**r`` ending a p-norm (r = 1/p), with derivative 0 at ``s = 0``, as torch has it."""

    nargs = 2
    is_real = True
    _llvm = "llvm.pow"

    def fdiff(self, argindex=1):
        s, r = self.args
        if argindex != 1:
            raise sympy.core.function.ArgumentIndexError(self, argindex)
        return _zero_at(sympy.Eq(s, 0), r * NormRoot(s, r - 1))

    @classmethod
    def eval(cls, s, r):
        if s.is_Number and r.is_Number:
            return s**r
        return None

    def _formula(self):
        return sympy.Pow(*self.args, evaluate=False)

    def _ccode(self, printer):
        return f"pow({printer._print(self.args[0])}, {printer._print(self.args[1])})"


class atan2(sympy.atan2):  # noqa: N801 -- printed, exported and lowered as SymPy's atan2
    """SymPy's atan2 with torch's subgradient 0 at the origin, where SymPy's is 0/0."""

    def fdiff(self, argindex=1):
        y, x = self.args
        return _zero_at(sympy.And(sympy.Eq(x, 0), sympy.Eq(y, 0)), super().fdiff(argindex))


class Power(_PrintedAs, sympy.Function):
    """``x**p`` for a traced exponent ``p``, with torch's derivatives where SymPy's are 0*inf:
    d/dx is 0 where p = 0, and d/dp is 0 where x = 0 and p >= 0."""

    nargs = 2
    is_real = True
    _llvm = "llvm.pow"

    def fdiff(self, argindex=1):
        x, p = self.args
        if argindex == 1:
            return _zero_at(sympy.Eq(p, 0), p * Power(x, p - 1))
        # log of a constant 0 base is -inf, as torch has it; SymPy's log(0) is zoo, unsigned
        log_x = -sympy.oo if x.is_zero else sympy.log(x)
        return _zero_at(sympy.And(sympy.Eq(x, 0), p >= 0), self * log_x)

    @classmethod
    def eval(cls, x, p):
        if not p.free_symbols:
            return sympy.Pow(x, p)
        return None

    def _eval_rewrite_as_Pow(self, x, p, **kwargs):
        return sympy.Pow(x, p)

    def _formula(self):
        return sympy.Pow(*self.args, evaluate=False)

    def _ccode(self, printer):
        return f"pow({printer._print(self.args[0])}, {printer._print(self.args[1])})"


def _tanh_derivative_llvm(lw, args):
    (x,) = args
    if lw.lanes > 1:  # inline vector arithmetic (symjac.backend.vecmath.tanh_derivative)
        return lw.call("symjac_tanh_derivative", False, [x])
    b, c = lw.b, lw.const
    t = lw.call("llvm.exp", True, [b.fmul(lw.call("llvm.fabs", True, [x]), c(-2.0))])
    one_plus = b.fadd(c(1.0), t)
    return b.fdiv(b.fmul(c(4.0), t), b.fmul(one_plus, one_plus))


class TanhDerivative(_PrintedAs, sympy.Function):
    """``1 - tanh(x)**2``, evaluated as ``4t / (1 + t)**2`` with ``t = exp(-2|x|)``.

    ``1 - tanh(x)**2`` cancels for |x| > 1: it is as accurate as tanh is near 1 in absolute
    terms, so two tanh routines a few ulp apart (the scalar and the SIMD kernel) gave
    derivatives 2.4e-4 apart in relative terms at |x| > 14. Printed as ``1 - tanh(x)**2``.
    """

    nargs = 1
    is_real = True
    _smooth = True
    _llvm = staticmethod(_tanh_derivative_llvm)

    def fdiff(self, argindex=1):
        return -2 * tanh(self.args[0]) * self

    @classmethod
    def eval(cls, arg):
        if arg.is_Number:
            return 1 - sympy.tanh(arg) ** 2
        return None

    def _formula(self):
        return 1 - sympy.tanh(self.args[0]) ** 2

    def _eval_rewrite_as_tanh(self, arg, **kwargs):
        return self._formula()

    def _ccode(self, printer):
        x = printer._print(self.args[0])
        return f"(4.0 * exp(-2.0 * fabs({x})) / pow(1.0 + exp(-2.0 * fabs({x})), 2))"


class tanh(sympy.tanh):  # noqa: N801 -- printed, exported and lowered as SymPy's tanh
    """SymPy's tanh with its derivative evaluated without cancellation (``TanhDerivative``)."""

    _smooth = True

    def fdiff(self, argindex=1):
        if argindex != 1:
            raise sympy.core.function.ArgumentIndexError(self, argindex)
        return TanhDerivative(self.args[0])


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
    TanhDerivative,
    tanh,
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
    sigmoid,
    NormSqrt,
    NormRoot,
    atan2,
    Power,
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
    CopySign: lambda a, b: sympy.Piecewise((-sympy.Abs(a), b < 0), (sympy.Abs(a), True)),
    Softplus: lambda a: sympy.log(1 + sympy.exp(a)),
    LogAddExp: lambda a, b: sympy.log(sympy.exp(a) + sympy.exp(b)),
    LogSumExp: lambda *args: sympy.log(sympy.Add(*(sympy.exp(a) for a in args))),
    MaxN: sympy.Max,
    MinN: sympy.Min,
    TanhDerivative: lambda a: 1 - sympy.tanh(a) ** 2,
    tanh: sympy.tanh,
    sigmoid: lambda a: 1 / (1 + sympy.exp(-a)),
    NormSqrt: sympy.sqrt,
    NormRoot: sympy.Pow,
    atan2: sympy.atan2,
    Power: sympy.Pow,
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
    done: dict = {}  # one visit per distinct subexpression: entries share large subtrees

    def rebuild(e):
        if e in done:
            return done[e]
        args = []
        for a in e.args:  # a loop, not a generator: one frame per level of a deep expression
            args.append(rebuild(a))
        form = next((STANDARD_FORMS[k] for k in type(e).__mro__ if k in STANDARD_FORMS), None)
        if form is not None:
            result = form(*args)
        elif any(a is not b for a, b in zip(args, e.args, strict=True)):
            result = e.func(*args)
        else:
            result = e
        done[e] = result
        return result

    return rebuild(expr)
