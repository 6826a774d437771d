"""CompiledFunction.torch(): a compiled function as a differentiable torch op.

torch.autograd.functional with create_graph=True is the oracle for values and for gradients of
every order with respect to inputs, runtime parameters and vectors; gradcheck checks the
backward against finite differences.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from helpers import leaves as _leaves  # noqa: E402

import symjac  # noqa: E402

AF = torch.autograd.functional
TOL = dict(rtol=1e-11, atol=1e-11)


def _close(a, b, tol=TOL):
    for p, q in zip(_leaves(a), _leaves(b), strict=True):
        torch.testing.assert_close(p, q, **tol)


def _loss(results):
    return sum((t * t).sum() + t.sin().sum() for t in _leaves(results))


def _same_derivatives(ours, theirs, wrt, orders=2):
    _close(ours, theirs)
    s_ours, s_theirs = _loss(ours), _loss(theirs)
    for order in range(orders):
        last = order == orders - 1
        g_ours = torch.autograd.grad(s_ours, wrt, create_graph=not last)
        g_theirs = torch.autograd.grad(s_theirs, wrt, create_graph=not last)
        _close(g_ours, g_theirs)
        s_ours, s_theirs = _loss(g_ours), _loss(g_theirs)


def _t(*shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=gen, dtype=torch.float64) - 0.5).requires_grad_(True)


def f(x, th):
    return (th[0] * x**3).sum() * (th[1] * x).sin()


def test_jacobian_with_runtime_parameter():
    cf = symjac.compile(f, np.zeros(3), np.zeros(2), wrt=0)
    x, th = _t(3), _t(2, seed=1)
    ours = cf.torch()(x, th)
    theirs = AF.jacobian(lambda a: f(a, th), x, create_graph=True)
    _same_derivatives(ours, theirs, (x, th), orders=3)


def test_batch_broadcasts_parameters():
    cf = symjac.compile(f, np.zeros(3), np.zeros(2), wrt=0)
    xb, th = _t(4, 3), _t(2, seed=1)
    ours = cf.torch()(xb, th)
    assert ours.shape == (4, 3, 3)
    theirs = torch.stack([AF.jacobian(lambda a: f(a, th), xb[i], create_graph=True) for i in range(4)])
    _same_derivatives(ours, theirs, (xb, th))


def test_tuple_inputs_outputs_and_value():
    def g(a, b):
        return a * b.exp().sum(), (a**2).sum() * b.tanh()

    cf = symjac.compile(g, np.zeros(2), np.zeros(3), value=True)
    a, b = _t(2), _t(3, seed=1)
    values, jac = cf.torch()(a, b)
    assert len(values) == 2 and len(jac) == 2 and len(jac[0]) == 2
    theirs = (g(a, b), AF.jacobian(g, (a, b), create_graph=True))
    _same_derivatives((values, jac), theirs, (a, b))


def test_hessian_and_products():
    def s(a):
        return (a**3).sum() * a.sin().sum()

    x, v = _t(3), _t(3, seed=2)
    hess = symjac.compile(s, np.zeros(3), mode="hessian").torch()
    _same_derivatives(hess(x), AF.hessian(s, x, create_graph=True), (x,))
    for mode in ("hvp", "jvp", "vjp"):
        fn = s if mode == "hvp" else (lambda a: a.exp() * a.sum())
        op = symjac.compile(fn, np.zeros(3), mode=mode).torch()
        theirs = getattr(AF, mode)(fn, x, v, create_graph=True)[1]
        _same_derivatives(op(x, v=v), theirs, (x, v))


def test_gradcheck():
    op = symjac.compile(f, np.zeros(3), np.zeros(2), wrt=0).torch()
    assert torch.autograd.gradcheck(op, (_t(3), _t(2, seed=1)))
    assert torch.autograd.gradgradcheck(op, (_t(3), _t(2, seed=1)))


def test_training_follows_torch():
    # Fit parameters so that the Jacobian matches a target: same steps as torch's own autograd.
    op = symjac.compile(f, np.zeros(3), np.zeros(2), wrt=0).torch()
    x = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    target = torch.eye(3, dtype=torch.float64) * 0.1

    def train(jac):
        th = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
        opt = torch.optim.SGD([th], lr=0.5)
        losses = []
        for _ in range(5):
            opt.zero_grad()
            loss = (jac(x, th) - target).pow(2).sum()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return th.detach(), losses

    ours, ours_losses = train(op)
    theirs, their_losses = train(lambda a, th: AF.jacobian(lambda z: f(z, th), a, create_graph=True))
    torch.testing.assert_close(ours, theirs, **TOL)
    np.testing.assert_allclose(ours_losses, their_losses, rtol=1e-12)
    assert ours_losses[-1] < ours_losses[0]


def test_backward_is_compiled_once():
    op = symjac.compile(f, np.zeros(3), np.zeros(2), wrt=0).torch()
    x, th = _t(3), _t(2, seed=1)
    op(x, th).sum().backward()
    first = op.backward()
    op(x, th).sum().backward()
    assert op.backward() is first


def test_errors():
    cf = symjac.compile(f, np.zeros(3), np.zeros(2), wrt=0)
    with pytest.raises(ValueError, match=r"argument 0 has shape \(4,\); expected \(3,\)"):
        cf.torch()(torch.zeros(4), torch.zeros(2))
    with pytest.raises(TypeError, match="expected 2 inputs, got 1"):
        cf.torch()(torch.zeros(3))
    with pytest.raises(NotImplementedError, match="sparse"):
        symjac.compile(lambda a: a.sin(), np.zeros(3), sparse="csr").torch()


def test_a_scalar_value_stays_0_d_and_its_gradient_flows():
    # np.ascontiguousarray made the 0-d value (a loss) of shape (1,), and backward then refused it.
    cf = symjac.compile(lambda a: (a**3).sum(), np.zeros(3), value=True)
    x = _t(3)
    value, J = cf.torch()(x)
    assert value.shape == () and J.shape == (3,)
    (value + J.sum()).backward()
    np.testing.assert_allclose(x.grad.numpy(), 3 * x.detach().numpy() ** 2 + 6 * x.detach().numpy(), rtol=1e-13)
