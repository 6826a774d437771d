"""Compile derivatives of SymPy expressions directly (``symjac.from_sympy``), e.g. the mass matrix
and forcing of a ``sympy.physics.mechanics.KanesMethod`` model, without rewriting the model."""

from __future__ import annotations

import numpy as np
import sympy
from sympy.core.function import AppliedUndef

from .compiled import MODES, CompiledFunction, SympySpec, wrt_indices
from .elements import deep


def _dynamic_advice(expr) -> str:
    """How to turn dynamic symbols (``q0(t)`` from ``mechanics.dynamicsymbols``) into symbols."""
    if not isinstance(expr, AppliedUndef):
        return ""
    return (
        f". {expr} is a function (a dynamic symbol, as sympy.physics.mechanics makes them); "
        "replace such functions by plain symbols in both the outputs and the inputs first: "
        "qs = sympy.symbols('q0:2'); subs = dict(zip(q, qs)); "
        "from_sympy(expr.xreplace(subs), [qs])"
    )


def _array(x) -> np.ndarray:
    if isinstance(x, sympy.MatrixBase):
        rows, cols = x.shape
        arr = np.array(x.tolist(), dtype=object).reshape(rows, cols)
        return arr.reshape(rows) if cols == 1 else arr
    if isinstance(x, sympy.Basic):
        out = np.empty((), dtype=object)
        out[()] = x
        return out
    out = np.empty(len(x), dtype=object)
    for k, e in enumerate(x):
        out[k] = sympy.sympify(e)
    return out


def from_sympy(outputs, inputs, *, mode="jacobian", wrt=None, value=False, sparse=None, cache=True):
    """Compile the derivatives of SymPy ``outputs`` with respect to symbol groups ``inputs``.

    Args:
        outputs: an expression, a column Matrix or list (a vector), a Matrix (2-d), or a tuple
            of these (several outputs, like a function returning a tuple).
        inputs: a list of symbol groups, each a list or column Matrix of symbols; the compiled
            function takes one array per group. A flat list of symbols is one group.
        mode, wrt, value, sparse, cache: as for :func:`symjac.compile`; groups not in ``wrt``
            are runtime parameters.

    Example:
        >>> import numpy as np, sympy, symjac
        >>> q = sympy.symbols("q0 q1")
        >>> jac = symjac.from_sympy(sympy.Matrix([q[0] * sympy.sin(q[1]), q[0] ** 2]), [q])
        >>> jac(np.array([2.0, 0.0]))
        array([[0., 2.],
               [4., 0.]])
    """
    if mode not in MODES:
        raise ValueError(f"from_sympy: mode must be one of {MODES}, got {mode!r}")
    groups = list(inputs)
    if groups and all(isinstance(s, sympy.Symbol) for s in groups):
        groups = [groups]
    X = tuple(_array(g) for g in groups)
    for arr in X:
        for s in arr.flat:
            if not isinstance(s, sympy.Symbol):
                raise TypeError(f"from_sympy: inputs must be symbols, got {s!r}{_dynamic_advice(s)}")
    out_tuple = isinstance(outputs, tuple)
    outs = tuple(_array(o) for o in (outputs if out_tuple else (outputs,)))
    deep.call(_check_outputs, outs)  # atoms() and has() recurse on deep expressions
    wrt_t, wrt_tuple = wrt_indices(wrt, len(X), "from_sympy")
    spec = SympySpec(X, outs, mode, wrt_t, wrt_tuple, out_tuple, bool(value), sparse)
    return CompiledFunction(spec, cache=cache)


def _check_outputs(outs) -> None:
    """Refuse undefined functions and complex values in the outputs, naming them."""
    for arr in outs:
        for e in arr.flat:
            functions = sorted(map(str, e.atoms(AppliedUndef))) if isinstance(e, sympy.Basic) else []
            if functions:
                raise TypeError(
                    f"from_sympy: outputs contain undefined functions {', '.join(functions[:4])}"
                    f"{_dynamic_advice(e.atoms(AppliedUndef).pop())}"
                )
    for i, arr in enumerate(outs):
        for index, e in np.ndenumerate(arr):
            if e.has(sympy.I, sympy.zoo):
                where = f"outputs[{i}]" + (str(list(index)) if index else "")
                raise ValueError(
                    f"from_sympy: {where} = {e} is complex (it contains I); symjac computes in real "
                    "arithmetic. Declare its symbols real (sympy.symbols(..., real=True)) and compile "
                    "sympy.re(e) and sympy.im(e) as separate outputs."
                )
