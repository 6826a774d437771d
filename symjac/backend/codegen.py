"""Lower a Program to an LLVM IR module with llvmlite.

The kernel has one signature for every use:
``void kernel(const T *in, double *out64, float *out32)`` where ``T`` is the compute type
(double unless every input and result is float32). Inputs are read by slot, temporaries are
computed in CSE order, and each nonzero result entry is stored at its offset; zeros are written
only where the program stores them (mostly dense results), else the caller zeroes the buffers of
one point, and a batch loop zeroes each point's own just before computing it (``add_batch_loop``).
Large scalar programs store their repeated computations from loops (``symjac.elements.rolling``).

Lowering dispatches on the SymPy class, walking its MRO (``LOWERINGS``), like SymPy's printers.
Integer powers become multiplications; other math goes through LLVM intrinsics or libm.
"""

from __future__ import annotations

import math

import llvmlite.ir as ir
import numpy as np
import sympy

from ..elements import rolling
from ..elements.simplify import F32_REGION, Program
from . import vecmath

I1 = ir.IntType(1)
I64 = ir.IntType(64)
PTR = ir.PointerType()

# SymPy function class -> (llvm intrinsic or libm base name, is_intrinsic)
MATH_FUNCTIONS = {
    sympy.exp: ("llvm.exp", True),
    sympy.log: ("llvm.log", True),
    sympy.sin: ("llvm.sin", True),
    sympy.cos: ("llvm.cos", True),
    sympy.tan: ("tan", False),
    sympy.sinh: ("sinh", False),
    sympy.cosh: ("cosh", False),
    sympy.tanh: ("tanh", False),
    sympy.asin: ("asin", False),
    sympy.acos: ("acos", False),
    sympy.atan: ("atan", False),
    sympy.asinh: ("asinh", False),
    sympy.acosh: ("acosh", False),
    sympy.atanh: ("atanh", False),
    sympy.atan2: ("atan2", False),
    sympy.erf: ("erf", False),
    sympy.erfc: ("erfc", False),
    sympy.Abs: ("llvm.fabs", True),
    sympy.floor: ("llvm.floor", True),
    sympy.ceiling: ("llvm.ceil", True),
}

_FCMP = {
    sympy.StrictLessThan: "<",
    sympy.LessThan: "<=",
    sympy.StrictGreaterThan: ">",
    sympy.GreaterThan: ">=",
    sympy.Equality: "==",
}


# Intrinsics that LLVM lowers to vector instructions; every other math call on vector values
# goes to libmvec or lane by lane (symjac.backend.vecmath).
LANEWISE_INTRINSICS = frozenset(
    {"llvm.fabs", "llvm.sqrt", "llvm.floor", "llvm.ceil", "llvm.trunc", "llvm.roundeven", "llvm.fma"}
    | {"llvm.copysign"}
)
# Vector math done inline rather than by a call (see symjac.backend.vecmath), on double lanes.
INLINE_VECTOR_MATH = {"tanh": vecmath.tanh, "symjac_tanh_derivative": vecmath.tanh_derivative}


class _Lowerer:
    """Lowers expressions to values of ``ftype``, or to vectors of ``lanes`` of them."""

    def __init__(self, module: ir.Module, builder: ir.IRBuilder, ftype, env: dict, lanes: int = 1):
        self.module = module
        self.b = builder
        self.scalar = ftype
        self.lanes = lanes
        self.t = ftype if lanes == 1 else ir.VectorType(ftype, lanes)
        self.bool_t = I1 if lanes == 1 else ir.VectorType(I1, lanes)
        self.env = env
        self.load = None  # symbol -> value, for symbols not in env (read on first use)
        self.memo: dict = {}

    def const(self, value: float):
        return ir.Constant(self.t, value)

    def bool_const(self, value: bool):
        return ir.Constant(self.bool_t, int(value))

    def lower(self, expr):
        if expr.is_Float or expr.is_Rational:  # before any hashing: a Float's hash converts it
            return self.const(float(expr))
        if expr in self.env:
            return self.env[expr]
        if expr.is_Symbol and self.load is not None:
            value = self.env[expr] = self.load(expr)
            return value
        hit = self.memo.get(expr)
        if hit is not None:
            return hit
        self._lower_arguments(expr)
        return self._apply_rule(expr)

    def _trivial(self, expr) -> bool:
        return expr.is_Float or expr.is_Rational or expr in self.env or expr in self.memo or expr.is_Atom

    def _lower_arguments(self, expr) -> None:
        """Lower every subexpression of ``expr`` first, in post-order without recursion, so that
        the rules' own ``lower`` calls on their arguments find them lowered (deep chains)."""
        stack = [(a, False) for a in expr.args if not self._trivial(a)]
        while stack:
            node, ready = stack.pop()
            if self._trivial(node):
                continue
            if ready:
                if _rule(node) is not None:  # not for ExprCondPair: its parts are lowered
                    self._apply_rule(node)
                continue
            stack.append((node, True))
            stack.extend((a, False) for a in node.args if not self._trivial(a))

    def _apply_rule(self, expr):
        rule = _rule(expr)
        if rule is not None:
            value = rule(self, expr)
            self.memo[expr] = value
            return value
        raise NotImplementedError(
            f"symjac cannot compile the SymPy class {type(expr).__name__} ({expr}); "
            "no lowering is declared for it in symjac.backend.codegen.LOWERINGS"
        )

    def as_float(self, value):
        return self.b.uitofp(value, self.t) if value.type == self.bool_t else value

    def as_bool(self, value):
        return value if value.type == self.bool_t else self.b.fcmp_unordered("!=", value, self.const(0.0))

    def call(self, name: str, intrinsic: bool, args):
        args = [self.as_float(a) for a in args]
        if self.lanes == 1 or name in LANEWISE_INTRINSICS:
            return self.b.call(self._declare(name, intrinsic, self.t, len(args)), args)
        base = name.removeprefix("llvm.")
        inline = INLINE_VECTOR_MATH.get(base)
        if self.scalar == ir.FloatType():
            # libmvec's float routines allow 4 ulp where scalar libm is near correctly rounded,
            # and derivative formulas that cancel (sinc near 0) magnify that; double routines
            # on two halves give float results at least as good as the scalar path.
            half = self.lanes // 2
            if inline is not None:
                wide = _Lowerer(self.module, self.b, ir.DoubleType(), {}, half)
                return self._float_via_double(lambda *halves: inline(wide, *halves), args, half)
            symbol = vecmath.vector_symbol(base, len(args), half)
            if symbol is not None:
                fn = self._vector_function(symbol, ir.VectorType(ir.DoubleType(), half), len(args))
                return self._float_via_double(lambda *halves: self.b.call(fn, halves), args, half)
        elif inline is not None:
            return inline(self, *args)
        else:
            symbol = vecmath.vector_symbol(base, len(args), self.lanes)
            if symbol is not None:
                return self.b.call(self._vector_function(symbol, self.t, len(args)), args)
        scalar_fn = self._declare(name, intrinsic, self.scalar, len(args))
        result = ir.Constant(self.t, ir.Undefined)
        for lane in range(self.lanes):
            idx = ir.Constant(ir.IntType(32), lane)
            value = self.b.call(scalar_fn, [self.b.extract_element(a, idx) for a in args])
            result = self.b.insert_element(result, value, idx)
        return result

    def _vector_function(self, symbol, typ, nargs):
        fn_type = ir.FunctionType(typ, [typ] * nargs)
        return self.module.globals.get(symbol) or ir.Function(self.module, fn_type, symbol)

    def _float_via_double(self, compute, args, half):
        """``compute`` (on vectors of ``half`` doubles) applied to both halves of float ``args``."""
        b, i32 = self.b, ir.IntType(32)
        wide = ir.VectorType(ir.DoubleType(), half)
        parts = []
        for h in range(2):
            lanes = [ir.Constant(i32, h * half + k) for k in range(half)]
            pick = ir.Constant(ir.VectorType(i32, half), lanes)
            halves = [b.fpext(b.shuffle_vector(a, a, pick), wide) for a in args]
            parts.append(b.fptrunc(compute(*halves), ir.VectorType(self.scalar, half)))
        both = ir.Constant(ir.VectorType(i32, self.lanes), [ir.Constant(i32, k) for k in range(self.lanes)])
        return b.shuffle_vector(parts[0], parts[1], both)

    def _declare(self, name: str, intrinsic: bool, typ, nargs: int):
        if intrinsic:  # overloaded on its one type: llvm.exp.f64, llvm.sqrt.v4f64
            element = typ.element if isinstance(typ, ir.VectorType) else typ
            suffix = "f32" if element == ir.FloatType() else "f64"
            if isinstance(typ, ir.VectorType):
                suffix = f"v{typ.count}{suffix}"
            symbol = f"{name}.{suffix}"
        else:
            symbol = name + ("f" if typ == ir.FloatType() else "")
        return self.module.globals.get(symbol) or ir.Function(
            self.module, ir.FunctionType(typ, [typ] * nargs), symbol
        )

    def select(self, cond, a, b):
        return self.b.select(self.as_bool(cond), self.as_float(a), self.as_float(b))


def _rule(expr):
    for cls in type(expr).__mro__:
        rule = LOWERINGS.get(cls)
        if rule is not None:
            return rule
    return None


def _number(lw: _Lowerer, expr):
    return lw.const(float(expr))


def _special_number(value):
    return lambda lw, expr: lw.const(value)


def _add(lw: _Lowerer, expr):
    args = [lw.as_float(lw.lower(a)) for a in expr.args]
    acc = args[0]
    for a in args[1:]:
        acc = lw.b.fadd(acc, a)
    return acc


def _mul(lw: _Lowerer, expr):
    """A product as ``-(c * num...) / (den...)``: the coefficient first, as SymPy orders it,
    negative powers as one division, and ``x/3`` as the user wrote it, not ``x*0.333...``.

    Reads the coefficient off the arguments (no ``as_coeff_mul``: for a negative Float it asks
    the assumptions system, most of the lowering time of a small MLP).
    """
    args = expr.args
    head, negative, scale = args[0], False, None  # scale: the coefficient's magnitude, or None for 1
    den = []
    if head.is_Number and len(args) > 1:
        if head.is_Rational:
            args, negative = args[1:], head.p < 0
            p = abs(head.p)
            if head.q != 1 and p == 1:
                den.append(lw.const(float(head.q)))
            elif p != 1 or head.q != 1:
                scale = lw.const(p / head.q)  # int / int is correctly rounded, as float(Rational)
        elif head.is_Float and float(head) < 0:
            args, negative = (None, *args[1:]), True  # None: the magnitude, lowered below
    value = None
    for f in args:
        if f is None:
            v = lw.const(-float(head))
        elif f.is_Pow and f.exp.is_Integer and f.exp.p < 0:
            den.append(_power(lw, f.base, -f.exp.p))
            continue
        else:
            v = lw.as_float(lw.lower(f))
        value = v if value is None else lw.b.fmul(value, v)
    if value is None:
        value = scale if scale is not None else lw.const(1.0)
    elif scale is not None:
        value = lw.b.fmul(scale, value)
    if den:
        d = den[0]
        for f in den[1:]:
            d = lw.b.fmul(d, f)
        value = lw.b.fdiv(value, d)
    return lw.b.fneg(value) if negative else value


def _power(lw: _Lowerer, base, n: int):
    """``base**n`` for a positive integer ``n``, as the Pow ``base**n`` lowers."""
    if n == 1:
        return lw.as_float(lw.lower(base))
    if n <= 64:
        return _int_power(lw, lw.as_float(lw.lower(base)), n)
    return lw.as_float(lw.lower(base**n))


def _int_power(lw: _Lowerer, base, n: int):
    result, square = None, base
    k = abs(n)
    while k:
        if k & 1:
            result = square if result is None else lw.b.fmul(result, square)
        k >>= 1
        if k:
            square = lw.b.fmul(square, square)
    if result is None:
        result = lw.const(1.0)
    return lw.b.fdiv(lw.const(1.0), result) if n < 0 else result


def _pow(lw: _Lowerer, expr):
    base, exp = expr.args
    b = lw.as_float(lw.lower(base))
    if exp.is_Integer and abs(int(exp)) <= 64:
        return _int_power(lw, b, int(exp))
    if exp.is_Float and float(exp).is_integer() and abs(float(exp)) <= 64:
        return _int_power(lw, b, int(float(exp)))
    if exp.is_Rational and exp.q == 2 and abs(exp.p) <= 64:
        root = lw.call("llvm.sqrt", True, [b])
        return _int_power(lw, root, int(exp.p))
    return lw.call("llvm.pow", True, [b, lw.as_float(lw.lower(exp))])


def _function(lw: _Lowerer, expr):
    for cls in type(expr).__mro__:
        if cls in MATH_FUNCTIONS:
            name, intrinsic = MATH_FUNCTIONS[cls]
            return lw.call(name, intrinsic, [lw.lower(a) for a in expr.args])
    how = getattr(type(expr), "_llvm", None)
    if callable(how):
        return how(lw, [lw.as_float(lw.lower(a)) for a in expr.args])
    if how == "identity":
        return lw.lower(expr.args[0])
    if how == "sign":
        return _sign(lw, expr)
    if how is not None:
        return lw.call(how, how.startswith("llvm."), [lw.lower(a) for a in expr.args])
    raise NotImplementedError(
        f"symjac cannot compile the function {type(expr).__name__} ({expr}); declare its "
        "lowering in symjac.backend.codegen.MATH_FUNCTIONS or as `_llvm` on its class"
    )


def _sign(lw: _Lowerer, expr):
    x = lw.as_float(lw.lower(expr.args[0]))
    zero = lw.const(0.0)
    inner = lw.b.select(lw.b.fcmp_ordered("<", x, zero), lw.const(-1.0), lw.b.fmul(x, zero))
    return lw.b.select(lw.b.fcmp_ordered(">", x, zero), lw.const(1.0), inner)


def _heaviside(lw: _Lowerer, expr):
    x = lw.as_float(lw.lower(expr.args[0]))
    at_zero = lw.lower(expr.args[1]) if len(expr.args) > 1 else lw.const(0.5)
    zero = lw.const(0.0)
    inner = lw.b.select(lw.b.fcmp_ordered("<", x, zero), zero, lw.as_float(at_zero))
    return lw.b.select(lw.b.fcmp_ordered(">", x, zero), lw.const(1.0), inner)


def _piecewise(lw: _Lowerer, expr):
    *branches, (last, last_cond) = expr.args
    result = lw.as_float(lw.lower(last))
    if last_cond is not sympy.true:
        result = lw.select(lw.lower(last_cond), result, lw.const(math.nan))
    for value, cond in reversed(branches):
        result = lw.select(lw.lower(cond), lw.lower(value), result)
    return result


def _relational(lw: _Lowerer, expr):
    a, b = (lw.as_float(lw.lower(x)) for x in expr.args)
    if isinstance(expr, sympy.Unequality):
        return lw.b.fcmp_unordered("!=", a, b)
    return lw.b.fcmp_ordered(_FCMP[type(expr)], a, b)


def _fold(combine: str):
    """And, Or, Xor: the bit operation ``combine`` folded over the arguments."""

    def lower(lw, expr):
        vals = [lw.as_bool(lw.lower(a)) for a in expr.args]
        acc = vals[0]
        for v in vals[1:]:
            acc = getattr(lw.b, combine)(acc, v)
        return acc

    return lower


_or = _fold("or_")


def _ite(lw, expr):
    """``ITE(c, a, b)``: a Boolean if-then-else, which SymPy makes of nested Piecewise conditions."""
    c, a, b = (lw.as_bool(lw.lower(x)) for x in expr.args)
    return lw.b.select(c, a, b)


def _equivalent(lw, expr):
    vals = [lw.as_bool(lw.lower(a)) for a in expr.args]
    acc = lw.bool_const(True)
    for v in vals[1:]:
        acc = lw.b.and_(acc, lw.b.icmp_unsigned("==", vals[0], v))
    return acc


def _minmax(pred):
    def lower(lw, expr):
        vals = [lw.as_float(lw.lower(a)) for a in expr.args]
        acc = vals[0]
        for v in vals[1:]:
            acc = lw.b.select(lw.b.fcmp_ordered(pred, acc, v), acc, v)
        return acc

    return lower


LOWERINGS = {
    sympy.Number: _number,
    sympy.NumberSymbol: _number,
    sympy.core.numbers.ComplexInfinity: _special_number(math.inf),
    sympy.core.numbers.NaN: _special_number(math.nan),
    sympy.core.numbers.ImaginaryUnit: _special_number(math.nan),  # sqrt of a negative constant
    sympy.Add: _add,
    sympy.Mul: _mul,
    sympy.Pow: _pow,
    sympy.Piecewise: _piecewise,
    sympy.Heaviside: _heaviside,
    sympy.DiracDelta: _special_number(0.0),  # torch: the derivative of a step is 0
    sympy.sign: _sign,
    sympy.Max: _minmax(">"),
    sympy.Min: _minmax("<"),
    sympy.core.relational.Relational: _relational,
    sympy.logic.boolalg.BooleanTrue: lambda lw, e: lw.bool_const(True),
    sympy.logic.boolalg.BooleanFalse: lambda lw, e: lw.bool_const(False),
    sympy.And: _fold("and_"),
    sympy.Or: _or,
    sympy.Not: lambda lw, e: lw.b.not_(lw.as_bool(lw.lower(e.args[0]))),
    sympy.Xor: _fold("xor"),
    sympy.ITE: _ite,
    sympy.Implies: lambda lw, e: lw.b.or_(
        lw.b.not_(lw.as_bool(lw.lower(e.args[0]))), lw.as_bool(lw.lower(e.args[1]))
    ),
    sympy.Equivalent: _equivalent,
    sympy.Function: _function,
}


def lower_program(program: Program, name: str, triple: str = "", data_layout: str = "") -> ir.Module:
    """Build the IR module holding one kernel function for ``program``."""
    module = ir.Module(name=name)
    module.triple = triple
    module.data_layout = data_layout
    add_kernel(module, program, name)
    return module


# Size of one native function. LLVM's instruction scheduling is superlinear in the number of
# memory operations in a basic block: 12288 stores in one block took 19 s to emit (228 s as
# SIMD code), 1840 statements with 8 stores 0.1 s.
SEGMENT_STORES = 256  # scalar stores (a vector store is one per lane)
SEGMENT_STATEMENTS = 4096
INLINE_MEMORY_BYTES = 65536  # images copied up to this size inline, not by libc
# Outputs zeroed inline up to this size, beyond by libc's memset. A 20-state chain's batch zeroes
# 3200 bytes a point; on the 2-core AVX-512 machine (2026-12-07) libc's memset ran its batches of
# 500, 5000 and 20000 points (64 MB) at 17, 19 and 12 M/s, inline stores at 13.5, 14 and 4.2
# (a stop before, on another day's machine, inline had been 1.9x faster).
INLINE_ZERO_BYTES = 512


def add_kernel(
    module: ir.Module, program: Program, name: str, lanes: int = 1, strides=(0, 0, 0), roll: bool = True
) -> str:
    """Add ``void <name>(in, out64, out32)``: ``program`` at one point, or, with ``lanes`` > 1,
    at that many points at once (lane ``l`` reads ``in + l*strides[0]`` and writes
    ``out64 + l*strides[1]``, ``out32 + l*strides[2]``), every value a SIMD vector of points.

    A long program is split into segments (``SEGMENT_STORES``, ``SEGMENT_STATEMENTS``), each
    its own function; temporaries that cross a segment boundary pass through a stack buffer.
    With ``roll``, a large scalar program's repeated stores become loops (``symjac.elements.rolling``).
    """
    ftype = ir.FloatType() if program.compute == "float32" else ir.DoubleType()
    vtype = ftype if lanes == 1 else ir.VectorType(ftype, lanes)
    images: list = []
    loops: list = []
    if lanes == 1 and roll:
        images, loops, program = rolling.roll(program)
    segments = _segments(_schedule(program), max(SEGMENT_STORES // lanes, 16), SEGMENT_STATEMENTS)
    defined_in = {st[1]: k for k, seg in enumerate(segments) for st in seg if st[0] == "let"}
    crossing: dict = {}  # temporary -> scratch slot
    for k, seg in enumerate(segments):
        for st in seg:
            for sym in _uses(st):
                if defined_in.get(sym, k) < k and sym not in crossing:
                    crossing[sym] = len(crossing)
    fn = _kernel_function(module, name, 3)
    if len(segments) == 1 and not loops and not images:
        _emit_segment(module, fn, program, segments[0], ftype, lanes, strides, {})
        return name
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    for k, image in enumerate(images):  # first: later stores overwrite the image's zeros
        _copy_image(module, b, fn, image, f"{name}.image{k}")
    for k, loop in enumerate(loops):
        part = _part(module, f"{name}.loop{k}", 3)
        _emit_loop(module, part, loop, ftype)
        b.call(part, fn.args)
    scratch = b.alloca(vtype, size=ir.Constant(I64, len(crossing))) if crossing else None
    for k, seg in enumerate(s for s in segments if s):
        part = _part(module, f"{name}.part{k}", 4 if crossing else 3)
        _emit_segment(module, part, program, seg, ftype, lanes, strides, crossing, volatile=True)
        b.call(part, [*fn.args, scratch] if crossing else fn.args)
    b.ret_void()
    return name


def _part(module, name, nargs):
    part = _kernel_function(module, name, nargs)
    part.linkage = "internal"
    part.attributes.add("noinline")  # merged back, it would be one huge block again
    return part


def _emit_loop(module, fn, loop, ftype):
    """The body of ``fn(in, out64, out32)``: ``loop``'s computations for each of its members,
    inputs and output offsets read from constant tables."""
    inp, out64, out32 = fn.args
    i32 = ir.IntType(32)
    members, width = loop.table.shape
    table = _table(module, fn.name + ".in", loop.table)
    offsets = _table(module, fn.name + ".out", loop.offsets)
    table64 = table if loop.table.dtype == np.int64 else None
    offsets64 = offsets if loop.offsets.dtype == np.int64 else None
    b, m, close = _counted_loop(fn, lambda b, m: b.icmp_signed("<", m, ir.Constant(I64, members)))
    lw = _Lowerer(module, b, ftype, {})
    which = {s: j for j, s in enumerate(loop.inputs)}
    row = b.mul(m, ir.Constant(I64, width))

    def entry_of(tab, index):
        etype = I64 if tab is table64 or tab is offsets64 else i32
        value = b.load(b.gep(tab, [index], source_etype=etype), typ=etype)
        return value if etype == I64 else b.sext(value, I64)

    def load(sym):
        j = which.get(sym)
        if j is not None:
            slot = entry_of(table, b.add(row, ir.Constant(I64, j)))
            return b.load(b.gep(inp, [slot], source_etype=ftype), typ=ftype)
        definition = loop.defs.get(sym)
        if definition is None:
            raise NotImplementedError(f"symjac cannot compile: {sym} is neither an input nor a temporary")
        return lw.lower(definition)  # inlined: every member computes its own

    lw.load = load
    out_row = b.mul(m, ir.Constant(I64, len(loop.stores)))
    for k, (region, expr) in enumerate(loop.stores):
        value = lw.as_float(lw.lower(expr))
        target = ir.FloatType() if region == F32_REGION else ir.DoubleType()
        if target != ftype:
            value = b.fptrunc(value, target) if target == ir.FloatType() else b.fpext(value, target)
        base = out32 if region == F32_REGION else out64
        offset = entry_of(offsets, b.add(out_row, ir.Constant(I64, k)))
        b.store(value, b.gep(base, [offset], source_etype=target))
    close(1)


def _counted_loop(fn, condition):
    """Open ``for (i = 0; condition(b, i); i += step)`` as the body of ``fn``: returns the
    builder, positioned in the loop body, ``i``, and ``close(step)``, which ends the body and
    returns from ``fn``."""
    entry = fn.append_basic_block("entry")
    head, body, done = (fn.append_basic_block(label) for label in ("head", "body", "done"))
    b = ir.IRBuilder(entry)
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(I64)
    i.add_incoming(ir.Constant(I64, 0), entry)
    b.cbranch(condition(b, i), body, done)
    b.position_at_end(body)

    def close(step: int) -> None:
        i.add_incoming(b.add(i, ir.Constant(I64, step)), b.block)
        b.branch(head)
        b.position_at_end(done)
        b.ret_void()

    return b, i, close


def _copy_image(module, b, fn, image, name):
    """Copy ``image``'s constants into its output region."""
    data = _constant_bytes(module, name, image.values)
    element = ir.FloatType() if image.region == F32_REGION else ir.DoubleType()
    target = b.gep(
        fn.args[2 if image.region == F32_REGION else 1], [ir.Constant(I64, image.start)], source_etype=element
    )
    memcpy = _memory_intrinsic(module, "memcpy", image.values.nbytes)
    b.call(memcpy, [target, data, ir.Constant(I64, image.values.nbytes), ir.Constant(I1, 0)])


def _memory_intrinsic(module, op: str, nbytes: int):
    """``llvm.memcpy`` or ``llvm.memset`` of ``nbytes``: inline stores up to INLINE_MEMORY_BYTES
    for a copy, INLINE_ZERO_BYTES for zeros."""
    limit = INLINE_ZERO_BYTES if op == "memset" else INLINE_MEMORY_BYTES
    inline = ".inline" if nbytes <= limit else ""
    which = f"llvm.{op}{inline}.p0{'.p0' if op == 'memcpy' else ''}.i64"
    source = PTR if op == "memcpy" else ir.IntType(8)
    return module.globals.get(which) or ir.Function(
        module, ir.FunctionType(ir.VoidType(), [PTR, source, I64, I1]), which
    )


def _constant_bytes(module, name, values):
    """A constant global holding ``values``' bytes (printing a large array element by element
    is slow in llvmlite)."""
    data = bytearray(np.ascontiguousarray(values).tobytes()) or bytearray(1)
    typ = ir.ArrayType(ir.IntType(8), len(data))
    table = ir.GlobalVariable(module, typ, name=name)
    table.global_constant = True
    table.linkage = "internal"
    table.initializer = ir.Constant(typ, data)
    return table


def _table(module, name, values):
    """A constant int32 (or, for an int64 table, int64) array."""
    wide = np.asarray(values).dtype == np.int64
    return _constant_bytes(module, name, np.asarray(values, dtype="<i8" if wide else "<i4"))


def _kernel_function(module, name, nargs):
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR] * nargs), name=name)
    for arg in fn.args:
        arg.add_attribute("noalias")
    return fn


def _schedule(program: Program) -> list:
    """``("let", sym, expr)`` and ``("store", region, offset, expr)`` statements, each store
    right after the last temporary it reads, so that few values live long."""
    index = {sym: k for k, (sym, _) in enumerate(program.assignments)}
    after: list = [[] for _ in range(len(program.assignments) + 1)]
    for region, offset, expr in program.stores:
        used = [index[s] + 1 for s in getattr(expr, "free_symbols", ()) if s in index]
        after[max(used, default=0)].append(("store", region, offset, expr))
    out = list(after[0])
    for k, (sym, expr) in enumerate(program.assignments):
        out.append(("let", sym, expr))
        out.extend(after[k + 1])
    return out


def _segments(statements: list, max_stores: int, max_statements: int) -> list:
    segments, current, stores = [], [], 0
    for st in statements:
        if stores >= max_stores or len(current) >= max_statements:
            segments.append(current)
            current, stores = [], 0
        current.append(st)
        stores += st[0] == "store"
    return [*segments, current]


def _uses(statement):
    return getattr(statement[-1], "free_symbols", ())


class _VolatileStore(ir.instructions.StoreInstr):
    """``store volatile``: for the stores of segmented (large) kernels.

    Each result is stored once, so dead-store elimination has nothing to find, yet it compares
    every store with the ones around it: most of O3 on a large kernel (the unrolled Brusselator
    N=32: O3 1.1 s -> 0.3 s). Volatile stores it skips, and code generation is quicker too
    (1.0 s -> 0.3 s); they run as fast, one store each either way.
    """

    def descr(self, buf):
        value, ptr = self.operands
        buf.append(f"store volatile {value.type} {value.get_reference()}, {ptr.type} {ptr.get_reference()}\n")


def _emit_segment(module, fn, program, statements, ftype, lanes, strides, crossing, volatile=False):
    """The body of ``fn(in, out64, out32[, scratch])`` for ``statements``; ``volatile`` marks its
    stores so (see ``_VolatileStore``)."""
    inp, out64, out32 = fn.args[:3]
    scratch = fn.args[3] if len(fn.args) > 3 else None
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    lw = _Lowerer(module, b, ftype, {}, lanes)
    lane_ids = [ir.Constant(ir.IntType(32), lane) for lane in range(lanes)]
    strides_of = {inp: strides[0], out64: strides[1], out32: strides[2]}

    def at(base, etype, lane, offset):
        return b.gep(base, [ir.Constant(I64, lane * strides_of[base] + offset)], source_etype=etype)

    def load(sym):
        if sym in crossing:
            return b.load(b.gep(scratch, [ir.Constant(I64, crossing[sym])], source_etype=lw.t), typ=lw.t)
        slot = program.slots.get(sym)
        if slot is None:
            raise NotImplementedError(f"symjac cannot compile: {sym} is neither an input nor a temporary")
        if lanes == 1:
            return b.load(at(inp, ftype, 0, slot), typ=ftype)
        vec = ir.Constant(lw.t, ir.Undefined)
        for lane, idx in enumerate(lane_ids):
            vec = b.insert_element(vec, b.load(at(inp, ftype, lane, slot), typ=ftype), idx)
        return vec

    lw.load = load
    double, single = ir.DoubleType(), ir.FloatType()

    def store(value, ptr):
        if volatile:
            b._insert(_VolatileStore(b.block, value, ptr))  # IRBuilder.store has no volatile flag
        else:
            b.store(value, ptr)

    for st in statements:
        if st[0] == "let":
            _, sym, expr = st
            lw.env[sym] = lw.lower(expr)
            if sym in crossing:
                target = b.gep(scratch, [ir.Constant(I64, crossing[sym])], source_etype=lw.t)
                store(lw.as_float(lw.env[sym]), target)
            continue
        _, region, offset, expr = st
        value = lw.as_float(lw.lower(expr))
        target = single if region == F32_REGION else double
        if target != ftype:
            wide = target if lanes == 1 else ir.VectorType(target, lanes)
            value = b.fptrunc(value, wide) if target == single else b.fpext(value, wide)
        base = out32 if region == F32_REGION else out64
        if lanes == 1:
            store(value, at(base, target, 0, offset))
            continue
        for lane, idx in enumerate(lane_ids):
            store(b.extract_element(value, idx), at(base, target, lane, offset))
    b.ret_void()


def add_batch_loop(
    module: ir.Module,
    kernel_name: str,
    strides: tuple[int, int, int],
    compute: str,
    inline: bool = True,
    step: int = 1,
    clear: bool = False,
) -> str:
    """Add ``void <kernel>_batch(in, out64, out32, i64 n)``: the kernel over n packed points.

    Point ``i`` reads ``in + i*strides[0]`` and writes ``out64 + i*strides[1]``,
    ``out32 + i*strides[2]``. A SIMD kernel takes ``step`` points per call; the loop stops
    before a partial step (the caller runs the rest through the scalar kernel). With
    ``inline`` the kernel is inlined into the loop. With ``clear`` (a kernel that stores only
    its nonzeros) each step zeroes its points' outputs first, so callers pass any buffer.
    """
    kernel = module.get_global(kernel_name)
    if inline:
        kernel.attributes.add("alwaysinline")
    ftype = ir.FloatType() if compute == "float32" else ir.DoubleType()
    name = kernel_name + "_batch"
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR, PTR, PTR, I64]), name=name)
    for arg in fn.args[:3]:
        arg.add_attribute("noalias")
    inp, out64, out32, n = fn.args
    b, i, close = _counted_loop(fn, lambda b, i: b.icmp_signed("<=", b.add(i, ir.Constant(I64, step)), n))
    etypes = (ftype, ir.DoubleType(), ir.FloatType())
    pointers = [
        b.gep(base, [b.mul(i, ir.Constant(I64, stride))], source_etype=etype)
        for base, stride, etype in zip((inp, out64, out32), strides, etypes, strict=True)
    ]
    if clear:
        # Here, not a zeroing pass over the whole batch first: the zeros go to memory with the
        # results, one pass instead of two (a 20-state chain: half of a batch call's time).
        for pointer, stride, item in zip(pointers[1:], strides[1:], (8, 4), strict=True):
            if stride:
                nbytes = step * stride * item
                memset = _memory_intrinsic(module, "memset", nbytes)
                zero, size = ir.Constant(ir.IntType(8), 0), ir.Constant(I64, nbytes)
                b.call(memset, [pointer, zero, size, ir.Constant(I1, 0)])
    b.call(kernel, pointers)
    close(step)
    return name
