"""One derivative semantics on every road, in numerically safe forms (issue 12, items 2, 4, 9).

``symjac.compile`` (the tape: forward and reverse sweeps, single points and SIMD batches),
``symjac.from_sympy`` and the Hessian roads must give the numbers of the functional API
(``symjac.jacobian``, ``sympy.diff``) wherever it gives numbers: in the branch not taken of a
``where``, at the 0/0 points an exact formula defines, and where torch takes a subgradient.
Oracles: the functional API, torch autograd, and exact values (SymPy at 30 digits).
"""

import math

import mpmath
import numpy as np
import pytest
import sympy
from hypothesis import given
from hypothesis import strategies as st

import symjac

torch = pytest.importorskip("torch")


def _compiled(f, x, **options):
    return symjac.compile(f, x, cache=False, **options)


def _same(got, want):
    np.testing.assert_allclose(
        np.asarray(got, dtype=float), np.asarray(want, dtype=float), rtol=1e-12, atol=0
    )


# --- the cases -----------------------------------------------------------------------

X3 = np.array([-1.0, 0.0, 2.0])


@pytest.mark.parametrize(
    "f",
    [
        lambda x: symjac.where(x > 0, np.sqrt(x), 0 * x),  # NaN tangent in the branch not taken
        np.sinc,  # 0/0 at 0, defined by the exact formula
        lambda x: np.sqrt(x**2),
        lambda x: np.sqrt(x * x),
        lambda x: x / x,
        lambda x: symjac.where(x > 0, x * np.log(np.abs(x) + (x == 0)), x),
    ],
    ids=["where-sqrt", "sinc", "sqrt-square", "sqrt-x-times-x", "x-over-x", "where-log"],
)
def test_compile_equals_jacobian_forward_reverse_and_batch(f):
    want = symjac.jacobian(f, X3)
    assert np.isfinite(want).all()
    _same(_compiled(f, X3)(X3), want)  # forward sweep: 3 outputs, 3 inputs
    total = lambda x: f(x).sum()  # noqa: E731  -- reverse sweep: one output
    _same(_compiled(total, X3)(X3), symjac.jacobian(total, X3))
    _same(_compiled(total, X3, mode="hessian")(X3), symjac.hessian(total, X3))
    batch = np.tile(X3, (17, 1))
    _same(_compiled(f, X3)(batch), np.broadcast_to(want, (17, 3, 3)))


def test_from_sympy_selects_the_branch_taken():
    q = sympy.symbols("q0 q1", real=True)
    branch = sympy.Piecewise((sympy.sqrt(q[0]), q[0] > 0), (0, True)) * q[1]
    point = np.array([-1.0, 2.0])
    jac = symjac.from_sympy(sympy.Matrix([branch, branch * q[0]]), [q])(point)
    grad = symjac.from_sympy(branch, [q])(point)
    np.testing.assert_array_equal(jac, np.zeros((2, 2)))
    np.testing.assert_array_equal(grad, np.zeros(2))
    sinc = sympy.Piecewise((1, sympy.Eq(q[0], 0)), (sympy.sin(q[0]) / q[0], True))
    np.testing.assert_array_equal(symjac.from_sympy(sinc, [q])(np.zeros(2)), np.zeros(2))


# --- numerically safe forms, against torch ----------------------------------------------------


def _torch_jacobian(f, x):
    return torch.autograd.functional.jacobian(f, torch.tensor(x)).numpy()


def _s(x):
    return 1 / (1 + mpmath.exp(-x))


EXACT_DERIVATIVES = {  # at 50 digits (torch's float32 sigmoid' flushes 3.7e-44 at -100 to 0)
    "sigmoid": (torch.sigmoid, lambda x: _s(x) * _s(-x)),
    "silu": (torch.nn.functional.silu, lambda x: _s(x) * (1 + x * _s(-x))),
    "softplus": (torch.nn.functional.softplus, lambda x: 1 if x > 20 else _s(x)),  # torch's threshold 20
    "logsigmoid": (torch.nn.functional.logsigmoid, lambda x: _s(-x)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", EXACT_DERIVATIVES)
def test_activations_do_not_overflow(name, dtype):
    f, exact = EXACT_DERIVATIVES[name]
    x = np.array([-1000.0, -750.0, -710.0, -100.0, -89.0, 0.0, 89.0, 750.0], dtype=dtype)
    with mpmath.workdps(50):
        want = np.diag([float(exact(mpmath.mpf(float(v)))) for v in x]).astype(dtype)
    # float32 results from -89 on are denormal: a few of their (absolute) ulps, times |x| for silu
    tol = dict(rtol=1e-5, atol=1e-41) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-320)
    tx = torch.tensor(x)
    cf = _compiled(f, tx)
    for got in (symjac.jacobian(f, tx), cf(tx), np.asarray(cf(torch.tensor(np.tile(x, (9, 1)))))[3]):
        got = np.asarray(got)
        assert np.isfinite(got).all(), got  # was NaN from -89 (float32) and -710 (float64) on
        np.testing.assert_allclose(got, want, **tol)
    total = lambda x: f(x).sum()  # noqa: E731
    hess = np.asarray(_compiled(total, tx, mode="hessian")(tx))
    assert np.isfinite(hess).all(), hess
    np.testing.assert_allclose(
        hess, np.asarray(symjac.hessian(total, tx)), rtol=1e-5 if dtype == np.float32 else 1e-12
    )


@pytest.mark.parametrize("p", [3.0, 2.0, 1.0, 0.5, 0.0, -1.0])
def test_traced_power_at_zero_is_torchs(p):
    def f(x):
        return x[0] ** x[1]

    x = np.array([0.0, p])
    want = _torch_jacobian(f, x)
    np.testing.assert_array_equal(symjac.jacobian(f, x), want)
    np.testing.assert_array_equal(_compiled(f, x)(x), want)


@pytest.mark.parametrize(
    "name,f",
    [
        ("norm", torch.linalg.norm),
        ("vector_norm", torch.linalg.vector_norm),
        ("vector_norm3", lambda x: torch.linalg.vector_norm(x, ord=3)),
        ("tensor.norm", lambda x: x.norm()),
        ("std", torch.std),
        ("std_mean_dim", lambda x: torch.std(x, dim=0, correction=0)),
        ("atan2", lambda x: torch.atan2(x[0], x[1])),
    ],
)
def test_zero_subgradients_at_zero(name, f):
    x = np.zeros(3)
    want = _torch_jacobian(f, x)
    np.testing.assert_array_equal(want, np.zeros_like(want))
    tx = torch.tensor(x)
    np.testing.assert_array_equal(np.asarray(symjac.jacobian(f, tx)), want)
    np.testing.assert_array_equal(np.asarray(_compiled(f, tx)(tx)), want)
    y = np.array([0.3, -1.2, 2.0])  # away from 0, the ordinary derivative
    np.testing.assert_allclose(
        np.asarray(_compiled(f, torch.tensor(y))(torch.tensor(y))), _torch_jacobian(f, y), rtol=1e-12
    )


def test_atan2_keeps_the_sign_of_zero():
    x = np.array([-0.0, 1.0])
    f = lambda x: np.arctan2(x[0], x[1])  # noqa: E731
    value, _ = _compiled(f, x, value=True)(x)
    assert value == 0.0 and np.signbit(value)
    values, _ = _compiled(f, x, value=True)(np.tile(x, (9, 1)))
    assert np.signbit(values).all()
    np.testing.assert_array_equal(np.signbit(symjac.vjp(f, x, np.array(1.0))[0]), True)


def test_simd_tanh_derivative_matches_scalar_and_exact():
    xs = np.concatenate(
        [np.linspace(-40, 40, 801), np.linspace(340, 380, 41), [0.0, -0.0, 700, np.inf, np.nan]]
    )
    cf = _compiled(np.tanh, np.zeros(1))
    batch = cf(xs.reshape(-1, 1))[:, 0, 0]
    single = np.array([cf(np.array([x]))[0, 0] for x in xs])
    exact = np.array([float(1 / sympy.cosh(sympy.Float(x, 40)) ** 2) if np.isfinite(x) else 0.0 for x in xs])
    exact[np.isnan(xs)] = np.nan
    denormal = 4 * np.finfo(float).smallest_subnormal  # past |x| = 354 the values are denormal
    np.testing.assert_allclose(batch, single, rtol=4e-15, atol=denormal)  # was 2.4e-4 at |x| > 14
    np.testing.assert_allclose(single, exact, rtol=4e-15, atol=denormal)
    np.testing.assert_allclose(
        symjac.jacobian(np.tanh, xs[:50])[np.arange(50), np.arange(50)], exact[:50], rtol=4e-15
    )


# --- property: compile equals the functional API over an op set ------------------------------

OPS = {
    "where": lambda x: symjac.where(x > 0, np.sqrt(x), 0 * x),
    "clamp": lambda x: torch.clamp(x, -1.0, 1.0),
    "maximum": lambda x: torch.maximum(x, x.flip(0)),
    "relu": torch.relu,
    "abs": torch.abs,
    "sqrt": lambda x: torch.sqrt(torch.abs(x)),
    "sinc": torch.sinc,
    "sigmoid": torch.sigmoid,
    "silu": torch.nn.functional.silu,
    "softplus": torch.nn.functional.softplus,
    "logsumexp": lambda x: torch.logsumexp(x, 0),
    "pow": lambda x: torch.abs(x[0]) ** x[1],
    "atan2": lambda x: torch.atan2(x[0], x[1]),
    "norm": torch.linalg.norm,
    "std": torch.std,
    "x/x": lambda x: x / x,
    "tanh": torch.tanh,
}
SPECIAL = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    -2.0,
    30.0,
    -88.9,
    -89.5,
    -104.0,
    709.0,
    -710.0,
    -745.0,
    800.0,
    -1e300,
    1e300,
    math.inf,
    -math.inf,
]
# Tiny nonzero values are left out: there, formulas that cancel (sinc'' near 0) give rounding
# noise whose sign depends on the formula's form, on any road.
FLOATS = st.floats(-50, 50, allow_nan=False).filter(lambda v: v == 0 or abs(v) > 1e-3)
POINTS = st.lists(st.one_of(st.sampled_from(SPECIAL), FLOATS), min_size=2, max_size=2)
SCALAR = {"logsumexp", "pow", "atan2", "norm", "std"}
_KERNELS: dict = {}


def _kernels(name):
    """Compiled once per op (hypothesis draws only points): Jacobian and, for scalars, Hessian."""
    if name not in _KERNELS:
        f, x = OPS[name], torch.zeros(2, dtype=torch.float64)
        total = f if name in SCALAR else (lambda x: f(x).sum())
        _KERNELS[name] = (
            _compiled(f, x),
            _compiled(total, x, mode="hessian"),
            total,
        )
    return _KERNELS[name]


def _agree(got, want, atol=1e-300):
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=atol, equal_nan=True)


@pytest.mark.parametrize("name", OPS)
@given(point=POINTS)
def test_compile_agrees_with_the_functional_api(name, point):
    jac, hess, total = _kernels(name)
    x = torch.tensor(point, dtype=torch.float64)
    with np.errstate(all="ignore"):
        want = np.asarray(symjac.jacobian(OPS[name], x))
        _agree(jac(x), want)
        _agree(np.asarray(jac(torch.stack([x] * 9)))[4], want)  # SIMD lanes and the remainder
        if all(math.isfinite(v) and abs(v) < 1e150 for v in point):  # squares stay finite
            want = np.asarray(symjac.hessian(total, x))
            # the roads' formulas differ in form: rounding noise around exact zeros
            scale = sum(np.abs(w[np.isfinite(w)]).max(initial=0.0) for w in (want, np.asarray(jac(x))))
            _agree(hess(x), want, atol=1e-13 * scale + 1e-300)
