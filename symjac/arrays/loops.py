"""Loop kernels for the array road: a recorded graph's forward-mode Jacobian lowered to LLVM loops.

Where the element road expands every tensor element into SymPy and compiles a straight-line
program whose size grows with the elements, here each array operation of the recorded graph
becomes one loop nest, so the build grows with the number of operations. Every node gets a value
array and, when it depends on a differentiated input, a tangent array of shape
``node.shape + (width,)`` (``width``: the differentiated inputs' total size), tangent axis
innermost so that its loops are SIMD vectors:

- elementwise ops (here): the op table's scalar formula and its SymPy partials
  (:func:`symjac.arrays.elementwise.formulas`) lowered inside the loop body by the element road's
  own lowering (:class:`symjac.backend.codegen._Lowerer`); a zero partial kills an inf/NaN tangent and
  a zero tangent an inf/NaN partial, as on the other roads;
- matmul, einsum and sums: contraction loops whose tangent accumulators are vectors; logsumexp,
  max and min: reductions with their exact weights (:mod:`symjac.arrays.contractions`);
- reshape, transpose, broadcasting and basic slicing: strided views, no code; indexing with index
  arrays and index assignment: a gather (a scatter) through a table of positions computed when
  building; concatenation and stack: copies (:mod:`symjac.arrays.gathers`);
- captured constants: literals, or global arrays read through pointers (:mod:`symjac.arrays.data`).

Views and the IR emitter they are written with live in :mod:`symjac.arrays.emitter`. The kernel
has the element road's signature, ``void symjac_kernel(in, out64, out32)``, and the same batch
loop over points (``symjac_kernel_batch``), so :class:`symjac.compiled.CompiledFunction` calls it
unchanged.
"""

from __future__ import annotations

import functools
import math

import llvmlite.ir as ir
import numpy as np
import sympy

from ..backend import vecmath
from ..backend.codegen import _Lowerer
from ..elements.derive import _input_specs
from ..trace.ops import ELEMENTWISE
from . import finiteness
from .contractions import _einsum, _matmul, _reduction, _sum
from .data import _const
from .elementwise import Unsupported, formulas
from .emitter import (
    DOUBLE,
    F64,
    I1,
    I32,
    I64,
    PTR,
    WHOLE_ROW,
    Node,
    View,
    _broadcast,
    _c_strides,
    _dense,
    _Emitter,
    _transpose,
)
from .gathers import _getitem, _join, _reshape, _same_map, _setitem

STRUCTURAL = frozenset(
    {"input", "const", "scalar", "reshape", "transpose", "broadcast_to", "getitem", "setitem", "concat",
     "stack", "sum", "logsumexp", "max", "min", "matmul", "einsum", "cast"}
)  # fmt: skip


def unsupported(graph) -> str | None:
    """Why ``graph`` cannot take the loop road (None when it can)."""
    for n, (op, args, params) in enumerate(graph.eqns):
        dt = graph.dtype(n)
        if op == "const":
            if np.dtype(params[0]).kind not in "fbiu":
                return f"a captured {np.dtype(params[0])} array"
            continue
        if op == "input" and np.dtype(params[2]) != F64:
            return f"input {params[0]} is {np.dtype(params[2])} (the loop road computes in float64)"
        if op != "input" and dt is not None and not (dt == F64 or dt.kind == "b"):
            return f"{op} makes a {dt} array"
        if op in ELEMENTWISE:
            try:
                _scalar_rule(op, tuple(_is_mask(graph, a) for a in args))
            except Unsupported as exc:
                return f"{op} ({exc})"
        elif op not in STRUCTURAL:
            return op
        elif op == "einsum" and "->" not in params[0]:
            return "einsum with an implicit output"
        elif op == "einsum" and "." in params[0]:
            return "einsum with an ellipsis"
        elif op == "cast" and not (dt is None or dt == F64 or dt.kind == "b"):
            return f"cast to {dt}"
    return None


def _is_mask(graph, arg) -> bool:
    return type(arg) is int and graph.dtype(arg) is not None and graph.dtype(arg).kind == "b"


@functools.cache
def _scalar_rule(op: str, masks: tuple[bool, ...]):
    """``(symbols, value, partials)`` of an elementwise op, checked to lower to LLVM."""
    syms, expr, partials = formulas(op, masks)
    module = ir.Module()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), []), "probe")
    b = ir.IRBuilder(fn.append_basic_block())
    env = {
        s: (ir.Constant(I1, 0) if m else ir.Constant(DOUBLE, 0.5)) for s, m in zip(syms, masks, strict=True)
    }
    lw = _Lowerer(module, b, DOUBLE, env)
    try:
        for e in (expr, *partials):
            if e is not None:
                lw.lower(sympy.sympify(e))
    except (NotImplementedError, TypeError, AttributeError, KeyError) as exc:
        raise Unsupported(str(exc).splitlines()[0]) from None
    return syms, sympy.sympify(expr), tuple(None if p is None else sympy.sympify(p) for p in partials)


def build_module(module, graph, wrt, value, name="symjac_kernel", mode="jacobian"):
    """Add ``void name(in, out64, out32)`` computing the values of ``value_nodes(graph, value)``
    and Jacobian blocks with respect to inputs ``wrt`` (with ``mode="jvp"``: the products with
    vectors ``v``, read after the inputs, one per input in ``wrt``); returns the result shapes in
    order and the doubles written."""
    specs = _input_specs(graph)
    col0, seeds = {}, {}
    width = 0
    for j in wrt:
        col0[j] = width
        width += math.prod(specs[j][0])
    if mode == "jvp":  # one tangent column: v itself, read where the caller put it
        at = sum(math.prod(shape) for shape, _ in specs)
        for j in wrt:
            seeds[j], col0[j] = at, 0
            at += math.prod(specs[j][0])
        width = 1
    em, (inp, out64, _) = kernel_function(module, name, width)
    em.guards = finiteness.forward_guards(graph)

    def seed(j, shape):
        if j in seeds:
            return View(inp, seeds[j], shape, _c_strides(shape))
        return _identity(em, j, shape, col0) if j in col0 else None

    nodes = emit_nodes(em, graph, inp, seed)
    outs = [nodes[o] for o in graph.outputs]
    results, offset = store_values(em, [nodes[o] for o in value_nodes(graph, value)], out64)
    for o in outs:
        if mode == "jvp":
            _store_block(em, o, out64, offset, 0, 1)
            offset += math.prod(o.value.shape)
            results.append(o.value.shape)
            continue
        for j in wrt:
            size = math.prod(specs[j][0])
            shape = o.value.shape + tuple(specs[j][0])
            _store_block(em, o, out64, offset, col0[j], size)
            offset += math.prod(shape)
            results.append(shape)
    em.finish()
    return results, offset


def product_shapes(graph, wrt, mode: str) -> tuple:
    """The shapes of the vectors ``v`` a kernel of ``mode`` reads after the inputs: one per output
    for a vjp, one per input in ``wrt`` for a jvp, none for a Jacobian."""
    if mode == "vjp":
        return tuple(tuple(graph.shape(o)) for o in graph.outputs)
    if mode == "jvp":
        specs = _input_specs(graph)
        return tuple(tuple(specs[j][0]) for j in wrt)
    return ()


def kernel_function(module, name: str, width: int):
    """``(emitter, (in, out64, out32))`` of a new ``void name(in, out64, out32)``."""
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR, PTR, PTR]), name=name)
    for arg in fn.args:
        arg.add_attribute("noalias")
    return _Emitter(module, fn, width), fn.args


def emit_nodes(em, graph, inp, seed, keep=None, partials=None) -> list:
    """Each node's Node (values read from ``inp``; input ``j``'s tangent ``seed(j, shape)``).

    Only the nodes in ``keep`` (all when None) are emitted, the others are None; ``partials``
    maps an elementwise node to the views receiving its partials (``_elementwise``)."""
    specs = _input_specs(graph)
    in_offsets = np.cumsum([0] + [math.prod(shape) for shape, _ in specs]).tolist()
    em.graph = graph
    nodes: list = []
    for n, (op, args, params) in enumerate(graph.eqns):
        shape = tuple(graph.shape(n))
        mask = graph.dtype(n) is not None and graph.dtype(n).kind == "b"
        if keep is not None and n not in keep:
            nodes.append(None)
        elif op == "input":
            j = params[0]
            nodes.append(Node(View(inp, in_offsets[j], shape, _c_strides(shape)), seed(j, shape), mask))
        else:
            argn = [
                nodes[a] if type(a) is int else Node(View(("scalar", float(a[1])), 0, (), ()), None)
                for a in args
            ]
            rule = _OPS.get(op, _elementwise)
            extra = {"partials_out": partials[n]} if partials and n in partials else {}
            nodes.append(rule(em, op, argn, params, shape, mask, module=em.module, n=n, **extra))
    return nodes


def value_nodes(graph, value) -> tuple:
    """The nodes whose values a kernel stores before its derivatives: a builder's ``value`` is
    True (the outputs), False (none), or the nodes (a gradient graph's function value)."""
    if isinstance(value, tuple):
        return value
    return tuple(graph.outputs) if value else ()


def store_values(em, outs, out64) -> tuple[list, int]:
    """Copy the outputs' values to the start of ``out64``: ``(their shapes, doubles written)``."""
    results, offset = [], 0
    for o in outs:
        target = View(out64, offset, o.value.shape, _c_strides(o.value.shape))
        _copy_values(em, o.value, target)
        offset += math.prod(o.value.shape)
        results.append(o.value.shape)
    return results, offset


def _identity(em, j, shape, col0):
    size = math.prod(shape)
    buf = em.buffer(size * em.width)
    b = em.b
    em.zero(buf, size * em.width)

    def one(i, c):
        at = b.add(b.mul(i, ir.Constant(I64, em.width + 1)), ir.Constant(I64, col0[j]))
        b.store(ir.Constant(DOUBLE, 1.0), b.gep(buf, [at], source_etype=DOUBLE))
        return []

    em.loop(size, one)
    return _dense(buf, shape)


def _copy_values(em, src: View, dst: View):
    em.nest(src.shape, lambda idx, c: (em.store(em.load(src, idx), dst, idx), [])[1])


def _store_block(em, node, out64, offset, c0, size):
    """Jacobian block: element ``(o, e)`` is the tangent ``node.tangent[o][c0 + e]``."""
    shape = node.value.shape
    rows = math.prod(shape)
    b = em.b
    if node.tangent is None:
        em.zero(out64, rows * size, offset)
        return
    t = node.tangent
    dst = View(out64, offset, shape, tuple(s * size for s in _c_strides(shape)))

    def row(idx, c):
        base = em.address(dst, idx)
        src = em.address(t, idx, em.width, ir.Constant(I64, c0))
        em.loop(size, lambda e, c: (b.store(b.load(b.gep(src, [e], source_etype=DOUBLE), typ=DOUBLE),
                                            b.gep(base, [e], source_etype=DOUBLE)), [])[1])  # fmt: skip
        return []

    em.nest(shape, row)


# --- elementwise ----------------------------------------------------------------------------


def _kills(em, n, k) -> tuple:
    """``(partial, tangent)``: whether elementwise node ``n``'s partial in argument ``k``, and that
    argument's tangent, have structural zeros (:mod:`symjac.arrays.structural`). Where no value,
    partial or tangent can be inf or NaN (finite inputs), there is nothing for them to kill."""
    args = em.graph.eqns[n][1]
    if em.graph.eqns[n][0] not in ELEMENTWISE or not finiteness.risky_values(em.graph) and not em.guards:
        return False, False
    zeros = em.structure
    return zeros.partial(n)[k], args[k] in zeros.tangents


def _elementwise(em, op, args, params, shape, mask, module, n, partials_out=None):
    """An elementwise op's value and tangent; ``partials_out`` maps argument ``k`` to a view (of
    ``shape``) that receives the partial derivative with respect to it (the sparse road's scales)."""
    if op not in ELEMENTWISE:
        raise Unsupported(op)
    masks = tuple(a.mask for a in args)
    syms, expr, partials = _scalar_rule(op, masks)
    b = em.b
    out = _dense(em.buffer(math.prod(shape)), shape)
    views = [_broadcast(a.value, shape) for a in args]
    live = [
        (k, _broadcast(a.tangent, shape), partials[k])
        for k, a in enumerate(args)
        if a.tangent is not None
        and partials[k] is not None
        and not (partials[k].is_Number and partials[k] == 0)
    ]
    tout = _dense(em.buffer(math.prod(shape) * em.width), shape) if live else None
    # Which zeros may kill an inf or NaN (structural ones): the partial's, the tangent's, and
    # an argument's rows that a structural zero partial emptied (sqrt(maximum(z, 0)) where z < 0).
    kills = {k: _kills(em, n, k) for k, _, partial in live if not partial.is_Number}
    arg_rows = {k: _broadcast(args[k].zero_rows, shape) for k, _, _ in live if args[k].zero_rows is not None}
    kinked = {k: em.structure.kink(n, k) for k, (p_kills, _) in kills.items() if p_kills}
    kinked = {k: c for k, c in kinked.items() if c is not sympy.false}
    zero_rows = None
    if live and tout is not None and _rows_read(em, n) and any(kills.get(k, (False,))[0] for k, _, _ in live):
        zero_rows = _dense(em.buffer(math.prod(shape)), shape)  # 1.0 where the row is a structural 0

    lanes = vecmath.lanes("float64")
    vectors = (
        lanes > 1
        and len(shape) > 0
        and shape[-1] >= lanes
        and all(v.strides[-1] in (0, 1) or isinstance(v.base, tuple) for v in views)
    )

    def load(v, idxs):
        if len(idxs) == 1:
            return em.load(v, idxs[0])
        vtype = ir.VectorType(DOUBLE, len(idxs))
        if isinstance(v.base, tuple):
            return ir.Constant(vtype, v.base[1])
        if v.strides[-1] == 0:
            return em.splat(em.load(v, idxs[0]), vtype)
        ptr = em.pointer(em.address(v, idxs[0]), vtype)
        return b.load(ptr, typ=vtype, align=8)

    def body(idxs):
        """Elements ``idxs`` (consecutive along the last axis) at once, as SIMD lanes."""
        n = len(idxs)
        lane = (lambda x, k: x) if n == 1 else (lambda x, k: b.extract_element(x, ir.Constant(I32, k)))
        env = {}
        for s, v, is_mask in zip(syms, views, masks, strict=True):
            x = load(v, idxs)
            env[s] = b.fcmp_unordered("!=", x, ir.Constant(x.type, 0.0)) if is_mask else x
        lw = _Lowerer(module, b, DOUBLE, env, n)

        def put(x, view):
            if n == 1:
                em.store(x, view, idxs[0])
            else:
                b.store(x, em.pointer(em.address(view, idxs[0]), x.type), align=8)

        put(lw.as_float(lw.lower(expr)), out)
        for k, view in (partials_out or {}).items():
            put(lw.as_float(lw.lower(partials[k])), view)
        if tout is None:
            return
        terms = []
        for k, tv, partial in live:
            p = lw.as_float(lw.lower(partial))
            if partial.is_Number:
                terms.append((p, tv, None, None))
                continue
            zero = b.fcmp_ordered("==", p, lw.const(0.0))
            infinite = b.fcmp_unordered(">=", lw.call("llvm.fabs", True, [p]), lw.const(math.inf))
            row = None
            if k in arg_rows:
                row = b.fcmp_ordered("!=", load(arg_rows[k], idxs), ir.Constant(p.type, 0.0))
            killing = zero  # a structural zero: not at the partial's kink (relu'(0) is a choice)
            if k in kinked:
                killing = b.and_(zero, b.not_(lw.lower(kinked[k])))
            terms.append((p, tv, (killing, infinite, *kills[k], row), zero))
        if zero_rows is not None:  # a row is structurally 0 where every term's is
            empty, no = None, ir.Constant(I1, 0) if n == 1 else ir.Constant(ir.VectorType(I1, n), [0] * n)
            for _, _, f, _ in terms:
                here = no if f is None or not f[2] else f[0]
                if f is not None and f[4] is not None:
                    here = b.or_(here, f[4])
                empty = here if empty is None else b.and_(empty, here)
            put(b.uitofp(empty, DOUBLE if n == 1 else ir.VectorType(DOUBLE, n)), zero_rows)
        for k, idx in enumerate(idxs):
            # Mostly every partial is finite and nonzero: plain products. Else the exact rule
            # (a zero partial kills any tangent, an inf/NaN one only nonzero tangents) on a
            # branch of its own, so that the common case carries no masks.
            checks = [b.not_(b.or_(lane(z, k), lane(f[1], k))) for _, _, f, z in terms if f is not None]

            def rows(exact, idx=idx, k=k):
                def chunk(c0, vtype):
                    acc = None
                    for p, tv, flags, _ in terms:
                        t = em.load_row(tv, idx, c0, vtype)
                        term = b.fmul(em.splat(lane(p, k), vtype), t)
                        if exact and flags is not None:
                            zero, infinite = (lane(f, k) for f in flags[:2])
                            if flags[4] is not None and not flags[3]:  # a row a structural 0 emptied
                                infinite = b.and_(infinite, lane(flags[4], k))
                            if flags[3] or flags[4] is not None:  # the tangent's zeros are structural
                                t_zero = b.fcmp_ordered("==", t, em.zeros(vtype))
                                infinite = em.splat(
                                    b.zext(infinite, ir.IntType(8)), ir.VectorType(ir.IntType(8), vtype.count)
                                )
                                kill = b.and_(b.trunc(infinite, ir.VectorType(I1, vtype.count)), t_zero)
                                term = b.select(kill, em.zeros(vtype), term)
                            if flags[2]:  # the partial's are
                                term = b.select(zero, em.zeros(vtype), term)
                        acc = term if acc is None else b.fadd(acc, term)
                    if exact and em.guards:  # a contraction after it checks for what this makes
                        em.taint(em.nonfinite(acc))
                    em.store_row(acc, tout, idx, c0)

                em.chunks(chunk)

            if not checks:
                rows(False)
                continue
            ok = checks[0]
            for c in checks[1:]:
                ok = b.and_(ok, c)
            with b.if_else(ok) as (plain, exact):
                with plain:
                    rows(False)
                with exact:
                    rows(True)

    if not vectors:
        em.nest(shape, lambda idx, c: (body([idx]), [])[1])
        return Node(out, tout, mask, zero_rows)
    full, rest = divmod(shape[-1], lanes)

    def outer(idx, c):
        def step(i, c):
            base = b.mul(i, ir.Constant(I64, lanes))
            body([[*idx, b.add(base, ir.Constant(I64, k))] for k in range(lanes)])
            return []

        em.loop(full, step)
        for k in range(rest):
            body([[*idx, ir.Constant(I64, full * lanes + k)]])
        return []

    em.nest(shape[:-1], outer)
    return Node(out, tout, mask, zero_rows)


def _rows_read(em, n) -> bool:
    """Whether an elementwise reader of node ``n`` has a partial in it that can be inf or NaN
    (it then asks which of ``n``'s tangent rows are structural zeros)."""
    graph = em.graph
    return any(
        graph.eqns[r][0] in ELEMENTWISE and finiteness.infinite_partial(graph, r, n)
        for r in set(em.structure.readers.get(n, ()))
    )


def _scalar(em, op, args, params, shape, mask, module, n):
    value = math.nan if params[0] == "nan" else float(params[0])
    return Node(View(("scalar", value), 0, (), ()), None, mask)


def _cast(em, op, args, params, shape, mask, module, n):
    (x,) = args
    if mask and not x.mask:
        zero = Node(View(("scalar", 0.0), 0, (), ()), None)
        return _elementwise(em, "not_equal", [x, zero], (), shape, mask, module, n)
    return Node(x.value, x.tangent if not mask else None, mask)


_OPS = {
    "const": _const,
    "scalar": _scalar,
    "cast": _cast,
    "reshape": _reshape,
    "transpose": _same_map(lambda v, p, s: _transpose(v, p[0])),
    "broadcast_to": _same_map(lambda v, p, s: _broadcast(v, s)),
    "getitem": _getitem,
    "setitem": _setitem,
    "concat": _join("concat"),
    "stack": _join("stack"),
    "sum": _sum,
    "logsumexp": _reduction("logsumexp"),
    "max": _reduction("max"),
    "min": _reduction("min"),
    "matmul": _matmul,
    "einsum": _einsum,
}


# --- building -----------------------------------------------------------------------------------


def compile_object(graph, wrt, value, mode: str = "jacobian"):
    """``(object code, IR, optimised IR, layout)`` of the loop kernel and its batch loop (a
    Jacobian, or with ``mode="jvp"`` Jacobian-vector products)."""
    from ..backend import runtime

    module = runtime._module("symjac_kernel")
    shapes, n64 = build_module(module, graph, wrt, value, mode=mode)
    # The loops are vectorised by hand already. Unrolling pays where a tangent row is one vector
    # (a 4-6-3 MLP: 2.5x the batch throughput); over rows of many vectors it is most of LLVM's
    # time and gains nothing (N-body N=20, 120 columns: 2.2 s to build with it, 0.86 s without).
    specs = _input_specs(graph)
    unroll = mode == "jacobian" and sum(math.prod(specs[j][0]) for j in wrt) <= WHOLE_ROW
    return native(module, graph, shapes, n64, unroll, products=product_shapes(graph, wrt, mode))


def native(module, graph, shapes, n64: int, unroll=True, full=True, products=(), vectorize=True):
    """``(object code, IR, optimised IR, layout)`` of ``module``'s kernel, whose results
    (float64, of ``shapes``, ``n64`` doubles in all) follow one another, plus its batch loop;
    ``unroll`` lets LLVM unroll its loops; unless ``full`` the kernel writes only some of the
    results' elements, the others to be zeroed first (the batch loop zeroes each point's);
    ``products``: the shapes of the vectors read after the inputs; ``vectorize`` lets LLVM
    vectorise loops (the contractions' sums of values)."""
    from ..backend import runtime
    from ..backend.codegen import add_batch_loop

    layout = result_layout(graph, shapes, full, products)
    assert layout.n64 == n64
    strides = runtime._strides(layout)
    add_batch_loop(module, "symjac_kernel", strides, "float64", inline=False, clear=not layout.full)
    obj, text, optimized = runtime._native(module, loop_vectorization=vectorize, loop_unrolling=unroll)
    vecmath.load_libmvec()  # vector math calls must resolve when the engine loads the object
    return obj, text, optimized, layout


def result_layout(graph, shapes, full: bool = True, products=()):
    """The Layout of a loop kernel whose float64 results of ``shapes`` follow one another (its
    inputs: the graph's, then vectors of the shapes ``products``)."""
    from ..backend import runtime

    slots, offset = [], 0
    for shape in shapes:
        slots.append(runtime.ResultSlot(0, offset, tuple(shape)))
        offset += math.prod(shape)
    in_shapes = tuple(tuple(shape) for shape, _ in _input_specs(graph)) + tuple(map(tuple, products))
    return runtime.Layout(in_shapes, tuple(slots), offset, 0, "float64", full=full)


def work(graph, wrt, mode: str = "jacobian", width: int | None = None) -> int:
    """About how many scalar operations one point costs (threads split batches by it), each
    element carrying a row of ``width`` derivatives (the tangents' when None)."""
    if width is None:
        specs = _input_specs(graph)
        width = 1 if mode == "jvp" else sum(math.prod(specs[j][0]) for j in wrt)
    total = 0
    for n, (op, args, _) in enumerate(graph.eqns):
        size = math.prod(graph.shape(n))
        if op in ("matmul", "einsum", "sum") and args:
            size = max(size, max(math.prod(graph.shape(a)) for a in args if type(a) is int))
        total += size * (1 + width)
    return total
