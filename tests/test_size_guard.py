"""Size guard (symjac.budget) and int64 index tables of rolled loops (issue 12, item 5).

Oracles: the graph's own shapes (the estimate is a count, checked exactly), and the unrolled
kernel for the rolled one with int64 tables.
"""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

import symjac
from symjac import budget
from symjac.elements import rolling


def _message(excinfo):
    return str(excinfo.value)


def test_huge_jacobian_is_refused_before_any_memory_is_spent():
    start = time.perf_counter()
    with pytest.raises(budget.BuildTooLargeError) as excinfo:
        symjac.jacobian(lambda x: 2 * x, np.zeros(10**7), expand="elements")
    assert time.perf_counter() - start < 5  # was 90 s and 8 GB
    text = _message(excinfo)
    assert "10,000,000 input" in text and "20,000,000 symbolic elements" in text  # input + product
    assert "100,000,000,000,000 entries" in text  # the dense 1e7 x 1e7 result
    assert "GB" in text and "expand=" in text and "symjac.compile" in text and "SYMJAC_MAX_ELEMENTS" in text


def test_the_array_road_expands_nothing_but_refuses_a_huge_dense_result():
    start = time.perf_counter()
    with pytest.raises(budget.BuildTooLargeError) as excinfo:
        symjac.jacobian(lambda x: 2 * x, np.zeros(10**7))  # auto: sparse tangents, cheap to compute
    assert time.perf_counter() - start < 5
    text = _message(excinfo)
    assert "symbolic elements" not in text and "100,000,000,000,000 entries (800,000.0 GB)" in text
    assert "sparse='csr'" in text and "vjp/jvp" in text and "SYMJAC_MAX_ELEMENTS" in text
    x = np.linspace(0.0, 1.0, 3000)  # within the budget: the same road computes it
    J = symjac.jacobian(lambda a: np.sin(a) * 2, x)
    np.testing.assert_array_equal(J, np.diag(2 * np.cos(x)))


def test_int32_overflow_size_is_refused_with_the_estimate():
    with pytest.raises(budget.BuildTooLargeError, match="10,000,000,000 entries"):
        symjac.jacobian(lambda x: 2 * x, np.zeros(10**5))  # was an int32 OverflowError in rolling.py


def test_compile_is_guarded_and_suggests_sparse():
    with pytest.raises(budget.BuildTooLargeError) as excinfo:
        symjac.compile(lambda x: 2 * x, np.zeros(10**7))
    assert "sparse='csr'" in _message(excinfo) and _message(excinfo).startswith("symjac.compile")


def test_budget_is_configurable(monkeypatch):
    x = np.ones(50)
    monkeypatch.setattr(budget, "MAX_ELEMENTS", 60)  # input 50 + product 50 > 60
    with pytest.raises(budget.BuildTooLargeError, match="100 symbolic elements"):
        symjac.jacobian(lambda x: 3 * x, x, expand="elements")
    monkeypatch.setattr(budget, "MAX_ELEMENTS", 9)  # 2,304 result entries < 50 x 50
    with pytest.raises(budget.BuildTooLargeError, match="dense result of 2,500 entries"):
        symjac.jacobian(lambda x: 3 * x, x, expand="arrays")
    monkeypatch.setattr(budget, "MAX_ELEMENTS", None)
    monkeypatch.setenv("SYMJAC_MAX_ELEMENTS", "60")
    with pytest.raises(budget.BuildTooLargeError):
        symjac.jacobian(lambda x: 4 * x, x, expand="elements")
    monkeypatch.setenv("SYMJAC_MAX_ELEMENTS", "1000")
    for expand in ("elements", "arrays"):
        np.testing.assert_array_equal(symjac.jacobian(lambda x: 5 * x, x, expand=expand), 5 * np.eye(50))
    monkeypatch.setenv("SYMJAC_MAX_ELEMENTS", "lots")
    with pytest.raises(ValueError, match="SYMJAC_MAX_ELEMENTS"):
        budget.max_elements()


def test_dense_result_entries_count_separately(monkeypatch):
    monkeypatch.setattr(budget, "MAX_ELEMENTS", 1000)
    monkeypatch.setattr(budget, "RESULT_ENTRIES_PER_ELEMENT", 1)
    x = np.ones(40)  # 80 symbolic elements, but a 1600-entry dense Jacobian
    with pytest.raises(budget.BuildTooLargeError, match="1,600 entries"):
        symjac.jacobian(lambda x: 2 * x, x)
    cf = symjac.compile(lambda x: 2 * x, x, sparse="csr", cache=False)  # no dense result
    np.testing.assert_array_equal(cf(x).toarray(), 2 * np.eye(40))


def test_env_budget_reaches_a_subprocess():
    code = (
        "import numpy as np, symjac\n"
        "try:\n"
        "    symjac.jacobian(lambda x: x * x, np.ones(30))\n"
        "except MemoryError as e:\n"
        "    print('refused', type(e).__name__)\n"
    )
    env = dict(os.environ, SYMJAC_MAX_ELEMENTS="10", PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "refused BuildTooLargeError" in out.stdout, out.stderr


def test_index_tables_are_int32_until_they_must_be_int64():
    assert rolling._indices([[1, 2], [3, 2**31 - 1]]).dtype == np.int32
    wide = rolling._indices([[1, 2**31], [3, 4]])
    assert wide.dtype == np.int64 and wide[0, 1] == 2**31


def test_rolled_loops_with_int64_tables_equal_unrolled(monkeypatch):
    def rhs(y):
        return np.concatenate([y[1:] * y[:-1] - 0.5 * y[1:] ** 2, np.sin(y[:1])])

    y = np.linspace(0.1, 2.0, 40)
    monkeypatch.setattr(rolling, "ROLL_MIN_STATEMENTS", 0)
    monkeypatch.setattr(rolling, "ROLL_MIN_GROUP", 4)
    monkeypatch.setattr(rolling, "_indices", lambda values: np.array(values, dtype=np.int64))
    rolled = symjac.compile(rhs, y, cache=False)
    assert ".loop" in rolled.kernel.ir and "load i64" in rolled.kernel.ir  # 64-bit table entries
    monkeypatch.setattr(rolling, "ROLL_MIN_STATEMENTS", 10**9)
    unrolled = symjac.compile(rhs, y, cache=False)
    np.testing.assert_array_equal(rolled(y), unrolled(y))
    np.testing.assert_allclose(rolled(y), symjac.jacobian(rhs, y), rtol=1e-14)
