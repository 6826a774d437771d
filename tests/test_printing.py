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
    from symjac.ops import number

    constant = number(value)
    assert float(constant) == value  # exact: the kernel computes with this double
    assert sstr(constant) == repr(value)
    assert float(pretty(constant)) == value
    assert float(latex(constant).replace(r" \cdot 10^{", "e").rstrip("}")) == value


def test_exact_rationals_stay_fractions():
    view = symjac.symbolic(lambda x: 0.5 * x**2 + 0.25 * x, (1,))
    assert str(view.matrix) == "Matrix([[x_0 + 1/4]])"  # 0.5 and 0.25 are exactly 1/2 and 1/4


def test_progress_is_silent_for_short_stages_and_logs_long_ones(monkeypatch, caplog):
    import logging
    import time

    from symjac import progress

    monkeypatch.delenv("SYMJAC_PROGRESS", raising=False)
    monkeypatch.setattr(progress, "AFTER", 0.05)
    with caplog.at_level(logging.INFO, logger="symjac"):
        with progress.stage("quick stage", 10):
            pass
        assert not caplog.records
        with progress.Progress("slow stage", 10) as p:
            time.sleep(0.3)
            p.update(10)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "slow stage (10) ..." and messages[1] == "slow stage: 100%"
    assert messages[-1].startswith("slow stage: done in ")
    progress.configure(enabled=False)
    try:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="symjac"):
            with progress.Progress("silenced", 1):
                time.sleep(0.1)
        assert not caplog.records
    finally:
        progress.configure(None)


def test_least_squares_example_prints_no_progress():
    import os
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k != "SYMJAC_PROGRESS"}
    env["PYTHONPATH"] = str(root)
    done = subprocess.run(
        [sys.executable, str(root / "examples" / "least_squares_fit.py")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    # a build under a second says nothing; a slower one (a loaded machine) logs through one channel
    assert all(line.startswith("symjac: ") for line in done.stderr.splitlines()), done.stderr
    assert "%" not in done.stderr or "done in" in done.stderr


def test_linearization_indexes_like_a_result_tuple():
    lin = symjac.linearize(lambda x, u: np.stack([x[1], -9.81 * np.sin(x[0]) + u[0]]), np.zeros(2), np.zeros(1))
    A, B = lin[:2]
    assert len(lin) == 2 and lin[0] is lin.A and lin[-1] is lin.B and A is lin.A and B is lin.B
    np.testing.assert_array_equal(lin.A, [[0.0, 1.0], [-9.81, 0.0]])


def test_c_source_is_a_named_tuple():
    cf = symjac.compile(lambda x: np.sin(x) * 9.81, np.zeros(2))
    code = cf.c_source("k")
    source, header = code
    assert code.source is source and code.header is header
    assert "void k(" in header and '#include "k.h"' in source


def test_from_sympy_explains_dynamic_symbols():
    mechanics = pytest.importorskip("sympy.physics.mechanics")
    q = mechanics.dynamicsymbols("q0:2")
    with pytest.raises(TypeError, match=r"inputs must be symbols, got q0\(t\).*xreplace"):
        symjac.from_sympy(sympy.Matrix([q[0] ** 2]), [q])
    with pytest.raises(TypeError, match=r"outputs contain undefined functions q0\(t\).*xreplace"):
        symjac.from_sympy(sympy.Matrix([q[0] ** 2]), [sympy.symbols("q0:2")])
