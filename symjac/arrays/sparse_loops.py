"""Sparse loop kernels: ``compile``'s sparse Jacobians (``sparse="csr"/"csc"``), and dense ones
from sparse tangents (the ``"sparse-loops"`` road), as array-level loops.

Which input columns a node's element depends on does not depend on the values, so each node's
sparsity structure is computed once, when building, in NumPy (:mod:`symjac.arrays.sparse_plan`;
:class:`~symjac.arrays.sparse_struct.Struct`, one sorted row of columns per element), and the
kernel (this module) computes only the entries' values. Every op's entries come
from its operands' by *steps*, ``dst[dpos[i]] (+)= coef * scale[sidx[i]] * src[spos[i]]`` over
constant index tables:

- elementwise ops scale their arguments' entries by the partial derivatives, which the value
  loops of :mod:`symjac.arrays.loops` write to arrays beside the values (a constant partial is
  ``coef``); a structural zero (:mod:`symjac.arrays.structural`: a mask's or a constant's
  partial, an entry of a node whose tangent is locally constant, as ``x - x``'s) kills an inf
  or NaN, as on the dense loop road. Other products are IEEE's (an entry that is 0 at this point
  only meets an inf partial as NaN). An op's entries are not stored where its readers can
  take its terms for less (:class:`~symjac.arrays.sparse_struct.Pending`): the chain rule's
  factors are then multiplied per element, not per entry (:class:`~symjac.arrays.sparse_struct.Composite`);
- sums add the entries of the rows they reduce; max, min and logsumexp weigh them first (a
  share of the ties, the softmax), with the weights the value loops store; a matmul or einsum
  with one operand that does not depend on the inputs weighs the other's rows by its elements
  (``A @ m``: row ``i`` sums ``m[j]`` times row ``(i, j)``), under the same zero rule;
- gathers (indexing with slices or index arrays, index assignment, reshape, transpose,
  broadcasting, concatenation, stack) are no code: their entries are positions in their
  operands' buffers, folded into the steps that read them.

The last steps write the outputs' entries, in CSR or CSC order, straight into the result (or at
their places in the dense Jacobian blocks, which the caller zeroes: there, entries that would
only be copied are added in place, :func:`symjac.arrays.sparse_plan._fold_into_result`). The
pattern is structural (connectivity): an entry whose derivative is identically zero although
the element reads that input (``x * np.array([0.0, 1.0])``) is kept, with the value 0.0,
where the element road folds it away.
"""

from __future__ import annotations

import math

import llvmlite.ir as ir
import numpy as np

from ..elements.derive import _input_specs
from ..trace.ops import ELEMENTWISE
from . import data, loops, sparse_plan, structural
from .data import load_index
from .emitter import DOUBLE, I64, _dense
from .sparse_plan import CONTRACTIONS, REDUCTIONS
from .sparse_struct import ONES, RESULT, Composite, Plan


def _needed(graph, plan_: Plan, value: bool) -> set:
    """The nodes whose values the kernel computes: those the partials and results read."""
    want = set(loops.value_nodes(graph, value))
    for n, ks in plan_.partials.items():  # a contraction's weights: the values of its operand
        op, args, _ = graph.eqns[n]
        want.update([args[k] for k in ks] if op in CONTRACTIONS else [n])
    keep = set()
    for n in range(len(graph.eqns) - 1, -1, -1):
        if n in want:
            keep.add(n)
            want.update(a for a in graph.eqns[n][1] if type(a) is int)
    return keep


def build_module(module, graph, wrt, value, kind: str, name="symjac_kernel"):
    """Add ``void name(in, out64, out32)`` computing the values of ``loops.value_nodes(graph,
    value)``, then
    the Jacobian's nonzeros in ``kind`` order (``"dense"``: at their places in the dense blocks,
    leaving the others as they are); returns the result shapes and the doubles."""
    p = sparse_plan.plan(graph, wrt, kind)
    em, (inp, out64, _) = loops.kernel_function(module, name, 0)
    partials = {}
    for n, ks in p.partials.items():
        op, args, _ = graph.eqns[n]
        # A reduction's weights have its argument's shape, a contraction's its operand's.
        shapes = {k: tuple(graph.shape(args[k] if op in CONTRACTIONS else args[0] if op in REDUCTIONS else n))
                  for k in ks}  # fmt: skip
        partials[n] = {k: _dense(em.buffer(math.prod(shape)), shape) for k, shape in shapes.items()}
    value_loops = {n: v for n, v in partials.items() if graph.eqns[n][0] not in CONTRACTIONS}
    nodes = loops.emit_nodes(em, graph, inp, lambda j, shape: None, _needed(graph, p, value), value_loops)
    for n in partials.keys() - value_loops.keys():
        for k, view in partials[n].items():
            loops._copy_values(em, nodes[graph.eqns[n][1][k]].value, view)
    shapes, offset = loops.store_values(em, [nodes[o] for o in loops.value_nodes(graph, value)], out64)
    result = em.b.gep(out64, [ir.Constant(I64, offset)], source_etype=DOUBLE)
    used = ({st.dst for st in p.steps} | {st.src for st in p.steps}) - {ONES, RESULT} - p.inside.keys()
    buffers = {k: em.buffer(p.sizes[k]) for k in sorted(used)}
    for k, at in p.inside.items():
        buffers[k] = em.b.gep(result, [ir.Constant(I64, at)], source_etype=DOUBLE)
    buffers[RESULT] = result
    scales = {}

    def scale(key):  # a partial's array, a composite's, or None (1)
        return None if key is None else scales[key] if key[0] == "chain" else partials[key[0]][key[1]].base

    exact = _structural_scales(graph, p)

    def constant(src) -> bool:  # the entries' zeros are structural: a locally constant tangent's
        return src != ONES and p.owners.get(src) in structural.of(graph).constant

    for i, c in enumerate(p.composites):
        scales["chain", i] = _composite(em, c, scale(c.a), scale(c.b), exact(c.a), exact(c.b))
    written = {RESULT}  # a result entry is stored once, or added to where the caller zeroed it
    for group in _fused(p):
        shared = {st.dst for st in group if sum(o.dst == st.dst for o in group) > 1}
        assigns = []
        for step in group:
            fresh = step.dst not in written
            assign = (step.dst == RESULT and not step.accumulate) or (
                fresh and step.dpos is None and step.count == p.sizes[step.dst] and step.dst not in shared
            )
            if fresh and not assign:
                em.zero(buffers[step.dst], p.sizes[step.dst])
            written.add(step.dst)
            assigns.append(assign)
        ptrs = [scale(st.scale) for st in group]
        kills = [(exact(st.scale), constant(st.src)) for st in group]
        _steps(em, group, [buffers[st.dst] for st in group], buffers.get(group[0].src), ptrs, assigns, kills)
    em.finish()
    if kind != "dense":
        return [*shapes, (p.nnz,)], offset + p.nnz
    specs = _input_specs(graph)
    blocks = [tuple(graph.shape(o)) + tuple(specs[j][0]) for o in graph.outputs for j in wrt]
    return [*shapes, *blocks], offset + sum(math.prod(s) for s in blocks)


def _structural_scales(graph, p: Plan):
    """``exact(scale)``: whether a step's scale has structural zeros (an elementwise partial that
    structural calls so, a constant operand's values, max and min's tie shares; a composite where
    both factors have; not a softmax)."""
    zeros = structural.of(graph) if p.steps else None

    def exact(key) -> bool:
        if key is None:
            return True
        if key[0] == "chain":
            c = p.composites[key[1]]
            return exact(c.a) and exact(c.b)
        n, k = key
        op, args, _ = graph.eqns[n]
        if op in ELEMENTWISE:  # no kink: a scale's zero at relu'(0) is a choice (see structural)
            return zeros.smooth(n)[k]
        if op in CONTRACTIONS:
            return zeros.value(args[k])
        return op in ("max", "min")

    return exact


def _kill_product(em, x, y, kill_x=True, kill_y=True):
    """``x * y``, zero where ``x`` is and ``kill_x`` (its zeros are structural), or ``y`` and
    ``kill_y``: an inf or NaN times a structural zero is no entry."""
    b, zero = em.b, ir.Constant(DOUBLE, 0.0)
    kill = em.either([b.fcmp_ordered("==", v, zero) for v, k in ((x, kill_x), (y, kill_y)) if k])
    return b.fmul(x, y) if kill is None else b.select(kill, zero, b.fmul(x, y))


def _composite(em, c: Composite, a, b, kill_a, kill_b):
    """A buffer holding composite ``c``, from its factors' arrays ``a`` and ``b`` (whose zeros
    kill the other's inf where ``kill_a``, ``kill_b``)."""
    out = em.buffer(c.size)
    table = None if c.table is None else data.index_table(em.module, c.table)

    def body(i, _):
        x = em.b.load(em.b.gep(a, [i], source_etype=DOUBLE), typ=DOUBLE)
        j = i if table is None else load_index(em.b, table, i)
        y = em.b.load(em.b.gep(b, [j], source_etype=DOUBLE), typ=DOUBLE)
        em.b.store(_kill_product(em, x, y, kill_a, kill_b), em.b.gep(out, [i], source_etype=DOUBLE))
        return []

    em.loop(c.size, body)
    return out


FUSE_BACK = 8  # groups searched back for a step to join (the plans have tens of steps)


def _fused(p: Plan) -> list:
    """The steps in groups that run as one loop: steps of one count reading the same entries
    (source, positions and scale positions) load them once. A step joins an earlier group only
    where no step run between them writes what it reads or reads what it writes; additions into
    one buffer may change order (the last bit of a sum, as any order of the plan's terms)."""

    def alias(b):  # a buffer the result holds is a part of the result
        return RESULT if b in p.inside else b

    def same(x, y):
        return x is y or (x is not None and y is not None and np.array_equal(x, y))

    groups: list = []
    for st in p.steps:
        into = None
        for g in range(len(groups) - 1, max(len(groups) - FUSE_BACK, 0) - 1, -1):
            head = groups[g][0]
            if (
                (head.src, head.count) == (st.src, st.count)
                and same(head.spos, st.spos)
                and same(head.sidx, st.sidx)
            ):
                into = groups[g]
                break
            if any(alias(o.dst) == alias(st.src) or alias(o.src) == alias(st.dst) for o in groups[g]):
                break  # st cannot run before this group
        if into is None:
            groups.append([st])
        else:
            into.append(st)
    return groups


def _steps(em, group, dsts, src, scales, assigns, kills):
    """One loop running ``group``'s steps (see :class:`~symjac.arrays.sparse_struct.Step`), each
    into its ``dsts`` buffer (a zero scale killing an inf or NaN entry where ``kills``)."""
    b = em.b
    module = em.module
    head = group[0]
    spos = None if head.spos is None else data.index_table(module, head.spos)
    sidx = None if head.sidx is None else data.index_table(module, head.sidx)
    dpos = [None if st.dpos is None else data.index_table(module, st.dpos) for st in group]

    def at(ptr, table, i):
        return b.gep(ptr, [i if table is None else load_index(b, table, i)], source_etype=DOUBLE)

    def body(i, c):
        x = None if head.src == ONES else b.load(at(src, spos, i), typ=DOUBLE)
        k = i if sidx is None else load_index(b, sidx, i)
        for st, dst, scale, assign, table, kill in zip(
            group, dsts, scales, assigns, dpos, kills, strict=True
        ):
            coef = ir.Constant(DOUBLE, st.coef)
            if scale is None:
                term = coef if x is None else x if st.coef == 1.0 else b.fmul(coef, x)
            else:
                p = b.load(b.gep(scale, [k], source_etype=DOUBLE), typ=DOUBLE)
                # A structural zero kills an inf or NaN (see the module's text).
                term = p if x is None else _kill_product(em, p, x, *kill)
                if st.coef != 1.0:
                    term = b.fmul(coef, term)
            where = at(dst, table, i)
            b.store(term if assign else b.fadd(b.load(where, typ=DOUBLE), term), where)
        return []

    em.loop(head.count, body)


def compile_object(graph, wrt, value, kind: str):
    """``(object code, IR, optimised IR, layout, pattern)`` of the sparse loop kernel (``kind``
    "csr", "csc", or "dense": the dense Jacobian, whose layout is not ``full``)."""
    from ..backend import runtime

    module = runtime._module("symjac_kernel")
    shapes, n64 = build_module(module, graph, wrt, value, kind)
    # Unrolled, the Brusselators' few loops batch 13% faster (2 x 32^2); N-body's many pair loops
    # take 40% longer to build (N=20: 277 against 161 ms) to gain 4% a call and 8% a batch.
    # LLVM's loop vectoriser finds nothing to gain in loops through position tables: without it
    # N-body N=20 builds as fast and calls 13% faster (28.5 against 32.6 us), the grids the same.
    unroll = kind != "dense"
    built = loops.native(module, graph, shapes, n64, unroll=unroll, full=kind != "dense", vectorize=False)
    return (*built, sparse_plan.plan(graph, wrt, kind).pattern)


def bind(graph, wrt, kind: str) -> set:
    """Bind every array a cached sparse kernel of ``graph`` may read (recomputed from the graph,
    never read from the cache); returns their symbols."""
    names = data.bind_data(graph)
    for t in sparse_plan.plan(graph, wrt, kind).tables():
        if t.size >= data.DATA_FROM:
            names.add(data._data_symbol(t.astype(np.int32)))
    return names
