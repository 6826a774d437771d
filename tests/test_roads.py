"""The two roads of the drop-in API agree: per-element kernels and array-level rules.

``expand="elements"`` expands every element to SymPy and compiles a kernel; ``expand="arrays"``
differentiates operation by operation with exact array-level rules. The mathematics is the same,
so results agree to rounding on every op-table row, every API example and every test system.
Captured float arrays are kernel data: changing them never builds a kernel.
"""

import contextlib
import math
import types

import numpy as np
import pytest
from cases import CASES, numpy_ns
from test_ops import SMOOTH, _call, _nargs, _sample, _styles

import symjac
from symjac import arrays, compiled, functional
from symjac.trace.names import API

ULPS = dict(rtol=1e-12, atol=1e-13)


@contextlib.contextmanager
def _sparse_from(width):
    saved, arrays.sparse.SPARSE_FROM = arrays.sparse.SPARSE_FROM, width
    try:
        yield
    finally:
        arrays.sparse.SPARSE_FROM = saved


def _both(api, fn, args, *rest):
    """The element road's result and the array road's (dense tangents). The array road with
    sparse tangents, forced at every width, must agree with its dense form to rounding."""
    elements = getattr(symjac, api)(fn, args, *rest, expand="elements")
    with _sparse_from(10**9):
        dense = getattr(symjac, api)(fn, args, *rest, expand="arrays")
    with _sparse_from(1):
        _assert_close(dense, getattr(symjac, api)(fn, args, *rest, expand="arrays"), "sparse tangents")
    return elements, dense


def _assert_close(a, b, path="result"):
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b), path
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_close(x, y, f"{path}[{k}]")
        return
    assert type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape, path
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), err_msg=path, **ULPS)


def _numpy_style(entry):
    styles = [(s, n) for s, n in _styles(entry) if s == "numpy"] if hasattr(np, "sin") else []
    return styles[0] if styles else None


ROWS = [pytest.param(e, id=e.name) for e in SMOOTH if any(s == "numpy" for s, _ in _styles(e))]


@pytest.mark.parametrize("entry", ROWS)
def test_elementwise_rows_agree(entry, rng):
    style, name = _numpy_style(entry)
    fn = _call(style, name)
    n = _nargs(entry)
    xs = tuple(_sample(entry.domain, (3,), rng) for _ in range(n))
    args = xs if n > 1 else xs[0]
    _assert_close(*_both("jacobian", fn, args))
    v = tuple(rng.standard_normal(3) for _ in range(n)) if n > 1 else rng.standard_normal(3)
    _assert_close(*_both("jvp", fn, args, v))
    _assert_close(*_both("vjp", fn, args, rng.standard_normal(3)))


EXAMPLES = [
    pytest.param(api, k, id=f"{api.name}-{k}")
    for api in API
    for k, ex in enumerate(api.examples)
    if ex.numpy is not None
]


@pytest.mark.parametrize("api,k", EXAMPLES)
def test_api_examples_agree_or_name_the_missing_rule(api, k, rng):
    ex = api.examples[k]
    xs = tuple(rng.uniform(ex.low, ex.high, s) for s in ex.shapes)
    fn = lambda *a: ex.numpy(np, *a)  # noqa: E731
    args = xs[0] if len(xs) == 1 else xs
    call = functional._Call(fn, xs, len(xs) > 1, "test")
    missing = arrays.unsupported_ops(call.graph)
    if missing:
        with pytest.raises(ValueError, match=sorted(missing)[0].split(" ")[0]):
            symjac.jacobian(fn, args, expand="arrays")
        # auto never picks a road that cannot take the graph
        _assert_close(symjac.jacobian(fn, args), symjac.jacobian(fn, args, expand="elements"))
        return
    _assert_close(*_both("jacobian", fn, args))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_cases_agree(case, rng):
    fn = case.fn(numpy_ns())
    xs = case.inputs(rng)
    call = functional._Call(fn, xs if isinstance(xs, tuple) else (xs,), isinstance(xs, tuple), "test")
    missing = arrays.unsupported_ops(call.graph)
    if missing:
        with pytest.raises(ValueError, match=sorted(missing)[0].split(" ")[0]):
            symjac.jacobian(fn, xs, expand="arrays")
        return
    _assert_close(*_both("jacobian", fn, xs))
    _assert_close(*_both("jacobian", fn, xs, False, False, False, "forward-mode"))


def test_array_road_results_are_the_callers_to_write(rng):
    W = rng.standard_normal((4, 3))
    for api, extra in (("jacobian", ()), ("jvp", (np.ones(3),)), ("hessian", ())):
        f = (lambda a: np.tanh(W @ a)) if api != "hessian" else (lambda a: np.tanh(W @ a).sum())
        res = getattr(symjac, api)(f, np.ones(3), *extra, expand="arrays")
        for r in res if isinstance(res, tuple) else (res,):
            assert r.flags.writeable and r.flags.owndata or r.base is not None and r.base.flags.writeable, api
            r[...] = 0.0  # never a read-only view of a broadcast


def test_float32_inputs_keep_their_dtype_on_both_roads(rng):
    x = rng.standard_normal((4, 3)).astype(np.float32)
    f = lambda a: np.tanh(a @ np.ones((3, 2), dtype=np.float32)).sum(axis=0)  # noqa: E731
    J_el, J_ar = _both("jacobian", f, x)
    assert J_el.dtype == J_ar.dtype == np.float32
    np.testing.assert_allclose(J_ar, J_el, rtol=2e-6, atol=2e-7)


def _mlp(sizes, rng, act=np.tanh):
    Ws = [rng.standard_normal((b, a)) / math.sqrt(a) for a, b in zip(sizes, sizes[1:], strict=False)]
    bs = [rng.standard_normal(b) for b in sizes[1:]]

    def f(x):
        h = x
        for k, (W, b) in enumerate(zip(Ws, bs, strict=True)):
            h = W @ h + b
            if k < len(Ws) - 1:
                h = act(h)
        return h

    return f, Ws, bs


def _mlp_jacobian(Ws, bs, x):
    """The textbook formula: J = W3 diag(1 - tanh(z2)^2) W2 diag(1 - tanh(z1)^2) W1."""
    J, h = np.eye(len(x)), x
    for k, (W, b) in enumerate(zip(Ws, bs, strict=True)):
        z = W @ h + b
        J = W @ J
        if k < len(Ws) - 1:
            h = np.tanh(z)
            J = (1 - h**2)[:, None] * J
    return J


@pytest.mark.parametrize("expand", ["elements", "arrays", "auto"])
def test_mlp_matches_the_textbook_formula(expand, rng):
    f, Ws, bs = _mlp([5, 16, 16, 3], rng)
    x = rng.standard_normal(5)
    np.testing.assert_allclose(
        symjac.jacobian(f, x, expand=expand), _mlp_jacobian(Ws, bs, x), rtol=1e-12, atol=1e-13
    )


@pytest.mark.parametrize("expand", ["elements", "auto"])
def test_changed_captured_arrays_give_fresh_results_without_a_build(expand, rng):
    f, Ws, bs = _mlp([4, 16, 16, 2], rng)
    x = rng.standard_normal(4)
    symjac.jacobian(f, x, expand=expand)
    builds = compiled.BUILDS
    for _ in range(5):
        Ws[1] += 0.01 * rng.standard_normal(Ws[1].shape)  # an optimiser step, in place
        bs[0] = bs[0] - 0.1  # and a rebound closure array
        J = symjac.jacobian(f, x, expand=expand)
        np.testing.assert_allclose(J, _mlp_jacobian(Ws, bs, x), rtol=1e-12, atol=1e-13)
    assert compiled.BUILDS == builds


def test_an_array_changed_in_place_between_two_uses_is_two_values(rng):
    W = rng.standard_normal((16, 16))

    def f(x):
        a = W @ x
        W[:] = 2 * W  # the second use sees the new values, as NumPy would
        return a + W @ x

    x = rng.standard_normal(16)
    W0 = W.copy()
    J = symjac.jacobian(f, x, expand="elements")
    np.testing.assert_allclose(J, W0 + 2 * W0, rtol=1e-13)
    W[:] = W0
    np.testing.assert_allclose(symjac.jacobian(f, x, expand="arrays"), W0 + 2 * W0, rtol=1e-13)


def test_small_and_mostly_zero_arrays_stay_literals(rng):
    stencil = np.diag(np.full(20, -2.0)) + np.diag(np.ones(19), 1) + np.diag(np.ones(19), -1)
    gains = np.array([1.0, 2.0, 3.0])
    call = functional._Call(lambda x: stencil @ x + gains.sum(), (np.zeros(20),), False, "t", params=True)
    assert call.params == []  # a sparse stencil is structure: its zeros keep the program sparse
    weights = rng.standard_normal((20, 20))
    call = functional._Call(lambda x: weights @ x, (np.zeros(20),), False, "t", params=True)
    assert len(call.params) == 1 and np.array_equal(call.params[0], weights)


def test_torch_module_weights_change_between_calls(rng):
    torch = pytest.importorskip("torch")

    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.W1 = torch.nn.Parameter(torch.randn(16, 4, dtype=torch.float64))
            self.b1 = torch.nn.Parameter(torch.randn(16, dtype=torch.float64))
            self.W2 = torch.nn.Parameter(torch.randn(3, 16, dtype=torch.float64))

        def forward(self, x):
            return torch.tanh(x @ self.W1.T + self.b1) @ self.W2.T

    net = MLP()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.randn(4, dtype=torch.float64)
    builds = None
    for _ in range(3):
        for expand in ("elements", "auto"):
            ours = symjac.jacobian(net, x, expand=expand)
            theirs = torch.autograd.functional.jacobian(net, x)
            assert isinstance(ours, torch.Tensor) and ours.dtype == torch.float64
            np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-12, atol=1e-13)
        builds = compiled.BUILDS if builds is None else builds
        assert compiled.BUILDS == builds
        opt.zero_grad()
        net(x).pow(2).sum().backward()
        opt.step()


def _log_softmax_relu(width, rng):
    W1, b1 = rng.standard_normal((width, 4)), rng.standard_normal(width)
    W2 = rng.standard_normal((3, width))

    def f(x):
        z = W2 @ np.maximum(W1 @ x + b1, 0.0)
        shifted = z - np.max(z)
        return shifted - np.log(np.sum(np.exp(shifted)))

    return f


def test_softmax_over_relu_builds_a_program_linear_in_width(rng):
    x = rng.standard_normal(4)
    sizes = []
    for width in (6, 12, 24):
        f = _log_softmax_relu(width, rng)
        cf = symjac.compile(f, x, cache=False)
        sizes.append(cf.meta["statements"])
        _assert_close(*_both("jacobian", f, x))
    # a tree expansion doubles per level; the DAG grows with the width
    assert sizes[2] <= 5 * sizes[0], sizes


def test_the_branch_not_taken_stays_out_on_the_array_road():
    f = lambda a: symjac.where(a > 0, np.sqrt(a), a * 0 + 1.0)  # noqa: E731
    J = symjac.jacobian(f, np.array([-1.0, 4.0]), expand="arrays")
    np.testing.assert_array_equal(J, np.array([[0.0, 0.0], [0.0, 0.25]]))


def test_expand_is_checked_and_second_derivatives_say_which_op_lacks_a_rule():
    with pytest.raises(ValueError, match='expand must be "auto", "elements" or "arrays"'):
        symjac.jacobian(np.sin, np.ones(2), expand="array")
    with pytest.raises(ValueError, match="cannot differentiate prod at the array level to second order"):
        symjac.hessian(lambda a: np.prod(a), np.ones(4), expand="arrays")


def _second_order_agree(fn, args, rng, what):
    """hessian, hvp and vhp of a scalar ``fn`` agree on both roads, or the array road names the op
    it lacks a second-order rule for (and auto then takes the element road)."""
    xs = args if isinstance(args, tuple) else (args,)
    call = functional._Call(fn, xs, isinstance(args, tuple), "test")
    missing = arrays.second.unsupported_ops(call.graph)
    if missing:
        with pytest.raises(ValueError, match=sorted(missing)[0].split(" ")[0]):
            symjac.hessian(fn, args, expand="arrays")
        return
    _assert_close(*_both("hessian", fn, args), f"{what}: hessian")
    v = tuple(rng.standard_normal(x.shape) for x in xs)
    v = v if isinstance(args, tuple) else v[0]
    _assert_close(*_both("hvp", fn, args, v), f"{what}: hvp")
    _assert_close(*_both("vhp", fn, args, v), f"{what}: vhp")


def _weighted_squares(fn, ws):
    """The scalar ``sum(w * out**2)`` over ``fn``'s outputs (one or a tuple): it reaches every
    output's second derivatives, mixed ones included."""

    def scalar(*a):
        res = fn(*a)
        res = res if isinstance(res, tuple) else (res,)
        return sum((w * r * r).sum() for w, r in zip(ws, res, strict=True))

    return scalar


@pytest.mark.parametrize("entry", ROWS)
def test_second_derivatives_of_elementwise_rows_agree(entry, rng):
    style, name = _numpy_style(entry)
    f = _call(style, name)
    n = _nargs(entry)
    xs = tuple(_sample(entry.domain, (3,), rng) for _ in range(n))
    w = rng.standard_normal(3)
    # products of the op with itself and its arguments reach every second partial, mixed ones too
    fn = lambda *a: (w * f(*a) * f(*a) + f(*a) * a[0]).sum()  # noqa: E731
    _second_order_agree(fn, xs if n > 1 else xs[0], rng, entry.name)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_second_derivatives_of_cases_agree(case, rng):
    fn = case.fn(numpy_ns())
    xs = case.inputs(rng)
    probe = fn(*xs) if isinstance(xs, tuple) else fn(xs)
    outs = probe if isinstance(probe, tuple) else (probe,)
    ws = [rng.standard_normal(np.shape(o)) for o in outs]
    _second_order_agree(_weighted_squares(fn, ws), xs, rng, case.name)


def test_mlp_hessian_on_the_array_road_matches_torch(rng):
    torch = pytest.importorskip("torch")
    W1, W2, w3 = rng.standard_normal((32, 8)), rng.standard_normal((32, 32)) / 6, rng.standard_normal(32) / 6
    x = rng.standard_normal(8)

    def loss(ns, y):
        return ns.logsumexp(w3 * ns.tanh(W2 @ ns.tanh(W1 @ y)), 0) + (y**2).sum()

    f = lambda y: loss(types.SimpleNamespace(tanh=np.tanh, logsumexp=_np_logsumexp), y)  # noqa: E731
    graph = functional._Call(f, (x,), False, "t", params=True).graph
    assert arrays.choose(graph, 8, "auto", "hessian") == "arrays"
    H = symjac.hessian(f, x)
    Wt = [torch.from_numpy(a) for a in (W1, W2, w3)]
    tf = lambda y: torch.logsumexp(Wt[2] * torch.tanh(Wt[1] @ torch.tanh(Wt[0] @ y)), 0) + (y**2).sum()  # noqa: E731
    oracle = torch.autograd.functional.hessian(tf, torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(H, oracle, rtol=1e-12, atol=1e-12)
    v = rng.standard_normal(8)
    np.testing.assert_allclose(symjac.hvp(f, x, v)[1], oracle @ v, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(symjac.vhp(f, x, v)[1], v @ oracle, rtol=1e-12, atol=1e-12)


def _np_logsumexp(x, axis):
    from scipy.special import logsumexp

    return logsumexp(x, axis=axis)


def test_the_cost_model_picks_arrays_for_big_regular_models_and_elements_for_small_ones(rng):
    f, _, _ = _mlp([8, 32, 32, 4], rng)
    big = functional._Call(f, (np.zeros(8),), False, "t", params=True).graph
    assert arrays.choose(big, 8, "auto", "jacobian") == "arrays"
    small = functional._Call(lambda q: np.sin(q) * q[0], (np.zeros(3),), False, "t", params=True).graph
    assert arrays.choose(small, 3, "auto", "jacobian") == "elements"
    # a large grid's tangents stay sparse: a few entries per row, not 32768
    grid = functional._Call(lambda u: np.roll(u, 1) - u, (np.zeros(32768),), False, "t", params=True).graph
    assert arrays.choose(grid, 32768, "auto", "jacobian") == "arrays"
    with _sparse_from(10**9):  # dense ones would cost more than the element road's sparse program
        assert arrays.choose(grid, 32768, "auto", "jacobian") == "elements"


def _systems():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parent.parent / "examples" / "models.py"
    spec = importlib.util.spec_from_file_location("example_models", path)
    models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(models)
    from test_rolling import activations, banded_energy, brusselator, chain, two_inputs
    from test_systems import cartpole, ur5_numpy

    rhs, n = brusselator(6)
    return [
        ("ur5", ur5_numpy, (np.linspace(0.1, 0.6, 6),)),
        (
            "cartpole",
            lambda s, u: np.stack(cartpole(s, u)),
            (np.array([0.1, 0.2, -0.3, 0.4]), np.array([1.5])),
        ),
        ("two_link_arm", models.two_link_arm, (np.array([0.3, 0.4]),)),
        ("spring_chain", models.spring_chain, (np.linspace(0.0, 5.5, 6), np.linspace(-1.0, 1.0, 6))),
        ("brusselator", rhs, (np.linspace(0.2, 0.9, n),)),
        ("chain", chain, (np.linspace(0.0, 4.0, 41),)),
        ("banded_energy", banded_energy, (np.linspace(-1.0, 1.0, 30),)),
        ("two_inputs", two_inputs, (np.linspace(-1.0, 1.0, 10), np.array([0.5, 2.0]))),
        ("activations", activations, (np.linspace(-1.0, 1.5, 12),)),
    ]


@pytest.mark.parametrize("name", [s[0] for s in _systems()])
def test_systems_agree(name):
    _, fn, xs = next(s for s in _systems() if s[0] == name)
    args = xs if len(xs) > 1 else xs[0]
    _assert_close(*_both("jacobian", fn, args))
    v = tuple(np.cos(np.arange(x.size)).reshape(x.shape) for x in xs)
    _assert_close(*_both("jvp", fn, args, v if len(xs) > 1 else v[0]))


@pytest.mark.parametrize("name", [s[0] for s in _systems()])
def test_second_derivatives_of_systems_agree(name, rng):
    _, fn, xs = next(s for s in _systems() if s[0] == name)
    graph = functional._Call(fn, xs, len(xs) > 1, "test").graph  # the outputs' shapes, traced
    ws = [rng.standard_normal(graph.shape(o)) for o in graph.outputs]
    _second_order_agree(_weighted_squares(fn, ws), xs if len(xs) > 1 else xs[0], rng, name)


def test_repeated_array_road_calls_buy_the_kernel_once_they_cost_as_much(rng, monkeypatch):
    f, Ws, bs = _mlp([6, 24, 3], rng)
    x = rng.standard_normal(6)
    call = functional._Call(f, (x,), False, "t", params=True)
    key = ("jacobian", call.graph, False)
    builds = compiled.BUILDS
    J0 = symjac.jacobian(f, x)  # the array road: its call is cheaper than a build
    assert functional._ROADS.get((key, "auto")) == "arrays"
    assert functional._KERNELS.get((*key, "auto")) is None and compiled.BUILDS == builds
    monkeypatch.setattr(arrays, "BUILD_SECONDS_PER_OPERATION", 1e-12)  # now a build costs less
    J1 = symjac.jacobian(f, x)  # still the array road, which then buys the kernel
    assert functional._KERNELS.get((*key, "auto")) is not None and compiled.BUILDS == builds + 1
    J2 = symjac.jacobian(f, x)  # the kernel from now on
    assert compiled.BUILDS == builds + 1
    np.testing.assert_allclose(J1, J0, **ULPS)
    np.testing.assert_allclose(J2, J0, **ULPS)


def test_large_jacobians_buy_a_loop_kernel_that_keeps_up_with_changing_weights(rng, monkeypatch):
    # An MLP 8-32-32-4 takes compile's loop road: its kernel builds in a fraction of a second,
    # where the element road's would take many seconds. Weights are data: an optimiser step
    # gives fresh results from the same kernel.
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(
        torch.nn.Linear(8, 32),
        torch.nn.Tanh(),
        torch.nn.Linear(32, 32),
        torch.nn.Tanh(),
        torch.nn.Linear(32, 4),
    ).double()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    x = torch.from_numpy(rng.standard_normal(8))
    monkeypatch.setattr(arrays, "LOOP_BUILD_SECONDS", 0.0)  # the second call buys the kernel
    monkeypatch.setattr(arrays, "LOOP_BUILD_SECONDS_PER_EQUATION", 0.0)
    builds = None
    for step in range(4):
        ours = symjac.jacobian(net, x)
        theirs = torch.autograd.functional.jacobian(net, x)
        np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-12, atol=1e-13)
        if step == 1:
            roads = [cf.spec.road for k, (cf, _) in functional._KERNELS.data.items() if k[0] == "jacobian"]
            assert "reverse-loops" in roads
            builds = compiled.BUILDS
        if builds is not None:
            assert compiled.BUILDS == builds
        opt.zero_grad()
        net(x).pow(2).sum().backward()
        opt.step()


def test_a_singular_or_nan_element_keeps_other_columns_exact_on_both_roads():
    x = np.array([0.0, 1.0, np.nan, 4.0])
    for expand in ("elements", "arrays"):
        J = symjac.jacobian(lambda a: np.sqrt(a) * 2.0, x, expand=expand)
        off = ~np.eye(4, dtype=bool)
        assert np.all(J[off] == 0), expand
        assert J[0, 0] == np.inf and J[1, 1] == 1.0 and np.isnan(J[2, 2]) and J[3, 3] == 0.5
        W = np.arange(16.0).reshape(4, 4) + 1
        J = symjac.jacobian(lambda a, W=W: W @ np.sin(a), x, expand=expand)
        assert np.isnan(J[:, 2]).all() and np.isfinite(np.delete(J, 2, axis=1)).all(), expand


def test_a_zero_weight_kills_an_infinite_partial_in_the_drop_in():
    # W[1, 0] = 0: output 1 does not depend on x0, so sqrt'(0) = inf must not make that entry
    # NaN. The drop-in's array evaluators (NumPy; the loop kernels' side is test_loops') agree
    # with the element road, infinities included, in jacobian, vjp, hessian and hvp.
    W = np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]])
    w = np.array([0.0, 1.0, 1.0])
    x = np.array([0.0, 1.0, 4.0])
    loss = lambda a: (W @ np.sqrt(a + 1.0)).sum() + w @ np.sqrt(a)  # noqa: E731
    cases = [
        ("jacobian", lambda a: W @ np.sqrt(a), ()),
        ("jacobian", lambda a: np.einsum("ij,j->i", W, np.sqrt(a)), ()),
        ("vjp", lambda a: W @ np.sqrt(a), (np.ones(2),)),
        ("hessian", loss, ()),
        ("hvp", loss, (np.array([1.0, 0.5, 0.0]),)),
    ]
    for api, fn, rest in cases:
        want = getattr(symjac, api)(fn, x, *rest, expand="elements")
        got = getattr(symjac, api)(fn, x, *rest, expand="arrays")
        if api in ("vjp", "hvp"):
            got, want = got[1], want[1]
        np.testing.assert_allclose(got, want, **ULPS)
        assert not np.isnan(got).any(), api
    J = symjac.jacobian(cases[0][1], x, expand="arrays")
    assert J[0, 0] == np.inf and J[1, 0] == 0.0
    # contractions spelled with "..." (the user's einsum, the Hessian's matmul)
    J = symjac.jacobian(lambda a: np.einsum("...ij,j->...i", W, np.sqrt(a)), x, expand="arrays")
    np.testing.assert_array_equal(J, symjac.jacobian(cases[0][1], x, expand="arrays"))
    # sqrt(a0)'s adjoint is a row sum of the other factor (a value, not a constant): its tangent
    # columns meet sqrt's infinite partials undecided (NaN), the rest is the element road's; the
    # drop-in's default then asks the element road for this point.
    f = lambda a: (np.sqrt(a[:4]).reshape(2, 2) @ a[4:].reshape(2, 2)).sum()  # noqa: E731
    a = np.r_[0.0, np.linspace(0.5, 2.0, 7)]
    got, want = symjac.hessian(f, a, expand="arrays"), symjac.hessian(f, a, expand="elements")
    decided = ~np.isnan(got)
    assert decided[1:].all() and decided[:, 1:].sum() >= 7 * 7 + 2
    np.testing.assert_allclose(got[decided], want[decided], **ULPS)
    np.testing.assert_array_equal(symjac.hessian(f, a), want)


def test_numpy_contractions_under_the_zero_rule_in_slices(monkeypatch):
    # finiteness.einsum forms every product where an inf or NaN is present: in slices of the
    # first output letter when they would be many, with the same result.
    from symjac.arrays import finiteness

    rng = np.random.default_rng(5)
    A, T = rng.standard_normal((6, 4)), rng.standard_normal((4, 3, 2))
    exact = [True, False]  # A's zeros are structural (a constant's), T's not
    np.testing.assert_array_equal(finiteness.einsum(["ij", "jkz"], "ikz", [A, T], exact),
                                  np.einsum("ij,jkz->ikz", A, T))  # fmt: skip
    A[2, 0], T[0, 0, 0], T[1, 2, 1] = 0.0, np.inf, np.nan
    whole = finiteness.einsum(["ij", "jkz"], "ikz", [A, T], exact)
    with np.errstate(invalid="ignore"):  # no structural zero: IEEE's products, NaN and all
        np.testing.assert_array_equal(finiteness.einsum(["ij", "jkz"], "ikz", [A, T], [False, False]),
                                      np.einsum("ij,jkz->ikz", A, T))  # fmt: skip
    with np.errstate(invalid="ignore"):
        naive = np.einsum("ij,jkz->ikz", A, T)
    assert np.isnan(naive[2, 0, 0]) and np.isclose(whole[2, 0, 0], A[2, 1:] @ T[1:, 0, 0], rtol=1e-14)
    assert np.isinf(whole[[0, 1, 3, 4, 5], 0, 0]).all() and np.isnan(whole[:, 2, 1]).all()
    keep = np.ones(whole.shape, dtype=bool)
    keep[2, 0, 0] = keep[:, 2, 1] = False  # elsewhere the products are IEEE's own
    np.testing.assert_allclose(whole[keep], naive[keep], **ULPS)
    monkeypatch.setattr(finiteness, "_CHUNK", 8)
    np.testing.assert_array_equal(finiteness.einsum(["ij", "jkz"], "ikz", [A, T], exact), whole)
    # slices along the largest letter, summed where it is summed (the first output letter of a
    # batched matmul may have extent 1): no more than about _CHUNK products at once
    formed = []
    products = finiteness._products
    monkeypatch.setattr(
        finiteness,
        "_products",
        lambda s, *a: formed.append(np.broadcast_shapes(*(x.shape for x in s))) or products(s, *a),
    )
    B = rng.standard_normal((1, 3, 40))
    B[0, 1, 7] = 0.0
    U = rng.standard_normal((1, 40, 2))
    U[0, 7, 1] = np.inf
    sliced = finiteness.einsum(["amk", "akn"], "amn", [B, U], exact)
    assert max(math.prod(s) for s in formed) <= 2 * 8 and len(formed) > 1
    monkeypatch.setattr(finiteness, "_CHUNK", 1 << 22)
    np.testing.assert_allclose(sliced, finiteness.einsum(["amk", "akn"], "amn", [B, U], exact), **ULPS)
    assert sliced[0, 1, 1] == pytest.approx(B[0, 1, 8:] @ U[0, 8:, 1] + B[0, 1, :7] @ U[0, :7, 1])


def _evaluate_formula(text, namespace):
    """Evaluate a printed formula with NumPy: '·' is a matrix product, diag a diagonal matrix."""
    lines = [line.strip() for line in text.replace("where ", "").splitlines()]
    env = dict(namespace, diag=np.diag, tanh=np.tanh, sin=np.sin, cos=np.cos, exp=np.exp)
    defs, result = [line for line in lines if line.startswith("z")], lines[0]
    for line in defs:
        name, expr = line.split(" = ")
        env[name] = eval(expr.replace("·", "@").replace("∘", "*"), env)  # noqa: S307
    return eval(result.split(" = ")[1].replace("·", "@").replace("1ᵀ", "np.ones(len(z))"), env)  # noqa: S307


def test_structured_formula_reads_like_the_chain_rule_and_is_right(rng):
    f, Ws, bs = _mlp([8, 32, 32, 4], rng)
    text = symjac.symbolic(f, (8,)).formula()
    assert text.splitlines()[0] == "J = W3·diag(1 - tanh(z2)**2)·W2·diag(1 - tanh(z1)**2)·W1"
    assert "z1 = W1·x + b1" in text and "z2 = W2·tanh(z1) + b2" in text
    x = rng.standard_normal(8)
    names = {f"W{k + 1}": W for k, W in enumerate(Ws)} | {f"b{k + 1}": b for k, b in enumerate(bs)}
    value = _evaluate_formula(text, dict(names, x=x, np=np))
    np.testing.assert_allclose(value, symjac.jacobian(f, x), rtol=1e-12, atol=1e-13)


def test_structured_formula_of_products_and_several_inputs():
    text = symjac.symbolic(lambda x: np.sin(x) * x, (3,)).formula()
    assert text == "J = diag(x)·diag(cos(x)) + diag(sin(x))"
    x = np.array([0.3, -1.0, 2.0])
    np.testing.assert_allclose(
        _evaluate_formula(text, dict(x=x, np=np)), symjac.jacobian(lambda a: np.sin(a) * a, x), rtol=1e-14
    )
    text = symjac.symbolic(lambda x, y: 2 * np.exp(x) + 3 * y, (2,), (2,)).formula()
    assert text.splitlines() == ["J[0] = 2·diag(exp(x))", "J[1] = 3·I"]
    assert "∂max" in symjac.symbolic(lambda x: np.sum(np.exp(x - np.max(x))), (4,)).formula()


def _grid_rhs(ns, n):
    """A 2-D reaction-diffusion right-hand side on a periodic n x n grid (2 n^2 states)."""

    def rhs(y):
        u, v = y[: n * n].reshape(n, n), y[n * n :].reshape(n, n)

        def lap(w):
            return ns.roll(w, 1, 0) + ns.roll(w, -1, 0) + ns.roll(w, 1, 1) + ns.roll(w, -1, 1) - 4 * w

        uuv = u * u * v
        return ns.cat([(1 + uuv - 4.4 * u + lap(u)).reshape(-1), (3.4 * u - uuv + lap(v)).reshape(-1)])

    return rhs


def _pair_forces(ns, n):
    mass = ns.c(np.linspace(0.5, 1.5, n))

    def rhs(s):
        r, v = s[: 3 * n].reshape(n, 3), s[3 * n :].reshape(n, 3)
        d = r[None, :, :] - r[:, None, :]
        inv = (ns.sum(d * d, 2) + 0.01) ** -1.5
        return ns.cat([v.reshape(-1), ns.sum(mass[None, :, None] * d * inv[:, :, None], 1).reshape(-1)])

    return rhs


@pytest.mark.parametrize("model", ["grid", "pairs"])
def test_local_models_take_sparse_tangents_and_match_torch(model, rng, monkeypatch):
    import types

    torch = pytest.importorskip("torch")
    make, n_in, size = (_grid_rhs, 288, 12) if model == "grid" else (_pair_forces, 96, 16)
    np_ns = types.SimpleNamespace(
        roll=np.roll, cat=np.concatenate, c=lambda a: a, sum=lambda x, a: np.sum(x, a)
    )
    torch_ns = types.SimpleNamespace(
        roll=torch.roll, cat=torch.cat, c=torch.from_numpy, sum=lambda x, a: torch.sum(x, dim=a)
    )
    x = rng.uniform(0.2, 0.9, n_in)
    rhs = make(np_ns, size)
    graph = functional._Call(rhs, (x,), False, "t", params=True).graph
    assert arrays.choose(graph, n_in, "auto", "jacobian") == "arrays"
    sparse_ops = []
    scaled_sum = arrays.sparse.scaled_sum

    def spy(terms, shape, width):
        sparse_ops.append(shape)
        return scaled_sum(terms, shape, width)

    monkeypatch.setattr(arrays.sparse, "scaled_sum", spy)
    J = symjac.jacobian(rhs, x)
    # the elementwise work on the n^2 grid points or n^2 pairs ran on sparse rows
    assert any(math.prod(shape) >= size * size for shape in sparse_ops)
    oracle = torch.autograd.functional.jacobian(make(torch_ns, size), torch.from_numpy(x))
    np.testing.assert_allclose(J, oracle.numpy(), rtol=1e-12, atol=1e-12)


def test_large_dense_results_from_sparse_tangents_are_ordinary_arrays(rng, monkeypatch):
    """Past ``UNTOUCHED_FROM`` bytes the dense result lies on pages mapped where written: the same
    numbers as NumPy's zeros, and an array the caller may write, pickle and hand to torch."""
    import mmap
    import pickle

    rhs = _grid_rhs(types.SimpleNamespace(roll=np.roll, cat=np.concatenate), 12)
    x = rng.uniform(0.2, 0.9, 288)
    expected = symjac.jacobian(rhs, x)
    monkeypatch.setattr(arrays.sparse, "UNTOUCHED_FROM", 1)
    J = symjac.jacobian(rhs, x)
    assert J.shape == (288, 288) and J.dtype == np.float64 and J.flags.writeable
    base = J
    while isinstance(base, np.ndarray):
        base = base.base
    assert isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)
    np.testing.assert_array_equal(J, expected)
    assert np.count_nonzero(J) < 288 * 12  # a handful of entries per row, the rest zeros
    J[0, 0] += 1.0
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(J)), J)
    torch = pytest.importorskip("torch")
    Jt = symjac.jacobian(rhs, torch.from_numpy(x))
    assert isinstance(Jt, torch.Tensor)
    np.testing.assert_array_equal(Jt.numpy(), expected)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_large_dense_results_are_private_to_a_forked_child(rng, monkeypatch):
    import os

    monkeypatch.setattr(arrays.sparse, "UNTOUCHED_FROM", 1)
    J = symjac.jacobian(
        _grid_rhs(types.SimpleNamespace(roll=np.roll, cat=np.concatenate), 12), rng.uniform(0.2, 0.9, 288)
    )
    before = J.copy()
    pid = os.fork()
    if pid == 0:  # a worker that scales its copy in place
        J *= 2.0
        os._exit(0)
    os.waitpid(pid, 0)
    np.testing.assert_array_equal(J, before)


def test_untouched_zeros_out_of_memory_is_a_memory_error(monkeypatch):
    import errno
    import mmap

    def no_memory(*args, **kwargs):
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(arrays.sparse, "UNTOUCHED_FROM", 1)
    monkeypatch.setattr(mmap, "mmap", no_memory)
    if hasattr(mmap, "MAP_PRIVATE"):
        with pytest.raises(MemoryError, match=r"bytes for a \(3, 4\) result"):
            arrays.sparse.untouched_zeros((3, 4))
    else:
        assert not arrays.sparse.untouched_zeros((3, 4)).any()


def test_sparse_tangents_keep_structural_zeros_against_inf_and_nan():
    x = np.array([0.0, 1.0, np.nan, 4.0])
    with _sparse_from(1):
        J = symjac.jacobian(lambda a: np.sqrt(a) * 2.0 + a.sum(), x, expand="arrays")
    off = ~np.eye(4, dtype=bool)
    assert np.all(J[off] == 1.0)
    assert J[0, 0] == np.inf and J[1, 1] == 2.0 and np.isnan(J[2, 2]) and J[3, 3] == 1.5


def test_drop_in_kernels_come_from_the_disk_cache_in_a_new_process(tmp_path):
    import os
    import pathlib
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import warnings, numpy as np, symjac
        from symjac import compiled
        warnings.simplefilter("error")  # a refused entry would warn
        W = np.linspace(-1.0, 1.0, 48).reshape(16, 3)
        f = lambda x: np.tanh(W @ x) * x[0]
        s = lambda x: f(x).sum()
        x = np.array([0.1, 0.2, 0.3])
        symjac.jacobian(f, x, expand="elements")
        symjac.hessian(s, x, expand="elements")
        symjac.vjp(f, x, np.ones(16), expand="elements")
        symjac.jvp(f, x, np.ones(3), expand="elements")
        symjac.hvp(s, x, np.ones(3), expand="elements")
        symjac.vhp(s, x, np.ones(3), expand="elements")
        print(compiled.BUILDS)
        """
    )
    root = pathlib.Path(__file__).parent.parent
    env = dict(os.environ, SYMJAC_CACHE_DIR=str(tmp_path), PYTHONPATH=str(root))

    def builds():
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600
        )
        assert done.returncode == 0, done.stderr
        return int(done.stdout.split()[-1])

    assert builds() == 6
    assert builds() == 0


@pytest.mark.parametrize("expand", ["elements", "arrays"])
def test_a_counted_mask_is_an_integer_count_on_both_roads(expand):
    # (a > 0).sum() is an int64 count in NumPy and torch; it was recorded as a mask and crashed
    x = np.array([0.5, -1.0, 2.0, 3.0])

    def f(a):
        return (
            (a > 0).sum() * a[0] ** 2 + np.mean(a > 1) * a[1] + (a < 0).sum(axis=0, keepdims=True)[0] * a[3]
        )

    J = symjac.jacobian(f, x, expand=expand)
    np.testing.assert_array_equal(J, [3 * 2 * 0.5, 0.5, 0.0, 1.0])
    H = symjac.hessian(f, x, expand=expand)
    np.testing.assert_array_equal(H, np.diag([6.0, 0.0, 0.0, 0.0]))
    graph = functional._Call(lambda a: (a > 0).sum(), (x,), False, "t").graph
    assert graph.dtype(graph.outputs[0]) == np.asarray(x > 0).sum().dtype

    def masks_as_numbers(a):  # running counts, casts, and a mask assigned into numbers
        b = a * 1.0
        b[1:3] = a[:2] > 0
        return np.cumsum(a > 0) * a + (a > 1).astype(float) * a**2 + b * a + (a * 1.0).astype(bool) * a

    m, pos = x > 0, (x > 1).astype(float)
    b_times_a = [2 * x[0], m[0], m[1], 2 * x[3]]  # d(b a)/da: b is a there, a mask in between
    expected = np.diag(np.cumsum(m) + 2 * pos * x + b_times_a + (x != 0))
    J = symjac.jacobian(masks_as_numbers, x, expand=expand)
    np.testing.assert_array_equal(J, expected)
