"""The loop kernels' building blocks: strided views of arrays, and the emitter of loop nests.

A ``View`` is an array in the kernel (a scratch buffer, an input, a captured constant) seen with
a shape and strides, so that reshape, transpose, broadcasting and basic slicing cost no code. The
``_Emitter`` writes a kernel function's IR: loops and nests with carried values, register blocks,
tangent rows in vectors, scratch buffers (the stack, or the heap past ``STACK_BYTES``), index
arithmetic folded where it is constant, and the zero rule's flag and cold exact paths. A rule of
:mod:`symjac.arrays.loops` returns a ``Node``: its value's view and its tangent's.
"""

from __future__ import annotations

from dataclasses import dataclass

import llvmlite.ir as ir
import numpy as np

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
        self.guards: dict = {}  # the contractions that check for an inf or NaN (finiteness)
        self.graph = None  # the graph whose nodes are emitted (emit_nodes sets it)

    @property
    def structure(self):
        """The graph's structural zeros: where a zero times an inf or NaN may be zero."""
        from .structural import of

        return of(self.graph)

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

    def either(self, conds):
        """The OR of the i1s ``conds``, or None where there are none."""
        out = None
        for c in conds:
            out = c if out is None else self.b.or_(out, c)
        return out

    def killed_fma(self, coef, x, acc, kill):
        """``coef * x + acc``, where the i1 ``kill`` (a structural zero in the product; None: no
        such zero) makes the product 0 even against an inf or NaN."""
        if kill is None:
            return self.fma(coef, x, acc)
        zero = ir.Constant(DOUBLE, 0.0)
        return self.fma(self.b.select(kill, zero, coef), self.b.select(kill, zero, x), acc)

    def finite(self, view: View, row: bool = False):
        """An i1, true where every element of ``view`` (with ``row``: every double of its rows of
        ``width``) is finite: ``x * 0`` is 0 for finite ``x``, NaN for inf or NaN, so one sum of
        them tells (in any order: reassociated, vectorised)."""
        b, zero = self.b, ir.Constant(DOUBLE, 0.0)

        def add(acc, x):
            total = b.fadd(acc, b.fmul(x, self.zeros(x.type)))
            total.flags.append("reassoc")
            return total

        if not row:
            (total,) = self.nest(view.shape, lambda idx, c: [add(c[0], self.load(view, idx))], [zero])
            return b.fcmp_ordered("==", total, zero)
        size = self.width if self.width <= WHOLE_ROW else CHUNK
        full, rest = divmod(self.width, size)
        vtype = ir.VectorType(DOUBLE, size)

        def element(idx, carry):
            step = lambda i, c: [add(c[0], self.load_row(view, idx, self.mul(i, size), vtype))]  # noqa: E731
            (acc,) = self.loop(full, step, carry[:1])
            scalar = carry[1]
            for r in range(rest):
                at = self.address(view, idx, self.width, ir.Constant(I64, full * size + r))
                scalar = add(scalar, b.load(at, typ=DOUBLE))
            return [acc, scalar]

        acc, total = self.nest(view.shape, element, [self.zeros(vtype), zero])
        for lane in range(size):
            total = add(total, b.extract_element(acc, ir.Constant(I32, lane)))
        return b.fcmp_ordered("==", total, zero)

    # Exactness. Tangents and adjoints are finite until an inf or NaN partial makes one (sqrt at
    # 0): the elementwise rules' exact branches say so here, and contractions, whose fast
    # products would turn a zero times that inf into NaN, then look at their own rows and take an
    # exact loop of their own if one is there (see finiteness).
    def taint(self, cond=None):
        """Record that a tangent or adjoint may hold an inf or NaN from here on (where ``cond``)."""
        flag, b = self._flag(), self.b
        value = ir.Constant(I8, 1) if cond is None else b.or_(b.load(flag, typ=I8), b.zext(cond, I8))
        b.store(value, flag)

    def nonfinite(self, x):
        """An i1: some lane of ``x`` (a double or a vector of them) is inf or NaN."""
        b = self.b
        bad = b.fcmp_unordered("uno", b.fmul(x, self.zeros(x.type)), self.zeros(x.type))
        if isinstance(x.type, ir.VectorType):
            bad = b.icmp_unsigned(
                "!=", b.bitcast(bad, ir.IntType(x.type.count)), ir.Constant(ir.IntType(x.type.count), 0)
            )
        return bad

    def clean(self):
        """An i1: no tangent or adjoint has met an inf or NaN partial yet (see ``taint``)."""
        return self.b.icmp_unsigned("==", self.b.load(self._flag(), typ=I8), ir.Constant(I8, 0))

    def clean_or_finite(self, rows):
        """An i1: ``clean``, or else every double of the tangent or adjoint ``rows`` (views) is
        finite, which a scan tells (an inf met elsewhere may have been killed before these)."""
        b = self.b
        slot = ir.IRBuilder(self.entry).alloca(I8)
        b.store(ir.Constant(I8, 1), slot)
        with b.if_then(b.not_(self.clean())):
            ok = None
            for view in rows:
                check = self.finite(view, row=True)
                ok = check if ok is None else b.and_(ok, check)
            b.store(b.zext(ok, I8), slot)
        return b.trunc(b.load(slot, typ=I8), I1)

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
    zero_rows: View | None = None  # 1.0 where the tangent's row is a structural zero (see structural)
