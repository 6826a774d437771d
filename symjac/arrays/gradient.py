"""A scalar graph's gradient recorded as a graph of its own: compiled second derivatives.

``symjac.compile(f, x, mode="hessian")`` of a large model builds the loop road's Jacobian of
``f``'s gradient graph, and ``mode="hvp"`` its jvp: forward mode over reverse mode, as JAX's
``jacfwd(grad(f))``, so the build grows with the operations, not with the elements. The gradient
graph is ``f``'s own equations followed by its reverse sweep, each adjoint an equation of ops the
loop road already compiles:

- an elementwise op's adjoint is the product of the result's adjoint with the op's exact partial
  derivative, itself an elementwise op of the table (``d0/r/tanh``,
  :func:`symjac.trace.ops.partial_name`, derived by SymPy from the scalar formula), whose own
  partials give the second derivatives;
- a contraction's (matmul, einsum) is a contraction with the other operands; a sum's a broadcast;
  a broadcast's a sum; reshapes and transposes are inverted; a gather's is an assignment into
  zeros and a concatenation's a slice; ``logsumexp`` weighs by its softmax, ``max`` and ``min``
  split between ties, as every other road does.

Only functions whose values and first and second partial derivatives are finite wherever their
inputs are (judged from the SymPy formulas, an overflow aside: tanh, exp, polynomials, relu,
logsumexp, max) have a gradient graph here; there, IEEE arithmetic on finite numbers is the exact
derivative's up to rounding. Where one can be infinite (sqrt or log at 0, 1/x, ``x**1.5``), a
product ``0 * inf`` would have to be decided: an exact derivative has no term for a zero weight
or an untaken ``where`` branch, but ``(2 sqrt(s)) * (1 / (2 sqrt(s)))`` at ``s = 0`` is the limit
1, which only the element road's symbolic simplification sees. Those functions keep it.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import sympy

from ..trace.graph import Graph
from ..trace.ops import ELEMENTWISE, decode_index, exact_partial, partial_name
from . import finiteness
from .elementwise import Unsupported
from .forward import _is_mask
from .letters import explicit, matmul_letters

F64 = np.dtype(np.float64)
_LEAVES = frozenset({"input", "const", "scalar", "capture"})


def graph(g: Graph, wrt: tuple) -> Graph:
    """The graph of ``g``'s gradient with respect to its inputs ``wrt`` (``g``: one output of one
    element): the same inputs, one output per input in ``wrt``, of that input's shape.

    Raises :class:`Unsupported` (saying why) where an op has no rule here, or where a value or a
    first or second partial derivative can be infinite at finite inputs.
    """
    (out,) = g.outputs
    if math.prod(g.shape(out)) != 1:
        raise Unsupported(f"an output of shape {g.shape(out)} (a gradient needs one element)")
    _check_finite(g)
    b = _Builder(g)
    depends = _dependent(g, wrt)
    inputs = {params[0]: n for n, (op, _, params) in enumerate(g.eqns) if op == "input"}
    adj: dict[int, int] = {}
    if out in depends:
        adj[out] = b.fill(1.0, g.shape(out))
    for n in range(out, -1, -1):
        if n not in adj or g.eqns[n][0] in _LEAVES:
            continue
        op, args, params = g.eqns[n]
        rule = _elementwise if op in ELEMENTWISE else _RULES.get(op)
        if rule is None:
            raise Unsupported(f"{op} (no reverse rule in a gradient graph)")
        wanted = [type(a) is int and a in depends for a in args]
        parts = rule(b, g, n, adj[n], wanted)
        for a, part, want in zip(args, parts, wanted, strict=True):
            if want and part is not None:
                adj[a] = part if a not in adj else b.ew("add", adj[a], part)
    outputs = []
    for j in wrt:
        node = inputs.get(j)
        shape = tuple(_input_shape(g, j)) if node is None else g.shape(node)
        outputs.append(adj[node] if node in adj else b.fill(0.0, shape))
    return Graph(tuple(b.eqns), g.inputs, tuple(outputs), g.captures, tuple(b.meta))


def _input_shape(g, j):
    from ..elements.derive import _input_specs

    return _input_specs(g)[j][0]


def _check_finite(g) -> None:
    """Refuse a graph where a value or a first or second partial derivative of an elementwise op
    can be infinite at finite arguments (see the module's docstring), or a captured array holds
    an inf or NaN."""
    for op, args, params in g.eqns:
        if op == "const" and not finiteness.finite_constant(params):
            raise Unsupported("a captured array that holds an inf or NaN")
        if op not in ELEMENTWISE:
            continue
        inline = tuple(None if type(a) is int else a[1] for a in args)
        if not _finite_op(op, tuple(_is_mask(g, a) for a in args), inline):
            raise Unsupported(
                f"{op}: its value or derivatives can be infinite at finite inputs (sqrt or log at 0, "
                "1/x), where only the element road's exact simplification finds the limit"
            )


@functools.cache
def _finite_op(op: str, masks: tuple, inline: tuple) -> bool:
    """Whether elementwise ``op``'s value and its first and second partials in its node arguments
    are finite wherever they are, its ``inline`` scalars (None: a node) substituted. Once per
    op and scalars: a drop-in asks again for every new graph (a captured scalar that changed)."""
    from ..trace.ops import number
    from .elementwise import formulas

    syms, expr, partials = formulas(op, masks)
    values = {s: number(v) for s, v in zip(syms, inline, strict=True) if v is not None}
    nodes = [s for s, v in zip(syms, inline, strict=True) if v is None]
    firsts = [d for d, v in zip(partials, inline, strict=True) if d is not None and v is None]
    seconds = [exact_partial(d, s) for d in firsts for s in nodes]
    return all(_finite(e.xreplace(values)) for e in (expr, *firsts, *seconds))


def _finite(expr) -> bool:
    """Whether ``expr`` is finite wherever its symbols are, an overflow aside (``exp``), with
    constants (``sqrt(2)``) as their values and ``DiracDelta`` as the 0 every road computes (the
    derivative of a step is 0, as torch has it)."""
    constant = lambda e: isinstance(e, sympy.Expr) and not e.is_Number and not e.free_symbols  # noqa: E731
    expr = expr.replace(constant, lambda e: sympy.Float(e.evalf()))
    expr = expr.replace(sympy.DiracDelta, lambda *args: sympy.S.Zero)
    for f in (sympy.exp, sympy.sinh, sympy.cosh):
        expr = expr.replace(f, sympy.tanh)
    return finiteness.finite_at_finite(expr)


def _dependent(g, wrt) -> set:
    """The nodes that depend on the inputs ``wrt`` (masks and counts carry no derivative)."""
    dep: set = set()
    for n, (op, args, params) in enumerate(g.eqns):
        if op == "input":
            if params[0] in wrt:
                dep.add(n)
        elif not _is_mask(g, n) and op not in _LEAVES and any(type(a) is int and a in dep for a in args):
            dt = g.dtype(n)
            if dt is None or dt.kind == "f":
                dep.add(n)
    return dep


class _Builder:
    """The gradient graph's equations: ``g``'s, then those appended."""

    def __init__(self, g):
        self.eqns = list(g.eqns)
        self.meta = list(g.meta)

    def emit(self, op, args, params, shape, dtype=F64) -> int:
        self.eqns.append((op, tuple(args), tuple(params)))
        self.meta.append((tuple(shape), dtype, op))
        return len(self.eqns) - 1

    def shape(self, a) -> tuple:
        return self.meta[a][0] if type(a) is int else ()

    def ew(self, op, *args) -> int:
        shape = np.broadcast_shapes(*(self.shape(a) for a in args))
        return self.emit(op, args, (), shape)

    def fill(self, value: float, shape) -> int:
        node = self.emit("scalar", (), (float(value),), (), None)
        return self.emit("broadcast_to", (node,), (tuple(shape),), shape) if shape else node

    def reshape(self, a, shape) -> int:
        return a if self.shape(a) == tuple(shape) else self.emit("reshape", (a,), (tuple(shape),), shape)

    def sum(self, a, axes, keepdims) -> int:
        if not axes:
            return a
        have = self.shape(a)
        shape = tuple(1 if k in axes else d for k, d in enumerate(have) if keepdims or k not in axes)
        return self.emit("sum", (a,), (tuple(sorted(axes)), keepdims), shape)

    def broadcast(self, a, shape) -> int:
        shape = tuple(shape)
        return a if self.shape(a) == shape else self.emit("broadcast_to", (a,), (shape,), shape)

    def unbroadcast(self, a, shape) -> int:
        """``a`` (of a shape ``shape`` broadcasts to) summed back to ``shape``."""
        have = self.shape(a)
        lead = len(have) - len(shape)
        a = self.sum(a, tuple(range(lead)), False)
        a = self.sum(a, tuple(k for k, d in enumerate(shape) if d == 1 and have[lead + k] != 1), True)
        return self.reshape(a, shape)

    def getitem(self, a, key) -> int:
        shape = np.broadcast_to(np.zeros((), np.int8), self.shape(a))[decode_index(key)].shape
        return self.emit("getitem", (a,), (key,), shape)


def _elementwise(b, g, n, ybar, wanted):
    from .elementwise import formulas

    op, args, _ = g.eqns[n]
    masks = tuple(_is_mask(g, a) for a in args)
    syms, _, partials = formulas(op, masks)
    parts = []
    for k, (a, want) in enumerate(zip(args, wanted, strict=True)):
        d = partials[k]
        if not want or d is None:
            parts.append(None)
            continue
        # The common partials spelled as what they are: 1, -1, a constant, another argument.
        if d == 1:
            part = ybar
        elif d == -1:
            part = b.ew("neg", ybar)
        elif d.is_Number:
            part = b.ew("mul", ybar, ("s", float(d)))
        elif d in syms and not masks[syms.index(d)]:
            part = b.ew("mul", ybar, args[syms.index(d)])
        else:
            part = b.ew("mul", ybar, b.emit(partial_name(op, k, masks), args, (), g.shape(n)))
        parts.append(b.unbroadcast(part, g.shape(a)))
    return parts


def _contraction(b, terms, out, args, ybar, wanted, g):
    terms, out = explicit(terms, out, [len(g.shape(a)) for a in args])
    if any(len(set(t)) < len(t) for t in terms):
        raise Unsupported("einsum with a repeated index within an operand (a diagonal)")
    sizes = {}
    for t, a in zip(terms, args, strict=True):
        for c, d in zip(t, g.shape(a), strict=True):
            sizes[c] = max(sizes.get(c, 1), d)
    parts = []
    for k, want in enumerate(wanted):
        if not want:
            parts.append(None)
            continue
        others = [i for i in range(len(args)) if i != k]
        ins = [out] + [terms[i] for i in others]
        present = set("".join(ins))
        target = "".join(c for c in terms[k] if c in present)
        spec = ",".join(ins) + "->" + target
        shape = tuple(sizes[c] for c in target)
        part = b.emit("einsum", (ybar, *(args[i] for i in others)), (spec,), shape)
        # Letters of operand k alone were summed in the forward einsum: their adjoint broadcasts.
        full = tuple(sizes[c] for c in terms[k])
        part = b.broadcast(b.reshape(part, tuple(sizes[c] if c in present else 1 for c in terms[k])), full)
        parts.append(b.unbroadcast(part, g.shape(args[k])))
    return parts


def _einsum(b, g, n, ybar, wanted):
    _, args, params = g.eqns[n]
    if "->" not in params[0]:
        raise Unsupported("einsum with an implicit output")
    ins, out = params[0].split("->")
    return _contraction(b, ins.split(","), out, args, ybar, wanted, g)


def _matmul(b, g, n, ybar, wanted):
    _, args, _ = g.eqns[n]
    terms, out, _ = matmul_letters(g.shape(args[0]), g.shape(args[1]))
    return _contraction(b, terms, out, args, ybar, wanted, g)


def _kept(b, g, n, node):
    """A reduction's result (or its adjoint) with the reduced axes back, as length 1."""
    _, (x,), (axes, keepdims) = g.eqns[n]
    kept = tuple(1 if k in axes else d for k, d in enumerate(g.shape(x)))
    return node if keepdims else b.reshape(node, kept)


def _sum(b, g, n, ybar, wanted):
    (x,) = g.eqns[n][1]
    return [b.broadcast(_kept(b, g, n, ybar), g.shape(x))]


def _logsumexp(b, g, n, ybar, wanted):
    (x,) = g.eqns[n][1]
    softmax = b.ew("exp", b.ew("sub", x, _kept(b, g, n, n)))
    return [b.ew("mul", _kept(b, g, n, ybar), softmax)]


def _extremum(b, g, n, ybar, wanted):
    _, (x,), (axes, _) = g.eqns[n]
    tied = b.emit("equal", (x, _kept(b, g, n, n)), (), g.shape(x), np.dtype(bool))
    weight = b.emit("mask_to_float", (tied,), (), g.shape(x))
    share = b.ew("div", weight, b.sum(weight, axes, True))  # ties split evenly, as every road
    return [b.ew("mul", _kept(b, g, n, ybar), share)]


def _transpose(b, g, n, ybar, wanted):
    perm = g.eqns[n][2][0]
    inverse = tuple(int(k) for k in np.argsort(perm))
    (x,) = g.eqns[n][1]
    return [b.emit("transpose", (ybar,), (inverse,), g.shape(x))]


def _unique(g, shape, key) -> None:
    """A scatter's positions must be distinct: a gather that reads one twice sums two adjoints,
    which an assignment cannot."""
    positions = np.arange(math.prod(shape)).reshape(shape)[decode_index(key)]
    if np.unique(positions).size != np.size(positions):
        raise Unsupported("an index that repeats a position (its adjoint is a scatter-add)")


def _getitem(b, g, n, ybar, wanted):
    _, (x,), (key,) = g.eqns[n]
    _unique(g, g.shape(x), key)
    return [b.emit("setitem", (b.fill(0.0, g.shape(x)), ybar), (key,), g.shape(x))]


def _setitem(b, g, n, ybar, wanted):
    _, (x, y), (key,) = g.eqns[n]
    _unique(g, g.shape(x), key)
    rest = b.emit("setitem", (ybar, b.fill(0.0, ())), (key,), g.shape(x)) if wanted[0] else None
    part = b.unbroadcast(b.getitem(ybar, key), g.shape(y)) if wanted[1] else None
    return [rest, part]


def _joined(b, g, n, ybar, wanted):
    op, args, (axis,) = g.eqns[n]
    ndim = len(g.shape(n))
    axis %= ndim
    parts, start = [], 0
    for a, want in zip(args, wanted, strict=True):
        width = 1 if op == "stack" else g.shape(a)[axis]
        if want:
            pick = ("int", start) if op == "stack" else ("slice", start, start + width, None)
            parts.append(b.getitem(ybar, (("slice", None, None, None),) * axis + (pick,)))
        else:
            parts.append(None)
        start += width
    return parts


_RULES = {
    "reshape": lambda b, g, n, ybar, w: [b.reshape(ybar, g.shape(g.eqns[n][1][0]))],
    "broadcast_to": lambda b, g, n, ybar, w: [b.unbroadcast(ybar, g.shape(g.eqns[n][1][0]))],
    "cast": lambda b, g, n, ybar, w: [ybar],
    "transpose": _transpose,
    "getitem": _getitem,
    "setitem": _setitem,
    "concat": _joined,
    "stack": _joined,
    "sum": _sum,
    "max": _extremum,
    "min": _extremum,
    "logsumexp": _logsumexp,
    "matmul": _matmul,
    "einsum": _einsum,
}
