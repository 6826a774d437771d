"""Second derivatives at the array level: forward mode over reverse mode.

The Hessian of a scalar ``f`` is the Jacobian of its gradient. A forward pass gives every node its
value and its tangent along ``w`` seed directions (:mod:`symjac.arrays.forward`: the identity for
a Hessian, ``v`` for an hvp). A reverse pass then carries each node's adjoint ``xbar`` *and the
adjoint's tangent* ``xbar'`` back to the inputs, as one array of shape ``node.shape + (1 + w,)``
(column 0 the adjoint, the rest its tangent). At the inputs they are the gradient and the
gradient's derivative along the seeds: the Hessian's rows, or ``H v``.

- Linear ops (reshape, gathers, sums, cumsum, max/min once their ties are known) apply their
  transpose to all ``1 + w`` columns alike.
- An elementwise ``y = f(x_1, ...)`` sends ``f_i * ybar`` to ``x_i``, and to its tangent the
  curvature ``ybar * sum_j f_ij x_j'`` besides, with ``f_ij`` derived by SymPy from the scalar
  formula (:func:`symjac.arrays.elementwise.second_rule`).
- A contraction sends each operand the contraction of ``ybar`` with the others, and to its
  tangent the terms with one other operand replaced by its tangent.
- ``logsumexp`` sends ``s * ybar`` (``s = softmax``), and ``ybar * s * (x' - sum s x')`` to the
  tangent.

Every node carries ``O(w)`` numbers per element, so a Hessian over ``n`` inputs costs about
``2n + 2`` forward passes' worth of work and an hvp a few; forward mode of second order carried
``n * n`` per element (cubic for ``log(sum(exp(x)))``). A structural zero factor kills an infinite
or NaN one throughout, as on the other roads (:func:`symjac.arrays.forward.scaled`,
:func:`symjac.arrays.finiteness.einsum`); an adjoint's zeros are structural from the output's
seed back, through moves and structural partials, until two adjoints add or a curvature term
joins (:mod:`symjac.arrays.structural`); other zeros meet an inf as IEEE's NaN. Products and
running products have no rule here: their graphs keep the element road.
"""

from __future__ import annotations

import math

import numpy as np

from ..trace.ops import ELEMENTWISE, decode_index
from . import finiteness, forward, structural
from .elementwise import Unsupported, rule, second_rule
from .letters import explicit, free_letters, matmul_letters

F64 = forward.F64
_FIRST_ORDER_ONLY = frozenset({"prod", "cumprod"})


def unsupported_ops(graph) -> set[str]:
    """The ops of ``graph`` without a second-order array rule (empty when it can take it)."""
    bad = forward.unsupported_ops(graph)
    for op, args, params in graph.eqns:
        if op in _FIRST_ORDER_ONLY:
            bad.add(op)
        elif op in ELEMENTWISE and op not in bad:
            try:
                second_rule(op, tuple(forward._is_mask(graph, a) for a in args))
            except Unsupported:
                bad.add(op)
        elif op == "einsum" and "->" in params[0] and _repeats_a_letter(params[0]):
            bad.add("einsum (a repeated index within an operand)")
    return bad


def _repeats_a_letter(spec: str) -> bool:
    """A diagonal (``"ii->i"``): its transpose would write a diagonal, which einsum cannot."""
    terms = [t.replace("...", "") for t in spec.split("->")[0].split(",")]
    return any(len(set(t)) < len(t) for t in terms)


def tangent_elements(graph, width: int) -> int:
    """Elements of all tangents and adjoints for ``width`` seed directions (the working set)."""
    return (2 * width + 2) * sum(forward.dependent_sizes(graph))


def evaluate(graph, arrays, seeds, width: int):
    """The value of the graph's one scalar output, and its gradient and the gradient's tangents.

    Args:
        graph: a recorded :class:`~symjac.trace.graph.Graph` with one output of one element.
        arrays: a value for every graph input, in input order.
        seeds: ``{input index: tangent}``, each of shape ``input.shape + (width,)``.
        width: the number of seed directions.

    Returns:
        ``(value, gradients)``: ``gradients`` maps an input index to an array of shape
        ``input.shape + (1 + width,)``: the gradient, then its derivative along each seed (no
        entry where the output does not depend on that input).
    """
    eqns = graph.eqns
    vals: list = [None] * len(eqns)
    tans: list = [None] * len(eqns)
    rows: dict = {}  # forward's structurally zero tangent rows
    (out,) = graph.outputs
    with np.errstate(all="ignore"):
        for n, (op, args, params) in enumerate(eqns[: out + 1]):
            if op == "input":
                vals[n] = forward._real(np.asarray(arrays[params[0]]).reshape(graph.shape(n)))
                tans[n] = seeds.get(params[0])
            else:
                av = [vals[a] if type(a) is int else np.float64(a[1]) for a in args]
                at = [tans[a] if type(a) is int else None for a in args]
                vals[n], tans[n] = forward._apply(op, av, at, params, graph, n, width, rows)
        adj: list = [None] * len(eqns)
        if tans[out] is not None:
            adj[out] = np.zeros(graph.shape(out) + (1 + width,))
            adj[out][..., 0] = 1.0
        grads = {}
        for n in range(out, -1, -1):
            if adj[n] is None:
                continue
            op, args, params = eqns[n]
            if op == "input":
                grads[params[0]] = adj[n]
                continue
            wanted = [type(a) is int and tans[a] is not None for a in args]
            av = [vals[a] if type(a) is int else np.float64(a[1]) for a in args]
            at = [tans[a] if type(a) is int else None for a in args]
            ctx = _Zeros(graph, n)
            adjoint = _elementwise if op in ELEMENTWISE else _ADJOINTS[op]
            parts = adjoint(op, av, at, adj[n], vals[n], wanted, params, ctx)
            for a, part, want in zip(args, parts, wanted, strict=True):
                if want and part is not None:
                    adj[a] = part if adj[a] is None else adj[a] + part
            adj[n] = None
    return vals[out], grads


class _Zeros:
    """What node ``n``'s adjoint rule asks of structural zeros (:mod:`symjac.arrays.structural`),
    each a function, called only where a zero meets an inf or NaN."""

    def __init__(self, graph, n):
        self.graph, self.n, self.args = graph, n, graph.eqns[n][1]

    @property
    def zeros(self):
        return structural.of(self.graph)

    def adjoint(self) -> bool:
        """``adj[n]``'s zeros (in every column) are structural."""
        return self.n in self.zeros.second_adjoints

    def tangent(self, k):
        """Argument ``k``'s tangent has structural zeros."""
        return lambda: self.args[k] in self.zeros.tangents

    def value(self, k):
        """Argument ``k`` is a constant."""
        return lambda: self.zeros.value(self.args[k])

    def second(self, i, j):
        """The second partial ``f_ij``'s zeros are structural."""
        return lambda: self.zeros.second(self.n)[i][j]


def _one_exact(terms):
    """A lazy flag: a curvature made of ``terms`` ((q's flag, tangent's flag) each) has
    structural zeros, which only one term can promise (a sum of two is not exact)."""
    return lambda: len(terms) == 1 and terms[0][0]() and terms[0][1]()


def _unbroadcast(x: np.ndarray, shape: tuple) -> np.ndarray:
    """``x`` of shape ``broadcast(shape) + (c,)`` summed back to ``shape + (c,)``. (``shape`` may
    have more axes, of length 1: a ``(1, 3)`` value assigned to a ``(3,)`` slot.)"""
    lead = x.ndim - 1 - len(shape)
    if lead < 0:
        x = x.reshape((1,) * -lead + x.shape)
    elif lead:
        x = x.sum(axis=tuple(range(lead)))
    axes = tuple(k for k, d in enumerate(shape) if d == 1 and x.shape[k] != 1)
    return x.sum(axis=axes, keepdims=True) if axes else x


def _elementwise(op, vals, tans, adj, value, wanted, params, ctx):
    masks = tuple(np.asarray(v).dtype == np.bool_ for v in vals)
    _, partials = rule(op, masks)
    second = second_rule(op, masks)
    shapes = [np.shape(v) for v in vals]
    bvals = np.broadcast_arrays(*vals) if len(vals) > 1 else vals
    shape = adj.shape[:-1]
    width = adj.shape[-1] - 1
    ybar = adj[..., 0]
    parts = []
    for i, want in enumerate(wanted):
        if not want or partials[i] is None:
            parts.append(None)
            continue
        p = np.broadcast_to(np.asarray(partials[i](*bvals), dtype=F64), shape)
        part = forward.scaled(p, adj, lambda i=i: ctx.zeros.structural_at(ctx.n, i, bvals), ctx.adjoint)
        curve, exact = None, []
        for j, q in enumerate(second[i]):
            if q is None or tans[j] is None:
                continue
            qv = np.broadcast_to(np.asarray(q(*bvals), dtype=F64), shape)
            q_exact = ctx.second(i, j)
            term = forward.scaled(qv, np.broadcast_to(tans[j], shape + (width,)), q_exact, ctx.tangent(j))
            curve = term if curve is None else curve + term
            exact.append((q_exact, ctx.tangent(j)))
        if curve is not None:  # part is a fresh product: adding in place is safe
            part[..., 1:] += forward.scaled(ybar, curve, ctx.adjoint, _one_exact(exact))
        parts.append(_unbroadcast(part, shapes[i]))
    return parts


def _contraction(terms, out, vals, tans, adj, wanted, ctx):
    """Each wanted operand's adjoint columns of ``einsum(terms -> out)``: the contraction of all
    ``adj`` columns with the other operands, plus, in the tangent columns, one term per other
    operand with a tangent standing in for its value (the product rule)."""
    terms, out = explicit(terms, out, [np.ndim(v) for v in vals])
    col = free_letters("".join(terms) + out)[0]
    parts = []
    for k, want in enumerate(wanted):
        if not want:
            parts.append(None)
            continue
        others = [i for i in range(len(vals)) if i != k]
        part = _into(
            [out + col] + [terms[i] for i in others], [adj] + [vals[i] for i in others], terms[k] + col,
            np.shape(vals[k]) + (adj.shape[-1],), [ctx.adjoint] + [ctx.value(i) for i in others],
        )  # fmt: skip
        for i in others:
            if tans[i] is None:
                continue
            rest = [m for m in others if m != i]
            curve = _into(
                [out, terms[i] + col] + [terms[m] for m in rest],
                [adj[..., 0], tans[i]] + [vals[m] for m in rest],
                terms[k] + col,
                np.shape(vals[k]) + (adj.shape[-1] - 1,),
                [ctx.adjoint, ctx.tangent(i)] + [ctx.value(m) for m in rest],
            )
            part[..., 1:] += curve
        parts.append(part)
    return parts


def _into(terms, operands, target: str, shape: tuple, exact) -> np.ndarray:
    """``einsum(terms -> target)`` of shape ``shape``, where a target letter no operand carries is
    broadcast, and one an operand carries at a larger extent (a broadcast) is summed; ``exact``
    says which operands' zeros are structural (``finiteness.einsum``)."""
    present = set("".join(terms))
    out = "".join(c for c in target if c in present)
    result = finiteness.einsum(terms, out, operands, exact)
    result = result.reshape([result.shape[out.index(c)] if c in present else 1 for c in target])
    axes = tuple(k for k, d in enumerate(shape) if d == 1 and result.shape[k] != 1)
    if axes:
        result = result.sum(axis=axes, keepdims=True)
    return np.array(np.broadcast_to(result, shape))


def _einsum(op, vals, tans, adj, value, wanted, params, ctx):
    ins, out = params[0].split("->")
    return _contraction(ins.split(","), out, vals, tans, adj, wanted, ctx)


def _matmul(op, vals, tans, adj, value, wanted, params, ctx):
    spelled, out, _ = matmul_letters(np.shape(vals[0]), np.shape(vals[1]))
    return _contraction(spelled, out, vals, tans, adj, wanted, ctx)


def _axes(params, ndim) -> tuple:
    axes = params[0]
    return tuple(range(ndim)) if axes is None else tuple(sorted(a % ndim for a in axes))


def _kept(adj, axes, keepdims):
    """``adj`` of a reduction's result with the reduced axes back, as length 1."""
    return adj if keepdims else np.expand_dims(adj, axes)


def _sum(op, vals, tans, adj, value, wanted, params, ctx):
    x = vals[0]
    axes = _axes(params, x.ndim)
    return [np.broadcast_to(_kept(adj, axes, params[1]), x.shape + adj.shape[-1:])]


def _extremum(op, vals, tans, adj, value, wanted, params, ctx):
    x = vals[0]
    axes = _axes(params, x.ndim)
    m = _kept(value, axes, params[1])
    tied = x == m  # the derivative splits evenly between ties, as forward mode's rule
    weight = tied / np.sum(tied, axis=axes, keepdims=True)
    return [forward.scaled(weight, _kept(adj, axes, params[1]), True, ctx.adjoint)]  # weights select


def _logsumexp(op, vals, tans, adj, value, wanted, params, ctx):
    (x,), (t,) = vals, tans
    axes = _axes(params, x.ndim)
    top = np.max(x, axis=axes, keepdims=True)
    w = np.exp(x - np.where(np.isfinite(top), top, 0.0))
    s = w / np.sum(w, axis=axes, keepdims=True)  # softmax: the first derivative
    kept = _kept(adj, axes, params[1])
    part = forward.scaled(s, kept, False, ctx.adjoint)  # fresh, of shape x.shape + (1 + w,)
    st = forward.scaled(s, t, False, ctx.tangent(0))
    spread = forward.scaled(s, t - np.sum(st, axis=axes, keepdims=True), False, False)  # softmax's tangent
    part[..., 1:] += forward.scaled(np.broadcast_to(kept[..., 0], x.shape), spread, ctx.adjoint, False)
    return [part]


def _cumsum(op, vals, tans, adj, value, wanted, params, ctx):
    axis = params[0] % vals[0].ndim
    return [np.flip(np.cumsum(np.flip(adj, axis), axis=axis), axis)]


def _transpose(op, vals, tans, adj, value, wanted, params, ctx):
    inverse = tuple(int(k) for k in np.argsort(params[0]))
    return [adj.transpose(inverse + (len(inverse),))]


def _index(params, ndim) -> tuple:
    return forward._expand_index(decode_index(params[0]), ndim) + (slice(None),)


def _getitem(op, vals, tans, adj, value, wanted, params, ctx):
    x = vals[0]
    index = _index(params, x.ndim)
    part = np.zeros(x.shape + adj.shape[-1:])
    if any(isinstance(k, np.ndarray) and k.ndim for k in index):  # a 0-d mask (a[True]) is basic
        np.add.at(part, _integer_index(index), adj)  # a repeated index gathers twice: sum both
    else:
        part[index] += adj
    return [part]


def _integer_index(index) -> tuple:
    """Boolean masks as the integer arrays they select (``np.add.at`` takes no masks)."""
    out = []
    for k in index:
        out.extend(np.nonzero(k) if isinstance(k, np.ndarray) and k.dtype == np.bool_ else (k,))
    return tuple(out)


def _setitem(op, vals, tans, adj, value, wanted, params, ctx):
    x, y = vals
    index = _index(params, x.ndim)
    rest = np.array(adj, copy=True)
    rest[index] = 0.0
    if not wanted[1]:
        return [rest, None]
    # Where the index repeats a position, the last write stands: only it sees the adjoint.
    slots = np.full(x.shape, -1, dtype=np.int64)
    written = np.shape(slots[index[:-1]])
    slots[index[:-1]] = np.arange(math.prod(written)).reshape(written)
    last = slots[index[:-1]] == np.arange(math.prod(written)).reshape(written)
    part = np.where(last[..., None], adj[index], 0.0)
    return [rest, _unbroadcast(part, np.shape(y))]


def _joined(op, vals, tans, adj, value, wanted, params, ctx):
    axis = params[0] % (adj.ndim - 1)
    if op == "stack":
        return [np.take(adj, k, axis=axis) for k in range(len(vals))]
    cuts = np.cumsum([np.shape(v)[axis] for v in vals])[:-1]
    return np.split(adj, cuts, axis=axis)


def _cast(op, vals, tans, adj, value, wanted, params, ctx):
    return [adj]


_ADJOINTS = {
    "reshape": lambda op, v, t, adj, y, w, p, ctx: [adj.reshape(np.shape(v[0]) + adj.shape[-1:])],
    "broadcast_to": lambda op, v, t, adj, y, w, p, ctx: [_unbroadcast(adj, np.shape(v[0]))],
    "transpose": _transpose,
    "getitem": _getitem,
    "setitem": _setitem,
    "concat": _joined,
    "stack": _joined,
    "sum": _sum,
    "max": _extremum,
    "min": _extremum,
    "cumsum": _cumsum,
    "logsumexp": _logsumexp,
    "matmul": _matmul,
    "einsum": _einsum,
    "cast": _cast,
}
