"""Small interface points: Linearization indexes like a result tuple, c_source's named tuple,
from_sympy's advice for dynamic symbols."""

from __future__ import annotations

import numpy as np
import pytest
import sympy

import symjac


def test_linearization_indexes_like_a_result_tuple():
    pendulum = lambda x, u: np.stack([x[1], -9.81 * np.sin(x[0]) + u[0]])  # noqa: E731
    lin = symjac.linearize(pendulum, np.zeros(2), np.zeros(1))
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
