"""symjac: exact Jacobians of ordinary tensor code, compiled to native kernels with LLVM.

Write a model once with torch-style methods, NumPy functions or torch functions; symjac traces
it, differentiates it exactly with SymPy, and runs the derivative as an LLVM-compiled kernel.
The front door is a drop-in for ``torch.autograd.functional``.
"""

from __future__ import annotations

from .compiled import CompiledFunction, compile
from .control import Linearization, linearize
from .errors import DtypeError, InPlaceError, UntraceableError
from .functional import hessian, hvp, jacobian, jvp, vhp, vjp
from .solvers import Objective, least_squares_jacobian, ode_jacobian, root_jacobian
from .symbolic import SymbolicView, symbolic
from .sympy_in import from_sympy
from .trace import api_ops as _api_ops
from .trace import names as _names  # noqa: F401  (binds every op name)

where = _api_ops.where
clamp = _api_ops.clamp
stop_gradient = _api_ops.stop_gradient
maximum = _api_ops.maximum
minimum = _api_ops.minimum

__version__ = "0.1.0"

__all__ = [
    "jacobian",
    "hessian",
    "vjp",
    "jvp",
    "hvp",
    "vhp",
    "symbolic",
    "compile",
    "from_sympy",
    "linearize",
    "Linearization",
    "ode_jacobian",
    "least_squares_jacobian",
    "root_jacobian",
    "Objective",
    "CompiledFunction",
    "SymbolicView",
    "where",
    "clamp",
    "maximum",
    "minimum",
    "stop_gradient",
    "UntraceableError",
    "InPlaceError",
    "DtypeError",
]
