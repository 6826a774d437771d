"""Custom SymPy functions for primitives SymPy lacks, each with its derivative and LLVM lowering.

SymPy owns every derivative, so a primitive whose torch derivative differs from SymPy's (a step
function's derivative is 0, not a DiracDelta) is a ``sympy.Function`` subclass with its own
``fdiff`` (the pattern of ``sympy/codegen/cfunctions.py``). ``_llvm`` names how
:mod:`symjac.codegen` lowers it: an LLVM intrinsic or libm function, or a Python emitter.
"""

from __future__ import annotations

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


CUSTOM_FUNCTIONS = (StopGradient, Floor, Ceil, Trunc, Round, Sign)
