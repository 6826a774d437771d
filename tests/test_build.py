"""How symjac.compile builds: light arithmetic, product lowering, the paused collector.

Oracles: SymPy's evaluated arithmetic (what inspection prints), NumPy on the same formulas,
and symjac.jacobian (sympy.diff on evaluated forms) for the derivatives.
"""

import gc

import numpy as np
import pytest
import sympy

import symjac
from symjac.backend.gcpause import gc_paused
from symjac.trace import arith

x, y, z = sympy.symbols("x y z", real=True)


def test_light_arithmetic_folds_numbers_and_identities_as_sympy_does():
    with arith.light():
        assert arith.add(x, sympy.S.Zero) is x
        assert arith.add(sympy.Float(0.0), x) is x
        assert arith.mul(sympy.S.Zero, x) == 0
        assert arith.mul(sympy.Float(1.0), x) is x
        assert arith.power(x, sympy.S.One) is x
        assert arith.power(x, sympy.S.Zero) == 1
        assert arith.add(sympy.Integer(2), sympy.Integer(3)) == 5
        assert arith.sub(x, sympy.S.Zero) is x
        six_x = arith.mul(sympy.Integer(2), arith.mul(sympy.Integer(3), x))
        assert six_x.args == (6, x)


def test_light_arithmetic_flattens_but_never_collects_sorts_or_distributes():
    with arith.light():
        twice = arith.add(x, x)
        assert isinstance(twice, sympy.Add) and twice.args == (x, x)  # SymPy: 2*x
        spread = arith.mul(sympy.Integer(2), arith.add(x, y))
        assert isinstance(spread, sympy.Mul) and spread.args[0] == 2  # SymPy: 2*x + 2*y
        flat = arith.add(arith.add(z, y), arith.add(x, sympy.Integer(1)))
        assert flat.args == (1, z, y, x)  # numbers first, the rest in order written
        third = arith.div(x, sympy.Integer(3))
        assert third.args == (sympy.Rational(1, 3), x)  # lowered as x/3, not x*0.333...
        quotient = arith.div(x, y)
        assert quotient.args == (x, sympy.Pow(y, -1, evaluate=False))
    assert arith.add(x, x) == 2 * x  # outside light(), SymPy's evaluated forms
    assert arith.mul(sympy.Integer(2), x + y) == 2 * x + 2 * y


def test_light_and_evaluated_forms_have_the_same_value(rng):
    a, b = sympy.Float(0.3), sympy.Rational(-5, 7)

    def build():
        s = arith.add(arith.mul(a, x), arith.sub(y, arith.mul(b, z)))
        q = arith.div(arith.power(s, sympy.Integer(3)), arith.add(arith.mul(x, x), sympy.Integer(2)))
        return arith.total([q, arith.neg(arith.product([x, y, z, s])), arith.div(q, sympy.Integer(3))])

    evaluated = build()
    with arith.light():
        light = build()
    assert light != evaluated  # a different tree ...
    points = rng.uniform(-2, 2, (50, 3))
    f, g = (sympy.lambdify((x, y, z), e, "math") for e in (evaluated, light))
    for p in points:
        assert f(*p) == pytest.approx(g(*p), rel=1e-13, abs=1e-13)  # ... with the same value


def test_compiled_structural_cases_keep_their_meaning(rng):
    def func(v):
        zero = 0 * v[0]
        return np.stack([v[0] - v[0] + v[1], zero + v[2], 2.5 * (v[0] + v[1]) / 3.0, v[1] / v[2] ** 2])

    x0 = rng.uniform(0.5, 1.5, 3)
    cf = symjac.compile(func, x0, cache=False)
    np.testing.assert_allclose(cf(x0), symjac.jacobian(func, x0), rtol=1e-14, atol=1e-15)
    pattern = symjac.compile(func, x0, cache=False, sparse="csr").sparsity().toarray()
    assert not pattern[1, 0]  # 0*x is folded away: no entry
    assert pattern[0, 0]  # x - x is a sum whose derivative is an explicit zero, as in torch


def test_symbolic_views_keep_sympy_evaluated_forms():
    view = symjac.symbolic(lambda v: v + v + 2 * (v + 1), (1,))
    assert view.matrix == sympy.Matrix([[4]])


@pytest.mark.parametrize(
    "expr",
    [
        x / 3 - 2.5 * x / y**2,
        y * x**-70 + (-x) * y / (7 * z**3),
        sympy.Rational(-3, 7) * x * y + sympy.Float(-0.1) * z,
        -sympy.Float(3.0) / x - 1 / (x * y) + sympy.Rational(5, 3) / x**2,
        sympy.Mul(sympy.Float(-2.0), x, y, evaluate=False)
        + sympy.Mul(x, sympy.Pow(y, -1, evaluate=False), evaluate=False),
    ],
    ids=str,
)
def test_products_lower_to_their_value(expr, rng):
    cf = symjac.from_sympy([expr], [x, y, z], value=True, cache=False)
    f = sympy.lambdify((x, y, z), expr, "math")
    for p in rng.uniform(0.5, 2.0, (20, 3)):
        value, _ = cf(p)
        assert value[0] == pytest.approx(f(*p), rel=1e-14)


@pytest.mark.parametrize("enabled", [True, False])
def test_gc_paused_leaves_the_collector_as_it_found_it(enabled):
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        with pytest.raises(RuntimeError), gc_paused():
            assert not gc.isenabled()
            raise RuntimeError("a failing build")
        assert gc.isenabled() == enabled
    finally:
        (gc.enable if was else gc.disable)()
