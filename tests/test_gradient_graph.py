"""Compiled second derivatives on the loop road: the gradient graph (symjac.arrays.gradient)
compiled as a Jacobian (a Hessian) or a jvp (an hvp), against the element road, torch and the
zero rule."""

import numpy as np
import pytest
import sympy
from test_second_order import CASES

import symjac
from symjac import compiled, functional
from symjac.arrays import gradient
from symjac.arrays.elementwise import Unsupported, formulas
from symjac.trace import ops

try:  # imported before tracing, as in test_second_order
    from scipy import special  # noqa: F401
except ImportError:
    special = None

ULPS = dict(rtol=1e-12, atol=1e-12)
# The ops whose second derivatives keep the element road in a compiled kernel, and why.
REFUSED = {
    "getitem repeated": "repeats a position",
    "setitem repeated": "repeats a position",
    "cumsum": "cumsum",
    "einsum ellipsis": "ellipsis",
}


def _pair(fn, x, mode, **kw):
    arrays = symjac.compile(fn, x, mode=mode, expand="arrays", cache=False, **kw)
    elements = symjac.compile(fn, x, mode=mode, expand="elements", cache=False, **kw)
    return arrays, elements


@pytest.mark.parametrize("name, fn, shape", CASES, ids=[c[0] for c in CASES])
def test_compiled_hessian_and_hvp_of_every_structural_op_match_the_element_road(name, fn, shape):
    if special is None and name == "logsumexp":
        pytest.skip("scipy (a test extra) is not installed")
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape)
    if name in REFUSED:
        with pytest.raises(ValueError, match=REFUSED[name]):
            symjac.compile(fn, x, mode="hessian", expand="arrays", cache=False)
        assert symjac.compile(fn, x, mode="hessian", cache=False).spec.road == "elements"
        return
    hessian, oracle = _pair(fn, x, "hessian")
    assert hessian.spec.road == "loops" and hessian.spec.source is not None
    batch = rng.standard_normal((3, *shape))
    np.testing.assert_allclose(hessian(x), oracle(x), err_msg=name, **ULPS)
    np.testing.assert_allclose(hessian(batch), oracle(batch), err_msg=name, **ULPS)
    hvp = symjac.compile(fn, x, mode="hvp", expand="arrays", cache=False)
    v = rng.standard_normal(shape)
    np.testing.assert_allclose(hvp(x, v=v), oracle(x) @ v, err_msg=name, **ULPS)


def test_an_infinite_partial_keeps_the_element_road_which_finds_the_limit():
    # At 0, sqrt(s)**2 = s has Hessian 2I: the chain rule's 2 sqrt(s) * 1 / (2 sqrt(s)) is 0 * inf,
    # whose limit 1 only the element road's simplification sees (a zero rule would give 0, IEEE
    # NaN). A zero weight on sqrt(x) at 0, or where()'s untaken branch, has no term at all.
    w = np.array([0.0, 1.5, 2.0, 0.0])
    rng = np.random.default_rng(1)
    W = rng.standard_normal((8, 6)) / 3
    cases = [
        (lambda a: np.sqrt((a**2).sum()) ** 2, np.zeros(4), 2 * np.eye(4)),
        (
            lambda a: (np.tanh(W @ a) ** 2).sum() + np.sqrt((a**2).sum()) ** 2,
            np.zeros(6),
            2 * W.T @ W + 2 * np.eye(6),
        ),
        (lambda a: (w * np.sqrt(a)).sum() + (a**2).sum(), np.array([0.0, 1.0, 2.0, 0.0]), None),
        (lambda a: symjac.where(a > 0, np.sqrt(a) * a, a**2).sum(), np.array([-1.0, 0.0, 2.0, 0.5]), None),
        (lambda a: (np.abs(a) ** 1.5).sum() + (a[0] / a[1]) ** 2, np.array([0.5, 1.0, 2.0, 0.5]), None),
    ]
    for fn, x, expected in cases:
        graph = functional._Call(fn, (x,), False, "t").graph
        with pytest.raises(Unsupported, match="infinite at finite inputs"):
            gradient.graph(graph, (0,))
        with pytest.raises(ValueError, match="infinite at finite inputs"):
            symjac.compile(fn, x, mode="hessian", expand="arrays", cache=False)
        cf = symjac.compile(fn, x, mode="hessian", cache=False)
        assert cf.spec.road == "elements"
        if expected is not None:
            np.testing.assert_allclose(cf(x), expected, rtol=1e-14)


def test_compiled_second_derivatives_replay_in_torch_and_have_the_functions_sparsity():
    torch = pytest.importorskip("torch")
    W = np.random.default_rng(0).standard_normal((3, 3))
    fn = lambda a: (np.tanh(W @ a) ** 2).sum() * a[0]  # noqa: E731
    x = np.array([0.3, -0.4, 0.5])
    for mode, kw in (("hessian", {}), ("hvp", {"v": np.array([1.0, 2.0, -1.0])})):
        loops, elements = _pair(fn, x, mode, value=True)
        assert loops.spec.road == "loops"
        grads = []
        for cf in (loops, elements):
            t = torch.tensor(x, requires_grad=True)
            v = {k: torch.tensor(u) for k, u in kw.items()}
            value, result = cf.torch()(t, **v)
            (value + result.sum()).backward()
            grads.append(t.grad.numpy())
        np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12)
        assert (loops.sparsity() != elements.sparsity()).nnz == 0


def test_value_batches_several_inputs_and_runtime_parameters():
    rng = np.random.default_rng(5)
    W = rng.standard_normal((6, 5)) / 2
    fn = lambda a, b, p: (np.tanh(W @ a) @ np.sin(b)) ** 2 * p[0] + np.max(a) * p[1]  # noqa: E731
    xs = (rng.standard_normal(5), rng.standard_normal(6), np.array([0.7, 1.3]))
    kw = dict(wrt=(0, 1), value=True)
    hessian = symjac.compile(fn, *xs, mode="hessian", expand="arrays", cache=False, **kw)
    oracle = symjac.compile(fn, *xs, mode="hessian", expand="elements", cache=False, **kw)
    for p in (xs[2], np.array([-2.0, 0.5])):
        (value, H), (value0, H0) = hessian(xs[0], xs[1], p), oracle(xs[0], xs[1], p)
        np.testing.assert_allclose(value, value0, rtol=1e-14)
        for i in range(2):
            for j in range(2):
                assert H[i][j].shape == xs[i].shape + xs[j].shape
                np.testing.assert_allclose(H[i][j], H0[i][j], **ULPS)
    batch = [rng.standard_normal((4, *x.shape)) for x in xs]
    (value, H), (value0, H0) = hessian(*batch), oracle(*batch)
    np.testing.assert_allclose(value, value0, rtol=1e-14)
    np.testing.assert_allclose(H[1][0], H0[1][0], **ULPS)
    hvp = symjac.compile(fn, *xs, mode="hvp", expand="arrays", cache=False, **kw)
    hvp0 = symjac.compile(fn, *xs, mode="hvp", expand="elements", cache=False, **kw)
    v = (rng.standard_normal(5), rng.standard_normal(6))
    (value, hv), (value0, hv0) = hvp(*xs, v=v), hvp0(*xs, v=v)
    np.testing.assert_allclose(value, value0, rtol=1e-14)
    for a, b in zip(hv, hv0, strict=True):
        np.testing.assert_allclose(a, b, **ULPS)


def test_a_large_loss_compiles_its_hessian_as_loops_and_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    W1, W2, W3 = (
        rng.standard_normal((32, 8)) / 3,
        rng.standard_normal((32, 32)) / 5,
        rng.standard_normal((4, 32)),
    )
    loss = lambda x: np.sum((W3 @ np.tanh(W2 @ np.tanh(W1 @ x))) ** 2) + np.max(x)  # noqa: E731
    x = rng.standard_normal(8)
    before = compiled.BUILDS
    cf = symjac.compile(loss, x, mode="hessian", cache=False)
    assert cf.spec.road == "loops" and compiled.BUILDS == before + 1
    T = [torch.from_numpy(W) for W in (W1, W2, W3)]
    tl = lambda t: ((T[2] @ torch.tanh(T[1] @ torch.tanh(T[0] @ t))) ** 2).sum() + t.max()  # noqa: E731
    for point in (x, rng.standard_normal(8)):
        expected = torch.autograd.functional.hessian(tl, torch.from_numpy(point)).numpy()
        np.testing.assert_allclose(cf(point), expected, rtol=1e-11, atol=1e-12)


def test_the_disk_cache_keeps_a_gradient_kernel_and_its_c_export_is_the_functions(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMJAC_CACHE_DIR", str(tmp_path / "cache"))
    W = np.random.default_rng(2).standard_normal((3, 3))
    fn = lambda a: np.sum(np.tanh(W @ a) ** 2) * np.max(a)  # noqa: E731
    x = np.array([0.3, -0.4, 0.5])
    first = symjac.compile(fn, x, mode="hessian", value=True, expand="arrays")
    again = symjac.compile(fn, x, mode="hessian", value=True, expand="arrays")
    assert not first.cache_hit and again.cache_hit and again.spec.road == "loops"
    for a, b in zip(first(x), again(x), strict=True):
        np.testing.assert_array_equal(a, b)
    # C export writes the function's own element program (value, then the Hessian), not the
    # gradient graph's Jacobian: the same header and result layout as the element road's.
    elements = symjac.compile(fn, x, mode="hessian", value=True, expand="elements", cache=False)
    source, header = again.c_source()
    assert header == elements.c_source()[1]
    assert source.split("*/")[0] == elements.c_source()[0].split("*/")[0]
    assert again.program().stores and "define" in again.ir


def test_the_drop_in_buys_a_gradient_loop_kernel_for_large_second_derivatives():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((128, 128)) / 12
    fn = lambda a: (np.tanh(W @ a) ** 2).sum() + np.max(a)  # noqa: E731
    x, v = rng.standard_normal(128), rng.standard_normal(128)
    for api, rest in (("hessian", ()), ("hvp", (v,)), ("vhp", (v,))):
        call = functional._Call(fn, (x,), False, api)
        assert functional._loops(call, api, "auto")
        kernel, _ = functional._fast_kernel(call, (api, call.graph), "auto")
        assert kernel.spec.road == "loops"
        raw = kernel.kernel([x, *rest])
        expected = getattr(symjac, api)(fn, x, *rest, expand="arrays")
        if api == "hessian":
            np.testing.assert_allclose(raw[0], expected, **ULPS)
        else:
            np.testing.assert_allclose(raw[0], expected[0], rtol=1e-14)
            np.testing.assert_allclose(raw[1], expected[1], **ULPS)


def test_partial_derivative_rows_are_made_from_the_formula_and_nothing_else():
    name = ops.partial_name("tanh", 0, (False,))
    assert name == "d0/r/tanh" and name in ops.ELEMENTWISE and name in ops.PRIMITIVES
    syms, expr, _ = formulas(name, (False,))
    for at in (-2.5, 0.0, 0.37):
        assert float(expr.subs(syms[0], at)) == pytest.approx(1 - np.tanh(at) ** 2, rel=1e-15)
    where = ops.partial_name("where", 1, (True, False, False))
    (c, _, _), partial, _ = formulas(where, (True, False, False))
    assert partial == sympy.Piecewise((1, c), (0, True))
    for bad in ("d1/r/tanh", "d0/m/tanh", "d0/r/greater", "d0/r/nothing", "d/r/tanh", "tanh2", "d0/rx/mul"):
        assert bad not in ops.ELEMENTWISE
        with pytest.raises(KeyError):
            ops.PRIMITIVES[bad]
    assert "d0/r/tanh" not in list(ops.ELEMENTWISE)  # made on lookup, never listed
