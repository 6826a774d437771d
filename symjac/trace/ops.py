"""The op table: every primitive symjac can trace, declared once.

Elementwise primitives are rows of ``ELEMENTWISE``: the SymPy form of one element, the names
NumPy and torch call it by, and the input domain tests draw from. Their LLVM lowering follows
from the SymPy class (:mod:`symjac.backend.codegen`); custom classes live in :mod:`symjac.trace.functions`.
Structural primitives (reshape, indexing, reductions, matmul, ...) are ``Primitive`` entries of
``PRIMITIVES`` with an evaluator that works on NumPy object arrays of SymPy expressions.
Front-end functions in :mod:`symjac.trace.api_ops` bind the names of all three calling styles.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import sympy

from . import arith
from . import functions as F

REAL = (-math.inf, math.inf)
POSITIVE = (0.0, math.inf)
UNIT = (-1.0, 1.0)
ABOVE_ONE = (1.0, math.inf)
NONZERO = (-math.inf, math.inf, "nonzero")
_TWO = sympy.Integer(2)


@dataclass(frozen=True)
class Elementwise:
    """One elementwise primitive: ``sympy`` builds one output element from input elements."""

    name: str
    sympy: Callable
    numpy: tuple[str, ...] = ()
    torch: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    domain: tuple = REAL
    boolean: bool = False  # comparisons: result is a mask, not a float


def _pw(*pairs):
    """A Piecewise, its decided conditions folded here: SymPy's own evaluation canonicalises
    every condition again (``_piecewise_collapse_arguments``), most of a ReLU's cost."""
    kept = []
    for expr, cond in pairs:
        cond = sympy.true if cond is True else sympy.false if cond is False else cond
        if cond is sympy.false:
            continue
        kept.append((sympy.sympify(expr), cond))
        if cond is sympy.true:
            break
    if kept and kept[0][1] is sympy.true:
        return kept[0][0]
    if not kept or kept[-1][1] is not sympy.true:  # undefined somewhere: SymPy's own rules decide
        return sympy.Piecewise(*pairs)
    return sympy.Piecewise(*kept, evaluate=False)


def _relation(kind):
    """``kind(a, b)``, decided when both sides are numbers and otherwise left as written.

    SymPy's evaluation asks the assumptions system about ``a - b``: tens of milliseconds for each
    ReLU's ``h > 0`` in a network's expressions, for facts it can rarely decide (half the first
    call of a small ReLU MLP). An undecided condition stays in the Piecewise and the kernel
    tests it; the values are the same.
    """

    def make(a, b):
        a, b = sympy.sympify(a), sympy.sympify(b)
        if a.is_Number and b.is_Number:
            return kind(a, b)
        return kind(a, b, evaluate=False)

    make.__name__ = kind.__name__
    return make


_gt, _lt, _ge, _le = (
    _relation(k) for k in (sympy.StrictGreaterThan, sympy.StrictLessThan, sympy.GreaterThan, sympy.LessThan)
)
_eq, _ne = _relation(sympy.Eq), _relation(sympy.Ne)


def _maximum(a, b):
    # torch splits a tie evenly between both sides (torch-semantics.md section 8).
    return _pw((a, _gt(a, b)), ((a + b) / 2, _eq(a, b)), (b, True))


def _minimum(a, b):
    return _pw((a, _lt(a, b)), ((a + b) / 2, _eq(a, b)), (b, True))


def _clamp(x, lo, hi):
    # At a bound the derivative is 1 (torch): the interior branch owns the closed interval.
    return _pw((lo, _lt(x, lo)), (hi, _gt(x, hi)), (x, True))


def _where(cond, a, b):
    if cond is sympy.true:
        return a
    if cond is sympy.false:
        return b
    return _pw((a, cond), (b, True))


def _relu(x):
    return _pw((x, _gt(x, 0)), (sympy.S.Zero, True))


def _elu(x, alpha):
    return _pw((x, _gt(x, 0)), (alpha * (sympy.exp(x) - 1), True))


_SELU_ALPHA = sympy.Float(1.6732632423543772848170429916717, 17)
_SELU_SCALE = sympy.Float(1.0507009873554804934193349852946, 17)


def _sinc(x):
    return _pw((sympy.S.One, _eq(x, 0)), (sympy.sin(sympy.pi * x) / (sympy.pi * x), True))


def _heaviside(x, at_zero):
    return _pw((sympy.S.Zero, _lt(x, 0)), (at_zero, _eq(x, 0)), (sympy.S.One, True))


_E = Elementwise
ELEMENTWISE_OPS = (
    _E("add", arith.add, ("add",), ("add", "__add__", "__radd__"), ("add", "__add__")),
    _E("sub", arith.sub, ("subtract",), ("sub", "subtract", "__sub__"), ("sub", "subtract")),
    _E(
        "mul",
        arith.mul,
        ("multiply",),
        ("mul", "multiply", "__mul__", "__rmul__"),
        ("mul", "multiply"),
    ),
    _E(
        "div",
        arith.div,
        ("divide", "true_divide"),
        ("div", "divide", "true_divide", "__truediv__"),
        ("div", "divide", "true_divide"),
        NONZERO,
    ),
    _E(
        "pow",
        arith.power,
        ("power", "float_power"),
        ("pow", "float_power", "__pow__"),
        ("pow",),
        POSITIVE,
    ),
    _E("neg", arith.neg, ("negative",), ("neg", "negative", "__neg__"), ("neg",)),
    _E("pos", lambda a: a, ("positive",), ("positive", "__pos__"), ("positive",)),
    _E("exp", sympy.exp, ("exp",), ("exp",), ("exp",)),
    _E("exp2", lambda a: 2**a, ("exp2",), ("exp2", "special_exp2"), ("exp2",)),
    _E("expm1", lambda a: sympy.exp(a) - 1, ("expm1",), ("expm1", "special_expm1"), ("expm1",)),
    _E("log", sympy.log, ("log",), ("log",), ("log",), POSITIVE),
    _E("log2", lambda a: sympy.log(a) / sympy.log(2), ("log2",), ("log2",), ("log2",), POSITIVE),
    _E("log10", lambda a: sympy.log(a) / sympy.log(10), ("log10",), ("log10",), ("log10",), POSITIVE),
    _E("log1p", lambda a: sympy.log(1 + a), ("log1p",), ("log1p", "special_log1p"), ("log1p",), POSITIVE),
    _E("sqrt", sympy.sqrt, ("sqrt",), ("sqrt",), ("sqrt",), POSITIVE),
    _E("rsqrt", lambda a: 1 / sympy.sqrt(a), (), ("rsqrt",), ("rsqrt",), POSITIVE),
    _E("square", lambda a: arith.power(a, _TWO), ("square",), ("square",), ("square",)),
    _E(
        "reciprocal",
        lambda a: arith.div(sympy.S.One, a),
        ("reciprocal",),
        ("reciprocal",),
        ("reciprocal",),
        NONZERO,
    ),
    _E("sin", sympy.sin, ("sin",), ("sin",), ("sin",)),
    _E("cos", sympy.cos, ("cos",), ("cos",), ("cos",)),
    _E("tan", sympy.tan, ("tan",), ("tan",), ("tan",), UNIT),
    _E("arcsin", sympy.asin, ("arcsin",), ("asin", "arcsin"), ("asin", "arcsin"), UNIT),
    _E("arccos", sympy.acos, ("arccos",), ("acos", "arccos"), ("acos", "arccos"), UNIT),
    _E("arctan", sympy.atan, ("arctan",), ("atan", "arctan"), ("atan", "arctan")),
    _E("arctan2", F.atan2, ("arctan2",), ("atan2", "arctan2"), ("atan2", "arctan2")),
    _E("sinh", sympy.sinh, ("sinh",), ("sinh",), ("sinh",)),
    _E("cosh", sympy.cosh, ("cosh",), ("cosh",), ("cosh",)),
    _E("tanh", F.tanh, ("tanh",), ("tanh",), ("tanh",)),
    _E("arcsinh", sympy.asinh, ("arcsinh",), ("asinh", "arcsinh"), ("asinh", "arcsinh")),
    _E("arccosh", sympy.acosh, ("arccosh",), ("acosh", "arccosh"), ("acosh", "arccosh"), ABOVE_ONE),
    _E("arctanh", sympy.atanh, ("arctanh",), ("atanh", "arctanh"), ("atanh", "arctanh"), UNIT),
    _E("hypot", lambda a, b: sympy.sqrt(a**2 + b**2), ("hypot",), ("hypot",), ("hypot",), NONZERO),
    _E(
        "sigmoid",
        F.sigmoid,
        ("expit",),
        ("sigmoid", "expit", "special_expit"),
        ("sigmoid",),
    ),
    _E(
        "logit",
        lambda a: sympy.log(a / (1 - a)),
        ("logit",),
        ("logit", "special_logit"),
        ("logit",),
        (0.0, 1.0),
    ),
    _E("relu", _relu, (), ("relu",), ("relu",)),
    _E("softplus", F.Softplus, (), ("softplus",), ()),
    _E("norm_sqrt", F.NormSqrt, domain=POSITIVE),  # the root of a 2-norm or std: 0 subgradient at 0
    _E("norm_root", F.NormRoot, domain=POSITIVE),
    _E("elu", _elu, (), (), ()),
    _E("leaky_relu", lambda x, slope: _pw((x, _gt(x, 0)), (slope * x, True)), (), (), ()),
    _E("selu", lambda x: _SELU_SCALE * _elu(x, _SELU_ALPHA), (), ("selu",), ()),
    _E("gelu", lambda x: x / 2 * (1 + sympy.erf(x / sympy.sqrt(2))), (), ("gelu",), ()),
    _E("erf", sympy.erf, ("erf",), ("erf", "special_erf"), ("erf",)),
    _E("erfc", sympy.erfc, ("erfc",), ("erfc", "special_erfc"), ("erfc",)),
    _E("cbrt", F.Cbrt, ("cbrt",), (), ()),
    _E("sinc", _sinc, ("sinc",), ("sinc", "special_sinc"), ("sinc",)),
    _E("deg2rad", lambda a: a * sympy.pi / 180, ("deg2rad", "radians"), ("deg2rad",), ("deg2rad",)),
    _E("rad2deg", lambda a: a * 180 / sympy.pi, ("rad2deg", "degrees"), ("rad2deg",), ("rad2deg",)),
    _E("logaddexp", F.LogAddExp, ("logaddexp",), ("logaddexp",), ("logaddexp",)),
    _E("heaviside", _heaviside, ("heaviside",), ("heaviside",), ("heaviside",)),
    _E(
        "floor_divide",
        lambda a, b: F.Floor(a / b),
        ("floor_divide",),
        ("floor_divide", "__floordiv__"),
        ("floor_divide",),
        NONZERO,
    ),
    _E(
        "remainder",
        lambda a, b: a - F.Floor(a / b) * b,
        ("remainder", "mod"),
        ("remainder", "__mod__"),
        ("remainder",),
        NONZERO,
    ),
    _E("fmod", lambda a, b: a - F.Trunc(a / b) * b, ("fmod",), ("fmod",), ("fmod",), NONZERO),
    _E("abs", sympy.Abs, ("absolute", "abs", "fabs"), ("abs", "absolute", "__abs__"), ("abs", "absolute")),
    _E("sign", F.Sign, ("sign",), ("sign",), ("sign",)),
    _E("copysign", F.CopySign, ("copysign",), ("copysign",), ("copysign",)),
    _E("floor", F.Floor, ("floor",), ("floor",), ("floor",)),
    _E("ceil", F.Ceil, ("ceil",), ("ceil",), ("ceil",)),
    _E("trunc", F.Trunc, ("trunc", "fix"), ("trunc", "fix"), ("trunc",)),
    _E("round", F.Round, ("rint", "round", "around"), ("round", "special_round"), ("round",)),
    _E("maximum", _maximum, ("maximum", "fmax"), ("maximum", "fmax"), ("maximum", "fmax")),
    _E("minimum", _minimum, ("minimum", "fmin"), ("minimum", "fmin"), ("minimum", "fmin")),
    _E("clamp", _clamp, (), (), ()),
    _E("where", _where, (), (), ()),
    _E("detach", F.StopGradient, (), ("detach",), ("detach",)),
    _E("mask_to_float", lambda c: _where(c, sympy.S.One, sympy.S.Zero)),
    _E("greater", _gt, ("greater",), ("gt", "greater", "__gt__"), ("gt",), boolean=True),
    _E(
        "greater_equal",
        _ge,
        ("greater_equal",),
        ("ge", "greater_equal", "__ge__"),
        ("ge",),
        boolean=True,
    ),
    _E("less", _lt, ("less",), ("lt", "less", "__lt__"), ("lt",), boolean=True),
    _E(
        "less_equal",
        _le,
        ("less_equal",),
        ("le", "less_equal", "__le__"),
        ("le",),
        boolean=True,
    ),
    _E("equal", _eq, ("equal",), ("eq", "__eq__"), ("eq",), boolean=True),
    _E("not_equal", _ne, ("not_equal",), ("ne", "__ne__"), ("ne",), boolean=True),
    _E("logical_and", sympy.And, ("logical_and",), ("logical_and",), ("logical_and",), boolean=True),
    _E("logical_or", sympy.Or, ("logical_or",), ("logical_or",), ("logical_or",), boolean=True),
    _E("logical_not", sympy.Not, ("logical_not",), ("logical_not",), ("logical_not",), boolean=True),
)
# --- issue 13: special functions and hard activations ---------------------------------------


def _hardtanh(x, lo, hi):
    # torch's derivative is 0 at the bounds themselves (hardtanh_backward), unlike clamp's
    return _pw((lo, _le(x, lo)), (hi, _ge(x, hi)), (x, True))


def _hardswish(x):
    # the outer branches own the breakpoints, as torch's hardswish_backward has it
    return _pw((sympy.S.Zero, _le(x, -3)), (x, _ge(x, 3)), (x * (x + 3) / 6, True))


def _hardsigmoid(x):
    return _pw((sympy.S.Zero, _le(x, -3)), (sympy.S.One, _ge(x, 3)), (x / 6 + sympy.S.Half, True))


def _xlogy(x, y):
    # 0 where x == 0 (even for y == 0), and torch's derivative there: 0 in both arguments
    return _pw((sympy.S.Zero, _eq(x, 0)), (x * sympy.log(y), True))


def _xlog1py(x, y):
    return _pw((sympy.S.Zero, _eq(x, 0)), (x * sympy.log(1 + y), True))


def _entr(x):
    return _pw((-x * sympy.log(x), _gt(x, 0)), (sympy.S.Zero, _eq(x, 0)), (-sympy.oo, True))


_LN2 = sympy.log(2)

ELEMENTWISE_OPS += (
    _E("relu6", lambda x: _hardtanh(x, sympy.S.Zero, sympy.Integer(6)), (), ("relu6",), ()),
    _E("hardtanh", _hardtanh, (), (), ()),
    _E("hardswish", _hardswish, (), ("hardswish",), ()),
    _E("hardsigmoid", _hardsigmoid, (), ("hardsigmoid",), ()),
    _E("xlogy", _xlogy, ("xlogy",), ("xlogy", "special_xlogy"), ("xlogy",), POSITIVE),
    _E("xlog1py", _xlog1py, ("xlog1py",), ("special_xlog1py",), (), POSITIVE),
    _E("entr", _entr, ("entr",), ("special_entr",), (), POSITIVE),
    _E("ndtr", lambda x: (1 + sympy.erf(x / sympy.sqrt(2))) / 2, ("ndtr",), ("special_ndtr",), ()),
    _E(
        "logaddexp2",
        lambda a, b: F.LogAddExp(a * _LN2, b * _LN2) / _LN2,
        ("logaddexp2",),
        ("logaddexp2",),
        ("logaddexp2",),
    ),
)


class _Table(dict):
    """An op table whose rows not found by name may be partial derivatives of its elementwise
    rows (:func:`partial_name`), made at their first lookup and not listed: the gradient graphs of
    :mod:`symjac.arrays.gradient` use them, and a graph read back in another process finds them."""

    def __init__(self, rows, index: int):
        super().__init__(rows)
        self._index = index

    def __missing__(self, name):
        made = _partial(name) if type(name) is str else None
        if made is None:
            raise KeyError(name)
        return made[self._index]

    def __contains__(self, name) -> bool:
        return dict.__contains__(self, name) or (type(name) is str and _partial(name) is not None)


ELEMENTWISE: dict[str, Elementwise] = _Table({e.name: e for e in ELEMENTWISE_OPS}, 0)


# --- structural primitives: evaluated on object arrays of SymPy expressions -----------------


@dataclass(frozen=True)
class Primitive:
    """A non-elementwise primitive: ``evaluate(values, params)`` on object arrays."""

    name: str
    evaluate: Callable


def _obj(value) -> np.ndarray:
    out = np.empty((), dtype=object)
    out[()] = value
    return out


def _elementwise_eval(op: Elementwise):
    fn = op.sympy
    if isinstance(fn, type) and issubclass(fn, sympy.Function):
        fn = _lazy(fn)
    ufunc = np.frompyfunc(fn, _nargs(op), 1)

    def evaluate(values, params):
        result = ufunc(*values)
        return result if isinstance(result, np.ndarray) else _obj(result)

    return evaluate


def _lazy(cls):
    """``cls(*args)``, skipping SymPy's argument rewriting unless every argument is a number.

    ``tanh(big_sum)`` asks the sum about its sign through the assumptions system, which cost
    most of the time of expanding a small MLP (0.7 s of 0.9). The rewrites it looks for
    (``tanh(-x) -> -tanh(x)``) change nothing that is differentiated or compiled.
    """

    def make(*args):
        if all(isinstance(a, sympy.Number) or not isinstance(a, sympy.Basic) for a in args):
            return cls(*args)
        return cls(*args, evaluate=False)

    return make


def _nargs(op: Elementwise) -> int:
    fn = op.sympy
    if isinstance(fn, type):  # a SymPy class: its declared argument count
        nargs = getattr(fn, "nargs", None)
        return min(nargs) if isinstance(nargs, sympy.FiniteSet) else 2
    params = inspect.signature(fn).parameters.values()
    return sum(p.default is inspect.Parameter.empty for p in params)


def _reduce_sum(values, params):
    (x,), (axes, keepdims) = values, params
    return _reduce(x, axes, keepdims, arith.total)


def _reduce_prod(values, params):
    (x,), (axes, keepdims) = values, params
    return _reduce(x, axes, keepdims, arith.product)


def _reduce(x, axes, keepdims, combine):
    k = len(axes)
    moved = np.moveaxis(x, axes, tuple(range(x.ndim - k, x.ndim)))
    rest = moved.shape[: x.ndim - k]
    flat = moved.reshape(rest + (-1,))
    out = np.empty(rest, dtype=object)
    for idx in np.ndindex(rest):
        out[idx] = combine(list(flat[idx]))
    if keepdims:
        out = out.reshape([1 if d in axes else n for d, n in enumerate(x.shape)])
    return out


def _reduce_extremum(cls):
    def evaluate(values, params):
        (x,), (axes, keepdims) = values, params
        return _reduce(x, axes, keepdims, lambda terms: cls(*terms))

    return evaluate


def _einsum(values, params):
    result = np.einsum(params[0], *values)
    return result if isinstance(result, np.ndarray) else _obj(result)


_LINALG_LIMIT = 6  # symbolic det/inv grow factorially: refuse beyond this size


def _linalg(values, params):
    kind = params[0]
    (a,) = values
    n = a.shape[-1]
    out_shape = a.shape[:-2] if kind == "det" else a.shape
    out = np.empty(out_shape, dtype=object)
    for idx in np.ndindex(a.shape[:-2]):
        m = sympy.Matrix(a[idx].tolist()) if n else sympy.zeros(0, 0)
        if kind == "det":
            out[idx] = m.det(method="berkowitz")
        elif kind == "inv":
            out[idx] = np.array((m.adjugate() / m.det(method="berkowitz")).tolist(), dtype=object).reshape(
                n, n
            )
        else:  # cholesky, lower triangular
            out[idx] = np.array(m.cholesky(hermitian=False).tolist(), dtype=object).reshape(n, n)
    return out


def _matmul(values, params):
    a, b = values
    a2 = a.reshape((1,) + a.shape) if a.ndim == 1 else a
    b2 = b.reshape(b.shape + (1,)) if b.ndim == 1 else b
    batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    a2 = np.broadcast_to(a2, batch + a2.shape[-2:])
    b2 = np.broadcast_to(b2, batch + b2.shape[-2:])
    n, k, m = a2.shape[-2], a2.shape[-1], b2.shape[-1]
    out = np.empty(batch + (n, m), dtype=object)
    for bi in np.ndindex(batch):
        A, B = a2[bi], b2[bi]
        for i in range(n):
            for j in range(m):
                out[bi + (i, j)] = arith.total([arith.mul(A[i, t], B[t, j]) for t in range(k)])
    if a.ndim == 1:
        out = out.reshape(out.shape[:-2] + out.shape[-1:])
    if b.ndim == 1:
        out = out.reshape(out.shape[:-1])
    return out


def decode_index(key):
    """Rebuild a NumPy index from its hashable form (see api_ops._encode_index)."""
    parts = []
    for kind, *rest in key:
        if kind == "int":
            parts.append(rest[0])
        elif kind == "slice":
            parts.append(slice(*rest))
        elif kind == "none":
            parts.append(None)
        elif kind == "ellipsis":
            parts.append(Ellipsis)
        else:  # "array"
            dtype, shape, data = rest
            parts.append(np.frombuffer(data, dtype=dtype).reshape(shape))
    return tuple(parts)


def _getitem(values, params):
    result = values[0][decode_index(params[0])]
    return result if isinstance(result, np.ndarray) else _obj(result)


def _setitem(values, params):
    x, y = values
    out = x.copy()
    # A 0-d object array assigned into an object array would be stored as an element itself.
    out[decode_index(params[0])] = y[()] if y.ndim == 0 else y
    return out


def number(value) -> sympy.Expr:
    """Exact SymPy number for a float: integers stay integers so formulas read cleanly."""
    if isinstance(value, (bool, np.bool_)):
        return sympy.true if value else sympy.false
    value = float(value)
    if math.isnan(value):
        return sympy.nan
    if math.isinf(value):
        return sympy.oo if value > 0 else -sympy.oo
    if value.is_integer() and abs(value) < 2**53:
        return sympy.Integer(int(value))
    num, den = value.as_integer_ratio()
    if den <= 1024 and abs(value) < 2**53:  # 0.5, 0.375: exactly this rational, and reads better
        return sympy.Rational(num, den)
    # The fewest digits that give back the same double (>= 15, so the value stays exact): SymPy
    # then prints 9.81 as 9.81, not 9.8100000000000005.
    digits = next(d for d in (15, 16, 17) if float(f"{value:.{d}g}") == value)
    return sympy.Float(value, digits)


def constant_values(dtype: str, shape, data: bytes) -> np.ndarray:
    arr = np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)
    out = np.empty(shape, dtype=object)
    for idx in np.ndindex(shape):
        out[idx] = number(arr[idx])
    return out


PRIMITIVES: dict[str, Primitive] = _Table({
    **{e.name: Primitive(e.name, _elementwise_eval(e)) for e in ELEMENTWISE_OPS},
    "const": Primitive("const", lambda v, p: constant_values(*p)),
    "scalar": Primitive("scalar", lambda v, p: _obj(number(float("nan") if p[0] == "nan" else p[0]))),
    "reshape": Primitive("reshape", lambda v, p: v[0].reshape(p[0])),
    "transpose": Primitive("transpose", lambda v, p: v[0].transpose(p[0])),
    "broadcast_to": Primitive("broadcast_to", lambda v, p: np.broadcast_to(v[0], p[0]).copy()),
    "getitem": Primitive("getitem", _getitem),
    "setitem": Primitive("setitem", _setitem),
    "concat": Primitive("concat", lambda v, p: np.concatenate(v, axis=p[0])),
    "stack": Primitive("stack", lambda v, p: np.stack(v, axis=p[0])),
    "sum": Primitive("sum", _reduce_sum),
    "prod": Primitive("prod", _reduce_prod),
    "matmul": Primitive("matmul", _matmul),
    "max": Primitive("max", _reduce_extremum(F.MaxN)),
    "min": Primitive("min", _reduce_extremum(F.MinN)),
    "logsumexp": Primitive("logsumexp", _reduce_extremum(F.LogSumExp)),
    "cumsum": Primitive("cumsum", lambda v, p: np.cumsum(v[0], axis=p[0])),
    "cumprod": Primitive("cumprod", lambda v, p: np.cumprod(v[0], axis=p[0])),
    "einsum": Primitive("einsum", _einsum),
    "linalg": Primitive("linalg", _linalg),
    "cast": Primitive("cast", lambda v, p: v[0]),
}, 1)  # fmt: skip


def element_formula(op: str, masks: tuple) -> tuple:
    """``(symbols, element)``: elementwise ``op``'s scalar formula on symbols ``a0, a1, ...``
    (``c0`` for a mask argument). Raises what the op's formula raises for free symbols."""
    syms = [sympy.Symbol(f"c{i}") if m else sympy.Symbol(f"a{i}", real=True) for i, m in enumerate(masks)]
    return syms, sympy.sympify(PRIMITIVES[op].evaluate([_obj(s) for s in syms], ())[()])


def exact_partial(expr, symbol):
    """``d expr / d symbol`` as every road writes it: ``powsimp``ed, ``b*a**(b - 1)`` rather than
    SymPy's ``b*a**b/a`` (0/0 at a = 0)."""
    return sympy.powsimp(sympy.diff(expr, symbol))


def partial_name(op: str, k: int, masks: tuple) -> str:
    """The name of the elementwise op that is ``op``'s exact partial derivative in its argument
    ``k``, for arguments that are masks (``masks[i]``) or reals: ``"d0/r/tanh"``, ``"d1/mr/where"``."""
    return f"d{k}/{''.join('m' if m else 'r' for m in masks)}/{op}"


@functools.cache
def _partial(name: str):
    """``(Elementwise, Primitive)`` rows of a :func:`partial_name`, or None for any other name."""
    parts = name.split("/")
    if len(parts) != 3 or parts[0][:1] != "d" or not parts[0][1:].isdigit() or set(parts[1]) - set("mr"):
        return None
    k, bits, op = int(parts[0][1:]), parts[1], parts[2]
    if op not in ELEMENTWISE or ELEMENTWISE[op].boolean or k >= len(bits) or bits[k] == "m":
        return None
    try:
        syms, expr = element_formula(op, tuple(b == "m" for b in bits))
    except Exception:  # an arity the op does not take
        return None
    d = exact_partial(expr, syms[k])

    def element(*args):
        return d.xreplace({s: sympy.sympify(a) for s, a in zip(syms, args, strict=True)})

    ufunc = np.frompyfunc(element, len(bits), 1)

    def evaluate(values, params):
        result = ufunc(*values)
        return result if isinstance(result, np.ndarray) else _obj(result)

    return Elementwise(name, element), Primitive(name, evaluate)


# ufunc.reduce calls that are plain reductions: numpy.add.reduce(x) is numpy.sum(x).
UFUNC_REDUCTIONS = {"add": "sum", "multiply": "prod"}

# Filled by api_ops: name in each calling style -> front-end function.
NUMPY_API: dict[str, Callable] = {}
TORCH_API: dict[str, Callable] = {}
METHODS: dict[str, Callable] = {}
