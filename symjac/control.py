"""Linearisation of dynamical systems: ``symjac.linearize``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import errors
from .functional import jacobian


@dataclass
class Linearization:
    """``xdot = A dx + B du`` (and ``y = C dx + D du``) at an operating point.

    Unpacks and indexes like NumPy's result tuples: ``A, B = lin`` (``A, B, C, D`` with an
    output map), ``lin[0]``, ``lin[:2]``, ``len(lin)``.
    """

    A: np.ndarray
    B: np.ndarray
    C: np.ndarray | None = None
    D: np.ndarray | None = None
    _dynamics: object = None

    def symbolic(self):
        """The exact A and B as SymPy matrices (functions of the state, input and parameters)."""
        from .symbolic import symbolic

        f, x0, u0, extra = self._dynamics
        view = symbolic(lambda x, u: f(x, u, *extra), x0, u0, names=["x", "u"])
        n = x0.size
        return view.matrix[:, :n], view.matrix[:, n:]

    def _fields(self) -> tuple:
        return (self.A, self.B) if self.C is None else (self.A, self.B, self.C, self.D)

    def __iter__(self):
        return iter(self._fields())

    def __len__(self) -> int:
        return len(self._fields())

    def __getitem__(self, index):
        return self._fields()[index]

    def statespace(self):
        """A ``control.StateSpace`` (python-control; pip install 'symjac[control]')."""
        try:
            import control
        except ImportError:
            raise ImportError("statespace() needs python-control: pip install 'symjac[control]'") from None
        n, m = self.B.shape
        C = self.C if self.C is not None else np.eye(n)
        D = self.D if self.D is not None else np.zeros((C.shape[0], m))
        return control.ss(self.A, self.B, C, D)


def _vec(a) -> np.ndarray:
    return np.atleast_1d(np.asarray(a, dtype=float))


@errors.public
def linearize(f, x0, u0, p=None, *, h=None) -> Linearization:
    """Linearise ``xdot = f(x, u[, p])`` exactly at the operating point ``(x0, u0)``.

    ``A = df/dx`` and ``B = df/du`` are exact derivatives evaluated at the point; with an output
    map ``y = h(x, u[, p])`` also ``C = dh/dx`` and ``D = dh/du``. ``p`` holds parameters that are
    not differentiated. For the symbolic A and B, use ``symjac.symbolic(f, x0, u0)``.

    Example:
        >>> import numpy as np, symjac
        >>> pendulum = lambda x, u: np.stack([x[1], -9.81 * np.sin(x[0]) + u[0]])
        >>> A, B = symjac.linearize(pendulum, np.zeros(2), np.zeros(1))
        >>> A
        array([[ 0.  ,  1.  ],
               [-9.81,  0.  ]])
    """
    x0, u0 = _vec(x0), _vec(u0)
    extra = () if p is None else (np.asarray(p, dtype=float),)

    def blocks(g):
        return jacobian(lambda x, u: g(x, u, *extra), (x0, u0))

    A, B = blocks(f)
    dynamics = (f, x0, u0, extra)
    if h is None:
        return Linearization(A, B, _dynamics=dynamics)
    C, D = blocks(h)
    return Linearization(A, B, C, D, _dynamics=dynamics)
