"""Second derivatives at the array level: forward mode of second order.

Every node carries its value, tangents along two sets of directions ``A`` (``a`` of them) and
``B`` (``b``), and the second derivative ``H`` along both, of shape ``node.shape + (a, b)``.
A Hessian takes ``A = B =`` the identity; ``hvp`` takes ``B = v`` and ``vhp`` ``A = v``.

- Linear ops, and max/min (linear once their ties are known), apply their first-order rule to
  ``H`` as to a tangent of width ``a * b``.
- An elementwise ``f`` adds its curvature: ``H = sum_i f_i H_i + sum_ij f_ij A_i (x) B_j``, with
  the second partials ``f_ij`` derived by SymPy from the scalar formula
  (:func:`symjac.arrays.elementwise.second_rule`).
- Contractions (matmul, einsum) are bilinear: ``H`` adds one contraction per ordered pair of
  operands, ``A`` on one and ``B`` on the other.
- ``logsumexp`` adds ``sum_k s_k A_k B_k - (sum_k s_k A_k)(sum_k s_k B_k)`` for ``s = softmax``.

Products and running products have no second-order rule here: their graphs keep the element road.
"""

from __future__ import annotations

import math

import numpy as np

from ..trace.ops import ELEMENTWISE
from . import finiteness, forward
from .elementwise import Unsupported, second_rule

F64 = forward.F64
# What the second-order road evaluates beyond the first order's linear rules.
_CURVED = frozenset({"matmul", "einsum", "logsumexp"})
_FIRST_ORDER_ONLY = frozenset({"prod", "cumprod"})


def unsupported_ops(graph) -> set[str]:
    """The ops of ``graph`` without a second-order array rule (empty when it can take it)."""
    bad = forward.unsupported_ops(graph)
    for op, args, _ in graph.eqns:
        if op in _FIRST_ORDER_ONLY:
            bad.add(op)
        elif op in ELEMENTWISE and op not in bad:
            try:
                second_rule(op, tuple(forward._is_mask(graph, a) for a in args))
            except Unsupported:
                bad.add(op)
    return bad


def tangent_elements(graph, a: int, b: int) -> int:
    """Elements of all tangents and second derivatives (the road's working set)."""
    return (a * b + a + b) * sum(math.prod(graph.shape(n)) for n in range(len(graph.eqns)))


def evaluate(graph, arrays, seeds_a, seeds_b, a: int, b: int):
    """Values, ``A``-tangents and second derivatives of the graph's outputs.

    Args:
        graph: a recorded :class:`~symjac.trace.graph.Graph`.
        arrays: a value for every graph input, in input order.
        seeds_a: ``{input index: tangent}`` of shape ``input.shape + (a,)``.
        seeds_b: the same for ``B``, or ``seeds_a`` itself for a Hessian (then ``B``'s tangents
            are ``A``'s, computed once).
        a, b: the numbers of directions.

    Returns:
        ``(values, tangents_a, seconds)``, a second derivative of shape ``out.shape + (a, b)``
        or None where it is zero.
    """
    same = seeds_b is seeds_a
    eqns = graph.eqns
    last_use = forward.last_uses(eqns)
    keep = set(graph.outputs)
    vals, ta, tb, hs = ([None] * len(eqns) for _ in range(4))
    with np.errstate(all="ignore"):
        for n, (op, args, params) in enumerate(eqns):
            shape = graph.shape(n)
            if op == "input":
                j = params[0]
                vals[n] = forward._real(np.asarray(arrays[j]).reshape(shape))
                ta[n], tb[n] = seeds_a.get(j), seeds_b.get(j)
            else:
                v = [vals[k] if type(k) is int else np.float64(k[1]) for k in args]
                ia = [ta[k] if type(k) is int else None for k in args]
                ib = ia if same else [tb[k] if type(k) is int else None for k in args]
                ih = [hs[k] if type(k) is int else None for k in args]
                vals[n], ta[n], tb[n], hs[n] = _apply(op, v, ia, ib, ih, params, graph, n, a, b, same)
            for k in args:
                if type(k) is int and last_use.get(k) == n and k not in keep:
                    vals[k] = ta[k] = tb[k] = hs[k] = None
    outs = graph.outputs
    return [vals[o] for o in outs], [ta[o] for o in outs], [hs[o] for o in outs]


def _apply(op, vals, ta, tb, hs, params, graph, n, a, b, same):
    shape = graph.shape(n)
    value, out_a = forward._apply(op, vals, ta, params, graph, n, a)
    out_b = out_a if same else forward._apply(op, vals, tb, params, graph, n, b)[1]
    flat = [None if h is None else h.reshape(h.shape[:-2] + (a * b,)) for h in hs]
    h = None
    if any(x is not None for x in flat):  # the first-order rule, applied to H
        h = forward._apply(op, vals, flat, params, graph, n, a * b)[1]
        h = None if h is None else h.reshape(shape + (a, b))
    if op in ELEMENTWISE:
        curve = _elementwise_curvature(op, vals, ta, tb, shape, a, b)
    elif op in _CURVED:
        curve = _CURVATURE[op](vals, ta, tb, params, shape, value, a, b)
    else:
        curve = None
    if curve is not None:
        h = curve if h is None else h + curve
    return value, out_a, out_b, h


def _outer(x, y, shape, a, b):
    """``x (x) y`` per element: ``x[..., :, None] * y[..., None, :]`` broadcast to ``shape``."""
    return np.broadcast_to(x[..., :, None] * y[..., None, :], shape + (a, b))


def _elementwise_curvature(op, vals, ta, tb, shape, a, b):
    second = second_rule(op, tuple(np.asarray(v).dtype == np.bool_ for v in vals))
    vals = np.broadcast_arrays(*vals) if len(vals) > 1 else vals
    total = None
    for i, row in enumerate(second):
        for j, q in enumerate(row):
            if q is None or ta[i] is None or tb[j] is None:
                continue
            p = np.broadcast_to(np.asarray(q(*vals), dtype=F64), shape)
            pair = _outer(
                np.broadcast_to(ta[i], shape + (a,)), np.broadcast_to(tb[j], shape + (b,)), shape, a, b
            )
            term = forward.scaled(p, pair.reshape(shape + (a * b,))).reshape(shape + (a, b))
            total = term if total is None else total + term
    return total


def _matmul_spec(a_ndim: int, b_ndim: int) -> str:
    left = "...ij" if a_ndim > 1 else "j"
    right = "...jk" if b_ndim > 1 else "j"
    out = ("...i" if a_ndim > 1 else "...") + ("k" if b_ndim > 1 else "")
    if a_ndim == 1 and b_ndim > 1:
        out = "...k"
    if a_ndim == 1 and b_ndim == 1:
        out = ""
    return f"{left},{right}->{out}"


def _contraction(spec, vals, ta, tb, a, b):
    """Sum over ordered pairs ``i != j`` of the contraction with ``A`` on operand ``i`` and ``B``
    on operand ``j`` (the bilinear cross terms)."""
    ins, out = spec.split("->")
    ins = ins.split(",")
    unused = finiteness.free_letters(spec)
    alpha, beta = unused[0], unused[1]
    total = None
    for i, x in enumerate(ta):
        for j, y in enumerate(tb):
            if i == j or x is None or y is None:
                continue
            terms = [s + alpha if k == i else s + beta if k == j else s for k, s in enumerate(ins)]
            operands = [x if k == i else y if k == j else v for k, v in enumerate(vals)]
            part = finiteness.einsum(terms, out + alpha + beta, operands)
            total = part if total is None else total + part
    return total


def _matmul_curvature(vals, ta, tb, params, shape, value, a, b):
    x, y = vals
    return _contraction(_matmul_spec(np.ndim(x), np.ndim(y)), vals, ta, tb, a, b)


def _einsum_curvature(vals, ta, tb, params, shape, value, a, b):
    return _contraction(params[0], vals, ta, tb, a, b)


def _logsumexp_curvature(vals, ta, tb, params, shape, value, a, b):
    (x,), (tx,), (ty,), (axes, _) = vals, ta, tb, params
    if tx is None or ty is None:
        return None
    axes = tuple(range(x.ndim)) if axes is None else tuple(axes)
    top = np.max(x, axis=axes, keepdims=True)
    w = np.exp(x - np.where(np.isfinite(top), top, 0.0))
    s = w / np.sum(w, axis=axes, keepdims=True)  # softmax: the first derivative
    mean_a = np.sum(s[..., None] * tx, axis=axes)
    mean_b = np.sum(s[..., None] * ty, axis=axes)
    spread = np.sum(s[..., None, None] * tx[..., :, None] * ty[..., None, :], axis=axes)
    return (spread - mean_a[..., :, None] * mean_b[..., None, :]).reshape(shape + (a, b))


_CURVATURE = {"matmul": _matmul_curvature, "einsum": _einsum_curvature, "logsumexp": _logsumexp_curvature}
