"""Jacobians and Hessians against central differences of the same NumPy code (no torch needed)."""

import numpy as np
import pytest
from cases import CASES, numpy_ns

import symjac


def _central(f, xs, j, eps=1e-6):
    x = xs[j]
    base = f(*xs)
    outs = base if isinstance(base, tuple) else (base,)
    cols = [[] for _ in outs]
    for k in range(x.size):
        step = np.zeros(x.size)
        step[k] = eps
        plus = list(xs)
        minus = list(xs)
        plus[j] = x + step.reshape(x.shape)
        minus[j] = x - step.reshape(x.shape)
        fp, fm = f(*plus), f(*minus)
        fp, fm = (fp if isinstance(fp, tuple) else (fp,)), (fm if isinstance(fm, tuple) else (fm,))
        for i in range(len(outs)):
            cols[i].append((np.asarray(fp[i], float) - np.asarray(fm[i], float)) / (2 * eps))
    return [
        np.stack(c, axis=-1).reshape(np.shape(o) + x.shape) if c else np.zeros(np.shape(o) + x.shape)
        for c, o in zip(cols, outs)
    ]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_jacobian_matches_central_differences(case, rng):
    f = case.fn(numpy_ns())
    inputs = case.inputs(rng)
    xs = inputs if isinstance(inputs, tuple) else (inputs,)
    J = symjac.jacobian(f, inputs)
    out = f(*xs)
    out_tuple, in_tuple = isinstance(out, tuple), isinstance(inputs, tuple)
    for j in range(len(xs)):
        for i, expected in enumerate(_central(f, xs, j)):
            block = J[i][j] if out_tuple and in_tuple else J[i] if out_tuple else J[j] if in_tuple else J
            np.testing.assert_allclose(block, expected, rtol=1e-5, atol=1e-6, err_msg=f"J[{i}][{j}]")


@pytest.mark.parametrize(
    "case",
    [
        c
        for c in CASES
        if c.name in ("poly", "tanh_mlp", "quadratic_form", "robot_2link", "log_sqrt", "prod", "exp_adder")
    ],
    ids=lambda c: c.name,
)
def test_hessian_matches_differences_of_the_gradient(case, rng):
    f = case.fn(numpy_ns())
    inputs = case.inputs(rng)
    xs = inputs if isinstance(inputs, tuple) else (inputs,)

    def scalar(*a):
        out = f(*a)
        return sum(np.sum(o) for o in (out if isinstance(out, tuple) else (out,)))

    def grad(*a):
        g = symjac.jacobian(scalar, a if isinstance(inputs, tuple) else a[0])
        return tuple(g) if isinstance(g, tuple) else g

    H = symjac.hessian(scalar, inputs)
    for j in range(len(xs)):
        for i, expected in enumerate(_central(grad, xs, j)):
            block = H[i][j] if isinstance(inputs, tuple) else H
            np.testing.assert_allclose(block, expected, rtol=1e-5, atol=1e-6)


def test_nonsmooth_points_follow_torch():
    # torch-semantics.md section 8 and 11.6/11.7
    z = np.zeros(2)
    assert np.array_equal(symjac.jacobian(np.abs, z), np.zeros((2, 2)))
    assert np.array_equal(symjac.jacobian(lambda a: np.maximum(a, 0.0), z), 0.5 * np.eye(2))
    assert np.array_equal(symjac.jacobian(lambda a: np.clip(a, 0.0, 1.0), z), np.eye(2))
    assert np.array_equal(symjac.jacobian(lambda a: a**2.5, z), np.zeros((2, 2)))
    J = symjac.jacobian(np.sqrt, z)
    assert np.isinf(J[0, 0]) and J[0, 1] == 0.0  # exact zeros stay zero (torch gives nan)
    J = symjac.jacobian(lambda a: a**2, np.array([np.nan, 1.0]))
    assert np.isnan(J[0, 0]) and J[1, 0] == 0.0 and J[1, 1] == 2.0
