"""create_graph=True with torch tensors: results carry a grad_fn whose backward is symjac's.

torch.autograd.functional is the oracle for values, for which results carry a graph, and for
first, second and third derivatives taken through them; gradcheck (finite differences) checks
the backward independently of torch's own derivatives.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from helpers import leaves as _leaves  # noqa: E402

import symjac  # noqa: E402

AF = torch.autograd.functional
TOL = dict(rtol=1e-11, atol=1e-11)


def _loss(results, seed=0):
    """A scalar that uses every result nonlinearly, with fixed random weights."""
    gen = torch.Generator().manual_seed(seed)
    total = 0
    for t in _leaves(results):
        w = torch.rand(t.shape, generator=gen, dtype=torch.float64).to(t.dtype)
        total = total + (w * t).sin().sum() + (t * t).sum()
    return total


def _grads(scalar, wrt, create_graph):
    return torch.autograd.grad(scalar, wrt, create_graph=create_graph, allow_unused=True)


def _close(ours, theirs, tol=TOL):
    for a, b in zip(_leaves(ours), _leaves(theirs), strict=True):
        if b is None:
            assert a is None or not a.any()
        else:
            torch.testing.assert_close(a, b, **tol)


def _check(api, func, inputs, v=None, orders=3, tol=TOL):
    """Values, the presence of a graph, and derivatives of order 1..orders through ``api``."""
    args = (v,) if v is not None else ()
    ours = getattr(symjac, api)(func, inputs, *args, create_graph=True)
    theirs = getattr(AF, api)(func, inputs, *args, create_graph=True)
    _close(ours, theirs, tol)
    for a, b in zip(_leaves(ours), _leaves(theirs), strict=True):
        assert a.requires_grad == b.requires_grad
        assert (a.grad_fn is None) == (b.grad_fn is None)
    wrt = tuple(t for t in _leaves(inputs) + (_leaves(v) if v is not None else []) if t.requires_grad)
    s_ours, s_theirs = _loss(ours), _loss(theirs)
    for order in range(orders):
        last = order == orders - 1
        g_ours, g_theirs = _grads(s_ours, wrt, not last), _grads(s_theirs, wrt, not last)
        _close(g_ours, g_theirs, tol)
        if not last:
            s_ours, s_theirs = _loss(g_ours, order + 1), _loss(g_theirs, order + 1)


def _x(*shape, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=gen, dtype=torch.float64) - 0.5).to(dtype).requires_grad_(True)


def f_vec(a):
    return (a**3).sum() * a.sin()


def f_two(a, b):
    return a * b.exp().sum(), (a**2).sum() * b.tanh()


def f_scalar(a, b):
    return (a.sin() * b[:3].cos()).sum() + (b**3).sum() * a.exp().sum()


def test_jacobian_pow2_sum_backward_fills_grad_as_torch():
    x = _x(3)
    symjac.jacobian(f_vec, x, create_graph=True).pow(2).sum().backward()
    ours = x.grad.clone()
    x.grad = None
    AF.jacobian(f_vec, x, create_graph=True).pow(2).sum().backward()
    torch.testing.assert_close(ours, x.grad, **TOL)


def test_jacobian_single_and_tuple():
    _check("jacobian", f_vec, _x(3))
    _check("jacobian", f_two, (_x(2), _x(3, seed=1)))


def test_jacobian_matrix_input():
    _check("jacobian", lambda a: (a @ a).tanh(), _x(2, 2), orders=2)


def test_hessian():
    _check("hessian", lambda a: (a**3).sum() * a.sin().sum(), _x(3))
    _check("hessian", f_scalar, (_x(3), _x(4, seed=1)))


@pytest.mark.parametrize("v_grad", [False, True])
def test_vjp_and_jvp(v_grad):
    x = _x(3)
    v = _x(3, seed=2).detach().requires_grad_(v_grad)
    _check("vjp", f_vec, x, v)
    _check("jvp", f_vec, x, v, orders=2)
    a, b = _x(2), _x(3, seed=1)
    _check("vjp", f_two, (a, b), (_x(2, seed=3).detach().requires_grad_(v_grad), _x(3, seed=4)), orders=2)
    _check("jvp", f_two, (a, b), (_x(2, seed=3).detach().requires_grad_(v_grad), _x(3, seed=4)), orders=2)


@pytest.mark.parametrize("api", ["hvp", "vhp"])
def test_hvp_vhp(api):
    a, b = _x(3), _x(4, seed=1)
    _check(api, f_scalar, (a, b), (_x(3, seed=2), _x(4, seed=3)), orders=2)
    _check(api, lambda z: (z**3).sum() * z.sin().sum(), a, _x(3, seed=4).detach())


def test_float32():
    _check("jacobian", f_vec, _x(3, dtype=torch.float32), tol=dict(rtol=1e-5, atol=1e-5), orders=2)


def test_inputs_without_grad_still_carry_a_graph():
    # torch: an input that does not require grad is replaced by a detached copy that does.
    x = _x(3).detach()
    ours, theirs = symjac.jacobian(f_vec, x, create_graph=True), AF.jacobian(f_vec, x, create_graph=True)
    assert ours.grad_fn is not None and theirs.grad_fn is not None
    assert x.grad is None


def test_no_grad_does_not_matter():
    x = _x(3)
    with torch.no_grad():
        J = symjac.jacobian(f_vec, x, create_graph=True)
    assert J.grad_fn is not None
    (g,) = torch.autograd.grad(J.sum(), x)
    (expected,) = torch.autograd.grad(AF.jacobian(f_vec, x, create_graph=True).sum(), x)
    torch.testing.assert_close(g, expected, **TOL)


def test_constant_results_do_not_require_grad():
    x = _x(3)
    ours = symjac.jacobian(lambda a: a * 2, x, create_graph=True)
    theirs = AF.jacobian(lambda a: a * 2, x, create_graph=True)
    assert not ours.requires_grad and not theirs.requires_grad
    out, prod = symjac.vjp(lambda a: a * 3, x, torch.ones(3), create_graph=True)
    assert out.requires_grad and not prod.requires_grad


def test_without_create_graph_results_are_detached():
    x = _x(3)
    for res in _leaves(symjac.vjp(f_vec, x, torch.ones(3))) + [symjac.hessian(lambda a: a.exp().sum(), x)]:
        assert res.grad_fn is None and not res.requires_grad


def test_gradcheck_against_finite_differences():
    def jac(a):
        return symjac.jacobian(f_vec, a, create_graph=True)

    x = _x(3)
    assert torch.autograd.gradcheck(jac, (x,))
    assert torch.autograd.gradgradcheck(jac, (x,))


def test_nested_symjac_call_with_torch_inputs():
    x = _x(3)
    inner = lambda a: symjac.jacobian(f_vec, a, create_graph=True)  # noqa: E731
    H = symjac.jacobian(inner, x, create_graph=True)
    H_torch = AF.jacobian(lambda a: AF.jacobian(f_vec, a, create_graph=True), x, create_graph=True)
    torch.testing.assert_close(H, H_torch, **TOL)
    (g,) = torch.autograd.grad(H.pow(2).sum(), x)
    (expected,) = torch.autograd.grad(H_torch.pow(2).sum(), x)
    torch.testing.assert_close(g, expected, **TOL)


def test_backward_kernels_are_cached():
    x = _x(3, seed=5)
    J = symjac.jacobian(f_vec, x, create_graph=True)
    torch.autograd.grad(J.sum(), x)
    before = (len(symjac.functional._KERNELS.data), symjac.compiled.BUILDS)
    J = symjac.jacobian(f_vec, _x(3, seed=6), create_graph=True)
    torch.autograd.grad(J.sum(), J.grad_fn.saved_tensors[0])
    assert (len(symjac.functional._KERNELS.data), symjac.compiled.BUILDS) == before


def test_parameters_as_inputs_train_like_torch():
    # A Jacobian penalty in a loss: gradients reach the weights passed as inputs.
    x, W = _x(3), _x(3, 3, seed=1)

    def f(a, w):
        return (w @ a).tanh()

    def step(api):
        W.grad = None
        Jx, Jw = api(f, (x, W), create_graph=True)
        loss = Jx.pow(2).sum() + 0.1 * Jw.pow(2).sum()
        loss.backward()
        return W.grad.clone()

    torch.testing.assert_close(step(symjac.jacobian), step(AF.jacobian), **TOL)


def test_captured_tensor_requiring_grad_is_refused():
    x, w = _x(3), _x(3, seed=1)
    with pytest.raises(
        RuntimeError, match=r"torch tensor of shape \(3,\) that requires grad.*Pass it as an input"
    ):
        symjac.jacobian(lambda a: (a * w).sin(), x, create_graph=True)
    # Without create_graph nothing is lost: torch also returns detached results.
    np.testing.assert_allclose(
        symjac.jacobian(lambda a: (a * w).sin(), x).numpy(),
        AF.jacobian(lambda a: (a * w).sin(), x).numpy(),
        rtol=1e-13,
    )
