"""Model constants print as written: 9.81, 0.1 and 1e-3 in text, Unicode, LaTeX and Jupyter."""

from __future__ import annotations

import numpy as np
import pytest
import sympy

import symjac
from symjac.symbolic import latex, pretty, sstr


def _model(x):
    return np.stack([-9.81 * np.sin(x[0]), 0.1 * x[1] * x[0], 1e-3 * x[1] ** 2, 1e-5 * x[0]])


@pytest.fixture(scope="module")
def view():
    return symjac.symbolic(_model, (2,))


def test_text(view):
    text = repr(view)
    for written in ("-9.81*cos(x_0)", "0.1*x_1", "0.1*x_0", "0.002*x_1", "1e-05"):
        assert written in text, text
    assert "9.8100000000000005" not in text and "0.10000000000000001" not in text
    listing = view.listing()
    assert "J[0, 0] = -9.81*cos(x_0)" in listing and "0.002*x_1" in listing


def test_sympy_own_printing_inside_expressions(view):
    # SymPy's printers (view.matrix in a REPL) show the short form too: the Float has just enough digits
    assert str(view.matrix[0, 0]) == "-9.81*cos(x_0)"
    assert sympy.latex(view.matrix[2, 1]) == "0.002 x_{1}"


def test_pretty(view):
    art = view.pretty()
    assert "-9.81⋅cos(x₀)" in art and "0.1⋅x₁" in art and "0.002⋅x₁" in art and "1e-05" in art
    assert "9.8100000000000005" not in art


def test_latex_and_jupyter(view):
    tex = view.latex()
    assert r"- 9.81 \cos{\left(x_{0} \right)}" in tex
    assert "0.1 x_{1}" in tex and "0.002 x_{1}" in tex and r"1 \cdot 10^{-5}" in tex
    assert view._repr_latex_() == f"$${tex}$$"
    assert tex in view._repr_html_()


@pytest.mark.parametrize("value", [9.81, 0.1, 1e-3, 1 / 3, 0.1 + 0.2, 6.02e23, -2.5e-7])
def test_every_float_prints_its_shortest_round_trip(value):
    from symjac.trace.ops import number

    constant = number(value)
    assert float(constant) == value  # exact: the kernel computes with this double
    assert sstr(constant) == repr(value)
    assert float(pretty(constant)) == value
    assert float(latex(constant).replace(r" \cdot 10^{", "e").rstrip("}")) == value


def test_exact_rationals_stay_fractions():
    view = symjac.symbolic(lambda x: 0.5 * x**2 + 0.25 * x, (1,))
    assert str(view.matrix) == "Matrix([[x_0 + 1/4]])"  # 0.5 and 0.25 are exactly 1/2 and 1/4
