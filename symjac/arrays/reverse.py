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
  other operands' values with the adjoint, register-blocked like the forward contractions;
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

from ..backend import vecmath
from ..elements.derive import _input_specs
from ..trace.ops import ELEMENTWISE, decode_index
from . import contractions, data, finiteness, loops
from .emitter import (
    ACCUMULATOR_LANES,
    CHUNK,
    DOUBLE,
    I32,
    I64,
    WHOLE_ROW,
    View,
    _broadcast,
    _c_strides,
    _dense,
    _index,
    _transpose,
)
from .loops import _is_mask, _scalar_rule


@dataclass
class _Sweep:
    """What the backward rules read: the forward sweep's nodes, each live node's adjoint view, the
    nodes whose adjoint is a view of their argument's, and the stored partials."""

    nodes: list
    adjoint: dict
    aliased: set = field(default_factory=set)
    partials: dict = field(default_factory=dict)


ROWS = 8  # adjoint rows per register block of a contraction (their accumulators stay in registers)
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
    needed, stack = set(), list(graph.outputs)
    while stack:
        n = stack.pop()
        if n not in needed:
            needed.add(n)
            stack.extend(a for a in graph.eqns[n][1] if type(a) is int)
    return depends, needed


def width(graph) -> int:
    """The adjoint row's length: every output element's column."""
    return sum(math.prod(graph.shape(o)) for o in graph.outputs)


def work(graph, wrt, mode: str = "jacobian") -> int:
    """About how many scalar operations one point costs (``loops.work`` with the adjoint row)."""
    return loops.work(graph, wrt, mode, width=1 if mode == "vjp" else width(graph))


def build_module(module, graph, wrt, value: bool, name="symjac_kernel", mode="jacobian"):
    """Add ``void name(in, out64, out32)``: ``graph``'s outputs' values (with ``value``) and their
    Jacobian blocks with respect to inputs ``wrt``, by adjoints (with ``mode="vjp"``: the
    vector-Jacobian products with vectors ``v``, one per output, read after the inputs: one
    adjoint column); returns ``(result shapes, doubles written)`` in ``loops.build_module``'s
    order."""
    m = 1 if mode == "vjp" else max(width(graph), 1)
    em, (inp, out64, _) = loops.kernel_function(module, name, m)
    em.guards = finiteness.reverse_guards(graph)
    depends, needed = live_nodes(graph, wrt)
    live = depends & needed
    partials = _partial_buffers(em, graph, live)
    nodes = loops.emit_nodes(em, graph, inp, lambda j, shape: None, keep=needed, partials=partials)
    outs = [nodes[o] for o in graph.outputs]
    results, offset = loops.store_values(em, outs, out64) if value else ([], 0)
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


def compile_object(graph, wrt, value: bool, mode: str = "jacobian"):
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
    _, _, parts = _scalar_rule(op, tuple(_is_mask(graph, a) for a in args))
    terms = []
    for k, a in enumerate(args):
        if type(a) is not int or a not in adjoint or parts[k] is None:
            continue
        if parts[k].is_Number:
            if parts[k] != 0:
                terms.append((float(parts[k]), _broadcast(adjoint[a], shape)))
        else:
            terms.append((partials[k], _broadcast(adjoint[a], shape)))
    if not terms:
        return
    b, ybar = em.b, adjoint[n]
    zero, inf = ir.Constant(DOUBLE, 0.0), ir.Constant(DOUBLE, math.inf)
    fabs = em._declare("llvm.fabs.f64", DOUBLE, [DOUBLE])

    def body(idx, c):
        for partial, target in terms:
            if isinstance(partial, float):
                _rows(em, ir.Constant(DOUBLE, partial), target, ybar, idx, exact=None)
                continue
            p = em.load(partial, idx)
            is_zero = b.fcmp_ordered("==", p, zero)
            infinite = b.fcmp_unordered(">=", b.call(fabs, [p]), inf)
            # Mostly the partial is finite and nonzero: a plain multiply-add. A zero partial adds
            # nothing; an inf/NaN one takes the exact rule on a branch of its own.
            with b.if_then(b.not_(is_zero)):
                with b.if_else(infinite) as (exact, plain):
                    with exact:
                        _rows(em, p, target, ybar, idx, exact=True)
                    with plain:
                        _rows(em, p, target, ybar, idx, exact=None)
        return []

    em.nest(shape, body)


def _rows(em, p, target, ybar, idx, exact):
    """``target[idx] += p * ybar[idx]``; with ``exact`` an infinite ``p`` contributes nothing
    where the adjoint is zero (the forward kernel's rule)."""
    b = em.b

    def chunk(c0, vtype):
        y = em.load_row(ybar, idx, c0, vtype)
        acc = em.load_row(target, idx, c0, vtype)
        if exact:
            term = b.fmul(em.splat(p, vtype), y)
            term = b.select(b.fcmp_ordered("==", y, em.zeros(vtype)), em.zeros(vtype), term)
            acc = b.fadd(acc, term)
            if em.guards:  # a contraction further back checks for what this makes
                em.taint(em.nonfinite(acc))
        else:
            acc = em.fma(em.splat(p, vtype), y, acc)
        em.store_row(acc, target, idx, c0)

    em.chunks(chunk)


def _contraction(letters_of):
    """The transpose of ``einsum(letters -> out)``: operand ``k``'s adjoint gets the contraction of
    the other operands' values with the result's adjoint."""

    def rule_(em, graph, n, sweep):
        op, args, params = graph.eqns[n]
        adjoint = sweep.adjoint
        values = [sweep.nodes[a].value for a in args]
        letters, out, sizes = letters_of(params, [v.shape for v in values])
        ybar = adjoint[n]
        out_shape = tuple(sizes[c] for c in out)
        if ybar.shape != out_shape:  # a sum's keepdims: the same rows without the kept 1s
            ybar = View(ybar.base, ybar.offset, out_shape, _c_strides(out_shape))
        for k, a in enumerate(args):
            if a not in adjoint:
                continue
            others = [i for i in range(len(args)) if i != k]
            factors = [(values[i], letters[i]) for i in others]
            ok, checked = None, em.guards.get(n)
            if factors and checked is not None:  # the fast products are exact where all is finite
                ok = em.clean_or_finite([ybar])
                for i in checked:
                    if i != k and not isinstance(values[i].base, tuple):
                        ok = em.b.and_(ok, em.finite(values[i]))
            _contract_rows(em, adjoint[a], letters[k], factors, (ybar, out), sizes, ok)

    return rule_


def _sum_letters(params, shapes):
    axes, keepdims = params
    lets, axes, out = contractions._reduce_letters(shapes[0], axes, keepdims)
    return [lets], out, dict(zip(lets, shapes[0], strict=True))


def _over(view: View, lets: str, order, sizes) -> View:
    """``view`` (indexed by ``lets``) as a view over the letters ``order``: stride 0 where a letter
    is absent or broadcast, strides added where a letter repeats (a diagonal)."""
    strides = dict.fromkeys(order, 0)
    for c, size, s in zip(lets, view.shape, view.strides, strict=True):
        strides[c] += s if size != 1 or sizes[c] == 1 else 0
    return View(view.base, view.offset, tuple(sizes[c] for c in order), tuple(strides[c] for c in order))


def _contract_rows(em, target, target_letters, factors, row, sizes, ok=None):
    """``target[T] += sum over the other letters of prod(factors) * row`` (rows of the adjoint).

    The last target letter is register-blocked, ``ROWS`` targets at a time, each with its own
    vector accumulators, so that one adjoint row loaded serves them all. Unless ``ok`` (an i1:
    nothing multiplied is inf or NaN) holds, a scalar loop computes it instead, where a zero
    times an inf or NaN contributes nothing (the forward kernel's and the element road's rule)."""
    b = em.b
    ordered = list(dict.fromkeys(target_letters))
    every = dict.fromkeys(target_letters + "".join(lets for _, lets in factors) + row[1])
    summed = [c for c in every if c not in ordered]
    order = ordered + summed
    fviews = [_over(v, lets, order, sizes) for v, lets in factors]
    rview = _over(row[0], row[1], order, sizes)
    full_t = _over(target, target_letters, order, sizes)
    tview = View(full_t.base, full_t.offset, full_t.shape[: len(ordered)], full_t.strides[: len(ordered)])
    tshape = list(tview.shape)
    inner = [sizes[c] for c in summed]
    lanes = min(em.width, WHOLE_ROW if em.width <= WHOLE_ROW else CHUNK)
    rows = max(1, min(ROWS, ACCUMULATOR_LANES // lanes))

    def block(idxs):
        def chunk(c0, vtype):
            def step(jdx, carry):
                new = []
                for idx, acc in zip(idxs, carry, strict=True):
                    full = idx + jdx
                    coef = None
                    for fv in fviews:
                        x = em.load(fv, full)
                        coef = x if coef is None else b.fmul(coef, x)
                    r = em.load_row(rview, full, c0, vtype)
                    new.append(b.fadd(acc, r) if coef is None else em.fma(em.splat(coef, vtype), r, acc))
                return new

            accs = em.nest(inner, step, [em.zeros(vtype)] * len(idxs))
            for idx, acc in zip(idxs, accs, strict=True):
                em.store_row(b.fadd(em.load_row(tview, idx, c0, vtype), acc), tview, idx, c0)

        em.chunks(chunk)

    def fast():
        if not tshape or rows == 1 or tshape[-1] < 2:
            em.nest(tshape, lambda idx, c: (block([idx]), [])[1])
            return
        lanes = vecmath.lanes("float64")
        last = len(tshape) - 1
        if (
            2 * em.width <= lanes <= tshape[-1]
            and rview.strides[last] == 0
            and any(fv.strides[last] == 1 for fv in fviews)
            and all(fv.strides[last] in (0, 1) for fv in fviews)
        ):
            # Short adjoint rows (an MLP's 4 outputs) fill a fraction of a vector: vectorise along
            # the target's last letter instead, where the factor is contiguous (a weight's row).
            done = _contract_lanes(em, tview, fviews, rview, inner, tshape, lanes)
            if done < tshape[-1]:
                em.blocks(tshape, rows, block, start=done)
            return
        em.blocks(tshape, rows, block)

    if ok is None:
        fast()
        return
    with b.if_else(ok) as (plain, exact):
        with plain:
            fast()
        with exact:
            em.taint()  # the adjoint it adds to may now hold an inf: the contractions after check
            n = len(fviews)
            em.cold(
                [tview, *fviews, rview],
                lambda sub, vs: _exact_rows(sub, vs[0], vs[1 : n + 1], vs[-1], inner, tshape),
            )


def _exact_rows(em, tview, fviews, rview, inner, tshape):
    """``_contract_rows``'s sums one double at a time, a product with a zero factor or a zero
    adjoint being zero even where the other is inf or NaN."""
    b, zero = em.b, ir.Constant(DOUBLE, 0.0)

    def target(idx, carry):
        def column(j, carry):
            def step(jdx, carry):
                (acc,) = carry
                full = idx + jdx
                coef = None
                for fv in fviews:
                    x = em.load(fv, full)
                    coef = x if coef is None else b.fmul(coef, x)
                r = b.load(em.address(rview, full, em.width, j), typ=DOUBLE)
                kill = b.or_(b.fcmp_ordered("==", coef, zero), b.fcmp_ordered("==", r, zero))
                return [em.fma(b.select(kill, zero, coef), b.select(kill, zero, r), acc)]

            (acc,) = em.nest(inner, step, [zero])
            at = em.address(tview, idx, em.width, j)
            b.store(b.fadd(b.load(at, typ=DOUBLE), acc), at)
            return []

        em.loop(em.width, column)
        return []

    em.nest(tshape, target)


def _contract_lanes(em, tview, fviews, rview, inner, tshape, lanes) -> int:
    """``_contract_rows`` with vectors along the target's last letter: ``blocks`` vectors of
    ``lanes`` targets, one accumulator per vector and adjoint column; returns how many targets
    along that letter it covered (whole spans), the rest being left to the row-vector loops."""
    b, m = em.b, em.width
    blocks = max(1, min(4, 8 // m, tshape[-1] // lanes))
    span = lanes * blocks
    vtype = ir.VectorType(DOUBLE, lanes)
    full = tshape[-1] // span

    def outer(idx, c):
        def spans(i, c):
            start = b.mul(i, ir.Constant(I64, span))
            firsts = [b.add(start, ir.Constant(I64, k * lanes)) for k in range(blocks)]

            def step(jdx, carry):
                new = list(carry)
                coefs = []
                for first in firsts:
                    coef = None
                    for fv in fviews:
                        if fv.strides[len(idx)] == 1:  # contiguous along the vectorised letter
                            ptr = em.pointer(em.address(fv, [*idx, first, *jdx]), vtype)
                            x = b.load(ptr, typ=vtype, align=8)
                        else:
                            x = em.splat(em.load(fv, [*idx, first, *jdx]), vtype)
                        coef = x if coef is None else b.fmul(coef, x)
                    coefs.append(coef)
                for col in range(m):
                    y = b.load(em.address(rview, [*idx, start, *jdx], m, ir.Constant(I64, col)), typ=DOUBLE)
                    y = em.splat(y, vtype)
                    for k, coef in enumerate(coefs):
                        new[k * m + col] = em.fma(coef, y, new[k * m + col])
                return new

            accs = em.nest(inner, step, [em.zeros(vtype)] * (blocks * m))
            for k, first in enumerate(firsts):
                columns = accs[k * m : (k + 1) * m]
                if tview.strides[-1] == 1:  # the block's rows follow one another: one vector
                    _add_transposed(em, tview, [*idx, first], columns, lanes)
                    continue
                for col, acc in enumerate(columns):
                    for r in range(lanes):
                        at = em.address(
                            tview, [*idx, b.add(first, ir.Constant(I64, r))], m, ir.Constant(I64, col)
                        )
                        x = b.extract_element(acc, ir.Constant(ir.IntType(32), r))
                        b.store(b.fadd(b.load(at, typ=DOUBLE), x), at)
            return []

        em.loop(full, spans)
        return []

    em.nest(tshape[:-1], outer)
    return full * span


def _add_transposed(em, tview, idx, columns, lanes):
    """Add ``columns[c][r]`` to row ``r`` (of ``m`` doubles), column ``c``, of the ``lanes`` rows
    at ``idx``, contiguous in memory: the accumulators interleaved by two shuffles, one load and
    one store (an ``m`` x ``lanes`` transpose)."""
    b, m = em.b, len(columns)
    parts = list(columns)
    while len(parts) > 1:  # concatenate: two vectors of n lanes make one of 2n
        pairs = []
        for a, c in zip(parts[::2], parts[1::2], strict=False):
            n = a.type.count
            mask = ir.Constant(ir.VectorType(I32, 2 * n), list(range(2 * n)))
            pairs.append(b.shuffle_vector(a, c, mask))
        if len(parts) % 2:
            last = parts[-1]
            n = last.type.count  # pad the odd one to the others' length with zero lanes
            mask = ir.Constant(ir.VectorType(I32, 2 * n), list(range(2 * n)))
            pairs.append(b.shuffle_vector(last, em.zeros(last.type), mask))
        parts = pairs
    (whole,) = parts
    size = m * lanes
    order = [c * lanes + r for r in range(lanes) for c in range(m)]
    mask = ir.Constant(ir.VectorType(I32, size), order)
    rows = b.shuffle_vector(whole, ir.Constant(whole.type, ir.Undefined), mask)
    vtype = ir.VectorType(DOUBLE, size)
    ptr = em.pointer(em.address(tview, idx, m), vtype)
    b.store(b.fadd(b.load(ptr, typ=vtype, align=8), rows), ptr, align=8)


def _reduction(em, graph, n, sweep):
    """logsumexp, max, min: ``x += weight * adjoint``, the weights stored by the forward sweep."""
    op, args, params = graph.eqns[n]
    adjoint = sweep.adjoint
    x_shape = tuple(graph.shape(args[0]))
    axes, _ = params
    _, axes, _ = contractions._reduce_letters(x_shape, axes, False)
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
    "sum": _contraction(_sum_letters),
    "matmul": _contraction(lambda params, shapes: contractions.matmul_letters(*shapes)),
    "einsum": _contraction(lambda params, shapes: contractions.einsum_letters(params[0], shapes)),
    "logsumexp": _reduction,
    "max": _reduction,
    "min": _reduction,
}
