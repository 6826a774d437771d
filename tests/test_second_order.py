"""Second derivatives on the array road (forward mode over reverse mode) against independent oracles.

Each structural op's transpose is checked through hessian, hvp and vhp against the element road
(SymPy's exact derivative per element), and the sizes the old forward mode of second order could
not reach against analytic Hessians.
"""

import numpy as np
import pytest

import symjac
from symjac import arrays, functional

try:  # imported before tracing: symjac swaps SciPy's functions that are loaded when a trace starts
    from scipy import special
except ImportError:  # scipy is a test extra
    special = None

ULPS = dict(rtol=1e-12, atol=1e-13)
rng0 = np.random.default_rng(7)
W = rng0.standard_normal((3, 4))
B3 = rng0.standard_normal((2, 4, 3))

# (name, scalar function of one input, input shape): every op with a transpose rule, in ways
# that reach its awkward cases (broadcasts, repeated and masked indices, ties, '...').
CASES = [
    ("reshape-transpose", lambda a: (np.tanh(a.reshape(3, 4)).T @ W).sum() ** 2, (12,)),
    ("broadcast", lambda a: (np.sin(a[:, None] * a[None, :2]) * np.cos(a)[:, None]).sum(), (5,)),
    ("broadcast_to", lambda a: (np.broadcast_to(a, (3, 4)) ** 3 * W).sum(), (4,)),
    (
        "getitem repeated",
        lambda a: (np.exp(a[np.array([0, 2, 2, 1, 0])]) * a[np.array([1, 1, 3, 0, 2])]).sum(),
        (4,),
    ),
    ("getitem mask", lambda a: (a[np.array([True, False, True, True])] ** 3).sum() * a[1], (4,)),
    ("getitem slices", lambda a: (a.reshape(2, 3)[:, 1:] ** 2 * a[::-2][:, None][:2, :2].T).sum(), (6,)),
    ("setitem", lambda a: _setitem(a, np.array([1, 3])), (5,)),
    ("setitem repeated", lambda a: _setitem(a, np.array([3, 1, 3])), (5,)),
    ("setitem leading axes", lambda a: _assign_rows(a), (6,)),
    ("0-d masks", lambda a: (a[True] ** 3).sum() * a[0] + (a.reshape(2, 3)[True, 1] ** 2).sum(), (6,)),
    (
        "concat-stack",
        lambda a: (
            (np.concatenate([np.sin(a), a**2]) @ np.stack([a, np.cos(a)], axis=1).reshape(8, 1)).sum() ** 2
        ),
        (4,),
    ),
    ("cumsum", lambda a: (np.cumsum(np.tanh(a).reshape(2, 3), axis=1) ** 3).sum(), (6,)),
    ("max ties", lambda a: (np.max(np.stack([a**3, a**3 * 1.0]), axis=0) * a).sum() ** 2, (6,)),
    (
        "min keepdims",
        lambda a: (np.min(a.reshape(2, 3), axis=0, keepdims=True) * a.reshape(2, 3)).sum(),
        (6,),
    ),
    (
        "logsumexp",
        lambda a: (special.logsumexp(a.reshape(2, 3) ** 2, axis=1, keepdims=True) * a.reshape(2, 3)).sum(),
        (6,),
    ),
    ("matmul vector", lambda a: (a[:4] @ W.T @ np.tanh(W @ a[4:])) ** 2, (8,)),
    (
        "matmul batch broadcast",
        lambda a: (np.sin(a.reshape(1, 3, 4) @ B3) @ a.reshape(1, 3, 4)).sum() ** 2,
        (12,),
    ),
    (
        "einsum ellipsis",
        lambda a: (np.einsum("...i,...i->...", a.reshape(3, 2), np.exp(a).reshape(3, 2)) ** 2).sum(),
        (6,),
    ),
    ("einsum lone letter", lambda a: np.einsum("ij,k->i", np.sin(a.reshape(2, 3)), a[:2]).sum() ** 2, (6,)),
    ("einsum three operands", lambda a: np.einsum("i,ij,j->", a[:3], W, np.tanh(a[3:])) ** 2, (7,)),
    ("sum axes", lambda a: (np.sum(np.exp(a.reshape(2, 3)), axis=0) ** 2).sum(), (6,)),
    ("where", lambda a: symjac.where(a > 0, a**3, np.sin(a)).sum() * a.sum(), (5,)),
]


def _assign_rows(a):
    b = a * 1.0
    b[1:4] = (a[:3] ** 2).reshape(1, 3)  # NumPy takes a (1, 3) value for a (3,) slot
    b[4:] = np.sin(a[3:5]).reshape(1, 1, 2)
    return (b**3 * a).sum()


def _setitem(a, index):
    b = a * 1.0
    b[index] = np.exp(a[: len(index)]) * a[4]
    return (b * b * a).sum()


@pytest.mark.parametrize("name, fn, shape", CASES, ids=[c[0] for c in CASES])
def test_second_derivatives_of_structural_ops_match_the_element_road(name, fn, shape):
    if special is None and name == "logsumexp":
        pytest.skip("scipy (a test extra) is not installed")
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape)
    call = functional._Call(fn, (x,), False, "t")
    assert not arrays.second.unsupported_ops(call.graph), name
    v = rng.standard_normal(shape)
    for api, rest in (("hessian", ()), ("hvp", (v,)), ("vhp", (v,))):
        oracle = getattr(symjac, api)(fn, x, *rest, expand="elements")
        got = getattr(symjac, api)(fn, x, *rest, expand="arrays")
        pairs = [(oracle, got)] if api == "hessian" else zip(oracle, got, strict=True)
        for a, b in pairs:
            assert a.shape == b.shape and a.dtype == b.dtype, (name, api)
            np.testing.assert_allclose(b, a, err_msg=f"{name}: {api}", **ULPS)


def test_several_inputs_and_one_no_output_depends_on():
    f = lambda a, b, c: (np.tanh(a) @ W @ np.sin(b)) ** 2  # noqa: E731
    rng = np.random.default_rng(1)
    xs = (rng.standard_normal(3), rng.standard_normal(4), rng.standard_normal(2))
    oracle = symjac.hessian(f, xs, expand="elements")
    got = symjac.hessian(f, xs, expand="arrays")
    for i in range(3):
        for j in range(3):
            np.testing.assert_allclose(got[i][j], oracle[i][j], **ULPS)
            assert got[i][j].shape == xs[i].shape + xs[j].shape
    assert not got[2][2].any() and not got[0][2].any()


def test_logsumexp_hessian_at_a_thousand_inputs_is_the_analytic_one():
    # Forward mode of second order carried n * n numbers per element here (over 120 s).
    x = np.random.default_rng(0).standard_normal(1000)
    H = symjac.hessian(lambda a: np.log(np.sum(np.exp(a))), x)
    s = np.exp(x - x.max()) / np.exp(x - x.max()).sum()
    np.testing.assert_allclose(H, np.diag(s) - np.outer(s, s), rtol=1e-12, atol=1e-18)
    v = np.random.default_rng(1).standard_normal(1000)
    _, hv = symjac.hvp(lambda a: np.log(np.sum(np.exp(a))), x, v)
    np.testing.assert_allclose(hv, s * v - s * (s @ v), rtol=1e-10, atol=1e-16)


def test_an_hvp_carries_one_direction_not_the_identity():
    # An hvp over 16384 inputs: the identity would be 16384 tangents per element (2 GB a node).
    x = np.random.default_rng(0).standard_normal((128, 128)) * 0.1
    v = np.random.default_rng(1).standard_normal((128, 128))
    f = lambda a: (np.exp(a) * np.tanh(a.T)).sum()  # noqa: E731
    graph = functional._Call(f, (x,), False, "t").graph
    assert arrays.choose(graph, x.size, "auto", "hvp") == "arrays"
    _, hv = symjac.hvp(f, x, v)
    # f = sum_ij exp(x_ij) tanh(x_ji): the gradient exp(x) tanh(x^T) + exp(x^T) tanh'(x), along v
    e, t = np.exp(x), np.tanh(x)
    d1, d2 = 1 - t**2, -2 * t * (1 - t**2)
    oracle = e * v * t.T + e * d1.T * v.T + e.T * v.T * d1 + e.T * d2 * v
    np.testing.assert_allclose(hv, oracle, rtol=1e-12, atol=1e-12)


def test_a_zero_weight_kills_an_infinite_second_partial():
    # sqrt at 0 has infinite first and second partials; the zero weight's products are no terms
    w = np.array([0.0, 1.0, 2.0])
    g = lambda a: (w * np.sqrt(a)).sum() + a @ a  # noqa: E731
    x = np.array([0.0, 1.0, 4.0])
    oracle = symjac.hessian(g, x, expand="elements")
    got = symjac.hessian(g, x, expand="arrays")
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, oracle, **ULPS)
    # Times a.sum(), the zero weight's product meets an adjoint (a.sum() * w) whose zeros this
    # node-level analysis does not tell apart from a value's: NaN in row 0 on the array road,
    # never a number; the drop-in's default asks the element road for this point.
    f = lambda a: (w * np.sqrt(a)).sum() * a.sum()  # noqa: E731
    oracle = symjac.hessian(f, x, expand="elements")
    assert np.isfinite(oracle).all()
    got = symjac.hessian(f, x, expand="arrays")
    np.testing.assert_allclose(got[1:], oracle[1:], **ULPS)
    assert np.isnan(got[0]).all()
    np.testing.assert_array_equal(symjac.hessian(f, x), oracle)


def test_large_captured_arrays_carry_no_tangents_in_the_cost_model():
    # Two 500 x 500 weights made the model count 5e8 tangent elements (the element road then
    # refused a 2000 GB build); the dependent nodes' tangents are 2.5e6.
    rng = np.random.default_rng(0)
    A, B = (rng.standard_normal((500, 500)) / 25 for _ in range(2))
    x = rng.standard_normal(500)
    f = lambda a: np.sum(np.tanh(A @ np.tanh(B @ a)))  # noqa: E731
    graph = functional._Call(f, (x,), False, "t", params=True).graph
    assert arrays.choose(graph, 500, "auto", "hessian") == "arrays"
    assert arrays.second.tangent_elements(graph, 500) < 10**8
    H = symjac.hessian(f, x)
    u, t = np.tanh(B @ x), None
    t = np.tanh(A @ u)
    d1u, d2u = 1 - u**2, -2 * u * (1 - u**2)
    d1t, d2t = 1 - t**2, -2 * t * (1 - t**2)
    Ju = d1u[:, None] * B  # du/dx
    Jz = A @ Ju  # d(A u)/dx
    oracle = Jz.T @ (d2t[:, None] * Jz) + B.T @ (((A.T @ d1t) * d2u)[:, None] * B)
    np.testing.assert_allclose(H, oracle, rtol=1e-10, atol=1e-12)


def test_vhp_is_hvp_and_carries_one_direction():
    # At x[0] = 0 the Hessian has an infinite entry; v[0] = 0 keeps it out of both products
    f = lambda a: np.sqrt(a).sum() * a.sum()  # noqa: E731
    x, v = np.array([0.0, 1.0, 4.0]), np.array([0.0, 1.0, 1.0])
    _, hv = symjac.hvp(f, x, v, expand="arrays")
    _, vh = symjac.vhp(f, x, v, expand="arrays")
    np.testing.assert_array_equal(vh, hv)
    # f = S T (S = sum sqrt(a), T = sum a): H_kl = 1/(2 sqrt a_k) + 1/(2 sqrt a_l) - [k = l] T/(4 a_k^1.5)
    H = 1 / (2 * np.sqrt(x[1:, None])) + 1 / (2 * np.sqrt(x[None, 1:])) - np.diag(5 / (4 * x[1:] ** 1.5))
    np.testing.assert_allclose(hv[1:], H @ v[1:], rtol=1e-14)
    x = np.random.default_rng(0).standard_normal(16384) * 0.1
    f = lambda a: (np.exp(a) * np.tanh(a)).sum()  # noqa: E731
    graph = functional._Call(f, (x,), False, "t").graph
    assert arrays.choose(graph, x.size, "auto", "vhp") == "arrays"
