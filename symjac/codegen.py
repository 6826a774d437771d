"""Lower a Program to an LLVM IR module with llvmlite.

The kernel has one signature for every use:
``void kernel(const T *in, double *out64, float *out32)`` where ``T`` is the compute type
(double unless every input and result is float32). Inputs are read by slot, temporaries are
computed in CSE order, and each nonzero result entry is stored at its offset; zeros are never
written (the caller allocates zeroed buffers).

Lowering dispatches on the SymPy class, walking its MRO (``LOWERINGS``), like SymPy's printers.
Integer powers become multiplications; other math goes through LLVM intrinsics or libm.
"""

from __future__ import annotations

import math

import llvmlite.ir as ir
import sympy

from .simplify import F32_REGION, Program

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


class _Lowerer:
    def __init__(self, module: ir.Module, builder: ir.IRBuilder, ftype, env: dict):
        self.module = module
        self.b = builder
        self.t = ftype
        self.env = env
        self.memo: dict = {}

    def const(self, value: float):
        return ir.Constant(self.t, value)

    def lower(self, expr):
        if expr in self.env:
            return self.env[expr]
        hit = self.memo.get(expr)
        if hit is not None:
            return hit
        for cls in type(expr).__mro__:
            rule = LOWERINGS.get(cls)
            if rule is not None:
                value = rule(self, expr)
                self.memo[expr] = value
                return value
        raise NotImplementedError(
            f"symjac cannot compile the SymPy class {type(expr).__name__} ({expr}); "
            "no lowering is declared for it in symjac.codegen.LOWERINGS"
        )

    def as_float(self, value):
        return self.b.uitofp(value, self.t) if value.type == I1 else value

    def as_bool(self, value):
        return value if value.type == I1 else self.b.fcmp_unordered("!=", value, self.const(0.0))

    def call(self, name: str, intrinsic: bool, args):
        fn_type = ir.FunctionType(self.t, [self.t] * len(args))
        if intrinsic:
            fn = self.module.declare_intrinsic(name, [self.t])
        else:
            symbol = name + ("f" if self.t == ir.FloatType() else "")
            fn = self.module.globals.get(symbol) or ir.Function(self.module, fn_type, symbol)
        return self.b.call(fn, [self.as_float(a) for a in args])

    def select(self, cond, a, b):
        return self.b.select(self.as_bool(cond), self.as_float(a), self.as_float(b))


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
    coeff, factors = expr.as_coeff_mul()
    negative = bool(coeff.is_negative)
    magnitude = -coeff if negative else coeff
    num, den = [], []
    for f in factors:
        if f.is_Pow and f.exp.is_Integer and f.exp < 0:
            den.append(f.base**-f.exp)
        else:
            num.append(f)
    if magnitude.is_Rational and magnitude.q != 1 and magnitude.p == 1:
        den.append(sympy.Integer(magnitude.q))  # x/3 as the user wrote it, not x*0.333...
        magnitude = sympy.S.One
    value = None
    for f in num:
        v = lw.as_float(lw.lower(f))
        value = v if value is None else lw.b.fmul(value, v)
    if value is None:
        value = lw.lower(magnitude)
    elif magnitude != 1:
        value = lw.b.fmul(lw.lower(magnitude), value)
    if den:
        d = lw.as_float(lw.lower(den[0]))
        for f in den[1:]:
            d = lw.b.fmul(d, lw.as_float(lw.lower(f)))
        value = lw.b.fdiv(value, d)
    return lw.b.fneg(value) if negative else value


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
        "lowering in symjac.codegen.MATH_FUNCTIONS or as `_llvm` on its class"
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


def _and(lw, expr):
    vals = [lw.as_bool(lw.lower(a)) for a in expr.args]
    acc = vals[0]
    for v in vals[1:]:
        acc = lw.b.and_(acc, v)
    return acc


def _or(lw, expr):
    vals = [lw.as_bool(lw.lower(a)) for a in expr.args]
    acc = vals[0]
    for v in vals[1:]:
        acc = lw.b.or_(acc, v)
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
    sympy.logic.boolalg.BooleanTrue: lambda lw, e: ir.Constant(I1, 1),
    sympy.logic.boolalg.BooleanFalse: lambda lw, e: ir.Constant(I1, 0),
    sympy.And: _and,
    sympy.Or: _or,
    sympy.Not: lambda lw, e: lw.b.not_(lw.as_bool(lw.lower(e.args[0]))),
    sympy.Function: _function,
}


def lower_program(program: Program, name: str, triple: str = "", data_layout: str = "") -> ir.Module:
    """Build the IR module holding one kernel function for ``program``."""
    ftype = ir.FloatType() if program.compute == "float32" else ir.DoubleType()
    module = ir.Module(name=name)
    module.triple = triple
    module.data_layout = data_layout
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR, PTR, PTR]), name=name)
    for arg in fn.args:
        arg.add_attribute("noalias")
    inp, out64, out32 = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    env = {}
    for sym, slot in program.slots.items():
        env[sym] = b.load(b.gep(inp, [ir.Constant(I64, slot)], source_etype=ftype), typ=ftype)
    lw = _Lowerer(module, b, ftype, env)
    for sym, expr in program.assignments:
        env[sym] = lw.lower(expr)
    double, single = ir.DoubleType(), ir.FloatType()
    for region, offset, expr in program.stores:
        value = lw.as_float(lw.lower(expr))
        target = single if region == F32_REGION else double
        if target != ftype:
            value = b.fptrunc(value, target) if target == single else b.fpext(value, target)
        base = out32 if region == F32_REGION else out64
        b.store(value, b.gep(base, [ir.Constant(I64, offset)], source_etype=target))
    b.ret_void()
    return module


def add_batch_loop(
    module: ir.Module, kernel_name: str, strides: tuple[int, int, int], compute: str, inline: bool = True
) -> str:
    """Add ``void <kernel>_batch(in, out64, out32, i64 n)``: the kernel over n packed points.

    Point ``i`` reads ``in + i*strides[0]`` and writes ``out64 + i*strides[1]``,
    ``out32 + i*strides[2]``. With ``inline`` the kernel is inlined into the loop body.
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
    entry, loop, done = (fn.append_basic_block(label) for label in ("entry", "loop", "done"))
    b = ir.IRBuilder(entry)
    b.cbranch(b.icmp_signed(">", n, ir.Constant(I64, 0)), loop, done)
    b.position_at_end(loop)
    i = b.phi(I64)
    i.add_incoming(ir.Constant(I64, 0), entry)
    pointers = [
        b.gep(base, [b.mul(i, ir.Constant(I64, stride))], source_etype=etype)
        for base, stride, etype in zip(
            (inp, out64, out32), strides, (ftype, ir.DoubleType(), ir.FloatType()), strict=True
        )
    ]
    b.call(kernel, pointers)
    nxt = b.add(i, ir.Constant(I64, 1))
    i.add_incoming(nxt, loop)
    b.cbranch(b.icmp_signed("<", nxt, n), loop, done)
    b.position_at_end(done)
    b.ret_void()
    return name
