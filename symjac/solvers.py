"""Exact compiled derivatives in the shapes SciPy's solvers ask for.

Each helper compiles once (``symjac.compile``) and returns callables with SciPy's signatures:
``ode_jacobian`` for ``solve_ivp(jac=..., jac_sparsity=...)``, ``least_squares_jacobian`` for
``least_squares(jac=...)``, ``root_jacobian`` for ``root(jac=...)``, and ``Objective`` for
``minimize(jac=..., hess=..., hessp=...)``.
"""

from __future__ import annotations

import numpy as np

from . import arrays, functional
from .compiled import compile


class ODEJacobian:
    """``jac(t, y, *args)`` for ``scipy.integrate.solve_ivp`` with ``fun(t, y, *args)``."""

    def __init__(self, fun, t0, y0, args=(), sparse=False):
        self._cf = compile(
            lambda t, y, *a: fun(t, y, *a),
            np.asarray(t0, dtype=float),
            np.asarray(y0, dtype=float),
            *[np.asarray(a, dtype=float) for a in args],
            wrt=1,
            sparse="csc" if sparse else None,
            cache=True,
        )
        self.calls = 0

    def __call__(self, t, y, *args):
        self.calls += 1
        return self._cf(np.asarray(t, dtype=float), y, *[np.asarray(a, dtype=float) for a in args])

    def sparsity(self):
        """The exact pattern as a SciPy CSR matrix, for ``solve_ivp(jac_sparsity=...)``.

        A method, as on compiled functions (``CompiledFunction.sparsity()``).
        """
        return self._cf.sparsity()


def ode_jacobian(fun, t0, y0, args=(), sparse=False) -> ODEJacobian:
    """The exact Jacobian of ``fun(t, y, *args)`` with respect to ``y``, compiled.

    Example:
        >>> import numpy as np, symjac
        >>> jac = symjac.ode_jacobian(lambda t, y: -t * y**2, 0.0, np.ones(2))
        >>> jac(2.0, np.array([1.0, 3.0]))
        array([[ -4.,   0.],
               [  0., -12.]])
    """
    return ODEJacobian(fun, t0, y0, args, sparse)


def _with_args(fun, x0, args, **options):
    cf = compile(
        lambda x, *a: fun(x, *a),
        np.asarray(x0, dtype=float),
        *[np.asarray(a, dtype=float) for a in args],
        wrt=0,
        **options,
    )

    def call(x, *a):
        return cf(np.asarray(x, dtype=float), *[np.asarray(v, dtype=float) for v in a])

    return call, cf


def least_squares_jacobian(residuals, x0, args=()):
    """``jac(x, *args)`` for ``scipy.optimize.least_squares(residuals, x0, jac=jac, args=args)``."""
    return _with_args(residuals, x0, args)[0]


def root_jacobian(fun, x0, args=()):
    """``jac(x, *args)`` for ``scipy.optimize.root(fun, x0, jac=jac, args=args)``."""
    return _with_args(fun, x0, args)[0]


class Objective:
    """Exact gradient, Hessian and Hessian-vector product of a scalar ``fun(x, *args)``.

    Pass the Hessian to a method that uses it: ``minimize(obj.value_and_grad, x0, jac=True,
    hess=obj.hess, method="trust-exact")`` (or ``"trust-constr"``, ``"Newton-CG"`` with
    ``hessp=obj.hessp``). SciPy's default, BFGS, ignores ``hess``.

    The gradient compiles at once. The Hessian and its products choose their road at their first
    call, as the drop-in's ``hessian`` and ``hvp`` do: a compiled kernel for a small model, the
    array road (forward over reverse, nothing to build) for a large one, whose second derivatives
    per element would take minutes to expand.

    Example:
        >>> import numpy as np, symjac
        >>> obj = symjac.Objective(lambda x: (x**4).sum(), np.zeros(2))
        >>> obj.hess(np.array([1.0, 2.0]))
        array([[12.,  0.],
               [ 0., 48.]])
    """

    def __init__(self, fun, x0, args=()):
        self.fun = fun
        self._vg = _with_args(fun, x0, args, value=True)[0]
        self._roads: dict = {}  # "hessian" / "hvp" -> a compiled kernel, or None for the array road

    def value_and_grad(self, x, *args):
        value, grad = self._vg(x, *args)
        return float(value), grad

    def jac(self, x, *args):
        return self._vg(x, *args)[1]

    def hess(self, x, *args):
        x = np.asarray(x, dtype=float)
        kernel = self._road("hessian", x, args)
        if kernel is not None:
            return kernel(x, *[np.asarray(a, dtype=float) for a in args])
        return functional.hessian(lambda y: self.fun(y, *args), x)

    def hessp(self, x, p, *args):
        x, p = np.asarray(x, dtype=float), np.asarray(p, dtype=float)
        kernel = self._road("hvp", x, args)
        if kernel is not None:
            return kernel(x, *[np.asarray(a, dtype=float) for a in args], v=p)
        return functional.hvp(lambda y: self.fun(y, *args), x, p)[1]

    def _road(self, mode: str, x, args):
        """The compiled kernel of ``mode``, or None where the array road is cheaper."""
        if mode not in self._roads:
            f = lambda y: self.fun(y, *args)  # noqa: E731
            graph = functional._Call(f, (x,), False, f"Objective.{mode}", params=True).graph
            road = arrays.choose(graph, x.size, "auto", mode)
            self._roads[mode] = None if road == "arrays" else _with_args(self.fun, x, args, mode=mode)[1]
        return self._roads[mode]
