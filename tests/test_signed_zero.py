"""Constant negative zeros keep their sign on every road (issue 12): NumPy is the value oracle,
torch autograd the derivative oracle."""

import numpy as np
import pytest

import symjac
from symjac.trace import signed_zero

torch = pytest.importorskip("torch")

X = np.array([-1.0, 2.0, -0.0, 0.0, 3.0, -3.0])
MIXED = [-0.0, 1.0, -0.0, -0.0, 2.0, 0.0]

# (NumPy form, torch form) of each op whose value reads the sign of a constant zero
CASES = {
    "arctan2(-0.0, x)": (
        lambda x: np.arctan2(-0.0, x),
        lambda x: torch.atan2(torch.tensor(-0.0).double(), x),
    ),
    "arctan2(-0 array, x)": (
        lambda x: np.arctan2(-0.0 * np.ones(6), x),
        lambda x: torch.atan2(-0.0 * torch.ones(6).double(), x),
    ),
    "arctan2(mixed, x)": (
        lambda x: np.arctan2(np.array(MIXED), x),
        lambda x: torch.atan2(torch.tensor(MIXED).double(), x),
    ),
    "arctan2(x, -0.0)": (
        lambda x: np.arctan2(x, -0.0 * np.ones(6)),
        lambda x: torch.atan2(x, -0.0 * torch.ones(6).double()),
    ),
    "arctan2(x, mixed)": (
        lambda x: np.arctan2(x, np.array(MIXED)),
        lambda x: torch.atan2(x, torch.tensor(MIXED).double()),
    ),
    "copysign(x, -0.0)": (
        lambda x: np.copysign(x, -0.0),
        lambda x: torch.copysign(x, torch.tensor(-0.0).double()),
    ),
    "copysign(x, mixed)": (
        lambda x: np.copysign(x, np.array(MIXED)),
        lambda x: torch.copysign(x, torch.tensor(MIXED).double()),
    ),
    "copysign(x * x, x)": (lambda x: np.copysign(x * x, x), lambda x: torch.copysign(x * x, x)),
    "x / -0.0": (lambda x: x / -0.0, lambda x: x / -0.0),
    "x / 0.0": (lambda x: x / 0.0, lambda x: x / 0.0),
    "x / 0": (lambda x: x / 0, lambda x: x / 0),
    "x / mixed": (lambda x: x / np.array(MIXED), lambda x: x / torch.tensor(MIXED).double()),
    "floor_divide(x, mixed)": (
        lambda x: np.floor_divide(x, np.array(MIXED)),
        None,  # torch has no floor_divide derivative; torch.floor's is 0 everywhere
    ),
    "(-0.0) ** x": (lambda x: np.power(-0.0, x), lambda x: torch.pow(torch.tensor(-0.0).double(), x)),
    "mixed ** (x - 2)": (
        lambda x: np.array(MIXED) ** (x - 2),
        lambda x: torch.tensor(MIXED).double() ** (x - 2),
    ),
}


def _same(got, want):
    """Equal values, NaN where NumPy has NaN, and the same sign of every zero."""
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert np.array_equal(np.signbit(got), np.signbit(want)), (got, want)


@pytest.mark.parametrize("name", list(CASES))
def test_value_keeps_the_sign_of_zero(name):
    f = CASES[name][0]
    with np.errstate(all="ignore"):
        want = f(X)
    ones = np.ones_like(X)
    for road in ("elements", "arrays"):
        _same(symjac.vjp(f, X, ones, expand=road)[0], want)
    _same(symjac.compile(f, X, value=True)(X)[0], want)
    sympy = pytest.importorskip("sympy")
    names = sympy.symbols("x_0:6", real=True)
    outputs = list(symjac.symbolic(f, X).outputs[0].flat)
    with np.errstate(all="ignore"):
        got = np.array(sympy.lambdify([names], outputs, modules="numpy")(X), dtype=float)
    np.testing.assert_array_equal(got, want)  # printed formulas: signs of zero results aside


@pytest.mark.parametrize("name", list(CASES))
def test_derivative_matches_torch(name):
    f, tf = CASES[name]
    if tf is None:
        tf = lambda x: x * 0.0  # noqa: E731
    # Every case is elementwise: torch's backward with a ones seed gives the diagonal (its full
    # Jacobian has 0 * inf = nan off the diagonal, where the exact derivative is 0).
    x = torch.tensor(X, requires_grad=True)
    tf(x).backward(torch.ones(6, dtype=torch.float64))
    want = np.diag(x.grad.numpy())
    for road in ("elements", "arrays"):
        np.testing.assert_array_equal(symjac.jacobian(f, X, expand=road), want)
    np.testing.assert_array_equal(symjac.compile(f, X)(X), want)


def test_cache_tells_negative_from_positive_zero():
    # One closure, two constants: a graph that confused them would reuse the first kernel.
    for c in (-0.0, 0.0, -0.0):
        f = lambda x, c=c: np.arctan2(c, x)  # noqa: E731
        want = np.arctan2(c, -1.0)
        assert symjac.vjp(f, np.array(-1.0), np.array(1.0))[0] == want
        assert symjac.compile(f, np.array(-1.0), value=True)(np.array(-1.0))[0] == want


def test_graphs_tell_negative_from_positive_zero():
    from symjac.functional import _Call

    def graph(c):
        return _Call(lambda x: x + c, (np.zeros(2),), False, "test").graph

    assert graph(-0.0) != graph(0.0)
    assert graph(-0.0) == graph(-0.0)
    assert repr(graph(-0.0).canonical()) != repr(graph(0.0).canonical())  # the disk cache's key


def test_ordinary_constants_are_not_rewritten():
    assert signed_zero.negative_zeros(0.0) is None
    assert signed_zero.negative_zeros(np.array([1.0, 0.0, -2.0])) is None
    assert signed_zero.negative_zeros(np.array([1.0, -0.0])).tolist() == [False, True]
