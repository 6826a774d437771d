"""Which zeros are structural: where the array roads may take a zero times an inf or NaN as zero.

An exact derivative has no term for a factor that is zero at every input near this one: the
branch ``where`` does not take, a weight that is the constant 0, a direction that the seed leaves
out. The element road never forms such a product, so the array roads drop it too (the zero
rule), and ``jacobian(sqrt, x)`` at ``x = 0`` keeps exact zeros off its diagonal.

A zero that holds at this point only is another matter. ``cbrt(x)**3`` at 0 is
``3 cbrt(x)**2 * cbrt'(x)``, which is ``0 * inf``, and its limit is 1. The gradient of
``sqrt(s)**2`` at ``s = 0`` is ``2 sqrt(s) / (2 sqrt(s))``, also ``0 * inf``, with limit 1. Only
symbolic simplification decides such a product, and the array roads skip it. So they multiply as
IEEE arithmetic does and give NaN, as torch does; the drop-in then asks the element road, which
simplifies (:mod:`symjac.functional`).

Both factors are judged here, once per graph:

- ``partial``: elementwise op ``n``'s partial in argument ``k`` is locally constant in every
  argument that varies with the inputs (a mask's 0 or 1, ``relu'``, ``abs'``, a constant weight),
  so that its zeros hold near this point as well.
- ``tangents``: every zero of the node's tangent is structural. This holds where the tangent is
  locally constant (``constant``): a seed (the identity, or ``v`` of a jvp: a direction ``v``
  leaves out does not move that input), and sums, moves, constant-weighted contractions and
  structural-partial multiples of such tangents (``W @ x``: its zeros are the constant ``W``'s;
  ``x - x``: 0 wherever). It also holds for gathers, reshapes and joins of such tangents, and for
  one such tangent times a structural partial (``where``). It does not hold for a sum of terms
  that vary (``tanh(x) - tanh(y)`` may be 0 at a point).
- ``adjoints``: the same for the reverse sweep's adjoints, from the outputs' seeds back: locally
  constant where every part added is (moves, structural partials, constant-weighted
  contractions of such adjoints), else structural where one part is.
"""

from __future__ import annotations

import contextlib
import functools
import threading

import sympy

from ..trace.ops import ELEMENTWISE, decode_index, exact_partial
from .elementwise import formulas

# Ops whose tangent is their arguments' tangents moved, copied or joined (no sums): exact
# tangents stay exact. Their transposes move adjoints back, except broadcast_to's, a sum.
MOVES = frozenset({"reshape", "transpose", "broadcast_to", "getitem", "setitem", "concat", "stack", "cast"})
_ADJOINT_MOVES = MOVES - {"broadcast_to"} | {"sum", "max", "min"}  # a reduction's adjoint is spread
_LINEAR = frozenset({"sum", "cumsum", "max", "min"})  # tangents: sums, or a.e. constant weights
_CONTRACTIONS = frozenset({"matmul", "einsum"})


def locally_constant(expr, symbols) -> bool:
    """Whether ``expr`` has a zero derivative in each of ``symbols`` (a Dirac delta counting as
    zero: ``relu'`` and ``abs'`` are constant on each side of their kink)."""
    for s in symbols:
        d = sympy.diff(expr, s).replace(lambda e: isinstance(e, sympy.DiracDelta), lambda e: sympy.S.Zero)
        d = sympy.piecewise_fold(d)
        if isinstance(d, sympy.Piecewise):
            d = sympy.S.Zero if all(e == 0 for e, _ in d.args) else d
        if d != 0:
            return False
    return True


def _formulas(op: str, masks: tuple, scalars: tuple):
    """``elementwise.formulas`` with the inline scalar arguments' values substituted (``x**0.5``'s
    partial is ``0.5 x**-0.5``, with no branch for an exponent of 0)."""
    syms, expr, parts = formulas(op, masks)
    values = {s: v for s, v in zip(syms, scalars, strict=True) if v is not None}
    if values:
        parts = tuple(None if p is None else p.subs(values) for p in parts)
    return syms, expr, parts


@functools.cache
def partials(op: str, masks: tuple, varies: tuple, scalars: tuple) -> tuple:
    """For each argument of elementwise ``op``: whether its partial's zeros are structural, given
    which arguments are masks, which vary with the inputs, and inline scalars' values."""
    syms, _, parts = _formulas(op, masks, scalars)
    moving = [s for s, m, v in zip(syms, masks, varies, strict=True) if v and not m]
    return tuple(p is None or locally_constant(p, moving) for p in parts)


def zero_free(expr) -> bool:
    """Whether ``expr`` is nonzero wherever it is finite (False where unsure): ``1 / (2 sqrt(x))``,
    ``-1 / x**2``, ``exp(x)``; not ``2 x`` or ``1 - tanh(x)**2``. A tangent times such a partial
    is zero only where the tangent is."""
    if expr.is_Number:
        return expr != 0
    if expr.is_Pow:
        return bool(expr.exp.is_negative) or zero_free(expr.base)
    if expr.is_Mul or isinstance(expr, sympy.Piecewise):
        return all(zero_free(a if expr.is_Mul else a[0]) for a in expr.args)
    return isinstance(expr, (sympy.exp, sympy.cosh)) or type(expr).__name__ == "sigmoid"


@functools.cache
def keeps_zeros(op: str, masks: tuple, varies: tuple, scalars: tuple) -> tuple:
    """For each argument of elementwise ``op``: whether a product with its partial is zero only
    where the other factor is or structurally (its partial has structural zeros, or none)."""
    _, _, parts = _formulas(op, masks, scalars)
    exact = partials(op, masks, varies, scalars)
    return tuple(e or zero_free(p) for e, p in zip(exact, parts, strict=True))


@functools.cache
def second_partials(op: str, masks: tuple, varies: tuple, scalars: tuple) -> tuple:
    """``partials`` for the second partials ``f_kj`` (rows k, columns j)."""
    syms, _, parts = _formulas(op, masks, scalars)
    moving = [s for s, m, v in zip(syms, masks, varies, strict=True) if v and not m]
    return tuple(
        tuple(p is None or m or locally_constant(exact_partial(p, s), moving) for s, m in zip(syms, masks, strict=True))
        for p in parts
    )


@functools.cache
def curvature(op: str, masks: tuple, varies: tuple, scalars: tuple) -> tuple:
    """For each argument of elementwise ``op``: whether a second partial in it and a varying
    argument is nonzero (second order then adds a curvature term to its adjoint's tangent)."""
    syms, _, parts = _formulas(op, masks, scalars)
    return tuple(
        p is not None
        and any(v and not m and exact_partial(p, s) != 0 for s, m, v in zip(syms, masks, varies, strict=True))
        for p in parts
    )


class Zeros:
    """The structural zeros of one graph's partials, tangents and adjoints."""

    def __init__(self, graph):
        self.graph = graph
        eqns = graph.eqns
        seeded = set(graph.inputs)
        varying: list[bool] = []
        for n, (op, args, _) in enumerate(eqns):
            varying.append(n in seeded if op == "input" else any(type(a) is int and varying[a] for a in args))
        self.varying = varying
        self._partials = {}
        constant, tangents = set(), set()  # locally constant tangents; those with structural zeros
        for n, (op, args, _) in enumerate(eqns):
            if not varying[n]:
                continue
            live = [(k, a) for k, a in enumerate(args) if type(a) is int and varying[a] and not self.mask(a)]
            if op == "input":
                constant.add(n)
            elif op in MOVES or op in _LINEAR:
                if all(a in constant for _, a in live):
                    constant.add(n)
                elif op in MOVES and all(a in tangents for _, a in live):
                    tangents.add(n)
            elif op in ELEMENTWISE:
                ok = self.partial(n)
                if all(ok[k] and a in constant for k, a in live):
                    constant.add(n)
                elif len(live) == 1 and self.keeps(n)[live[0][0]] and live[0][1] in tangents:
                    tangents.add(n)
            elif op in _CONTRACTIONS:
                if all(a in constant and all(not varying[b] for b in args if type(b) is int and b != a) for _, a in live):
                    constant.add(n)
        tangents |= constant
        self.constant = frozenset(constant)
        self.tangents = frozenset(tangents)
        self._adjoints = {}

    @property
    def adjoints(self) -> frozenset:
        """Nodes whose adjoint (of a reverse sweep from the outputs' seeds) has structural zeros."""
        return self._adjoint_set(False)

    @property
    def second_adjoints(self) -> frozenset:
        """The same for second order's adjoints and their tangents (:mod:`symjac.arrays.second`),
        which a curvature term (a nonzero second partial) leaves inexact."""
        return self._adjoint_set(True)

    def _adjoint_set(self, second: bool) -> frozenset:
        hit = self._adjoints.get(second)
        if hit is not None:
            return hit
        eqns, varying = self.graph.eqns, self.varying
        reads = {a: list(r) for a, r in self.readers.items()}
        for o in self.graph.outputs:
            reads.setdefault(o, []).append(None)  # a seed
        constant, exact = set(), set()
        for a in range(len(eqns) - 1, -1, -1):
            if not varying[a]:
                continue
            parts = [
                (True, True) if n is None else self._part(n, k, second, constant, exact)
                for n in reads.get(a, [])
                for k in ([None] if n is None else [k for k, b in enumerate(eqns[n][1]) if b == a])
            ]
            if parts and all(c for c, _ in parts):
                constant.add(a)
            elif len(parts) == 1 and parts[0][1]:  # two parts add
                exact.add(a)
        hit = self._adjoints[second] = frozenset(exact | constant)
        return hit

    def _part(self, n, k, second, constant, exact) -> tuple:
        """``(locally constant, structural zeros)`` of what node ``n`` adds to its argument ``k``'s
        adjoint."""
        graph = self.graph
        op, args, params = graph.eqns[n]
        if op in _ADJOINT_MOVES or op in ("broadcast_to", "cumsum"):
            summed = op in ("broadcast_to", "cumsum") or op == "getitem" and _gathers(params)
            return n in constant, n in exact and not summed and not (op == "setitem" and k == 1)
        if op in ELEMENTWISE:
            if second and curvature(*self._key(n))[k]:
                return False, False
            same = graph.shape(args[k]) == graph.shape(n)  # else a sum over broadcast axes
            return n in constant and self.partial(n)[k], n in exact and self.keeps(n)[k] and same
        if op in _CONTRACTIONS and all(not self.varying[b] for i, b in enumerate(args) if i != k and type(b) is int):
            return n in constant, n in constant
        return False, False

    @functools.cached_property
    def readers(self) -> dict:
        """``{node: the equations that read it}`` (one entry per argument position)."""
        reads: dict = {}
        for n, (_, args, _) in enumerate(self.graph.eqns):
            for a in args:
                if type(a) is int:
                    reads.setdefault(a, []).append(n)
        return reads

    def is_elementwise(self, n) -> bool:
        return self.graph.eqns[n][0] in ELEMENTWISE

    def mask(self, a) -> bool:
        dtype = self.graph.dtype(a)
        return dtype is not None and dtype.kind == "b"

    def _key(self, n):
        op, args, _ = self.graph.eqns[n]
        masks = tuple(type(a) is int and self.mask(a) for a in args)
        varies = tuple(type(a) is int and self.varying[a] for a in args)
        scalars = tuple(None if type(a) is int else _scalar(a) for a in args)
        return op, masks, varies, scalars

    def partial(self, n) -> tuple:
        """For each argument of elementwise node ``n``: its partial's zeros are structural."""
        hit = self._partials.get(n)
        if hit is None:
            hit = self._partials[n] = partials(*self._key(n))
        return hit

    def keeps(self, n) -> tuple:
        """``keeps_zeros`` of elementwise node ``n``."""
        return keeps_zeros(*self._key(n))

    def second(self, n) -> tuple:
        """``second_partials`` of elementwise node ``n``."""
        return second_partials(*self._key(n))

    def value(self, a) -> bool:
        """Whether node (or inline scalar) ``a``'s zeros are structural: it is constant."""
        return type(a) is not int or not self.varying[a]


def _scalar(a):
    """An inline scalar argument's value (``("scalar", value)``), exactly as SymPy takes it."""
    return sympy.nsimplify(a[1]) if isinstance(a[1], float) and float(a[1]).is_integer() else sympy.Float(a[1])


def _gathers(params) -> bool:
    """Whether a getitem's index holds an array (which may repeat a position: its adjoint sums)."""
    return any(getattr(k, "ndim", 0) for k in decode_index(params[0]))


@functools.lru_cache(maxsize=64)
def of(graph) -> Zeros:
    """The :class:`Zeros` of ``graph`` (cached per graph)."""
    return Zeros(graph)


# --- undecided products, as the NumPy roads meet them --------------------------------------------

_SEEN = threading.local()


def undecided() -> None:
    """Note that a zero which is not structural met an inf or NaN (a NaN the array level made)."""
    _SEEN.undecided = True


@contextlib.contextmanager
def watching():
    """``with watching() as seen:``, after which ``seen()`` says whether the NumPy array roads
    left a product undecided inside (a NaN that only the element road may decide)."""
    before = getattr(_SEEN, "undecided", False)
    _SEEN.undecided = False
    result = []
    try:
        yield lambda: bool(result and result[0])
    finally:
        result.append(_SEEN.undecided)
        _SEEN.undecided = before or _SEEN.undecided
