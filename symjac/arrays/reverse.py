"""Reverse-mode loop kernels: a recorded graph's Jacobian by adjoints, for fewer outputs than inputs.

The forward loop kernel (:mod:`symjac.arrays.loops`) carries a tangent row of ``n_in`` doubles per
element. This one first computes the values, storing each elementwise op's partial derivatives
and each reduction's weights beside them (the forward kernel's own loops and formulas), then walks
the graph backwards with an adjoint row of ``m`` doubles per element, ``m`` the outputs' total
size: ``adjoint[e, c]`` is the derivative of output element ``c`` with respect to element ``e``.
Each op adds the transpose of its forward rule to its arguments' adjoints:

- elementwise: ``argument += partial * adjoint`` (summed over broadcast axes), under the forward
  kernel's zero rule: a zero partial kills an inf/NaN adjoint, a zero adjoint an inf/NaN partial;
- matmul, einsum and sums: each operand that depends on the inputs gets the contraction of the
  other operands' values with the adjoint, register-blocked like the forward contractions
  (:mod:`symjac.arrays.adjoints`);
- logsumexp, max and min: the weights (softmax, tie shares) times the adjoint;
- reshape, transpose, broadcasting, basic slicing and casts: no code; the node's adjoint *is* that
  view of its argument's (stride 0 where broadcast, so accumulating into it sums);
- index arrays and index assignment: scatters through the forward kernel's position tables;
  concatenation and stack: copies.

An MLP 8-256-256-4 costs 4 x 256 x 256 multiply-adds in its middle layer this way, against
256 x 256 x 8 forward; a gradient (one output) costs a small multiple of the value. Results,
layout and batch loop are the forward kernel's, so either serves :class:`symjac.compiled.CompiledFunction`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import llvmlite.ir as ir
import numpy as np
import sympy

from ..elements.derive import _input_specs
from ..trace.ops import ELEMENTWISE, decode_index
from . import adjoints, data, finiteness, loops
from .adjoints import transposed
from .emitter import (
    DOUBLE,
    I64,
    View,
    _broadcast,
    _c_strides,
    _dense,
    _index,
    _transpose,
)
from .letters import einsum_letters, matmul_letters, reduce_letters
from .loops import _is_mask, _scalar_rule


@dataclass
class _Sweep:
    """What the backward rules read: the forward sweep's nodes, each live node's adjoint view, the
    nodes whose adjoint is a view of their argument's, and the stored partials."""

    nodes: list
    adjoint: dict
    aliased: set = field(default_factory=set)
    partials: dict = field(default_factory=dict)
    # node -> 1.0 where its one reader's structural zero partial emptied a row of its adjoint
    zero_rows: dict = field(default_factory=dict)


REDUCTIONS = ("logsumexp", "max", "min")


def live_nodes(graph, wrt) -> tuple[set, set]:
    """``(nodes that depend on a differentiated input through real values, ancestors of the
    outputs)``: a node needs an adjoint when it is in both."""
    depends = set()
    for n, (op, args, params) in enumerate(graph.eqns):
        dt = graph.dtype(n)
        if dt is not None and dt.kind == "b":
            continue  # masks carry no derivative
        if op == "input":
            if params[0] in wrt:
                depends.add(n)
        elif any(type(a) is int and a in depends for a in args):
            depends.add(n)
    return depends, ancestors(graph, graph.outputs)


def ancestors(graph, roots) -> set:
    """``roots`` and every node they are computed from."""
    found, stack = set(), list(roots)
    while stack:
        n = stack.pop()
        if n not in found:
            found.add(n)
            stack.extend(a for a in graph.eqns[n][1] if type(a) is int)
    return found


def width(graph) -> int:
    """The adjoint row's length: every output element's column."""
    return sum(math.prod(graph.shape(o)) for o in graph.outputs)


def work(graph, wrt, mode: str = "jacobian") -> int:
    """About how many scalar operations one point costs (``loops.work`` with the adjoint row)."""
    return loops.work(graph, wrt, mode, width=1 if mode == "vjp" else width(graph))


def build_module(module, graph, wrt, value, name="symjac_kernel", mode="jacobian"):
    """Add ``void name(in, out64, out32)``: the values of ``loops.value_nodes(graph, value)``
    and the outputs' Jacobian blocks with respect to inputs ``wrt``, by adjoints (with ``mode="vjp"``: the
    vector-Jacobian products with vectors ``v``, one per output, read after the inputs: one
    adjoint column); returns ``(result shapes, doubles written)`` in ``loops.build_module``'s
    order."""
    m = 1 if mode == "vjp" else max(width(graph), 1)
    em, (inp, out64, _) = loops.kernel_function(module, name, m)
    em.guards = finiteness.reverse_guards(graph)
    depends, needed = live_nodes(graph, wrt)
    live = depends & needed
    partials = _partial_buffers(em, graph, live)
    stored = loops.value_nodes(graph, value)
    keep = needed | ancestors(graph, stored)
    nodes = loops.emit_nodes(em, graph, inp, lambda j, shape: None, keep=keep, partials=partials)
    results, offset = loops.store_values(em, [nodes[o] for o in stored], out64)
    sweep = _Sweep(nodes, {}, partials=partials)
    _adjoint_views(em, graph, live, sweep)
    specs = _input_specs(graph)
    if mode == "vjp":
        _seed_vectors(em, graph, sweep.adjoint, inp, sum(math.prod(shape) for shape, _ in specs))
    else:
        _seed(em, graph, sweep.adjoint)
    for n in sorted(live, reverse=True):
        _RULES.get(graph.eqns[n][0], _elementwise)(em, graph, n, sweep)
    input_node = {params[0]: k for k, (op, _, params) in enumerate(graph.eqns) if op == "input"}
    if mode == "vjp":  # v^T J for each input: its adjoint column
        for j in wrt:
            size = math.prod(specs[j][0])
            _store_block(em, sweep.adjoint.get(input_node.get(j)), out64, offset, 0, 1, size)
            offset += size
            results.append(tuple(specs[j][0]))
        em.finish()
        return results, offset
    column = 0
    for o in graph.outputs:
        rows = math.prod(graph.shape(o))
        for j in wrt:
            size = math.prod(specs[j][0])
            _store_block(em, sweep.adjoint.get(input_node.get(j)), out64, offset, column, rows, size)
            offset += rows * size
            results.append(tuple(graph.shape(o)) + tuple(specs[j][0]))
        column += rows
    em.finish()
    return results, offset


def compile_object(graph, wrt, value, mode: str = "jacobian"):
    """``(object code, IR, optimised IR, layout)`` of the reverse-mode kernel and its batch loop
    (a Jacobian, or with ``mode="vjp"`` vector-Jacobian products)."""
    module = _runtime()._module("symjac_kernel")
    shapes, n64 = build_module(module, graph, wrt, value, mode=mode)
    # Not unrolled: the MLPs' reverse kernels ran as fast either way and built 40 ms sooner.
    products = loops.product_shapes(graph, wrt, mode)
    return loops.native(module, graph, shapes, n64, unroll=False, products=products)


def _runtime():
    from ..backend import runtime

    return runtime


# --- the forward sweep's extra stores, and where adjoints live ----------------------------------


def _partial_buffers(em, graph, live) -> dict:
    """node -> {argument position: a view receiving that partial (or a reduction's weights)},
    for the arguments whose adjoint needs it; constant partials are not stored."""
    buffers = {}
    for n in sorted(live):
        op, args, _ = graph.eqns[n]
        shape = tuple(graph.shape(n))
        if op in ELEMENTWISE:
            _, _, parts = _scalar_rule(op, tuple(_is_mask(graph, a) for a in args))
            views = {
                k: _dense(em.buffer(math.prod(shape)), shape)
                for k, a in enumerate(args)
                if type(a) is int and a in live and parts[k] is not None and not parts[k].is_Number
            }
            if views:
                buffers[n] = views
        elif op in REDUCTIONS and args[0] in live:
            x_shape = tuple(graph.shape(args[0]))
            buffers[n] = {0: _dense(em.buffer(math.prod(x_shape)), x_shape)}
    return buffers


def _adjoint_views(em, graph, live, sweep: _Sweep) -> None:
    """Each live node's adjoint view: a view of its argument's adjoint for view ops (``aliased``),
    a fresh zeroed buffer for the others."""
    adjoint, roots = sweep.adjoint, []
    for n in sorted(live):
        op, args, params = graph.eqns[n]
        shape = tuple(graph.shape(n))
        view = None
        src = adjoint.get(args[0]) if args and type(args[0]) is int else None
        if src is not None:
            if op == "transpose":
                view = _transpose(src, params[0])
            elif op == "broadcast_to":
                view = _broadcast(src, shape)
            elif op == "cast":
                view = src
            elif op == "getitem" and not _has_arrays(params):
                view = _index(src, decode_index(params[0]))
            elif op == "reshape" and src.contiguous:
                view = View(src.base, src.offset, shape, _c_strides(shape))
        if view is None:
            view = _dense(em.buffer(math.prod(shape) * em.width), shape)
            roots.append((view.base, math.prod(shape) * em.width))
        else:
            sweep.aliased.add(n)
        adjoint[n] = view
    for base, size in roots:
        em.zero(base, size)


def _has_arrays(params) -> bool:
    return any(isinstance(k, np.ndarray) for k in decode_index(params[0]))


def _seed(em, graph, adjoint):
    """Output element ``e`` of the output starting at column ``c``: 1 at column ``c + e``."""
    b = em.b
    column = 0
    for o in graph.outputs:
        shape = tuple(graph.shape(o))
        if o in adjoint:
            view, strides, start = adjoint[o], _c_strides(shape), column

            def one(idx, c, view=view, strides=strides, start=start):
                lane = ir.Constant(I64, start)
                for i, s in zip(idx, strides, strict=True):
                    if s:
                        lane = b.add(lane, b.mul(i, ir.Constant(I64, s)))
                at = em.address(view, idx, em.width, lane)
                b.store(b.fadd(b.load(at, typ=DOUBLE), ir.Constant(DOUBLE, 1.0)), at)
                return []

            em.nest(shape, one)
        column += math.prod(shape)


def _seed_vectors(em, graph, adjoint, inp, at: int):
    """Output ``k``'s adjoint column is ``v[k]``, read from the input buffer from ``at`` on."""
    b = em.b
    for o in graph.outputs:
        shape = tuple(graph.shape(o))
        if o in adjoint:
            v, view = View(inp, at, shape, _c_strides(shape)), adjoint[o]

            def add(idx, c, v=v, view=view):
                ptr = em.address(view, idx, em.width)
                b.store(b.fadd(b.load(ptr, typ=DOUBLE), em.load(v, idx)), ptr)
                return []

            em.nest(shape, add)
        at += math.prod(shape)


def _store_block(em, adj, out64, offset, column, rows, size):
    """Block element ``(e, i)`` (output element ``e``, input element ``i``) is the input's adjoint
    ``adj[i][column + e]``; zeros where no output depends on the input."""
    if adj is None:
        em.zero(out64, rows * size, offset)
        return
    b = em.b
    flat = View(adj.base, adj.offset, (size,), (1,))

    def row(e, c):
        base = b.gep(
            out64, [b.add(b.mul(e, ir.Constant(I64, size)), ir.Constant(I64, offset))], source_etype=DOUBLE
        )
        lane = b.add(e, ir.Constant(I64, column))

        def put(i, c):
            x = b.load(em.address(flat, [i], em.width, lane), typ=DOUBLE)
            b.store(x, b.gep(base, [i], source_etype=DOUBLE))
            return []

        em.loop(size, put)
        return []

    em.loop(rows, row)


# --- rules: each adds its node's adjoint, transposed, to its arguments' -------------------------


def _accumulate(em, target: View, source: View, shape, scale=None):
    """``target[i] += source[i]`` (times ``scale[i]``, a view of doubles, when given) over
    ``shape``, row by row."""
    b = em.b

    def body(idx, c):
        s = None if scale is None else em.load(scale, idx)

        def chunk(c0, vtype):
            acc = em.load_row(target, idx, c0, vtype)
            row = em.load_row(source, idx, c0, vtype)
            acc = b.fadd(acc, row) if s is None else em.fma(em.splat(s, vtype), row, acc)
            em.store_row(acc, target, idx, c0)

        em.chunks(chunk)
        return []

    em.nest(shape, body)


def _elementwise(em, graph, n, sweep):
    op, args, _ = graph.eqns[n]
    adjoint, partials = sweep.adjoint, sweep.partials.get(n)
    shape = tuple(graph.shape(n))
    masks = tuple(_is_mask(graph, a) for a in args)
    syms, _, parts = _scalar_rule(op, masks)
    terms = []
    for k, a in enumerate(args):
        if type(a) is not int or a not in adjoint or parts[k] is None:
            continue
        if parts[k].is_Number:
            if parts[k] != 0:
                terms.append((float(parts[k]), _broadcast(adjoint[a], shape), k))
        else:
            terms.append((partials[k], _broadcast(adjoint[a], shape), k))
    if not terms:
        return
    b, ybar = em.b, adjoint[n]
    zero, inf = ir.Constant(DOUBLE, 0.0), ir.Constant(DOUBLE, math.inf)
    fabs = em._declare("llvm.fabs.f64", DOUBLE, [DOUBLE])
    # Where no value, partial or adjoint can be inf or NaN (finite inputs), every zero kills
    # nothing there is to kill, and a zero partial's product can be skipped as a structural one's.
    risky = bool(em.guards or finiteness.risky_values(graph))
    zeros = em.structure if risky and any(not isinstance(p, float) for p, _, _ in terms) else None
    kills_y = zeros is None or n in zeros.adjoints  # the adjoint's zeros are structural
    own_rows = None if kills_y else sweep.zero_rows.get(n)
    emptied = {}  # argument -> its adjoint's rows this rule's structural zeros leave empty
    for partial, _, k in terms:
        a = args[k]
        if (
            zeros is not None
            and not isinstance(partial, float)
            and zeros.partial(n)[k]
            and _rows_matter(graph, zeros, n, a)
        ):
            emptied[k] = sweep.zero_rows[a] = _dense(em.buffer(math.prod(shape)), shape)

    def body(idx, c):
        row = None if own_rows is None else b.fcmp_ordered("!=", em.load(own_rows, idx), zero)
        for partial, target, k in terms:
            if isinstance(partial, float):
                _rows(em, ir.Constant(DOUBLE, partial), target, ybar, idx, exact=None)
                continue
            p = em.load(partial, idx)
            infinite = b.fcmp_unordered(">=", b.call(fabs, [p]), inf)

            def rows(p=p, target=target, infinite=infinite):
                with b.if_else(infinite) as (exact, plain):
                    with exact:
                        _rows(em, p, target, ybar, idx, exact=True, kill=kills_y or row)
                    with plain:
                        _rows(em, p, target, ybar, idx, exact=None)

            # Mostly the partial is finite and nonzero: a plain multiply-add. A structural zero
            # partial adds nothing (another zero times an inf adjoint is NaN, and so is one at
            # the partial's kink, relu'(0)); an inf/NaN partial takes the exact rule on a branch
            # of its own.
            if zeros is None or zeros.partial(n)[k]:
                skip = b.fcmp_ordered("==", p, zero)
                if zeros is not None and zeros.kink(n, k) is not sympy.false:
                    skip = b.and_(skip, b.not_(_at_kink(em, graph, n, k, syms, masks, sweep, idx)))
                if k in emptied:
                    em.store(b.uitofp(skip, DOUBLE), emptied[k], idx)
                with b.if_then(b.not_(skip)):
                    rows()
            else:
                rows()
        return []

    em.nest(shape, body)


def _rows_matter(graph, zeros, n, a) -> bool:
    """Whether to record which of elementwise argument ``a``'s adjoint rows node ``n`` (its one
    reader, of its shape) empties by a structural zero partial: ``a``'s own rule may then meet
    an inf partial there (sqrt|x| under ``where(x > 0, ...)`` at x = 0)."""
    if type(a) is not int or zeros.readers.get(a) != [n] or a in graph.outputs:
        return False
    if graph.eqns[a][0] not in ELEMENTWISE or tuple(graph.shape(a)) != tuple(graph.shape(n)):
        return False
    return finiteness.infinite_partial(graph, a, None)


def _at_kink(em, graph, n, k, syms, masks, sweep, idx):
    """An i1: elementwise node ``n``'s partial in argument ``k`` is at its kink at ``idx``
    (:func:`symjac.arrays.structural.kink`), from the arguments' values."""
    from ..backend.codegen import _Lowerer

    shape = tuple(graph.shape(n))
    env = {}
    for s, a, m in zip(syms, graph.eqns[n][1], masks, strict=True):
        x = (
            ir.Constant(DOUBLE, float(a[1]))
            if type(a) is not int
            else em.load(_broadcast(sweep.nodes[a].value, shape), idx)
        )
        env[s] = em.b.fcmp_unordered("!=", x, ir.Constant(DOUBLE, 0.0)) if m else x
    return _Lowerer(em.module, em.b, DOUBLE, env).lower(em.structure.kink(n, k))


def _rows(em, p, target, ybar, idx, exact, kill=True):
    """``target[idx] += p * ybar[idx]``; with ``exact`` (``p`` is inf or NaN) it contributes
    nothing where the adjoint is zero if that zero is structural (``kill``: True, or an i1 for
    this row; the forward kernel's rule), and the flag that guarded contractions test is raised."""
    b = em.b

    def chunk(c0, vtype):
        y = em.load_row(ybar, idx, c0, vtype)
        acc = em.load_row(target, idx, c0, vtype)
        if exact:
            term = b.fmul(em.splat(p, vtype), y)
            if kill is True:
                term = b.select(b.fcmp_ordered("==", y, em.zeros(vtype)), em.zeros(vtype), term)
            elif kill:  # this row's zeros are structural where the i1 says so
                here = b.and_(
                    b.fcmp_ordered("==", y, em.zeros(vtype)),
                    em.splat(kill, vtype) if isinstance(vtype, ir.VectorType) else kill,
                )
                term = b.select(here, em.zeros(vtype), term)
            acc = b.fadd(acc, term)
            if em.guards:  # a contraction further back checks for what this makes
                em.taint(em.nonfinite(acc))
        else:
            acc = em.fma(em.splat(p, vtype), y, acc)
        em.store_row(acc, target, idx, c0)

    em.chunks(chunk)


def _reduction(em, graph, n, sweep):
    """logsumexp, max, min: ``x += weight * adjoint``, the weights stored by the forward sweep."""
    op, args, params = graph.eqns[n]
    adjoint = sweep.adjoint
    x_shape = tuple(graph.shape(args[0]))
    axes, _ = params
    _, axes, _ = reduce_letters(x_shape, axes, False)
    kept = tuple(s for k, s in enumerate(x_shape) if k not in axes)
    strides = iter(_c_strides(kept))
    ybar = adjoint[n]
    spread = View(
        ybar.base, ybar.offset, x_shape, tuple(0 if k in axes else next(strides) for k in range(len(x_shape)))
    )
    _accumulate(em, adjoint[args[0]], spread, x_shape, scale=sweep.partials[n][0])


def _view(em, graph, n, sweep):
    """A view op whose adjoint is a view of its argument's has nothing to add; a reshape of a
    strided adjoint has rows of its own, added back in the argument's order."""
    if n in sweep.aliased:
        return
    (a,) = graph.eqns[n][1]
    adjoint = sweep.adjoint
    ybar, shape = adjoint[n], tuple(graph.shape(a))
    _accumulate(em, adjoint[a], View(ybar.base, ybar.offset, shape, _c_strides(shape)), shape)


def _join(kind):
    def rule_(em, graph, n, sweep):
        op, args, params = graph.eqns[n]
        adjoint = sweep.adjoint
        shape = tuple(graph.shape(n))
        axis = params[0] % len(shape)
        start = 0
        for a in args:
            a_shape = tuple(graph.shape(a))
            part_shape = a_shape if kind == "concat" else a_shape[:axis] + (1,) + a_shape[axis:]
            cut = (slice(None),) * axis + (slice(start, start + part_shape[axis]),)
            part = _index(adjoint[n], cut)
            if a in adjoint:
                target = adjoint[a]
                if kind == "stack":
                    target = _index(target, (slice(None),) * axis + (None,))
                target = _broadcast(target, part_shape)
                _accumulate(em, target, View(part.base, part.offset, part_shape, part.strides), part_shape)
            start += part_shape[axis]

    return rule_


def _getitem(em, graph, n, sweep):
    (a,) = graph.eqns[n][1]
    params = graph.eqns[n][2]
    if n in sweep.aliased:
        return
    adjoint = sweep.adjoint
    x_shape = tuple(graph.shape(a))
    positions = data.gather_positions(x_shape, decode_index(params[0]))
    ybar = adjoint[n]
    source = View(ybar.base, ybar.offset, (len(positions),), (1,))
    with _flat(em, adjoint[a], x_shape) as target:
        table = data.index_table(em.module, positions)
        at = lambda e: data.load_index(em.b, table, e)  # noqa: E731
        em.loop(len(positions), lambda e, c: _add_row(em, target, at(e), source, e))


def _setitem(em, graph, n, sweep):
    """``y = x; y[index] = v``. Walking the assignments from the last, each place's adjoint row
    goes to the element of v written last there, and is then cleared, so that earlier writes to
    the same place and x's element there get nothing; x takes what is left."""
    x, v = graph.eqns[n][1]
    params = graph.eqns[n][2]
    adjoint = sweep.adjoint
    shape = tuple(graph.shape(n))
    size = math.prod(shape)
    v_shape = tuple(graph.shape(v))
    places, sources = data.assigned_positions(shape, v_shape, decode_index(params[0]))
    ybar = adjoint[n]
    flat = View(ybar.base, ybar.offset, (size,), (1,))
    b = em.b
    to, fro = data.index_table(em.module, places), data.index_table(em.module, sources)
    count = len(places)

    def assign(target):
        def step(e, c):
            at = b.sub(ir.Constant(I64, count - 1), e)
            place = data.load_index(b, to, at)
            if target is not None:
                _add_row(em, target, data.load_index(b, fro, at), flat, place)
            em.chunks(lambda c0, vt: em.store_row(em.zeros(vt), flat, [place], c0))
            return []

        em.loop(count, step)

    if v in adjoint:
        with _flat(em, adjoint[v], v_shape) as target:
            assign(target)
    else:
        assign(None)
    if x in adjoint:
        _accumulate(em, adjoint[x], View(ybar.base, ybar.offset, shape, _c_strides(shape)), shape)


def _add_row(em, target: View, at, source: View, e) -> list:
    """``target[at] += source[e]`` (flat views; ``at`` and ``e`` IR indices); no loop-carried values."""
    em.chunks(
        lambda c0, vt: em.store_row(
            em.b.fadd(em.load_row(target, [at], c0, vt), em.load_row(source, [e], c0, vt)), target, [at], c0
        )
    )
    return []


class _flat:
    """A flat (C-order) view of ``view``'s adjoint rows for scatters through position tables: the
    view itself when contiguous, else a zeroed scratch buffer added into it on exit."""

    def __init__(self, em, view: View, shape):
        self.em, self.view, self.shape = em, view, tuple(shape)

    def __enter__(self) -> View:
        size = math.prod(self.shape)
        if self.view.contiguous:
            return View(self.view.base, self.view.offset, (size,), (1,))
        self.scratch = self.em.buffer(size * self.em.width)
        self.em.zero(self.scratch, size * self.em.width)
        return View(self.scratch, 0, (size,), (1,))

    def __exit__(self, *exc):
        if exc[0] is None and not self.view.contiguous:
            source = View(self.scratch, 0, self.shape, _c_strides(self.shape))
            _accumulate(self.em, self.view, source, self.shape)
        return False


def _input(em, graph, n, sweep):
    """An input's adjoint is complete: the blocks read it."""


_RULES = {
    "input": _input,
    "cast": _view,
    "transpose": _view,
    "broadcast_to": _view,
    "reshape": _view,
    "getitem": _getitem,
    "setitem": _setitem,
    "concat": _join("concat"),
    "stack": _join("stack"),
    "sum": transposed(adjoints.sum_letters),
    "matmul": transposed(lambda params, shapes: matmul_letters(*shapes)),
    "einsum": transposed(lambda params, shapes: einsum_letters(params[0], shapes)),
    "logsumexp": _reduction,
    "max": _reduction,
    "min": _reduction,
}
