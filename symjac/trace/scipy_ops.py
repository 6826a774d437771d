"""SciPy functions that are not ufuncs (``scipy.special.logsumexp``, ``scipy.linalg.expm``, ...).

SciPy's ufuncs reach symjac through ``__array_ufunc__``; these plain Python functions do not
dispatch at all, so while a function is traced they are swapped for ones that record symjac
operations on traced arguments and call SciPy's own otherwise. The swap covers the SciPy
modules and names the traced function's module imported from them
(``from scipy.special import logsumexp``). The replacements are op-table rows whose NumPy-style
names start with ``scipy.`` (see :mod:`symjac.trace.names`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import sys
import threading

import numpy as np

from .. import errors
from . import ops
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


@functools.cache
def _rows():
    """(module name, function name, traced form) of every SciPy row in the table."""
    return tuple(
        (*qualified.rsplit(".", 1), traced)
        for qualified, traced in ops.NUMPY_API.items()
        if qualified.startswith("scipy.")
    )


_WRAPPERS: dict = {}  # SciPy function -> its dispatching wrapper


def _targets():
    """(module namespace, name, SciPy's function, wrapper) for each row whose module is loaded."""
    out = []
    for module_name, name, traced in _rows():
        # SciPy is loaded (swapped() checks): load the submodule too, since the traced function
        # may import it only when it runs
        module = sys.modules.get(module_name) or importlib.import_module(module_name)
        original = getattr(module, name, None)
        if original is None:
            continue
        original = getattr(original, "_symjac_original", original)
        wrapper = _WRAPPERS.get(original)
        if wrapper is None:
            wrapper = _WRAPPERS[original] = _dispatching(original, traced)
        out.append((module.__dict__, name, original, wrapper))
    return out


# Where the swap happens, and why there. The SciPy functions cannot dispatch on a traced
# argument (they are plain Python), and their function objects are shared with other threads, so
# they stay as they are. Instead every *name* that refers to one is rebound to a wrapper that
# dispatches: SciPy's own module namespaces, the globals of every module of the user's code (a
# helper module that did ``from scipy.special import logsumexp``), and the traced function's
# globals and closure cells. The wrapper calls SciPy's function unless an argument is traced, so
# another thread calling it meanwhile gets SciPy's result. The names are bound back only when
# the last trace of any thread ends: one thread's restore cannot pull a wrapper from under
# another's trace. References held elsewhere (a dict, a default argument, a class attribute)
# are not found; symjac.trace.ops lists the traced forms to call directly.
_ACTIVE = 0
_SAVED: list = []  # (namespace, name, SciPy's function), restored when _ACTIVE drops to 0
_SAVED_CELLS: list = []
_USER_MODULES: list = [-1, []]  # len(sys.modules) when scanned, the user's module namespaces
_HITS: dict = {}  # id(namespace) -> (its size when scanned, names that held a SciPy function)


def _user_namespaces() -> list:
    """The globals of the loaded modules that are the user's code, not a library's."""
    if _USER_MODULES[0] != len(sys.modules):
        from .assembly import is_user_module

        _USER_MODULES[:] = [
            len(sys.modules),
            [m.__dict__ for m in list(sys.modules.values()) if is_user_module(m)],
        ]
    return _USER_MODULES[1]


def _swap_names(namespace: dict, swap: dict):
    """Rebind the names in ``namespace`` that refer to a swapped SciPy function."""
    size = len(namespace)
    seen = _HITS.get(id(namespace))
    if seen is None or seen[0] != size:
        # wrappers count too: a namespace first scanned during another thread's trace
        names = tuple(key for key, value in namespace.items() if id(value) in swap)
        _HITS[id(namespace)] = seen = (size, names)
    for key in seen[1]:
        hit = swap.get(id(namespace.get(key)))
        if hit is not None and namespace[key] is hit[0]:
            _SAVED.append((namespace, key, hit[0]))
            namespace[key] = hit[1]


@contextlib.contextmanager
def swapped(func):
    """Within the block, SciPy's non-ufunc functions in the table record symjac operations."""
    global _ACTIVE
    if "scipy" not in sys.modules:
        yield
        return
    user_globals = getattr(func, "__globals__", None)
    cells = getattr(func, "__closure__", None) or ()
    with _LOCK:
        _ACTIVE += 1
        targets = _targets()
        swap = {id(original): (original, wrapper) for _, _, original, wrapper in targets}
        swap.update({id(wrapper): (original, wrapper) for _, _, original, wrapper in targets})
        for namespace, name, original, wrapper in targets:
            if namespace[name] is original:
                _SAVED.append((namespace, name, original))
                namespace[name] = wrapper
        namespaces = _user_namespaces()
        if user_globals is not None and all(ns is not user_globals for ns in namespaces):
            namespaces = [*namespaces, user_globals]
        for namespace in namespaces:
            _swap_names(namespace, swap)
        for cell in cells:  # names imported inside the enclosing function
            try:
                hit = swap.get(id(cell.cell_contents))
            except ValueError:  # an empty cell
                continue
            if hit is not None and hit[0] is cell.cell_contents:
                _SAVED_CELLS.append((cell, hit[0]))
                cell.cell_contents = hit[1]
    try:
        yield
    finally:
        with _LOCK:
            _ACTIVE -= 1
            if _ACTIVE == 0:
                while _SAVED:
                    namespace, key, value = _SAVED.pop()
                    namespace[key] = value
                while _SAVED_CELLS:
                    cell, value = _SAVED_CELLS.pop()
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
        if isinstance(b, Var):
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
