"""Lowering: one small golden check per lowering family; every module verifies."""

import llvmlite.binding as llvm
import numpy as np
import pytest
import sympy

import symjac
from symjac import functional
from symjac.backend.codegen import lower_program
from symjac.elements.simplify import F64_REGION, build_program

x, y = sympy.symbols("x y", real=True)


def _ir(expr, compute="float64"):
    program = build_program([(F64_REGION, 0, expr)], {x: 0, y: 1}, compute)
    module = lower_program(program, "k")
    text = str(module)
    llvm.parse_assembly(text).verify()
    return text


def test_integer_powers_are_multiplications():
    text = _ir(x**5)
    assert "llvm.pow" not in text and text.count("fmul") == 3
    assert "fdiv" in _ir(x**-2)


def test_half_powers_use_sqrt():
    text = _ir(x ** sympy.Rational(3, 2))
    assert "llvm.sqrt" in text and "llvm.pow" not in text
    assert "llvm.pow" in _ir(x**y)


def test_intrinsics_and_libm():
    assert "llvm.exp.f64" in _ir(sympy.exp(x))
    assert '@"tanh"(' in _ir(sympy.tanh(x))
    assert '@"tanhf"(' in _ir(sympy.tanh(x), "float32")


def test_piecewise_is_select():
    text = _ir(sympy.Piecewise((x, x > 0), (y, True)))
    assert "select" in text and "fcmp ogt" in text and "br " not in text


@pytest.mark.parametrize(
    "cond",
    [
        sympy.ITE(x > 0, y > 0, x < -1),
        sympy.Xor(x > 0, y > 0),
        sympy.Implies(x > 0, y > 0),
        sympy.Equivalent(x > 0, y > 0),
    ],
    ids=["ITE", "Xor", "Implies", "Equivalent"],
)
def test_boolean_forms_that_sympy_makes_of_nested_conditions_lower(cond):
    # SymPy folds where(c1, where(c2, ...), ...) conditions into ITE; such kernels failed to build
    e = sympy.Piecewise((x * y, cond), (y**2, True))
    cf = symjac.from_sympy(e, [x, y], value=True)
    J = sympy.Matrix([e]).jacobian([x, y])
    for a in (-2.0, -0.5, 0.5):
        for b in (-1.0, 1.0):
            value, jac = cf(np.array([a, b]))
            assert value == float(e.subs({x: a, y: b}))
            np.testing.assert_array_equal(jac.ravel(), np.array(J.subs({x: a, y: b}), dtype=float).ravel())


def test_division_by_small_integers_is_exact():
    assert "fdiv" in _ir(x / 3)


def test_unknown_class_names_itself():
    with pytest.raises(NotImplementedError, match="gamma"):
        _ir(sympy.gamma(x))


def test_generated_modules_verify_for_all_apis():
    f = lambda a, b: (a.sin() * b).sum() + (a**3).sum() * b.cos().sum()  # noqa: E731
    a, b = np.array([0.1, 0.2]), np.array([0.3, 0.4])
    functional._KERNELS.data.clear()
    functional._READY.data.clear()  # the warm path's handle on the same kernels
    symjac.jacobian(f, (a, b), expand="elements")
    symjac.hessian(f, (a, b))
    symjac.hvp(f, (a, b), (a, b))
    symjac.vhp(f, (a, b), (a, b))
    kernels = [cf._ensure_built() for cf, _ in functional._KERNELS.data.values()]
    assert len(kernels) == 4
    for kernel in kernels:
        llvm.parse_assembly(kernel.ir).verify()
        assert 'define void @"symjac_kernel"(ptr noalias' in kernel.ir


def test_float32_kernels_compute_in_float32():
    symjac.jacobian(lambda a: a.exp() * 2, np.ones(3, dtype=np.float32), expand="elements")
    irs = [cf.ir for cf, _ in functional._KERNELS.data.values()]
    assert any("llvm.exp.f32" in text for text in irs)


def test_sparse_results_store_only_nonzeros():
    x = np.ones(50)
    symjac.jacobian(lambda a: a**2, x, expand="elements")
    cf = next(cf for k, (cf, _) in functional._KERNELS.data.items() if k[1].shape(k[1].outputs[0]) == (50,))
    assert cf.ir.count("store double") == 50  # the diagonal, not 2500 entries


def test_large_work_shows_progress(capfd, monkeypatch):
    monkeypatch.setenv("SYMJAC_PROGRESS", "1")
    symjac.jacobian(lambda a: a.sin() * 1.25, np.ones(3), expand="elements")
    err = capfd.readouterr().err
    assert "differentiating the expression DAG" in err and "compiling" in err and "done in" in err
    monkeypatch.setenv("SYMJAC_PROGRESS", "0")
    symjac.jacobian(lambda a: a.sin() * 1.5, np.ones(3))
    assert capfd.readouterr().err == ""
