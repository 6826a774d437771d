"""symjac's adapters for SciPy's solvers: root finding, minimisation with the exact Hessian, and a
sparse stiff ODE. Each result is checked against SciPy run without the exact derivatives."""

import numpy as np
from scipy.integrate import solve_ivp
from scipy.optimize import minimize, root

import symjac


# --- root: intersect the unit circle with the parabola y = x^2 ---------------------------------
def circle_parabola(z, radius):
    return np.stack([z[0] ** 2 + z[1] ** 2 - radius[0] ** 2, z[1] - z[0] ** 2])


jac = symjac.root_jacobian(circle_parabola, np.ones(2), args=(np.ones(1),))
sol = root(circle_parabola, [1.0, 1.0], jac=jac, args=(np.ones(1),))
y = (np.sqrt(5.0) - 1.0) / 2.0  # y + y^2 = 1
assert sol.success and np.allclose(sol.x, [np.sqrt(y), y], rtol=1e-12)
print("root:", sol.x, "in", sol.nfev, "evaluations")


# --- minimize: Rosenbrock's function with the exact gradient and Hessian ----------------------
def rosenbrock(x):
    return ((1.0 - x[:-1]) ** 2 + 100.0 * (x[1:] - x[:-1] ** 2) ** 2).sum()


obj = symjac.Objective(rosenbrock, np.zeros(6))
best = minimize(obj.value_and_grad, np.zeros(6), jac=True, hess=obj.hess, method="trust-exact")
assert best.success and np.allclose(best.x, 1.0, atol=1e-4), best.x
newton = minimize(obj.value_and_grad, np.zeros(6), jac=True, hessp=obj.hessp, method="Newton-CG")
assert np.allclose(newton.x, 1.0, atol=1e-4)
bfgs = minimize(rosenbrock, np.zeros(6), method="BFGS")  # SciPy's finite-difference gradient
print(f"minimize: trust-exact {best.nit} iterations, Newton-CG {newton.nit}, "
      f"BFGS without derivatives {bfgs.nit}")


# --- solve_ivp: a stiff chain of 40 coupled reactions, with a sparse exact Jacobian ------------
def chain(t, u, k):
    flux = k[0] * u[:-1] ** 2 - u[1:]
    return np.concatenate([-flux[:1], flux[:-1] - flux[1:], flux[-1:]]) - 1e-3 * u


u0 = np.linspace(1.0, 0.0, 40)
jac = symjac.ode_jacobian(chain, 0.0, u0, args=(np.array([50.0]),), sparse=True)  # CSC matrices
pattern = jac.sparsity()  # the exact pattern, for solve_ivp(jac_sparsity=...) with finite differences
options = dict(method="BDF", args=(np.array([50.0]),), rtol=1e-8, atol=1e-10)
exact = solve_ivp(chain, (0.0, 5.0), u0, jac=jac, **options)
fd = solve_ivp(chain, (0.0, 5.0), u0, jac_sparsity=pattern, **options)  # SciPy's sparse finite differences
assert exact.success and fd.success and pattern.nnz == 40 + 2 * 39
np.testing.assert_allclose(exact.y[:, -1], fd.y[:, -1], rtol=1e-5, atol=1e-8)
print(f"solve_ivp: {pattern.nnz} of {40 * 40} Jacobian entries nonzero; {exact.njev} exact Jacobians")
