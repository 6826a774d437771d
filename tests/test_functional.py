"""All six functions against torch.autograd.functional on the cases of tests/cases.py."""

import numpy as np
import pytest
from cases import CASES, numpy_ns, torch_ns
from helpers import assert_same, to_torch

import symjac

torch = pytest.importorskip("torch")
AF = torch.autograd.functional

# (style the function is written in, kind of inputs it receives)
STYLES = [("numpy", "numpy"), ("torch", "torch"), ("methods", "torch"), ("methods", "numpy")]
PARAMS = [
    pytest.param(case, style, kind, id=f"{case.name}-{style}-{kind}")
    for case in CASES
    for style, kind in STYLES
    if style != "methods" or case.methods is not None
]


def _fn(case, style, dtype=np.float64):
    if style == "methods":
        return case.methods
    return case.fn(numpy_ns(dtype) if style == "numpy" else torch_ns(dtype))


def _inputs(case, kind, dtype, rng):
    xs = case.inputs(rng, dtype)
    return (to_torch(xs) if kind == "torch" else xs), to_torch(xs)


def _oracle(case, dtype=np.float64):
    return case.fn(torch_ns(dtype))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case,style,kind", PARAMS)
def test_jacobian(case, style, kind, dtype, rng):
    ours_in, torch_in = _inputs(case, kind, dtype, rng)
    expected = AF.jacobian(_oracle(case, dtype), torch_in)
    for vectorize, strategy in [(False, "reverse-mode"), (True, "reverse-mode")]:
        ours = symjac.jacobian(_fn(case, style, dtype), ours_in, vectorize=vectorize, strategy=strategy)
        assert_same(ours, expected, dtype, expect_torch=kind == "torch")
    forward = AF.jacobian(_oracle(case, dtype), torch_in, vectorize=True, strategy="forward-mode")
    ours = symjac.jacobian(_fn(case, style, dtype), ours_in, strategy="forward-mode")
    assert_same(ours, forward, dtype, expect_torch=kind == "torch")


def _random_like(shapes_of, rng, dtype):
    return tuple(rng.standard_normal(tuple(s.shape)).astype(dtype) for s in shapes_of)


def _like(struct, items, kind):
    items = to_torch(items) if kind == "torch" else items
    return items if isinstance(struct, tuple) else items[0]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case,style,kind", PARAMS)
def test_vjp_jvp(case, style, kind, dtype, rng):
    ours_in, torch_in = _inputs(case, kind, dtype, rng)
    out = _oracle(case, dtype)(*(torch_in if isinstance(torch_in, tuple) else (torch_in,)))
    outs = out if isinstance(out, tuple) else (out,)
    ins = torch_in if isinstance(torch_in, tuple) else (torch_in,)
    v_out = _random_like(outs, rng, dtype)
    v_in = _random_like(ins, rng, dtype)
    expected = AF.vjp(_oracle(case, dtype), torch_in, _like(out, v_out, "torch"))
    ours = symjac.vjp(_fn(case, style, dtype), ours_in, _like(out, v_out, kind))
    assert_same(ours, expected, dtype, expect_torch=kind == "torch")
    expected = AF.jvp(_oracle(case, dtype), torch_in, _like(torch_in, v_in, "torch"))
    ours = symjac.jvp(_fn(case, style, dtype), ours_in, _like(torch_in, v_in, kind))
    assert_same(ours, expected, dtype, expect_torch=kind == "torch")


def _scalar(fn):
    def scalar(*args):
        out = fn(*args)
        outs = out if isinstance(out, tuple) else (out,)
        total = outs[0].sum()
        for o in outs[1:]:
            total = total + o.sum()
        return total

    return scalar


@pytest.mark.parametrize("case,style,kind", PARAMS)
def test_hessian_family(case, style, kind, rng):
    dtype = np.float64
    ours_in, torch_in = _inputs(case, kind, dtype, rng)
    ins = torch_in if isinstance(torch_in, tuple) else (torch_in,)
    v_in = _random_like(ins, rng, dtype)
    oracle, fn = _scalar(_oracle(case, dtype)), _scalar(_fn(case, style, dtype))
    assert_same(
        symjac.hessian(fn, ours_in), AF.hessian(oracle, torch_in), dtype, expect_torch=kind == "torch"
    )
    for name in ("hvp", "vhp"):
        expected = getattr(AF, name)(oracle, torch_in, _like(torch_in, v_in, "torch"))
        ours = getattr(symjac, name)(fn, ours_in, _like(torch_in, v_in, kind))
        assert_same(ours, expected, dtype, expect_torch=kind == "torch")


def test_products_match_jacobian(rng):
    """jvp = J v, vjp = v J, hvp = H v, vhp = v H (PyTorch's jacobian_match_vjp_jvp)."""
    f = lambda x: (x.sin() * x.sum()).exp()  # noqa: E731
    x = rng.standard_normal(4)
    v = rng.standard_normal(4)
    J = symjac.jacobian(f, x)
    np.testing.assert_allclose(symjac.jvp(f, x, v)[1], J @ v, rtol=1e-12)
    np.testing.assert_allclose(symjac.vjp(f, x, v)[1], v @ J, rtol=1e-12)
    g = lambda x: f(x).sum()  # noqa: E731
    H = symjac.hessian(g, x)
    np.testing.assert_allclose(symjac.hvp(g, x, v)[1], H @ v, rtol=1e-12)
    np.testing.assert_allclose(symjac.vhp(g, x, v)[1], v @ H, rtol=1e-12)
    np.testing.assert_allclose(H, H.T, rtol=1e-12)


def test_mixed_input_dtypes():
    x = torch.rand(3, dtype=torch.float32)
    y = torch.rand(3, dtype=torch.float64)
    f = lambda x, y: (x * y.sin(), (x * y).sum())  # noqa: E731
    expected = AF.jacobian(f, (x, y))
    ours = symjac.jacobian(f, (x, y))
    for a, b in zip(sum(ours, ()), sum(expected, ())):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-5, atol=1e-6)
    g = lambda x, y: (x**2).sum() * (y**3).sum()  # noqa: E731
    H, Ht = symjac.hessian(g, (x, y)), AF.hessian(g, (x, y))
    for a, b in zip(sum(H, ()), sum(Ht, ())):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-5, atol=1e-5)


def test_jvp_dtype_is_the_outputs():
    x = torch.rand(3, dtype=torch.float32)
    out, prod = symjac.jvp(lambda a: a.double() * 2, x, torch.ones(3))
    assert out.dtype == prod.dtype == torch.float64


def test_float16_and_bfloat16_inputs():
    for dt in (torch.float16, torch.bfloat16):
        x = torch.rand(3).to(dt)
        ours = symjac.jacobian(lambda a: a.exp(), x)
        assert ours.dtype == dt
        torch.testing.assert_close(
            ours.float(), AF.jacobian(lambda a: a.exp(), x).float(), rtol=1e-2, atol=1e-2
        )


def test_create_graph_values_equal():
    x = torch.rand(2, 2, dtype=torch.float64)
    f = lambda x: x.exp().sum(dim=1)  # noqa: E731
    assert torch.equal(symjac.jacobian(f, x, create_graph=True), symjac.jacobian(f, x))


def test_empty_tensors():
    # torch crashes on empty outputs; symjac gives correctly shaped empty results.
    x = np.zeros(0)
    assert symjac.jacobian(lambda a: a.sum(), x).shape == (0,)
    assert symjac.jacobian(lambda a: a * 2, x).shape == (0, 0)
    y = np.ones(3)
    assert symjac.jacobian(lambda a: a[:0], y).shape == (0, 3)


def test_same_tensor_twice_is_two_inputs():
    x = torch.rand(3, dtype=torch.float64)
    f = lambda a, b: a * b  # noqa: E731
    ours, theirs = symjac.jacobian(f, (x, x)), AF.jacobian(f, (x, x))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)


def test_inputs_not_mutated():
    x = np.array([1.0, 2.0])
    before = x.copy()
    symjac.jacobian(lambda a: a**2, x)
    assert np.array_equal(x, before)


def test_func_called_exactly_once():
    calls = []

    def f(x):
        calls.append(1)
        return x.exp()

    x = np.ones(3)
    for api in (symjac.jacobian, symjac.vjp, symjac.jvp):
        calls.clear()
        api(f, x) if api is symjac.jacobian else api(f, x, np.ones(3))
        assert len(calls) == 1
    g = lambda x: f(x).sum()  # noqa: E731
    for api in (symjac.hessian, symjac.hvp, symjac.vhp):
        calls.clear()
        api(g, x) if api is symjac.hessian else api(g, x, np.ones(3))
        assert len(calls) == 1


@pytest.mark.parametrize("name", ["jacobian", "hessian", "vjp", "jvp", "hvp", "vhp"])
def test_signatures_match_torch(name):
    import inspect

    ours = inspect.signature(getattr(symjac, name)).parameters
    theirs = inspect.signature(getattr(AF, name)).parameters
    # torch's parameters, in torch's order, then symjac's own keyword-only choice of road
    assert [(p.name, p.default) for p in ours.values()] == [(p.name, p.default) for p in theirs.values()] + [
        ("expand", "auto")
    ]
    assert ours["expand"].kind is inspect.Parameter.KEYWORD_ONLY
