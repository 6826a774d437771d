"""SciPy functions that are not ufuncs (``scipy.special.logsumexp``, ``scipy.linalg.expm``, ...).

SciPy's ufuncs reach symjac through ``__array_ufunc__``; these plain Python functions do not
dispatch at all, so while a function is traced they are swapped for ones that record symjac
operations on traced arguments and call SciPy's own otherwise. The swap covers the SciPy
modules and names the traced function's module imported from them
(``from scipy.special import logsumexp``). The replacements are op-table rows whose NumPy-style
names start with ``scipy.`` (see :mod:`symjac.names`).
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading

import numpy as np

from . import errors, ops
from . import reductions as R
from .api_ops import EW, _as_var, _find_trace, lift
from .tensor import Var

_LOCK = threading.Lock()


def _dispatching(original, traced):
    @functools.wraps(original)
    def call(*args, **kwargs):
        if _find_trace(tuple(args) + tuple(kwargs.values())) is None:
            return original(*args, **kwargs)
        return traced(*args, **kwargs)

    call._symjac_original = original
    return call


def _targets():
    """(namespace dict, name, replacement) for every SciPy function in the table."""
    out = []
    for qualified, traced in ops.NUMPY_API.items():
        if not qualified.startswith("scipy."):
            continue
        module_name, _, name = qualified.rpartition(".")
        module = sys.modules.get(module_name)
        if module is None:  # never imported: the user's code cannot call it
            continue
        original = getattr(module, name, None)
        if original is None:
            continue
        original = getattr(original, "_symjac_original", original)
        out.append((module.__dict__, name, original, traced))
    return out


@contextlib.contextmanager
def swapped(func):
    """Within the block, SciPy's non-ufunc functions in the table record symjac operations."""
    if "scipy" not in sys.modules:
        yield
        return
    user_globals = getattr(func, "__globals__", None)
    cells = getattr(func, "__closure__", None) or ()
    with _LOCK:
        saved, saved_cells = [], []
        for namespace, name, original, traced in _targets():
            wrapper = _dispatching(original, traced)
            saved.append((namespace, name, original))
            namespace[name] = wrapper
            if user_globals is not None and user_globals is not namespace:
                for key, value in list(user_globals.items()):
                    if value is original:
                        saved.append((user_globals, key, value))
                        user_globals[key] = wrapper
            for cell in cells:  # names imported inside the enclosing function
                try:
                    hit = cell.cell_contents is original
                except ValueError:  # an empty cell
                    continue
                if hit:
                    saved_cells.append((cell, original))
                    cell.cell_contents = wrapper
    try:
        yield
    finally:
        with _LOCK:
            for ns, key, value in reversed(saved):
                ns[key] = value
            for cell, value in saved_cells:
                cell.cell_contents = value


# --- the traced forms ---------------------------------------------------------------------------


def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False):
    """scipy.special.logsumexp; weights ``b`` must be non-negative constants."""
    if return_sign:
        raise NotImplementedError(
            "scipy.special.logsumexp: return_sign=True needs the sign of a traced sum; "
            "use weights b >= 0 (or numpy.log(numpy.abs(...)) of the sum)"
        )
    x = _as_var(a)
    if b is not None:
        if type(b) is Var:
            raise errors.UntraceableError(
                "scipy.special.logsumexp: traced weights b are not supported; "
                "write logsumexp(a + numpy.log(b)) for positive b"
            )
        weights = np.asarray(b, dtype=float)
        if np.any(weights < 0):
            raise NotImplementedError("scipy.special.logsumexp: negative weights b are not supported")
        with np.errstate(divide="ignore"):
            x = x + lift(x._trace, np.log(weights))
    return R.logsumexp(x, axis, keepdims)


def softmax(x, axis=None):
    """scipy.special.softmax (``axis=None``: over all elements)."""
    return EW["exp"](log_softmax(x, axis))


def log_softmax(x, axis=None):
    x = _as_var(x)
    return x - R.logsumexp(x, axis, True)
