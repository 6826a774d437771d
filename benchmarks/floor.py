"""Call paths against their floors, all measured in this one run.

Run: python benchmarks/floor.py

1. One 3-state Jacobian (Robertson) at one point, per call:
     floor        a builtin that does nothing with its argument (``len(x)``), and the result's
                  allocation alone (``np.empty((3, 3))``)
     ctypes       the kernel through its ctypes pointer, buffers preallocated, no checks at all
     cf(x)        the compiled function's Python ``__call__``
     cf.entry(x)  its native entry: a CPython builtin emitted in LLVM IR (``symjac.backend.entry``)
     peers        SymPy lambdify (cse=True) and CasADi (when installed), given the same Jacobian
2. The drop-in's warm call, ``symjac.jacobian(func, x)`` once its kernel is built, against the
   cost of running ``func`` on a proxy that does nothing (the floor of any call that re-traces);
   goal: 1.5 x proxy + 3 us.
"""

from __future__ import annotations

import pathlib
import sys
from ctypes import addressof, c_char

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from models import exp_adder, exp_reducer, ur5_pose  # noqa: E402
from problems import casadi_ns, numpy_ns, robertson  # noqa: E402
from timing import per_call  # noqa: E402

import symjac  # noqa: E402


class Proxy:
    """A stand-in on which every operation (methods, operators, NumPy and torch functions) does
    nothing and returns a proxy: ``func(Proxy())`` costs only the user's Python itself."""

    __slots__ = ()

    def _op(self, *args, **kwargs):
        return self

    def __getattr__(self, name):
        return self._op

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _op
    __pow__ = __rpow__ = __neg__ = __matmul__ = __rmatmul__ = __getitem__ = _op

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return PROXY

    def __array_function__(self, func, types, args, kwargs):
        return self

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return self


PROXY = Proxy()


def us(seconds):
    return f"{seconds * 1e6:8.3f}us"


def call_paths():
    f = (lambda ns: lambda y: robertson(ns, y))(numpy_ns())
    x = np.array([1.0, 2e-5, 0.01])
    cf = symjac.compile(f, x)
    entry = cf.entry
    J = cf(x)
    assert np.array_equal(entry(x), J)
    rows = [
        ("floor: len(x)", per_call(lambda: len(x))),
        ("floor: np.empty((3, 3))", per_call(lambda: np.empty((3, 3)))),
    ]
    fn, out = cf.kernel._fn, np.zeros((3, 3))
    x_address, out_address = addressof(c_char.from_buffer(x)), addressof(c_char.from_buffer(out))
    fn(x_address, out_address, 0)
    assert np.array_equal(out, J)
    rows.append(("ctypes kernel, preallocated", per_call(lambda: fn(x_address, out_address, 0))))
    rows.append(("symjac cf(x)", per_call(lambda: cf(x))))
    rows.append(("symjac cf.entry(x)", per_call(lambda: entry(x))))
    import sympy

    view = symjac.symbolic(f, x)
    lf = sympy.lambdify([list(view.inputs[0].flat)], view.matrix, modules="numpy", cse=True)
    assert np.allclose(lf(x), J)
    rows.append(("SymPy lambdify (cse)", per_call(lambda: lf(x))))
    try:
        import casadi
    except ImportError:
        casadi = None
    if casadi is not None:
        X = casadi.SX.sym("x", 3)
        F = casadi.Function("J", [X], [casadi.jacobian(robertson(casadi_ns(), X), X)])
        assert np.allclose(np.array(F(x)), J)
        rows.append(("CasADi Function", per_call(lambda: F(x))))
    print("One 3-state Jacobian (Robertson) at one point")
    entry_time = dict(rows)["symjac cf.entry(x)"]
    for name, t in rows:
        print(f"  {name:30s} {us(t)}   {t / entry_time:6.2f}x entry")


def drop_in():
    try:
        import torch
    except ImportError:
        print("drop-in floor: needs torch (pip install torch)")
        return
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    problems = [
        ("seed exp_reducer (2x2), torch", exp_reducer, torch.from_numpy(rng.random((2, 2)))),
        ("seed exp_reducer (2x2), NumPy", exp_reducer, rng.random((2, 2))),
        (
            "seed exp_adder (2, 2), torch",
            exp_adder,
            (torch.from_numpy(rng.random(2)), torch.from_numpy(rng.random(2))),
        ),
        ("6-DOF UR5 pose, torch", ur5_pose(torch), torch.from_numpy(rng.uniform(-3, 3, 6))),
    ]
    print("\nThe drop-in's warm call against running func on a do-nothing proxy")
    print(f"  {'problem':34s} {'proxy':>10s} {'symjac':>10s} {'goal':>10s} {'symjac/goal':>12s}")
    for name, func, args in problems:
        n_in = len(args) if isinstance(args, tuple) else 1
        proxies = (PROXY,) * n_in
        func(*proxies)
        # Warm: the kernel built (expand="elements" builds it at once; the default road may
        # first answer on the array road until its time pays for the build, then uses it).
        symjac.jacobian(func, args, expand="elements")
        symjac.jacobian(func, args)
        t_proxy = per_call(lambda: func(*proxies))  # noqa: B023
        t_symjac = per_call(lambda: symjac.jacobian(func, args))  # noqa: B023
        goal = 1.5 * t_proxy + 3e-6
        print(f"  {name:34s} {us(t_proxy)} {us(t_symjac)} {us(goal)} {t_symjac / goal:11.2f}x")


if __name__ == "__main__":
    call_paths()
    drop_in()
