"""Physics and control helpers: linearisation, SciPy adapters, SymPy in."""

import numpy as np
import pytest
import sympy

import symjac

G, MC, MP, L = 9.81, 1.0, 0.1, 0.5


def cartpole(state, force):
    x, th, xd, thd = state[0], state[1], state[2], state[3]
    s, c = np.sin(th), np.cos(th)
    total = MC + MP
    tmp = (force[0] + MP * L * thd**2 * s) / total
    thdd = (G * s - c * tmp) / (L * (4.0 / 3.0 - MP * c**2 / total))
    xdd = tmp - MP * L * thdd * c / total
    return np.stack([xd + 0 * x, thd, xdd, thdd])


def test_cartpole_upright_matches_textbook():
    A, B = symjac.linearize(cartpole, np.zeros(4), np.zeros(1))
    total = MC + MP
    denom = L * (4.0 / 3.0 - MP / total)
    a = G / denom  # d(thetadd)/d(theta)
    b = -1.0 / (total * denom)  # d(thetadd)/d(force)
    expected_A = np.array([[0, 0, 1, 0], [0, 0, 0, 1], [0, -MP * L * a / total, 0, 0], [0, a, 0, 0]])
    expected_B = np.array([[0], [0], [1 / total - MP * L * b / total], [b]])
    np.testing.assert_allclose(A, expected_A, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(B, expected_B, rtol=1e-13, atol=1e-15)


def test_symbolic_linearisation():
    lin = symjac.linearize(
        lambda x, u: np.stack([x[1], -9.81 * np.sin(x[0]) + u[0] * x[1]]), [0.0, 0.0], [0.0]
    )
    A, B = lin.symbolic()
    x0, x1, u0 = sympy.symbols("x_0 x_1 u_0", real=True)
    assert A == sympy.Matrix([[0, 1], [-sympy.Float(9.81, 17) * sympy.cos(x0), u0]]) or sympy.simplify(
        A - sympy.Matrix([[0, 1], [-9.81 * sympy.cos(x0), u0]])
    ) == sympy.zeros(2, 2)
    assert B == sympy.Matrix([[0], [x1]])


def test_output_map_and_statespace():
    lin = symjac.linearize(
        cartpole, np.zeros(4), np.zeros(1), h=lambda x, u: np.stack([x[0], x[1] + 0.5 * u[0]])
    )
    A, B, C, D = lin
    np.testing.assert_array_equal(C, [[1, 0, 0, 0], [0, 1, 0, 0]])
    np.testing.assert_array_equal(D, [[0], [0.5]])
    control = pytest.importorskip("control")
    sys = lin.statespace()
    assert isinstance(sys, control.StateSpace) and sys.nstates == 4


def test_linearize_with_parameters():
    f = lambda x, u, p: np.stack([x[1], -p[0] * np.sin(x[0]) - p[1] * x[1] + u[0]])  # noqa: E731
    A, B = symjac.linearize(f, [0.0, 0.0], [0.0], p=[4.0, 0.5])
    np.testing.assert_allclose(A, [[0, 1], [-4, -0.5]])
    np.testing.assert_allclose(B, [[0], [1]])


def test_ode_jacobian_matches_and_solves():
    from scipy.integrate import solve_ivp

    def rober(t, y, k):
        return np.stack(
            [
                -k[0] * y[0] + k[2] * y[1] * y[2],
                k[0] * y[0] - k[2] * y[1] * y[2] - k[1] * y[1] ** 2,
                k[1] * y[1] ** 2,
            ]
        )

    k = np.array([0.04, 3e7, 1e4])
    jac = symjac.ode_jacobian(rober, 0.0, np.ones(3), args=(k,))
    y = np.array([0.9, 1e-5, 0.1])
    np.testing.assert_allclose(jac(3.0, y, k), symjac.jacobian(lambda y: rober(0.0, y, k), y), rtol=1e-14)
    sol = solve_ivp(rober, (0, 40), [1.0, 0, 0], method="BDF", jac=jac, args=(k,), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(sol.y[:, -1], [0.7158271, 9.185535e-6, 0.2841637], rtol=1e-5)
    assert jac.calls >= sol.njev > 0  # the solver used the exact Jacobian


def test_sparse_ode_jacobian():
    scipy = pytest.importorskip("scipy")

    def diffusion(t, y):
        return (
            np.concatenate([y[1:2] - 2 * y[:1], y[2:] - 2 * y[1:-1] + y[:-2], y[-2:-1] - 2 * y[-1:]]) - y**3
        )

    jac = symjac.ode_jacobian(diffusion, 0.0, np.zeros(30), sparse=True)
    y = np.linspace(0, 1, 30)
    m = jac(0.0, y)
    assert isinstance(m, scipy.sparse.csc_matrix)
    np.testing.assert_allclose(m.toarray(), symjac.jacobian(lambda y: diffusion(0.0, y), y), rtol=1e-14)
    assert jac.sparsity().nnz == 30 + 2 * 29


def test_objective_with_minimize():
    from scipy.optimize import minimize

    rosen = lambda x: ((1 - x[:-1]) ** 2).sum() + 100 * ((x[1:] - x[:-1] ** 2) ** 2).sum()  # noqa: E731
    obj = symjac.Objective(rosen, np.zeros(4))
    res = minimize(
        obj.value_and_grad,
        np.zeros(4),
        jac=True,
        hess=obj.hess,
        method="trust-exact",
        options={"gtol": 1e-12},
    )
    np.testing.assert_allclose(res.x, np.ones(4), atol=1e-8)
    x, p = np.array([0.3, -0.2, 0.5, 1.0]), np.array([1.0, 2.0, -1.0, 0.5])
    np.testing.assert_allclose(obj.hessp(x, p), obj.hess(x) @ p, rtol=1e-13)
    assert obj._roads["hessian"] is not None  # a small model: a compiled kernel
    np.testing.assert_allclose(obj.jac(x), symjac.jacobian(rosen, x), rtol=1e-14)


def test_objective_of_a_large_model_takes_the_array_road_for_its_hessian():
    # Expanding 64 x 64 second derivatives of this loss per element took minutes; forward over
    # reverse at the array level builds nothing. H = tanh'' terms + J^T (diag(s) - s s^T) J + I.
    rng = np.random.default_rng(0)
    W = rng.standard_normal((300, 64)) / 8

    def loss(x, c):
        z = W @ np.tanh(x)
        m = np.max(z)
        return np.log(np.sum(np.exp(z - m))) + m + 0.5 * c * (x**2).sum()

    obj = symjac.Objective(loss, np.zeros(64), args=(1.0,))
    x, p = rng.standard_normal(64) * 0.3, rng.standard_normal(64)
    H = obj.hess(x, 2.0)
    assert obj._roads == {"hessian": None}  # the array road: no kernel
    t = np.tanh(x)
    z = W @ t
    s = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    J = W * (1 - t**2)  # dz/dx
    oracle = (
        J.T @ (np.diag(s) - np.outer(s, s)) @ J + np.diag((W.T @ s) * -2 * t * (1 - t**2)) + 2.0 * np.eye(64)
    )
    np.testing.assert_allclose(H, oracle, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(obj.hessp(x, p, 2.0), oracle @ p, rtol=1e-11, atol=1e-13)
    assert obj._roads["hvp"] is None


def test_root_with_exact_jacobian():
    from scipy.optimize import root

    f = lambda x: np.stack([x[0] ** 2 + x[1] ** 2 - 4, np.exp(x[0]) + x[1] - 1])  # noqa: E731
    sol = root(f, [1.0, 1.0], jac=symjac.root_jacobian(f, np.zeros(2)), tol=1e-14)
    assert sol.success and np.allclose(f(sol.x), 0, atol=1e-12)


def test_from_sympy_against_sympy():
    x, y, k = sympy.symbols("x y k")
    exprs = sympy.Matrix([x * sympy.sin(y) * k, sympy.exp(x * y), sympy.atan2(y, x)])
    cf = symjac.from_sympy(exprs, [[x, y], [k]], wrt=0)
    point, param = np.array([0.7, -1.3]), np.array([2.5])
    reference = sympy.lambdify([(x, y), (k,)], exprs.jacobian([x, y]))(point, param)
    np.testing.assert_allclose(cf(point, param), reference, rtol=1e-14)
    value, J = symjac.from_sympy(exprs, [[x, y, k]], value=True)(np.array([0.7, -1.3, 2.5]))
    np.testing.assert_allclose(value, np.array(exprs.subs({x: 0.7, y: -1.3, k: 2.5}), dtype=float).ravel())
    with pytest.raises(TypeError, match="inputs must be symbols"):
        symjac.from_sympy(exprs, [[x * y]])


def test_from_sympy_loaded_from_the_disk_cache_exports_c():
    # A cache hit has no scalar program; rebuilding one replaced a field SympySpec lacks (a crash)
    x, y = sympy.symbols("x y")
    exprs = sympy.Matrix([x * sympy.cos(y) + 3.25, x**2 * y])
    built = symjac.from_sympy(exprs, [[x, y]])
    loaded = symjac.from_sympy(exprs, [[x, y]])
    assert loaded.cache_hit and not built.cache_hit
    assert loaded.c_source() == built.c_source()
