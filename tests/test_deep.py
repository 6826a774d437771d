"""Deep expressions: no recursion limit on any road (issue 12, item 6).

A chain of ``sin`` about 150 deep raised RecursionError, and a raised recursion limit crashed
the interpreter. Oracle: the chain rule evaluated by a plain NumPy loop.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import sympy

import symjac
from symjac.elements import deep


def sin_chain(depth):
    def f(x):
        for _ in range(depth):
            x = np.sin(x)
        return x

    return f


def sin_chain_derivative(x, depth):
    d = np.ones_like(x)
    for _ in range(depth):
        d = d * np.cos(x)
        x = np.sin(x)
    return d


def test_compile_a_2000_deep_chain():
    x = np.array([0.5, -1.25])
    got = symjac.compile(sin_chain(2000), x, cache=False)(x)
    np.testing.assert_allclose(np.diag(got), sin_chain_derivative(x, 2000), rtol=1e-11)
    assert got[0, 1] == 0 and got[1, 0] == 0


def test_from_sympy_a_2000_deep_expression_with_the_disk_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMJAC_CACHE_DIR", str(tmp_path))
    q = sympy.Symbol("q", real=True)
    e = q
    for _ in range(2000):
        e = sympy.sin(e, evaluate=False)
    x = np.array([0.75])
    got = symjac.from_sympy(e, [q])(x)  # the cache key (srepr) recurses too
    np.testing.assert_allclose(got, sin_chain_derivative(x, 2000), rtol=1e-11)


def test_functional_api_past_the_old_limit():
    x = np.array([0.5])
    got = symjac.jacobian(sin_chain(170), x)  # RecursionError from about 150 on
    np.testing.assert_allclose(got[:, 0], sin_chain_derivative(x, 170), rtol=1e-12)


def test_deep_call_restores_the_limit_and_reraises():
    limit = sys.getrecursionlimit()

    def overflow(n):
        return 0 if n == 0 else 1 + overflow(n - 1)

    assert deep.call(overflow, 20_000) == 20_000  # past the default limit of 1000
    assert sys.getrecursionlimit() == limit
    with pytest.raises(ZeroDivisionError):
        deep.call(lambda: overflow(5_000) / 0)
    assert sys.getrecursionlimit() == limit


def test_no_crash_with_a_raised_limit_in_a_fresh_process():
    code = textwrap.dedent(
        """
        import sys, numpy as np, sympy, symjac
        sys.setrecursionlimit(1_000_000)  # the segfault: a raised limit on the main thread's stack
        q = sympy.Symbol("q", real=True)
        e = q
        for _ in range(3000):
            e = sympy.sin(e, evaluate=False)
        print(float(symjac.from_sympy(e, [q])(np.array([0.3]))[0]))
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    want = sin_chain_derivative(np.array([0.3]), 3000)[0]
    np.testing.assert_allclose(float(out.stdout.split()[-1]), want, rtol=1e-10)
