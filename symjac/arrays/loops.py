"""Loop kernels for the array road: a recorded graph's forward-mode Jacobian lowered to LLVM loops.

Where the element road expands every tensor element into SymPy and compiles a straight-line
program whose size grows with the elements, here each array operation of the recorded graph
becomes one loop nest, so the build grows with the number of operations. Every node gets a value
array and, when it depends on a differentiated input, a tangent array of shape
``node.shape + (width,)`` (``width``: the differentiated inputs' total size), tangent axis
innermost so that its loops are SIMD vectors:

- elementwise ops: the op table's scalar formula and its SymPy partials
  (:func:`symjac.arrays.elementwise.formulas`) lowered inside the loop body by the element road's
  own lowering (:class:`symjac.backend.codegen._Lowerer`); a zero partial kills an inf/NaN tangent and
  a zero tangent an inf/NaN partial, as on the other roads;
- matmul, einsum and sums: contraction loops whose tangent accumulators are vectors;
- logsumexp, max and min: reductions with their exact weights (softmax; ties split evenly);
- reshape, transpose, broadcasting and basic slicing: strided views, no code;
- indexing with index arrays, and index assignment: a gather (a scatter) through a table of
  positions computed when building;
- concatenation and stack: copies.

The kernel has the element road's signature, ``void symjac_kernel(in, out64, out32)``, and the
same batch loop over points (``symjac_kernel_batch``), so :class:`symjac.compiled.CompiledFunction`
calls it unchanged. Captured constants are global arrays that the loops read through pointers.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import llvmlite.ir as ir
import numpy as np
import sympy

from ..backend import vecmath
from ..backend.codegen import _Lowerer
from ..elements.derive import _input_specs
from ..trace.ops import ELEMENTWISE, decode_index
from . import finiteness
from .elementwise import Unsupported, formulas
from .sparse import _positions

F64 = np.dtype(np.float64)
DOUBLE = ir.DoubleType()
I64 = ir.IntType(64)
I32 = ir.IntType(32)
I1 = ir.IntType(1)
I8 = ir.IntType(8)
PTR = ir.PointerType()
CHUNK = 8  # tangent lanes per vector when the tangent row is longer than WHOLE_ROW
WHOLE_ROW = 16  # tangent rows up to this long are one vector
MAX_ROWS = 4  # results per register block of a contraction
ACCUMULATOR_LANES = 32  # doubles of accumulators per register block (8 AVX2 registers)
STACK_BYTES = 1 << 18  # scratch arrays up to this total live on the stack, larger ones on the heap
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


# --- strided views ------------------------------------------------------------------------------


@dataclass(frozen=True)
class View:
    """Elements ``base[offset + sum(i_k * strides[k])]`` for ``i`` over ``shape``; a tangent
    view's element is a row of ``width`` doubles starting ``width`` times further on."""

    base: object  # an LLVM pointer, or ("scalar", value) for a constant
    offset: int
    shape: tuple
    strides: tuple

    @property
    def contiguous(self) -> bool:
        return self.strides == _c_strides(self.shape)


def _c_strides(shape) -> tuple:
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step if n != 1 else 0)
        step *= n
    return tuple(reversed(strides))


def _dense(base, shape) -> View:
    return View(base, 0, tuple(shape), _c_strides(shape))


def _broadcast(view: View, shape) -> View:
    """``view`` read as ``shape`` (NumPy's broadcasting: stride 0 along new and size-1 axes)."""
    lead = len(shape) - len(view.shape)
    strides = [0] * lead + [0 if n == 1 else s for n, s in zip(view.shape, view.strides, strict=True)]
    return View(view.base, view.offset, tuple(shape), tuple(strides))


def _transpose(view: View, perm) -> View:
    return View(
        view.base, view.offset, tuple(view.shape[p] for p in perm), tuple(view.strides[p] for p in perm)
    )


def _index(view: View, index) -> View:
    """A view of ``view[index]`` for a basic index (ints, slices, None, Ellipsis)."""
    used = sum(1 for k in index if k is not None and k is not Ellipsis)
    if any(k is Ellipsis for k in index):
        at = next(i for i, k in enumerate(index) if k is Ellipsis)
        index = index[:at] + (slice(None),) * (len(view.shape) - used) + index[at + 1 :]
    index = tuple(index) + (slice(None),) * (len(view.shape) - sum(1 for k in index if k is not None))
    offset, shape, strides, axis = view.offset, [], [], 0
    for k in index:
        if k is None:
            shape.append(1)
            strides.append(0)
            continue
        n, s = view.shape[axis], view.strides[axis]
        axis += 1
        if isinstance(k, slice):
            start, stop, step = k.indices(n)
            size = len(range(start, stop, step))
            offset += start * s if size else 0
            shape.append(size)
            strides.append(s * step if size > 1 else 0)
        else:
            i = int(k)
            offset += (i + n if i < 0 else i) * s
    return View(view.base, offset, tuple(shape), tuple(strides))


# --- IR helpers ---------------------------------------------------------------------------------


class _Emitter:
    def __init__(self, module, fn, width):
        self.module = module
        self.fn = fn
        self.width = width
        self.entry = fn.append_basic_block("entry")
        self.b = ir.IRBuilder(fn.append_basic_block("body"))
        self.heap: list = []
        self.stack_bytes = 0
        self._n = 0
        self._flag_ptr = None
        self.guards = frozenset()  # the contractions that check for an inf or NaN (finiteness)

    def label(self, what):
        self._n += 1
        return f"{what}{self._n}"

    # Loops. ``body(i, carried)`` returns the new carried values; the loop returns the final ones.
    def loop(self, n: int, body, carried=()):
        b = self.b
        if n == 1:
            return body(ir.Constant(I64, 0), list(carried))
        pre = b.block
        head = self.fn.append_basic_block(self.label("head"))
        inner = self.fn.append_basic_block(self.label("loop"))
        done = self.fn.append_basic_block(self.label("done"))
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(I64)
        i.add_incoming(ir.Constant(I64, 0), pre)
        phis = []
        for c in carried:
            p = b.phi(c.type)
            p.add_incoming(c, pre)
            phis.append(p)
        b.cbranch(b.icmp_signed("<", i, ir.Constant(I64, n)), inner, done)
        b.position_at_end(inner)
        new = body(i, list(phis))
        i.add_incoming(b.add(i, ir.Constant(I64, 1)), b.block)
        for p, v in zip(phis, new, strict=True):
            p.add_incoming(v, b.block)
        b.branch(head)
        b.position_at_end(done)
        return list(phis)

    def nest(self, shape, body, carried=()):
        """Loops over ``shape`` (row-major); ``body(indices, carried)``."""

        def level(k, idx, carry):
            if k == len(shape):
                return body(idx, carry)
            return self.loop(shape[k], lambda i, c: level(k + 1, [*idx, i], c), carry)

        return level(0, [], list(carried))

    def blocks(self, shape, rows: int, block, start: int = 0):
        """``block(indices)`` over ``shape``, its last axis from ``start`` on in groups of ``rows``
        consecutive indices: a loop over whole groups, then the rest as one group."""
        full, rest = divmod(shape[-1] - start, rows)

        def outer(idx, c):
            def blocked(i, c):
                first = self.add(self.mul(i, rows), ir.Constant(I64, start))
                block([[*idx, self.add(first, ir.Constant(I64, r))] for r in range(rows)])
                return []

            self.loop(full, blocked)
            if rest:
                block([[*idx, ir.Constant(I64, start + full * rows + r)] for r in range(rest)])
            return []

        self.nest(shape[:-1], outer)

    def chunks(self, body):
        """``body(c, vector type)`` over the tangent row in vectors; ``c`` its first lane."""
        w = self.width
        if w <= WHOLE_ROW:
            body(ir.Constant(I64, 0), ir.VectorType(DOUBLE, w))
            return
        full, rest = divmod(w, CHUNK)
        vec = ir.VectorType(DOUBLE, CHUNK)
        self.loop(full, lambda i, c: (body(self.b.mul(i, ir.Constant(I64, CHUNK)), vec), [])[1])
        if rest:
            body(ir.Constant(I64, full * CHUNK), ir.VectorType(DOUBLE, rest))

    # Memory.
    def buffer(self, n: int):
        """A fresh scratch array of ``n`` doubles (its own allocation, so loads and stores of
        different arrays never alias)."""
        n = max(n, 1)
        if self.stack_bytes + 8 * n <= STACK_BYTES:
            self.stack_bytes += 8 * n
            b = ir.IRBuilder(self.entry)
            ptr = b.alloca(DOUBLE, size=ir.Constant(I64, n))
            ptr.align = 64
            return ptr
        malloc = self._declare("malloc", PTR, [I64])
        b = ir.IRBuilder(self.entry)
        ptr = b.call(malloc, [ir.Constant(I64, 8 * n)])
        self.heap.append(ptr)
        return ptr

    def zero(self, ptr, n: int, start: int = 0):
        """Store 0.0 to doubles ``start .. start + n`` of ``ptr``."""
        from ..backend.codegen import _memory_intrinsic

        if n <= 0:
            return
        at = self.b.gep(ptr, [ir.Constant(I64, start)], source_etype=DOUBLE) if start else ptr
        memset = _memory_intrinsic(self.module, "memset", 8 * n)
        zero, volatile = ir.Constant(ir.IntType(8), 0), ir.Constant(ir.IntType(1), 0)
        self.b.call(memset, [at, zero, ir.Constant(I64, 8 * n), volatile])

    def _declare(self, name, ret, args):
        return self.module.globals.get(name) or ir.Function(self.module, ir.FunctionType(ret, args), name)

    def finish(self):
        b = ir.IRBuilder(self.entry)
        b.branch(self.fn.blocks[1])
        if self.heap:
            free = self._declare("free", ir.VoidType(), [PTR])
            for ptr in self.heap:
                self.b.call(free, [ptr])
        self.b.ret_void()

    def address(self, view: View, idx, scale: int = 1, extra=None):
        off = ir.Constant(I64, view.offset)
        for i, s in zip(idx, view.strides, strict=True):
            if s:
                off = self.add(off, self.mul(i, s))
        off = self.mul(off, scale)
        if extra is not None:
            off = self.add(off, extra)
        return self.b.gep(view.base, [off], source_etype=DOUBLE)

    # Index arithmetic, folded where an operand is a constant: a third of a kernel's instructions
    # were adds of 0 and multiplies by 1, which LLVM folds, but only after printing and parsing them.
    def add(self, x, y):
        if isinstance(y, ir.Constant) and not isinstance(x, ir.Constant):
            x, y = y, x
        if isinstance(x, ir.Constant):
            if isinstance(y, ir.Constant):
                return ir.Constant(I64, x.constant + y.constant)
            if x.constant == 0:
                return y
        return self.b.add(x, y)

    def mul(self, x, k: int):
        if k == 1:
            return x
        if isinstance(x, ir.Constant):
            return ir.Constant(I64, x.constant * k)
        return self.b.mul(x, ir.Constant(I64, k))

    def load(self, view: View, idx):
        if isinstance(view.base, tuple):
            return ir.Constant(DOUBLE, view.base[1])
        return self.b.load(self.address(view, idx), typ=DOUBLE)

    def store(self, value, view: View, idx):
        self.b.store(value, self.address(view, idx))

    def load_row(self, tview: View, idx, c, vtype):
        ptr = self.pointer(self.address(tview, idx, self.width, c), vtype)
        return self.b.load(ptr, typ=vtype, align=8)

    def store_row(self, value, tview: View, idx, c):
        ptr = self.pointer(self.address(tview, idx, self.width, c), value.type)
        self.b.store(value, ptr, align=8)

    def pointer(self, address, vtype):
        """``address`` as a pointer to ``vtype`` (a bitcast only where its type says otherwise)."""
        target = vtype.as_pointer()
        return address if address.type == target else self.b.bitcast(address, target)

    def splat(self, x, vtype):
        b = self.b
        one = b.insert_element(ir.Constant(ir.VectorType(x.type, 1), ir.Undefined), x, ir.Constant(I32, 0))
        mask = ir.Constant(ir.VectorType(I32, vtype.count), [0] * vtype.count)
        return b.shuffle_vector(one, ir.Constant(one.type, ir.Undefined), mask)

    def fma(self, a, x, acc):
        """``a * x + acc`` fused (one rounding, as BLAS and JAX's contractions)."""
        name = f"llvm.fma.v{x.type.count}f64" if isinstance(x.type, ir.VectorType) else "llvm.fma.f64"
        fn = self._declare(name, x.type, [x.type] * 3)
        return self.b.call(fn, [a, x, acc])

    def zeros(self, vtype):
        return ir.Constant(vtype, None)

    def finite(self, view: View):
        """An i1, true where every element of ``view`` is finite: ``x * 0`` is 0 for finite ``x``,
        NaN for inf or NaN, so one sum of them tells (in any order)."""
        b, zero = self.b, ir.Constant(DOUBLE, 0.0)

        def add(idx, carry):
            total = b.fadd(carry[0], b.fmul(self.load(view, idx), zero))
            total.flags.append("reassoc")
            return [total]

        (total,) = self.nest(view.shape, add, [zero])
        return b.fcmp_ordered("==", total, zero)

    # Exactness. Tangents and adjoints are finite until an inf or NaN partial meets them (sqrt at
    # 0): the elementwise rules' exact branches say so here, and contractions, whose fast
    # products would turn a zero times that inf into NaN, then take an exact loop of their own.
    def taint(self, cond=None):
        """Record that a tangent or adjoint may hold an inf or NaN from here on (where ``cond``)."""
        flag, b = self._flag(), self.b
        value = ir.Constant(I8, 1) if cond is None else b.or_(b.load(flag, typ=I8), b.zext(cond, I8))
        b.store(value, flag)

    def clean(self):
        """An i1: no tangent or adjoint has met an inf or NaN partial yet (see ``taint``)."""
        return self.b.icmp_unsigned("==", self.b.load(self._flag(), typ=I8), ir.Constant(I8, 0))

    def _flag(self):
        if self._flag_ptr is None:
            b = ir.IRBuilder(self.entry)
            self._flag_ptr = b.alloca(I8)
            b.store(ir.Constant(I8, 0), self._flag_ptr)
        return self._flag_ptr

    def cold(self, views, body):
        """``body(emitter, views)`` in a function of its own, called here with the views' arrays:
        marked cold and never inlined nor optimised, so a path that only inf or NaN values take
        costs LLVM little (and the fast path not a thing)."""
        bases = []
        for v in views:
            if v is not None and not isinstance(v.base, tuple) and all(v.base is not x for x in bases):
                bases.append(v.base)
        fn = ir.Function(self.module, ir.FunctionType(ir.VoidType(), [PTR] * len(bases)),
                         self.module.get_unique_name("symjac_exact"))  # fmt: skip
        fn.linkage = "internal"
        for attribute in ("cold", "noinline", "optnone", "nounwind"):
            fn.attributes.add(attribute)
        rebased = []
        for v in views:
            if v is None or isinstance(v.base, tuple):
                rebased.append(v)
                continue
            arg = fn.args[next(k for k, x in enumerate(bases) if v.base is x)]
            rebased.append(View(arg, v.offset, v.shape, v.strides))
        sub = _Emitter(self.module, fn, self.width)
        body(sub, rebased)
        sub.finish()
        self.b.call(fn, bases)


# --- the program --------------------------------------------------------------------------------


@dataclass
class Node:
    value: View
    tangent: View | None
    mask: bool = False


def build_module(module, graph, wrt, value: bool, name="symjac_kernel", mode="jacobian"):
    """Add ``void name(in, out64, out32)`` computing ``graph``'s outputs' values (with ``value``)
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
    results, offset = store_values(em, outs, out64) if value else ([], 0)
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
        for _, tv, partial in live:
            p = lw.as_float(lw.lower(partial))
            if partial.is_Number:
                terms.append((p, tv, None))
                continue
            zero = b.fcmp_ordered("==", p, lw.const(0.0))
            infinite = b.fcmp_unordered(">=", lw.call("llvm.fabs", True, [p]), lw.const(math.inf))
            terms.append((p, tv, (zero, infinite)))
        for k, idx in enumerate(idxs):
            # Mostly every partial is finite and nonzero: plain products. Else the exact rule
            # (a zero partial kills any tangent, an inf/NaN one only nonzero tangents) on a
            # branch of its own, so that the common case carries no masks.
            checks = [b.not_(b.or_(lane(f[0], k), lane(f[1], k))) for _, _, f in terms if f is not None]

            def rows(exact, idx=idx, k=k):
                def chunk(c0, vtype):
                    acc = None
                    for p, tv, flags in terms:
                        t = em.load_row(tv, idx, c0, vtype)
                        term = b.fmul(em.splat(lane(p, k), vtype), t)
                        if exact and flags is not None:
                            zero, infinite = (lane(f, k) for f in flags)
                            t_zero = b.fcmp_ordered("==", t, em.zeros(vtype))
                            infinite = em.splat(
                                b.zext(infinite, ir.IntType(8)), ir.VectorType(ir.IntType(8), vtype.count)
                            )
                            kill = b.and_(b.trunc(infinite, ir.VectorType(I1, vtype.count)), t_zero)
                            term = b.select(kill, em.zeros(vtype), term)
                            term = b.select(zero, em.zeros(vtype), term)
                        acc = term if acc is None else b.fadd(acc, term)
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
                    if em.guards:  # a contraction downstream checks
                        infinite = [lane(f[1], k) for _, _, f in terms if f is not None]
                        any_infinite = infinite[0]
                        for x in infinite[1:]:
                            any_infinite = b.or_(any_infinite, x)
                        em.taint(any_infinite)
                    rows(True)

    if not vectors:
        em.nest(shape, lambda idx, c: (body([idx]), [])[1])
        return Node(out, tout, mask)
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
    return Node(out, tout, mask)


# --- contractions -------------------------------------------------------------------------------


def _contract(em, operands, letters, out_letters, sizes, shape, guard=False):
    """``einsum(letters -> out_letters)`` of ``operands`` (Nodes), with its tangent by the
    product rule; ``sizes`` maps each letter to its extent; with ``guard`` (see finiteness),
    points where an inf or NaN may meet a zero take an exact loop.

    The innermost output axis is register-blocked: ``ROWS`` results at a time, each with its
    own accumulators, so that the fused multiply-adds of one result do not wait on each other
    and a tangent row loaded once serves them all. Each result still sums its terms in order.
    """
    b = em.b
    summed = [c for c in dict.fromkeys("".join(letters)) if c not in out_letters]
    out = _dense(em.buffer(math.prod(shape)), shape)
    live = [k for k, a in enumerate(operands) if a.tangent is not None]
    tout = _dense(em.buffer(math.prod(shape) * em.width), shape) if live else None

    def views(kind):
        # Each operand as a view over (out letters + summed letters): stride 0 where absent.
        order = list(out_letters) + summed
        result = []
        for a, lets in zip(operands, letters, strict=True):
            v = getattr(a, kind)
            if v is None:
                result.append(None)
                continue
            strides = dict.fromkeys(order, 0)
            for c, n, s in zip(lets, v.shape, v.strides, strict=True):
                strides[c] += s if n != 1 or sizes[c] == 1 else 0
            result.append(
                View(v.base, v.offset, tuple(sizes[c] for c in order), tuple(strides[c] for c in order))
            )
        return result

    vals, tans = views("value"), views("tangent")
    inner = [sizes[c] for c in summed]
    row = min(em.width, WHOLE_ROW if em.width <= WHOLE_ROW else CHUNK)
    rows = max(1, min(MAX_ROWS, ACCUMULATOR_LANES // max(row, 1)))

    def block(idxs):
        """The results at output indices ``idxs`` (a list), computed together; with one tangent
        vector per row the values accumulate in the same loop, beside the vector work."""
        together = tout is not None and em.width <= WHOLE_ROW
        vtype = ir.VectorType(DOUBLE, em.width) if together else None

        def values(jdx, carry):
            new = []
            for idx, acc in zip(idxs, carry, strict=True):
                xs = [em.load(v, idx + jdx) for v in vals]
                prod = xs[0]
                for x in xs[1:]:
                    prod = b.fmul(prod, x)
                    prod.flags.append("contract")
                total = b.fadd(acc, prod)
                total.flags += ["reassoc", "contract"]
                new.append(total)
            return new

        def tangents(jdx, carry, c0, vtype):
            new = []
            for idx, acc in zip(idxs, carry, strict=True):
                full = idx + jdx
                for k in live:
                    others = [em.load(v, full) for m, v in enumerate(vals) if m != k]
                    t = em.load_row(tans[k], full, c0, vtype)
                    if not others:
                        acc = b.fadd(acc, t)
                        continue
                    coef = others[0]
                    for x in others[1:]:
                        coef = b.fmul(coef, x)
                    acc = em.fma(em.splat(coef, vtype), t, acc)
                new.append(acc)
            return new

        zero, n = ir.Constant(DOUBLE, 0.0), len(idxs)
        c0 = ir.Constant(I64, 0)
        if together:
            both = em.nest(
                inner,
                lambda jdx, c: values(jdx, c[:n]) + tangents(jdx, c[n:], c0, vtype),
                [zero] * n + [em.zeros(vtype)] * n,
            )
            for idx, total, acc in zip(idxs, both[:n], both[n:], strict=True):
                em.store(total, out, idx)
                em.store_row(acc, tout, idx, c0)
            return
        totals = em.nest(inner, values, [zero] * n)
        for idx, total in zip(idxs, totals, strict=True):
            em.store(total, out, idx)
        if tout is None:
            return

        def chunk(c0, vtype):
            accs = em.nest(inner, lambda jdx, c: tangents(jdx, c, c0, vtype), [em.zeros(vtype)] * n)
            for idx, acc in zip(idxs, accs, strict=True):
                em.store_row(acc, tout, idx, c0)

        em.chunks(chunk)

    def results():
        if not shape or rows == 1 or shape[-1] < 2:
            em.nest(shape, lambda idx, c: (block([idx]), [])[1])
        else:
            em.blocks(shape, rows, block)

    if not (guard and live):
        results()
        return Node(out, tout)
    # Where a tangent or a factor is inf or NaN, its products with the other's zeros are NaN,
    # but an exact zero times anything contributes nothing (the element road's and the sparse
    # road's rule): such points take a scalar loop with that rule, the rest no masks at all.
    with b.if_else(_contraction_finite(em, operands, live)) as (fast, exact):
        with fast:
            results()
        with exact:
            n = len(vals)
            em.cold(
                [*vals, *tans, out, tout],
                lambda sub, vs: _exact(sub, vs[:n], vs[n : 2 * n], live, inner, shape, vs[-2], vs[-1]),
            )
    return Node(out, tout)


def _contraction_finite(em, operands, live):
    """An i1 saying a contraction's fast tangent products are exact: no tangent has met an inf or
    NaN partial, and the factors computed from the inputs are finite."""
    b, ok = em.b, em.clean()
    for m, a in enumerate(operands):
        if a.tangent is not None and any(k != m for k in live):
            ok = b.and_(ok, em.finite(a.value))
    return ok


def _exact(em, vals, tans, live, inner, shape, out, tout):
    """A contraction's values and tangent one double at a time, each product of a zero with an
    inf or NaN in the tangent being zero; the others are the fast loops' multiply-adds, in order."""
    b, zero = em.b, ir.Constant(DOUBLE, 0.0)

    def product(views, full):
        xs = [em.load(v, full) for v in views]
        result = xs[0]
        for x in xs[1:]:
            result = b.fmul(result, x)
        return result

    def result(idx, carry):
        (total,) = em.nest(inner, lambda jdx, c: [b.fadd(c[0], product(vals, idx + jdx))], [zero])
        em.store(total, out, idx)

        def column(j, carry):
            def step(jdx, carry):
                (acc,) = carry
                full = idx + jdx
                for k in live:
                    t = b.load(em.address(tans[k], full, em.width, j), typ=DOUBLE)
                    if len(vals) == 1:
                        acc = b.fadd(acc, t)
                        continue
                    coef = product([v for m, v in enumerate(vals) if m != k], full)
                    kill = b.or_(b.fcmp_ordered("==", coef, zero), b.fcmp_ordered("==", t, zero))
                    acc = em.fma(b.select(kill, zero, coef), b.select(kill, zero, t), acc)
                return [acc]

            (acc,) = em.nest(inner, step, [zero])
            b.store(acc, em.address(tout, idx, em.width, j))
            return []

        em.loop(em.width, column)
        return []

    em.nest(shape, result)


def _einsum(em, op, args, params, shape, mask, module, n):
    letters, out, sizes = einsum_letters(params[0], [a.value.shape for a in args])
    return _contract(em, args, letters, out, sizes, shape, guard=n in em.guards)


def _matmul(em, op, args, params, shape, mask, module, n):
    letters, out, sizes = matmul_letters(*(a.value.shape for a in args))
    return _contract(em, args, letters, out, sizes, shape, guard=n in em.guards)


def einsum_letters(spec: str, shapes) -> tuple[list, str, dict]:
    """``(operands' letters, the output's, letter -> extent)`` of an explicit einsum."""
    ins, out = spec.replace(" ", "").split("->")
    letters = ins.split(",")
    if any("." in s for s in letters) or "." in out:
        raise Unsupported("einsum with an ellipsis")
    return letters, out, _extents(letters, shapes)


def matmul_letters(a_shape, b_shape) -> tuple[list, str, dict]:
    """``matmul`` as an einsum: ``(operands' letters, the output's, letter -> extent)``."""
    na, nb = len(a_shape), len(b_shape)
    batch = max(na, nb) - 2
    pool = iter("abcdefghopqrstuvwxyz")
    lead = [next(pool) for _ in range(max(batch, 0))]
    if na == 1 and nb == 1:
        la, lb, lo = "k", "k", ""
    elif na == 1:
        la, lb, lo = "k", "".join(lead[len(lead) - (nb - 2) :]) + "kn", "".join(lead) + "n"
    elif nb == 1:
        la, lb, lo = "".join(lead[len(lead) - (na - 2) :]) + "mk", "k", "".join(lead) + "m"
    else:
        la = "".join(lead[len(lead) - (na - 2) :]) + "mk"
        lb = "".join(lead[len(lead) - (nb - 2) :]) + "kn"
        lo = "".join(lead) + "mn"
    return [la, lb], lo, _extents([la, lb], [a_shape, b_shape])


def _extents(letters, shapes) -> dict:
    sizes = {}
    for shape, lets in zip(shapes, letters, strict=True):
        for c, k in zip(lets, shape, strict=True):
            sizes[c] = max(sizes.get(c, 1), k)
    return sizes


def _reduce_letters(x_shape, axes, keepdims):
    lets = "abcdefghijklmnopqrstuvwxyz"[: len(x_shape)]
    axes = tuple(a % len(x_shape) for a in axes) if axes is not None else tuple(range(len(x_shape)))
    out = "".join(c for k, c in enumerate(lets) if k not in axes)
    return lets, axes, out


def _sum(em, op, args, params, shape, mask, module, n):
    (x,) = args
    axes, keepdims = params
    lets, axes, out = _reduce_letters(x.value.shape, axes, keepdims)
    sizes = dict(zip(lets, x.value.shape, strict=True))
    node = _contract(
        em, [x], [lets], out, sizes, tuple(x.value.shape[k] for k in range(len(lets)) if k not in axes)
    )
    return _reshaped(em, node, shape)


def _reduction(kind):
    """logsumexp, max or min over axes: value, and the tangent as a weighted sum of rows (the
    softmax for logsumexp; ties split evenly for max and min, as torch's amax/amin). With
    ``partials_out`` ({0: a view of the argument's shape}) the weights are stored there too."""

    def rule_(em, op, args, params, shape, mask, module, n, partials_out=None):
        (x,) = args
        axes, keepdims = params
        lets, axes, _ = _reduce_letters(x.value.shape, axes, keepdims)
        kept = tuple(k for k in range(len(lets)) if k not in axes)
        kshape = tuple(x.value.shape[k] for k in kept)
        inner = [x.value.shape[k] for k in axes]
        b = em.b
        out = _dense(em.buffer(math.prod(kshape)), kshape)
        tout = _dense(em.buffer(math.prod(kshape) * em.width), kshape) if x.tangent is not None else None
        f0, f1 = ir.Constant(DOUBLE, 0.0), ir.Constant(DOUBLE, 1.0)
        lw = _Lowerer(module, b, DOUBLE, {})

        def full(idx, jdx):
            at, it_o, it_i = [], iter(idx), iter(jdx)
            for k in range(len(lets)):
                at.append(next(it_i) if k in axes else next(it_o))
            return at

        def body(idx, c):
            pick = ">" if kind != "min" else "<"

            def top(jdx, carry):
                v = em.load(x.value, full(idx, jdx))
                keep = b.fcmp_ordered(pick, carry[0], v)
                nan = b.fcmp_unordered("uno", carry[0], carry[0])
                return [b.select(b.or_(keep, nan), carry[0], v)]

            start = ir.Constant(DOUBLE, -math.inf if kind != "min" else math.inf)
            (m,) = em.nest(inner, top, [start])
            if kind == "logsumexp":
                finite = b.fcmp_ordered("<", lw.call("llvm.fabs", True, [m]), ir.Constant(DOUBLE, math.inf))
                shift = b.select(finite, m, f0)

                def weight(jdx):
                    return lw.call("llvm.exp", True, [b.fsub(em.load(x.value, full(idx, jdx)), shift)])

                (total,) = em.nest(inner, lambda jdx, c: [b.fadd(c[0], weight(jdx))], [f0])
                em.store(b.fadd(lw.call("llvm.log", True, [total]), shift), out, idx)
                scale = b.fdiv(f1, total)
            else:
                em.store(m, out, idx)

                def tie(jdx):
                    v = em.load(x.value, full(idx, jdx))
                    return b.uitofp(b.fcmp_ordered("==", v, m), DOUBLE)

                (ties,) = em.nest(inner, lambda jdx, c: [b.fadd(c[0], tie(jdx))], [f0])
                scale = b.fdiv(f1, ties)
                weight = tie
            if partials_out:

                def put(jdx, c):
                    em.store(b.fmul(weight(jdx), scale), partials_out[0], full(idx, jdx))
                    return []

                em.nest(inner, put)
            if tout is None:
                return []

            def chunk(c0, vtype):
                def step(jdx, carry):
                    w = b.fmul(weight(jdx), scale)
                    t = em.load_row(x.tangent, full(idx, jdx), c0, vtype)
                    return [em.fma(em.splat(w, vtype), t, carry[0])]

                (acc,) = em.nest(inner, step, [em.zeros(vtype)])
                em.store_row(acc, tout, idx, c0)

            em.chunks(chunk)
            return []

        em.nest(kshape, body)
        return _reshaped(em, Node(out, tout), shape)

    return rule_


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


def _const(em, op, args, params, shape, mask, module, n):
    dt, shape_, data = params
    values = np.frombuffer(data, dtype=np.dtype(dt)).reshape(shape_).astype(F64)
    if values.size == 1:
        return Node(View(("scalar", float(values.flat[0])), 0, tuple(shape_), (0,) * len(shape_)), None, mask)
    if values.size >= DATA_FROM:  # read through a pointer to the array (see bind_data)
        g = _external(module, ir.ArrayType(DOUBLE, values.size), _data_symbol(values))
        return Node(_dense(g, tuple(shape_)), None, mask)
    raw = bytearray(np.ascontiguousarray(values).astype("<f8").tobytes())
    typ = ir.ArrayType(ir.IntType(8), len(raw))
    g = ir.GlobalVariable(module, typ, name=f"symjac_const{n}")
    g.global_constant = True
    g.linkage = "internal"
    g.initializer = ir.Constant(typ, raw)
    g.align = 64
    return Node(_dense(g, tuple(shape_)), None, mask)


# Captured arrays from this size are not copied into the IR (printing a 256 x 256 layer as IR
# text took 0.1 s): the kernel names an external symbol, bound to a float64 copy held here.
DATA_FROM = 64
_DATA: dict = {}  # symbol -> the array it names, alive for the process (kernels may outlive)


def _external(module, typ, name: str):
    """The global ``name`` (declared once per module however often it is read)."""
    return module.globals.get(name) or ir.GlobalVariable(module, typ, name=name)


def _data_symbol(values: np.ndarray) -> str:
    """The symbol naming a float64 array, or an int32 one (index tables), bound to a copy."""
    import hashlib

    import llvmlite.binding as llvm

    kind = "index" if np.asarray(values).dtype.kind in "iu" else "data"
    data = np.ascontiguousarray(values, dtype="<i4" if kind == "index" else "<f8")
    name = f"symjac_{kind}_{hashlib.sha256(data.tobytes()).hexdigest()[:32]}_{data.size}"
    if name not in _DATA:
        _DATA[name] = data = data.copy()
        llvm.add_symbol(name, data.ctypes.data)
    return name


def bind_data(graph) -> set:
    """Bind the symbols of ``graph``'s large captured arrays and index tables, before loading a
    kernel's object code (a cached one names them but does not hold them); returns the symbols."""
    names = set()
    for n, (op, args, params) in enumerate(graph.eqns):
        if op == "const":
            dt, shape_, data = params
            values = np.frombuffer(data, dtype=np.dtype(dt)).reshape(shape_).astype(F64)
            if values.size >= DATA_FROM:
                names.add(_data_symbol(values))
        elif op == "getitem":
            index = decode_index(params[0])
            if any(isinstance(k, np.ndarray) for k in index):
                positions = gather_positions(graph.shape(args[0]), index)
                if positions.size >= DATA_FROM:
                    names.add(_data_symbol(positions.astype(np.int32)))
        elif op == "setitem":
            index = decode_index(params[0])
            for table in assigned_positions(graph.shape(n), graph.shape(args[1]), index):
                if table.size >= DATA_FROM:
                    names.add(_data_symbol(table.astype(np.int32)))
    return names


def _scalar(em, op, args, params, shape, mask, module, n):
    value = math.nan if params[0] == "nan" else float(params[0])
    return Node(View(("scalar", value), 0, (), ()), None, mask)


def _cast(em, op, args, params, shape, mask, module, n):
    (x,) = args
    if mask and not x.mask:
        zero = Node(View(("scalar", 0.0), 0, (), ()), None)
        return _elementwise(em, "not_equal", [x, zero], (), shape, mask, module, n)
    return Node(x.value, x.tangent if not mask else None, mask)


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


def assigned_positions(shape, y_shape, index) -> tuple[np.ndarray, np.ndarray]:
    """For ``x[index] = y`` (x of ``shape``): the flat positions assigned, and the flat position in
    y of the element each receives (in order, so that the last of repeated positions wins)."""
    places = gather_positions(shape, index)
    target = np.broadcast_to(np.zeros((), dtype=np.int8), shape)[index].shape
    sources = np.broadcast_to(np.arange(math.prod(y_shape), dtype=np.int64).reshape(y_shape), target)
    return places, sources.ravel()


def gather_positions(shape, index) -> np.ndarray:
    """The flat positions (C order) of ``x[index]``'s elements in ``x`` of ``shape``."""
    return _positions(shape)[index].ravel()


def index_table(module, values: np.ndarray):
    """A table of int32 positions: an IR constant when short, else a symbol (see bind_data)."""
    values = np.ascontiguousarray(values, dtype="<i4")
    if values.size >= DATA_FROM:
        return _external(module, ir.ArrayType(I32, values.size), _data_symbol(values))
    typ = ir.ArrayType(I32, max(values.size, 1))
    g = ir.GlobalVariable(module, typ, name=module.get_unique_name("symjac_index"))
    g.global_constant = True
    g.linkage = "internal"
    g.initializer = ir.Constant(typ, [int(v) for v in values] or [0])
    return g


def load_index(b, table, i):
    return b.sext(b.load(b.gep(table, [i], source_etype=I32), typ=I32), I64)


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


def compile_object(graph, wrt, value: bool, mode: str = "jacobian"):
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
