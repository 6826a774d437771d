"""symjac with JAX: compiled functions inside jax.jit / vmap / grad, jax arrays in the functional
API, and jax.numpy code traced like NumPy code. JAX's own autodiff of the same jnp code is the
oracle (float64 throughout)."""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

import symjac  # noqa: E402

jax.config.update("jax_enable_x64", True)
TOL = dict(rtol=1e-12, atol=1e-13)


def f(x, th):
    return jnp.sum(th[0] * x**3) * jnp.sin(th[1] * x)


X = jnp.array([0.1, -0.2, 0.3])
TH = jnp.array([1.5, 0.7])


def _close(a, b, tol=TOL):
    for p, q in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        assert isinstance(p, jax.Array)
        np.testing.assert_allclose(np.asarray(p), np.asarray(q), **tol)


@pytest.fixture(scope="module")
def op():
    return symjac.compile(f, np.zeros(3), np.zeros(2), wrt=0).jax()


def test_compiled_op_in_jit_and_vmap(op):
    expected = jax.jacfwd(f)(X, TH)
    _close(op(X, TH), expected)
    _close(jax.jit(op)(X, TH), expected)
    xb = jnp.stack([X, 2 * X, -X, 0.5 * X])
    _close(jax.vmap(op, in_axes=(0, None))(xb, TH), jax.vmap(jax.jacfwd(f), in_axes=(0, None))(xb, TH))
    thb = jnp.stack([TH, 2 * TH])
    _close(
        jax.jit(jax.vmap(op, in_axes=(None, 0)))(X, thb), jax.vmap(jax.jacfwd(f), in_axes=(None, 0))(X, thb)
    )


def test_grad_through_compiled_op_all_orders(op):
    def loss(x, th):
        return jnp.sum(jnp.sin(op(x, th)) ** 2)

    def loss_jax(x, th):
        return jnp.sum(jnp.sin(jax.jacfwd(f)(x, th)) ** 2)

    # The oracle runs jitted: eager JAX takes seconds per call here.
    _close(jax.grad(loss, (0, 1))(X, TH), jax.jit(jax.grad(loss_jax, (0, 1)))(X, TH))
    _close(jax.jit(jax.hessian(loss, (0, 1)))(X, TH), jax.jit(jax.hessian(loss_jax, (0, 1)))(X, TH))
    xb = jnp.stack([X, 2 * X])
    per_point = jax.vmap(jax.grad(loss), in_axes=(0, None))
    _close(jax.jit(per_point)(xb, TH), jax.jit(jax.vmap(jax.grad(loss_jax), in_axes=(0, None)))(xb, TH))


def test_products_and_value():
    def g(a, b):
        return a * jnp.sum(jnp.exp(b)), jnp.sum(a**2) * jnp.tanh(b)

    a, b = jnp.array([0.3, -0.4]), jnp.array([0.1, 0.2, 0.5])
    op = symjac.compile(g, np.zeros(2), np.zeros(3), value=True).jax()
    values, jac = jax.jit(op)(a, b)
    _close(values, g(a, b))
    _close(jac, jax.jacfwd(g, (0, 1))(a, b))
    v = jnp.array([1.0, -2.0])
    vjp_op = symjac.compile(lambda z: jnp.exp(z) * jnp.sum(z), np.zeros(2), mode="vjp").jax()
    expected = jax.vjp(lambda z: jnp.exp(z) * jnp.sum(z), a)[1](v)[0]
    _close(jax.jit(lambda z, w: vjp_op(z, v=w))(a, v), expected)
    _close(
        jax.grad(lambda z: jnp.sum(vjp_op(z, v=v) ** 2))(a),
        jax.grad(lambda z: jnp.sum(jax.vjp(lambda y: jnp.exp(y) * jnp.sum(y), z)[1](v)[0] ** 2))(a),
    )


def test_functional_api_with_concrete_jax_arrays():
    ours = symjac.jacobian(f, (X, TH))
    _close(ours, jax.jacfwd(f, (0, 1))(X, TH))
    s = lambda z: jnp.sum(jnp.sin(z) ** 2) * jnp.sum(z)  # noqa: E731
    _close(symjac.hessian(s, X), jax.hessian(s)(X))
    v = jnp.array([0.5, 1.0, -1.0])
    out, prod = symjac.vjp(lambda z: f(z, TH), X, v)
    _close((out, prod), (f(X, TH), jax.vjp(lambda z: f(z, TH), X)[1](v)[0]))
    out, tangent = symjac.jvp(lambda z: f(z, TH), X, v)
    _close((out, tangent), jax.jvp(lambda z: f(z, TH), (X,), (v,)))
    hv = jax.jvp(jax.grad(s), (X,), (v,))[1]
    _close(symjac.hvp(s, X, v)[1], hv)
    _close(symjac.vhp(s, X, v)[1], hv)


def test_functional_api_inside_jit_and_grad():
    expected = jax.jacfwd(f)(X, TH)
    _close(jax.jit(lambda a: symjac.jacobian(lambda z: f(z, TH), a))(X), expected)
    _close(jax.jit(lambda a, t: symjac.jacobian(f, (a, t)))(X, TH), jax.jacfwd(f, (0, 1))(X, TH))
    s = lambda z: jnp.sum(jnp.sin(z) ** 2)  # noqa: E731
    _close(
        jax.grad(lambda a: symjac.hessian(s, a).sum())(X),
        jax.grad(lambda a: jax.hessian(s)(a).sum())(X),
    )
    v = 2 * X
    out, prod = jax.jit(lambda a, w: symjac.vjp(lambda z: f(z, TH), a, w))(X, v)
    _close(prod, jax.vjp(lambda z: f(z, TH), X)[1](v)[0])
    xb = jnp.stack([X, -X])
    _close(
        jax.vmap(lambda a: symjac.jacobian(lambda z: f(z, TH), a))(xb),
        jax.vmap(jax.jacfwd(f), in_axes=(0, None))(xb, TH),
    )


def test_traced_constant_is_refused_with_advice():
    with pytest.raises(TypeError, match="pass it to the symjac call as an input"):
        jax.jit(lambda a, t: symjac.jacobian(lambda z: f(z, t), a))(X, TH)
    with pytest.raises(NotImplementedError, match=r"strict=True\) needs concrete values"):
        jax.jit(lambda a: symjac.jacobian(lambda z: f(z, TH), a, strict=True))(X)


def test_jax_numpy_code_traces_like_numpy():
    def model(x):
        h = jax.nn.softplus(jnp.tanh(x[:2]) @ jnp.array([[1.0, -0.5], [0.3, 2.0]]))
        return jnp.concatenate([jax.nn.relu(h) * jnp.exp(x[2]), jnp.stack([jnp.sum(x**2), jnp.max(x)])])

    x = np.array([0.3, -0.8, 0.2])
    ours = symjac.jacobian(model, x)
    assert isinstance(ours, np.ndarray)
    np.testing.assert_allclose(ours, np.asarray(jax.jacfwd(model)(jnp.asarray(x))), **TOL)
    # The wrappers call JAX itself when nothing is traced by symjac.
    assert isinstance(jnp.sin(jnp.array(1.0)), jax.Array)
    assert jnp.sin.__wrapped__ is not None and jnp.sin.__name__ == "sin"
    # Everything but the call still reaches JAX's own object (ufunc methods, docs).
    np.testing.assert_array_equal(
        jnp.add.outer(jnp.arange(2.0), jnp.arange(3.0)), np.add.outer(np.arange(2.0), np.arange(3.0))
    )
    assert "sine" in jnp.sin.__doc__.lower()


def test_op_errors(op):
    with pytest.raises(ValueError, match=r"argument 0 has shape \(2, 3\); expected \(3,\).*jax.vmap"):
        op(jnp.zeros((2, 3)), TH)
    with pytest.raises(TypeError, match="expected 2 inputs, got 1"):
        op(X)
