"""The matrix exponential: Taylor polynomial with scaling and squaring, and its exact derivative.

An n x n ``expm`` has no closed form in standard SymPy functions, and writing the algorithm out
as traced matrix products would give expression trees exponential in its depth. So each entry
``expm(A)[i, j]`` is one SymPy function of the n*n entries of A (``MatrixExp3_0_1(a_00, ...)``)
whose derivative is an entry of the Frechet derivative ``L(A, E)``, another such function of A
and the direction E. Second derivatives follow from the block identity
``expm([[A, E], [0, A]]) = [[expm(A), L(A, E)], [0, expm(A)]]``.

Kernels compute both with one algorithm (``_expm``), written once over an arithmetic facade:
straight-line LLVM (each distinct matrix once per kernel) and NumPy (``sympy.lambdify``, via
``_imp_``). The algorithm is the Taylor polynomial of degree 12 at ``X = A / 2**s``, with
``s = ceil(log2(|A|_1 / 0.25))`` chosen per evaluation, followed by ``s`` squarings (a loop in
the kernel); the
truncation error is below ``0.25**13 / 13! < 3e-18`` relative, so results agree with
``scipy.linalg.expm`` to rounding (about 1e-14 relative in the tests). Matrices with
``|A|_1 > 0.25 * 2**14`` (about 4096) give NaN rather than an inaccurate result.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import sympy

from . import ops
from .ops import Primitive

_DEGREE = 12
_THETA = 0.25
_MAX_SQUARINGS = 14


def _expm(ar, A, directions=(), first_order=False):
    """The mixed directional derivative of expm at A along every direction (expm(A) itself for
    none), as rows of values: one forward-mode pass on truncated Taylor jets. With
    ``first_order``, the derivative along each direction separately (a list of matrices)."""
    n, k = len(A), len(directions)
    full = (1 << k) - 1
    norm = None
    for j in range(n):
        col = ar.abs(A[0][j])
        for i in range(1, n):
            col = ar.add(col, ar.abs(A[i][j]))
        norm = col if norm is None else ar.max(norm, col)
    t = ar.ceil(ar.log2(ar.scale(norm, 1.0 / _THETA)))
    s = ar.select(ar.gt(t, 0.0), t, ar.const(0.0))  # piecewise constant: no derivative
    factor = ar.exp2(ar.neg(s))
    jet = _Jets(ar, k, first_order)
    X = [
        [jet.scale_by(jet.seed(A[i][j], [D[i][j] for D in directions]), factor) for j in range(n)]
        for i in range(n)
    ]

    def matmul(P, Q):
        return [
            [jet.total([jet.mul(P[i][m], Q[m][j]) for m in range(n)]) for j in range(n)] for i in range(n)
        ]

    def combo(coeffs, powers):  # sum_c coeffs[c] * powers[c], powers[0] = I
        out = []
        for i in range(n):
            row = []
            for j in range(n):
                terms = [jet.scale(powers[c][i][j], coeffs[c]) for c in range(1, len(coeffs))]
                value = jet.total(terms) if terms else jet.zero()
                row.append(jet.add_const(value, coeffs[0]) if i == j else value)
            out.append(row)
        return out

    # Taylor polynomial of degree 12 by Paterson-Stockmeyer: Horner in X**3 over 3-term chunks
    X2 = matmul(X, X)
    X3 = matmul(X2, X)
    coeffs = [1.0 / math.factorial(d) for d in range(_DEGREE + 1)]
    P = combo([coeffs[12]], [None])
    for c in (3, 2, 1, 0):
        P = _plus(jet, combo(coeffs[3 * c : 3 * c + 3], [None, X, X2]), matmul(X3, P))
    # The s squarings run as a loop (one squaring in the code, not _MAX_SQUARINGS selected
    # ones: the straight-line form made a 3x3 Jacobian kernel 30k LLVM lines, 4-20 s to build).
    # Lanes of a SIMD kernel may need fewer squarings than the loop runs: they keep their value.
    masks = sorted(set().union(*(v.keys() for row in P for v in row)))

    def flat(M):
        return [jet.component(v, m) for row in M for v in row for m in masks]

    def square(state, q):
        it = iter(state)
        M = [[{m: next(it) for m in masks} for _ in range(n)] for _ in range(n)]
        more = ar.gt(s, q)
        return [ar.select(more, a, b) for a, b in zip(flat(matmul(M, M)), state, strict=True)]

    state = ar.repeat(ar.min(s, float(_MAX_SQUARINGS)), flat(P), square)
    it = iter(state)
    P = [[{m: next(it) for m in masks} for _ in range(n)] for _ in range(n)]
    out_of_range = ar.gt(s, float(_MAX_SQUARINGS))
    nan = ar.const(float("nan"))
    if first_order:
        return [
            [[ar.select(out_of_range, nan, jet.component(v, 1 << m)) for v in row] for row in P]
            for m in range(k)
        ]
    return [[ar.select(out_of_range, nan, jet.component(v, full)) for v in row] for row in P]


def _plus(jet, M, N):
    return [[jet.add(a, b) for a, b in zip(r, q, strict=True)] for r, q in zip(M, N, strict=True)]


class _Jets:
    """Values with k infinitesimal parts (eps_m**2 = 0): a dict from subsets of directions
    (bit masks) to values; a missing subset is zero."""

    def __init__(self, ar, k, first_order=False):
        self.ar = ar
        self.subsets = range(1 << k)
        self.first_order = first_order  # no mixed parts: k separate first derivatives

    def seed(self, value, along):
        out = {0: value}
        for m, d in enumerate(along):
            out[1 << m] = d
        return out

    def zero(self):
        return {}

    def component(self, v, mask):
        return v.get(mask, self.ar.const(0.0))

    def scale_by(self, v, factor):
        return {m: self.ar.mul(x, factor) for m, x in v.items()}

    def scale(self, v, c):
        return {m: self.ar.scale(x, c) for m, x in v.items()}

    def add_const(self, v, c):
        out = dict(v)
        out[0] = self.ar.add(v[0], self.ar.const(c)) if 0 in v else self.ar.const(c)
        return out

    def add(self, a, b):
        out = dict(a)
        for m, x in b.items():
            out[m] = self.ar.add(out[m], x) if m in out else x
        return out

    def total(self, vs):
        acc = vs[0]
        for v in vs[1:]:
            acc = self.add(acc, v)
        return acc

    def mul(self, a, b):
        out = {}
        for ma, x in a.items():
            for mb, y in b.items():
                if ma & mb or (self.first_order and ma and mb):
                    continue
                term = self.ar.mul(x, y)
                m = ma | mb
                out[m] = self.ar.add(out[m], term) if m in out else term
        return out

    def select(self, cond, a, b):
        out = {}
        for m in set(a) | set(b):
            out[m] = self.ar.select(cond, self.component(a, m), self.component(b, m))
        return out


class _NumPyArithmetic:
    """NumPy scalars or arrays (lanes of points), for ``sympy.lambdify`` and constant folding."""

    add, mul = staticmethod(np.add), staticmethod(np.multiply)
    abs, neg, ceil = staticmethod(np.abs), staticmethod(np.negative), staticmethod(np.ceil)
    max = staticmethod(np.fmax)
    gt = staticmethod(np.greater)
    select = staticmethod(np.where)
    exp2 = staticmethod(np.exp2)

    @staticmethod
    def log2(x):
        with np.errstate(divide="ignore"):
            return np.log2(x)

    @staticmethod
    def scale(x, c):
        return np.multiply(x, c)

    @staticmethod
    def min(x, c):
        return np.minimum(x, c)

    @staticmethod
    def repeat(count, state, body):
        """``state = body(state, q)`` for q = 0, 1, ... below the largest count."""
        for q in range(int(np.max(count))):
            state = body(state, np.float64(q))
        return state

    @staticmethod
    def const(v):
        return np.float64(v)


class _LLVMArithmetic:
    """Straight-line LLVM on the values of a :class:`symjac.backend.codegen._Lowerer`."""

    def __init__(self, lw):
        self.lw = lw
        self.b = lw.b

    def add(self, a, b):
        return self.b.fadd(a, b)

    def mul(self, a, b):
        return self.b.fmul(a, b)

    def scale(self, a, c):
        return self.b.fmul(a, self.lw.const(c))

    def abs(self, a):
        return self.lw.call("llvm.fabs", True, [a])

    def neg(self, a):
        return self.b.fneg(a)

    def ceil(self, a):
        return self.lw.call("llvm.ceil", True, [a])

    def log2(self, a):
        return self.lw.call("llvm.log2", True, [a])

    def exp2(self, a):
        return self.lw.call("llvm.exp2", True, [a])

    def max(self, a, b):
        return self.b.select(self.b.fcmp_ordered(">", a, b), a, b)

    def gt(self, a, b):
        return self.b.fcmp_ordered(">", a, b if not isinstance(b, float) else self.lw.const(b))

    def select(self, cond, a, b):
        return self.b.select(cond, a, b)

    def const(self, v):
        return self.lw.const(v)

    def min(self, a, c):
        c = self.lw.const(c)
        return self.b.select(self.b.fcmp_ordered("<", a, c), a, c)

    def repeat(self, count, state, body):
        """A loop: ``state = body(state, q)`` for q = 0, 1, ... below the largest lane of count."""
        from llvmlite import ir

        b, lw = self.b, self.lw
        trip = count
        if lw.lanes > 1:  # every lane's squarings: the largest count
            trip = b.extract_element(count, ir.Constant(ir.IntType(32), 0))
            for lane in range(1, lw.lanes):
                x = b.extract_element(count, ir.Constant(ir.IntType(32), lane))
                trip = b.select(b.fcmp_ordered(">", x, trip), x, trip)
        i32 = ir.IntType(32)
        trip = b.fptosi(trip, i32)
        fn = b.block.parent
        start = b.block
        head, loop, done = (fn.append_basic_block(f"matrix_exp.{part}") for part in ("head", "body", "done"))
        b.branch(head)
        b.position_at_end(head)
        counter = b.phi(i32)
        q = b.phi(lw.t)
        phis = [b.phi(v.type) for v in state]
        counter.add_incoming(ir.Constant(i32, 0), start)
        q.add_incoming(lw.const(0.0), start)
        for phi, v in zip(phis, state, strict=True):
            phi.add_incoming(v, start)
        b.cbranch(b.icmp_signed("<", counter, trip), loop, done)
        b.position_at_end(loop)
        new = body(phis, q)
        end = b.block
        counter.add_incoming(b.add(counter, ir.Constant(i32, 1)), end)
        q.add_incoming(b.fadd(q, lw.const(1.0)), end)
        for phi, v in zip(phis, new, strict=True):
            phi.add_incoming(v, end)
        b.branch(head)
        b.position_at_end(done)
        return phis


def _square(values, n):
    return [list(values[i * n : (i + 1) * n]) for i in range(n)]


def _split(args, n):
    size = n * n
    return _square(args[:size], n), [_square(args[p : p + size], n) for p in range(size, len(args), size)]


def _lowered(lw, n, args):
    """expm's mixed derivative for these lowered arguments, computed once per kernel."""
    from llvmlite import ir

    size = n * n
    unit = _unit_direction(args[size:], ir) if len(args) == 2 * size else None
    if unit is not None:
        # A Jacobian entry: the derivative along one unit direction. One pass computes all n*n
        # of them, sharing expm(A)'s own products (n*n separate passes repeated those).
        key = ("symjac.matrix_exp.d1", n) + tuple(_key(a, ir) for a in args[:size])
        hit = lw.memo.get(key)
        if hit is None:
            A = _square(list(args[:size]), n)
            seeds = [_square([lw.const(float(p == q)) for q in range(size)], n) for p in range(size)]
            partials = _expm(_LLVMArithmetic(lw), A, seeds, first_order=True)
            hit = lw.memo[key] = (partials, tuple(args))
        return hit[0][unit]
    key = ("symjac.matrix_exp", n) + tuple(_key(a, ir) for a in args)
    hit = lw.memo.get(key)
    if hit is None:
        A, directions = _split(list(args), n)
        hit = lw.memo[key] = (_expm(_LLVMArithmetic(lw), A, directions), tuple(args))  # pin the ids
    return hit[0]


def _key(a, ir):
    return ("c", str(a)) if isinstance(a, ir.Constant) else ("v", id(a))


def _unit_direction(direction, ir):
    """The position of the single 1 in a direction of constants 0 and 1, else None."""
    ones = []
    for p, a in enumerate(direction):
        value = getattr(a, "constant", None) if isinstance(a, ir.Constant) else None
        if value not in (0.0, 1.0):
            return None
        if value == 1.0:
            ones.append(p)
    return ones[0] if len(ones) == 1 else None


def _numeric(n, args):
    A, directions = _split([np.asarray(a, dtype=float) for a in args], n)
    with np.errstate(over="ignore", invalid="ignore"):  # beyond the range the result is NaN anyway
        return _expm(_NumPyArithmetic, A, directions)


class _Entry(sympy.Function):
    """Entry (i, j) of the mixed derivative of expm at A along ``order`` directions; its
    arguments are A's n*n entries, then each direction's."""

    is_real = True
    n = i = j = order = 0

    @classmethod
    def eval(cls, *args):
        if all(a.is_Number for a in args):
            return sympy.Float(float(_numeric(cls.n, [float(a) for a in args])[cls.i][cls.j]), 17)
        return None

    def fdiff(self, argindex=1):
        n, k = self.n, argindex - 1
        size = n * n
        A, directions = (
            list(self.args[:size]),
            [self.args[p : p + size] for p in range(size, len(self.args), size)],
        )
        unit = [sympy.S.Zero] * size
        unit[k % size] = sympy.S.One
        if k < size:  # along A: one more direction
            directions.append(tuple(unit))
            cls = matrix_exp_class(n, self.i, self.j, self.order + 1)
        else:  # the result is linear in each direction
            directions[k // size - 1] = tuple(unit)
            cls = type(self)
        directions.sort(key=sympy.default_sort_key)  # mixed derivatives commute
        return cls(*A, *(d for D in directions for d in D))

    def _ccode(self, printer):
        raise NotImplementedError("C export of matrix_exp is not supported; use the compiled kernel")


@functools.cache
def matrix_exp_class(n, i, j, order=0):
    def lower(lw, args):
        return _lowered(lw, n, args)[i][j]

    def implementation(*args):
        return _numeric(n, args)[i][j]

    namespace = {
        "n": n,
        "i": i,
        "j": j,
        "order": order,
        "nargs": n * n * (order + 1),
        "_llvm": staticmethod(lower),
        "_imp_": staticmethod(implementation),
    }
    name = f"MatrixExp{n}_{i}_{j}" + (f"_d{order}" if order else "")
    return type(name, (_Entry,), namespace)


def _evaluate(values, params):
    (a,) = values
    n = a.shape[-1]
    out = np.empty(a.shape, dtype=object)
    for idx in np.ndindex(a.shape[:-2]):
        entries = list(a[idx].flat)
        for i in range(n):
            for j in range(n):
                out[idx + (i, j)] = matrix_exp_class(n, i, j)(*entries)
    return out


ops.PRIMITIVES["matrix_exp"] = Primitive("matrix_exp", _evaluate)
