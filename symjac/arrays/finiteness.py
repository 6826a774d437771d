"""Where an inf or NaN can reach a contraction's products, so that the loop kernels guard them.

An exact derivative has no term for a zero factor: ``d/dx sum_k w[k] * sqrt(x[k])`` at ``x = 0``
with ``w[0] = 0`` is 0, where IEEE arithmetic makes ``0 * inf`` NaN. The elementwise loop rules
keep that zero rule on a branch of their own; a contraction's fast products cannot afford one
(a select per multiply-add costs MLP batches 14-17%). So an elementwise rule that makes an inf
or NaN tangent or adjoint raises a flag, and a contraction tests it at run time; where it is
raised the contraction scans its own rows (``Emitter.clean_or_finite``: the inf may have been
killed on the way) and its factors that can be inf, and takes an exact loop if one is there.
Only contractions that this module finds an inf can reach carry the test: downstream of an op
whose value or partial can be infinite at finite arguments (sqrt or a power at 0, log, division,
exp's overflow), judged from its SymPy formulas. A tanh or ReLU MLP has none.

Inputs (and runtime parameters) are taken to be finite: an inf or NaN among them multiplies as
IEEE's arithmetic does in the loop kernels (as in torch), and so does an overflow in a sum or
product of finite values. A captured array holding an inf or NaN is checked like a computed one.
"""

from __future__ import annotations

import functools

import numpy as np
import sympy

from ..trace.ops import ELEMENTWISE
from . import structural
from .letters import explicit

# Functions finite wherever their arguments are: SymPy's, and symjac's own by name.
_FINITE = tuple(getattr(sympy, name) for name in "tanh sin cos atan erf erfc Abs sign Heaviside Max Min "
                "floor ceiling Piecewise".split())  # fmt: skip
_FINITE_NAMES = frozenset("sigmoid Softplus Sign Floor Ceil Trunc Round CopySign TanhDerivative LogAddExp "
                          "StopGradient atan2 MaxN MinN".split())  # fmt: skip
CONTRACTIONS = frozenset({"matmul", "einsum"})


def finite_at_finite(expr) -> bool:
    """Whether ``expr`` is finite wherever its symbols are (False where unsure): polynomials and
    the functions above; a division, root, log or exp is not."""
    if expr.is_Symbol or isinstance(expr, sympy.logic.boolalg.Boolean):
        return True
    if expr.is_Number or isinstance(expr, sympy.NumberSymbol):
        return bool(expr.is_finite)
    if expr.is_Pow:
        exponent = expr.exp
        return bool(exponent.is_Integer and exponent >= 0) and finite_at_finite(expr.base)
    if isinstance(expr, sympy.Piecewise):
        return all(finite_at_finite(e) for e, _ in expr.args)
    if not (expr.is_Add or expr.is_Mul or isinstance(expr, _FINITE) or type(expr).__name__ in _FINITE_NAMES):
        return False
    return all(finite_at_finite(a) for a in expr.args)


@functools.cache
def _elementwise(op: str, masks: tuple) -> tuple[bool, tuple]:
    """``(value finite at finite arguments, each partial's)`` of an elementwise op."""
    from .loops import _scalar_rule

    _, expr, partials = _scalar_rule(op, masks)
    return finite_at_finite(expr), tuple(p is None or finite_at_finite(p) for p in partials)


def _masks(graph, args) -> tuple:
    from .loops import _is_mask

    return tuple(_is_mask(graph, a) for a in args)


@functools.lru_cache(maxsize=64)
def risky_values(graph) -> frozenset:
    """Nodes whose values can be inf or NaN at finite inputs: after an op that is not finite at
    finite arguments (1/x, log, exp), and captured arrays that hold an inf or NaN."""
    risky: set = set()
    for n, (op, args, params) in enumerate(graph.eqns):
        if any(type(a) is int and a in risky for a in args):
            risky.add(n)
        elif op in ELEMENTWISE and not _elementwise(op, _masks(graph, args))[0]:
            risky.add(n)
        elif op == "const" and not finite_constant(params):
            risky.add(n)
    return frozenset(risky)


def finite_constant(params) -> bool:
    """Whether a ``const`` equation's array (its ``params``) holds only finite numbers."""
    return bool(np.isfinite(np.frombuffer(params[2], dtype=np.dtype(params[0]))).all())


def infinite_partial(graph, n, a) -> bool:
    """Whether elementwise node ``n``'s partial in a position of node ``a`` (any, for None) can
    be inf or NaN at finite arguments."""
    op, args, _ = graph.eqns[n]
    finite = _elementwise(op, _masks(graph, args))[1]
    return not all(finite[k] for k, b in enumerate(args) if a is None or b == a)


def _partial_risky(graph, n, k, values) -> bool:
    """Whether node ``n``'s derivative with respect to its argument ``k`` can be inf or NaN."""
    op, args, _ = graph.eqns[n]
    if any(type(a) is int and a in values for a in args):
        return True
    if op in ELEMENTWISE:
        return not _elementwise(op, _masks(graph, args))[1][k]
    return False  # sums, reductions' weights, gathers; a contraction's factors are values


def _guard(op, args, values) -> tuple:
    """The positions of a contraction's factors whose values can be inf or NaN."""
    return tuple(k for k, a in enumerate(args) if type(a) is int and a in values)


def forward_guards(graph) -> dict:
    """``{contraction: positions of its factors to check}`` for those whose tangent products a
    forward kernel must guard: a tangent or a factor reaching them can be inf or NaN."""
    values, tangents, guards = risky_values(graph), set(), {}
    for n, (op, args, _) in enumerate(graph.eqns):
        nodes = [(k, a) for k, a in enumerate(args) if type(a) is int]
        if op in CONTRACTIONS and len(args) > 1 and any(a in tangents or a in values for _, a in nodes):
            guards[n] = _guard(op, args, values)
        if any(a in tangents or _partial_risky(graph, n, k, values) for k, a in nodes):
            tangents.add(n)
    return guards


def reverse_guards(graph) -> dict:
    """``forward_guards`` for a reverse kernel's adjoint products (adjoints flow from the outputs:
    a root guards the contractions before it)."""
    values, adjoints, guards = risky_values(graph), set(), {}
    for n in range(len(graph.eqns) - 1, -1, -1):
        op, args, _ = graph.eqns[n]
        nodes = [(k, a) for k, a in enumerate(args) if type(a) is int]
        if op in CONTRACTIONS and len(args) > 1 and (n in adjoints or any(a in values for _, a in nodes)):
            guards[n] = _guard(op, args, values)
        for k, a in nodes:
            if n in adjoints or _partial_risky(graph, n, k, values):
                adjoints.add(a)
    return guards


# --- the same rule for NumPy's contractions (the drop-in's array evaluators) --------------------

_CHUNK = 1 << 22  # doubles of products formed at a time on the exact path


def einsum(terms, out: str, operands, exact) -> np.ndarray:
    """``np.einsum(",".join(terms) + "->" + out, *operands)``, except that where an operand holds
    an inf or NaN, a product with a structural zero factor (of an operand that ``exact`` calls so,
    see :mod:`symjac.arrays.structural`; a bool or a function giving one) is zero, as in the loop
    kernels: then every product is formed (in slices of the largest letter, so that at most about
    ``_CHUNK`` are at once) and summed."""
    if finite(*operands):
        return np.einsum(",".join(terms) + "->" + out, *operands)
    exact = [bool(structural.resolve(e)) for e in exact]
    if not all(exact) and _meets(operands, exact):
        structural.undecided()
    if not any(exact):
        return np.einsum(",".join(terms) + "->" + out, *operands)
    terms, out = explicit(terms, out, [np.ndim(x) for x in operands])
    letters = "".join(dict.fromkeys("".join(terms)))
    spread = [_spread(s, np.asarray(x, np.float64), letters) for s, x in zip(terms, operands, strict=True)]
    killers = [x for x, e in zip(spread, exact, strict=True) if e]
    extents = np.broadcast_shapes(*(x.shape for x in spread))
    size = int(np.prod(extents, dtype=np.int64))
    if size <= _CHUNK:
        return _products(spread, killers, letters, out)
    axis = int(np.argmax(extents))
    step = max(1, _CHUNK * extents[axis] // size)
    parts = []
    for start in range(0, extents[axis], step):
        piece = (slice(None),) * axis + (slice(start, start + step),)
        cut = [x if x.shape[axis] == 1 else x[piece] for x in spread]
        parts.append(_products(cut, [c for c, e in zip(cut, exact, strict=True) if e], letters, out))
    if letters[axis] in out:
        return np.concatenate(parts, axis=out.index(letters[axis]))
    return sum(parts[1:], parts[0])  # a summed letter: the slices' partial sums


def _meets(operands, exact) -> bool:
    """Whether an operand whose zeros are not structural has a zero while another operand holds an
    inf or NaN (their product may be undecided; a cheap, coarse test on the rare path)."""
    bad = [not np.isfinite(x).all() for x in operands]
    return any(
        not e and (np.asarray(x) == 0).any() and any(b for j, b in enumerate(bad) if j != i)
        for i, (x, e) in enumerate(zip(operands, exact, strict=True))
    )


def finite(*arrays) -> bool:
    """Whether every element of ``arrays`` is finite."""
    return all(np.isfinite(x).all() for x in arrays)


def _spread(term: str, x: np.ndarray, letters: str) -> np.ndarray:
    """``x`` (indexed by ``term``) over all ``letters``: diagonals taken, size-1 axes elsewhere."""
    own = "".join(c for c in letters if c in term)
    x = np.einsum(f"{term}->{own}", x)
    return x.reshape([x.shape[own.index(c)] if c in own else 1 for c in letters])


def _products(spread, killers, letters: str, out: str) -> np.ndarray:
    """The sum of the products, where one of ``killers`` (operands with structural zeros) is 0."""
    product = spread[0]
    zero = killers[0] == 0
    with np.errstate(invalid="ignore", over="ignore"):  # 0 * inf: the NaN that ``zero`` masks
        for x in spread[1:]:
            product = product * x
        for x in killers[1:]:
            zero = zero | (x == 0)
    return np.einsum(f"{letters}->{out}", np.where(zero, 0.0, product))
