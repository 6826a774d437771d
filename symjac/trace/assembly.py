"""Arrays built as users write them: constants that receive traced values become traced.

``dydt = np.zeros(4); dydt[0] = ...`` and ``T = torch.eye(4); T[:3, :3] = R`` write traced
values into arrays the function creates itself. Neither NumPy's nor torch's factory functions
dispatch on their arguments (there is no traced argument to dispatch on), so while a trace runs
:func:`tracing` swaps them for versions that return constants recorded on the trace: a traced
constant takes item, slice and mask assignment like any traced tensor. ``torch.tensor``,
``torch.as_tensor`` and ``np.array`` of lists holding traced values become one traced tensor.

Only calls from the user's code are intercepted (never from NumPy, torch, SciPy, SymPy or
symjac itself), only in the thread that traces, and the originals are restored when the last
trace of any thread ends. A few common torch functions (``_TORCH_DIRECT``) are also swapped,
for speed alone: given traced tensors they call the op-table entry torch's own dispatch would
reach, and otherwise torch itself.
"""

from __future__ import annotations

import operator
import sys
import sysconfig
import threading

import numpy as np

from .. import errors
from . import api_ops as A
from . import callsite, ops
from . import graph as trace_mod
from .tensor import Var

_LIBRARIES = frozenset({"symjac", "numpy", "torch", "scipy", "sympy", "functorch"})


def from_user(frame) -> bool:
    """Whether ``frame`` runs the user's code rather than a library's."""
    name = frame.f_globals.get("__name__", "") or ""
    if name.split(".", 1)[0] in _LIBRARIES:
        return False
    filename = frame.f_code.co_filename
    return "site-packages" not in filename and "dist-packages" not in filename


def is_user_module(module) -> bool:
    """Whether a loaded module is the user's code: a file of theirs, not a library's."""
    name = getattr(module, "__name__", "") or ""
    filename = getattr(module, "__file__", None)
    if not filename or name.split(".", 1)[0] in _LIBRARIES:
        return False
    return not any(part in filename for part in ("site-packages", "dist-packages")) and not (
        filename.startswith(_STDLIB)
    )


_STDLIB = sysconfig.get_paths()["stdlib"]


def _float_dtype(dtype) -> bool:
    return dtype is None or trace_mod.numpy_dtype(dtype).kind == "f"


# --- the intercepted factories ---------------------------------------------------------------


def _user_call(factory, name: str) -> bool:
    """Whether the user's code itself calls ``factory`` (``name`` in its module), not compiled
    code inside a call of theirs (NumPy's random generators call ``np.empty``): a traced
    constant handed to C code would be read as an array's memory."""
    frame = sys._getframe(2)
    return from_user(frame) and callsite.calls(frame, name, factory)


def _constant_factory(original, name, torch_style=False):
    """``np.zeros`` and kin: a float result, made by the user's code during a trace, is a
    constant recorded on the trace."""
    torch_name = name if torch_style else None

    def factory(*args, **kwargs):
        trace = trace_mod.current()
        if trace is None or not _user_call(factory, name):
            return original(*args, **kwargs)
        if any(isinstance(a, Var) for a in args):  # zeros_like(traced): the table's own entry
            fn = ops.TORCH_API.get(torch_name) if torch_name is not None else None
            return original(*args, **kwargs) if fn is None else fn(*args, **kwargs)
        result = original(*args, **kwargs)
        if not _is_float_array(result):
            return result
        return A.lift(trace, result)

    factory.__wrapped__ = original
    return factory


def _direct(original, name):
    """A torch function that goes straight to its op-table entry when given traced tensors.

    What torch's own dispatch would reach through ``Var.__torch_function__``, without its cost
    (about 10 us a call, most of a re-trace's time in code built of ``torch.stack``); calls
    without traced tensors go to torch unchanged.
    """

    name = getattr(original, "__name__", name)  # the name __torch_function__ would look up

    def direct(*args, **kwargs):
        if A._find_trace((*args, *kwargs.values()) if kwargs else args) is None:
            return original(*args, **kwargs)
        fn = ops.TORCH_API.get(name)
        return original(*args, **kwargs) if fn is None else fn(*args, **kwargs)

    direct.__wrapped__ = original
    return direct


def _is_float_array(x) -> bool:
    if isinstance(x, np.ndarray):
        return x.dtype.kind == "f"
    return A._is_torch_tensor(x) and x.is_floating_point()


def _literal_factory(original, name, torch_style: bool):
    """``np.array`` / ``torch.tensor`` and kin: data holding traced values is one traced tensor."""

    def factory(data=None, *args, **kwargs):
        trace = trace_mod.current()
        if trace is None or not _user_call(factory, name):
            return original(data, *args, **kwargs)
        found = A._find_trace((data,))
        if found is None:
            result = original(data, *args, **kwargs)
            # torch.tensor([0., 0., 1.]) is a constant that may receive traced values later.
            return A.lift(trace, result) if torch_style and _is_float_array(result) else result
        dtype = kwargs.get("dtype", args[0] if args and not torch_style else None)
        value = literal(found, data)
        return value if dtype is None else A.cast(value, dtype)

    factory.__wrapped__ = original
    return factory


def literal(trace, data) -> Var:
    """Nested lists of traced tensors and numbers as one traced tensor (``torch.tensor`` form)."""
    if isinstance(data, (list, tuple)):
        if not data:
            return A.lift(trace, np.zeros(0))
        parts = [literal(trace, d) for d in data]
        shapes = {p.shape for p in parts}
        if len(shapes) > 1:
            raise ValueError(
                f"a nested list of traced values has rows of different shapes {sorted(shapes)}; "
                "every row must have the same shape (as for torch.tensor / numpy.array)"
            )
        return A.stack(parts, 0)
    if isinstance(data, np.ndarray) and data.dtype == object:
        return literal(trace, data.tolist())
    return A.lift(trace, data)


_NUMPY_CONSTANTS = (
    "zeros",
    "ones",
    "empty",
    "full",
    "eye",
    "identity",
    "zeros_like",
    "ones_like",
    "empty_like",
    "full_like",
)
_NUMPY_LITERALS = ("array", "asarray", "asanyarray")
_TORCH_CONSTANTS = (
    "zeros",
    "ones",
    "empty",
    "full",
    "eye",
    "zeros_like",
    "ones_like",
    "empty_like",
    "full_like",
)
_TORCH_LITERALS = ("tensor", "as_tensor")
# The torch functions most re-traced code calls (kinematics, ODE right-hand sides, losses).
_TORCH_DIRECT = (
    "stack", "cat", "concat", "where", "matmul", "einsum", "sin", "cos", "tan", "exp", "log",
    "sqrt", "tanh", "sigmoid", "abs", "atan2", "sum", "clamp", "cross", "outer",
)  # fmt: skip

_LOCK = threading.Lock()
_ACTIVE_TRACES = 0
_SAVED: list[tuple] = []  # (namespace, originals) per patched module while patched
# Per module: (getter of its names, their values, originals, wrappers), made once. Re-made only when a name's
# current value is no longer the original it wraps (the user or a library replaced it).
_WRAPPERS: dict[str, tuple] = {}


def _wrappers(module, constants, literals, direct):
    """``(originals, wrappers)``: dicts name -> function, the wrappers made once per original."""
    namespace = module.__dict__
    cached = _WRAPPERS.get(module.__name__)
    if cached is not None and cached[0](namespace) == cached[1]:
        return cached[2], cached[3]
    torch_style = module is not np
    direct = tuple(name for name in direct if name in namespace)
    names = constants + literals + direct
    originals = {name: namespace[name] for name in names}
    wrappers = {name: _constant_factory(namespace[name], name, torch_style) for name in constants}
    wrappers.update({name: _literal_factory(namespace[name], name, torch_style) for name in literals})
    wrappers.update({name: _direct(namespace[name], name) for name in direct})
    getter = operator.itemgetter(*names)
    _WRAPPERS[module.__name__] = (getter, getter(namespace), originals, wrappers)
    return originals, wrappers


def _install():
    # Every traced call patches and restores the factories: one dict update per module (a warm
    # call's floor is a few microseconds, and 38 setattr calls with fresh closures cost ~15).
    modules = [(np, _NUMPY_CONSTANTS, _NUMPY_LITERALS, ())]
    torch = sys.modules.get("torch")
    if torch is not None:
        modules.append((torch, _TORCH_CONSTANTS, _TORCH_LITERALS, _TORCH_DIRECT))
    for module, constants, literals, direct in modules:
        originals, wrappers = _wrappers(module, constants, literals, direct)
        _SAVED.append((module.__dict__, originals))
        module.__dict__.update(wrappers)


def _restore():
    while _SAVED:
        namespace, originals = _SAVED.pop()
        namespace.update(originals)


class tracing:
    """Context manager around one traced call: ``trace`` is current, the factories patched."""

    __slots__ = ("trace",)

    def __init__(self, trace):
        self.trace = trace

    def __enter__(self):
        global _ACTIVE_TRACES
        with _LOCK:
            if _ACTIVE_TRACES == 0:
                _install()
            _ACTIVE_TRACES += 1
        try:
            trace_mod.push(self.trace)
        except BaseException:
            self._leave()
            raise
        return self.trace

    def __exit__(self, *exc):
        try:
            trace_mod.pop()
        finally:
            self._leave()
        return False

    @staticmethod
    def _leave():
        global _ACTIVE_TRACES
        with _LOCK:
            _ACTIVE_TRACES -= 1
            if _ACTIVE_TRACES == 0:
                _restore()


# --- assignment -------------------------------------------------------------------------------


def setitem(x, key, value):
    """``x[key] = value``: index, slice or boolean-mask assignment on a traced tensor."""
    if not isinstance(x, Var):
        raise errors.InPlaceError(
            f"symjac cannot assign a traced value into a {type(x).__name__} that was created "
            "outside the traced function (or by a library); create it inside the function "
            "(np.zeros(...), torch.zeros(...) or x.new_zeros(...) there are traced), or build "
            "the result with torch.stack / numpy.stack / torch.where"
        )
    if isinstance(key, Var):
        if key._dtype is None or key._dtype.kind != "b":
            raise errors.untraceable("index", key)
        _rebind(x, masked_fill(x, key, value))
        return
    A.setitem(x, key, value)


def masked_fill(x, mask, value):
    """``x.masked_fill(mask, value)``: ``value`` where ``mask`` holds, else ``x``."""
    x = A._as_var(x)
    if not isinstance(mask, Var):
        mask = np.asarray(A._torch_to_numpy(mask) if A._is_torch_tensor(mask) else mask)
    v = value if isinstance(value, (int, float)) else A.lift_all(x, value)[1]
    if isinstance(v, Var) and v.shape and np.broadcast_shapes(v.shape, x.shape) != x.shape:
        raise ValueError(
            f"mask assignment of a value of shape {v.shape} into a tensor of shape {x.shape}: "
            "symjac needs a value that broadcasts to the whole tensor (a scalar, or a tensor "
            "of its shape); write y = torch.where(mask, value, y)"
        )
    out = A.where(mask, v, x)
    return out if out._dtype == x._dtype else A.cast(out, x._dtype)


def masked_fill_(x, mask, value):
    _check_writable(x, "masked_fill_")
    _rebind(x, masked_fill(x, mask, value))
    return x


def fill_diagonal(a, val, wrap=False):
    """``np.fill_diagonal(a, val)`` on a traced array (in place, as NumPy does)."""
    a = A._as_var(a)
    _check_writable(a, "fill_diagonal")
    if a.ndim < 2 or (a.ndim > 2 and len(set(a.shape)) != 1):
        raise ValueError("fill_diagonal: the array must be at least 2-d, with equal dims beyond 2-d")
    if a.ndim == 2 and wrap:
        raise NotImplementedError("fill_diagonal(..., wrap=True) is not supported; use wrap=False")
    n = min(a.shape)
    idx = np.arange(n)
    diag = (idx,) * a.ndim
    if isinstance(val, Var) or np.ndim(val) == 0:
        A.setitem(a, diag, val)
    else:
        vals = np.resize(np.asarray(val, dtype=float), n)
        A.setitem(a, diag, vals)


def _torch_fill_diagonal_(self, fill_value, wrap=False):
    fill_diagonal(self, fill_value, wrap)
    return self


def _check_writable(x, name):
    if x._op in ("input", "capture"):
        raise errors.InPlaceError(
            f"symjac cannot {name} an input of the traced function in place; copy it first "
            "(y = x.clone() or y = x.copy())"
        )


def _rebind(x: Var, new: Var):
    # In-place ops rebind the Python object to the updated node, as setitem does.
    if x._op in ("input", "capture"):
        raise errors.InPlaceError(
            "symjac cannot assign into an input of the traced function in place; copy it first "
            "(y = x.clone() or y = x.copy()) and assign into the copy"
        )
    d = x.__dict__
    d["_trace"], d["_node"] = new._trace, new._node


# --- the new_* factories of torch tensors -------------------------------------------------------


def _new_constant(fill):
    def new(self, *size, dtype=None, device=None, requires_grad=False, layout=None, pin_memory=False):
        shape = A._shape_arg(size)
        dt = A._to_numpy_dtype(dtype) if dtype is not None else (self._dtype or np.dtype(np.float64))
        return A.lift(self._trace, np.full(shape, fill, dtype=dt))

    return new


def _new_full(self, size, fill_value, *, dtype=None, device=None, requires_grad=False, **kwargs):
    dt = A._to_numpy_dtype(dtype) if dtype is not None else (self._dtype or np.dtype(np.float64))
    if isinstance(fill_value, Var):
        return A.broadcast_to(A.cast(fill_value, dt), A._shape_arg((size,)))
    return A.lift(self._trace, np.full(A._shape_arg((size,)), fill_value, dtype=dt))


def _new_tensor(self, data, *, dtype=None, device=None, requires_grad=False, **kwargs):
    found = A._find_trace((data,))
    dt = A._to_numpy_dtype(dtype) if dtype is not None else (self._dtype or np.dtype(np.float64))
    if found is None:
        return A.lift(
            self._trace, np.asarray(A._torch_to_numpy(data) if A._is_torch_tensor(data) else data, dtype=dt)
        )
    return A.cast(literal(found, data), dt)


def _torch_tensor(data, *, dtype=None, device=None, requires_grad=False, pin_memory=False):
    # torch.as_tensor(traced) and torch.tensor(traced): reached through __torch_function__.
    trace = A._find_trace((data,))
    value = literal(trace, data)
    return value if dtype is None else A.cast(value, dtype)


METHODS = {
    "__setitem__": setitem,
    "masked_fill": masked_fill,
    "masked_fill_": masked_fill_,
    "fill_diagonal_": _torch_fill_diagonal_,
    "new_zeros": _new_constant(0.0),
    "new_ones": _new_constant(1.0),
    "new_empty": _new_constant(0.0),
    "new_full": _new_full,
    "new_tensor": _new_tensor,
}
TORCH_API = {
    "__setitem__": setitem,
    "masked_fill": masked_fill,
    "tensor": _torch_tensor,
    "as_tensor": _torch_tensor,
}
NUMPY_API = {
    "fill_diagonal": fill_diagonal,
}
