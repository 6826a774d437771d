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
  so that its zeros hold near this point as well, except at a kink where it is 0 (``relu'(0)``,
  ``sign(0)``: a choice, which ``|cbrt x|**3 sign(cbrt x)`` shows may meet an inf of limit 1),
  judged at run time (``kinks``; ``smooth`` is a partial without one).
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

The kernels add what only a point knows: the rows that a structural zero partial emptied
(``maximum(z, 0)`` where ``z < 0``), which an infinite partial after them may meet
(``loops``' and ``reverse``'s ``zero_rows``, ``forward``'s ``rows``). The analysis is per node,
not per entry: a node whose zeros mix both kinds counts as undecided (NaN), never as zero.
"""

from __future__ import annotations

import contextlib
import functools
import threading

import numpy as np
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


_STEPS = ("Heaviside", "sign", "Sign", "DiracDelta")  # one kink, where the argument is 0
_MANY_STEPS = ("Floor", "Ceil", "Trunc", "Round", "floor", "ceiling", "frac")  # one per integer


def kink(expr):
    """Where a partial that is locally constant elsewhere is not: a SymPy condition on its
    arguments that holds at a kink (``relu'`` or ``sign`` at 0, a branch's boundary, where one
    side's 0 meets the other's value), ``sympy.false`` where it has none, None where unknown
    (a step at every integer). A mask's branches have no boundary: a mask is data."""
    conds = []
    for f in expr.atoms(sympy.Function):
        name = type(f).__name__
        if name in _MANY_STEPS:
            return None
        if name in _STEPS:
            conds.append(sympy.Eq(f.args[0], 0))
    for piecewise in expr.atoms(sympy.Piecewise):
        for _, cond in piecewise.args:
            conds += [sympy.Eq(r.lhs - r.rhs, 0) for r in cond.atoms(sympy.core.relational.Relational)]
    conds = [c for c in dict.fromkeys(conds) if not _nonzero_at(expr, c)]
    return sympy.Or(*conds) if conds else sympy.false


def _nonzero_at(expr, cond) -> bool:
    """Whether ``expr`` is a nonzero constant on the kink ``cond`` (``Eq(g, 0)``, ``g`` linear):
    maximum's partial is 1/2 at a tie, clamp's 1 at a bound; those kinks meet no zero."""
    g = cond.lhs
    symbols = sorted(g.free_symbols, key=str)
    if not symbols or not g.is_polynomial(*symbols) or sympy.degree(g, symbols[0]) != 1:
        return False
    (root,) = sympy.solve(g, symbols[0])
    value = expr.subs(symbols[0], root)
    return bool(value.is_Number and value != 0)


@functools.cache
def kinks(op: str, masks: tuple, varies: tuple, scalars: tuple) -> tuple:
    """``kink`` of each argument's partial of elementwise ``op`` (None for a mask's)."""
    _, _, parts = _formulas(op, masks, scalars)
    return tuple(sympy.false if p is None else kink(p) for p in parts)


@functools.cache
def partials(op: str, masks: tuple, varies: tuple, scalars: tuple) -> tuple:
    """For each argument of elementwise ``op``: whether its partial's zeros are structural away
    from its kinks (``kinks``), given which arguments are masks, which vary with the inputs, and
    inline scalars' values."""
    syms, _, parts = _formulas(op, masks, scalars)
    moving = [s for s, m, v in zip(syms, masks, varies, strict=True) if v and not m]
    ks = kinks(op, masks, varies, scalars)
    return tuple(
        p is None or (ks[i] is not None and locally_constant(p, moving)) for i, p in enumerate(parts)
    )


@functools.cache
def smooth(op: str, masks: tuple, varies: tuple, scalars: tuple) -> tuple:
    """``partials`` without kinks: structural zeros wherever the arguments are."""
    ks = kinks(op, masks, varies, scalars)
    return tuple(
        p and k is sympy.false for p, k in zip(partials(op, masks, varies, scalars), ks, strict=True)
    )


@functools.cache
def kink_functions(op: str, masks: tuple, varies: tuple, scalars: tuple) -> tuple:
    """NumPy functions of ``op``'s arguments, True at each argument's partial's kinks (None: none)."""
    from .elementwise import _VECTOR_MATH, NUMPY_FUNCTIONS, _lambdify

    syms, _, _ = _formulas(op, masks, scalars)
    modules = [{**NUMPY_FUNCTIONS, "numpy": np, "math": _VECTOR_MATH}]
    return tuple(
        None if k is None or k is sympy.false else _lambdify(syms, k, modules)
        for k in kinks(op, masks, varies, scalars)
    )


def zero_free(expr) -> bool:
    """Whether ``expr`` is nonzero in floating point wherever its arguments are finite (False
    where unsure): a nonzero constant times powers ``a**e`` of an argument with ``-1 <= e < 0``
    (``1 / (2 sqrt(a))``, ``1 / a``: at least 5e-309 in magnitude). Not ``-1 / a**2`` (0 for
    ``|a| > 1e162``), ``exp(a)`` or ``sigmoid(a)`` (0 from about -745), ``2 a``. A tangent times
    such a partial is zero only where the tangent is."""
    if expr.is_Number:
        return expr != 0
    if expr.is_Pow:
        e = expr.exp
        return bool(expr.base.is_Symbol and e.is_Number and -1 <= e < 0)
    if expr.is_Mul:
        return all(zero_free(a) for a in expr.args)
    return False


@functools.cache
def keeps_zeros(op: str, masks: tuple, varies: tuple, scalars: tuple) -> tuple:
    """For each argument of elementwise ``op``: whether a product with its partial is zero only
    where the other factor is or structurally (its partial has structural zeros, or none)."""
    _, _, parts = _formulas(op, masks, scalars)
    exact = smooth(op, masks, varies, scalars)
    return tuple(e or p is not None and zero_free(p) for e, p in zip(exact, parts, strict=True))


@functools.cache
def second_partials(op: str, masks: tuple, varies: tuple, scalars: tuple) -> tuple:
    """``partials`` for the second partials ``f_kj`` (rows k, columns j)."""
    syms, _, parts = _formulas(op, masks, scalars)
    moving = [s for s, m, v in zip(syms, masks, varies, strict=True) if v and not m]
    table = []
    for p in parts:
        row = []
        for s, m in zip(syms, masks, strict=True):
            q = None if p is None or m else exact_partial(p, s)
            row.append(q is None or q == 0 or kink(q) is sympy.false and locally_constant(q, moving))
        table.append(tuple(row))
    return tuple(table)


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
                ok = self.smooth(n)
                if all(ok[k] and a in constant for k, a in live):
                    constant.add(n)
                elif len(live) == 1 and self.keeps(n)[live[0][0]] and live[0][1] in tangents:
                    tangents.add(n)
            elif op in _CONTRACTIONS:
                others_fixed = all(
                    all(not varying[b] for i, b in enumerate(args) if type(b) is int and i != k)
                    for k, _ in live
                )
                if others_fixed and all(a in constant for _, a in live):
                    constant.add(n)
            if n in constant:
                tangents.add(n)
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
                exact.add(a)
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
            return n in constant and self.smooth(n)[k], n in exact and self.keeps(n)[k] and same
        if op in _CONTRACTIONS and all(
            not self.varying[b] for i, b in enumerate(args) if i != k and type(b) is int
        ):
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

    def smooth(self, n) -> tuple:
        """``smooth`` of elementwise node ``n``."""
        return smooth(*self._key(n))

    def structural_at(self, n, k, vals):
        """Whether elementwise node ``n``'s partial in argument ``k`` has structural zeros at the
        arguments' values ``vals`` (NumPy arrays): True, False, or a mask (not at a kink)."""
        if not self.partial(n)[k]:
            return False
        f = kink_functions(*self._key(n))[k]
        return True if f is None else ~np.asarray(f(*vals), dtype=bool)

    def kink(self, n, k):
        """The SymPy condition of ``kinks`` (``sympy.false``: none) for node ``n``'s argument ``k``."""
        return kinks(*self._key(n))[k]

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
    return (
        sympy.nsimplify(a[1]) if isinstance(a[1], float) and float(a[1]).is_integer() else sympy.Float(a[1])
    )


def _gathers(params) -> bool:
    """Whether a getitem's index holds an array (which may repeat a position: its adjoint sums)."""
    return any(getattr(k, "ndim", 0) for k in decode_index(params[0]))


@functools.lru_cache(maxsize=64)
def of(graph) -> Zeros:
    """The :class:`Zeros` of ``graph`` (cached per graph)."""
    return Zeros(graph)


# --- lazy answers and undecided products, as the NumPy roads meet them ----------------------------

_SEEN = threading.local()


def resolve(flag):
    """A lazy answer's value (``flag()`` where it is a function): a bool, or a mask."""
    return flag() if callable(flag) else flag


def where(flag, shape) -> np.ndarray:
    """``resolve(flag)`` as a boolean array of ``shape``: where the zeros are structural."""
    return np.broadcast_to(np.asarray(resolve(flag), dtype=bool), shape)


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
