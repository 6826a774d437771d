"""Structural ops as loop nests: reshape, indexing, index assignment, concatenation and stack.

Most cost no code (a view of the argument, :mod:`symjac.arrays.emitter`); a reshape of a strided
view and a gather or scatter with index arrays copy through a table of positions
(:mod:`symjac.arrays.data`).
"""

from __future__ import annotations

import math

import numpy as np

from ..trace.ops import decode_index
from .data import assigned_positions, gather_positions, index_table, load_index
from .emitter import Node, View, _broadcast, _c_strides, _dense, _index

# --- structure ----------------------------------------------------------------------------------


def _reshaped(em, node: Node, shape) -> Node:
    """``node`` as ``shape`` (same size): free for a contiguous view, else a copy first."""
    shape = tuple(shape)
    if node.value.shape == shape:
        return node
    if not node.value.contiguous or (node.tangent is not None and not node.tangent.contiguous):
        node = _materialise(em, node)
    t = (
        None
        if node.tangent is None
        else View(node.tangent.base, node.tangent.offset, shape, _c_strides(shape))
    )
    return Node(View(node.value.base, node.value.offset, shape, _c_strides(shape)), t, node.mask)


def _materialise(em, node: Node) -> Node:
    shape = node.value.shape
    out = _dense(em.buffer(math.prod(shape)), shape)
    tout = None if node.tangent is None else _dense(em.buffer(math.prod(shape) * em.width), shape)

    def body(idx, c):
        em.store(em.load(node.value, idx), out, idx)
        if tout is not None:
            em.chunks(lambda c0, vt: em.store_row(em.load_row(node.tangent, idx, c0, vt), tout, idx, c0))
        return []

    em.nest(shape, body)
    return Node(out, tout, node.mask)


def _same_map(fn):
    def rule_(em, op, args, params, shape, mask, module, n):
        (x,) = args
        return Node(
            fn(x.value, params, shape), None if x.tangent is None else fn(x.tangent, params, shape), x.mask
        )

    return rule_


def _join(kind):
    def rule_(em, op, args, params, shape, mask, module, n):
        axis = params[0] % len(shape)
        out = _dense(em.buffer(math.prod(shape)), shape)
        any_t = any(a.tangent is not None for a in args)
        tout = _dense(em.buffer(math.prod(shape) * em.width), shape) if any_t else None
        start = 0
        for a in args:
            part_shape = (
                a.value.shape if kind == "concat" else a.value.shape[:axis] + (1,) + a.value.shape[axis:]
            )
            part = _index(out, (slice(None),) * axis + (slice(start, start + part_shape[axis]),))
            tpart = (
                None
                if tout is None
                else _index(tout, (slice(None),) * axis + (slice(start, start + part_shape[axis]),))
            )
            src = a.value if kind == "concat" else _index(a.value, (slice(None),) * axis + (None,))
            tsrc = a.tangent
            if tsrc is not None and kind == "stack":
                tsrc = _index(tsrc, (slice(None),) * axis + (None,))
            src, part = _broadcast(src, part_shape), View(part.base, part.offset, part_shape, part.strides)
            tp = None if tpart is None else View(tpart.base, tpart.offset, part_shape, tpart.strides)

            def body(idx, c, src=src, part=part, tsrc=tsrc, tp=tp):
                em.store(em.load(src, idx), part, idx)
                if tp is not None:
                    if tsrc is None:
                        em.chunks(lambda c0, vt: em.store_row(em.zeros(vt), tp, idx, c0))
                    else:
                        em.chunks(lambda c0, vt: em.store_row(em.load_row(tsrc, idx, c0, vt), tp, idx, c0))
                return []

            em.nest(part_shape, body)
            start += part_shape[axis]
        return Node(out, tout, mask)

    return rule_


def _reshape(em, op, args, params, shape, mask, module, n):
    return _reshaped(em, args[0], shape)


def _getitem(em, op, args, params, shape, mask, module, n):
    index = decode_index(params[0])
    (x,) = args
    if not any(isinstance(k, np.ndarray) for k in index):
        return _same_map(lambda v, p, s: _index(v, index))(em, op, args, params, shape, mask, module, n)
    # Index arrays: out element e is x's element positions[e], read through a table.
    positions = gather_positions(x.value.shape, index)
    size = math.prod(x.value.shape)
    x = _reshaped(em, x, (size,))
    out = _dense(em.buffer(len(positions)), (len(positions),))
    tout = None if x.tangent is None else _dense(em.buffer(len(positions) * em.width), out.shape)
    table = index_table(module, positions)

    def body(e, c):
        j = load_index(em.b, table, e)
        em.store(em.load(x.value, [j]), out, [e])
        if tout is not None:
            em.chunks(lambda c0, vt: em.store_row(em.load_row(x.tangent, [j], c0, vt), tout, [e], c0))
        return []

    em.loop(len(positions), body)
    return _reshaped(em, Node(out, tout, x.mask), shape)


def _setitem(em, op, args, params, shape, mask, module, n):
    """``x`` with ``x[index] = y``: a copy of x, then y's elements scattered through a table."""
    x, y = args
    size = math.prod(shape)
    places, sources = assigned_positions(shape, y.value.shape, decode_index(params[0]))
    x, y = _reshaped(em, x, (size,)), _reshaped(em, y, (math.prod(y.value.shape),))
    out = _dense(em.buffer(size), (size,))
    live = x.tangent is not None or y.tangent is not None
    tout = _dense(em.buffer(size * em.width), (size,)) if live else None

    def put(src, at_src, at_out):
        em.store(em.load(src.value, [at_src]), out, [at_out])
        if tout is not None and src.tangent is None:
            em.chunks(lambda c0, vt: em.store_row(em.zeros(vt), tout, [at_out], c0))
        elif tout is not None:
            row = lambda c0, vt: em.load_row(src.tangent, [at_src], c0, vt)  # noqa: E731
            em.chunks(lambda c0, vt: em.store_row(row(c0, vt), tout, [at_out], c0))
        return []

    em.loop(size, lambda e, c: put(x, e, e))
    to, fro = index_table(module, places), index_table(module, sources)
    em.loop(len(places), lambda e, c: put(y, load_index(em.b, fro, e), load_index(em.b, to, e)))
    return _reshaped(em, Node(out, tout, mask), shape)
