"""Exact views: formulas against hand-derived ones, the report against strict mode, pictures, CLI."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest
import sympy

import symjac

ROOT = pathlib.Path(__file__).parent.parent


def test_seed_examples_by_hand():
    view = symjac.symbolic(lambda x: x.exp().sum(dim=1), (2, 2))
    x = view.inputs[0]
    expected = sympy.Matrix(
        [[sympy.exp(x[0, 0]), sympy.exp(x[0, 1]), 0, 0], [0, 0, sympy.exp(x[1, 0]), sympy.exp(x[1, 1])]]
    )
    assert view.matrix == expected
    assert view.jacobian.shape == (2, 2, 2)
    view = symjac.symbolic(lambda x, y: 2 * x.exp() + 3 * y, (2,), (2,))
    x, y = view.inputs
    assert view.jacobian[0] == sympy.Array([[2 * sympy.exp(x[0]), 0], [0, 2 * sympy.exp(x[1])]])
    assert view.jacobian[1] == sympy.Array([[3, 0], [0, 3]])
    assert [str(s) for s in x] == ["x_0", "x_1"] and [str(s) for s in y] == ["y_0", "y_1"]


def test_two_link_arm_by_hand():
    from examples_models import two_link_arm

    view = symjac.symbolic(two_link_arm, (2,), names=["q"])
    q0, q1 = view.inputs[0]
    expected = sympy.Matrix(
        [
            [-sympy.sin(q0) - sympy.sin(q0 + q1) / 2, -sympy.sin(q0 + q1) / 2],
            [sympy.cos(q0) + sympy.cos(q0 + q1) / 2, sympy.cos(q0 + q1) / 2],
        ]
    )
    assert (view.matrix - expected).applyfunc(sympy.expand) == sympy.zeros(2, 2)
    assert str(q0) == "q_0"


def test_hessian_view():
    view = symjac.symbolic(lambda x: (x**3).sum(), (2,))
    x0, x1 = view.inputs[0]
    assert view.hessian == sympy.Array([[6 * x0, 0], [0, 6 * x1]])
    with pytest.raises(ValueError, match="single element"):
        symjac.symbolic(lambda x: x * 2, (2,)).hessian


def test_sparsity_and_report_agree_with_strict_mode():
    from examples_models import spring_chain

    view = symjac.symbolic(spring_chain, (6,), (6,))
    assert view.sparsity.shape == (12, 12)
    assert view.sparsity.sum() == sum(b.nonzeros for b in view.report())
    M = view.matrix
    assert all((M[r, c] != 0) == view.sparsity[r, c] for r in range(12) for c in range(12))
    x, v = np.linspace(0, 5, 6), np.ones(6)
    for b in view.report():

        def pair(a, w, b=b):
            return spring_chain(a, w)[b.output]

        if b.independent:
            with pytest.raises(
                RuntimeError,
                match=f"Output 0 of the user-provided function is independent of input {b.input}",
            ):
                symjac.jacobian(lambda a, w: pair(a, w), (x, v), strict=True)
    constant = {(b.output, b.input) for b in view.report() if b.constant}
    assert constant == {(0, 1), (1, 1)}  # velocity enters linearly


def test_program_listing_and_op_counts():
    view = symjac.symbolic(lambda x: (x[0] * x[1]).sin() * x, (2,))
    before, after = view.op_counts()
    assert after < before
    listing = view.listing()
    assert "J[0, 0] =" in listing and "sin" in listing


def test_latex_and_jupyter_forms():
    view = symjac.symbolic(lambda x: x.exp(), (2,))
    assert "e^{x_{0}}" in view.latex()
    assert view._repr_latex_().startswith("$$")
    assert "<table>" in view._repr_html_()


def test_spy_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    view = symjac.symbolic(lambda x, y: (x * y, x.sum() * y), (3,), (3,))
    path = view.spy(str(tmp_path / "s.png"))
    data = pathlib.Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_simplify_is_bounded():
    view = symjac.symbolic(lambda x: (x.sin() ** 2 + x.cos() ** 2) * x, (2,))
    simple = view.simplify(timeout=60)
    assert simple[0, 0] == 1 and simple[0, 1] == 0


def test_cli_show(tmp_path):
    png = tmp_path / "arm.png"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "symjac",
            "show",
            str(ROOT / "examples" / "models.py") + ":two_link_arm",
            "--shape",
            "2",
            "--names",
            "q",
            "--spy",
            str(png),
            "--latex",
            "-",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Exact Jacobian (2 output elements x 2 input elements)" in done.stdout
    assert "sin(q₀ + q₁)" in done.stdout or "sin(q_0 + q_1)" in done.stdout
    assert "J[0][0]" in done.stdout and "warm call" in done.stdout
    assert "\\sin" in done.stdout
    assert png.exists() and png.stat().st_size > 1000
    # progress only for stages over a second (issue 15), and then as "symjac: ..." log lines
    assert all(line.startswith("symjac: ") for line in done.stderr.splitlines()), done.stderr


def test_cli_errors():
    done = subprocess.run(
        [sys.executable, "-m", "symjac", "show", "nope.py:f", "--shape", "2"], capture_output=True, text=True
    )
    assert done.returncode != 0 and "no such file" in done.stderr


def test_standard_forms_visit_each_shared_subexpression_once(monkeypatch):
    # A Jacobian entry of a deep model shares subtrees (each layer reads the last twice): as a
    # tree it has about 2**depth nodes. standard() rebuilds each distinct subexpression once,
    # with the same result as replacing symjac's functions one class at a time.
    from symjac.trace import functions

    calls = []
    softplus = functions.STANDARD_FORMS[functions.Softplus]
    counted = lambda a: calls.append(a) or softplus(a)  # noqa: E731
    monkeypatch.setitem(functions.STANDARD_FORMS, functions.Softplus, counted)
    x = sympy.Symbol("x", real=True)
    e, depth = x, 8
    for _ in range(depth):
        e = functions.tanh(e) * 2 + functions.Softplus(e)
    got = functions.standard(e)
    assert len(calls) == depth
    assert not got.has(functions.Softplus, functions.tanh)
    small = functions.tanh(functions.Softplus(x)) + functions.Softplus(x) * x
    softplus_x = sympy.log(1 + sympy.exp(x))
    assert functions.standard(small) == sympy.tanh(softplus_x) + softplus_x * x
