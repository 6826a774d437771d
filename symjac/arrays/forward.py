"""Forward-mode evaluation of a recorded graph at the array level.

Every node gets its value (a NumPy array) and, when it depends on the inputs, its tangent: an
array of shape ``node.shape + (n,)`` holding the derivative of each element along ``n`` seed
directions (the identity for a Jacobian, ``v`` for a jvp). Each primitive has an exact
array-level rule: linear ops (reshape, indexing, sums, matmul, ...) apply to tangents as to
values; elementwise ops multiply by partial derivatives that SymPy derived from the scalar formula
(:mod:`symjac.arrays.elementwise`). Cost grows with the number of operations times the tangent
width, not with the size of an expanded expression tree.

A structural zero contributes nothing, even against an infinite or NaN factor: the branch not
taken of ``where`` stays out of the result, as it does on the per-element road. A zero that holds
at this point only meets an inf as IEEE's NaN (:mod:`symjac.arrays.structural`).
"""

from __future__ import annotations

import math

import numpy as np

from ..trace.ops import ELEMENTWISE, decode_index
from . import finiteness, sparse, structural
from .elementwise import Unsupported, rule
from .letters import free_letters, matmul_letters

F64 = np.dtype(np.float64)

STRUCTURAL = frozenset(
    {"input", "const", "scalar", "reshape", "transpose", "broadcast_to", "getitem", "setitem", "concat",
     "stack", "sum", "prod", "logsumexp", "max", "min", "cumsum", "cumprod", "matmul", "einsum", "cast"}
)  # fmt: skip


def unsupported_ops(graph) -> set[str]:
    """The ops of ``graph`` that have no array-level rule (empty when the graph can take it)."""
    bad = set()
    for op, args, params in graph.eqns:
        if op in ELEMENTWISE:
            try:  # built once per op: a formula NumPy cannot evaluate keeps the graph per element
                rule(op, tuple(_is_mask(graph, a) for a in args))
            except Unsupported:
                bad.add(op)
            continue
        if op == "einsum" and "->" not in params[0]:
            bad.add("einsum (implicit output)")
        elif op not in STRUCTURAL:
            bad.add(op)
    return bad


def _is_mask(graph, arg) -> bool:
    return type(arg) is int and graph.dtype(arg) is not None and graph.dtype(arg).kind == "b"


def element_operations(graph) -> int:
    """About how many scalar operations the per-element road would expand ``graph`` into."""
    total = 0
    for n, (op, args, _) in enumerate(graph.eqns):
        size = math.prod(graph.shape(n))
        if op == "matmul":
            a = graph.shape(args[0])
            size *= a[-1] if a else 1
        elif op in ("sum", "max", "min") and args and type(args[0]) is int:
            size = math.prod(graph.shape(args[0]))
        total += size
    return total


def dependent_sizes(graph) -> list[int]:
    """Each node's size if it depends on the graph's inputs (it has a tangent), else 0: captured
    weights and constants carry none, however large."""
    seeded = set(graph.inputs)
    sizes: list[int] = []
    for n, (op, args, _) in enumerate(graph.eqns):
        depends = n in seeded if op == "input" else any(type(a) is int and sizes[a] for a in args)
        sizes.append(math.prod(graph.shape(n)) if depends else 0)
    return sizes


def tangent_elements(graph, width: int) -> float:
    """Elements of all tangents for ``width`` seed directions (the array road's working set): a
    dense tangent's in full, a sparse one's stored entries at their higher price."""
    sizes = dependent_sizes(graph)
    if width < sparse.SPARSE_FROM:
        return float(width * sum(sizes))
    total = 0.0
    for size, k in zip(sizes, sparse.entries_per_row(graph, width), strict=True):
        total += size * width if k > sparse.DENSE_FRACTION * width else size * k * sparse.ENTRY_COST
    return total


def evaluate(graph, arrays, seeds, width):
    """Values and tangents of the graph's outputs.

    Args:
        graph: a recorded :class:`~symjac.trace.graph.Graph`.
        arrays: a value for every graph input, in input order (the function's inputs, then
            captured arrays recorded as data).
        seeds: ``{input index: tangent}``, each of shape ``input.shape + (width,)``, or a SciPy
            sparse array of shape ``(input.size, width)`` (:mod:`symjac.arrays.sparse`).
        width: the number of seed directions.

    Returns:
        ``(values, tangents)`` of the outputs; a tangent is None where an output does not depend
        on any seeded input, and sparse (``(size, width)``) where it stayed sparse.
    """
    eqns = graph.eqns
    last_use = last_uses(eqns)
    keep = set(graph.outputs)
    vals: list = [None] * len(eqns)
    tans: list = [None] * len(eqns)
    rows: dict = {}  # node -> where its tangent's rows are structural zeros (see _elementwise)
    with np.errstate(all="ignore"):
        for n, (op, args, params) in enumerate(eqns):
            if op == "input":
                j = params[0]
                vals[n] = _real(np.asarray(arrays[j]).reshape(graph.shape(n)))
                tans[n] = seeds.get(j)
            else:
                av = [vals[a] if type(a) is int else np.float64(a[1]) for a in args]
                at = [tans[a] if type(a) is int else None for a in args]
                vals[n], tans[n] = _apply(op, av, at, params, graph, n, width, rows)
            for a in args:  # free what no later equation reads
                if type(a) is int and last_use.get(a) == n and a not in keep:
                    vals[a] = tans[a] = None
    return [vals[o] for o in graph.outputs], [tans[o] for o in graph.outputs]


def last_uses(eqns) -> dict[int, int]:
    """For each node an equation reads, the last equation that reads it (its value can go then)."""
    last = {}
    for n, (_, args, _) in enumerate(eqns):
        for a in args:
            if type(a) is int:
                last[a] = n
    return last


def _real(x: np.ndarray) -> np.ndarray:
    return x.astype(F64) if x.dtype.kind == "f" and x.dtype != F64 else x


def _apply(op, vals, tans, params, graph, n, width, rows=None):
    shape = graph.shape(n)
    if any(sparse.is_sparse(t) for t in tans) and any(isinstance(t, np.ndarray) for t in tans):
        tans = _dense(vals, tans, width)  # one dense operand fills the result anyway
    if op in ELEMENTWISE:
        return _elementwise(op, vals, tans, shape, width, graph, n, {} if rows is None else rows)
    if any(sparse.is_sparse(t) for t in tans):
        sparse_rule = sparse.RULES.get(op)
        if sparse_rule is not None:
            value, _ = _STRUCTURAL_RULES[op](vals, [None] * len(tans), params, shape, graph.dtype(n), width)
            return value, sparse.settle(sparse_rule(vals, tans, params, shape, value, width), shape, width)
        tans = _dense(vals, tans, width)
    if op in finiteness.CONTRACTIONS:
        return _STRUCTURAL_RULES[op](vals, tans, params, shape, graph.dtype(n), width, factors(graph, n))
    return _STRUCTURAL_RULES[op](vals, tans, params, shape, graph.dtype(n), width)


def factors(graph, n):
    """``exact(k, i)``: whether, in the product-rule term of contraction ``n`` where argument
    ``k``'s tangent stands, factor ``i``'s zeros are structural (a constant's, or an exact
    tangent's: :mod:`symjac.arrays.structural`); a function, asked only where an inf or NaN is."""
    args = graph.eqns[n][1]

    def exact(k, i):
        zeros = structural.of(graph)
        return args[k] in zeros.tangents if i == k else zeros.value(args[i])

    return lambda k, i: lambda: exact(k, i)


def _dense(vals, tans, width):
    return [
        sparse.dense(t, np.shape(v), width) if sparse.is_sparse(t) else t
        for v, t in zip(vals, tans, strict=True)
    ]


def _elementwise(op, vals, tans, shape, width, graph, n, rows):
    value_fn, partials = rule(op, tuple(np.asarray(v).dtype == np.bool_ for v in vals))
    arg_vals = vals
    # One shape for all: lambdify's Piecewise code stacks its conditions (logical_and.reduce).
    vals = np.broadcast_arrays(*vals) if len(vals) > 1 else vals
    value = np.broadcast_to(np.asarray(value_fn(*vals)), shape)
    args = graph.eqns[n][1]
    live = [(k, partial, t) for k, (partial, t) in enumerate(zip(partials, tans, strict=True))
            if partial is not None and t is not None]  # fmt: skip
    if any(sparse.is_sparse(t) for t in tans):
        terms = [
            (
                np.asarray(partial(*vals), dtype=F64),
                t,
                np.shape(arg_vals[k]),
                *exactness(graph, n, args[k], k, vals),
            )
            for k, partial, t in live
        ]
        return value, sparse.settle(sparse.scaled_sum(terms, shape, width), shape, width)
    tangent, empty = None, None
    for k, partial, t in live:
        p = np.asarray(partial(*vals), dtype=F64)
        p_exact, t_exact = exactness(graph, n, args[k], k, vals, rows)
        term = np.broadcast_to(scaled(p, t, p_exact, t_exact), shape + (width,))
        tangent = term if tangent is None else tangent + term
        # Rows a structural zero partial empties (maximum(z, 0) where z < 0) are structural zeros
        # of this tangent, where every term's are: an infinite partial after it may meet them
        # (none can where no value can be inf or NaN: then this is not asked).
        here = rows.get(args[k])
        zero = p == 0
        if zero.any() and finiteness.risky_values(graph):
            zero = zero & structural.where(p_exact, zero.shape)
            if zero.any():
                here = zero if here is None else here | zero
        here = None if here is None else np.broadcast_to(here, shape)
        empty = here if k == live[0][0] else None if empty is None or here is None else empty & here
    if empty is not None and empty.any():
        rows[n] = empty
    return value, tangent


def exactness(graph, n, a, k, vals, rows=None) -> tuple:
    """Where elementwise node ``n``'s partial in argument ``k`` (node ``a``) has structural zeros
    at the arguments' values ``vals`` (True, False, or where: not at a kink), and where ``a``'s
    tangent has (True, or its rows that ``rows`` holds): functions, asked only where a zero
    meets an inf or NaN."""

    def tangent():
        return True if a in structural.of(graph).tangents else (rows or {}).get(a, False)

    return (lambda: structural.of(graph).structural_at(n, k, vals)), tangent


def scaled(p: np.ndarray, t: np.ndarray, p_exact, t_exact) -> np.ndarray:
    """``p[..., None] * t``, where a structural zero times an inf or NaN is 0 in both orders, as
    on the element road, which never forms the product: a zero partial that ``p_exact`` calls
    structural kills an inf/NaN tangent (the branch not taken), and a zero tangent that ``t_exact``
    does an inf/NaN partial (sqrt at 0 leaves the other columns exact zeros). Either is a bool or
    a function giving one (``t_exact`` may give the rows where, instead), called only where such
    a product occurs; other products are IEEE's."""
    term = p[..., None] * t
    rows = term.shape[:-1]
    zero = np.broadcast_to(p == 0, rows)
    if zero.any() and not np.isfinite(term[zero]).all():
        kill = zero & structural.where(p_exact, rows)
        term = np.where(kill[..., None], 0.0, term)
        if not np.isfinite(term[zero & ~kill]).all():
            structural.undecided()
    bad = np.broadcast_to(~np.isfinite(p), rows)
    if bad.any() and (np.broadcast_to(t, term.shape)[bad] == 0).any():
        kill = bad & structural.where(t_exact, rows)
        term = np.where((t == 0) & kill[..., None], 0.0, term)
        if ((t == 0) & (bad & ~kill)[..., None]).any():
            structural.undecided()
    return term


def _expand_index(index, ndim):
    """``index`` with its Ellipsis spelled out, so that a trailing tangent axis stays untouched."""
    if not any(k is Ellipsis for k in index):
        return index
    used = sum(
        (k.ndim if k.dtype == np.bool_ else 1) if isinstance(k, np.ndarray) else (k is not None)
        for k in index
        if k is not Ellipsis
    )
    at = next(i for i, k in enumerate(index) if k is Ellipsis)
    return index[:at] + (slice(None),) * (ndim - used) + index[at + 1 :]


def _getitem(vals, tans, params, shape, dtype, width):
    (x,), (t,) = vals, tans
    index = _expand_index(decode_index(params[0]), x.ndim)
    value = np.asarray(x[index])
    return value, None if t is None else np.asarray(t[index + (slice(None),)])


def _setitem(vals, tans, params, shape, dtype, width):
    (x, y), (tx, ty) = vals, tans
    index = _expand_index(decode_index(params[0]), x.ndim)
    value = x.astype(F64 if dtype is not None and dtype.kind == "f" else x.dtype, copy=True)
    value[index] = y
    if tx is None and ty is None:
        return value, None
    tangent = np.zeros(shape + (width,)) if tx is None else tx.copy()
    tangent[index + (slice(None),)] = 0.0 if ty is None else ty
    return value, tangent


def _joined(kind):
    join = np.concatenate if kind == "concat" else np.stack

    def rule_(vals, tans, params, shape, dtype, width):
        value = join([np.asarray(v, dtype=F64) if v.dtype != np.bool_ else v for v in vals], axis=params[0])
        if all(t is None for t in tans):
            return value, None
        parts = [
            np.zeros(np.shape(v) + (width,)) if t is None else t for v, t in zip(vals, tans, strict=True)
        ]
        return value, join(parts, axis=params[0])

    return rule_


def _sum(vals, tans, params, shape, dtype, width):
    (x,), (t,), (axes, keepdims) = vals, tans, params
    value = np.sum(x, axis=axes, keepdims=keepdims, dtype=F64 if x.dtype == np.bool_ else None)
    return value, None if t is None else np.sum(t, axis=axes, keepdims=keepdims)


def _extremum(pick):
    def rule_(vals, tans, params, shape, dtype, width):
        (x,), (t,), (axes, keepdims) = vals, tans, params
        m = pick(x, axis=axes, keepdims=True)
        value = m if keepdims else np.reshape(m, shape)
        if t is None:
            return value, None
        tied = x == m  # the derivative splits evenly between ties, as torch's amax/amin
        weight = tied / np.sum(tied, axis=axes, keepdims=True)
        return value, np.sum(weight[..., None] * t, axis=axes, keepdims=keepdims)

    return rule_


def _logsumexp(vals, tans, params, shape, dtype, width):
    (x,), (t,), (axes, keepdims) = vals, tans, params
    top = np.max(x, axis=axes, keepdims=True)
    shift = np.where(np.isfinite(top), top, 0.0)  # all -inf: log(0) = -inf, as torch
    weights = np.exp(x - shift)
    total = np.sum(weights, axis=axes, keepdims=True)
    value = np.log(total) + shift
    out = value if keepdims else np.reshape(value, shape)
    if t is None:
        return out, None
    softmax = weights / total  # the exact derivative, exp(x - logsumexp(x))
    return out, np.sum(softmax[..., None] * t, axis=axes, keepdims=keepdims)


def _running_products(x, t, axis):
    """Running products along ``axis`` and their tangents, by the product rule step by step
    (no division, so zeros are exact): ``T[k] = T[k-1] * x[k] + P[k-1] * t[k]``."""
    x = np.moveaxis(x, axis, 0)
    t = np.moveaxis(t, axis, 0)
    P, T = np.empty(x.shape), np.empty(t.shape)
    P[0], T[0] = x[0], t[0]
    for k in range(1, x.shape[0]):
        P[k] = P[k - 1] * x[k]
        T[k] = T[k - 1] * x[k][..., None] + P[k - 1][..., None] * t[k]
    return np.moveaxis(P, 0, axis), np.moveaxis(T, 0, axis)


def _prod(vals, tans, params, shape, dtype, width):
    (x,), (t,), (axes, keepdims) = vals, tans, params
    value = np.prod(x, axis=axes, keepdims=keepdims)
    if t is None:
        return value, None
    k = len(axes)
    rest = tuple(d for d in range(x.ndim) if d not in axes)
    xs = np.transpose(x, rest + tuple(axes)).reshape([x.shape[d] for d in rest] + [-1])
    ts = np.transpose(t, rest + tuple(axes) + (x.ndim,)).reshape(xs.shape + (width,))
    if xs.shape[-1] == 0:
        return value, np.zeros(shape + (width,))
    _, T = _running_products(xs, ts, xs.ndim - 1)
    return value, T[..., -1, :].reshape(shape + (width,)) if k else T.reshape(shape + (width,))


def _cumprod(vals, tans, params, shape, dtype, width):
    (x,), (t,) = vals, tans
    if t is None or x.shape[params[0]] == 0:
        return np.cumprod(x, axis=params[0]), None if t is None else np.zeros(shape + (width,))
    return _running_products(x, t, params[0])


def _matmul(vals, tans, params, shape, dtype, width, exact):
    (a, b), (ta, tb) = vals, tans
    value = np.matmul(a, b)
    if ta is None and tb is None:
        return value, None
    if not finiteness.finite(a, b, *(t for t in (ta, tb) if t is not None)):
        spelled, out, _ = matmul_letters(np.shape(a), np.shape(b))
        return value, _einsum_tangent(spelled, out, vals, tans, exact)
    # Tangent axis first, so that matmul broadcasts over it as a batch dimension.
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    batch = max(a2.ndim, b2.ndim) - 2

    def leading(t, matrix_shape):  # (width, 1, ..., 1, *matrix_shape): broadcasts over batches
        t = np.moveaxis(t, -1, 0).reshape((width,) + matrix_shape)
        return t.reshape((width,) + (1,) * (batch - (len(matrix_shape) - 2)) + matrix_shape)

    total = 0
    if ta is not None:
        total = total + np.matmul(leading(ta, a2.shape), b2)
    if tb is not None:
        total = total + np.matmul(a2, leading(tb, b2.shape))
    if a.ndim == 1:
        total = total[..., 0, :]
    if b.ndim == 1:
        total = total[..., 0]
    return value, np.moveaxis(np.broadcast_to(total, (width,) + shape), 0, -1)


def _einsum(vals, tans, params, shape, dtype, width, exact):
    spec = params[0]
    value = np.asarray(np.einsum(spec, *vals))
    ins, out = spec.split("->")
    ins = ins.split(",")
    return value, _einsum_tangent(ins, out, vals, tans, exact)


def _einsum_tangent(ins, out, vals, tans, exact):
    """The product rule's terms of ``einsum(ins -> out)``, a structural zero factor killing an inf
    or NaN (``finiteness.einsum``; ``exact`` as :func:`factors` gives it)."""
    free = free_letters("".join(ins) + out)[0]
    tangent = None
    for k, t in enumerate(tans):
        if t is None:
            continue
        terms = [s + free if i == k else s for i, s in enumerate(ins)]
        operands = [t if i == k else v for i, v in enumerate(vals)]
        part = finiteness.einsum(terms, out + free, operands, [exact(k, i) for i in range(len(vals))])
        tangent = part if tangent is None else tangent + part
    return tangent


def _cast(vals, tans, params, shape, dtype, width):
    (x,), (t,) = vals, tans
    if dtype is not None and dtype.kind == "f":
        return x.astype(F64), t
    return x.astype(dtype), None


def _const(vals, tans, params, shape, dtype, width):
    dt, shape_, data = params
    return _real(np.frombuffer(data, dtype=np.dtype(dt)).reshape(shape_)), None


def _scalar(vals, tans, params, shape, dtype, width):
    return np.float64("nan" if params[0] == "nan" else params[0]), None


def _unsupported(name):
    def rule_(*_):
        raise Unsupported(name)

    return rule_


_STRUCTURAL_RULES = {
    "const": _const,
    "scalar": _scalar,
    "reshape": lambda v, t, p, s, d, w: (v[0].reshape(s), None if t[0] is None else t[0].reshape(s + (w,))),
    "transpose": lambda v, t, p, s, d, w: (
        v[0].transpose(p[0]),
        None if t[0] is None else t[0].transpose(tuple(p[0]) + (len(p[0]),)),
    ),
    "broadcast_to": lambda v, t, p, s, d, w: (
        np.broadcast_to(v[0], s),
        None if t[0] is None else np.broadcast_to(t[0], s + (w,)),
    ),
    "getitem": _getitem,
    "setitem": _setitem,
    "concat": _joined("concat"),
    "stack": _joined("stack"),
    "sum": _sum,
    "max": _extremum(np.max),
    "min": _extremum(np.min),
    "cumsum": lambda v, t, p, s, d, w: (
        np.cumsum(v[0], axis=p[0]),
        None if t[0] is None else np.cumsum(t[0], axis=p[0]),
    ),
    "prod": _prod,
    "logsumexp": _logsumexp,
    "cumprod": _cumprod,
    "matmul": _matmul,
    "einsum": _einsum,
    "cast": _cast,
}
