"""Factories called by compiled code inside the user's call stay NumPy's (symjac.trace.callsite).

NumPy's random generators (Cython) call ``np.empty`` for their result from inside the user's
``rng.standard_normal(...)``; while a trace ran, that call got a traced constant and C code read it
as an array's memory: a segmentation fault, or garbage Jacobians.
"""

import subprocess
import sys

import numpy as np

import symjac


def test_random_numbers_drawn_inside_the_function_are_constants():
    def f(x):
        W = np.random.default_rng(0).standard_normal((4, 8))  # Cython calls np.empty here
        return np.tanh(W @ x)

    x = np.linspace(-1.0, 1.0, 8)
    W = np.random.default_rng(0).standard_normal((4, 8))
    want = (1 - np.tanh(W @ x) ** 2)[:, None] * W
    for expand in ("auto", "elements", "arrays"):
        np.testing.assert_allclose(symjac.jacobian(f, x, expand=expand), want, rtol=1e-13, atol=1e-14)
    cf = symjac.compile(f, x)
    np.testing.assert_allclose(cf(x), want, rtol=1e-13, atol=1e-14)


def test_the_crash_is_gone_in_a_fresh_process():
    # the first call after import is where the freed memory was read (a crash more often than not)
    script = (
        "import numpy as np, symjac\n"
        "f = lambda x: (np.random.default_rng(0).standard_normal((4, 8)) @ x).sum()\n"
        "print(symjac.jacobian(f, np.zeros(8)).tolist())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    want = np.random.default_rng(0).standard_normal((4, 8)).sum(axis=0)
    np.testing.assert_allclose(np.array(eval(done.stdout)), want, rtol=1e-14)


def test_the_users_own_factory_calls_are_still_traced():
    def f(x):
        a = np.zeros(3)  # by attribute
        a[0] = x[0] * 2
        a[1:] = x[1:] ** 2
        zeros = np.zeros  # by a name bound while tracing
        b = zeros(2)
        b[1] = x[0]
        c = np.array([x[0], 1.0])  # a literal holding a traced value
        t = np.random.default_rng(1).standard_normal(3)
        return a * t + np.concatenate([b, c]).sum()

    x = np.array([0.5, -1.5, 2.0])
    t = np.random.default_rng(1).standard_normal(3)
    want = np.diag([2 * t[0], 2 * x[1] * t[1], 2 * x[2] * t[2]])
    want[:, 0] += 2.0
    np.testing.assert_allclose(symjac.jacobian(f, x), want, rtol=1e-14)
