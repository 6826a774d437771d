"""Exceptions raised while tracing, each naming the operation and the traceable alternative."""

from __future__ import annotations


class UntraceableError(TypeError):
    """A Python construct needs the value of a traced tensor, which is not known while tracing."""


class InPlaceError(TypeError):
    """An in-place write (``out=``, item assignment on an input) that symjac cannot record."""


class DtypeError(TypeError, RuntimeError):
    """An input dtype symjac cannot differentiate (RuntimeError too, as torch raises)."""


_UNTRACEABLE = {
    "bool": (
        "bool() of a traced tensor",
        "a Python `if`, `while`, `and`, `or` or `not` on traced data needs its value, which is "
        "not known while tracing. Choose between values with symjac.where(condition, a, b) "
        "(or numpy.where / torch.where), and symjac.maximum/minimum, abs, clip for the usual cases.",
    ),
    "float": (
        "float() of a traced tensor",
        "its number is not known while tracing. Keep it a tensor and use tensor operations "
        "(x * 2, numpy.exp(x), x.sum()) instead of converting to a Python number.",
    ),
    "int": (
        "int() of a traced tensor",
        "its number is not known while tracing; integer casts are not differentiable. "
        "Keep it a float tensor (symjac.floor / numpy.floor for rounding).",
    ),
    "item": (
        ".item()/.tolist() of a traced tensor",
        "its value is not known while tracing. Keep it a tensor.",
    ),
    "complex": ("complex() of a traced tensor", "complex values are not supported."),
    "index": (
        "a traced tensor used as an index",
        "indices must be known while tracing (data-dependent indexing, sort, argsort and argmax "
        "are not traceable). Index with Python ints, slices or constant arrays, or select "
        "values with symjac.where.",
    ),
    "numpy": (
        ".numpy() of a traced tensor",
        "its values are not known while tracing. Call NumPy functions on the tensor itself "
        "(numpy.exp(x)); symjac records them.",
    ),
}


def untraceable(kind: str, var) -> UntraceableError:
    what, advice = _UNTRACEABLE[kind]
    return UntraceableError(
        f"symjac cannot trace {what} (the result of `{var._op}`, shape {tuple(var.shape)}): {advice}"
    )


def unknown_op(name: str, args) -> NotImplementedError:
    from .tensor import Var

    position = next((i for i, a in enumerate(args) if isinstance(a, Var)), 0)
    return NotImplementedError(
        f"symjac cannot trace {name} (argument {position} is a traced tensor): it is not in the "
        "op table. See docs/operations.md or symjac.ops.NUMPY_API / TORCH_API / METHODS for "
        "what is supported."
    )
